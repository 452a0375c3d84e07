//! `cargo xtask setup`: installs, idempotently, what a fresh machine of this kind lacks.
//!
//! Each step checks first and prints one line; when everything is present the whole
//! command takes well under a second (no `apt-get update`, no network).
use std::{collections::BTreeMap, process::Command};

use anyhow::{Context as _, bail};

use crate::cmd;

/// Debian packages the build and the tests need.
///
/// - `llvm-22-dev libzstd-dev zlib1g-dev libpolly-22-dev`: `bpf-linker` links against LLVM 22.
/// - `runc busybox-static gcc libc6-dev`: the integration tests run busybox containers with
///   runc and compile static C helpers (`gcc -static` needs `libc.a` from libc6-dev).
/// - `rclone`: copies test data to the S3 server of the storage tests.
/// - `python3-venv`: `python3 -m venv` for moto when python3 is Debian's.
/// - `qemu-system-x86`: the kernel matrix (`cargo xtask integration-test vm`) boots VMs.
/// - `podman`: the image test loads `cargo xtask image`'s archive and runs it (rootful, on
///   runc, with its own vfs storage under the test's folder and no network); it brings
///   `conmon` and `golang-github-containers-common` (`/etc/containers/policy.json`).
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "libpolly-22-dev",
    "runc",
    "busybox-static",
    "rclone",
    "gcc",
    "libc6-dev",
    "python3-venv",
    "qemu-system-x86",
    "podman",
];

/// The bpf-linker release that builds against Debian's LLVM 22 on this machine kind.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// moto's S3 server for the storage tests; pinned so every machine serves the same API.
const MOTO_VERSION: &str = "5.2.5";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// flytekit, Flyte's Python SDK: the tests' real client (makes inputs, reads outputs).
const FLYTEKIT_VERSION: &str = "1.16.4";
/// cargo-fuzz, which builds and runs the libFuzzer targets in `fuzz/`.
const CARGO_FUZZ_VERSION: &str = "0.13.1";
/// azurite, Microsoft's Azure Storage emulator (npm), for the Azure Blob tests; the newest
/// release that supports the machine's Node.js 20 (3.36 and later want 22).
const AZURITE_VERSION: &str = "3.35.0";
/// gcp-storage-emulator (PyPI), a Google Cloud Storage emulator, for the GCS tests
/// (behind a header shim of the tests' own: `tests/src/gcs.rs`).
const GCS_EMULATOR_VERSION: &str = "2026.7.19";

#[derive(clap::Args, Debug, Default)]
pub struct Options {
    /// Only report what is missing and what would be run; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Check (and install) this Debian package as well; repeatable. Mainly to exercise the
    /// "missing" path with `--dry-run`.
    #[arg(long = "also-apt", value_name = "PACKAGE", hide = true)]
    pub also_apt: Vec<String>,
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    apt_packages(&opts)?;
    rust_src(&opts)?;
    bpf_linker(&opts)?;
    cargo_fuzz(&opts)?;
    moto(&opts)?;
    flytekit(&opts)?;
    azurite(&opts)?;
    gcs_emulator(&opts)?;
    bpffs(&opts)?;
    Ok(())
}

fn done(opts: &Options) -> &'static str {
    if opts.dry_run {
        "done (dry run: nothing changed)"
    } else {
        "done"
    }
}

fn step(name: &str, what: &str) {
    println!("setup: {name:<12} {what}");
}

/// Runs `command`, or only prints it under `--dry-run`.
fn act(opts: &Options, command: &mut Command) -> anyhow::Result<()> {
    if opts.dry_run {
        println!("setup:              would run: {}", cmd::display(command));
        Ok(())
    } else {
        cmd::run(command)
    }
}

/// Which of `packages` are not fully installed, per `dpkg-query`.
///
/// `dpkg-query -W` prints nothing (and exits 1) for a package it has never heard of, and
/// `not-installed`/`config-files` for one that was removed, so both count as missing.
fn missing_packages(packages: &[&str]) -> anyhow::Result<Vec<String>> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package}\t${db:Status-Status}\n"])
        .args(packages)
        .output()
        .context("running dpkg-query (is this a Debian machine?)")?;
    let status: BTreeMap<&str, &str> = std::str::from_utf8(&out.stdout)
        .context("dpkg-query printed non-UTF-8")?
        .lines()
        .filter_map(|line| line.split_once('\t'))
        // Multi-arch packages are listed as `name:arch`.
        .map(|(name, status)| (name.split(':').next().unwrap_or(name), status))
        .collect();
    Ok(packages
        .iter()
        .filter(|p| status.get(**p) != Some(&"installed"))
        .map(|p| p.to_string())
        .collect())
}

