//! Loading and attaching copilot's eBPF programs, and reading their ring buffer.
//!
//! ```no_run
//! # async fn f(h: copilot::cgroup::Hierarchy, pod: copilot::cgroup::Cgroup) -> Result<(), copilot::tracer::Error> {
//! let mut tracer = copilot::tracer::Tracer::load(&copilot::tracer::Options::for_pod(&h, &pod))?;
//! tracer.attach()?;
//! let mut events = Vec::new();
//! tracer.next_batch(&mut events).await?;
//! # Ok(()) }
//! ```
//!
//! One program set serves the node: the first copilot loads it and pins it in
//! bpffs (see [`set`]); the others reuse it. Each tracer makes its own ring
//! buffer and registers it under its pod cgroup's id, so every process on the
//! node pays for the programs once, whatever the number of pods. Where bpffs is
//! not mounted or not writable, or the pod already has a live tracer, the tracer
//! loads a private set, as one did before sets were shared.
//!
//! Needs Linux ≥ 5.8 (ring buffer; 5.10 for a ring of another size than the
//! default), BTF at `/sys/kernel/btf/vmlinux`, and CAP_BPF + CAP_PERFMON (or
//! root). Not tracefs: the programs are raw tracepoints, attached by name, whose
//! arguments the kernel's BTF describes.

mod btf;
mod event;
mod set;

use std::{io, path::PathBuf};

use aya::maps::{MapData, RingBuf};
use copilot_common::{
    config::{Config, OOM_ARG_PID, OOM_ARG_TASK},
    event::{
        COMM_LEN, DEFAULT_RING_BYTES, Event, ExitRecord, MAX_POD_LEVEL, MIN_POD_LEVEL, MainRecord,
    },
};
pub use event::{EventDetail, ExitStatus, ProcessEvent};
use set::{DirLock, ProgramSet, SetKind};
use tokio::io::{Interest, unix::AsyncFd};

/// `SIGNAL_GROUP_EXIT` in `include/linux/sched/signal.h`, unchanged since 2.6.
const SIGNAL_GROUP_EXIT: u32 = 0x4;
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// `BPF_MAP_TYPE_RINGBUF` in `include/uapi/linux/bpf.h`.
const BPF_MAP_TYPE_RINGBUF: u32 = 27;

/// Where the node's shared program set is pinned unless told otherwise.
pub const DEFAULT_NODE_DIR: &str = "/sys/fs/bpf/copilot";

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/copilot"));

