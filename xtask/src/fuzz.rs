//! `cargo xtask fuzz`: the libFuzzer targets in `fuzz/` (its own workspace, built
//! by cargo-fuzz on nightly with AddressSanitizer). First the committed corpus runs
//! as a plain test with fmt and clippy on the crate; then each target fuzzes for
//! `--seconds`, starting from the committed corpus. New inputs go to
//! `target/fuzz-corpus/<target>`, crashes to `fuzz/artifacts/<target>`; the command
//! fails on a crash and prints runs and executions per second for each target.
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::cmd;

/// The fuzz targets, as named in `fuzz/Cargo.toml`.
pub const TARGETS: [&str; 2] = ["download_plan", "upload_mapping"];

#[derive(clap::Args, Debug)]
pub struct Options {
    /// How long each target fuzzes.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Only this target.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub target: Option<String>,
}

fn in_fuzz(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command
        .current_dir(cmd::workspace_root().join("fuzz"))
        .args(args);
    command
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    cmd::run(&mut in_fuzz("cargo", &["fmt", "--", "--check"]))?;
    cmd::run(&mut in_fuzz(
        "cargo",
        &["clippy", "--all-targets", "--", "-D", "warnings"],
    ))?;
    cmd::run(&mut in_fuzz("cargo", &["test"]))?;
    let targets: Vec<&str> = match &opts.target {
        Some(t) => vec![t.as_str()],
        None => TARGETS.to_vec(),
    };
    let mut report = Vec::new();
    for target in targets {
        report.push(fuzz(target, opts.seconds)?);
    }
    for line in report {
        println!("{line}");
    }
    Ok(())
}

/// Fuzzes one target; returns its line of the report.
fn fuzz(target: &str, seconds: u64) -> anyhow::Result<String> {
    let root = cmd::workspace_root();
    let work = root.join("target").join("fuzz-corpus").join(target);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let work = work.to_string_lossy().into_owned();
    let committed = format!("corpus/{target}");
    let time = format!("-max_total_time={seconds}");
    let mut command = in_fuzz(
        "cargo",
        &[
            "+nightly",
            "fuzz",
            "run",
            target,
            &work,
            &committed,
            "--",
            &time,
            "-print_final_stats=1",
        ],
    );
    eprintln!("xtask: $ {}", cmd::display(&command));
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning cargo fuzz for {target}"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(80).collect();
        for line in tail.into_iter().rev() {
            eprintln!("{line}");
        }
        bail!(
            "fuzz target {target} failed ({}): see the crash above and fuzz/artifacts/{target}",
            out.status
        );
    }
    let stat = |name: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| "?".into())
    };
    Ok(format!(
        "fuzz: {target:<15} {} runs in {seconds} s, {} exec/s, {} new inputs, peak RSS {} MB, no crash",
        stat("number_of_executed_units"),
        stat("average_exec_per_sec"),
        stat("new_units_added"),
        stat("peak_rss_mb"),
    ))
}
