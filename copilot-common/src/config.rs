//! The load-time configuration of the eBPF programs, written by userspace into
//! the programs' read-only data before load (`EbpfLoader::set_global`).
//!
//! Rust has no CO-RE, so the kernel-dependent offsets are resolved in userspace
//! (from `/sys/kernel/btf/vmlinux`) and passed here.

/// Name of the global that holds [`Config`] in the eBPF object.
pub const CONFIG_GLOBAL: &str = "CONFIG";

/// `oom/mark_victim`'s first argument is the victim's pid (`int pid`, older kernels).
pub const OOM_ARG_PID: u32 = 0;
/// `oom/mark_victim`'s first argument is the victim (`struct task_struct *`, newer kernels).
pub const OOM_ARG_TASK: u32 = 1;

/// Load-time configuration; see the module docs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// cgroup v2 id (inode number) of the pod cgroup; only tasks at or below it pass.
    pub pod_cgroup_id: u64,
    /// Level of the pod cgroup in the v2 hierarchy (the root is level 0).
    pub pod_cgroup_level: u32,
    /// `linux_binprm.filename` (`const char *`), from `sched_process_exec`'s third argument.
    pub bprm_filename_off: u32,
    /// What `oom/mark_victim` passes first: [`OOM_ARG_PID`] or [`OOM_ARG_TASK`].
    pub oom_victim_arg: u32,
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
    /// Keeps the size a multiple of 8 with no implicit padding.
    pub reserved: u32,
}

impl Config {
    pub const fn zeroed() -> Self {
        Self {
            pod_cgroup_id: 0,
            pod_cgroup_level: 0,
            bprm_filename_off: 0,
            oom_victim_arg: OOM_ARG_PID,
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
            reserved: 0,
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, only integer fields, no implicit padding.
unsafe impl aya::Pod for Config {}
