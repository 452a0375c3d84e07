//! The load-time configuration of the eBPF programs, written by userspace into
//! the programs' read-only data before load (`EbpfLoader::override_global`).
//!
//! Rust has no CO-RE, so the kernel-dependent offsets are resolved in userspace
//! (from `/sys/kernel/btf/vmlinux`) and passed here. Nothing here is about one
//! pod: one loaded program set serves every pod on the node (pods register in
//! the `PODS` map instead).

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
    /// `task_struct.thread_pid` (`struct pid *`).
    pub task_thread_pid_off: u32,
    /// `struct pid` fields, for a task's PID in its own namespace:
    /// `thread_pid->numbers[thread_pid->level].nr`.
    pub pid_level_off: u32,
    pub pid_numbers_off: u32,
    /// `sizeof(struct upid)` and `upid.nr`.
    pub upid_size: u32,
    pub upid_nr_off: u32,
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
}

impl Config {
    pub const fn zeroed() -> Self {
        Self {
            task_thread_pid_off: 0,
            pid_level_off: 0,
            pid_numbers_off: 0,
            upid_size: 0,
            upid_nr_off: 0,
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
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, only integer fields, no implicit padding.
unsafe impl aya::Pod for Config {}
