//! Pod-like cgroups in the cgroup v2 tree, laid out as the kubelet does.
use std::{
    io::ErrorKind,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::OnceLock,
    time::{Duration, Instant},
};

use crate::env::{missing, random_hex};

/// The cgroup v2 mount point, from `/proc/self/mountinfo` (`/sys/fs/cgroup/unified` on
/// this hybrid host, `/sys/fs/cgroup` on a pure v2 one).
pub fn cgroup2_mount() -> &'static Path {
    static MOUNT: OnceLock<PathBuf> = OnceLock::new();
    MOUNT.get_or_init(|| {
        mounts()
            .into_iter()
            .find(|(fstype, _, _)| fstype == "cgroup2")
            .map(|(_, path, _)| path)
            .unwrap_or_else(|| missing("no cgroup2 filesystem in /proc/self/mountinfo"))
    })
}

/// The cgroup v1 hierarchies: (mount point, super options such as `rw,memory`).
pub fn v1_mounts() -> Vec<(PathBuf, String)> {
    mounts()
        .into_iter()
        .filter(|(fstype, _, _)| fstype == "cgroup")
        .map(|(_, path, opts)| (path, opts))
        .collect()
}

/// (fstype, mount point, super options) of every mount, from `/proc/self/mountinfo`.
fn mounts() -> Vec<(String, PathBuf, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_else(|e| missing(format!("reading /proc/self/mountinfo: {e}")));
    text.lines()
        .filter_map(|line| {
            // `36 25 0:31 / /sys/fs/cgroup/memory rw,relatime shared:14 - cgroup cgroup rw,memory`
            let (pre, post) = line.split_once(" - ")?;
            let mount_point = pre.split(' ').nth(4)?;
            let mut post = post.split(' ');
            let fstype = post.next()?.to_string();
            let opts = post.nth(1).unwrap_or_default().to_string();
            Some((fstype, PathBuf::from(unescape(mount_point)), opts))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        match u8::from_str_radix(rest.get(i + 1..i + 4).unwrap_or(""), 8) {
            Ok(b) => {
                out.push(b as char);
                rest = &rest[i + 4..];
            }
            Err(_) => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// How the kubelet names pod and container cgroups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// cgroupfs driver: `kubepods/besteffort/pod<uid>/<64-hex id>`.
    Cgroupfs,
    /// cgroupfs driver, a Guaranteed pod (no QoS level): `kubepods/pod<uid>/<64-hex id>`,
    /// one level higher than the others.
    Guaranteed,
    /// systemd driver with containerd:
    /// `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`.
    Systemd,
    /// A pod cgroup outside the kubelet's top cgroups, as a hand-made one would
    /// be: `copilot-pods/pod<uid>/<64-hex id>`, or `copilot-pods-<n>/…` for
    /// `Outside(n)` with n > 0 (the programs' gate must admit its top once a
    /// copilot registers it). Not in [`Layout::ALL`].
    Outside(u8),
}

impl Layout {
    pub const ALL: [Layout; 3] = [Layout::Cgroupfs, Layout::Systemd, Layout::Guaranteed];
}

/// A pod-like cgroup in the cgroup v2 tree with a random pod uid; removed on drop with
/// everything in it.
///
/// Drop kills every process in the subtree (`cgroup.kill`), waits until it is empty,
/// removes the directories deepest first, then does the same for the directories runc
/// created at the same relative path in each cgroup v1 hierarchy (runc puts a container
/// into every v1 controller too), and finally removes the parent directories this
/// fixture created (`kubepods/besteffort`) if they are empty, all but the top one.
#[derive(Debug)]
pub struct PodCgroup {
    layout: Layout,
    uid: String,
    /// Relative to the cgroup root, with a leading `/` (what runc's `cgroupsPath` wants).
    rel: PathBuf,
    path: PathBuf,
    /// Parent directories (relative) that this fixture created, deepest first.
    created_parents: Vec<PathBuf>,
}

impl PodCgroup {
    pub fn new(layout: Layout) -> Self {
        crate::env::preflight();
        let h = random_hex(16);
        let uid = format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        );
        let rel = match layout {
            Layout::Cgroupfs => PathBuf::from(format!("/kubepods/besteffort/pod{uid}")),
            Layout::Guaranteed => PathBuf::from(format!("/kubepods/pod{uid}")),
            Layout::Outside(0) => PathBuf::from(format!("/copilot-pods/pod{uid}")),
            Layout::Outside(n) => PathBuf::from(format!("/copilot-pods-{n}/pod{uid}")),
            Layout::Systemd => PathBuf::from(format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
                uid.replace('-', "_")
            )),
        };
        let root = cgroup2_mount();
        let mut created_parents = Vec::new();
        let mut cur = PathBuf::from("/");
        for comp in rel.components().skip(1) {
            cur.push(comp);
            let abs = root.join(cur.strip_prefix("/").expect("absolute"));
            match std::fs::create_dir(&abs) {
                // A top cgroup (`kubepods`, `kubepods.slice`) stays, as the kubelet
                // makes it once and never removes it: a new one would have a new id,
                // unknown to the node's programs until a copilot starts.
                Ok(()) if cur.components().count() > 2 => created_parents.push(cur.clone()),
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => panic!("creating cgroup {}: {e}", abs.display()),
            }
        }
        // The pod directory itself is removed as a subtree, not as a parent.
        created_parents.pop();
        created_parents.reverse();
        let path = root.join(rel.strip_prefix("/").expect("absolute"));
        PodCgroup {
            layout,
            uid,
            rel,
            path,
            created_parents,
        }
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The pod uid (with dashes).
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// Absolute path in the cgroup v2 mount; what `copilot trace --pod-cgroup` takes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Path relative to the cgroup root, starting with `/`.
    pub fn rel(&self) -> &Path {
        &self.rel
    }

    /// The cgroup id (inode number of the cgroup directory), as `bpf_get_current_cgroup_id`
    /// and the tracer's `ready` line report it.
    pub fn id(&self) -> u64 {
        std::fs::metadata(&self.path)
            .unwrap_or_else(|e| panic!("stat {}: {e}", self.path.display()))
            .ino()
    }

    /// Directory name of a container cgroup with container id `id` in this layout.
    pub fn container_dir_name(&self, id: &str) -> String {
        match self.layout {
            Layout::Cgroupfs | Layout::Guaranteed | Layout::Outside(_) => id.to_string(),
            Layout::Systemd => format!("cri-containerd-{id}.scope"),
        }
    }

    /// Every pid in the pod's subtree (v2 `cgroup.procs` of each cgroup).
    pub fn procs(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for dir in subtree(&self.path) {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
        }
        pids
    }

    fn cleanup(&self) {
        kill_subtree(&self.path);
        remove_subtree(&self.path);
        let rel = self.rel.strip_prefix("/").expect("absolute");
        for (mount, _) in v1_mounts() {
            remove_subtree(&mount.join(rel));
        }
        for parent in &self.created_parents {
            let rel = parent.strip_prefix("/").expect("absolute");
            let _ = std::fs::remove_dir(cgroup2_mount().join(rel));
            for (mount, _) in v1_mounts() {
                let _ = std::fs::remove_dir(mount.join(rel));
            }
        }
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// `dir` and every cgroup below it, parents before children.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = std::fs::read_dir(&out[i]) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(entry.path());
                }
            }
        }
        i += 1;
    }
    out
}

