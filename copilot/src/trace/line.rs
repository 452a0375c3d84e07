//! One line of `copilot trace` output: the JSON contract between the printer and its
//! readers (the text view, the integration tests, the benchmarks), as one serde type.
//!
//! A line is a JSON object tagged by `type`. [`Line::to_json`] writes it with its keys
//! in alphabetical order, exactly as the `serde_json::Value` maps before it did, so
//! readers that look at the raw text (the VM runner's `init.sh` greps for
//! `"container_id":"…".*"state":"exited"`) keep working. `Display` is the text view
//! printed on a terminal.

use std::{fmt, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    lifecycle::{Change, Source, State},
    tracer::{EventDetail, ProcessEvent, SetUse},
};

/// One line of `copilot trace` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    /// Attached: every event of the pod from here on is reported.
    Ready(Ready),
    /// Events lost since the last report (ring buffer full); state was re-read.
    Lost { count: u64 },
    /// A process exec'd in the pod.
    Exec(Exec),
    /// A process (thread group) exited in the pod.
    Exit(Exit),
    /// The kernel's OOM killer chose this process.
    OomVictim { pid: u32 },
    /// A container changed state.
    Container(Container),
}

/// The `ready` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// The pod cgroup's path in the cgroup v2 filesystem.
    pub pod_cgroup: PathBuf,
    pub cgroup_id: u64,
    /// The node's shared program set, or programs of its own and why.
    pub programs: SetUse,
}

/// The fields `exec` and `exit` lines share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// CLOCK_BOOTTIME nanoseconds of the event.
    pub time_ns: u64,
    /// Process (thread group) and thread ids in the host's PID namespace.
    pub pid: u32,
    pub tid: u32,
    /// The same in the task's own PID namespace (0: unknown).
    pub ns_pid: u32,
    pub ns_tid: u32,
    pub ppid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    /// The container's id, when its cgroup name carries one.
    pub container_id: Option<String>,
    /// The process is its container's main process.
    pub main: bool,
}

/// An `exec` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    #[serde(flatten)]
    pub process: Process,
    pub filename: String,
    pub filename_truncated: bool,
}

/// An `exit` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    #[serde(flatten)]
    pub process: Process,
    /// The raw wait(2) status.
    pub status: u32,
    pub exit_code: Option<u8>,
    pub signal: Option<u8>,
    pub core_dumped: bool,
    pub oom_killed: bool,
    pub group_dead: GroupDead,
}

/// How the exit was known to end the whole thread group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupDead {
    /// The tracepoint's `group_dead` field.
    Tracepoint,
    /// Derived from `signal->live` (kernels without the field).
    Derived,
}

/// A `container` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub container_id: Option<String>,
    /// The container cgroup's path.
    pub cgroup: PathBuf,
    pub cgroup_id: u64,
    pub state: ContainerState,
    /// The main process, when known.
    pub pid: Option<u32>,
    pub exit_code: Option<u8>,
    pub signal: Option<u8>,
    pub oom_killed: bool,
    /// When the state was reached (kernel clock), when known.
    pub time_ns: Option<u64>,
    /// When copilot decided it (CLOCK_BOOTTIME, as `time_ns`).
    pub seen_ns: u64,
    pub source: Source,
}

/// A container's state, as [`State::name`] spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    Created,
    Started,
    Exited,
}

