//! The loaded program set and its maps: one per node, pinned in bpffs and shared
//! by every pod's tracer, or private to one tracer where bpffs cannot be used.
//!
//! Node layout, under the pin directory (`/sys/fs/bpf/copilot` by default):
//!
//! ```text
//! <dir>/<object hash>/            one set per build of the eBPF object
//!     PODS GATE TOPS DROPS MAINS CONTAINERS EXITS    maps
//!     link_exec link_exit[_gd] link_oom           attached raw tracepoints
//!     pod_<cgroup id>/            one per registered pod, flock'ed by its owner
//! <dir>/<object hash>_staging/    built here, renamed into place when whole
//! ```
//!
//! Everything that creates or changes the node set (the first load, a pod's
//! registration, the collection of dead pods) holds an `flock` on `<dir>`, so
//! dozens of sidecars starting at once neither load twice nor race on the
//! gate (`GATE`, written whole). bpffs refuses names with a dot, hence `_staging`.

use std::{
    collections::HashSet,
    fs::File,
    hash::Hasher as _,
    io,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, HashOfMaps, Map, MapData, PerCpuHashMap, PerCpuValues, RingBuf},
    programs::{RawTracePoint, links::FdLink},
};
use copilot_common::{
    config::{CONFIG_GLOBAL, Config},
    event::{
        CONTAINERS_MAP, DROPS_MAP, EXEC_PROGRAM, EXIT_GROUP_DEAD_PROGRAM, EXIT_PROGRAM, EXITS_MAP,
        ExitRecord, GATE_MAP, GATE_TOPS, LEVELS_UNGATED, MAINS_MAP, MAX_POD_LEVEL, MIN_POD_LEVEL,
        MainRecord, NodeGate, OOM_PROGRAM, PODS_MAP, TOP_KUBELET, TOP_PODS, TOPS_MAP,
    },
};
use rustix::fs::{FlockOperation, flock};

use super::{Error, KernelPaths, OBJECT};

/// `BPF_FS_MAGIC` in `include/uapi/linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// `BPF_NOEXIST` in `include/uapi/linux/bpf.h`: insert only if the key is new.
const BPF_NOEXIST: u64 = 1;

const LINK_EXEC: &str = "link_exec";
const LINK_EXIT: &str = "link_exit";
const LINK_EXIT_GD: &str = "link_exit_gd";
const LINK_OOM: &str = "link_oom";

/// The maps every tracer uses, however the programs were loaded.
pub(super) struct Maps {
    pub pods: HashOfMaps<MapData, u64, RingBuf<MapData>>,
    pub gate: Array<MapData, NodeGate>,
    pub drops: PerCpuHashMap<MapData, u64, u64>,
    pub mains: HashMap<MapData, u32, u64>,
    pub containers: HashMap<MapData, u64, MainRecord>,
    pub exits: HashMap<MapData, u64, ExitRecord>,
    pub tops: HashMap<MapData, u64, u8>,
}

/// A program set this tracer can register its pod in.
pub(super) struct ProgramSet {
    pub maps: Maps,
    pub paths: KernelPaths,
    pub kind: SetKind,
}

pub(super) enum SetKind {
    /// Loaded for this tracer alone; the programs attach in [`ProgramSet::attach_private`].
    Private(Box<Ebpf>),
    /// The node's pinned set, already attached.
    Node(NodeDir),
}

/// The pinned set's directories.
pub(super) struct NodeDir {
    /// `<dir>`: the lock.
    pub base: PathBuf,
    /// `<dir>/<object hash>`.
    pub set: PathBuf,
}

/// An exclusive `flock` on a directory, released on drop.
pub(super) struct DirLock(#[expect(dead_code, reason = "held for its flock")] File);

impl DirLock {
    pub fn wait(dir: &Path) -> Result<Self, Error> {
        let f = File::open(dir).map_err(|e| pin_err(dir, "open", e))?;
        flock(f.as_fd(), FlockOperation::LockExclusive)
            .map_err(|e| pin_err(dir, "flock", e.into()))?;
        Ok(Self(f))
    }

    /// The lock if nobody holds it.
    pub fn try_take(dir: &Path) -> Result<Option<Self>, Error> {
        let f = File::open(dir).map_err(|e| pin_err(dir, "open", e))?;
        match flock(f.as_fd(), FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(Self(f))),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(pin_err(dir, "flock", e.into())),
        }
    }
}

