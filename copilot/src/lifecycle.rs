//! The container state machine: created → started(main pid) → exited(status).
//!
//! Fed by three sources, in any order and with duplicates: kernel events (the
//! main process's exec and exit), the one snapshot taken after attaching, and
//! cgroup `populated 0` notifications. Every transition moves forward only, so
//! a fact seen twice (by the snapshot and by an event) is reported once.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::tracer::{EventDetail, ExitStatus, ProcessEvent};

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Exit {
    pub pid: Option<u32>,
    /// `None` when the exit was seen only as an emptied cgroup (before attach,
    /// or the event was lost).
    #[serde(skip)]
    pub status: Option<ExitStatus>,
    pub oom_killed: bool,
    pub time_ns: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The cgroup exists; the main process has not exec'd yet.
    Created,
    /// `pid` is `None` when the processes are in a PID namespace we cannot see.
    Started {
        pid: Option<u32>,
        time_ns: Option<u64>,
    },
    Exited(Exit),
}

impl State {
    fn rank(&self) -> u8 {
        match self {
            Self::Created => 0,
            Self::Started { .. } => 1,
            Self::Exited(_) => 2,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Started { .. } => "started",
            Self::Exited(_) => "exited",
        }
    }
}

/// Where a transition was learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Event,
    Snapshot,
    Cgroup,
}

impl Source {
    /// The name as JSON spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Event => "event",
            Self::Snapshot => "snapshot",
            Self::Cgroup => "cgroup",
        }
    }
}

/// One container cgroup of the pod.
#[derive(Debug, Clone)]
pub struct Container {
    pub cgroup_id: u64,
    /// Directory name under the pod cgroup.
    pub name: String,
    pub main_pid: Option<u32>,
    /// The main process's command name (after its exec), when known.
    pub main_comm: Option<String>,
    /// Its processes were in a PID namespace the snapshot could not see.
    pub hidden: bool,
    pub state: State,
}

/// A state change to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub cgroup_id: u64,
    pub state: State,
    pub source: Source,
}

/// What the snapshot found in a container cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// No process of its own yet (none ever ran, or only the runtime's set-up).
    NeverRan,
    /// No process now, but some ran: the container exited before we looked.
    Emptied,
    /// Its root process is waiting to exec the entrypoint (runc's init).
    Waiting {
        pid: u32,
    },
    Running {
        pid: u32,
    },
    /// Populated, but its processes are in a PID namespace we cannot see.
    Hidden,
}

#[derive(Debug, Default)]
pub struct Pod {
    containers: BTreeMap<u64, Container>,
    oom_victims: HashSet<u32>,
}

impl Pod {
    pub fn container(&self, cgroup_id: u64) -> Option<&Container> {
        self.containers.get(&cgroup_id)
    }

    pub fn containers(&self) -> impl Iterator<Item = &Container> {
        self.containers.values()
    }

    /// Whether the OOM killer chose `tgid` (a `mark_victim` event named it).
    pub fn oom_victim(&self, tgid: u32) -> bool {
        self.oom_victims.contains(&tgid)
    }

    /// Whether `tgid` is the main process of its container.
    pub fn is_main(&self, container_cgroup_id: u64, tgid: u32) -> bool {
        self.containers
            .get(&container_cgroup_id)
            .is_some_and(|c| c.main_pid == Some(tgid))
    }

    /// The exit of pid 1 of its own PID namespace in a container whose processes
    /// were hidden when we looked and whose main process nobody named: its init,
    /// so its main process. (In a pod that shares one PID namespace, pid 1 is
    /// the sandbox's, which is never a candidate.)
    fn is_hidden_init(&self, container_cgroup_id: u64, ev: &ProcessEvent) -> bool {
        ev.ns_tgid == 1
            && self
                .containers
                .get(&container_cgroup_id)
                .is_some_and(|c| c.hidden && c.main_pid.is_none())
    }

