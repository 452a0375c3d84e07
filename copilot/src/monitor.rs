//! Watching one pod without polling: attach the eBPF programs, take one
//! snapshot of what already runs, then turn kernel events and cgroup
//! notifications into [`lifecycle`](crate::lifecycle) changes.
//!
//! Order matters and is: load → watch the pod directory → note the containers
//! that already run (so the kernel does not take a later exec in them for their
//! first) → attach → snapshot → replay the events queued since attach. Facts seen
//! twice (snapshot and event) are reported once; an exit that happened before
//! attach is seen as an emptied cgroup, at once.

use std::collections::HashMap;

use crate::{
    cgroup::{self, Cgroup, Hierarchy, WatchEvent, container_id},
    lifecycle::{Change, Exit, Pod, Seen, Source, State},
    tracer::{self, EventDetail, KernelPaths, ProcessEvent, Tracer},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cgroup(#[from] cgroup::Error),
    #[error(transparent)]
    Tracer(#[from] tracer::Error),
    #[error("loading copilot's eBPF programs for pod cgroup {}", path.display())]
    Load {
        path: std::path::PathBuf,
        #[source]
        source: Box<tracer::Error>,
    },
}

/// Something to report.
#[derive(Debug, Clone)]
pub enum Output {
    /// A process exec'd or exited in the pod.
    Process {
        event: ProcessEvent,
        container: Option<String>,
        main: bool,
        oom_killed: bool,
    },
    /// A container changed state.
    Change {
        change: Change,
        name: String,
        container: Option<String>,
    },
    /// Events were lost (ring buffer full) since the last report; state was re-read.
    Lost { count: u64 },
}

/// How to load the programs, where the defaults do not fit.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Ring buffer size in bytes (default `DEFAULT_RING_BYTES`).
    pub ring_bytes: Option<u32>,
    /// See [`tracer::Options::without_oom_tracepoint`].
    pub without_oom_tracepoint: bool,
    /// See [`tracer::Options::node_dir`].
    pub node_dir: Option<std::path::PathBuf>,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            ring_bytes: None,
            without_oom_tracepoint: false,
            node_dir: Some(tracer::DEFAULT_NODE_DIR.into()),
        }
    }
}

pub struct Monitor {
    hierarchy: Hierarchy,
    pod_cgroup: Cgroup,
    tracer: Tracer,
    watch: cgroup::Watch,
    pod: Pod,
    /// OOM-kill counters per container when first seen (fallback attribution).
    oom_base: HashMap<u64, u64>,
    lost: u64,
    batch: Vec<ProcessEvent>,
}