/// The hash of the eBPF object built into this binary (16 hex digits), which names
/// the node's program set under [`DEFAULT_NODE_DIR`]; `None` in a build without the
/// object (`AYA_BUILD_SKIP=1`). `copilot --version` prints it, and the image carries
/// it as a label.
pub fn object_hash() -> Option<String> {
    (!OBJECT.is_empty()).then(set::object_hash)
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot read the kernel's BTF at {path}: copilot needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("kernel BTF at {path}")]
    Btf {
        path: &'static str,
        #[source]
        source: btf::Error,
    },
    #[error(
        "loading the eBPF object failed (copilot needs CAP_BPF and CAP_PERFMON, or root, and Linux ≥ 5.8)"
    )]
    Load(#[source] aya::EbpfError),
    #[error("this copilot was built with AYA_BUILD_SKIP=1 and has no eBPF programs")]
    NoObject,
    #[error("the kernel's tracepoint {tracepoint} passes arguments copilot does not know: {args}")]
    Prototype {
        tracepoint: &'static str,
        args: String,
    },
    #[error("eBPF program {name} is missing from the object")]
    NoProgram { name: &'static str },
    #[error("eBPF map {name} is missing from the object")]
    NoMap { name: &'static str },
    #[error("eBPF map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("eBPF program {name}: {action} failed")]
    Program {
        name: &'static str,
        action: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error(
        "creating the pod's ring buffer of {bytes} bytes (a power of two, a multiple of the page size)"
    )]
    Ring {
        bytes: u32,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(
        "the pod cgroup is at level {level} of the cgroup v2 hierarchy; copilot follows pods at levels {MIN_POD_LEVEL} to {MAX_POD_LEVEL} (a kubelet's are at 2 or 3)"
    )]
    PodLevel { level: u32 },
    #[error("counting the possible CPUs")]
    Cpus(#[source] io::Error),
    #[error("pinned eBPF set: {action} {path} failed")]
    Pin {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("pinned eBPF set: {action} {path} failed")]
    Pinned {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("polling the ring buffer")]
    Poll(#[source] io::Error),
}

/// What to trace and how.
#[derive(Debug, Clone)]
pub struct Options {
    pub pod_cgroup_id: u64,
    pub pod_cgroup_level: u32,
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Leave `oom/mark_victim` out, as on a kernel without it (OOM kills are then
    /// told from the memory controller's counters); for tests of that path.
    /// Implies a private set.
    pub without_oom_tracepoint: bool,
    /// Where the node's shared set is pinned (a directory on bpffs, made if
    /// missing); `None` for a private set.
    pub node_dir: Option<PathBuf>,
    /// The cgroup v2 mount and the level of its root: pods registered by
    /// copilots that died are collected once their cgroup is gone from it.
    pub cgroup_mount: PathBuf,
    pub cgroup_root_level: u32,
    /// The id of the pod's top cgroup (its ancestor at level 1), the programs'
    /// gate; `None` when the mount does not show it (then the gate is off).
    pub pod_top_id: Option<u64>,
}

impl Options {
    pub fn for_pod(hierarchy: &crate::cgroup::Hierarchy, pod: &crate::cgroup::Cgroup) -> Self {
        Self {
            pod_cgroup_id: pod.id,
            pod_cgroup_level: pod.level,
            ring_bytes: DEFAULT_RING_BYTES,
            without_oom_tracepoint: false,
            node_dir: Some(DEFAULT_NODE_DIR.into()),
            cgroup_mount: hierarchy.mount.clone(),
            cgroup_root_level: hierarchy.root_level,
            pod_top_id: top_id(hierarchy, pod),
        }
    }
}

/// The id of `pod`'s ancestor at level 1, if the mount shows it.
fn top_id(hierarchy: &crate::cgroup::Hierarchy, pod: &crate::cgroup::Cgroup) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    if hierarchy.root_level != 0 {
        return None;
    }
    let first = pod
        .rel
        .components()
        .find(|c| matches!(c, std::path::Component::Normal(_)))?;
    let meta = std::fs::metadata(hierarchy.mount.join(first)).ok()?;
    meta.is_dir().then(|| meta.ino())
}

/// Which kernel-dependent paths the loaded programs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct KernelPaths {
    /// `sched_process_exit` has `group_dead` (6.18 has it; 6.1 and 6.12 do not); else derived from `signal->live`.
    pub group_dead_field: bool,
    /// `oom/mark_victim` is available and attached.
    pub oom_tracepoint: bool,
}

/// Whether this tracer uses the node's shared set, and if not why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "set", rename_all = "snake_case")]
pub enum SetUse {
    /// Registered in the node's pinned set at `dir`.
    Node { dir: PathBuf },
    /// Programs of its own, for the reason given.
    Private { reason: String },
}

/// The loaded (and, after [`Tracer::attach`], attached) programs and their maps.
pub struct Tracer {
    set: ProgramSet,
    ring: AsyncFd<RingBuf<MapData>>,
    pod_id: u64,
    pod_level: u32,
    pod_top_id: Option<u64>,
    cgroup_mount: PathBuf,
    cgroup_root_level: u32,
    /// The flock that says this pod's registration is alive (node sets).
    registration: Option<(PathBuf, DirLock)>,
    set_use: SetUse,
}

/// How a container's main process ended, read back from the kernel's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedExit {
    pub tgid: u32,
    pub status: ExitStatus,
    /// CLOCK_BOOTTIME of the exit.
    pub time_ns: u64,
}

/// A container's main process, as the kernel recorded its first exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedMain {
    /// In the host's PID namespace.
    pub tgid: u32,
    /// In its own (1 for a container's init; 0: unknown).
    pub ns_tgid: u32,
    /// Empty when userspace wrote the record.
    pub comm: String,
}

/// Parsing the kernel's BTF peaks at ~40 MiB of heap, which glibc keeps once it is
/// freed; a sidecar or `copilot trace` then runs for hours, so it goes back to the
/// kernel here (measured: a sidecar's idle RSS 14.3 → 10.5 MiB).
fn release_btf_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Reads the kernel's BTF and resolves the programs' configuration.
fn resolve(without_oom_tracepoint: bool) -> Result<(Config, KernelPaths), Error> {
    let data = std::fs::read(VMLINUX_BTF).map_err(|source| Error::NoBtf {
        path: VMLINUX_BTF,
        source,
    })?;
    let kbtf = btf::Btf::parse(&data).map_err(|source| Error::Btf {
        path: VMLINUX_BTF,
        source,
    })?;
    let resolved = resolve_config(&kbtf, without_oom_tracepoint);
    drop(kbtf);
    drop(data);
    release_btf_heap();
    resolved
}

impl Tracer {
    /// Opens (or, first on the node, loads) the programs and makes this pod's
    /// ring buffer, without registering it: nothing reaches the ring before
    /// [`Tracer::attach`].
    pub fn load(opts: &Options) -> Result<Self, Error> {
        if OBJECT.is_empty() {
            return Err(Error::NoObject);
        }
        if !(MIN_POD_LEVEL..=MAX_POD_LEVEL).contains(&opts.pod_cgroup_level) {
            return Err(Error::PodLevel {
                level: opts.pod_cgroup_level,
            });
        }
        let (set, set_use) = open_set(opts)?;
        let obj = aya_obj::Map::new_from_params(BPF_MAP_TYPE_RINGBUF, 0, 0, opts.ring_bytes, 0);
        let ring_err = |source| Error::Ring {
            bytes: opts.ring_bytes,
            source,
        };
        let data = MapData::create(obj, "copilot_pod", None).map_err(ring_err)?;
        let ring = RingBuf::try_from(aya::maps::Map::RingBuf(data)).map_err(ring_err)?;
        // SAFETY: the RingBuf owns its map fd and keeps it open until dropped.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| Error::Poll(e.into_parts().1))?;
        Ok(Self {
            set,
            ring,
            pod_id: opts.pod_cgroup_id,
            pod_level: opts.pod_cgroup_level,
            pod_top_id: opts.pod_top_id,
            cgroup_mount: opts.cgroup_mount.clone(),
            cgroup_root_level: opts.cgroup_root_level,
            registration: None,
            set_use,
        })
    }

    /// Registers the pod's ring (and, for a private set, attaches the
    /// programs): from here on nothing in the pod is missed.
    pub fn attach(&mut self) -> Result<(), Error> {
        let node = match &self.set.kind {
            SetKind::Private(_) => None,
            SetKind::Node(dir) => Some((dir.base.clone(), dir.set.clone())),
        };
        let Some((base, set_dir)) = node else {
            self.set.maps.add_pod_top(self.pod_top_id)?;
            self.set.maps.add_level(self.pod_level)?;
            self.set.maps.register(self.pod_id, self.ring.get_ref())?;
            return self.set.attach_private();
        };
        let _node = DirLock::wait(&base)?;
        let pod_dir = set::pod_dir(&set_dir, self.pod_id);
        match std::fs::create_dir(&pod_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(set::pin_err(&pod_dir, "create", e)),
        }
        // `load` checked that no live tracer holds it; one that died held it.
        let lock = DirLock::try_take(&pod_dir)?
            .ok_or_else(|| set::pin_err(&pod_dir, "lock", io::ErrorKind::WouldBlock.into()))?;
        self.set.maps.add_pod_top(self.pod_top_id)?;
        self.set.maps.add_level(self.pod_level)?;
        self.set.maps.register(self.pod_id, self.ring.get_ref())?;
        self.registration = Some((pod_dir, lock));
        self.collect(&set_dir);
        Ok(())
    }

    /// Unregisters the pods whose copilot died and whose cgroup is gone (cgroup
    /// ids are not reused within a boot). The caller holds the node lock.
    fn collect(&mut self, set_dir: &std::path::Path) {
        let orphans = set::orphans(set_dir);
        if orphans.is_empty() {
            return;
        }
        let Some(alive) = set::cgroup_ids(
            &self.cgroup_mount,
            self.cgroup_root_level,
            self.set.maps.levels(),
        ) else {
            return;
        };
        for (id, lock) in orphans {
            if id == self.pod_id || alive.contains(&id) {
                continue;
            }
            self.set.maps.unregister(id);
            let _ = std::fs::remove_dir(set::pod_dir(set_dir, id));
            drop(lock);
            tracing::info!(pod_cgroup_id = id, "collected a gone pod's registration");
        }
    }

    pub fn kernel_paths(&self) -> KernelPaths {
        self.set.paths
    }

    /// The node's shared set, or a private one and why.
    pub fn set_use(&self) -> &SetUse {
        &self.set_use
    }

    /// Tells the kernel a container cgroup is already known, with its main
    /// process if one runs (0 if not), so a later exec in it is not taken for
    /// the container's first. The kernel's own record, where it has one, stays.
    pub fn know_container(&mut self, cgroup_id: u64, main_tgid: u32) -> Result<(), Error> {
        if self.set.maps.containers.get(&cgroup_id, 0).is_ok() {
            return Ok(());
        }
        let record = MainRecord {
            tgid: main_tgid,
            ns_tgid: 0,
            comm: [0; COMM_LEN],
        };
        self.set
            .maps
            .containers
            .insert(cgroup_id, record, 0)
            .map_err(|source| Error::Map {
                name: copilot_common::event::CONTAINERS_MAP,
                source,
            })
    }

    /// Asks the kernel to wake userspace at once when this process exits.
    pub fn watch_exit(&mut self, tgid: u32, container_cgroup_id: u64) -> Result<(), Error> {
        self.set
            .maps
            .mains
            .insert(tgid, container_cgroup_id, 0)
            .map_err(|source| Error::Map {
                name: copilot_common::event::MAINS_MAP,
                source,
            })
    }

    /// The kernel's record of a container's main process (its first exec), if
    /// the programs saw it (or userspace told them of it, then without a comm).
    pub fn recorded_main(&self, container_cgroup_id: u64) -> Option<RecordedMain> {
        let r: MainRecord = self.set.maps.containers.get(&container_cgroup_id, 0).ok()?;
        if r.tgid == 0 {
            return None;
        }
        let end = r.comm.iter().position(|&c| c == 0).unwrap_or(COMM_LEN);
        Some(RecordedMain {
            tgid: r.tgid,
            ns_tgid: r.ns_tgid,
            comm: String::from_utf8_lossy(&r.comm[..end]).into_owned(),
        })
    }

    /// The kernel's record of how the main process of a container ended, if the
    /// programs saw it exit (they record only processes they were told to watch,
    /// or that they saw exec first in their container).
    pub fn recorded_exit(&self, container_cgroup_id: u64) -> Option<RecordedExit> {
        let r: ExitRecord = self.set.maps.exits.get(&container_cgroup_id, 0).ok()?;
        Some(RecordedExit {
            tgid: r.tgid,
            status: ExitStatus(r.exit_status),
            time_ns: r.ktime_ns,
        })
    }

    /// Events of this pod lost because its ring buffer was full, summed over CPUs.
    pub fn lost(&self) -> Result<u64, Error> {
        match self.set.maps.drops.get(&self.pod_id, 0) {
            Ok(per_cpu) => Ok(per_cpu.iter().sum()),
            Err(aya::maps::MapError::KeyNotFound) => Ok(0),
            Err(source) => Err(Error::Map {
                name: copilot_common::event::DROPS_MAP,
                source,
            }),
        }
    }

    /// Appends every queued event to `out` without waiting.
    pub fn drain(&mut self, out: &mut Vec<ProcessEvent>) {
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            if item.len() < size_of::<Event>() {
                continue;
            }
            // SAFETY: the kernel wrote a whole `Event` (checked length); read unaligned.
            let raw = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) };
            if let Some(ev) = ProcessEvent::decode(&raw) {
                out.push(ev);
            }
        }
    }

    /// Waits until the kernel wakes us, then drains the ring buffer into `out`.
    pub async fn next_batch(&mut self, out: &mut Vec<ProcessEvent>) -> Result<(), Error> {
        loop {
            let mut guard = self.ring.readable_mut().await.map_err(Error::Poll)?;
            // Clear readiness *before* draining: a wake-up that lands while we
            // drain sets it again, so no event is left waiting for the next one.
            guard.clear_ready();
            drop(guard);
            let before = out.len();
            self.drain(out);
            if out.len() > before {
                return Ok(());
            }
        }
    }
}

