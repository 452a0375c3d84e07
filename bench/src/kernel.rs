//! Figures 4 and 6: what copilot's programs cost every other process on the node,
//! measured with the kernel's own BPF run-time statistics, beside an empty program
//! and a program that only does copilot's pod check, attached in the same window.
use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context as _, bail};
use bench_results::{AttachOrder, Outside, Pods, PodsMeasured, PodsPoint, ProgStats};
use integration_test::{Bpffs, Layout, PodCgroup, cgroup2_mount, join_at_exec, rootfs};

use crate::{
    bpf::{self, Prog, RefProg, Stats},
    tracer::Trace,
};

/// Where outside the pods an exec loop runs.
#[derive(Clone, Copy)]
pub enum Place {
    /// `system.slice/<unit>.service` (level 2), where a node's services run: the
    /// kubelet, the container runtime and its shims, sshd, journald.
    Service,
    /// `user.slice/user-0.slice/<x>.scope` (level 3), a login session: as deep as
    /// a pod's containers, so the gate looks up its top cgroup.
    Session,
}

impl Place {
    fn cgroup(self) -> &'static str {
        match self {
            Self::Service => "system.slice/copilot-bench.service",
            Self::Session => "user.slice/user-0.slice/copilot-bench.scope",
        }
    }
}

