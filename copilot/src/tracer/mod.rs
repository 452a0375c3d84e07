//! Loading and attaching copilot's eBPF programs, and reading their ring buffer.
//!
//! ```no_run
//! # async fn f(pod: copilot::cgroup::Cgroup) -> Result<(), copilot::tracer::Error> {
//! let mut tracer = copilot::tracer::Tracer::load(&copilot::tracer::Options::for_pod(&pod))?;
//! tracer.attach()?;
//! let mut events = Vec::new();
//! tracer.next_batch(&mut events).await?;
//! # Ok(()) }
//! ```
//!
//! Needs Linux ≥ 5.8 (ring buffer), BTF at `/sys/kernel/btf/vmlinux`, and
//! CAP_BPF + CAP_PERFMON (or root). Not tracefs: the programs are raw
//! tracepoints, attached by name, whose arguments the kernel's BTF describes.

mod btf;
mod event;

use std::io;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::RawTracePoint,
};
use copilot_common::{
    config::{CONFIG_GLOBAL, Config, OOM_ARG_PID, OOM_ARG_TASK},
    event::{
        CONTAINERS_MAP, DEFAULT_RING_BYTES, DROPS_MAP, EVENTS_MAP, EXEC_PROGRAM,
        EXIT_GROUP_DEAD_PROGRAM, EXIT_PROGRAM, EXITS_MAP, Event, ExitRecord, MAINS_MAP,
        OOM_PROGRAM,
    },
};
pub use event::{ExitStatus, Kind, ProcessEvent};
use tokio::io::{Interest, unix::AsyncFd};

/// `SIGNAL_GROUP_EXIT` in `include/linux/sched/signal.h`, unchanged since 2.6.
const SIGNAL_GROUP_EXIT: u32 = 0x4;
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/copilot"));

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
    pub without_oom_tracepoint: bool,
}

impl Options {
    pub fn for_pod(pod: &crate::cgroup::Cgroup) -> Self {
        Self {
            pod_cgroup_id: pod.id,
            pod_cgroup_level: pod.level,
            ring_bytes: DEFAULT_RING_BYTES,
            without_oom_tracepoint: false,
        }
    }
}

/// Which kernel-dependent paths the loaded programs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct KernelPaths {
    /// `sched_process_exit` has `group_dead` (6.18 has it; 6.1 and 6.12 do not); else derived from `signal->live`.
    pub group_dead_field: bool,
    /// `oom/mark_victim` is available and attached.
    pub oom_tracepoint: bool,
}

/// The loaded (and, after [`Tracer::attach`], attached) programs and their maps.
pub struct Tracer {
    ebpf: Ebpf,
    ring: AsyncFd<RingBuf<MapData>>,
    drops: PerCpuArray<MapData, u64>,
    mains: HashMap<MapData, u32, u64>,
    containers: HashMap<MapData, u64, u32>,
    exits: HashMap<MapData, u64, ExitRecord>,
    paths: KernelPaths,
}

/// How a container's main process ended, read back from the kernel's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedExit {
    pub tgid: u32,
    pub status: ExitStatus,
    /// CLOCK_BOOTTIME of the exit.
    pub time_ns: u64,
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

impl Tracer {
    /// Resolves the kernel's offsets and loads the programs, without attaching.
    pub fn load(opts: &Options) -> Result<Self, Error> {
        if OBJECT.is_empty() {
            return Err(Error::NoObject);
        }
        let data = std::fs::read(VMLINUX_BTF).map_err(|source| Error::NoBtf {
            path: VMLINUX_BTF,
            source,
        })?;
        let kbtf = btf::Btf::parse(&data).map_err(|source| Error::Btf {
            path: VMLINUX_BTF,
            source,
        })?;
        let (config, paths) = resolve_config(&kbtf, opts)?;
        drop(kbtf);
        drop(data);
        release_btf_heap();

        let mut ebpf = EbpfLoader::new()
            .override_global(CONFIG_GLOBAL, &config, true)
            .map_max_entries(EVENTS_MAP, opts.ring_bytes)
            .load(OBJECT)
            .map_err(Error::Load)?;
        for (name, _) in programs(paths) {
            program(&mut ebpf, name)?
                .load()
                .map_err(|source| Error::Program {
                    name,
                    action: "load",
                    source,
                })?;
        }
        let ring =
            RingBuf::try_from(take_map(&mut ebpf, EVENTS_MAP)?).map_err(|source| Error::Map {
                name: EVENTS_MAP,
                source,
            })?;
        // SAFETY: the RingBuf owns its map fd and keeps it open until dropped.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| Error::Poll(e.into_parts().1))?;
        let drops = PerCpuArray::try_from(take_map(&mut ebpf, DROPS_MAP)?).map_err(|source| {
            Error::Map {
                name: DROPS_MAP,
                source,
            }
        })?;
        let mains =
            HashMap::try_from(take_map(&mut ebpf, MAINS_MAP)?).map_err(|source| Error::Map {
                name: MAINS_MAP,
                source,
            })?;
        let containers =
            HashMap::try_from(take_map(&mut ebpf, CONTAINERS_MAP)?).map_err(|source| {
                Error::Map {
                    name: CONTAINERS_MAP,
                    source,
                }
            })?;
        let exits =
            HashMap::try_from(take_map(&mut ebpf, EXITS_MAP)?).map_err(|source| Error::Map {
                name: EXITS_MAP,
                source,
            })?;
        Ok(Self {
            ebpf,
            ring,
            drops,
            mains,
            containers,
            exits,
            paths,
        })
    }