fn apt_packages(opts: &Options) -> anyhow::Result<()> {
    let mut wanted: Vec<&str> = APT_PACKAGES.to_vec();
    wanted.extend(opts.also_apt.iter().map(String::as_str));
    let missing = missing_packages(&wanted)?;
    if missing.is_empty() {
        step(
            "apt",
            &format!("already present ({} packages)", wanted.len()),
        );
        return Ok(());
    }
    step("apt", &format!("installing {}", missing.join(" ")));
    act(
        opts,
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    act(
        opts,
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    if !opts.dry_run {
        let still = missing_packages(&wanted)?;
        if !still.is_empty() {
            bail!(
                "apt-get install left these packages missing: {}",
                still.join(" ")
            );
        }
    }
    step("apt", done(opts));
    Ok(())
}

fn rust_src(opts: &Options) -> anyhow::Result<()> {
    let installed = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .context("listing nightly's components (the nightly toolchain must be installed)")?;
    // Installed components are listed with their target triple, except rust-src.
    if installed.lines().any(|l| l.trim() == "rust-src") {
        step("rust-src", "already present (nightly)");
        return Ok(());
    }
    step("rust-src", "installing for nightly");
    act(
        opts,
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
    )?;
    step("rust-src", done(opts));
    Ok(())
}

fn bpf_linker(opts: &Options) -> anyhow::Result<()> {
    if cmd::succeeds("bpf-linker", &["--version"]) {
        step("bpf-linker", "already present");
        return Ok(());
    }
    step(
        "bpf-linker",
        &format!("building {BPF_LINKER_VERSION} against LLVM 22 (minutes)"),
    );
    // Without LLVM_PREFIX, bpf-linker's build script fails with "unable to find library
    // -lLLVM": Debian keeps libLLVM under /usr/lib/llvm-22/lib, not on the linker path.
    act(
        opts,
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX),
    )?;
    if !opts.dry_run && !cmd::succeeds("bpf-linker", &["--version"]) {
        bail!(
            "bpf-linker was installed but `bpf-linker --version` fails: is ~/.cargo/bin on PATH?"
        );
    }
    step("bpf-linker", done(opts));
    Ok(())
}

fn cargo_fuzz(opts: &Options) -> anyhow::Result<()> {
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION)
        });
    if installed {
        step("cargo-fuzz", "already present");
        return Ok(());
    }
    step(
        "cargo-fuzz",
        &format!("installing {CARGO_FUZZ_VERSION} (a minute)"),
    );
    act(
        opts,
        Command::new("cargo").args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ]),
    )?;
    step("cargo-fuzz", done(opts));
    Ok(())
}

/// A Python package pinned in its own venv under `target/`.
struct Venv {
    /// The step's name, and the venv's: `target/venv-<name>`.
    name: &'static str,
    /// The pip requirement, e.g. `moto[server]==5.2.5`.
    requirement: String,
    /// Arguments to the venv's python that exit 0 once the package is usable.
    check: Vec<String>,
}

impl Venv {
    fn ready(&self, python: &std::path::Path) -> bool {
        let args: Vec<&str> = self.check.iter().map(String::as_str).collect();
        cmd::succeeds(python, &args)
    }

    fn install(&self, opts: &Options) -> anyhow::Result<()> {
        let venv = cmd::workspace_root()
            .join("target")
            .join(format!("venv-{}", self.name));
        let python = venv.join("bin").join("python");
        if self.ready(&python) {
            step(self.name, &format!("already present ({})", venv.display()));
            return Ok(());
        }
        step(
            self.name,
            &format!("installing {} into {}", self.requirement, venv.display()),
        );
        act(
            opts,
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
        )?;
        act(
            opts,
            Command::new(venv.join("bin").join("pip")).args(["install", "-q", &self.requirement]),
        )?;
        if !opts.dry_run && !self.ready(&python) {
            bail!(
                "pip installed {} into {} but it is not usable",
                self.requirement,
                venv.display()
            );
        }
        step(self.name, done(opts));
        Ok(())
    }
}

fn flytekit(opts: &Options) -> anyhow::Result<()> {
    Venv {
        name: "flytekit",
        requirement: format!("flytekit=={FLYTEKIT_VERSION}"),
        check: vec![
            "-c".into(),
            format!("import flytekit, sys; sys.exit(flytekit.__version__ != {FLYTEKIT_VERSION:?})"),
        ],
    }
    .install(opts)
}