/// Whether a v2 cgroup has live processes in its subtree (`cgroup.events` `populated`).
pub(crate) fn populated(dir: &Path) -> std::io::Result<bool> {
    let text = std::fs::read_to_string(dir.join("cgroup.events"))?;
    Ok(text.lines().any(|l| l == "populated 1"))
}

/// SIGKILLs everything in a v2 subtree and waits (up to 5 s) until it is empty.
fn kill_subtree(dir: &Path) {
    if !dir.exists() {
        return;
    }
    // cgroup.kill (Linux 5.14) kills the whole subtree atomically, also processes forking
    // meanwhile; without it, kill what cgroup.procs lists, repeatedly.
    let has_kill = std::fs::write(dir.join("cgroup.kill"), "1").is_ok();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match populated(dir) {
            Ok(false) | Err(_) => return,
            Ok(true) => {}
        }
        if Instant::now() > deadline {
            eprintln!(
                "warning: cgroup {} still populated 5 s after kill",
                dir.display()
            );
            return;
        }
        if !has_kill {
            for d in subtree(dir) {
                for pid in std::fs::read_to_string(d.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse::<i32>().ok())
                {
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Removes a cgroup directory and its children, deepest first. Errors are logged, not
/// raised: this runs in `Drop`.
fn remove_subtree(dir: &Path) {
    if !dir.exists() {
        return;
    }
    for d in subtree(dir).iter().rev() {
        // A cgroup whose last process just exited can be briefly busy (EBUSY).
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match std::fs::remove_dir(d) {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    eprintln!("warning: removing cgroup {}: {e}", d.display());
                    break;
                }
            }
        }
    }
}

/// A memory cgroup with a limit (v1 where the memory controller is there, as on
/// this hybrid host, else v2), for running a command under the memory limit a
/// pod would give it; removed on drop.
pub struct MemoryCgroup {
    dir: PathBuf,
    v1: bool,
}

impl MemoryCgroup {
    pub fn new(limit: u64) -> Self {
        let name = format!("copilot-test-mem-{}", random_hex(6));
        let v1 = v1_mounts()
            .into_iter()
            .find(|(_, options)| options.split(',').any(|o| o == "memory"));
        let (dir, v1, limit_file) = match v1 {
            Some((mount, _)) => (mount.join(&name), true, "memory.limit_in_bytes"),
            None => (cgroup2_mount().join(&name), false, "memory.max"),
        };
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        std::fs::write(dir.join(limit_file), limit.to_string())
            .unwrap_or_else(|e| panic!("limiting {}: {e}", dir.display()));
        Self { dir, v1 }
    }

    /// OOM kills in the cgroup so far.
    pub fn oom_kills(&self) -> u64 {
        oom_kills_in(&self.dir, self.v1)
    }

    /// Makes `cmd` join the cgroup between fork and exec.
    pub fn place(&self, cmd: &mut std::process::Command) {
        join_at_exec(cmd, &self.dir);
    }
}

/// Makes `cmd` join the cgroup `dir` (v1 or v2) between fork and exec, so that
/// nothing it runs is ever outside it.
pub fn join_at_exec(cmd: &mut std::process::Command, dir: &Path) {
    use std::os::unix::process::CommandExt as _;
    let procs = dir.join("cgroup.procs");
    let procs = std::ffi::CString::new(procs.to_string_lossy().as_bytes()).expect("no NUL");
    // SAFETY: only async-signal-safe calls (open, write, close) on memory made before fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // "0" means the writing process itself.
            let n = libc::write(fd, b"0\n".as_ptr().cast(), 2);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if n != 2 {
                return Err(err);
            }
            Ok(())
        });
    }
}