    /// Attaches the programs: from here on nothing in the pod is missed.
    pub fn attach(&mut self) -> Result<(), Error> {
        for (name, tracepoint) in programs(self.paths) {
            program(&mut self.ebpf, name)?
                .attach(tracepoint)
                .map_err(|source| Error::Program {
                    name,
                    action: "attach",
                    source,
                })?;
        }
        Ok(())
    }

    pub fn kernel_paths(&self) -> KernelPaths {
        self.paths
    }

    /// Tells the kernel a container cgroup is already known, with its main
    /// process if one runs (0 if not), so a later exec in it is not taken for
    /// the container's first.
    pub fn know_container(&mut self, cgroup_id: u64, main_tgid: u32) -> Result<(), Error> {
        self.containers
            .insert(cgroup_id, main_tgid, 0)
            .map_err(|source| Error::Map {
                name: CONTAINERS_MAP,
                source,
            })
    }

    /// Asks the kernel to wake userspace at once when this process exits.
    pub fn watch_exit(&mut self, tgid: u32, container_cgroup_id: u64) -> Result<(), Error> {
        self.mains
            .insert(tgid, container_cgroup_id, 0)
            .map_err(|source| Error::Map {
                name: MAINS_MAP,
                source,
            })
    }

    /// The kernel's record of how the main process of a container ended, if the
    /// programs saw it exit (they record only processes they were told to watch,
    /// or that they saw exec first in their container).
    pub fn recorded_exit(&self, container_cgroup_id: u64) -> Option<RecordedExit> {
        let r = self.exits.get(&container_cgroup_id, 0).ok()?;
        Some(RecordedExit {
            tgid: r.tgid,
            status: ExitStatus(r.exit_status),
            time_ns: r.ktime_ns,
        })
    }

    /// Events lost because the ring buffer was full, summed over CPUs.
    pub fn lost(&self) -> Result<u64, Error> {
        let per_cpu = self.drops.get(&0, 0).map_err(|source| Error::Map {
            name: DROPS_MAP,
            source,
        })?;
        Ok(per_cpu.iter().sum())
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

/// The programs the running kernel gets, with the tracepoint each attaches to.
fn programs(paths: KernelPaths) -> impl Iterator<Item = (&'static str, &'static str)> {
    let exit = if paths.group_dead_field {
        EXIT_GROUP_DEAD_PROGRAM
    } else {
        EXIT_PROGRAM
    };
    [
        (EXEC_PROGRAM, "sched_process_exec"),
        (exit, "sched_process_exit"),
    ]
    .into_iter()
    .chain(paths.oom_tracepoint.then_some((OOM_PROGRAM, "mark_victim")))
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut RawTracePoint, Error> {
    ebpf.program_mut(name)
        .ok_or(Error::NoProgram { name })?
        .try_into()
        .map_err(|source| Error::Program {
            name,
            action: "type check",
            source,
        })
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, Error> {
    ebpf.take_map(name).ok_or(Error::NoMap { name })
}

/// Builds the programs' [`Config`] from the kernel's BTF.
fn resolve_config(kbtf: &btf::Btf, opts: &Options) -> Result<(Config, KernelPaths), Error> {
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
        _ if opts.without_oom_tracepoint => None,
        Some([btf::Arg::Int(_), ..]) => Some(OOM_ARG_PID),
        Some([t, ..]) if *t == task() => Some(OOM_ARG_TASK),
        _ => None,
    };
    let config = Config {
        pod_cgroup_id: opts.pod_cgroup_id,
        pod_cgroup_level: opts.pod_cgroup_level,
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
        wakeup_threshold: opts.ring_bytes / 2,
        reserved: 0,
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
