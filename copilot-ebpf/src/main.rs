//! copilot's eBPF programs.
//!
//! Three classic tracepoints, each filtered first by the pod cgroup so that
//! every other process on the node pays for one helper call and a compare:
//!
//! - `sched/sched_process_exec`: a process image started; the first exec in a
//!   container cgroup marks that container's main process.
//! - `sched/sched_process_exit`: reported only when the whole thread group is
//!   dead, with the process's wait status.
//! - `oom/mark_victim`: the OOM killer chose a process (attributes a SIGKILL).
//!
//! Only the events userspace must act on at once (a new container's first exec,
//! a main process's exit, an OOM victim) wake the consumer; the rest are queued
//! with `BPF_RB_NO_WAKEUP` and read on the next wake-up. A waking submit costs an
//! inter-processor interrupt (~15 µs here), a non-waking one ~0.3 µs.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_task,
            bpf_ktime_get_boot_ns,
        },
    },
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use copilot_common::{
    config::{Config, OFFSET_ABSENT},
    event::{
        DEFAULT_RING_BYTES, Event, EventKind, FLAG_FILENAME_TRUNCATED, FLAG_GROUP_DEAD_DERIVED,
        FLAG_GROUP_DEAD_FIELD, FLAG_MAIN, FLAG_WAKEUP,
    },
};

#[unsafe(no_mangle)]
static CONFIG: Config = Config::zeroed();

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
static MAINS: HashMap<u32, u64> = HashMap::with_max_entries(4096, 0);

#[map]
static CONTAINERS: HashMap<u64, u32> = HashMap::with_max_entries(4096, 0);

/// Reads a field of [`CONFIG`]. The volatile read keeps the compiler from folding
/// the zeroed initialiser: the real values are written by userspace before load.
#[inline(always)]
fn read_config<T: Copy>(field: *const T) -> T {
    // SAFETY: `field` points into CONFIG, plain data in .rodata.
    unsafe { core::ptr::read_volatile(field) }
}

macro_rules! config {
    ($field:ident) => {
        read_config(&raw const CONFIG.$field)
    };
}

/// The pod filter: true when the current task's cgroup is the pod's or below it.
#[inline(always)]
fn in_pod() -> bool {
    let level = config!(pod_cgroup_level);
    // SAFETY: a helper call without pointer arguments.
    let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
    id != 0 && id == config!(pod_cgroup_id)
}

/// Reads a kernel value at `base + off`.
#[inline(always)]
fn read_kernel<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an Err.
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const T).ok() }
}

#[inline(always)]
fn count_drop() {
    if let Some(p) = DROPS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *p += 1 };
    }
}

/// Bytes above the wake-up threshold within which a submit still forces a
/// wake-up: a few records, so concurrent producers cannot all skip it.
const WAKE_WINDOW: u64 = 4096;

/// Submit flags: wake the consumer if asked to, or once as the buffer fills up.
///
/// The default flag (0) wakes only when the consumer has caught up with the
/// record just written; after non-waking submits it has not, so a record that
/// must be seen at once needs `BPF_RB_FORCE_WAKEUP`. Past the threshold only the
/// submits just above it wake: a stalled consumer has been told, and waking it
/// on every further event (an inter-processor interrupt each, ~4 µs measured)
/// would only slow the node down while it catches up.
#[inline(always)]
fn submit_flags(urgent: bool) -> u64 {
    let threshold = u64::from(config!(wakeup_threshold));
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    if urgent || (avail >= threshold && avail < threshold + WAKE_WINDOW) {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
fn fill_common(ev: &mut Event, kind: EventKind, container: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    ev.kind = kind as u32;
    ev.tgid = (pid_tgid >> 32) as u32;
    ev.pid = pid_tgid as u32;
    // SAFETY: helper calls without pointer arguments.
    unsafe {
        ev.cgroup_id = bpf_get_current_cgroup_id();
        ev.ktime_ns = bpf_ktime_get_boot_ns();
    }
    ev.container_cgroup_id = container;
    ev.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    // SAFETY: helper call without arguments.
    let task = unsafe { bpf_get_current_task() };
    let parent: u64 = read_kernel(task, config!(task_real_parent_off)).unwrap_or(0);
    ev.ppid = read_kernel(parent, config!(task_tgid_off)).unwrap_or(0);
}

/// Reserves a record, fills the common fields, lets `fill` write the
/// kind-specific ones (it returns `FLAG_*` bits), and submits it, waking the
/// consumer when `urgent`, for a container's main exec, or when the ring is
/// filling up.
#[inline(always)]
fn send(kind: EventKind, container: u64, urgent: bool, fill: impl FnOnce(&mut Event) -> u32) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_drop();
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, exclusively owned record of Event size.
    let ev = unsafe {
        ev.write(Event::zeroed());
        &mut *ev
    };
    fill_common(ev, kind, container);
    let mut flags = fill(ev);
    let submit = submit_flags(urgent || flags & FLAG_MAIN != 0);
    if submit == BPF_RB_FORCE_WAKEUP as u64 {
        flags |= FLAG_WAKEUP;
    }
    ev.flags = flags;
    entry.submit(submit);
}

#[inline(always)]
fn container_id() -> u64 {
    let level = config!(pod_cgroup_level) + 1;
    // SAFETY: a helper call without pointer arguments.
    unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) }
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    if !in_pod() {
        return 0;
    }
    let container = container_id();
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // Also wake for a process userspace is waiting on (a container's init that
    // was already there when the snapshot was taken, exec'ing its entrypoint).
    let waited_on = MAINS.get_ptr(tgid).is_some();
    send(EventKind::Exec, container, waited_on, |ev| {
        let mut flags = 0;
        // `__data_loc char[] filename`: u32 with the offset (low 16 bits) and
        // length (high 16 bits) of the string inside the tracepoint record.
        // SAFETY: reading inside the tracepoint record at a format-file offset.
        if let Ok(loc) = unsafe { ctx.read_at::<u32>(config!(exec_filename_off) as usize) } {
            let off = (loc & 0xffff) as usize;
            let len = (loc >> 16) as usize;
            // SAFETY: the string lies inside the tracepoint record.
            let src = unsafe { (ctx.as_ptr() as *const u8).add(off) };
            // SAFETY: the helper bounds the read to the destination buffer.
            let _ = unsafe { bpf_probe_read_kernel_str_bytes(src, &mut ev.filename) };
            if len > ev.filename.len() {
                flags |= FLAG_FILENAME_TRUNCATED;
            }
        }
        // The first exec in a container cgroup is its main process, except the
        // runtime's own re-exec (see `runtime_self_exec`). The insert is atomic
        // (BPF_NOEXIST), so two racing first execs cannot both win.
        if container != 0
            && !runtime_self_exec(ev)
            && CONTAINERS.get_ptr(container).is_none()
            && CONTAINERS
                .insert(container, tgid, BPF_NOEXIST as u64)
                .is_ok()
        {
            flags |= FLAG_MAIN;
            let _ = MAINS.insert(tgid, container, 0);
        }
        flags
    });
    0
}

