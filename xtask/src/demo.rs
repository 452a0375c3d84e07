//! `cargo xtask demo`: a whole Flyte task on this machine (download, a runc main
//! container, the sidecar seeing its exit, upload), local files as the object store.
//!
//! Runs `setup`, builds `copilot` and the `copilot-demo` driver of the `integration-test`
//! crate (which owns the pod, container and process fixtures), and runs the driver with
//! `COPILOT_BIN` pointing at the fresh binary. The driver prints what happened and exits
//! non-zero if anything failed; it cleans up its cgroups and containers itself.
use std::{
    io::BufRead as _,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{cmd, setup};

#[derive(clap::Args, Debug, Default)]
pub struct Options {
    /// Skip `cargo xtask setup`.
    #[arg(long)]
    pub skip_setup: bool,
    /// Where the demo keeps its object store and volumes (wiped first).
    #[arg(long, default_value = "target/demo")]
    pub dir: PathBuf,
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    if !opts.skip_setup {
        setup::run(setup::Options::default())?;
    }
    let root = cmd::output(Command::new("id").arg("-u")).context("running id -u")?;
    if root.trim() != "0" {
        bail!("the demo needs root (cgroups, runc, eBPF): run it as root");
    }
    let copilot = build(&["-p", "copilot", "--bin", "copilot"], "copilot")?;
    let demo = build(
        &["-p", "integration-test", "--bin", "copilot-demo"],
        "copilot-demo",
    )?;
    let dir = if opts.dir.is_absolute() {
        opts.dir
    } else {
        cmd::workspace_root().join(opts.dir)
    };
    cmd::run(
        Command::new(demo)
            .arg(&dir)
            .env("COPILOT_BIN", &copilot)
            // The sidecar's own log lines are echoed by the driver; keep them to the story.
            .env("COPILOT_LOG", "info"),
    )
    .context("the demo failed (see above)")
}

/// `cargo build ARGS…`, returning the executable of target `name` that cargo reports.
fn build(args: &[&str], name: &str) -> anyhow::Result<PathBuf> {
    let mut command = Command::new("cargo");
    command
        .current_dir(cmd::workspace_root())
        .arg("build")
        .args(args)
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
            && msg["target"]["name"] == name
            && let Some(path) = msg["executable"].as_str()
        {
            executable = Some(PathBuf::from(path));
        }
    }
    let status = child.wait().context("waiting for cargo build")?;
    if !status.success() {
        bail!("building {name} failed: {status}");
    }
    executable.with_context(|| format!("cargo build did not report the {name} executable"))
}