impl Line {
    /// The `type` tag: ready, lost, exec, exit, oom_victim, container.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ready(_) => "ready",
            Self::Lost { .. } => "lost",
            Self::Exec(_) => "exec",
            Self::Exit(_) => "exit",
            Self::OomVictim { .. } => "oom_victim",
            Self::Container(_) => "container",
        }
    }

    /// The process fields of an exec or exit line.
    pub fn process(&self) -> Option<&Process> {
        match self {
            Self::Exec(e) => Some(&e.process),
            Self::Exit(e) => Some(&e.process),
            _ => None,
        }
    }

    /// `pid` of an exec, exit, oom_victim or container line.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::OomVictim { pid } => Some(*pid),
            Self::Container(c) => c.pid,
            _ => self.process().map(|p| p.pid),
        }
    }

    /// `container_id` of an exec, exit or container line.
    pub fn container_id(&self) -> Option<&str> {
        match self {
            Self::Container(c) => c.container_id.as_deref(),
            _ => self.process().and_then(|p| p.container_id.as_deref()),
        }
    }

    /// `time_ns` of an exec or exit line, or of a container line that has one.
    pub fn time_ns(&self) -> Option<u64> {
        match self {
            Self::Container(c) => c.time_ns,
            _ => self.process().map(|p| p.time_ns),
        }
    }

    /// `exit_code` of an exit or container line.
    pub fn exit_code(&self) -> Option<u8> {
        match self {
            Self::Exit(e) => e.exit_code,
            Self::Container(c) => c.exit_code,
            _ => None,
        }
    }

    /// `signal` of an exit or container line.
    pub fn signal(&self) -> Option<u8> {
        match self {
            Self::Exit(e) => e.signal,
            Self::Container(c) => c.signal,
            _ => None,
        }
    }

    /// `oom_killed` of an exit or container line.
    pub fn oom_killed(&self) -> Option<bool> {
        match self {
            Self::Exit(e) => Some(e.oom_killed),
            Self::Container(c) => Some(c.oom_killed),
            _ => None,
        }
    }

    /// The line as JSON, keys in alphabetical order (see the module doc).
    ///
    /// # Errors
    /// A path that is not UTF-8 has no JSON string.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        // Through a `Value`, whose map keeps its keys sorted: the byte order of the
        // lines from before this type, which raw-text readers rely on.
        serde_json::to_value(self).map(|v| v.to_string())
    }

    /// The exec, exit or oom_victim line of `event`.
    pub fn process_event(
        event: &ProcessEvent,
        container: Option<&str>,
        main: bool,
        oom_killed: bool,
    ) -> Self {
        let process = Process {
            time_ns: event.time_ns,
            pid: event.tgid,
            tid: event.pid,
            ns_pid: event.ns_tgid,
            ns_tid: event.ns_pid,
            ppid: event.ppid,
            comm: event.comm.clone(),
            cgroup_id: event.cgroup_id,
            container_id: container.map(str::to_owned),
            main,
        };
        match &event.detail {
            EventDetail::Exec {
                filename,
                filename_truncated,
            } => Self::Exec(Exec {
                process,
                filename: filename.clone(),
                filename_truncated: *filename_truncated,
            }),
            EventDetail::Exit {
                status,
                group_dead_derived,
            } => Self::Exit(Exit {
                process,
                status: status.0,
                exit_code: status.code(),
                signal: status.signal(),
                core_dumped: status.core_dumped(),
                oom_killed,
                group_dead: if *group_dead_derived {
                    GroupDead::Derived
                } else {
                    GroupDead::Tracepoint
                },
            }),
            EventDetail::OomVictim => Self::OomVictim { pid: event.tgid },
        }
    }

    /// A container line for `change` of the container cgroup at `cgroup`.
    pub fn change(change: &Change, cgroup: PathBuf, container: Option<&str>, seen_ns: u64) -> Self {
        let (state, pid, exit_code, signal, oom_killed, time_ns) = match change.state {
            State::Created => (ContainerState::Created, None, None, None, false, None),
            State::Started { pid, time_ns } => {
                (ContainerState::Started, pid, None, None, false, time_ns)
            }
            State::Exited(e) => (
                ContainerState::Exited,
                e.pid,
                e.status.and_then(|s| s.code()),
                e.status.and_then(|s| s.signal()),
                e.oom_killed,
                e.time_ns,
            ),
        };
        Self::Container(Container {
            container_id: container.map(str::to_owned),
            cgroup,
            cgroup_id: change.cgroup_id,
            state,
            pid,
            exit_code,
            signal,
            oom_killed,
            time_ns,
            seen_ns,
            source: change.source,
        })
    }
}

impl ContainerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Started => "started",
            Self::Exited => "exited",
        }
    }
}

/// An optional value, or `-`.
struct Or<T>(Option<T>);

impl<T: fmt::Display> fmt::Display for Or<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// The first 12 characters of a container id, or `-`.
fn short(id: Option<&str>) -> String {
    id.unwrap_or("-").chars().take(12).collect()
}

fn main_mark(p: &Process) -> &'static str {
    if p.main { " main" } else { "" }
}

