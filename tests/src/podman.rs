//! podman (Debian's, rootful) with storage of its own, for the image test: the archive of
//! `cargo xtask image` loaded and run as a container engine would run it.
//!
//! Every podman state directory (images, containers, the libpod database, runtime files)
//! lives in one temporary folder, on the vfs driver, so a test touches nothing of the
//! machine's podman and leaves nothing behind: [`Podman`]'s `Drop` removes every container
//! and image it holds, the cgroups podman made (under a parent of the fixture's own, in
//! every hierarchy), then the folder. Containers run on runc with `--network none`.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use crate::{
    cgroup::{cgroup2_mount, v1_mounts},
    env::{missing, random_hex, workspace_root},
};

/// The image archive under test: `$COPILOT_IMAGE` (set by `cargo xtask integration-test`),
/// else `<target dir>/image/copilot.tar` (`cargo xtask image`'s default).
pub fn image_archive() -> PathBuf {
    let path = match std::env::var_os("COPILOT_IMAGE") {
        Some(p) if p.is_empty() => missing(
            "COPILOT_IMAGE is empty: `cargo xtask image` failed in this run (its error is \
             printed above the tests)",
        ),
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"))
            .join("image/copilot.tar"),
    };
    if !path.is_file() {
        missing(format!(
            "image archive {} does not exist (run `cargo xtask image`, or set COPILOT_IMAGE)",
            path.display()
        ));
    }
    path
}

/// A podman whose whole state lives in a temporary folder.
pub struct Podman {
    state: tempfile::TempDir,
    /// `--cgroup-parent` of every container (and of conmon, under `conmon/`).
    cgroup_parent: String,
}

impl Podman {
    /// Checks that podman runs, as root, and gives it an empty folder for its state.
    #[expect(
        clippy::new_without_default,
        reason = "a fixture that checks prerequisites and panics, not a default value"
    )]
    pub fn new() -> Self {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            missing("not running as root (rootful podman)");
        }
        match Command::new("podman").arg("--version").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => missing(format!("`podman --version` failed: {}", out.status)),
            Err(e) => missing(format!(
                "podman not found on PATH ({e}): `cargo xtask setup` installs it"
            )),
        }
        let state = tempfile::Builder::new()
            .prefix("copilot-podman-")
            .tempdir()
            .unwrap_or_else(|e| panic!("making podman's state folder: {e}"));
        Self {
            state,
            cgroup_parent: format!("/copilot-podman-{}", random_hex(4)),
        }
    }

    /// `podman` with this fixture's state folders, vfs storage and no journald.
    pub fn command(&self) -> Command {
        let dir = self.state.path();
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(dir.join("run"))
            .arg("--tmpdir")
            .arg(dir.join("tmp"))
            .args([
                "--storage-driver=vfs",
                "--cgroup-manager=cgroupfs",
                "--events-backend=none",
            ])
            .stdin(Stdio::null());
        cmd
    }

    /// `podman run --rm ARGS…`, with no network and in this fixture's cgroup parent.
    ///
    /// The limits are explicit: podman's defaults (nofile and nproc far above the host's)
    /// need CAP_SYS_RESOURCE, which this machine kind does not give root, so runc would
    /// fail with "error setting rlimit type 7: operation not permitted".
    pub fn run(&self, args: &[&str]) -> Output {
        let parent = format!("--cgroup-parent={}", self.cgroup_parent);
        let mut all = vec![
            "run",
            "--rm",
            "--network=none",
            "--ulimit=nofile=1024:1024",
            "--ulimit=nproc=1024:1024",
            &parent,
        ];
        all.extend_from_slice(args);
        self.output(&all)
    }

    /// Runs `podman ARGS…` and returns its output, whatever its exit status.
    pub fn output(&self, args: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.args(args);
        cmd.output()
            .unwrap_or_else(|e| panic!("spawning podman {args:?}: {e}"))
    }

    /// Runs `podman ARGS…`, panicking with its stderr unless it exits 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `podman load -i ARCHIVE`; returns the id of the one image it loaded.
    pub fn load(&self, archive: &Path) -> String {
        let path = archive.display().to_string();
        self.ok(&["load", "--quiet", "-i", &path]);
        let ids = self.ok(&["images", "--quiet", "--no-trunc"]);
        let ids: Vec<&str> = ids.lines().collect();
        assert_eq!(ids.len(), 1, "one image after loading {path}: {ids:?}");
        ids[0].to_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers first (they hold their image), then images; the folder goes with
        // `state`. Errors only matter if something is left, which the folder shows.
        for args in [
            &["rm", "--all", "--force"][..],
            &["rmi", "--all", "--force"],
        ] {
            let _ = self.command().args(args).stdout(Stdio::null()).status();
        }
        let hierarchies = v1_mounts()
            .into_iter()
            .map(|(mount, _)| mount)
            .chain([cgroup2_mount().to_path_buf()]);
        for mount in hierarchies {
            remove_cgroup_tree(&mount.join(self.cgroup_parent.trim_start_matches('/')));
        }
    }
}

/// Removes an (emptied) cgroup and every cgroup below it, deepest first.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
        if let Err(e) = std::fs::remove_dir(dir) {
            eprintln!("podman fixture: removing cgroup {}: {e}", dir.display());
        }
    }
}
