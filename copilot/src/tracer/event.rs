//! Decoded tracer events: the ring-buffer record made readable.

use copilot_common::event::{
    Event, EventKind, FLAG_FILENAME_TRUNCATED, FLAG_GROUP_DEAD_DERIVED, FLAG_MAIN, FLAG_WAKEUP,
};

/// A process's wait(2) status, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus(pub u32);

impl ExitStatus {
    /// The exit code when the process exited normally.
    pub fn code(self) -> Option<u8> {
        (self.0 & 0x7f == 0).then_some(((self.0 >> 8) & 0xff) as u8)
    }
    /// The signal that killed the process.
    pub fn signal(self) -> Option<u8> {
        let sig = (self.0 & 0x7f) as u8;
        (sig != 0 && sig != 0x7f).then_some(sig)
    }
    pub fn core_dumped(self) -> bool {
        self.signal().is_some() && self.0 & 0x80 != 0
    }
    pub fn success(self) -> bool {
        self.code() == Some(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code(), self.signal()) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => {
                write!(f, "killed by signal {s}")?;
                if self.core_dumped() {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
            _ => write!(f, "wait status {:#x}", self.0),
        }
    }
}

/// What happened to the process (exec, exit, chosen by the OOM killer), with the
/// fields that belong to it; decoded from the raw `EventKind` and its flag bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventDetail {
    Exec {
        filename: String,
        filename_truncated: bool,
    },
    Exit {
        status: ExitStatus,
        group_dead_derived: bool,
    },
    OomVictim,
}

/// One event from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessEvent {
    pub detail: EventDetail,
    /// Process and thread ids as the host's PID namespace sees them.
    pub tgid: u32,
    pub pid: u32,
    /// The same as the task's own PID namespace sees them (0: unknown).
    pub ns_tgid: u32,
    pub ns_pid: u32,
    pub ppid: u32,
    pub cgroup_id: u64,
    pub container_cgroup_id: u64,
    /// CLOCK_BOOTTIME nanoseconds.
    pub time_ns: u64,
    pub comm: String,
    /// The kernel saw this as the first exec in its container: its main process.
    pub main_hint: bool,
    /// The kernel woke userspace for this event.
    pub woke: bool,
}

impl ProcessEvent {
    /// Decodes a raw record; `None` for an unknown kind (a newer eBPF object).
    pub fn decode(ev: &Event) -> Option<Self> {
        let detail = match EventKind::from_u32(ev.kind)? {
            EventKind::Exec => EventDetail::Exec {
                filename: c_string(&ev.filename),
                filename_truncated: ev.flags & FLAG_FILENAME_TRUNCATED != 0,
            },
            EventKind::Exit => EventDetail::Exit {
                status: ExitStatus(ev.exit_status),
                group_dead_derived: ev.flags & FLAG_GROUP_DEAD_DERIVED != 0,
            },
            EventKind::OomVictim => EventDetail::OomVictim,
        };
        Some(Self {
            detail,
            tgid: ev.tgid,
            pid: ev.pid,
            ns_tgid: ev.ns_tgid,
            ns_pid: ev.ns_pid,
            ppid: ev.ppid,
            cgroup_id: ev.cgroup_id,
            container_cgroup_id: ev.container_cgroup_id,
            time_ns: ev.ktime_ns,
            comm: c_string(&ev.comm),
            main_hint: ev.flags & FLAG_MAIN != 0,
            woke: ev.flags & FLAG_WAKEUP != 0,
        })
    }
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_status_decoding() {
        let exit3 = ExitStatus(3 << 8);
        assert_eq!(
            (exit3.code(), exit3.signal(), exit3.core_dumped()),
            (Some(3), None, false)
        );
        assert_eq!(exit3.to_string(), "exit code 3");
        let kill = ExitStatus(9);
        assert_eq!((kill.code(), kill.signal()), (None, Some(9)));
        assert_eq!(kill.to_string(), "killed by signal 9");
        let segv_core = ExitStatus(11 | 0x80);
        assert_eq!(
            (segv_core.signal(), segv_core.core_dumped()),
            (Some(11), true)
        );
        assert_eq!(segv_core.to_string(), "killed by signal 11 (core dumped)");
        assert!(ExitStatus(0).success());
        assert!(!ExitStatus(0x100).success());
        assert_eq!(ExitStatus(255 << 8).code(), Some(255));
    }

    #[test]
    fn decode_record() {
        let mut ev = Event::zeroed();
        ev.kind = EventKind::Exec as u32;
        ev.tgid = 42;
        ev.flags = FLAG_MAIN | FLAG_FILENAME_TRUNCATED;
        ev.comm[..2].copy_from_slice(b"sh");
        ev.filename[..7].copy_from_slice(b"/bin/sh");
        let d = ProcessEvent::decode(&ev).unwrap();
        assert_eq!(
            d.detail,
            EventDetail::Exec {
                filename: "/bin/sh".into(),
                filename_truncated: true
            }
        );
        assert_eq!(
            (d.tgid, d.comm.as_str(), d.main_hint, d.woke),
            (42, "sh", true, false)
        );
        ev.kind = 99;
        assert!(ProcessEvent::decode(&ev).is_none());
    }
}
