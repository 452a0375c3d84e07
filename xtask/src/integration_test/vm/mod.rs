//! `cargo xtask integration-test vm [KERNEL…]`: the tracer's integration tests on other
//! kernels, each booted in qemu with an initramfs that holds the test executables.
//!
//! In the spirit of aya's VM runner (aya `xtask/src/run.rs`), with kernels from Debian's
//! packages ([`kernel`]), a newc initramfs written here ([`cpio`], [`initramfs`]), an init
//! script that mounts a pure cgroup v2 system and runs the suites (`init.sh`), and a
//! console reader that kills a hung VM ([`qemu`]). Per kernel it reports pass/fail, the
//! libtest counts, and which kernel paths copilot took: `group_dead` from the tracepoint
//! or derived from `signal_struct.live`, OOM attribution by `oom/mark_victim` or by the
//! v2 `memory.events` counter.
//!
//! Kernel facts found with it (Debian bookworm's packages, November 2025):
//! - Neither 6.1.0-56 nor 6.12.117 has `group_dead` in `sched_process_exit` (6.18 has):
//!   copilot derives thread-group death on both.
//! - 6.12 is built without `CONFIG_MEMCG_V1`: no cgroup v1 memory hierarchy at all.
//! - Both have `oom/mark_victim` (with `pid` at offset 8), BTF, and every option in
//!   [`kernel::REQUIRED_CONFIG`] built in.
//! - KVM on this machine kind: `/dev/kvm` exists but the guest stops at once with "KVM
//!   internal error. Suberror: 1 … emulation failure" (qemu keeps running), so `--accel
//!   auto` gives KVM a short boot window and falls back to TCG.
mod cpio;
mod initramfs;
mod kernel;
mod qemu;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::bail;
use serde_json::Value;

use crate::cmd;
use kernel::{Resolved, Spec};
use qemu::{Accel, End};

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Kernels to boot: `6.1`, `6.12` (the newest Debian packages of those series), `host`
    /// (`/boot/vmlinuz-$(uname -r)`, if this machine has it), a Debian package name
    /// (`linux-image-…`) or a path to a kernel image. Default: 6.1 6.12 host.
    pub kernels: Vec<String>,
    /// How qemu runs the guest.
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    pub accel: Accel,
    /// Per-kernel deadline in seconds (boot to result); a VM still running then is killed.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS)]
    pub timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = DEFAULT_MEMORY_MIB)]
    pub memory: u32,
    /// Also run the fixtures' own tests (`tests/tests/fixtures.rs`) in each VM.
    #[arg(long)]
    pub fixtures: bool,
    /// Skip `cargo xtask setup`.
    #[arg(long)]
    pub skip_setup: bool,
    /// Echo the whole serial console, not only progress lines.
    #[arg(long)]
    pub verbose: bool,
    /// Passed to the tracer suite in the guest, e.g. a test name filter.
    #[arg(last = true)]
    pub test_args: Vec<String>,
}

impl Default for Options {
    /// What `cargo xtask integration-test vm` does without arguments (`cargo xtask test`'s
    /// step).
    fn default() -> Self {
        Options {
            kernels: Vec::new(),
            accel: Accel::Auto,
            timeout: DEFAULT_TIMEOUT_SECS,
            memory: DEFAULT_MEMORY_MIB,
            fixtures: false,
            skip_setup: false,
            verbose: false,
            test_args: Vec::new(),
        }
    }
}

const DEFAULT_TIMEOUT_SECS: u64 = 900;
const DEFAULT_MEMORY_MIB: u32 = 2048;

/// How long KVM gets to boot the guest to its first line before `--accel auto` gives up
/// on it (a good KVM boot takes about a second; TCG about four).
const KVM_PROBE: Duration = Duration::from_secs(10);