impl Drop for Tracer {
    /// Unregisters from the node's set; the flock goes last, so no newcomer can
    /// take the pod over while the entry is still ours.
    fn drop(&mut self) {
        if let Some((dir, lock)) = self.registration.take() {
            self.set.maps.unregister(self.pod_id);
            let _ = std::fs::remove_dir(&dir);
            drop(lock);
        }
    }
}

/// The node's set when it can be used, else a private one, with the reason.
fn open_set(opts: &Options) -> Result<(ProgramSet, SetUse), Error> {
    let private = |reason: String| -> Result<(ProgramSet, SetUse), Error> {
        let (config, paths) = resolve(opts.without_oom_tracepoint)?;
        let mut set = ProgramSet::private(&config, paths)?;
        set.maps
            .add_kubelet_tops(&opts.cgroup_mount, opts.cgroup_root_level)?;
        Ok((set, SetUse::Private { reason }))
    };
    let Some(base) = &opts.node_dir else {
        return private("no node directory was given".into());
    };
    if opts.without_oom_tracepoint {
        return private("the OOM tracepoint is left out".into());
    }
    if let Err(e) = std::fs::create_dir_all(base) {
        return private(format!("cannot make {}: {e}", base.display()));
    }
    if !set::is_bpffs(base) {
        return private(format!("{} is not on a bpffs", base.display()));
    }
    let _lock = DirLock::wait(base)?;
    let mut set = match ProgramSet::node(base, || resolve(false)) {
        Ok(set) => set,
        Err(e) => {
            let e = crate::error_chain(&e);
            return private(format!("the node's set at {}: {e}", base.display()));
        }
    };
    let SetKind::Node(dir) = &set.kind else {
        unreachable!("ProgramSet::node makes a node set")
    };
    let pod_dir = set::pod_dir(&dir.set, opts.pod_cgroup_id);
    // A live tracer of this pod holds its lock: leave its ring alone.
    if pod_dir.exists() && DirLock::try_take(&pod_dir)?.is_none() {
        drop(set);
        return private("another copilot already follows this pod".into());
    }
    let set_use = SetUse::Node {
        dir: dir.set.clone(),
    };
    set.maps
        .add_kubelet_tops(&opts.cgroup_mount, opts.cgroup_root_level)?;
    Ok((set, set_use))
}

