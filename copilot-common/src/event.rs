//! The one event type the eBPF programs send through the ring buffer, and the
//! names of the maps and programs userspace looks up.
//!
//! One program set serves every pod on a node: each pod's sidecar makes its own
//! ring buffer and registers it in [`PODS_MAP`] under its pod cgroup's id, and
//! sets its pod cgroup's level in [`GATE_MAP`]. The other maps are node-wide,
//! keyed by ids that are unique on the node (host tgids, cgroup ids).

/// Hash of maps `u64 pod cgroup id -> ring buffer of Event`s: the registered pods.
pub const PODS_MAP: &str = "PODS";
/// The most pods one node's program set serves (Kubernetes allows 110 by
/// default and 250 at most per node; the rest is room for pods being torn down).
pub const MAX_PODS: u32 = 1024;
/// Array of one [`NodeGate`]: what every program reads first, in one cache line.
pub const GATE_MAP: &str = "GATE";
/// The deepest pod cgroup level the programs look at.
pub const MAX_POD_LEVEL: u32 = 15;
/// The shallowest pod cgroup level copilot follows: a pod's containers sit at
/// least one level below it, at [`MIN_TASK_LEVEL`] or deeper. The kubelet's pods
/// are at level 2 (`kubepods/pod<uid>`) or 3 (`kubepods/<qos>/pod<uid>`), and the
/// systemd driver's likewise.
pub const MIN_POD_LEVEL: u32 = 2;
/// The shallowest level of a task the programs look at. A task above it (the
/// root cgroup, a node's services in `system.slice/<unit>.service`) is in no
/// pod's container, and the gate stops it after reading its own cgroup's level,
/// before any ancestor's id or the gate's cache line.
pub const MIN_TASK_LEVEL: u32 = MIN_POD_LEVEL + 1;
/// Per-CPU hash `u64 pod cgroup id -> u64`: that pod's ring-buffer reserves that
/// failed (events lost). Userspace creates the entry when it registers.
pub const DROPS_MAP: &str = "DROPS";
/// Hash `u32 host tgid -> u64 container cgroup id`: processes whose exit must wake userspace.
pub const MAINS_MAP: &str = "MAINS";
/// LRU hash `u64 container cgroup id -> MainRecord`: containers whose first exec was
/// seen (or that userspace already knows); the first exec in a new one is its main
/// process. Kept for every container under the kubelet's cgroups (see
/// [`TOP_KUBELET`]), registered pod or not: the node-wide record a sidecar that
/// starts late reads instead of `/proc`.
pub const CONTAINERS_MAP: &str = "CONTAINERS";
/// Hash `u64 cgroup id -> u8`: the top cgroups (at [`KUBEPODS_LEVEL`]) that
/// hold pods, [`TOP_KUBELET`] or [`TOP_PODS`]. Userspace's record of them; the
/// programs read the copy in [`NodeGate::tops`], and this map only when it
/// overflowed ([`NodeGate::spilled`]).
pub const TOPS_MAP: &str = "TOPS";
/// A kubelet's top cgroup (`kubepods`, `kubepods.slice`). Its containers sit two
/// or three levels below (`kubepods/pod<uid>/<id>`, `kubepods/<qos>/pod<uid>/<id>`,
/// and the systemd driver's slices likewise), and the programs keep the
/// node-wide record of each one's main process, registered pod or not.
pub const TOP_KUBELET: u8 = 1;
/// A top cgroup that is not the kubelet's but holds a registered pod (a pod
/// cgroup made by hand, `copilot trace --pod-cgroup /x/y`): events of its
/// registered pods only.
pub const TOP_PODS: u8 = 2;
/// The level of the top cgroups: right under the root (the kubelet's default
/// `--cgroup-root` of `/`).
pub const KUBEPODS_LEVEL: u32 = 1;
/// Bit of [`NodeGate::levels`] set when a pod was registered whose top cgroup its
/// copilot could not see (a cgroup namespace's view of the hierarchy): the gate
/// is off, and every process on the node is looked up in [`PODS_MAP`].
pub const LEVELS_UNGATED: u32 = 1;
/// Top cgroups [`NodeGate`] holds; a node has one kubelet top (two while a
/// kubelet changes its cgroup driver), the rest is room for pods made by hand.
pub const GATE_TOPS: usize = 6;

/// The gate every program passes first, the one value of [`GATE_MAP`]: a
/// process whose top cgroup holds no pod (the node's system services, the
/// kubelet, ssh sessions) costs one ancestor lookup and this cache line,
/// whatever the number of pods. A hash lookup in [`TOPS_MAP`] instead cost such a
/// process about 40 ns more a program run here (bench figure 4).
///
/// Written whole by userspace under the node lock and read without one, so a
/// reader may see a write half done: `levels` only gains bits, and a slot of
/// `tops` is only ever filled when empty or emptied when its cgroup is gone,
/// never moved, so a torn read never hides a live top.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeGate {
    /// Bit `L` set when some pod cgroup at level `L` of the v2 hierarchy is
    /// registered (levels [`MIN_POD_LEVEL`] to [`MAX_POD_LEVEL`]), and bit 0
    /// ([`LEVELS_UNGATED`]) when the gate is off.
    pub levels: u32,
    /// Non-zero when [`TOPS_MAP`] holds more tops than `tops` has slots: the
    /// programs then look a top missing here up there.
    pub spilled: u32,
    /// Top cgroup ids, 0 for an empty slot.
    pub tops: [u64; GATE_TOPS],
    /// Each slot's [`TOP_KUBELET`] or [`TOP_PODS`].
    pub kinds: [u8; 8],
}