/// The text view: one readable line per event.
impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exec(e) => {
                let p = &e.process;
                write!(
                    f,
                    "exec   {:>7} {:<16} {} [{}]{}",
                    p.pid,
                    p.comm,
                    e.filename,
                    short(p.container_id.as_deref()),
                    main_mark(p)
                )
            }
            Self::Exit(e) => {
                let p = &e.process;
                let how = match (e.exit_code, e.signal) {
                    (Some(c), _) => format!("code {c}"),
                    (_, Some(sig)) => format!("signal {sig}"),
                    _ => "?".into(),
                };
                write!(
                    f,
                    "exit   {:>7} {:<16} {how} [{}]{}",
                    p.pid,
                    p.comm,
                    short(p.container_id.as_deref()),
                    main_mark(p)
                )
            }
            Self::Container(c) => write!(
                f,
                "container {} {} pid={} code={} signal={} oom={} ({})",
                short(c.container_id.as_deref()),
                c.state.as_str(),
                Or(c.pid),
                Or(c.exit_code),
                Or(c.signal),
                c.oom_killed,
                c.source.as_str()
            ),
            Self::Ready(r) => write!(f, "ready: tracing {}", r.pod_cgroup.display()),
            Self::Lost { count } => {
                write!(f, "lost {count} events; state re-read from cgroups")
            }
            Self::OomVictim { .. } => f.write_str(&self.to_json().map_err(|_| fmt::Error)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as `copilot trace` printed them with `serde_json::json!`, one of each type.
    const LINES: &[&str] = &[
        r#"{"cgroup_id":4242,"pod_cgroup":"/sys/fs/cgroup/kubepods/besteffort/podabc","programs":{"dir":"/sys/fs/bpf/copilot","set":"node"},"type":"ready"}"#,
        r#"{"cgroup_id":1,"pod_cgroup":"/sys/fs/cgroup/p","programs":{"reason":"no bpffs","set":"private"},"type":"ready"}"#,
        r#"{"count":17,"type":"lost"}"#,
        r#"{"cgroup_id":99,"comm":"sh","container_id":"aaaaaaaaaaaaaaaaaaaa","filename":"/bin/sh","filename_truncated":false,"main":true,"ns_pid":1,"ns_tid":1,"pid":1234,"ppid":1200,"tid":1234,"time_ns":123456789012,"type":"exec"}"#,
        r#"{"cgroup_id":99,"comm":"true","container_id":null,"filename":"/bin/true","filename_truncated":true,"main":false,"ns_pid":0,"ns_tid":0,"pid":7,"ppid":6,"tid":7,"time_ns":5,"type":"exec"}"#,
        r#"{"cgroup_id":99,"comm":"leader_exit","container_id":"bbbb","core_dumped":false,"exit_code":6,"group_dead":"derived","main":false,"ns_pid":3,"ns_tid":4,"oom_killed":false,"pid":1240,"ppid":1234,"signal":null,"status":1536,"tid":1241,"time_ns":123456999999,"type":"exit"}"#,
        r#"{"cgroup_id":99,"comm":"memhog","container_id":null,"core_dumped":true,"exit_code":null,"group_dead":"tracepoint","main":true,"ns_pid":1,"ns_tid":1,"oom_killed":true,"pid":50,"ppid":49,"signal":9,"status":137,"tid":50,"time_ns":1,"type":"exit"}"#,
        r#"{"pid":50,"type":"oom_victim"}"#,
        r#"{"cgroup":"/sys/fs/cgroup/p/bbbb","cgroup_id":100,"container_id":"bbbb","exit_code":null,"oom_killed":true,"pid":50,"seen_ns":2000,"signal":9,"source":"event","state":"exited","time_ns":1000,"type":"container"}"#,
        r#"{"cgroup":"/sys/fs/cgroup/p/x","cgroup_id":101,"container_id":null,"exit_code":null,"oom_killed":false,"pid":null,"seen_ns":3,"signal":null,"source":"snapshot","state":"created","time_ns":null,"type":"container"}"#,
        r#"{"cgroup":"/sys/fs/cgroup/p/c","cgroup_id":102,"container_id":"c","exit_code":0,"oom_killed":false,"pid":null,"seen_ns":3,"signal":null,"source":"cgroup","state":"exited","time_ns":null,"type":"container"}"#,
    ];

    #[test]
    fn real_lines_round_trip_byte_for_byte() {
        for text in LINES {
            let line: Line = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(line.to_json().expect("encodes"), *text);
        }
    }

    #[test]
    fn printed_lines_are_those_of_before() {
        use crate::tracer::ExitStatus;
        let event = ProcessEvent {
            detail: EventDetail::Exit {
                status: ExitStatus(6 << 8),
                group_dead_derived: true,
            },
            tgid: 1240,
            pid: 1241,
            ns_tgid: 3,
            ns_pid: 4,
            ppid: 1234,
            cgroup_id: 99,
            container_cgroup_id: 99,
            time_ns: 123_456_999_999,
            comm: "leader_exit".into(),
            main_hint: false,
            woke: true,
        };
        let line = Line::process_event(&event, Some("bbbb"), false, false);
        assert_eq!(line.to_json().expect("encodes"), LINES[5]);
        let oom = ProcessEvent {
            detail: EventDetail::OomVictim,
            tgid: 50,
            ..event
        };
        let line = Line::process_event(&oom, None, false, false);
        assert_eq!(line.to_json().expect("encodes"), LINES[7]);
        let change = Change {
            cgroup_id: 100,
            state: State::Exited(crate::lifecycle::Exit {
                pid: Some(50),
                status: Some(ExitStatus(9)),
                oom_killed: true,
                time_ns: Some(1000),
            }),
            source: Source::Event,
        };
        let line = Line::change(&change, "/sys/fs/cgroup/p/bbbb".into(), Some("bbbb"), 2000);
        assert_eq!(line.to_json().expect("encodes"), LINES[8]);
    }

    #[test]
    fn text_view() {
        let text: Vec<String> = LINES
            .iter()
            .map(|l| serde_json::from_str::<Line>(l).expect("parses").to_string())
            .collect();
        assert_eq!(
            text,
            [
                "ready: tracing /sys/fs/cgroup/kubepods/besteffort/podabc",
                "ready: tracing /sys/fs/cgroup/p",
                "lost 17 events; state re-read from cgroups",
                "exec      1234 sh               /bin/sh [aaaaaaaaaaaa] main",
                "exec         7 true             /bin/true [-]",
                "exit      1240 leader_exit      code 6 [bbbb]",
                "exit        50 memhog           signal 9 [-] main",
                r#"{"pid":50,"type":"oom_victim"}"#,
                "container bbbb exited pid=50 code=- signal=9 oom=true (event)",
                "container - created pid=- code=- signal=- oom=false (snapshot)",
                "container c exited pid=- code=0 signal=- oom=false (cgroup)",
            ]
        );
    }
}