/// Builds the programs' [`Config`] from the kernel's BTF.
fn resolve_config(
    kbtf: &btf::Btf,
    without_oom_tracepoint: bool,
) -> Result<(Config, KernelPaths), Error> {
    let btf_err = |source| Error::Btf {
        path: VMLINUX_BTF,
        source,
    };
    let off = |s: &str, m: &str| kbtf.member_offset(s, m).map_err(btf_err);
    let exec = kbtf
        .tracepoint_args("sched_process_exec")
        .map_err(btf_err)?;
    let exit = kbtf
        .tracepoint_args("sched_process_exit")
        .map_err(btf_err)?;
    let task = || btf::Arg::Pointer("task_struct".into());
    if exec.get(2) != Some(&btf::Arg::Pointer("linux_binprm".into())) {
        return Err(Error::Prototype {
            tracepoint: "sched_process_exec",
            args: format!("{exec:?}"),
        });
    }
    let group_dead = match exit.as_slice() {
        [t] if *t == task() => false,
        [t, btf::Arg::Int(_)] if *t == task() => true,
        _ => {
            return Err(Error::Prototype {
                tracepoint: "sched_process_exit",
                args: format!("{exit:?}"),
            });
        }
    };
    // The OOM tracepoint is a bonus (attribution falls back to OOM counters).
    let oom_arg = match kbtf.tracepoint_args("mark_victim").ok().as_deref() {
        _ if without_oom_tracepoint => None,
        Some([btf::Arg::Int(_), ..]) => Some(OOM_ARG_PID),
        Some([t, ..]) if *t == task() => Some(OOM_ARG_TASK),
        _ => None,
    };
    let config = Config {
        task_thread_pid_off: off("task_struct", "thread_pid")?,
        pid_level_off: off("pid", "level")?,
        pid_numbers_off: off("pid", "numbers")?,
        upid_size: kbtf.struct_size("upid").map_err(btf_err)?,
        upid_nr_off: off("upid", "nr")?,
        bprm_filename_off: off("linux_binprm", "filename")?,
        oom_victim_arg: oom_arg.unwrap_or(OOM_ARG_PID),
        task_tgid_off: off("task_struct", "tgid")?,
        task_real_parent_off: off("task_struct", "real_parent")?,
        task_group_leader_off: off("task_struct", "group_leader")?,
        task_exit_code_off: off("task_struct", "exit_code")?,
        task_signal_off: off("task_struct", "signal")?,
        signal_live_off: off("signal_struct", "live")?,
        signal_flags_off: off("signal_struct", "flags")?,
        signal_group_exit_code_off: off("signal_struct", "group_exit_code")?,
        signal_group_exit_flag: SIGNAL_GROUP_EXIT,
    };
    let paths = KernelPaths {
        group_dead_field: group_dead,
        oom_tracepoint: oom_arg.is_some(),
    };
    Ok((config, paths))
}

/// CLOCK_BOOTTIME now: the clock of the events' `time_ns` (`bpf_ktime_get_boot_ns`).
pub fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
