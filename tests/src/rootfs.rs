//! The busybox root filesystem the test containers run in, built once per test run.
use std::{
    hash::{DefaultHasher, Hasher as _},
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    sync::OnceLock,
};

use crate::env::{missing, random_hex, workspace_root};

/// The static C helpers (sources in `tests/helpers/`, built by `build.rs`), installed as
/// `/bin/<name>`:
/// - `leader_exit MS CODE`: the leader thread `pthread_exit`s; a second thread sleeps MS ms
///   and then `exit(CODE)`s the process.
/// - `spawner N CODE`: forks and execs `/bin/true` N times, one after the other, then exits CODE.
/// - `memhog`: allocates and touches 1 MiB at a time until the OOM killer ends it.
/// - `pause`: sleeps until SIGTERM/SIGINT (exit 0); the pod sandbox, comm `pause`.
/// - `nsrun`: runs a command as a pod without hostPID would (see its source).
/// - `exit_stamp`: prints `exit_ns <CLOCK_REALTIME ns>` and exits 0: a task's last command.
pub const HELPERS: &[&str] = &[
    "leader_exit",
    "spawner",
    "memhog",
    "pause",
    "nsrun",
    "exit_stamp",
];

const BUSYBOX: &str = "/bin/busybox";
/// busybox applets linked into `/bin`.
const APPLETS: &[&str] = &[
    "sh", "ash", "sleep", "true", "false", "echo", "cat", "kill", "ls", "ps", "mkdir", "rm",
    "touch", "env", "id", "wc", "seq", "yes", "head", "dd", "test", "[", "printf", "pidof",
];
/// Directories the container runtime mounts over or the tests bind-mount into (the
/// pods in `deploy/` and `tests/pods/` mount their volumes at the `var` and `sys` ones;
/// runc would otherwise create them in this shared directory).
const DIRS: &[&str] = &[
    "bin",
    "proc",
    "dev",
    "sys",
    "tmp",
    "etc",
    "ctl",
    "out",
    "in",
    "var/flyte/inputs",
    "var/flyte/outputs",
    "var/run/copilot",
    "var/run/copilot-status",
    "sys/fs/cgroup",
    "sys/kernel/btf",
    "sys/fs/bpf",
];

/// The rootfs directory, `<workspace>/target/integration/rootfs-<hash of its content>`.
///
/// Built at most once per test binary; reused across runs while busybox and the helpers
/// are unchanged. Built in a temporary directory and renamed into place, so a
/// half-built rootfs is never used.
pub fn rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| build("rootfs", &[]))
}

/// The copilot image of the pod runner: the busybox rootfs, the shared libraries the
/// `copilot` binary under test links (from `ldd`), and empty `/bin/flyte-copilot` and
/// `/bin/copilot` files, where the runner bind-mounts `$COPILOT_BIN` (read-only), so a
/// rebuilt binary needs no new image. Built once for the libraries of `binary`.
pub fn copilot_rootfs(binary: &Path) -> PathBuf {
    build("rootfs-copilot", &shared_libraries(binary))
}

/// The root filesystem of the copilot image under test (`cargo xtask image`'s archive,
/// [`crate::podman::image_archive`]): its one layer unpacked, plus the mount points of
/// [`DIRS`], which a container engine makes in the container's writable layer. Unpacked
/// once per layer digest under `<workspace>/target/integration/`.
pub fn image_rootfs(archive: &Path) -> ImageRoot {
    static ROOT: OnceLock<ImageRoot> = OnceLock::new();
    ROOT.get_or_init(|| unpack_image(archive)).clone()
}

