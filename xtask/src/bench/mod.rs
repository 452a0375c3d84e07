//! `cargo xtask bench`: copilot's figures beside the polling designs and the physical floor.
//!
//! Builds copilot (release) and the measuring binary `copilot-bench` (crate `bench/`),
//! runs it as root — it drives real eBPF, runc containers, a loopback moto S3 server and
//! rclone — then prints the table of figures and ratios with the machine it ran on,
//! keeps the JSON (a `bench_results::Results`) in `target/bench/results.json`, and (full
//! mode) rewrites the results section of README.md between `<!-- bench:begin -->` and
//! `<!-- bench:end -->`.
//!
//! Benchmarks compare; they do not assert timing targets. They fail when something does
//! not work (events missing, a lost event with the normal ring, a hang, a failed copy).
mod plot;
mod report;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;
use bench_results::{Figure, Mode, Results};

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
        crate::integration_test::fresh_node()?;
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
    let v: Results = serde_json::from_str(&text).context("parsing results.json")?;
    let table = report::markdown(&v);
    println!("\n{table}");
    if let Some(svg) = v
        .figures
        .pods
        .as_ref()
        .and_then(Figure::done)
        .and_then(plot::fig6)
    {
        let mut paths = vec![results.with_file_name("fig6-pods.svg")];
        if v.mode == Mode::Full {
            paths.push(root.join("bench/fig6-pods.svg"));
        }
        for p in paths {
            std::fs::write(&p, &svg).with_context(|| format!("writing {}", p.display()))?;
            println!("figure 6: {}", p.display());
        }
    }
    println!("results: {}", results.display());
    let full = v.mode == Mode::Full && opts.only.is_empty() && v.failed.is_empty();
    if full {
        let readme = root.join("README.md");
        report::update_readme(&readme, &table)?;
        println!("updated {}", readme.display());
    }
    Ok(())
}

/// `cargo build --release -p PACKAGE --bin BIN`, returning the executable cargo reports.
fn build_release(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    cmd::cargo_build(&["--release", "-p", package, "--bin", bin], bin)
}
