//! `cargo xtask test`: the whole test suite, as CI runs it (`.ci/run`).
//!
//! Every step runs even when an earlier one failed, so one run shows every problem;
//! the command fails if any step failed.
use std::process::Command;

use anyhow::bail;

use crate::{bench, cmd, fuzz, integration_test, setup};

#[derive(clap::Args, Debug, Default)]
pub struct Options {
    /// Skip `cargo xtask setup`.
    #[arg(long)]
    pub skip_setup: bool,
}

/// One step of the suite; it prints its own output.
type Step = fn() -> anyhow::Result<()>;

fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new("cargo");
    command.current_dir(cmd::workspace_root()).args(args);
    command
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    if !opts.skip_setup {
        // Without the tools nothing below can pass: stop here.
        setup::run(setup::Options::default())?;
    }
    let steps: [(&str, Step); 8] = [
        (
            "fmt",
            (|| cmd::run(&mut cargo(&["fmt", "--all", "--", "--check"]))),
        ),
        (
            // The eBPF crate only builds for bpfel-unknown-none: it gets its own step.
            "clippy",
            (|| {
                cmd::run(&mut cargo(&[
                    "clippy",
                    "--workspace",
                    "--exclude",
                    "copilot-ebpf",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ]))
            }),
        ),
        (
            "clippy (eBPF)",
            (|| {
                cmd::run(&mut cargo(&[
                    "+nightly",
                    "clippy",
                    "-p",
                    "copilot-ebpf",
                    "--target",
                    "bpfel-unknown-none",
                    "-Z",
                    "build-std=core",
                    "--",
                    "-D",
                    "warnings",
                ]))
            }),
        ),
        (
            // The privileged crate runs in the next step, one test at a time.
            "unit tests",
            (|| {
                cmd::run(&mut cargo(&[
                    "test",
                    "--workspace",
                    "--exclude",
                    "copilot-ebpf",
                    "--exclude",
                    "integration-test",
                    "--no-fail-fast",
                ]))
            }),
        ),
        ("integration tests", (|| integration_test::run_tests(&[]))),
        (
            // The corpus as a test, then a short run of each target; longer with `cargo xtask fuzz`.
            "fuzz (30 s per target)",
            (|| {
                fuzz::run(fuzz::Options {
                    seconds: 30,
                    target: None,
                })
            }),
        ),
        (
            // The tracer suite again on Debian's 6.1 and 6.12 kernels, in qemu VMs.
            "kernel matrix (VMs)",
            integration_test::run_vm_matrix,
        ),
        (
            // So the benchmarks cannot rot: every figure once, with small counts.
            "bench --quick",
            (|| {
                bench::run(bench::Options {
                    quick: true,
                    skip_setup: true,
                    ..bench::Options::default()
                })
            }),
        ),
    ];
    let mut failed = Vec::new();
    for (name, step) in &steps {
        eprintln!("xtask: == {name}");
        if let Err(e) = step() {
            eprintln!("xtask: {name} FAILED: {e:#}");
            failed.push(*name);
        }
    }
    if !failed.is_empty() {
        bail!("failed steps: {}", failed.join(", "));
    }
    eprintln!("xtask: all {} steps passed", steps.len());
    Ok(())
}