pub fn run(opts: Options) -> anyhow::Result<()> {
    let specs = if opts.kernels.is_empty() {
        Spec::defaults()
    } else {
        opts.kernels
            .iter()
            .map(|k| Spec::parse(k))
            .collect::<anyhow::Result<_>>()?
    };
    let dir = cmd::workspace_root().join("target/vm");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let started = Instant::now();

    let mut kernels = Vec::new();
    let mut reports = Vec::new();
    for spec in &specs {
        match kernel::resolve(spec, &dir.join("kernels"))? {
            Resolved::Ready(k) => kernels.push(k),
            Resolved::Unavailable { label, reason } => {
                eprintln!("xtask: vm: {label}: not run: {reason}");
                reports.push(Report::unavailable(label, reason));
            }
        }
    }
    for k in &kernels {
        if let Some(config) = &k.config {
            let missing = kernel::missing_config(config)?;
            if !missing.is_empty() {
                bail!(
                    "kernel {} lacks built-in {} (the VM loads no modules)",
                    k.release,
                    missing.join(", ")
                );
            }
        }
    }

    let payload = initramfs::build_payload(opts.test_args.clone(), opts.fixtures)?;
    let initrd = dir.join("initramfs.cpio");
    let t = Instant::now();
    initramfs::write(&payload, &dir.join("staging"), &initrd)?;
    eprintln!(
        "xtask: vm: wrote {} ({} MiB) in {:.1?}",
        initrd.display(),
        std::fs::metadata(&initrd)?.len() >> 20,
        t.elapsed()
    );

    let mut accel = match opts.accel {
        Accel::Auto if std::fs::File::open("/dev/kvm").is_err() => {
            eprintln!("xtask: vm: /dev/kvm is not usable: using TCG");
            Accel::Tcg
        }
        a => a,
    };
    for k in &kernels {
        eprintln!("xtask: vm: == {} ({})", k.label, k.release);
        let boot = qemu::Boot {
            kernel: &k.image,
            initrd: &initrd,
            memory_mib: opts.memory,
            smp: 2,
            log: logs.join(format!("{}.log", k.release)),
            verbose: opts.verbose,
        };
        let timeout = Duration::from_secs(opts.timeout);
        let mut outcome = qemu::boot(
            &boot,
            accel,
            timeout,
            (accel == Accel::Auto).then_some(KVM_PROBE),
        )?;
        if let End::KvmFailed { reason } = &outcome.end {
            eprintln!("xtask: vm: KVM does not work here ({reason}); falling back to TCG");
            accel = Accel::Tcg;
            outcome = qemu::boot(&boot, accel, timeout, None)?;
        } else if accel == Accel::Auto {
            accel = Accel::Kvm;
        }
        let report = Report::from_outcome(k, accel, &outcome, &boot.log);
        eprintln!("{}", report.render());
        reports.push(report);
    }

    eprintln!(
        "\nxtask: vm: kernel matrix ({:.0?} in all)",
        started.elapsed()
    );
    for r in &reports {
        eprintln!("{}", r.render());
    }
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| r.failed())
        .map(|r| r.label.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("kernel matrix failed on: {}", failed.join(", "));
    }
    if kernels.is_empty() {
        bail!("no kernel of the matrix could run");
    }
    Ok(())
}

/// What one kernel showed.
struct Report {
    label: String,
    release: String,
    /// `None`: not run (the reason is in `problems`).
    pass: Option<bool>,
    summary: String,
    elapsed: Option<Duration>,
    accel: Option<Accel>,
    /// `COPILOT-VM-KERNEL` facts: (key, value).
    kernel: Vec<(String, String)>,
    steps: Vec<String>,
    paths: Vec<String>,
    problems: Vec<String>,
    log: Option<PathBuf>,
}

impl Report {
    fn unavailable(label: String, reason: String) -> Self {
        Report {
            label,
            release: String::new(),
            pass: None,
            summary: "not run".into(),
            elapsed: None,
            accel: None,
            kernel: Vec::new(),
            steps: Vec::new(),
            paths: Vec::new(),
            problems: vec![reason],
            log: None,
        }
    }

    fn failed(&self) -> bool {
        self.pass == Some(false)
    }

    fn from_outcome(k: &kernel::Kernel, accel: Accel, outcome: &qemu::Outcome, log: &Path) -> Self {
        let console = &outcome.console;
        let mut r = Report {
            label: k.label.clone(),
            release: k.release.clone(),
            pass: Some(false),
            summary: String::new(),
            elapsed: Some(outcome.elapsed),
            accel: Some(accel),
            kernel: Vec::new(),
            steps: Vec::new(),
            paths: Vec::new(),
            problems: Vec::new(),
            log: Some(log.to_path_buf()),
        };
        match &outcome.end {
            End::Result { pass, line } => {
                r.pass = Some(*pass);
                r.summary = line.trim_start_matches("COPILOT-VM-").to_string();
            }
            End::Exited { status } => {
                r.summary = format!("VM ended without a result ({status})");
            }
            End::TimedOut { after } => {
                r.summary = format!("VM killed: no result within {after:.0?}");
            }
            End::KvmFailed { reason } => r.summary = format!("KVM failed: {reason}"),
        }
        r.parse_console(console);
        r.check_paths(console);
        if r.pass == Some(true) && !r.problems.is_empty() {
            r.pass = Some(false);
        }
        if r.pass != Some(true) {
            let tail: Vec<&str> = console
                .iter()
                .rev()
                .take(40)
                .rev()
                .map(String::as_str)
                .collect();
            r.problems.push(format!(
                "last console lines:\n      {}",
                tail.join("\n      ")
            ));
        }
        r
    }