/// Runs `spawner N 0` outside every pod: N fork+exec+exit of /bin/true, in `place`
/// (made if missing and left in place: an empty cgroup costs nothing, and a node
/// has its `system.slice` and `user.slice`). Not in the root cgroup: the gate
/// stops a root-cgroup task first of all, so a spawner there would measure less
/// than any real process outside the pods pays.
pub fn spawn_outside(place: Place, n: usize) -> anyhow::Result<f64> {
    let spawner = rootfs().join("bin/spawner");
    let dir = cgroup2_mount().join(place.cgroup());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = Command::new(&spawner);
    cmd.args([&n.to_string(), "0"]);
    join_at_exec(&mut cmd, &dir);
    let t = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("running {}", spawner.display()))?;
    if !status.success() {
        bail!("{} {n} 0 failed: {status}", spawner.display());
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

fn level(pod: &PodCgroup) -> u32 {
    pod.rel().components().skip(1).count() as u32
}

fn sum(progs: &[Prog], role: Option<&str>) -> anyhow::Result<Stats> {
    let mut s = Stats::default();
    for p in progs.iter().filter(|p| role.is_none_or(|r| p.role == r)) {
        s = s.add(p.stats()?);
    }
    Ok(s)
}

fn prog_stats(s: Stats) -> ProgStats {
    ProgStats {
        mean_ns: Some(s.mean_ns()),
        runs: s.run_cnt,
        run_time_ns: s.run_time_ns,
    }
}

/// One window of `execs` outside-the-pod execs: copilot's exec and exit programs and the
/// reference programs (empty, cgroup-id check, the check reading `.rodata`).
struct Pass {
    exec: Stats,
    exit: Stats,
    refs: [Stats; 3],
    rate: f64,
}

/// `refs_first`: attach the reference programs before copilot's. The first program on a
/// tracepoint meets the task's cgroup data cold and the later ones warm, so both orders
/// are measured and summed.
fn pass(copilot: &Path, execs: usize, refs_first: bool) -> anyhow::Result<Pass> {
    let pod = PodCgroup::new(Layout::Cgroupfs);
    let lvl = level(&pod);
    let load_refs = || -> anyhow::Result<_> {
        let empty = RefProg::empty()?;
        let filter = RefProg::cgroup_filter(lvl, pod.id())?;
        let (ro, map) = RefProg::cgroup_filter_rodata(lvl, pod.id())?;
        Ok(([empty, filter, ro], map))
    };
    let early = if refs_first { Some(load_refs()?) } else { None };
    // A node set of its own (`Trace::start`), loaded now: one left pinned by an
    // earlier run would be attached before the references whatever `refs_first` says.
    let trace = Trace::start(copilot, pod.path(), None)?;
    let progs = bpf::programs_of(trace.pid(), trace.set_dir.as_deref())?;
    let (refs, _map) = match early {
        Some(r) => r,
        None => load_refs()?,
    };
    let b_exec = sum(&progs, Some("exec"))?;
    let b_exit = sum(&progs, Some("exit"))?;
    let b_refs: Vec<Stats> = refs.iter().map(|r| r.stats()).collect::<Result<_, _>>()?;
    let rate = spawn_outside(Place::Service, execs)?;
    let exec = sum(&progs, Some("exec"))?.since(b_exec);
    let exit = sum(&progs, Some("exit"))?.since(b_exit);
    let mut d = [Stats::default(); 3];
    for (i, r) in refs.iter().enumerate() {
        d[i] = r.stats()?.since(b_refs[i]);
    }
    if exec.run_cnt < execs as u64 {
        bail!(
            "copilot's exec program ran {} times for {execs} execs: stats missing",
            exec.run_cnt
        );
    }
    trace.stop()?;
    Ok(Pass {
        exec,
        exit,
        refs: d,
        rate,
    })
}

/// Figure 4. Returns the JSON and copilot's mean ns per exec and per exit run.
pub fn outside(copilot: &Path, execs: usize) -> anyhow::Result<(Outside, f64, f64)> {
    let _stats = bpf::enable_stats()?;
    let a = pass(copilot, execs / 2, false)?;
    let b = pass(copilot, execs / 2, true)?;
    let order = |p: &Pass| AttachOrder {
        copilot_mean_ns: Some(p.exec.add(p.exit).mean_ns()),
        ref_cgroup_filter_ns: Some(p.refs[1].mean_ns()),
    };
    let exec = a.exec.add(b.exec);
    let exit = a.exit.add(b.exit);
    let r = |i: usize| prog_stats(a.refs[i].add(b.refs[i]));
    let v = Outside {
        execs,
        execs_per_s: Some((a.rate + b.rate) / 2.0),
        copilot_exec: prog_stats(exec),
        copilot_exit: prog_stats(exit),
        copilot_mean_ns: Some(exec.add(exit).mean_ns()),
        ref_empty: r(0),
        ref_cgroup_filter: r(1),
        ref_cgroup_filter_rodata: r(2),
        copilot_attached_first: order(&a),
        refs_attached_first: order(&b),
    };
    Ok((v, exec.mean_ns(), exit.mean_ns()))
}

/// Figure 6: N pods on the node, each with its own copilot tracer (on an empty pod):
/// the kernel ns added to every exec outside the pods, and the wall-clock rate of a
/// fork+exec loop there, for copilot's node-wide set and for one set per pod (the
/// design before it, forced by a `--bpf-dir` that is not on bpffs); and what each pod
/// costs in memory (its ring buffer in the kernel, the tracer's anonymous RSS).
///
/// Figure 6c is measured first, while the statistics are still off.
pub fn pods(copilot: &Path, counts: &[usize], execs: usize) -> anyhow::Result<Pods> {
    let stats_cost = crate::stats_cost::run(1_000_000, 5)?;
    eprintln!(
        "bench:   the run-time statistics add {:.1} ns a run, and count {:.1} of it",
        stats_cost.stats_ns_per_run.unwrap_or(f64::NAN),
        stats_cost.counted_ns_per_run.unwrap_or(f64::NAN),
    );
    let _stats = bpf::enable_stats()?;
    let bare = spawn_outside(Place::Service, execs)?;
    // A bpffs of its own: the node set is loaded by the first tracer of the curve,
    // never left pinned by an earlier run (which would change the attach order).
    // Its links are unpinned when it is dropped, before the next curve: left
    // attached, its programs would run first and unmeasured in that one.
    let node = {
        let bpffs = Bpffs::new();
        curve(
            copilot,
            counts,
            execs,
            (&bpffs.node_dir(), "node set", true),
            bare,
        )?
    };
    let not_bpffs = tempfile::tempdir().context("a directory that is not on bpffs")?;
    let per_pod = curve(
        copilot,
        counts,
        execs,
        (not_bpffs.path(), "set per pod", false),
        bare,
    )?;
    Ok(Pods {
        execs,
        bare_execs_per_s: Some(bare),
        node_set: node,
        set_per_pod: per_pod,
        stats_cost: Some(stats_cost),
    })
}

/// One tracer per pod, added until each count in `counts` runs, measured at each
/// (and in a login session too when `session`).
fn curve(
    copilot: &Path,
    counts: &[usize],
    execs: usize,
    (bpf_dir, label, session): (&Path, &str, bool),
    bare_rate: f64,
) -> anyhow::Result<Vec<PodsPoint>> {
    let mut tracers: Vec<(PodCgroup, Trace)> = Vec::new();
    // Programs by id: N tracers of the node set share three.
    let mut progs: std::collections::BTreeMap<u32, Prog> = Default::default();
    // The first tracer's programs go on the tracepoints before the empty one, as
    // copilot's are alone on a real node: the first program meets the task's
    // cgroup data cold, and pays for it (figure 4 measures both orders).
    if let Some(why) = start_tracers(copilot, bpf_dir, 1, &mut tracers, &mut progs)? {
        bail!("{label}: {why}");
    }
    // An empty program on the same tracepoints: what any program costs per run at
    // this N (the machine's share of the figure, beside copilot's own work).
    let empty = RefProg::empty()?;
    let mut out = Vec::new();
    for &n in counts {
        let t = Instant::now();
        if let Some(why) = start_tracers(copilot, bpf_dir, n, &mut tracers, &mut progs)? {
            eprintln!("bench:   {why}");
            out.push(PodsPoint::Failed {
                pods: n,
                started: tracers.len(),
                error: why,
            });
            break;
        }
        let started_s = t.elapsed().as_secs_f64();
        // The machine around the programs moves (another VM's load, a build): each
        // count is measured in ROUNDS windows, and the median is the figure.
        let mut windows = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            windows.push(window(&progs, &empty, execs, session)?);
        }
        let median = |key: fn(&Window) -> f64| {
            let mut v: Vec<f64> = windows.iter().map(key).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let added = median(|w| w.added_ns);
        let empty_ns = median(|w| w.empty_ns);
        let above_empty = median(|w| w.added_ns - 2.0 * w.empty_ns);
        let rate = median(|w| w.rate);
        let session_added = session.then(|| median(|w| w.session_added_ns.unwrap_or(0.0)));
        let rounds: Vec<f64> = windows.iter().map(|w| w.added_ns).collect();
        let node_execs: u64 = windows.iter().map(|w| w.node_execs).sum();
        let program_runs: u64 = windows.iter().map(|w| w.runs).sum();
        let ids: Vec<u32> = progs.keys().copied().collect();
        let (ring_kib, anon_kib) = pod_memory(&tracers);
        eprintln!(
            "bench:   {n} pods ({label}): {added:.0} ns per exec ({above_empty:.0} above two empty-program runs of {empty_ns:.0}; in a login session {}), {:.2}× fork+exec time, {:.0} KiB per pod",
            session_added.map_or("-".into(), |v| format!("{v:.0}")),
            bare_rate / rate,
            ring_kib + anon_kib
        );
        out.push(PodsPoint::Measured(PodsMeasured {
            pods: n,
            programs: ids.len(),
            node_execs,
            added_ns_per_exec: Some(added),
            added_ns_per_exec_rounds: rounds.into_iter().map(Some).collect(),
            empty_prog_ns_per_run: Some(empty_ns),
            above_empty_ns_per_exec: Some(above_empty),
            session_added_ns_per_exec: session_added,
            program_runs,
            execs_per_s: Some(rate),
            fork_exec_slowdown: Some(bare_rate / rate),
            start_all_s: Some(started_s),
            ring_kib_mean: Some(ring_kib),
            tracer_anon_kib_mean: Some(anon_kib),
            per_pod_kib: Some(ring_kib + anon_kib),
        }));
    }
    for (_, trace) in tracers {
        trace.stop()?;
    }
    Ok(out)
}

/// Windows of `execs` outside-the-pods execs measured at each pod count.
const ROUNDS: usize = 3;

/// One window: kernel ns the programs added per exec on the node, the exec rate
/// outside the pods, and how many execs and program runs the window saw.
struct Window {
    added_ns: f64,
    /// The same, for as many execs in a login session (node set only).
    session_added_ns: Option<f64>,
    /// The empty reference program's mean ns per run.
    empty_ns: f64,
    rate: f64,
    node_execs: u64,
    runs: u64,
}

fn window(
    progs: &std::collections::BTreeMap<u32, Prog>,
    empty: &RefProg,
    execs: usize,
    session: bool,
) -> anyhow::Result<Window> {
    let exec_id = *progs
        .iter()
        .find(|(_, p)| p.role == "exec")
        .context("an exec program")?
        .0;
    let before = all_stats(progs)?;
    let b_exec = progs[&exec_id].stats()?;
    let b_empty = empty.stats()?;
    let rate = spawn_outside(Place::Service, execs)?;
    let empty_ns = empty.stats()?.since(b_empty).mean_ns();
    let total = all_stats(progs)?.since(before);
    let node_execs = progs[&exec_id].stats()?.since(b_exec).run_cnt.max(1);
    let session_added_ns = if session {
        let before = all_stats(progs)?;
        let b_exec = progs[&exec_id].stats()?;
        spawn_outside(Place::Session, execs)?;
        let total = all_stats(progs)?.since(before);
        let execs = progs[&exec_id].stats()?.since(b_exec).run_cnt.max(1);
        Some(total.run_time_ns as f64 / execs as f64)
    } else {
        None
    };
    Ok(Window {
        added_ns: total.run_time_ns as f64 / node_execs as f64,
        session_added_ns,
        empty_ns,
        rate,
        node_execs,
        runs: total.run_cnt,
    })
}

/// The sum of the statistics of `progs`.
fn all_stats(progs: &std::collections::BTreeMap<u32, Prog>) -> anyhow::Result<Stats> {
    let mut total = Stats::default();
    for p in progs.values() {
        total = total.add(p.stats()?);
    }
    Ok(total)
}

/// Starts tracers until `n` run; `Some(reason)` when the node refuses one (a limit
/// of the design, not a broken benchmark: the curve stops there and says why).
fn start_tracers(
    copilot: &Path,
    bpf_dir: &Path,
    n: usize,
    tracers: &mut Vec<(PodCgroup, Trace)>,
    progs: &mut std::collections::BTreeMap<u32, Prog>,
) -> anyhow::Result<Option<String>> {
    while tracers.len() < n {
        let pod = PodCgroup::new(Layout::Cgroupfs);
        match Trace::start_with(copilot, pod.path(), None, Some(bpf_dir)) {
            Ok(trace) => {
                for p in bpf::programs_of(trace.pid(), trace.set_dir.as_deref())? {
                    progs.entry(p.id).or_insert(p);
                }
                trace.stop_reading();
                tracers.push((pod, trace));
            }
            Err(e) => return Ok(Some(format!("tracer {} of {n}: {e:#}", tracers.len() + 1))),
        }
    }
    Ok(None)
}

/// Mean per pod: the kernel memory of the ring buffers its tracer holds (`memlock`
/// of each ring-buffer map fd, `map_type` 27) and the tracer's anonymous RSS.
fn pod_memory(tracers: &[(PodCgroup, Trace)]) -> (f64, f64) {
    let mut ring = 0u64;
    let mut anon = 0u64;
    for (_, t) in tracers {
        ring += rings_memlock_kib(t.pid());
        anon += status_kib(t.pid(), "RssAnon:");
    }
    let n = tracers.len().max(1) as f64;
    (ring as f64 / n, anon as f64 / n)
}

fn rings_memlock_kib(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    let mut bytes = 0;
    for e in dir.filter_map(Result::ok) {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if field("map_type:") == Some(27) {
            bytes += field("memlock:").unwrap_or(0);
        }
    }
    bytes / 1024
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
