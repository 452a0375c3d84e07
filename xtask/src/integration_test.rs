//! `cargo xtask integration-test [-- ARGS…]`: the privileged tests of `tests/`
//! (package `integration-test`) against a freshly built `copilot` binary and its
//! image (`cargo xtask image`, a static release build).
//!
//! The tests share the kernel (cgroups, BPF programs, runc state), so they run one at a
//! time. They need root with CAP_BPF; under `CI=true` (passed through) a missing
//! prerequisite fails the run rather than skipping.
//!
//! `cargo xtask integration-test vm [KERNEL…]` runs the tracer suite on other kernels in
//! qemu instead (see [`vm`]).
use std::{path::PathBuf, process::Command};

use crate::{cmd, image, setup};

mod vm;

#[derive(clap::Args, Debug, Default)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Options {
    #[command(subcommand)]
    pub command: Option<Sub>,
    /// Skip `cargo xtask setup` (it is quick when everything is installed).
    #[arg(long)]
    pub skip_setup: bool,
    /// Passed to the test binaries after `--test-threads=1`, e.g. a test name filter.
    #[arg(last = true)]
    pub test_args: Vec<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// The tracer suite in qemu VMs on Debian's 6.1 and 6.12 kernels and the host's.
    Vm(vm::Options),
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    let skip_setup = match &opts.command {
        Some(Sub::Vm(o)) => o.skip_setup,
        None => opts.skip_setup,
    };
    if !skip_setup {
        setup::run(setup::Options::default())?;
    }
    match opts.command {
        Some(Sub::Vm(o)) => vm::run(o),
        None => run_tests(&opts.test_args),
    }
}

/// The kernel matrix with its defaults (6.1, 6.12 and the host's kernel, where readable).
pub fn run_vm_matrix() -> anyhow::Result<()> {
    vm::run(vm::Options::default())
}

/// Builds copilot and its image, and runs the integration tests with `COPILOT_BIN`
/// pointing at the binary and `COPILOT_IMAGE` at the image archive (`tests/tests/image.rs`).
pub fn run_tests(test_args: &[String]) -> anyhow::Result<()> {
    let copilot = build_copilot()?;
    // A failed image build fails the image test (with this error above it), not the
    // rest; a run filtered to other tests skips the static build (minutes), and the
    // pod runner then bind-mounts `COPILOT_BIN` into a busybox root instead.
    let filters: Vec<&String> = test_args.iter().filter(|a| !a.starts_with('-')).collect();
    // The image test, and the pod runner's copilot containers, run the image.
    let wanted = filters.is_empty()
        || filters
            .iter()
            .any(|f| "image".contains(f.as_str()) || f.contains("pod"));
    let image = if wanted {
        match image::build(&image::Options::default()) {
            Ok(image) => image.path.display().to_string(),
            Err(e) => {
                eprintln!("xtask: building the image failed: {e:#}");
                String::new()
            }
        }
    } else {
        String::new()
    };
    fresh_node()?;
    eprintln!("xtask: COPILOT_BIN={}", copilot.display());
    eprintln!("xtask: COPILOT_IMAGE={image}");
    cmd::run(
        Command::new("cargo")
            .current_dir(cmd::workspace_root())
            .args(["test", "-p", "integration-test", "--no-fail-fast", "--"])
            .arg("--test-threads=1")
            .args(test_args)
            .env("COPILOT_BIN", &copilot)
            .env("COPILOT_IMAGE", image),
    )
}

/// The node-wide program sets that copilot pins under `/sys/fs/bpf/copilot`.
const NODE_SETS: &str = "/sys/fs/bpf/copilot";

/// Unpins every node-wide program set an earlier run or build left, so the suite
/// (and the bench) start from a node no copilot has run on. A set stays loaded and
/// attached while pinned, by design (later pods reuse it), so the sets of earlier
/// builds would otherwise cost every exec on this machine a little more each time.
pub(crate) fn fresh_node() -> anyhow::Result<()> {
    match std::fs::remove_dir_all(NODE_SETS) {
        Ok(()) => eprintln!("xtask: unpinned the node sets under {NODE_SETS}"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::Error::new(e).context(format!("removing {NODE_SETS}"))),
    }
    Ok(())
}

/// `cargo build -p copilot --bin copilot`, returning the executable cargo reports.
pub(crate) fn build_copilot() -> anyhow::Result<PathBuf> {
    cmd::cargo_build(&["-p", "copilot", "--bin", "copilot"], "copilot")
}
