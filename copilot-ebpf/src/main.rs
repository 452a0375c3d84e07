//! copilot's eBPF programs.
//!
//! Three raw tracepoints, attached by name (no tracefs, no perf event, no
//! per-tracepoint limit of 64 programs). One loaded set serves every pod on the
//! node: a pod's sidecar registers its own ring buffer in `PODS` under its pod
//! cgroup's id, and the programs find a task's pod by its cgroup ancestors at the
//! registered levels (`GATE`). A gate comes first, whatever the number of pods:
//! a process above every pod's containers (the root cgroup, a node's services
//! in `system.slice/<unit>.service`) costs one read of its cgroup's level; a
//! deeper one whose top cgroup holds no pod (the kubelet's `kubepods*` and the
//! tops of registered pods, copied into `GATE` from `TOPS`) two ancestor
//! lookups and one cache line; only the processes under a top go on to the pod
//! lookups.
//! Their arguments are the tracepoints' `TP_PROTO`s, read as the running kernel's
//! BTF describes them:
//!
//! - `sched_process_exec(task, old_pid, bprm)`: a process image started; the
//!   first exec in a container cgroup marks that container's main process.
//! - `sched_process_exit(task[, group_dead])`: reported only when the whole
//!   thread group is dead, with the process's wait status. Two programs, since a
//!   raw tracepoint program may not read past the arguments its tracepoint has:
//!   the kernel refuses to attach one that does.
//! - `mark_victim(pid)` or `mark_victim(task, uid)`: the OOM killer chose a
//!   process (attributes a SIGKILL).
//!
//! Only the events userspace must act on at once (a new container's first exec,
//! a main process's exit, an OOM victim) wake the consumer; the rest are queued
//! with `BPF_RB_NO_WAKEUP` and read on the next wake-up. A waking submit costs an
//! inter-processor interrupt (~15 µs here), a non-waking one ~0.3 µs.
#![no_std]
#![no_main]

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{
        BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE,
    },
    btf_maps::{HashOfMaps, RingBuf},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_task,
            bpf_ktime_get_boot_ns, bpf_ringbuf_query,
        },
    },
    macros::{btf_map, map, raw_tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuHashMap},
    programs::RawTracePointContext,
};
use copilot_common::{
    config::{Config, OOM_ARG_TASK},
    event::{
        COMM_LEN, DEFAULT_RING_BYTES, Event, EventKind, ExitRecord, FILENAME_LEN,
        FLAG_FILENAME_TRUNCATED, FLAG_GROUP_DEAD_DERIVED, FLAG_GROUP_DEAD_FIELD, FLAG_MAIN,
        FLAG_WAKEUP, GATE_TOPS, KUBEPODS_LEVEL, LEVELS_UNGATED, MAX_POD_LEVEL, MAX_PODS,
        MIN_POD_LEVEL, MIN_TASK_LEVEL, MainRecord, NODE_ENTRIES, NodeGate, TOP_KUBELET,
    },
};

#[unsafe(no_mangle)]
static CONFIG: Config = Config::zeroed();

type PodRing = RingBuf<Event, { DEFAULT_RING_BYTES as usize }>;

#[btf_map]
static PODS: HashOfMaps<u64, PodRing, { MAX_PODS as usize }> = HashOfMaps::new();

#[map]
static GATE: Array<NodeGate> = Array::with_max_entries(1, 0);

#[map]
static DROPS: PerCpuHashMap<u64, u64> = PerCpuHashMap::with_max_entries(MAX_PODS, 0);

#[map]
static MAINS: HashMap<u32, u64> = HashMap::with_max_entries(NODE_ENTRIES, 0);

#[map]
static CONTAINERS: LruHashMap<u64, MainRecord> = LruHashMap::with_max_entries(NODE_ENTRIES, 0);

#[map]
static TOPS: HashMap<u64, u8> = HashMap::with_max_entries(64, 0);

#[map]
static EXITS: LruHashMap<u64, ExitRecord> = LruHashMap::with_max_entries(NODE_ENTRIES, 0);

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