pub(super) fn pin_err(path: &Path, action: &'static str, source: io::Error) -> Error {
    Error::Pin {
        path: path.to_owned(),
        action,
        source,
    }
}

fn aya_err(
    path: &Path,
    action: &'static str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::Pinned {
        path: path.to_owned(),
        action,
        source: Box::new(source),
    }
}

/// The name of this build's node set: a hash of the eBPF object, so two builds
/// of copilot on one node each get the programs they were built with.
pub(super) fn object_hash() -> String {
    let mut h = fnv::FnvHasher::default();
    h.write(OBJECT);
    format!("{:016x}", h.finish())
}

/// Loads the object with `config` and loads (not attaches) the programs the
/// running kernel gets.
pub(super) fn load(config: &Config, paths: KernelPaths) -> Result<Ebpf, Error> {
    let mut ebpf = EbpfLoader::new()
        .override_global(CONFIG_GLOBAL, config, true)
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
    Ok(ebpf)
}

/// The programs the running kernel gets, with the tracepoint each attaches to
/// and the name of its pinned link.
fn programs(
    paths: KernelPaths,
) -> impl Iterator<Item = (&'static str, (&'static str, &'static str))> {
    let exit = if paths.group_dead_field {
        (EXIT_GROUP_DEAD_PROGRAM, LINK_EXIT_GD)
    } else {
        (EXIT_PROGRAM, LINK_EXIT)
    };
    [
        (EXEC_PROGRAM, ("sched_process_exec", LINK_EXEC)),
        (exit.0, ("sched_process_exit", exit.1)),
    ]
    .into_iter()
    .chain(
        paths
            .oom_tracepoint
            .then_some((OOM_PROGRAM, ("mark_victim", LINK_OOM))),
    )
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

fn typed<T: TryFrom<Map, Error = aya::maps::MapError>>(
    map: Map,
    name: &'static str,
) -> Result<T, Error> {
    T::try_from(map).map_err(|source| Error::Map { name, source })
}

/// Every map of the object, by name: what a node set pins.
const MAP_NAMES: [&str; 7] = [
    PODS_MAP,
    GATE_MAP,
    DROPS_MAP,
    MAINS_MAP,
    CONTAINERS_MAP,
    EXITS_MAP,
    TOPS_MAP,
];

impl Maps {
    /// Builds the typed maps from `get`, which yields each map by name.
    fn from_source(mut get: impl FnMut(&'static str) -> Result<Map, Error>) -> Result<Self, Error> {
        Ok(Self {
            pods: typed(get(PODS_MAP)?, PODS_MAP)?,
            gate: typed(get(GATE_MAP)?, GATE_MAP)?,
            drops: typed(get(DROPS_MAP)?, DROPS_MAP)?,
            mains: typed(get(MAINS_MAP)?, MAINS_MAP)?,
            containers: typed(get(CONTAINERS_MAP)?, CONTAINERS_MAP)?,
            exits: typed(get(EXITS_MAP)?, EXITS_MAP)?,
            tops: typed(get(TOPS_MAP)?, TOPS_MAP)?,
        })
    }

    /// Takes the maps out of a freshly loaded object.
    fn take(ebpf: &mut Ebpf) -> Result<Self, Error> {
        Self::from_source(|name| ebpf.take_map(name).ok_or(Error::NoMap { name }))
    }

    /// Opens the maps of a pinned set.
    fn open(set: &Path) -> Result<Self, Error> {
        Self::from_source(|name| {
            let path = set.join(name);
            let data = MapData::from_pin(&path).map_err(|e| aya_err(&path, "open", e))?;
            Map::from_map_data(data).map_err(|source| Error::Map { name, source })
        })
    }

    /// Adds the kubelet's top cgroups (`kubepods*` right under the root of the
    /// cgroup v2 `mount`) to `TOPS`, so the programs keep the node-wide record
    /// of their containers, and drops the tops that are gone; idempotent.
    /// Callers hold the node lock (the gate is rewritten). A mount that is not
    /// the hierarchy's root (a cgroup namespace's view) shows none of them.
    pub fn add_kubelet_tops(&mut self, mount: &Path, root_level: u32) -> Result<(), Error> {
        use std::os::unix::fs::MetadataExt as _;
        if root_level != 0 {
            return Ok(());
        }
        let Ok(entries) = std::fs::read_dir(mount) else {
            return Ok(());
        };
        let mut tops = HashSet::new();
        let mut kubelet = Vec::new();
        for e in entries.filter_map(Result::ok) {
            let Some(meta) = e.metadata().ok().filter(|m| m.is_dir()) else {
                continue;
            };
            tops.insert(meta.ino());
            if e.file_name().to_string_lossy().starts_with("kubepods") {
                kubelet.push(meta.ino());
            }
        }
        // Tops that are gone (a kubelet restarted with another driver, test
        // fixtures that remove theirs): cgroup ids are not reused within a boot.
        let gone: Vec<u64> = self
            .tops
            .keys()
            .filter_map(Result::ok)
            .filter(|id| !tops.contains(id))
            .collect();
        for id in gone {
            let _ = self.tops.remove(&id);
        }
        for id in kubelet {
            self.tops
                .insert(id, TOP_KUBELET, 0)
                .map_err(|source| Error::Map {
                    name: TOPS_MAP,
                    source,
                })?;
        }
        self.sync_gate(|_| {})
    }

    /// Opens the gate for a pod under top cgroup `top`: adds it to `TOPS` unless
    /// it is there (a kubelet's top already is), or, when the top is unknown,
    /// turns the gate off (callers hold the node lock, as for [`Self::add_level`]).
    pub fn add_pod_top(&mut self, top: Option<u64>) -> Result<(), Error> {
        let Some(id) = top else {
            return self.sync_gate(|g| g.levels |= LEVELS_UNGATED);
        };
        match self.tops.insert(id, TOP_PODS, BPF_NOEXIST) {
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
            r => r.map_err(|source| Error::Map {
                name: TOPS_MAP,
                source,
            })?,
        }
        self.sync_gate(|_| {})
    }

    /// Sets bit `level` of the gate's levels (callers hold the node lock).
    pub fn add_level(&mut self, level: u32) -> Result<(), Error> {
        if !(MIN_POD_LEVEL..=MAX_POD_LEVEL).contains(&level) {
            return Err(Error::PodLevel { level });
        }
        self.sync_gate(|g| g.levels |= 1 << level)
    }

    /// Rewrites the gate from `TOPS`, after `change`, if that changes it
    /// (callers hold the node lock). See [`NodeGate`] for what a reader that
    /// sees the write half done may rely on.
    fn sync_gate(&mut self, change: impl FnOnce(&mut NodeGate)) -> Result<(), Error> {
        let old = self.gate.get(&0, 0).map_err(|source| Error::Map {
            name: GATE_MAP,
            source,
        })?;
        let tops: Vec<(u64, u8)> = self.tops.iter().filter_map(Result::ok).collect();
        let mut new = fill_gate(old, &tops);
        change(&mut new);
        if new != old {
            self.gate.set(0, new, 0).map_err(|source| Error::Map {
                name: GATE_MAP,
                source,
            })?;
        }
        Ok(())
    }

    pub fn levels(&self) -> u32 {
        self.gate.get(&0, 0).map_or(0, |g| g.levels)
    }

    /// Adds `ring` as pod `id`'s ring buffer, with a zeroed lost-event counter.
    pub fn register(&mut self, id: u64, ring: &RingBuf<MapData>) -> Result<(), Error> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| Error::Cpus(e))?;
        let zero = PerCpuValues::try_from(vec![0u64; cpus]).map_err(Error::Cpus)?;
        self.drops
            .insert(id, zero, 0)
            .map_err(|source| Error::Map {
                name: DROPS_MAP,
                source,
            })?;
        self.pods.insert(id, ring, 0).map_err(|source| Error::Map {
            name: PODS_MAP,
            source,
        })
    }

    /// Removes pod `id` (its ring and counter); a missing entry is not an error.
    pub fn unregister(&mut self, id: u64) {
        let _ = self.pods.remove(&id);
        let _ = self.drops.remove(&id);
    }
}