fn oom_kills_in(dir: &Path, v1: bool) -> u64 {
    let file = if v1 {
        "memory.oom_control"
    } else {
        "memory.events"
    };
    let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The peak memory use of the cgroup at `rel` in bytes (v1 `memory.max_usage_in_bytes`
/// where the memory controller is v1, else v2 `memory.peak`), if the file is there.
pub fn memory_peak_at(rel: &Path) -> Option<u64> {
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    let file = match v1_memory_mount() {
        Some(mount) => mount.join(rel).join("memory.max_usage_in_bytes"),
        None => cgroup2_mount().join(rel).join("memory.peak"),
    };
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

fn v1_memory_mount() -> Option<PathBuf> {
    v1_mounts()
        .into_iter()
        .find(|(_, options)| options.split(',').any(|o| o == "memory"))
        .map(|(mount, _)| mount)
}

/// OOM kills in the cgroup at `rel` (relative to the cgroup root, with a leading `/`)
/// so far: in the v1 memory hierarchy where there is one (runc puts a container in
/// each), else in the v2 tree.
pub fn oom_kills_at(rel: &Path) -> u64 {
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    match v1_memory_mount() {
        Some(mount) => oom_kills_in(&mount.join(rel), true),
        None => oom_kills_in(&cgroup2_mount().join(rel), false),
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The peak RSS of this process's waited-for children, in bytes: a test that
/// reads it must run in its own test binary and wait for no other child first.
pub fn children_peak_rss() -> u64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage struct.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024
}