/// The gate, the first thing every program asks: the kind of the current
/// task's top cgroup (`TOP_KUBELET`, `TOP_PODS`, or 0 for a top unknown to
/// the gate while it is off) and the `levels` bits; `None` (all most
/// processes pay for) when its top holds no pod. Scalars only: an aggregate
/// holding an `Option<Pod>` is spilled with its pointer unset on the `None`
/// path, which the verifier refuses ("R2 !read_ok").
#[inline(always)]
fn gate() -> Option<(u8, u32)> {
    // The helper returns 0 for an ancestor level deeper than the task's own,
    // after reading only that level; any other answer reads the ancestor's
    // kernfs node, a cache line no other code on the exec path touches.
    // SAFETY: a helper call without pointer arguments.
    if unsafe { bpf_get_current_ancestor_cgroup_id(MIN_TASK_LEVEL as i32) } == 0 {
        // Above every pod's containers: the root cgroup, a node's services.
        return None;
    }
    // SAFETY: as above.
    let top = unsafe { bpf_get_current_ancestor_cgroup_id(KUBEPODS_LEVEL as i32) };
    if top == 0 {
        return None;
    }
    let gate = GATE.get(0)?;
    let mut kind = 0;
    for i in 0..GATE_TOPS {
        if gate.tops[i] == top {
            kind = gate.kinds[i];
        }
    }
    if kind == 0 && gate.spilled != 0 {
        // SAFETY: the value is a plain u8, copied out at once.
        kind = TOPS.get_ptr(top).map_or(0, |p| unsafe { *p });
    }
    let levels = gate.levels;
    if kind == 0 && levels & LEVELS_UNGATED == 0 {
        return None;
    }
    Some((kind, levels))
}

/// The registered pod the current task belongs to: its ring, its id, and the id
/// of the task's container (its ancestor one level below the pod; 0 when the
/// task sits in the pod cgroup itself).
struct Pod {
    ring: &'static PodRing,
    id: u64,
    container: u64,
}

#[inline(always)]
fn current_pod(levels: u32) -> Option<Pod> {
    let mut level = MIN_POD_LEVEL;
    while level <= MAX_POD_LEVEL {
        if levels & (1 << level) != 0 {
            // SAFETY: a helper call without pointer arguments.
            let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
            if id == 0 {
                // The task's cgroup is shallower than this level.
                return None;
            }
            // SAFETY: the inner map is only used through ring-buffer helpers.
            if let Some(ring) = unsafe { PODS.get(&id) } {
                // SAFETY: a helper call without pointer arguments.
                let container = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32 + 1) };
                // SAFETY: map values live as long as the program runs.
                let ring: &'static PodRing = unsafe { &*(ring as *const PodRing) };
                return Some(Pod {
                    ring,
                    id,
                    container,
                });
            }
        }
        level += 1;
    }
    None
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
fn count_drop(pod: u64) {
    if let Some(p) = DROPS.get_ptr_mut(pod) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *p += 1 };
    }
}

/// Bytes above the wake-up threshold within which a submit still forces a
/// wake-up: a few records, so concurrent producers cannot all skip it.
const WAKE_WINDOW: u64 = 4096;