    /// A container cgroup appeared (listing or inotify): created, unless known.
    pub fn add(&mut self, cgroup_id: u64, name: &str, source: Source) -> Option<Change> {
        if let Some(c) = self.containers.get_mut(&cgroup_id) {
            if c.name.is_empty() {
                c.name = name.to_owned();
            }
            return None;
        }
        self.containers.insert(
            cgroup_id,
            Container {
                cgroup_id,
                name: name.to_owned(),
                main_pid: None,
                main_comm: None,
                hidden: false,
                state: State::Created,
            },
        );
        Some(Change {
            cgroup_id,
            state: State::Created,
            source,
        })
    }

    /// Applies what the snapshot saw; returns the resulting changes (the
    /// container's creation first when it was not known yet).
    pub fn snapshot(&mut self, cgroup_id: u64, name: &str, seen: Seen) -> Vec<Change> {
        let mut out: Vec<Change> = self
            .add(cgroup_id, name, Source::Snapshot)
            .into_iter()
            .collect();
        let next = match seen {
            Seen::NeverRan => None,
            Seen::Waiting { pid } => {
                if let Some(c) = self.containers.get_mut(&cgroup_id) {
                    c.main_pid.get_or_insert(pid);
                }
                None
            }
            Seen::Running { pid } => Some((
                Some(pid),
                State::Started {
                    pid: Some(pid),
                    time_ns: None,
                },
            )),
            Seen::Hidden => {
                if let Some(c) = self.containers.get_mut(&cgroup_id) {
                    c.hidden = true;
                }
                Some((
                    None,
                    State::Started {
                        pid: None,
                        time_ns: None,
                    },
                ))
            }
            Seen::Emptied => {
                let pid = self.containers.get(&cgroup_id).and_then(|c| c.main_pid);
                let exit = Exit {
                    pid,
                    status: None,
                    oom_killed: false,
                    time_ns: None,
                };
                Some((pid, State::Exited(exit)))
            }
        };
        if let Some((pid, state)) = next {
            out.extend(self.advance(cgroup_id, pid, state, Source::Snapshot));
        }
        out
    }

    /// Applies a kernel event.
    pub fn event(&mut self, ev: &ProcessEvent) -> Option<Change> {
        let cg = ev.container_cgroup_id;
        match &ev.detail {
            EventDetail::OomVictim => {
                self.oom_victims.insert(ev.tgid);
                None
            }
            EventDetail::Exec { .. } if cg != 0 => {
                let known_main = self.containers.get(&cg).and_then(|c| c.main_pid);
                let is_main = match known_main {
                    Some(pid) => pid == ev.tgid,
                    None => ev.main_hint,
                };
                if !is_main {
                    return None;
                }
                self.add(cg, "", Source::Event);
                if let Some(c) = self.containers.get_mut(&cg) {
                    c.main_comm = Some(ev.comm.clone());
                }
                let state = State::Started {
                    pid: Some(ev.tgid),
                    time_ns: Some(ev.time_ns),
                };
                self.advance(cg, Some(ev.tgid), state, Source::Event)
            }
            EventDetail::Exit { status, .. }
                if cg != 0 && (self.is_main(cg, ev.tgid) || self.is_hidden_init(cg, ev)) =>
            {
                let oom_killed = status.signal() == Some(9) && self.oom_victims.contains(&ev.tgid);
                let exit = Exit {
                    pid: Some(ev.tgid),
                    status: Some(*status),
                    oom_killed,
                    time_ns: Some(ev.time_ns),
                };
                self.advance(cg, Some(ev.tgid), State::Exited(exit), Source::Event)
            }
            _ => None,
        }
    }

    /// The cgroup has no process left. `ever_ran` tells an emptied cgroup from
    /// one whose first process has not arrived yet.
    pub fn emptied(&mut self, cgroup_id: u64, ever_ran: bool) -> Option<Change> {
        let c = self.containers.get(&cgroup_id)?;
        if matches!(c.state, State::Created) && !ever_ran && c.main_pid.is_none() {
            return None;
        }
        let exit = Exit {
            pid: c.main_pid,
            status: None,
            oom_killed: false,
            time_ns: None,
        };
        self.advance(cgroup_id, c.main_pid, State::Exited(exit), Source::Cgroup)
    }

