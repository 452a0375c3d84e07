//! Figures 4 and 6: what copilot's programs cost every other process on the node,
//! measured with the kernel's own BPF run-time statistics, beside an empty program
//! and a program that only does copilot's pod check, attached in the same window.
use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context as _, bail};
use integration_test::{Layout, PodCgroup, rootfs};
use serde_json::{Value, json};

use crate::{
    bpf::{self, Prog, RefProg, Stats},
    tracer::Trace,
};

/// Runs `spawner N 0` on the host (outside every pod): N fork+exec+exit of /bin/true.
fn spawn_outside(n: usize) -> anyhow::Result<f64> {
    let spawner = rootfs().join("bin/spawner");
    let t = Instant::now();
    let status = Command::new(&spawner)
        .args([&n.to_string(), "0"])
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

fn stats_json(s: Stats) -> Value {
    json!({"mean_ns": s.mean_ns(), "runs": s.run_cnt, "run_time_ns": s.run_time_ns})
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
    let trace = Trace::start(copilot, pod.path(), None)?;
    let progs = bpf::programs_of(trace.pid())?;
    let (refs, _map) = match early {
        Some(r) => r,
        None => load_refs()?,
    };
    let b_exec = sum(&progs, Some("exec"))?;
    let b_exit = sum(&progs, Some("exit"))?;
    let b_refs: Vec<Stats> = refs.iter().map(|r| r.stats()).collect::<Result<_, _>>()?;
    let rate = spawn_outside(execs)?;
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
pub fn outside(copilot: &Path, execs: usize) -> anyhow::Result<(Value, f64, f64)> {
    let _stats = bpf::enable_stats()?;
    let a = pass(copilot, execs / 2, false)?;
    let b = pass(copilot, execs / 2, true)?;
    let order = |p: &Pass| {
        json!({
            "copilot_mean_ns": p.exec.add(p.exit).mean_ns(),
            "ref_cgroup_filter_ns": p.refs[1].mean_ns(),
        })
    };
    let exec = a.exec.add(b.exec);
    let exit = a.exit.add(b.exit);
    let r = |i: usize| stats_json(a.refs[i].add(b.refs[i]));
    let v = json!({
        "execs": execs,
        "execs_per_s": (a.rate + b.rate) / 2.0,
        "copilot_exec": stats_json(exec),
        "copilot_exit": stats_json(exit),
        "copilot_mean_ns": exec.add(exit).mean_ns(),
        "ref_empty": r(0),
        "ref_cgroup_filter": r(1),
        "ref_cgroup_filter_rodata": r(2),
        "copilot_attached_first": order(&a),
        "refs_attached_first": order(&b),
    });
    Ok((v, exec.mean_ns(), exit.mean_ns()))
}

/// Figure 6: N tracers, each on its own (empty) pod; kernel ns added per exec on the node.
pub fn pods(copilot: &Path, counts: &[usize], execs: usize) -> anyhow::Result<Value> {
    let _stats = bpf::enable_stats()?;
    let mut tracers: Vec<(PodCgroup, Trace, Vec<Prog>)> = Vec::new();
    let mut curve = Vec::new();
    for &n in counts {
        let t = Instant::now();
        let mut refused = None;
        while tracers.len() < n {
            let pod = PodCgroup::new(Layout::Cgroupfs);
            // A tracer that cannot attach is a result (a limit of the node), not a
            // broken benchmark: the curve stops there and says why.
            match Trace::start(copilot, pod.path(), None) {
                Ok(trace) => {
                    let progs = bpf::programs_of(trace.pid())?;
                    tracers.push((pod, trace, progs));
                }
                Err(e) => {
                    refused = Some(format!("tracer {} of {n}: {e:#}", tracers.len() + 1));
                    break;
                }
            }
        }
        if let Some(why) = refused {
            eprintln!("bench:   {why}");
            curve.push(json!({"tracers": n, "started": tracers.len(), "error": why}));
            break;
        }
        let started_s = t.elapsed().as_secs_f64();
        let all: Vec<&Prog> = tracers.iter().flat_map(|(_, _, p)| p.iter()).collect();
        let first_exec = tracers[0]
            .2
            .iter()
            .find(|p| p.role == "exec")
            .context("first tracer's exec program")?;
        let before: Vec<Stats> = all.iter().map(|p| p.stats()).collect::<Result<_, _>>()?;
        let b_first = first_exec.stats()?;
        spawn_outside(execs)?;
        let mut total = Stats::default();
        for (p, b) in all.iter().zip(&before) {
            total = total.add(p.stats()?.since(*b));
        }
        let node_execs = first_exec.stats()?.since(b_first).run_cnt.max(1);
        let rss_mib: f64 = tracers
            .iter()
            .map(|(_, t, _)| {
                crate::util::Usage::of(t.pid())
                    .map(|u| u.rss_kib as f64 / 1024.0)
                    .unwrap_or(0.0)
            })
            .sum::<f64>()
            / tracers.len() as f64;
        eprintln!(
            "bench:   {n} tracers: {:.0} ns per exec",
            total.run_time_ns as f64 / node_execs as f64
        );
        curve.push(json!({
            "tracers": n,
            "node_execs": node_execs,
            "added_ns_per_exec": total.run_time_ns as f64 / node_execs as f64,
            "program_runs": total.run_cnt,
            "start_all_s": started_s,
            "tracer_rss_mib_mean": rss_mib,
        }));
    }
    for (_, trace, _) in tracers {
        trace.stop()?;
    }
    Ok(json!({ "execs": execs, "curve": curve }))
}