/// Submit flags: wake the consumer if asked to, or once as the buffer fills up
/// (past half of it).
///
/// The default flag (0) wakes only when the consumer has caught up with the
/// record just written; after non-waking submits it has not, so a record that
/// must be seen at once needs `BPF_RB_FORCE_WAKEUP`. Past the threshold only the
/// submits just above it wake: a stalled consumer has been told, and waking it
/// on every further event (an inter-processor interrupt each, ~4 µs measured)
/// would only slow the node down while it catches up.
#[inline(always)]
fn submit_flags(ring: &PodRing, urgent: bool) -> u64 {
    if urgent {
        return BPF_RB_FORCE_WAKEUP as u64;
    }
    let ring = ring as *const PodRing as *mut c_void;
    // SAFETY: `ring` is a ring-buffer map pointer from a map lookup.
    let (size, avail) = unsafe {
        (
            bpf_ringbuf_query(ring, BPF_RB_RING_SIZE as u64),
            bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA as u64),
        )
    };
    let threshold = size / 2;
    if avail >= threshold && avail < threshold + WAKE_WINDOW {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// The PID of the task behind `pid` (a `struct pid *`) in its own namespace.
#[inline(always)]
fn ns_nr(pid: u64) -> u32 {
    let level: u32 = read_kernel(pid, config!(pid_level_off)).unwrap_or(0);
    if level > 63 {
        return 0;
    }
    let off = config!(pid_numbers_off) + level * config!(upid_size) + config!(upid_nr_off);
    read_kernel(pid, off).unwrap_or(0)
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
    let thread_pid: u64 = read_kernel(task, config!(task_thread_pid_off)).unwrap_or(0);
    ev.ns_pid = ns_nr(thread_pid);
    ev.ns_tgid = if ev.pid == ev.tgid {
        // The leader itself (every exec, most exits): four reads saved.
        ev.ns_pid
    } else {
        let leader: u64 = read_kernel(task, config!(task_group_leader_off)).unwrap_or(0);
        let leader_pid: u64 = read_kernel(leader, config!(task_thread_pid_off)).unwrap_or(0);
        ns_nr(leader_pid)
    };
}

/// Reserves a record, fills the common fields, lets `fill` write the
/// kind-specific ones (it returns `FLAG_*` bits), and submits it, waking the
/// consumer when `urgent`, for a container's main exec, or when the ring is
/// filling up.
#[inline(always)]
fn send(pod: &Pod, kind: EventKind, urgent: bool, fill: impl FnOnce(&mut Event) -> u32) {
    let Some(mut entry) = pod.ring.reserve(0) else {
        count_drop(pod.id);
        return;
    };
    let ev = entry.as_mut_ptr();
    // Every field but the filename is written below (fill_common, `fill`, the
    // flags), so only the filename's first byte is cleared: userspace reads the
    // filename of exec events alone, up to its NUL, and the rest of the buffer
    // holds only this pod's earlier records. Zeroing the whole record cost a
    // store per 8 of its 320 bytes on every event.
    // SAFETY: `ev` points at a reserved, exclusively owned record of Event size.
    let ev = unsafe {
        core::ptr::addr_of_mut!((*ev).exit_status).write(0);
        core::ptr::addr_of_mut!((*ev).filename)
            .cast::<u8>()
            .write(0);
        &mut *ev
    };
    fill_common(ev, kind, pod.container);
    let mut flags = fill(ev);
    let submit = submit_flags(pod.ring, urgent || flags & FLAG_MAIN != 0);
    if submit == BPF_RB_FORCE_WAKEUP as u64 {
        flags |= FLAG_WAKEUP;
    }
    ev.flags = flags;
    entry.submit(submit);
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(ctx: RawTracePointContext) -> i32 {
    let Some((top, levels)) = gate() else {
        return 0;
    };
    exec_past_gate(ctx.arg(2), top, levels)
}

/// What an exec past the gate does, in a function of its own (a BPF-to-BPF
/// call): the attached program is then only the gate, a few instructions, and
/// every process the gate stops runs that small image alone. While it was one
/// large image, its shared epilogue sat kilobytes away from its entry, and
/// each stopped run cost more as a busier node evicted more of it.
#[inline(never)]
fn exec_past_gate(bprm: u64, top: u8, levels: u32) -> i32 {
    match current_pod(levels) {
        Some(pod) => exec_in_pod(&pod, bprm),
        None if top == TOP_KUBELET => exec_in_kubepods(bprm),
        None => {}
    }
    0
}

/// An exec in a registered pod: recorded if it is its container's first, and
/// sent to the pod's ring.
#[inline(always)]
fn exec_in_pod(pod: &Pod, bprm: u64) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // Also wake for a process userspace is waiting on (a container's init that
    // was already there when the snapshot was taken, exec'ing its entrypoint).
    let waited_on = MAINS.get_ptr(tgid).is_some();
    let filename: u64 = read_kernel(bprm, config!(bprm_filename_off)).unwrap_or(0);
    let main = pod.container != 0 && first_exec(pod.container, filename);
    send(pod, EventKind::Exec, waited_on, |ev| {
        let mut flags = if main { FLAG_MAIN } else { 0 };
        if filename != 0 {
            // SAFETY: the helper checks the address and bounds the read to the buffer.
            let read =
                unsafe { bpf_probe_read_kernel_str_bytes(filename as *const u8, &mut ev.filename) }
                    .map_or(0, |name| name.len());
            // A name that fills the buffer (the helper cuts it, NUL included) was longer.
            if read + 1 >= FILENAME_LEN {
                flags |= FLAG_FILENAME_TRUNCATED;
            }
        }
        flags
    });
}

/// An exec in a pod no copilot follows (yet): only the node-wide record of each
/// container's first exec. The container is two or three levels below the
/// kubelet's top cgroup (Guaranteed pods have no QoS level); for the other pods
/// the shallower id is their pod cgroup, which is never asked about.
#[inline(always)]
fn exec_in_kubepods(bprm: u64) {
    let filename: u64 = read_kernel(bprm, config!(bprm_filename_off)).unwrap_or(0);
    // SAFETY: helper calls without pointer arguments.
    let (shallow, deep) = unsafe {
        (
            bpf_get_current_ancestor_cgroup_id((KUBEPODS_LEVEL + 2) as i32),
            bpf_get_current_ancestor_cgroup_id((KUBEPODS_LEVEL + 3) as i32),
        )
    };
    if shallow != 0 {
        first_exec(shallow, filename);
    }
    if deep != 0 {
        first_exec(deep, filename);
    }
}

/// Records the current process as the main process of `container` if this is
/// the container's first exec, except the runtime's own re-exec (see
/// `runtime_self_exec`). The insert is atomic (BPF_NOEXIST), so two racing
/// first execs cannot both win. Recorded before any event is queued: a full
/// ring loses the event, never the record.
#[inline(always)]
fn first_exec(container: u64, filename: u64) -> bool {
    if CONTAINERS.get_ptr(container).is_some() {
        return false;
    }
    let comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
    let mut head = [0u8; 16];
    if filename != 0 {
        // SAFETY: the helper checks the address and bounds the read to the buffer.
        let _ = unsafe { bpf_probe_read_kernel_str_bytes(filename as *const u8, &mut head) };
    }
    if runtime_self_exec(&head, &comm) {
        return false;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: helper call without arguments.
    let task = unsafe { bpf_get_current_task() };
    let leader: u64 = read_kernel(task, config!(task_group_leader_off)).unwrap_or(0);
    let leader_pid: u64 = read_kernel(leader, config!(task_thread_pid_off)).unwrap_or(0);
    let record = MainRecord {
        tgid,
        ns_tgid: ns_nr(leader_pid),
        comm,
    };
    // In a PID namespace of its own a container's main process is its pid 1. Any
    // other process there is a child of it: its exec is the first one seen only
    // because the container ran before the programs were loaded (a proxy's `sleep`
    // loop), and recording it would make that child's exit the container's. In a
    // pod's shared PID namespace no process can be told for main here: no record.
    // A process of the host's PID namespace (a hostPID pod) keeps the first-exec rule.
    let level: u32 = read_kernel(leader_pid, config!(pid_level_off)).unwrap_or(0);
    if level != 0 && record.ns_tgid != 1 {
        return false;
    }
    if CONTAINERS
        .insert(container, record, BPF_NOEXIST as u64)
        .is_err()
    {
        return false;
    }
    let _ = MAINS.insert(tgid, container, 0);
    true
}

/// runc starts `runc init` as `/proc/self/exe` (comm `exe`) and that re-execs
/// a memfd copy of itself (`/dev/fd/N` or `/proc/self/fd/N`, comm `runc…`, its
/// guard against CVE-2019-5736); either can happen after the process has been
/// moved into the container cgroup (both were seen in CI). Those pids exit at
/// once; the entrypoint is exec'd later by another one. An entrypoint is a path,
/// never an open fd or the caller's own executable, so such an exec is never a
/// container's main process.
#[inline(always)]
fn runtime_self_exec(filename: &[u8; 16], comm: &[u8; COMM_LEN]) -> bool {
    starts_with(filename, b"/dev/fd/")
        || starts_with(filename, b"/proc/self/fd/")
        || starts_with(filename, b"/proc/self/exe")
        || starts_with(comm, b"runc")
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

/// `sched_process_exit(task)`: kernels before 6.16 pass no `group_dead`. do_exit()
/// has already decremented `signal->live`, so zero means this is the last thread.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(_ctx: RawTracePointContext) -> i32 {
    let Some((top, levels)) = gate() else {
        return 0;
    };
    exit_past_gate(top, levels, 0, true)
}

/// What an exit past the gate does (see [`exec_past_gate`]): `group_dead` is the
/// tracepoint's field, or, when `derived`, found from `signal->live`. Scalars
/// only, as every argument of a BPF-to-BPF call here.
#[inline(never)]
fn exit_past_gate(top: u8, levels: u32, group_dead: u64, derived: bool) -> i32 {
    let pod = current_pod(levels);
    if pod.is_none() && top != TOP_KUBELET {
        return 0;
    }
    // SAFETY: helper call without arguments.
    let task = unsafe { bpf_get_current_task() };
    let signal: u64 = read_kernel(task, config!(task_signal_off)).unwrap_or(0);
    let (dead, flag) = if derived {
        // do_exit() has already decremented `signal->live`: zero means this is
        // the last thread.
        let live: i32 = read_kernel(signal, config!(signal_live_off)).unwrap_or(1);
        (live == 0, FLAG_GROUP_DEAD_DERIVED)
    } else {
        (group_dead & 0xff != 0, FLAG_GROUP_DEAD_FIELD)
    };
    if dead {
        process_exited(pod.as_ref(), task, signal, flag);
    }
    0
}

/// `sched_process_exit(task, group_dead)` (6.16 and later).
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit_gd(ctx: RawTracePointContext) -> i32 {
    let Some((top, levels)) = gate() else {
        return 0;
    };
    exit_past_gate(top, levels, ctx.arg(1), false)
}

/// The last thread of the current process died: record a main process's status
/// (in every pod under the kubelet's cgroups) and, in a registered pod, queue
/// the event.
#[inline(always)]
fn process_exited(pod: Option<&Pod>, task: u64, signal: u64, flags: u32) {
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
    // SAFETY: the value is a plain u64, copied out at once.
    let main_of = MAINS.get_ptr(tgid).map(|p| unsafe { *p });
    if let Some(container) = main_of {
        // Kept where userspace can read it back, before the event that may be lost.
        let record = ExitRecord {
            tgid,
            exit_status: status,
            // SAFETY: a helper call without arguments.
            ktime_ns: unsafe { bpf_ktime_get_boot_ns() },
        };
        let _ = EXITS.insert(container, record, 0);
        let _ = MAINS.remove(tgid);
    }
    if let Some(pod) = pod {
        send(pod, EventKind::Exit, main_of.is_some(), |ev| {
            ev.exit_status = status;
            flags
        });
    }
}

#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn mark_victim(ctx: RawTracePointContext) -> i32 {
    // A memcg OOM kill runs in the context of a task charging that memcg, so
    // the pod filter on the current task catches the pod's own OOM kills.
    let Some((_, levels)) = gate() else {
        return 0;
    };
    let Some(pod) = current_pod(levels) else {
        return 0;
    };
    let arg: u64 = ctx.arg(0);
    let victim = if config!(oom_victim_arg) == OOM_ARG_TASK {
        read_kernel::<u32>(arg, config!(task_tgid_off)).unwrap_or(0)
    } else {
        arg as u32
    };
    if victim == 0 {
        return 0;
    }
    send(&pod, EventKind::OomVictim, true, |ev| {
        // The victim, not the task that triggered the kill.
        ev.tgid = victim;
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
