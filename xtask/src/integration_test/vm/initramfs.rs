//! The VM's initramfs: busybox, runc, copilot, the integration-test executables and
//! everything they load, at the same absolute paths as on the host.
//!
//! Same paths, because the test crate bakes some in at compile time: `HELPERS_DIR` (its
//! build script's `OUT_DIR`, holding the static C helpers) and the workspace root (the
//! fixtures build the container rootfs under `<workspace>/target/integration`, which the
//! guest's writable root lets them do). Symlinks on the way (`/lib64 → usr/lib64`, the
//! loader's own link) are reproduced, not flattened, so the ELF interpreter path and
//! `ldd`'s paths resolve in the guest exactly as on the host.
use std::{
    io::BufRead as _,
    os::unix::fs::PermissionsExt as _,
    path::{Component, Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use super::cpio::Archive;
use crate::cmd;

/// The init script (busybox sh).
const INIT: &str = include_str!("init.sh");

/// Tests of the `tracer` suite that need what a pure cgroup v2 VM does not have; they run
/// in the VM's first phase, with a v1 memory hierarchy mounted, where the kernel has one.
pub const TRACER_V1_ONLY: &[&str] = &["bad_input_pod_cgroup_in_a_cgroup_v1_hierarchy"];
/// Fixture tests that check the hybrid host's v1 memory directories (the pure-v2 VM has
/// none; the v2 OOM path is covered by the tracer's `oom_kill`).
pub const FIXTURES_V1_ONLY: &[&str] = &[
    "memory_limit_oom_kills_memhog",
    "dropping_the_pod_kills_containers_and_removes_v1_and_v2_dirs",
];

/// What the guest runs.
pub struct Payload {
    pub copilot: PathBuf,
    pub tracer: PathBuf,
    /// The node-scale suite (`tests/tests/node.rs`): the shared program set on this kernel.
    pub node: PathBuf,
    pub fixtures: Option<PathBuf>,
    pub helpers_dir: PathBuf,
    /// Extra libtest arguments for the tracer suite (a name filter, `--skip …`).
    pub tracer_args: Vec<String>,
}

/// Builds copilot and the integration-test executables (with cargo's default or the
/// caller's `CARGO_TARGET_DIR`), returning what the guest needs.
pub fn build_payload(tracer_args: Vec<String>, fixtures: bool) -> anyhow::Result<Payload> {
    let copilot = crate::integration_test::build_copilot()?;
    let mut command = Command::new("cargo");
    command
        .current_dir(cmd::workspace_root())
        .args(["test", "-p", "integration-test", "--no-run"])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    eprintln!("xtask: $ {}", cmd::display(&command));
    let mut child = command.spawn().context("spawning cargo test --no-run")?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let (mut tracer, mut node, mut fixtures_exe, mut helpers_dir) = (None, None, None, None);
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's output")?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let package = msg["package_id"].as_str().unwrap_or_default();
        // `path+file:///…/tests#integration-test@0.1.0`
        if !package.contains("integration-test@") {
            continue;
        }
        match msg["reason"].as_str() {
            Some("compiler-artifact") if msg["profile"]["test"] == true => {
                let exe = msg["executable"].as_str().map(PathBuf::from);
                match msg["target"]["name"].as_str() {
                    Some("tracer") => tracer = exe,
                    Some("node") => node = exe,
                    Some("fixtures") => fixtures_exe = exe,
                    _ => {}
                }
            }
            Some("build-script-executed") => {
                helpers_dir = msg["out_dir"].as_str().map(PathBuf::from);
            }
            _ => {}
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!("building the integration tests failed: {status}");
    }
    Ok(Payload {
        copilot,
        tracer: tracer.context("cargo did not report the `tracer` test executable")?,
        node: node.context("cargo did not report the `node` test executable")?,
        fixtures: if fixtures {
            Some(fixtures_exe.context("cargo did not report the `fixtures` test executable")?)
        } else {
            None
        },
        helpers_dir: helpers_dir
            .context("cargo did not report integration-test's build script OUT_DIR")?,
        tracer_args,
    })
}

/// Writes the initramfs to `out`. `staging` holds debug-stripped copies of the Rust
/// executables (a debug copilot is ~160 MiB, ~40 MiB without debug info; the guest
/// unpacks and copies every byte under emulation).
pub fn write(payload: &Payload, staging: &Path, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(staging).with_context(|| format!("creating {}", staging.display()))?;
    let mut a = Archive::new();
    let mut host = HostFiles::default();

    // busybox, with every applet as a symlink (installing them at boot costs seconds
    // under emulation).
    let busybox = Path::new("/bin/busybox");
    host.add(&mut a, busybox)?;
    let busybox_real = std::fs::canonicalize(busybox)?;
    let applets = cmd::output(Command::new(busybox).arg("--list-full"))
        .context("busybox --list-full (install busybox-static: `cargo xtask setup`)")?;
    for applet in applets.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let guest = host_resolved(&Path::new("/").join(applet));
        if !a.contains(&guest) {
            a.symlink(&guest, &busybox_real);
        }
    }

    let runc = which("runc")?;
    host.add(&mut a, &runc)?;
    host.add_libs(&mut a, &runc)?;

    let mut exes = vec![&payload.copilot, &payload.tracer, &payload.node];
    exes.extend(&payload.fixtures);
    for exe in exes {
        let stripped = staging.join(exe.file_name().context("executable without a name")?);
        cmd::run(
            Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(&stripped)
                .arg(exe),
        )?;
        host.add_libs(&mut a, exe)?;
        a.file(exe, &stripped, 0o755);
    }
    // Every static helper the build script made (the fixtures read them from
    // `HELPERS_DIR` when they build the container rootfs).
    let helpers = std::fs::read_dir(&payload.helpers_dir)
        .with_context(|| format!("listing {}", payload.helpers_dir.display()))?;
    for entry in helpers {
        let path = entry?.path();
        if path.is_file() {
            host.add(&mut a, &path)?;
        }
    }

    a.char_dev("/dev/console", 0o600, 5, 1);
    a.char_dev("/dev/null", 0o666, 1, 3);
    for d in ["/proc", "/sys", "/tmp", "/run", "/root", "/etc"] {
        a.dir(d, 0o755);
    }
    a.data("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644);
    a.data("/etc/group", "root:x:0:\n", 0o644);
    a.data("/init", INIT, 0o755);
    let mut fixture_skips = String::new();
    for t in FIXTURES_V1_ONLY {
        fixture_skips.push_str(&format!(" --skip {t}"));
    }
    let env = format!(
        "COPILOT_BIN={}\nTRACER={}\nNODE={}\nFIXTURES={}\nHELPERS_DIR={}\nTRACER_FILTER='{}'\nFIXTURES_FILTER='{}'\n",
        payload.copilot.display(),
        payload.tracer.display(),
        payload.node.display(),
        payload
            .fixtures
            .as_ref()
            .map(|f| f.display().to_string())
            .unwrap_or_default(),
        payload.helpers_dir.display(),
        tracer_filter(&payload.tracer_args).join(" "),
        fixture_skips.trim(),
    );
    a.data("/etc/copilot-vm.env", env, 0o644);
    a.write(out)
}

/// The tracer suite's arguments in the VM's main phase: the user's, and skips for the
/// tests that ran in the v1 phase.
fn tracer_filter(user: &[String]) -> Vec<String> {
    let mut args: Vec<String> = user
        .iter()
        // The filter goes through the init script's word splitting.
        .map(|a| a.replace('\'', ""))
        .collect();
    for t in TRACER_V1_ONLY {
        args.push("--skip".into());
        args.push((*t).into());
    }
    args
}

fn which(program: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} is not on PATH (run `cargo xtask setup`)"))
}

/// `path` with its directories' symlinks resolved as on the host (the file itself need
/// not exist): `/bin/sh` → `/usr/bin/sh` when `/bin → usr/bin`.
fn host_resolved(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .unwrap_or_else(|_| dir.to_path_buf())
            .join(name),
        _ => path.to_path_buf(),
    }
}

