//! `cargo xtask demo`: a whole Flyte task on this machine (download, a runc main
//! container, the sidecar seeing its exit, upload), local files as the object store.
//!
//! Runs `setup`, builds `copilot` and the `copilot-demo` driver of the `integration-test`
//! crate (which owns the pod, container and process fixtures), and runs the driver with
//! `COPILOT_BIN` pointing at the fresh binary. The driver prints what happened and exits
//! non-zero if anything failed; it cleans up its cgroups and containers itself.
use std::{path::PathBuf, process::Command};

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
    let copilot = cmd::cargo_build(&["-p", "copilot", "--bin", "copilot"], "copilot")?;
    let demo = cmd::cargo_build(
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