impl ProgramSet {
    /// Loads a set for this tracer alone.
    pub fn private(config: &Config, paths: KernelPaths) -> Result<Self, Error> {
        let mut ebpf = load(config, paths)?;
        let maps = Maps::take(&mut ebpf)?;
        Ok(Self {
            maps,
            paths,
            kind: SetKind::Private(Box::new(ebpf)),
        })
    }

    /// Attaches a private set's programs.
    pub fn attach_private(&mut self) -> Result<(), Error> {
        let SetKind::Private(ebpf) = &mut self.kind else {
            return Ok(());
        };
        for (name, (tracepoint, _)) in programs(self.paths) {
            program(ebpf, name)?
                .attach(tracepoint)
                .map_err(|source| Error::Program {
                    name,
                    action: "attach",
                    source,
                })?;
        }
        Ok(())
    }

    /// Opens the node's pinned set under `base`, or loads, attaches and pins it
    /// when this is the first copilot of this build on the node. `resolve` gives
    /// the programs' configuration (it reads the kernel's BTF: only the first
    /// copilot pays for it). The caller holds the lock on `base`.
    pub fn node(
        base: &Path,
        resolve: impl FnOnce() -> Result<(Config, KernelPaths), Error>,
    ) -> Result<Self, Error> {
        let set = base.join(object_hash());
        if !set.is_dir() {
            let (config, paths) = resolve()?;
            create_pinned(&set, &config, paths)?;
            tracing::info!(dir = %set.display(), "loaded and pinned the node's eBPF programs");
        }
        let maps = Maps::open(&set)?;
        let paths = KernelPaths {
            group_dead_field: set.join(LINK_EXIT_GD).exists(),
            oom_tracepoint: set.join(LINK_OOM).exists(),
        };
        Ok(Self {
            maps,
            paths,
            kind: SetKind::Node(NodeDir {
                base: base.to_owned(),
                set,
            }),
        })
    }
}

