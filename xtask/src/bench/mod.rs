//! `cargo xtask bench`: copilot's figures beside the polling designs and the physical floor.
//!
//! Builds copilot (release) and the measuring binary `copilot-bench` (crate `bench/`),
//! runs it as root — it drives real eBPF, runc containers, a loopback moto S3 server and
//! rclone — then prints the table of figures and ratios with the machine it ran on,
//! keeps the JSON in `target/bench/results.json`, and (full mode) rewrites the results
//! section of README.md between `<!-- bench:begin -->` and `<!-- bench:end -->`.
//!
//! Benchmarks compare; they do not assert timing targets. They fail when something does
//! not work (events missing, a lost event with the normal ring, a hang, a failed copy).
mod report;

use std::{
    io::BufRead as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{cmd, setup};

#[derive(clap::Args, Debug, Default)]
pub struct Options {
    /// Small counts: the whole suite in about a minute (CI). Leaves README.md alone.
    #[arg(long)]
    pub quick: bool,
    /// Skip `cargo xtask setup` (rclone, moto, runc, gcc must be present).
    #[arg(long)]
    pub skip_setup: bool,
    /// Only these figures (comma-separated numbers, e.g. `1,4`); implies not touching README.md.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Re-render the table and README.md from an existing results.json without measuring.
    #[arg(long)]
    pub render_only: bool,
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    let root = cmd::workspace_root();
    let results = root.join("target/bench/results.json");
    if !opts.render_only {
        if !opts.skip_setup {
            setup::run(setup::Options::default())?;
        }
        let copilot = build_release("copilot", "copilot")?;
        let bench = build_release("copilot-bench", "copilot-bench")?;
        let moto = root.join("target/venv-moto/bin/moto_server");
        let mut command = Command::new(&bench);
        command
            .arg("run")
            .arg("--copilot")
            .arg(&copilot)
            .arg("--moto")
            .arg(&moto)
            .arg("--out")
            .arg(&results);
        if opts.quick {
            command.arg("--quick");
        }
        if !opts.only.is_empty() {
            command.arg("--only").arg(opts.only.join(","));
        }
        let measured = cmd::run(&mut command);
        // Show what was measured even when a figure failed, then fail.
        if results.exists() {
            render(&results, &root, &opts)?;
        }
        return measured;
    }
    render(&results, &root, &opts)
}

fn render(results: &Path, root: &Path, opts: &Options) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(results)
        .with_context(|| format!("reading {}", results.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).context("parsing results.json")?;
    let table = report::markdown(&v);
    println!("\n{table}");
    println!("results: {}", results.display());
    let full = v["mode"] == "full"
        && opts.only.is_empty()
        && v["failed"].as_array().is_some_and(|f| f.is_empty());
    if full {
        let readme = root.join("README.md");
        report::update_readme(&readme, &table)?;
        println!("updated {}", readme.display());
    }
    Ok(())
}

/// `cargo build --release -p PACKAGE --bin BIN`, returning the executable cargo reports.
fn build_release(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let mut command = Command::new("cargo");
    command
        .current_dir(cmd::workspace_root())
        .args(["build", "--release", "-p", package, "--bin", bin])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    eprintln!("xtask: $ {}", cmd::display(&command));
    let mut child = command.spawn().context("spawning cargo build")?;
    let stdout = child.stdout.take().context("cargo build stdout")?;
    let mut executable = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("reading cargo build output")?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == bin
            && let Some(path) = msg["executable"].as_str()
        {
            executable = Some(PathBuf::from(path));
        }
    }
    let status = child.wait().context("waiting for cargo build")?;
    if !status.success() {
        bail!("building {package} failed: {status}");
    }
    executable.with_context(|| format!("cargo build did not report the {bin} executable"))
}