    /// Records the main process's command name seen by the snapshot.
    pub fn set_comm(&mut self, cgroup_id: u64, comm: &str) {
        if let Some(c) = self.containers.get_mut(&cgroup_id) {
            c.main_comm.get_or_insert_with(|| comm.to_owned());
        }
    }

    /// Gives an exit learned without a status (from its cgroup) the status the
    /// kernel recorded for the same process. True if it was filled in.
    pub fn fill_status(&mut self, cgroup_id: u64, recorded: &Exit) -> bool {
        let Some(c) = self.containers.get_mut(&cgroup_id) else {
            return false;
        };
        match &mut c.state {
            State::Exited(exit)
                if exit.status.is_none() && exit.pid.is_none_or(|p| Some(p) == recorded.pid) =>
            {
                *exit = *recorded;
                c.main_pid = c.main_pid.or(recorded.pid);
                true
            }
            _ => false,
        }
    }

    /// Marks an exit killed by SIGKILL as an OOM kill (from the memory
    /// controller's counter, when no `mark_victim` event named the process).
    pub fn mark_oom(&mut self, cgroup_id: u64) -> bool {
        match self.containers.get_mut(&cgroup_id).map(|c| &mut c.state) {
            Some(State::Exited(exit)) if !exit.oom_killed => {
                exit.oom_killed = true;
                true
            }
            _ => false,
        }
    }