impl Monitor {
    /// Loads, attaches and snapshots; returns the monitor and what the snapshot
    /// (and the events queued meanwhile) showed. When this returns, nothing
    /// that happens in the pod can be missed.
    pub fn start(
        hierarchy: Hierarchy,
        pod_cgroup: Cgroup,
        tuning: &Tuning,
    ) -> Result<(Self, Vec<Output>), Error> {
        let mut opts = tracer::Options::for_pod(&hierarchy, &pod_cgroup);
        if let Some(b) = tuning.ring_bytes {
            opts.ring_bytes = b;
        }
        opts.without_oom_tracepoint = tuning.without_oom_tracepoint;
        opts.node_dir.clone_from(&tuning.node_dir);
        let mut tracer = Tracer::load(&opts).map_err(|source| Error::Load {
            path: pod_cgroup.path.clone(),
            source: Box::new(source),
        })?;
        match tracer.set_use() {
            tracer::SetUse::Node { dir } => {
                tracing::debug!(dir = %dir.display(), "using the node's eBPF program set");
            }
            tracer::SetUse::Private { reason } => {
                tracing::info!(%reason, "loading eBPF programs of our own, not the node's shared set");
            }
        }
        let watch = cgroup::Watch::new(&pod_cgroup)?;
        let before = snapshot(&pod_cgroup, &tracer)?;
        for (_, cg, seen, _) in &before {
            if let Seen::Running { pid } | Seen::Waiting { pid } = seen {
                tracer.know_container(cg.id, *pid)?;
                tracer.watch_exit(*pid, cg.id)?;
            }
        }
        tracer.attach()?;
        let after = snapshot(&pod_cgroup, &tracer)?;

        let mut m = Self {
            hierarchy,
            pod_cgroup,
            tracer,
            watch,
            pod: Pod::default(),
            oom_base: HashMap::new(),
            lost: 0,
            batch: Vec::new(),
        };
        let mut out = Vec::new();
        for (name, cg, seen, comm) in &before {
            m.note_container(cg);
            let changes = m.pod.snapshot(cg.id, name, *seen);
            if let Some(comm) = comm {
                m.pod.set_comm(cg.id, comm);
            }
            m.push_changes(changes, &mut out);
        }
        m.tracer.drain(&mut m.batch);
        m.apply_batch(&mut out);
        for (name, cg, seen, comm) in &after {
            m.note_container(cg);
            if let Some(comm) = comm {
                m.pod.set_comm(cg.id, comm);
            }
            // A container first seen now may have started after attach: its exec
            // is in the batch above and already applied.
            let changes = m.pod.snapshot(cg.id, name, *seen);
            m.push_changes(changes, &mut out);
        }
        for (_, cg, seen, _) in &after {
            m.watch.add_events(cg.id, &cg.path)?;
            // A container that started between the two snapshots: ask the kernel
            // to wake us on its exit too.
            if let Seen::Running { pid } | Seen::Waiting { pid } = seen {
                m.tracer.know_container(cg.id, *pid)?;
                m.tracer.watch_exit(*pid, cg.id)?;
            }
        }
        // An exit queued before the registrations above did not wake anyone.
        m.tracer.drain(&mut m.batch);
        m.apply_batch(&mut out);
        // A container whose cgroup emptied between the snapshot and the watch.
        for (_, cg, ..) in &after {
            // `ever_ran` first: read after `populated 0`, it could already count
            // the first process of a container that is just starting.
            let ran = cg.ever_ran().unwrap_or(true);
            if !cg.populated().unwrap_or(false)
                && let Some(c) = m.pod.emptied(cg.id, ran)
            {
                m.push_changes(vec![c], &mut out);
            }
        }
        Ok((m, out))
    }

    pub fn pod(&self) -> &Pod {
        &self.pod
    }

    pub fn pod_cgroup(&self) -> &Cgroup {
        &self.pod_cgroup
    }

    pub fn kernel_paths(&self) -> KernelPaths {
        self.tracer.kernel_paths()
    }

    pub fn set_use(&self) -> &tracer::SetUse {
        self.tracer.set_use()
    }

    /// Waits for the next kernel or cgroup notification and returns what it means.
    pub async fn next(&mut self) -> Result<Vec<Output>, Error> {
        let mut out = Vec::new();
        tokio::select! {
            r = self.tracer.next_batch(&mut self.batch) => {
                r?;
                self.apply_batch(&mut out);
            }
            r = self.watch.next() => {
                let changes = r?;
                // The kernel event of an exit precedes the cgroup emptying: read
                // it first so the exit carries its status.
                self.tracer.drain(&mut self.batch);
                self.apply_batch(&mut out);
                for change in changes {
                    self.apply_watch(change, &mut out)?;
                }
            }
        }
        self.check_lost(&mut out)?;
        Ok(out)
    }

    fn apply_batch(&mut self, out: &mut Vec<Output>) {
        let batch = std::mem::take(&mut self.batch);
        for ev in batch {
            let cg = ev.container_cgroup_id;
            if cg != 0 && self.pod.container(cg).is_none() {
                self.discover(cg, out);
            }
            let change = self.pod.event(&ev);
            let main = self.pod.is_main(cg, ev.tgid);
            if let EventDetail::OomVictim = ev.detail {
                // Not a process line of its own; it shows as `oom_killed` on the exit.
            } else {
                let container = self.container_id(cg);
                let oom_killed =
                    matches!(ev.detail, EventDetail::Exit { .. }) && self.pod.oom_victim(ev.tgid);
                out.push(Output::Process {
                    event: ev,
                    container,
                    main,
                    oom_killed,
                });
            }
            if let Some(c) = change {
                self.push_changes(vec![c], out);
            }
        }
    }