fn moto(opts: &Options) -> anyhow::Result<()> {
    Venv {
        name: "moto",
        requirement: format!("moto[server]=={MOTO_VERSION}"),
        // The server binary the tests start (`tests/src/moto.rs`).
        check: vec![
            "-c".into(),
            format!("import moto, shutil, sys; sys.exit(moto.__version__ != {MOTO_VERSION:?} or not shutil.which('moto_server', path=sys.prefix + '/bin'))"),
        ],
    }
    .install(opts)
}

fn gcs_emulator(opts: &Options) -> anyhow::Result<()> {
    Venv {
        name: "gcs",
        requirement: format!("gcp-storage-emulator=={GCS_EMULATOR_VERSION}"),
        // The version pip recorded, and the command the tests start (`tests/src/gcs.rs`).
        check: vec![
            "-c".into(),
            format!("import importlib.metadata as m, shutil, sys; sys.exit(m.version('gcp-storage-emulator') != {GCS_EMULATOR_VERSION:?} or not shutil.which('gcp-storage-emulator', path=sys.prefix + '/bin'))"),
        ],
    }
    .install(opts)
}

/// azurite under `target/azurite`, with the machine's Node.js and npm (this machine
/// kind has them; Debian's nodejs is older than azurite supports).
fn azurite(opts: &Options) -> anyhow::Result<()> {
    let prefix = cmd::workspace_root().join("target/azurite");
    let package = prefix.join("node_modules/azurite/package.json");
    let installed = std::fs::read_to_string(&package)
        .is_ok_and(|p| p.contains(&format!("\"version\": \"{AZURITE_VERSION}\"")));
    if installed {
        step(
            "azurite",
            &format!("already present ({})", prefix.display()),
        );
        return Ok(());
    }
    if !cmd::succeeds("npm", &["--version"]) {
        bail!(
            "npm is missing: the Azure tests run azurite, an npm package (install Node.js and npm)"
        );
    }
    step(
        "azurite",
        &format!(
            "installing azurite@{AZURITE_VERSION} into {}",
            prefix.display()
        ),
    );
    act(
        opts,
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg(format!("azurite@{AZURITE_VERSION}")),
    )?;
    step("azurite", done(opts));
    Ok(())
}

/// Where Kubernetes nodes (systemd) mount the BPF filesystem.
const BPFFS: &str = "/sys/fs/bpf";

/// Mounts bpffs at `/sys/fs/bpf` when it is not mounted, as systemd does on every
/// Kubernetes node: copilot pins its node-wide program set there. A fresh machine
/// of this kind boots without it; copilot would then fall back to programs of its
/// own per pod, and the suite's node-scale tests would not test the node's set.
/// Checked in `/proc/self/mountinfo`, not by listing the folder.
fn bpffs(opts: &Options) -> anyhow::Result<()> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    if mounted_at(&mountinfo, "bpf", BPFFS) {
        step("bpffs", &format!("already mounted ({BPFFS})"));
        return Ok(());
    }
    step("bpffs", &format!("mounting at {BPFFS}"));
    act(
        opts,
        Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]),
    )
    .context("mounting bpffs (needs root)")?;
    step("bpffs", done(opts));
    Ok(())
}

/// Whether `mountinfo` (the text of `/proc/self/mountinfo`) has a `fstype` mount at `target`.
fn mounted_at(mountinfo: &str, fstype: &str, target: &str) -> bool {
    mountinfo.lines().any(|line| {
        let mount_point = line.split(' ').nth(4);
        // The filesystem type follows the " - " separator after the optional fields.
        let fs = line
            .split(" - ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next());
        mount_point == Some(target) && fs == Some(fstype)
    })
}

#[cfg(test)]
mod tests {
    use super::mounted_at;

    const MOUNTINFO: &str = "\
24 29 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw
31 24 0:12 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:13 - bpf bpf rw,mode=700
40 24 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_a_mount_by_type_and_place() {
        assert!(mounted_at(MOUNTINFO, "bpf", "/sys/fs/bpf"));
        assert!(mounted_at(MOUNTINFO, "cgroup2", "/sys/fs/cgroup/unified"));
    }

    #[test]
    fn another_type_or_place_is_not_a_mount() {
        assert!(!mounted_at(MOUNTINFO, "bpf", "/sys/fs/bpf/copilot"));
        assert!(!mounted_at(MOUNTINFO, "sysfs", "/sys/fs/bpf"));
    }
}
