//! The load-time configuration of the eBPF programs, written by userspace into
//! the programs' read-only data before load (`EbpfLoader::set_global`).
//!
//! Rust has no CO-RE, so the kernel-dependent offsets are resolved in userspace
//! (from `/sys/kernel/btf/vmlinux` and tracefs `format` files) and passed here.

/// Name of the global that holds [`Config`] in the eBPF object.
pub const CONFIG_GLOBAL: &str = "CONFIG";

/// An offset the running kernel does not have (e.g. `group_dead` on 6.1 and 6.12).
pub const OFFSET_ABSENT: u32 = u32::MAX;

/// Load-time configuration; see the module docs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// cgroup v2 id (inode number) of the pod cgroup; only tasks at or below it pass.
    pub pod_cgroup_id: u64,
    /// Level of the pod cgroup in the v2 hierarchy (the root is level 0).
    pub pod_cgroup_level: u32,
    /// `sched_process_exec`: offset of the `__data_loc char[] filename` field.
    pub exec_filename_off: u32,
    /// `sched_process_exit`: offset of `bool group_dead`, or [`OFFSET_ABSENT`].
    pub exit_group_dead_off: u32,
    /// `oom/mark_victim`: offset of `int pid`, or [`OFFSET_ABSENT`].
    pub oom_victim_pid_off: u32,
    /// `task_struct` fields.
    pub task_tgid_off: u32,
    pub task_real_parent_off: u32,
    pub task_group_leader_off: u32,
    pub task_exit_code_off: u32,
    pub task_signal_off: u32,
    /// `signal_struct` fields.
    pub signal_live_off: u32,
    pub signal_flags_off: u32,
    pub signal_group_exit_code_off: u32,
    /// `SIGNAL_GROUP_EXIT` of the running kernel's `include/linux/sched/signal.h`.
    pub signal_group_exit_flag: u32,
    /// Ring buffer fill level (bytes) above which every submit wakes the consumer,
    /// so a stream of no-wake-up events can never fill the buffer unseen.
    pub wakeup_threshold: u32,
}

impl Config {
    pub const fn zeroed() -> Self {
        Self {
            pod_cgroup_id: 0,
            pod_cgroup_level: 0,
            exec_filename_off: 0,
            exit_group_dead_off: OFFSET_ABSENT,
            oom_victim_pid_off: OFFSET_ABSENT,
            task_tgid_off: 0,
            task_real_parent_off: 0,
            task_group_leader_off: 0,
            task_exit_code_off: 0,
            task_signal_off: 0,
            signal_live_off: 0,
            signal_flags_off: 0,
            signal_group_exit_code_off: 0,
            signal_group_exit_flag: 0,
            wakeup_threshold: 0,
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, only integer fields, no implicit padding.
unsafe impl aya::Pod for Config {}
