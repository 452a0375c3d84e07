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

/// Figure 4. Returns the JSON and copilot's mean ns per exec and per exit run.
pub fn outside(copilot: &Path, execs: usize) -> anyhow::Result<(Value, f64, f64)> {
    let _stats = bpf::enable_stats()?;
    let pod = PodCgroup::new(Layout::Cgroupfs);
    let trace = Trace::start(copilot, pod.path(), None)?;
    let progs = bpf::programs_of(trace.pid())?;
    let empty = RefProg::empty()?;
    let filter = RefProg::cgroup_filter(level(&pod), pod.id())?;
    let b_exec = sum(&progs, Some("exec"))?;
    let b_exit = sum(&progs, Some("exit"))?;
    let b_empty = empty.stats()?;
    let b_filter = filter.stats()?;
    let rate = spawn_outside(execs)?;
    let exec = sum(&progs, Some("exec"))?.since(b_exec);
    let exit = sum(&progs, Some("exit"))?.since(b_exit);
    let e = empty.stats()?.since(b_empty);
    let f = filter.stats()?.since(b_filter);
    if exec.run_cnt < execs as u64 {
        bail!(
            "copilot's exec program ran {} times for {execs} execs: stats missing",
            exec.run_cnt
        );
    }
    let both = exec.add(exit);
    trace.stop()?;
    let v = json!({
        "execs": execs,
        "execs_per_s": rate,
        "copilot_exec": stats_json(exec),
        "copilot_exit": stats_json(exit),
        "copilot_mean_ns": both.mean_ns(),
        "ref_empty": stats_json(e),
        "ref_cgroup_filter": stats_json(f),
        "ref_ids": [empty.id()?, filter.id()?],
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
        while tracers.len() < n {
            let pod = PodCgroup::new(Layout::Cgroupfs);
            let trace = Trace::start(copilot, pod.path(), None)?;
            let progs = bpf::programs_of(trace.pid())?;
            tracers.push((pod, trace, progs));
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