/// Host files copied into the archive at their own paths, symlinks included.
#[derive(Default)]
struct HostFiles {
    done: std::collections::BTreeSet<PathBuf>,
}

impl HostFiles {
    /// Adds `path`; every symlink met on the way (in a directory or the file itself) is
    /// added as a symlink, and what it points to is added too.
    fn add(&mut self, a: &mut Archive, path: &Path) -> anyhow::Result<()> {
        let path = normalize(path);
        if !self.done.insert(path.clone()) {
            return Ok(());
        }
        let mut prefix = PathBuf::from("/");
        let comps: Vec<Component> = path.components().skip(1).collect();
        for (i, comp) in comps.iter().enumerate() {
            let here = prefix.join(comp);
            let meta = std::fs::symlink_metadata(&here)
                .with_context(|| format!("stat {} (for {})", here.display(), path.display()))?;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&here)?;
                a.symlink(&here, &target);
                let mut resolved = prefix.join(&target);
                for rest in &comps[i + 1..] {
                    resolved.push(rest);
                }
                return self.add(a, &resolved);
            }
            if i + 1 == comps.len() {
                if !meta.is_file() {
                    bail!("{} is not a regular file", here.display());
                }
                a.file(&here, &here, meta.permissions().mode() & 0o7777);
            }
            prefix = here;
        }
        Ok(())
    }

    /// Adds the shared libraries `exe` loads, per `ldd`.
    fn add_libs(&mut self, a: &mut Archive, exe: &Path) -> anyhow::Result<()> {
        let out = cmd::output(Command::new("ldd").arg(exe))?;
        for line in out.lines() {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)`,
            // `/lib64/ld-linux-x86-64.so.2 (0x…)`, `linux-vdso.so.1 (0x…)`.
            let lib = match line.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => line.trim(),
            };
            let lib = lib.split(" (").next().unwrap_or_default();
            if lib.starts_with('/') {
                self.add(a, Path::new(lib))?;
            }
        }
        Ok(())
    }
}

/// Removes `.` and resolves `..` lexically (only used on paths whose directories were
/// already resolved).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}