/// An unpacked image: its root, and the user its config runs as (`User`, `uid:gid`).
#[derive(Debug, Clone)]
pub struct ImageRoot {
    pub root: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

fn unpack_image(archive: &Path) -> ImageRoot {
    let parent = workspace_root().join("target/integration");
    let work = parent.join(format!(".image-{}", random_hex(8)));
    std::fs::create_dir_all(&work).unwrap_or_else(|e| panic!("mkdir {}: {e}", work.display()));
    untar(archive, &work, false);
    let json = |path: PathBuf| -> serde_json::Value {
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let blob = |digest: &serde_json::Value| {
        let digest = digest.as_str().expect("a digest");
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        (work.join("blobs/sha256").join(hex), hex.to_owned())
    };
    let index = json(work.join("index.json"));
    let manifest = json(blob(&index["manifests"][0]["digest"]).0);
    let layers = manifest["layers"]
        .as_array()
        .expect("the manifest's layers");
    assert_eq!(
        layers.len(),
        1,
        "the copilot image has one layer: {manifest}"
    );
    let (layer, hex) = blob(&layers[0]["digest"]);
    let root = parent.join(format!("rootfs-image-{}", &hex[..16]));
    if !root.join("bin/copilot").exists() {
        let staging = parent.join(format!(".rootfs-image-{}", random_hex(8)));
        std::fs::create_dir_all(&staging).expect("staging dir");
        untar(&layer, &staging, true);
        for dir in DIRS {
            std::fs::create_dir_all(staging.join(dir)).expect("a mount point");
        }
        if std::fs::rename(&staging, &root).is_err() {
            // Another test binary put its copy in place first.
            let _ = std::fs::remove_dir_all(&staging);
        }
    }
    let config = json(blob(&manifest["config"]["digest"]).0);
    let user = config["config"]["User"]
        .as_str()
        .unwrap_or("0:0")
        .to_owned();
    let _ = std::fs::remove_dir_all(&work);
    let (uid, gid) = user.split_once(':').unwrap_or((&user, &user));
    let id = |s: &str| {
        s.parse::<u32>()
            .unwrap_or_else(|_| panic!("image user {user:?}"))
    };
    ImageRoot {
        root,
        uid: id(uid),
        gid: id(gid),
    }
}

fn untar(archive: &Path, into: &Path, gzip: bool) {
    let status = std::process::Command::new("tar")
        .arg(if gzip { "-xzf" } else { "-xf" })
        .arg(archive)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap_or_else(|e| missing(format!("running tar: {e}")));
    assert!(status.success(), "tar -x {}: {status}", archive.display());
}

/// The binaries an image runs as `/bin/<name>`, bind-mounted from the host.
pub const COPILOT_PATHS: &[&str] = &["/bin/flyte-copilot", "/bin/copilot"];

/// `(path, content)` of each library `ldd` lists for `binary`, at the same path.
fn shared_libraries(binary: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .unwrap_or_else(|e| missing(format!("running ldd {}: {e}", binary.display())));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux… (0x…)`.
            let path = line.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .map(|path| {
            let content = read(&path);
            (path, content)
        })
        .collect()
}

/// A static helper program the build script compiled (one of [`HELPERS`]).
pub fn helper_path(name: &str) -> PathBuf {
    Path::new(env!("HELPERS_DIR")).join(name)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        missing(format!(
            "cannot read {}: {e} (busybox-static installs /bin/busybox)",
            path.display()
        ))
    })
}

fn build(name: &str, extra: &[(PathBuf, Vec<u8>)]) -> PathBuf {
    let busybox = read(Path::new(BUSYBOX));
    let mut hasher = DefaultHasher::new();
    hasher.write(&busybox);
    for (path, content) in extra {
        hasher.write(path.as_os_str().as_encoded_bytes());
        hasher.write(content);
    }
    for name in HELPERS {
        hasher.write(name.as_bytes());
        hasher.write(&read(&helper_path(name)));
    }
    for applet in APPLETS.iter().chain(DIRS) {
        hasher.write(applet.as_bytes());
    }
    let parent = workspace_root().join("target/integration");
    let dir = parent.join(format!("{name}-{:016x}", hasher.finish()));
    if dir.join("bin/busybox").is_file() {
        return dir;
    }
    std::fs::create_dir_all(&parent)
        .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
    let tmp = parent.join(format!(".rootfs-tmp-{}", random_hex(8)));
    let result = populate(&tmp, &busybox, extra);
    if let Err(e) = result.and_then(|()| std::fs::rename(&tmp, &dir)) {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another test binary may have renamed its copy into place first.
        if !dir.join("bin/busybox").is_file() {
            panic!("building the rootfs {}: {e}", dir.display());
        }
    }
    dir
}

fn populate(root: &Path, busybox: &[u8], extra: &[(PathBuf, Vec<u8>)]) -> std::io::Result<()> {
    for d in DIRS {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    let bb = root.join("bin/busybox");
    std::fs::write(&bb, busybox)?;
    std::fs::set_permissions(&bb, std::fs::Permissions::from_mode(0o755))?;
    for applet in APPLETS {
        symlink("busybox", root.join("bin").join(applet))?;
    }
    for name in HELPERS {
        let dest = root.join("bin").join(name);
        std::fs::copy(helper_path(name), &dest)?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))?;
    }
    for (path, content) in extra {
        let dest = root.join(path.strip_prefix("/").unwrap_or(path));
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&dest, content)?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))?;
    }
    if !extra.is_empty() {
        for path in COPILOT_PATHS {
            std::fs::write(root.join(&path[1..]), b"")?;
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")?;
    std::fs::write(root.join("etc/group"), "root:x:0:\n")?;
    Ok(())
}