    fn apply_watch(&mut self, ev: WatchEvent, out: &mut Vec<Output>) -> Result<(), Error> {
        match ev {
            WatchEvent::ChildCreated(name) => {
                let Ok(cg) = self.pod_cgroup.child(&name) else {
                    return Ok(());
                };
                self.note_container(&cg);
                self.watch.add_events(cg.id, &cg.path)?;
                let changes = self
                    .pod
                    .add(cg.id, &name, Source::Cgroup)
                    .into_iter()
                    .collect();
                self.push_changes(changes, out);
                // It may have run and emptied before the watch was in place.
                let ran = cg.ever_ran().unwrap_or(false);
                if !cg.populated().unwrap_or(true) {
                    let changes = self.pod.emptied(cg.id, ran).into_iter().collect();
                    self.push_changes(changes, out);
                }
            }
            WatchEvent::ChildRemoved(name) => {
                let id = self
                    .pod
                    .containers()
                    .find(|c| c.name == name)
                    .map(|c| c.cgroup_id);
                if let Some(id) = id {
                    let changes = self.pod.emptied(id, true).into_iter().collect();
                    self.push_changes(changes, out);
                }
            }
            WatchEvent::EventsChanged(id) => {
                let Some(c) = self.pod.container(id) else {
                    return Ok(());
                };
                let Ok(cg) = self.pod_cgroup.child(&c.name) else {
                    let changes = self.pod.emptied(id, true).into_iter().collect();
                    self.push_changes(changes, out);
                    return Ok(());
                };
                let ran = cg.ever_ran().unwrap_or(true);
                if !cg.populated().unwrap_or(true) {
                    let changes = self.pod.emptied(id, ran).into_iter().collect();
                    self.push_changes(changes, out);
                }
            }
        }
        Ok(())
    }

    /// After lost events, re-read the pod's cgroups once: what the lost events
    /// would have said about starts and exits, the cgroups still say.
    fn check_lost(&mut self, out: &mut Vec<Output>) -> Result<(), Error> {
        let lost = self.tracer.lost()?;
        if lost <= self.lost {
            return Ok(());
        }
        out.push(Output::Lost {
            count: lost - self.lost,
        });
        self.lost = lost;
        tracing::warn!(lost, "ring buffer overflowed; re-reading the pod's cgroups");
        for (name, cg, seen, _) in snapshot(&self.pod_cgroup, &self.tracer)? {
            self.note_container(&cg);
            let changes = self.pod.snapshot(cg.id, &name, seen);
            self.push_changes(changes, out);
        }
        Ok(())
    }

    /// An event names a container cgroup we have not listed yet.
    fn discover(&mut self, id: u64, out: &mut Vec<Output>) {
        let Ok(children) = self.pod_cgroup.children() else {
            return;
        };
        for (name, child_id) in children {
            if child_id == id {
                if let Ok(cg) = self.pod_cgroup.child(&name) {
                    self.note_container(&cg);
                    let _ = self.watch.add_events(cg.id, &cg.path);
                }
                let changes = self
                    .pod
                    .add(id, &name, Source::Cgroup)
                    .into_iter()
                    .collect();
                self.push_changes(changes, out);
            }
        }
    }

    /// An exit learned from a cgroup (emptied, or re-read after lost events) has
    /// no status: the kernel's record of the main process's exit has it.
    fn fill_recorded(&mut self, cgroup_id: u64, exit: &mut Exit) {
        if exit.status.is_some() {
            return;
        }
        let Some(r) = self.tracer.recorded_exit(cgroup_id) else {
            return;
        };
        let recorded = Exit {
            pid: Some(r.tgid),
            status: Some(r.status),
            oom_killed: r.status.signal() == Some(9) && self.pod.oom_victim(r.tgid),
            time_ns: Some(r.time_ns),
        };
        if self.pod.fill_status(cgroup_id, &recorded) {
            tracing::debug!(cgroup_id, status = %r.status, "exit status from the kernel's record");
            *exit = recorded;
        }
    }

    fn note_container(&mut self, cg: &Cgroup) {
        if !self.oom_base.contains_key(&cg.id) {
            let n = cg.oom_kills(&self.hierarchy).unwrap_or(0);
            self.oom_base.insert(cg.id, n);
        }
    }

    fn container_id(&self, cg: u64) -> Option<String> {
        let c = self.pod.container(cg)?;
        Some(container_id::parse(&c.name).unwrap_or_else(|| c.name.clone()))
    }

