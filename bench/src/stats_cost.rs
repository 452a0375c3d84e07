//! Figure 6c: what the kernel's BPF run-time statistics add to every run they
//! measure.
//!
//! Figures 4 to 6 read `run_time_ns`, which the kernel adds up only while
//! `kernel.bpf_stats_enabled` is on: `bpf_prog_run` then reads its clock before and
//! after each run and updates the program's counters. Part of that is inside the
//! figure (an empty program reads ~55 ns a run here), and a node without the
//! statistics pays none of it. Here an empty program runs in the kernel's own loop
//! (`BPF_PROG_TEST_RUN`, the same `bpf_prog_run` a tracepoint calls), with the
//! statistics off and on in alternate windows: the difference is their whole cost
//! a run, and their own figure for the program the part of it they count.
use anyhow::{Context as _, bail};
use bench_results::StatsCost;

use crate::{
    bpf::{self, TestRun},
    util::median,
};

/// `rounds` windows of `runs` runs each with the statistics off and on.
pub fn run(runs: u32, rounds: usize) -> anyhow::Result<StatsCost> {
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .context("reading kernel.bpf_stats_enabled")?;
    if sysctl.trim() != "0" {
        bail!(
            "kernel.bpf_stats_enabled is on for the whole node: the statistics cannot be measured off"
        );
    }
    let prog = TestRun::empty()?;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let mut counted = bpf::Stats::default();
    for _ in 0..rounds {
        off.push(f64::from(prog.mean_ns(runs)?));
        let stats = bpf::enable_stats()?;
        let before = prog.stats()?;
        on.push(f64::from(prog.mean_ns(runs)?));
        counted = counted.add(prog.stats()?.since(before));
        drop(stats);
    }
    let (off, on) = (median(&mut off), median(&mut on));
    Ok(StatsCost {
        runs,
        rounds,
        off_ns_per_run: Some(off),
        on_ns_per_run: Some(on),
        stats_ns_per_run: Some(on - off),
        counted_ns_per_run: Some(counted.mean_ns()),
    })
}