/// Whether `dir` is on a bpffs.
pub(super) fn is_bpffs(dir: &Path) -> bool {
    rustix::fs::statfs(dir).is_ok_and(|s| s.f_type == BPF_FS_MAGIC)
}

/// Loads, attaches and pins a set at `set`, built in a staging directory and
/// renamed into place, so a crash leaves no half-made set behind.
fn create_pinned(set: &Path, config: &Config, paths: KernelPaths) -> Result<(), Error> {
    let mut staging = set.as_os_str().to_owned();
    staging.push("_staging");
    let staging = PathBuf::from(staging);
    if staging.exists() {
        // A crashed loader's leftovers (we hold the lock): unpinning frees them.
        std::fs::remove_dir_all(&staging).map_err(|e| pin_err(&staging, "remove", e))?;
    }
    std::fs::create_dir(&staging).map_err(|e| pin_err(&staging, "create", e))?;
    let mut ebpf = load(config, paths)?;
    for name in MAP_NAMES {
        let path = staging.join(name);
        ebpf.map(name)
            .ok_or(Error::NoMap { name })?
            .pin(&path)
            .map_err(|e| aya_err(&path, "pin", e))?;
    }
    for (name, (tracepoint, link_name)) in programs(paths) {
        let prog = program(&mut ebpf, name)?;
        let attach = |source| Error::Program {
            name,
            action: "attach",
            source,
        };
        let id = prog.attach(tracepoint).map_err(attach)?;
        let link = prog.take_link(id).map_err(attach)?;
        let path = staging.join(link_name);
        let link = FdLink::from(link);
        link.pin(&path).map_err(|e| aya_err(&path, "pin", e))?;
    }
    std::fs::rename(&staging, set).map_err(|e| pin_err(set, "rename", e))
}

/// The registration directory of pod `id` in `set`.
pub(super) fn pod_dir(set: &Path, id: u64) -> PathBuf {
    set.join(format!("pod_{id}"))
}

/// Pod ids registered in `set` whose owner is gone (its lock is free), with the
/// lock taken; `None` ids are skipped.
pub(super) fn orphans(set: &Path) -> Vec<(u64, DirLock)> {
    let Ok(entries) = std::fs::read_dir(set) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let id = e.file_name().to_str()?.strip_prefix("pod_")?.parse().ok()?;
            let lock = DirLock::try_take(&e.path()).ok()??;
            Some((id, lock))
        })
        .collect()
}