    fn advance(
        &mut self,
        cg: u64,
        pid: Option<u32>,
        state: State,
        source: Source,
    ) -> Option<Change> {
        let c = self.containers.get_mut(&cg)?;
        if state.rank() <= c.state.rank() {
            return None;
        }
        if c.main_pid.is_none() {
            c.main_pid = pid;
        }
        c.state = state;
        Some(Change {
            cgroup_id: cg,
            state,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(detail: EventDetail, tgid: u32, cg: u64, main_hint: bool) -> ProcessEvent {
        ProcessEvent {
            detail,
            tgid,
            pid: tgid,
            ns_tgid: 1,
            ns_pid: 1,
            ppid: 1,
            cgroup_id: cg,
            container_cgroup_id: cg,
            time_ns: 1000,
            comm: "x".into(),
            main_hint,
            woke: main_hint,
        }
    }
    fn exec(tgid: u32, cg: u64, main: bool) -> ProcessEvent {
        ev(
            EventDetail::Exec {
                filename: "/bin/sh".into(),
                filename_truncated: false,
            },
            tgid,
            cg,
            main,
        )
    }
    fn exit(tgid: u32, cg: u64, status: u32) -> ProcessEvent {
        ev(
            EventDetail::Exit {
                status: ExitStatus(status),
                group_dead_derived: false,
            },
            tgid,
            cg,
            false,
        )
    }

    #[test]
    fn start_then_exit_from_events() {
        let mut pod = Pod::default();
        let c = pod.event(&exec(10, 7, true)).unwrap();
        assert!(matches!(c.state, State::Started { pid: Some(10), .. }));
        assert_eq!(
            pod.event(&exec(11, 7, false)),
            None,
            "a child's exec is not a start"
        );
        assert_eq!(
            pod.event(&exit(11, 7, 0)),
            None,
            "a child's exit is not the main exit"
        );
        let c = pod.event(&exit(10, 7, 3 << 8)).unwrap();
        let State::Exited(e) = c.state else {
            panic!("{c:?}")
        };
        assert_eq!(
            (e.pid, e.status.unwrap().code(), e.oom_killed),
            (Some(10), Some(3), false)
        );
        assert_eq!(
            pod.emptied(7, true),
            None,
            "the cgroup emptying after the exit adds nothing"
        );
    }

    #[test]
    fn snapshot_and_events_are_deduplicated() {
        let mut pod = Pod::default();
        let changes = pod.snapshot(5, "abc", Seen::Running { pid: 20 });
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].state, State::Created);
        assert_eq!(
            pod.event(&exec(20, 5, false)),
            None,
            "re-exec of the main keeps it started"
        );
        assert_eq!(
            pod.event(&exec(21, 5, true)),
            None,
            "the kernel's hint loses to the snapshot"
        );
        assert!(pod.event(&exit(20, 5, 0)).is_some());
    }

    #[test]
    fn runc_init_waiting_then_exec() {
        let mut pod = Pod::default();
        let changes = pod.snapshot(5, "abc", Seen::Waiting { pid: 30 });
        assert_eq!(changes.len(), 1, "created only");
        let c = pod.event(&exec(30, 5, false)).unwrap();
        assert!(matches!(c.state, State::Started { pid: Some(30), .. }));
    }

    #[test]
    fn a_hidden_containers_init_exit_is_its_main_exit() {
        let mut pod = Pod::default();
        pod.snapshot(5, "abc", Seen::Hidden);
        let mut child = exit(41, 5, 3 << 8);
        child.ns_tgid = 7;
        assert!(pod.event(&child).is_none(), "not its init");
        let init = exit(40, 5, 3 << 8);
        let c = pod.event(&init).expect("the init's exit");
        assert!(matches!(
            c.state,
            State::Exited(Exit {
                pid: Some(40),
                status: Some(ExitStatus(0x300)),
                ..
            })
        ));
        pod.snapshot(6, "def", Seen::Running { pid: 50 });
        assert!(
            pod.event(&exit(51, 6, 0)).is_none(),
            "a known main is not replaced"
        );
    }

    #[test]
    fn hidden_processes_are_started_without_a_pid() {
        let mut pod = Pod::default();
        let changes = pod.snapshot(5, "abc", Seen::Hidden);
        assert_eq!(
            changes[1].state,
            State::Started {
                pid: None,
                time_ns: None
            }
        );
        assert!(pod.container(5).unwrap().hidden);
        let c = pod.emptied(5, true).unwrap();
        assert!(matches!(
            c.state,
            State::Exited(Exit {
                pid: None,
                status: None,
                ..
            })
        ));
    }

    #[test]
    fn exited_before_we_looked() {
        let mut pod = Pod::default();
        let changes = pod.snapshot(5, "abc", Seen::Emptied);
        let State::Exited(e) = changes[1].state else {
            panic!()
        };
        assert_eq!((e.pid, e.status), (None, None));
        assert_eq!(pod.snapshot(6, "new", Seen::NeverRan).len(), 1);
        assert_eq!(
            pod.emptied(6, false),
            None,
            "a cgroup that never ran is not an exit"
        );
        assert!(pod.emptied(6, true).is_some());
    }

    #[test]
    fn oom_attribution() {
        let mut pod = Pod::default();
        pod.event(&exec(10, 7, true));
        pod.event(&ev(EventDetail::OomVictim, 10, 7, false));
        let State::Exited(e) = pod.event(&exit(10, 7, 9)).unwrap().state else {
            panic!()
        };
        assert!(e.oom_killed);

        pod.event(&exec(40, 8, true));
        let State::Exited(e) = pod.event(&exit(40, 8, 9)).unwrap().state else {
            panic!()
        };
        assert!(!e.oom_killed, "a plain SIGKILL is not an OOM kill");
        assert!(pod.mark_oom(8));
        assert!(!pod.mark_oom(8));
    }

    #[test]
    fn lost_exit_event_is_healed_by_the_cgroup() {
        let mut pod = Pod::default();
        pod.event(&exec(10, 7, true));
        let c = pod.emptied(7, true).unwrap();
        assert_eq!(c.source, Source::Cgroup);
        let State::Exited(e) = c.state else { panic!() };
        assert_eq!((e.pid, e.status), (Some(10), None));
    }
}
