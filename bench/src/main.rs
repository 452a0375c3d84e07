//! `copilot-bench`: the measuring side of `cargo xtask bench` (run as root; xtask
//! builds it and copilot, runs it, and renders its JSON). Also the polling reference
//! designs, as subcommands, so that each runs as a process of its own.
//!
//! ```text
//! copilot-bench run --copilot PATH --moto PATH --out FILE [--quick]
//! copilot-bench poll-proc DIR PHASE_MS  # flyte-copilot's /proc scanner (2 s, 2 empty cycles)
//! copilot-bench poll-file PATH PHASE_MS # a 1 s stat poller
//! ```
mod arrival;
mod bpf;
mod exit;
mod kernel;
mod pod;
mod pollers;
mod proto;
mod sidecar;
mod stats_cost;
mod storm;
mod tracer;
mod transfer;
mod util;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bench_results::{Figure, Figures, Machine, Mode, Results};

/// Counts for one suite run.
struct Sizes {
    exits: usize,
    runs: usize,
    idle: Duration,
    outside_execs: usize,
    storm_spawners: usize,
    storm_per: usize,
    pods: &'static [usize],
    pods_execs: usize,
    big_bytes: usize,
    small_files: usize,
    pod_runs: usize,
    pod_big_bytes: usize,
}

const FULL: Sizes = Sizes {
    exits: 2000,
    runs: 20,
    idle: Duration::from_secs(60),
    outside_execs: 20_000,
    storm_spawners: 4,
    storm_per: 5000,
    pods: &[1, 10, 110, 250],
    pods_execs: 5000,
    big_bytes: 1 << 30,
    small_files: 10_000,
    pod_runs: 5,
    pod_big_bytes: 100 << 20,
};

const QUICK: Sizes = Sizes {
    exits: 200,
    runs: 3,
    idle: Duration::from_secs(5),
    outside_execs: 2000,
    storm_spawners: 4,
    storm_per: 500,
    pods: &[1, 10],
    pods_execs: 1000,
    big_bytes: 32 << 20,
    small_files: 300,
    pod_runs: 1,
    pod_big_bytes: 16 << 20,
};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("poll-proc") => pollers::poll_proc(
            PathBuf::from(args.get(1).context("poll-proc DIR PHASE_MS")?),
            Duration::from_secs(2),
            phase(args.get(2))?,
            2,
        ),
        Some("poll-file") => pollers::poll_file(
            PathBuf::from(args.get(1).context("poll-file PATH PHASE_MS")?),
            Duration::from_secs(1),
            phase(args.get(2))?,
        ),
        Some("run") => {
            let flag = |name: &str| {
                args.iter()
                    .position(|a| a == name)
                    .and_then(|i| args.get(i + 1))
                    .map(PathBuf::from)
                    .with_context(|| format!("missing {name}"))
            };
            let quick = args.iter().any(|a| a == "--quick");
            let only: Option<Vec<String>> = args
                .iter()
                .position(|a| a == "--only")
                .and_then(|i| args.get(i + 1))
                .map(|s| s.split(',').map(str::to_owned).collect());
            run(
                &flag("--copilot")?,
                &flag("--moto")?,
                &flag("--out")?,
                quick,
                only,
            )
        }
        _ => bail!(
            "usage: copilot-bench run --copilot PATH --moto PATH --out FILE [--quick] [--only 1,2,…] | poll-proc DIR | poll-file PATH"
        ),
    }
}

fn phase(arg: Option<&String>) -> anyhow::Result<Duration> {
    let ms: u64 = arg
        .context("missing PHASE_MS")?
        .parse()
        .context("PHASE_MS")?;
    Ok(Duration::from_millis(ms))
}

/// A figure as the results file keeps it; a failure is logged and added to `failed`.
fn record<T: serde::Serialize>(
    key: &str,
    r: anyhow::Result<T>,
    failed: &mut Vec<String>,
) -> Option<Figure<T>> {
    match r {
        Ok(v) => {
            let json = serde_json::to_string(&v).unwrap_or_default();
            eprintln!("bench: {key}: {json}");
            Some(Figure::Done(v))
        }
        Err(e) => {
            eprintln!("bench: {key} FAILED: {e:#}");
            failed.push(key.to_owned());
            Some(Figure::Failed {
                error: format!("{e:#}"),
            })
        }
    }
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: kernel.trim().to_owned(),
        memory_gib: mem_kib as f64 / (1 << 20) as f64,
    }
}

fn run(
    copilot: &Path,
    moto: &Path,
    out: &Path,
    quick: bool,
    only: Option<Vec<String>>,
) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmarks need root (BPF, cgroups, runc)");
    }
    let sizes = if quick { &QUICK } else { &FULL };
    let started = Instant::now();
    let load_before = util::loadavg();
    let mut figures = Figures::default();
    let mut failed = Vec::new();
    let want = |n: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == n));
    let step = |name: &str| {
        eprintln!(
            "bench: == {name} ({:.0} s in)",
            started.elapsed().as_secs_f64()
        )
    };

    // Figure 4 first: figure 5 uses its outside-the-pod cost.
    let mut outside = (0.0, 0.0);
    if want("4") || want("5") {
        step("4 kernel cost outside the pod");
        let r = kernel::outside(copilot, sizes.outside_execs).map(|(v, e, x)| {
            outside = (e, x);
            v
        });
        figures.outside = record("4_outside", r, &mut failed);
    }
    if want("1") {
        step("1 exit-notification latency");
        let r = exit::run(copilot, sizes.exits);
        figures.exit_latency = record("1_exit_latency", r, &mut failed);
    }
    if want("2") || want("3") || want("8") {
        step("2, 3, 8 sidecar runs beside the pollers");
        let r = sidecar::runs(copilot, sizes.runs);
        figures.sidecar = record("2_3_8_sidecar", r, &mut failed);
    }
    if want("7") {
        step("7 idle cost");
        figures.idle = record("7_idle", sidecar::idle(copilot, sizes.idle), &mut failed);
    }
    if want("5") || want("10") {
        let (spawners, per) = (sizes.storm_spawners, sizes.storm_per);
        step("5, 10 event storm, normal ring");
        let r = storm::run(copilot, None, spawners, per, false, outside);
        figures.storm_normal = record("10_storm_normal", r, &mut failed);
        step("10 event storm, tiny ring");
        let r = storm::run(copilot, Some(4096), spawners, per, true, outside);
        figures.storm_tiny = record("10_storm_tiny", r, &mut failed);
    }
    if want("6") {
        step("6 pods per node");
        let r = kernel::pods(copilot, sizes.pods, sizes.pods_execs);
        figures.pods = record("6_pods", r, &mut failed);
    }
    if want("9") {
        step("9 transfers");
        let r = transfer::run(copilot, moto, sizes.big_bytes, sizes.small_files);
        figures.transfers = record("9_transfers", r, &mut failed);
    }
    if want("11") {
        step("11 whole task in the pod runner, eBPF beside the signal design");
        let r = pod::run(copilot, sizes.pod_runs, sizes.pod_big_bytes);
        figures.pod = record("11_pod", r, &mut failed);
    }

    let result = Results {
        mode: if quick { Mode::Quick } else { Mode::Full },
        machine: machine(),
        load_before,
        load_after: util::loadavg(),
        duration_s: started.elapsed().as_secs_f64(),
        figures,
        failed,
    };
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_vec_pretty(&result)?)
        .with_context(|| format!("writing {}", out.display()))?;
    if !result.failed.is_empty() {
        bail!("failed figures: {}", result.failed.join(", "));
    }
    Ok(())
}