/// `old` with its slots matched to `tops` (id, kind): a slot whose top is gone is
/// emptied, a new top takes an empty slot, and the rest stay where they are (a
/// reader must never see a live top move). Tops that find no slot set `spilled`,
/// for good.
fn fill_gate(old: NodeGate, tops: &[(u64, u8)]) -> NodeGate {
    let mut gate = old;
    for slot in 0..GATE_TOPS {
        if gate.tops[slot] != 0 && !tops.iter().any(|&(id, _)| id == gate.tops[slot]) {
            gate.tops[slot] = 0;
            gate.kinds[slot] = 0;
        }
    }
    let mut spilled = false;
    for &(id, kind) in tops {
        if let Some(slot) = gate.tops.iter().position(|&t| t == id) {
            gate.kinds[slot] = kind;
        } else if let Some(slot) = gate.tops.iter().position(|&t| t == 0) {
            gate.tops[slot] = id;
            gate.kinds[slot] = kind;
        } else {
            spilled = true;
        }
    }
    // Never cleared: a reader that saw it cleared before the slot it made room
    // for was written would miss that top.
    gate.spilled |= u32::from(spilled);
    gate
}

/// Ids of the cgroups at the levels set in `levels`, below a cgroup v2 mount
/// whose root is level `root_level`; `None` when the tree cannot be read whole.
pub(super) fn cgroup_ids(mount: &Path, root_level: u32, levels: u32) -> Option<HashSet<u64>> {
    use std::os::unix::fs::MetadataExt as _;
    if root_level != 0 {
        // A cgroup namespace's view: pods outside it are invisible, not gone.
        return None;
    }
    let max = (1..=MAX_POD_LEVEL).rev().find(|l| levels & (1 << l) != 0)?;
    let mut ids = HashSet::new();
    let mut frontier = vec![mount.to_owned()];
    for level in 1..=max {
        let mut next = Vec::new();
        for dir in &frontier {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                // Removed while we walk (a pod torn down): nothing below it is alive.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => return None,
            };
            for e in entries.filter_map(Result::ok) {
                let Ok(meta) = e.metadata() else { continue };
                if meta.is_dir() {
                    if levels & (1 << level) != 0 {
                        ids.insert(meta.ino());
                    }
                    next.push(e.path());
                }
            }
        }
        frontier = next;
    }
    Some(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(tops: [(u64, u8); GATE_TOPS]) -> NodeGate {
        let mut g = NodeGate::default();
        for (slot, (id, kind)) in tops.into_iter().enumerate() {
            g.tops[slot] = id;
            g.kinds[slot] = kind;
        }
        g
    }

    #[test]
    fn a_new_top_takes_the_first_empty_slot_and_live_ones_stay_put() {
        let old = gate([
            (7, TOP_KUBELET),
            (0, 0),
            (9, TOP_PODS),
            (0, 0),
            (0, 0),
            (0, 0),
        ]);
        let new = fill_gate(old, &[(9, TOP_PODS), (11, TOP_PODS), (7, TOP_KUBELET)]);
        assert_eq!(new.tops, [7, 11, 9, 0, 0, 0]);
        assert_eq!(new.kinds[..3], [TOP_KUBELET, TOP_PODS, TOP_PODS]);
        assert_eq!(new.spilled, 0);
    }

    #[test]
    fn a_gone_top_frees_its_slot_without_moving_the_others() {
        let old = gate([
            (7, TOP_KUBELET),
            (8, TOP_PODS),
            (9, TOP_PODS),
            (0, 0),
            (0, 0),
            (0, 0),
        ]);
        let new = fill_gate(old, &[(7, TOP_KUBELET), (9, TOP_PODS)]);
        assert_eq!(new.tops, [7, 0, 9, 0, 0, 0]);
        assert_eq!(new.kinds[1], 0);
    }

    #[test]
    fn tops_past_the_slots_spill_for_good_and_levels_are_kept() {
        let mut old = NodeGate {
            levels: 1 << 3,
            ..NodeGate::default()
        };
        old.tops = [1, 2, 3, 4, 5, 6];
        old.kinds = [TOP_PODS; 8];
        let all: Vec<(u64, u8)> = (1..=7).map(|id| (id, TOP_PODS)).collect();
        let spilled = fill_gate(old, &all);
        assert_eq!(spilled.spilled, 1);
        assert_eq!(spilled.levels, 1 << 3);
        // Room again: the flag stays, since a reader may still rely on it.
        let fewer = fill_gate(spilled, &all[..3]);
        assert_eq!(fewer.tops, [1, 2, 3, 0, 0, 0]);
        assert_eq!(fewer.spilled, 1);
    }
}