    fn parse_console(&mut self, console: &[String]) {
        let mut step = String::new();
        let mut counts = String::new();
        for line in console {
            if let Some(rest) = line.strip_prefix("COPILOT-VM-KERNEL ") {
                self.kernel = rest
                    .split(' ')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
            } else if let Some(name) = line.strip_prefix("COPILOT-VM-STEP-BEGIN ") {
                step = name.to_string();
                counts.clear();
            } else if let Some(rest) = line.strip_prefix("test result: ") {
                // `ok. 17 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out; finished in 95.1s`
                counts = rest.to_string();
            } else if let Some(rest) = line.strip_prefix("COPILOT-VM-STEP ") {
                let mut words = rest.splitn(3, ' ');
                let (name, res, detail) = (
                    words.next().unwrap_or_default(),
                    words.next().unwrap_or_default(),
                    words.next().unwrap_or_default(),
                );
                let detail = match res {
                    "skip" => detail.to_string(),
                    _ => {
                        let secs = step_secs(detail)
                            .map(|s| format!("{s:.0}s"))
                            .unwrap_or_default();
                        if name == step && !counts.is_empty() {
                            format!("{secs}, {counts}")
                        } else {
                            secs
                        }
                    }
                };
                self.steps.push(format!("{name}: {res} ({detail})"));
            }
        }
    }