/// Hash `u64 container cgroup id -> ExitRecord`: how each container's main process
/// ended, written before its event is queued, so a lost event loses no status.
pub const EXITS_MAP: &str = "EXITS";

/// Raw tracepoint programs (attached by tracepoint name, no tracefs).
pub const EXEC_PROGRAM: &str = "sched_process_exec";
/// For kernels whose `sched_process_exit` passes only the task.
pub const EXIT_PROGRAM: &str = "sched_process_exit";
/// For kernels whose `sched_process_exit` also passes `bool group_dead` (6.16 and later).
pub const EXIT_GROUP_DEAD_PROGRAM: &str = "sched_process_exit_gd";
pub const OOM_PROGRAM: &str = "mark_victim";

/// Entries of the node-wide maps keyed by container or process (a few per pod).
pub const NODE_ENTRIES: u32 = 16384;

/// Default ring buffer size in bytes (a power of two, a multiple of the page size).
pub const DEFAULT_RING_BYTES: u32 = 1 << 20;

pub const COMM_LEN: usize = 16;
/// Bytes of the exec'd filename kept; longer names are cut and flagged.
pub const FILENAME_LEN: usize = 256;

/// What an [`Event`] reports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A successful `execve` (`sched_process_exec`).
    Exec = 1,
    /// The last thread of a process died (`sched_process_exit` with the group dead).
    Exit = 2,
    /// The OOM killer chose a victim (`oom/mark_victim`); `tgid` is the victim.
    OomVictim = 3,
}

impl EventKind {
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Exec),
            2 => Some(Self::Exit),
            3 => Some(Self::OomVictim),
            _ => None,
        }
    }
}

/// The exec was the first one seen in its container cgroup: its main process.
pub const FLAG_MAIN: u32 = 1 << 0;
/// The filename was longer than [`FILENAME_LEN`] and was cut.
pub const FLAG_FILENAME_TRUNCATED: u32 = 1 << 1;
/// Thread-group death came from the tracepoint's `group_dead` argument.
pub const FLAG_GROUP_DEAD_FIELD: u32 = 1 << 2;
/// Thread-group death was derived from `signal_struct.live` (kernels whose tracepoint lacks `group_dead`, e.g. 6.1 and 6.12).
pub const FLAG_GROUP_DEAD_DERIVED: u32 = 1 << 3;
/// The submit woke the consumer (the event needs action at once).
pub const FLAG_WAKEUP: u32 = 1 << 4;

/// One fixed-size record in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// An [`EventKind`] as `u32`.
    pub kind: u32,
    /// Process id (thread-group id) as the host's root PID namespace sees it.
    pub tgid: u32,
    /// Thread id of the task that fired the tracepoint.
    pub pid: u32,
    /// `tgid` as the process's own PID namespace sees it (1 for a container's
    /// init); 0 when it could not be read.
    pub ns_tgid: u32,
    /// `pid` as the task's own PID namespace sees it.
    pub ns_pid: u32,
    /// `real_parent->tgid`.
    pub ppid: u32,
    /// cgroup v2 id of the task's own cgroup.
    pub cgroup_id: u64,
    /// cgroup v2 id of the task's ancestor one level below the pod (its container);
    /// 0 when the task sits in the pod cgroup itself.
    pub container_cgroup_id: u64,
    /// `bpf_ktime_get_boot_ns()`: CLOCK_BOOTTIME, comparable with userspace.
    pub ktime_ns: u64,
    /// For [`EventKind::Exit`]: the wait(2) status of the process.
    pub exit_status: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    pub comm: [u8; COMM_LEN],
    /// For [`EventKind::Exec`]: the exec'd path, NUL-terminated unless cut.
    pub filename: [u8; FILENAME_LEN],
}

impl Event {
    pub const fn zeroed() -> Self {
        Self {
            kind: 0,
            tgid: 0,
            pid: 0,
            ns_tgid: 0,
            ns_pid: 0,
            ppid: 0,
            cgroup_id: 0,
            container_cgroup_id: 0,
            ktime_ns: 0,
            exit_status: 0,
            flags: 0,
            comm: [0; COMM_LEN],
            filename: [0; FILENAME_LEN],
        }
    }
}

/// A container's main process, as [`CONTAINERS_MAP`] keeps it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MainRecord {
    /// As the host's root PID namespace sees it; 0 when userspace knows the
    /// container but no main process yet.
    pub tgid: u32,
    /// As the process's own PID namespace sees it (0: unknown).
    pub ns_tgid: u32,
    /// Its `comm` after the exec (zeros when userspace wrote the record).
    pub comm: [u8; COMM_LEN],
}

/// The exit of a container's main process, as [`EXITS_MAP`] keeps it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitRecord {
    /// The main process, as the host's root PID namespace sees it.
    pub tgid: u32,
    /// Its wait(2) status.
    pub exit_status: u32,
    /// `bpf_ktime_get_boot_ns()` at the exit.
    pub ktime_ns: u64,
}

const _: () = assert!(core::mem::size_of::<Event>() == 328);
const _: () = assert!(core::mem::size_of::<NodeGate>() == 64);
const _: () = assert!(core::mem::size_of::<ExitRecord>() == 16);
const _: () = assert!(core::mem::size_of::<MainRecord>() == 24);
const _: () = assert!(core::mem::size_of::<crate::config::Config>() == 64);

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, only integers and byte arrays, no implicit padding.
unsafe impl aya::Pod for Event {}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, only integers, no implicit padding.
unsafe impl aya::Pod for ExitRecord {}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, only integers and integer arrays, no implicit padding.
unsafe impl aya::Pod for NodeGate {}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, only integers and a byte array, no implicit padding.
unsafe impl aya::Pod for MainRecord {}