    fn push_changes(&mut self, changes: Vec<Change>, out: &mut Vec<Output>) {
        for mut change in changes {
            if let State::Exited(exit) = &mut change.state {
                self.fill_recorded(change.cgroup_id, exit);
            }
            // No `mark_victim` event named it: ask the memory controller.
            if let State::Exited(exit) = &mut change.state
                && !exit.oom_killed
                && exit.status.is_none_or(|s| s.signal() == Some(9))
                && let Some(c) = self.pod.container(change.cgroup_id)
            {
                let base = self.oom_base.get(&change.cgroup_id).copied().unwrap_or(0);
                let now = self
                    .pod_cgroup
                    .child(&c.name)
                    .ok()
                    .and_then(|cg| cg.oom_kills(&self.hierarchy))
                    .unwrap_or(0);
                if now > base && self.pod.mark_oom(change.cgroup_id) {
                    exit.oom_killed = true;
                }
            }
            let name = self
                .pod
                .container(change.cgroup_id)
                .map(|c| c.name.clone())
                .unwrap_or_default();
            let container = self.container_id(change.cgroup_id);
            out.push(Output::Change {
                change,
                name,
                container,
            });
        }
    }
}

/// Every child cgroup of the pod with what it holds now.
/// A child cgroup of the pod: its name, the cgroup, what it holds, its root's comm.
type Snapshot = Vec<(String, Cgroup, Seen, Option<String>)>;

fn snapshot(pod: &Cgroup, tracer: &Tracer) -> Result<Snapshot, Error> {
    let host_procfs = host_procfs();
    let mut out = Vec::new();
    for (name, _) in pod.children()? {
        if matches!(
            container_id::classify(&name),
            container_id::CgroupKind::Conmon
        ) {
            continue;
        }
        let Ok(cg) = pod.child(&name) else { continue };
        let (seen, comm) = match seen(&cg, host_procfs)? {
            // No view of its processes (no hostPID): the kernel's record of the
            // container's first exec names its main process.
            (Seen::Hidden, _) => match tracer.recorded_main(cg.id) {
                Some(m) => (Seen::Running { pid: m.tgid }, Some(m.comm)),
                None => (Seen::Hidden, None),
            },
            other => other,
        };
        out.push((name, cg, seen, comm));
    }
    Ok(out)
}

/// What a container cgroup holds: its root process (the one whose parent is
/// outside the container, earliest started), or whether it ever ran.
///
/// runc's own processes are not the container's: `runc init` (re-exec'd from
/// a memfd), `runc:[0:PARENT]` and `runc:[1:CHILD]` come and go while the
/// container is set up; `runc:[2:INIT]` is the one that execs the entrypoint.
fn seen(cg: &Cgroup, host_procfs: bool) -> Result<(Seen, Option<String>), Error> {
    // Before anything else, for the reason given in `Monitor::start`.
    let ran = cg.ever_ran()?;
    // In a PID namespace of our own, the pids we can see (ourselves, pid 1) are not
    // the host pids the kernel events carry: none of them is used.
    let pids = if host_procfs {
        cg.procs_recursive()?
    } else {
        Vec::new()
    };
    let mut best: Option<(u64, u32, String)> = None;
    for &pid in &pids {
        let Ok(stat) = procfs::process::Process::new(pid as i32).and_then(|p| p.stat()) else {
            continue;
        };
        if pids.binary_search(&(stat.ppid as u32)).is_ok() || runc_transient(&stat.comm) {
            continue;
        }
        if best
            .as_ref()
            .is_none_or(|(start, _, _)| stat.starttime < *start)
        {
            best = Some((stat.starttime, pid, stat.comm));
        }
    }
    Ok(match best {
        // runc's init waits as `runc:[2:INIT]` until `runc start` makes it exec.
        Some((_, pid, comm)) if comm == "runc:[2:INIT]" => (Seen::Waiting { pid }, None),
        Some((_, pid, comm)) => (Seen::Running { pid }, Some(comm)),
        // Only runc's set-up processes: the entrypoint is not there yet.
        None if !pids.is_empty() => (Seen::NeverRan, None),
        // `populated 1` but no pid we can see: another PID namespace.
        None if cg.populated()? => (Seen::Hidden, None),
        None if ran => (Seen::Emptied, None),
        None => (Seen::NeverRan, None),
    })
}

/// Whether `/proc` shows the host's PID namespace: kernel threads (pid 2,
/// `kthreadd`) live only there.
fn host_procfs() -> bool {
    std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd")
}

fn runc_transient(comm: &str) -> bool {
    comm == "runc" || comm == "runc:[0:PARENT]" || comm == "runc:[1:CHILD]"
}