    /// Which paths copilot took, from its `attached` log lines and the probe's JSON lines,
    /// checked against what the kernel offers.
    fn check_paths(&mut self, console: &[String]) {
        let fact = |k: &str| {
            self.kernel
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let field = fact("group_dead_field").map(|v| v == "true");
        let mark_victim = fact("mark_victim").map(|v| v == "true");
        let attached_true = console
            .iter()
            .filter(|l| l.contains("attached") && l.contains("group_dead_field=true"))
            .count();
        let attached_false = console
            .iter()
            .filter(|l| l.contains("attached") && l.contains("group_dead_field=false"))
            .count();
        self.paths.push(format!(
            "copilot attached {} times: group_dead_field=true ×{attached_true}, =false ×{attached_false}",
            attached_true + attached_false
        ));
        if field == Some(true) && attached_false > 0 || field == Some(false) && attached_true > 0 {
            self.problems.push(format!(
                "copilot's group_dead_field disagrees with the tracepoint format (field present: {field:?})"
            ));
        }
        let want = if field == Some(true) {
            "tracepoint"
        } else {
            "derived"
        };
        self.check_probe(console, "full", want, mark_victim == Some(true));
        self.check_probe(console, "no-mark-victim", want, false);
    }

    /// Checks one run of the init script's probe (see `init.sh`): container A runs
    /// leader_exit (only in `full`), container B memhog under a 32 MiB limit.
    ///
    /// The lines are `copilot::trace::Line`s, read here by key: xtask does not link
    /// copilot (aya, tokio, object_store: minutes of build for every `cargo xtask`),
    /// and these few keys are pinned byte for byte by that type's round-trip test.
    fn check_probe(&mut self, console: &[String], label: &str, want: &str, mark_victim: bool) {
        let prefix = format!("COPILOT-VM-PROBE-{label} ");
        let probe: Vec<Value> = console
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if probe.is_empty() {
            if console
                .iter()
                .any(|l| l.starts_with("COPILOT-VM-STEP probe"))
            {
                self.problems
                    .push(format!("probe {label}: no JSON lines from copilot"));
            }
            return;
        }
        let log_prefix = format!("COPILOT-VM-PROBE-LOG-{label} ");
        let attached = console
            .iter()
            .filter_map(|l| l.strip_prefix(&log_prefix))
            .find(|l| l.contains("attached"))
            .unwrap_or_default();
        let exits = |comm: &str| -> Vec<&Value> {
            probe
                .iter()
                .filter(|e| e["type"] == "exit" && e["comm"] == comm)
                .collect()
        };
        let group_dead: std::collections::BTreeSet<&str> = probe
            .iter()
            .filter(|e| e["type"] == "exit")
            .filter_map(|e| e["group_dead"].as_str())
            .collect();
        if group_dead.iter().any(|g| *g != want) {
            self.problems.push(format!(
                "probe {label}: exit lines say group_dead {group_dead:?}, expected {want}"
            ));
        }
        if label == "full" {
            self.paths.push(format!(
                "probe: exit lines carry group_dead {}",
                group_dead.iter().copied().collect::<Vec<_>>().join("+")
            ));
            // Thread-group death: one exit for leader_exit, by the surviving thread.
            let le = exits("leader_exit");
            match le.as_slice() {
                [e] if e["exit_code"] == 6 && e["tid"] != e["pid"] => self.paths.push(format!(
                    "probe: leader_exit exits once, when its last thread ({} of {}) ends, code 6",
                    e["tid"], e["pid"]
                )),
                _ => self.problems.push(format!(
                    "probe: leader_exit should exit once, code 6, by a non-leader thread: {}",
                    le.iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                )),
            }
        }
        // OOM: the exit line's `oom_killed` comes from a mark_victim event only; the
        // container's `exited` line also from memory.events' `oom_kill` counter.
        let b = "b".repeat(64);
        let hog_oom = exits("memhog")
            .iter()
            .any(|e| e["oom_killed"] == true && e["signal"] == 9);
        let ctr_oom = probe.iter().any(|e| {
            e["type"] == "container"
                && e["container_id"] == b.as_str()
                && e["state"] == "exited"
                && e["oom_killed"] == true
        });
        let events_prefix = format!("COPILOT-VM-PROBE-MEMORY-EVENTS-{label} ");
        let events = console
            .iter()
            .find_map(|l| l.strip_prefix(&events_prefix))
            .unwrap_or_default();
        let oom_kill = events
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .find(|w| w[0] == "oom_kill")
            .map_or("?", |w| w[1]);
        let tracepoint = attached.contains("oom_tracepoint=true");
        self.paths.push(format!(
            "probe {label}: oom_tracepoint={tracepoint}, memhog's exit oom_killed={hog_oom}, \
             its container's exited oom_killed={ctr_oom}, memory.events oom_kill={oom_kill}"
        ));
        if label == "full" && mark_victim && !(tracepoint && hog_oom) {
            self.problems.push(
                "probe full: the kernel has oom/mark_victim but memhog's exit is not oom_killed"
                    .into(),
            );
        }
        if label == "no-mark-victim" && tracepoint {
            self.problems
                .push("probe no-mark-victim: copilot still found oom/mark_victim".into());
        }
        if !ctr_oom {
            self.problems.push(format!(
                "probe {label}: memhog's container is not reported exited oom_killed"
            ));
        }
    }

    fn render(&self) -> String {
        let mut s = String::new();
        let verdict = match self.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "NOT RUN",
        };
        let _ = write!(s, "  {} {}", verdict, self.label);
        if !self.release.is_empty() {
            let _ = write!(s, " ({})", self.release);
        }
        if let Some(e) = self.elapsed {
            let _ = write!(s, " in {:.0?}", e);
        }
        if let Some(a) = self.accel {
            let _ = write!(s, " [{a:?}]");
        }
        let _ = write!(s, ": {}", self.summary);
        if !self.kernel.is_empty() {
            let facts: Vec<String> = self
                .kernel
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = write!(s, "\n    kernel: {}", facts.join(" "));
        }
        for step in &self.steps {
            let _ = write!(s, "\n    step {step}");
        }
        for p in &self.paths {
            let _ = write!(s, "\n    path: {p}");
        }
        let what = if self.pass.is_none() {
            "why"
        } else {
            "problem"
        };
        for p in &self.problems {
            let _ = write!(s, "\n    {what}: {p}");
        }
        if let Some(log) = &self.log {
            let _ = write!(s, "\n    console log: {}", log.display());
        }
        s
    }
}

/// `rc=0 start=12.3 end=45.6` → 33.3.
fn step_secs(detail: &str) -> Option<f64> {
    let get = |k: &str| {
        detail
            .split(' ')
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some(get("end=")? - get("start=")?)
}