/// runc re-execs a memfd copy of itself (`/dev/fd/N` or `/proc/self/fd/N`,
/// comm `runc…`, its guard against CVE-2019-5736), sometimes after it has
/// been moved into the container cgroup. That pid exits at once; the
/// entrypoint is exec'd later by another one. An entrypoint is a path, never
/// an open fd, so an exec through an fd is never a container's main process.
#[inline(always)]
fn runtime_self_exec(ev: &Event) -> bool {
    starts_with(&ev.filename, b"/dev/fd/")
        || starts_with(&ev.filename, b"/proc/self/fd/")
        || starts_with(&ev.comm, b"runc")
}

#[inline(always)]
fn starts_with<const N: usize>(s: &[u8], prefix: &[u8; N]) -> bool {
    if s.len() < N {
        return false;
    }
    let mut i = 0;
    while i < N {
        if s[i] != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    if !in_pod() {
        return 0;
    }
    // SAFETY: helper call without arguments.
    let task = unsafe { bpf_get_current_task() };
    let signal: u64 = read_kernel(task, config!(task_signal_off)).unwrap_or(0);
    let group_dead_off = config!(exit_group_dead_off);
    let (group_dead, flags) = if group_dead_off != OFFSET_ABSENT {
        // SAFETY: reading inside the tracepoint record at a format-file offset.
        let gd = unsafe { ctx.read_at::<u8>(group_dead_off as usize) }.unwrap_or(0);
        (gd != 0, FLAG_GROUP_DEAD_FIELD)
    } else {
        // Older kernels (Debian's 6.1 and 6.12) lack `group_dead`; do_exit() has already
        // decremented `signal->live`, so zero means this is the last thread.
        let live: i32 = read_kernel(signal, config!(signal_live_off)).unwrap_or(1);
        (live == 0, FLAG_GROUP_DEAD_DERIVED)
    };
    if !group_dead {
        return 0;
    }
    // The process's status is what wait(2) reports: the group exit code when the
    // group was torn down together (exit_group, a fatal signal), else the
    // leader's own exit code (the leader may have exited long before).
    let sig_flags: u32 = read_kernel(signal, config!(signal_flags_off)).unwrap_or(0);
    let status: u32 = if sig_flags & config!(signal_group_exit_flag) != 0 {
        read_kernel(signal, config!(signal_group_exit_code_off)).unwrap_or(0)
    } else {
        let leader: u64 = read_kernel(task, config!(task_group_leader_off)).unwrap_or(0);
        read_kernel(leader, config!(task_exit_code_off)).unwrap_or(0)
    };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let urgent = MAINS.get_ptr(tgid).is_some();
    if urgent {
        let _ = MAINS.remove(tgid);
    }
    send(EventKind::Exit, container_id(), urgent, |ev| {
        ev.exit_status = status;
        flags
    });
    0
}

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    // A memcg OOM kill runs in the context of a task charging that memcg, so
    // the pod filter on the current task catches the pod's own OOM kills.
    if !in_pod() {
        return 0;
    }
    let off = config!(oom_victim_pid_off);
    if off == OFFSET_ABSENT {
        return 0;
    }
    // SAFETY: reading inside the tracepoint record at a format-file offset.
    let Ok(victim) = (unsafe { ctx.read_at::<i32>(off as usize) }) else {
        return 0;
    };
    send(EventKind::OomVictim, container_id(), true, |ev| {
        // The victim, not the task that triggered the kill.
        ev.tgid = victim as u32;
        0
    });
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
