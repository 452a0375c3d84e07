//! Real containers run with `runc`, in pod-like cgroups.
use std::{
    ffi::CString,
    fs::File,
    io::Write as _,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::{
    cgroup::{PodCgroup, populated},
    env::{preflight, random_hex},
    rootfs::rootfs,
};

/// A bind mount into a container.
#[derive(Clone, Debug)]
pub struct Mount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// Options for [`Container::create`].
#[derive(Clone, Debug, Default)]
pub struct ContainerOpts {
    /// `linux.resources.memory.limit` in bytes. On this hybrid host the memory controller
    /// is cgroup v1 only, so runc enforces it in `/sys/fs/cgroup/memory/<same path>`.
    pub memory_limit: Option<u64>,
    pub mounts: Vec<Mount>,
    /// Extra `KEY=value` environment entries (PATH=/bin is always set).
    pub env: Vec<String>,
    /// The process's identity and capabilities, where not the tests' default (root with
    /// `CAP_AUDIT_WRITE`, `CAP_KILL`, `CAP_NET_BIND_SERVICE`).
    pub process: Option<ProcessOpts>,
    /// The root filesystem, where not the busybox [`rootfs`]; always read-only.
    pub root: Option<PathBuf>,
    /// Namespaces: new ones of every kind but cgroup unless said here.
    pub namespaces: Option<Vec<Namespace>>,
    /// A read-only sysfs at `/sys`, as containerd's default spec mounts it.
    pub sysfs: bool,
}

/// Who the container's process runs as.
#[derive(Clone, Debug, Default)]
pub struct ProcessOpts {
    pub uid: u32,
    pub gid: u32,
    /// `CAP_*` names: bounding, effective and permitted. A non-root process loses them
    /// at exec, as in Kubernetes (no ambient capabilities).
    pub caps: Vec<String>,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privileges: bool,
}

/// One namespace of an OCI runtime spec: new (`path` None) or joined by path.
#[derive(Clone, Debug)]
pub struct Namespace {
    pub kind: &'static str,
    pub path: Option<PathBuf>,
}

/// A runc container in a [`PodCgroup`], with a random 64-hex id and its own runc state
/// directory; `runc kill KILL` + `runc delete --force` on drop (errors ignored there).
///
/// Its cgroup is `<pod>/<id>` (cgroupfs layout) or `<pod>/cri-containerd-<id>.scope`
/// (systemd layout), given to runc as `cgroupsPath` with runc's cgroupfs driver, so runc
/// creates it in the v2 tree and in every v1 hierarchy. The container has its own pid,
/// mount, ipc, uts and (empty) network namespaces, a read-only busybox rootfs
/// ([`rootfs`]) and a tmpfs `/tmp`. Its stdout and stderr go to a file ([`Container::output`]):
/// runc passes its own stdio to a detached container, so a pipe would stay open for the
/// container's whole life.
///
/// # What the tracer sees in the container cgroup (runc 1.1.5, measured with perf)
///
/// `runc create` starts `runc init` (exec of `/proc/self/exe`, still in the caller's
/// cgroup), then writes that pid into the container cgroup, racing with runc init's
/// CVE-2019-5736 self-protection, which re-execs a memfd copy of runc (`filename`
/// `/dev/fd/N`, comm `runc`). In 8 of 15 runs that re-exec happened after the cgroup
/// move, i.e. **the first exec in the container cgroup is often runc's own, by a pid
/// that is not the container's main pid**. Then runc init clones `runc:[1:CHILD]` and
/// `runc:[2:INIT]`; `runc:[0:PARENT]` and `runc:[1:CHILD]` exit (group_dead) in the
/// container cgroup, and `runc:[2:INIT]`'s Go threads exit (not group_dead) when it
/// execs. Only at `runc start` does `runc:[2:INIT]` — the pid `runc state` reports —
/// exec the entrypoint; that is the only exec in the container cgroup by the main pid.
/// So "the first exec in the container cgroup" is not a safe definition of the main
/// process: that exec can be runc's `/dev/fd/N` re-exec by a pid that exits a moment
/// later. The main pid is the one that is pid 1 of the container's pid namespace.
#[derive(Debug)]
pub struct Container {
    id: String,
    cgroup_path: PathBuf,
    runc_root: TempDir,
    bundle: TempDir,
    pid: u32,
}

impl Container {
    /// `runc create`: the init process exists in the container cgroup (as
    /// `runc:[2:INIT]`, waiting on runc's exec fifo); nothing of `args` runs yet.
    pub fn create(pod: &PodCgroup, args: &[&str], opts: ContainerOpts) -> Self {
        preflight();
        let id = random_hex(32);
        let cgroups_path = pod.rel().join(pod.container_dir_name(&id));
        let cgroup_path = pod.path().join(pod.container_dir_name(&id));
        let runc_root = tempfile::Builder::new()
            .prefix("runc-state-")
            .tempdir()
            .expect("creating a runc state dir");
        let bundle = tempfile::Builder::new()
            .prefix("runc-bundle-")
            .tempdir()
            .expect("creating a runc bundle dir");
        let config = config(args, &opts, &cgroups_path);
        std::fs::write(
            bundle.path().join("config.json"),
            serde_json::to_vec_pretty(&config).expect("serializing config.json"),
        )
        .expect("writing config.json");
        let mut ctr = Container {
            id,
            cgroup_path,
            runc_root,
            bundle,
            pid: 0,
        };
        let stdio = File::create(ctr.stdio_path()).expect("creating the container's output file");
        let status = ctr
            .runc()
            .args(["create", "--bundle"])
            .arg(ctr.bundle.path())
            .arg(&ctr.id)
            .stdin(Stdio::null())
            .stdout(stdio.try_clone().expect("dup"))
            .stderr(stdio)
            .status()
            .expect("spawning runc create");
        assert!(
            status.success(),
            "runc create {args:?} failed: {status}\n{}",
            ctr.diagnostics()
        );
        let pid = ctr.state_json()["pid"].as_u64().unwrap_or(0) as u32;
        assert!(
            pid > 0,
            "runc state reports no pid after create:\n{}",
            ctr.diagnostics()
        );
        ctr.pid = pid;
        ctr
    }

    /// `runc start`: the init process execs the entrypoint.
    pub fn start(&self) {
        let out = self
            .runc()
            .arg("start")
            .arg(&self.id)
            .output()
            .expect("spawning runc start");
        assert!(
            out.status.success(),
            "runc start failed: {}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.diagnostics()
        );
    }

    /// [`Container::create`] then [`Container::start`].
    pub fn run(pod: &PodCgroup, args: &[&str], opts: ContainerOpts) -> Self {
        let ctr = Self::create(pod, args, opts);
        ctr.start();
        ctr
    }

    /// The container's 64-hex id (also its runc id).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Host pid of the container's init (main) process, as `runc state` reported at create.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The container cgroup in the v2 tree.
    pub fn cgroup_path(&self) -> &Path {
        &self.cgroup_path
    }

    /// runc's view: `created`, `running`, `paused` or `stopped`.
    pub fn state(&self) -> String {
        self.state_json()["status"]
            .as_str()
            .unwrap_or("unknown")
            .to_string()
    }

    /// `runc kill <id> <signal>` (to the init process only).
    pub fn kill(&self, signal: i32) {
        let out = self
            .runc()
            .args(["kill", &self.id, &signal.to_string()])
            .output()
            .expect("spawning runc kill");
        assert!(
            out.status.success(),
            "runc kill {signal} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits until the main process has exited and the container cgroup is empty.
    /// Returns false on timeout. The cgroup (and runc's state) stay until drop.
    pub fn wait_exited(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        if !crate::env::pidfd_wait(self.pid, timeout) {
            return false;
        }
        // Other processes of the container (children of main) are killed with it by the
        // pid namespace teardown, a little after main's exit is visible.
        loop {
            match populated(&self.cgroup_path) {
                Ok(false) => return true,
                Ok(true) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(true) => return false,
                Err(e) => panic!("reading {}/cgroup.events: {e}", self.cgroup_path.display()),
            }
        }
    }

    /// What the container printed on stdout and stderr so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.stdio_path()).unwrap_or_default()
    }

    fn stdio_path(&self) -> PathBuf {
        self.bundle.path().join("stdio.log")
    }

    fn runc(&self) -> Command {
        let mut cmd = Command::new("runc");
        cmd.arg("--root")
            .arg(self.runc_root.path())
            .arg("--log")
            .arg(self.bundle.path().join("runc.log"));
        cmd
    }

    fn state_json(&self) -> Value {
        let out = self
            .runc()
            .arg("state")
            .arg(&self.id)
            .output()
            .expect("spawning runc state");
        assert!(
            out.status.success(),
            "runc state failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("runc state printed invalid JSON")
    }

    fn diagnostics(&self) -> String {
        let log = std::fs::read_to_string(self.bundle.path().join("runc.log")).unwrap_or_default();
        format!("container output:\n{}\nrunc log:\n{log}", self.output())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let quiet = |cmd: &mut Command| {
            let _ = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        quiet(self.runc().args(["kill", &self.id, "KILL"]));
        quiet(self.runc().args(["delete", "--force", &self.id]));
    }
}

/// The OCI runtime spec (`config.json`) of a test container.
pub(crate) fn config(args: &[&str], opts: &ContainerOpts, cgroups_path: &Path) -> Value {
    let test_default = ProcessOpts {
        caps: ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            .map(String::from)
            .to_vec(),
        no_new_privileges: true,
        ..ProcessOpts::default()
    };
    let process = opts.process.as_ref().unwrap_or(&test_default);
    let caps = &process.caps;
    let ambient: &[String] = if process.uid == 0 { caps } else { &[] };
    let mut env = vec!["PATH=/bin".to_string(), "HOME=/".to_string()];
    env.extend(opts.env.iter().cloned());
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(limit) = opts.memory_limit {
        resources["memory"] = json!({"limit": limit});
    }
    let namespaces: Vec<Value> = match &opts.namespaces {
        None => ["pid", "ipc", "uts", "mount", "network"]
            .iter()
            .map(|kind| json!({"type": kind}))
            .collect(),
        Some(list) => list
            .iter()
            .map(|ns| match &ns.path {
                Some(path) => json!({"type": ns.kind, "path": path}),
                None => json!({"type": ns.kind}),
            })
            .collect(),
    };
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": process.uid, "gid": process.gid},
            "args": args,
            "env": env,
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "ambient": ambient,
            },
            "noNewPrivileges": process.no_new_privileges,
        },
        "root": {"path": opts.root.as_deref().unwrap_or_else(|| rootfs()), "readonly": true},
        "hostname": "copilot-test",
        "mounts": mounts(opts),
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": resources,
            "namespaces": namespaces,
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    })
}

fn mounts(opts: &ContainerOpts) -> Vec<Value> {
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]}),
    ];
    if opts.sysfs {
        mounts.push(
            json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                           "options": ["nosuid", "noexec", "nodev", "ro"]}),
        );
    }
    for m in &opts.mounts {
        mounts.push(json!({
            "destination": m.destination,
            "type": "bind",
            "source": m.source,
            "options": ["rbind", if m.read_only { "ro" } else { "rw" }],
        }));
    }
    mounts
}

/// A named pipe that holds a container back until the test opens the gate: the
/// container runs `read x < /ctl/go` (with [`Gate::mount`]) and continues when
/// [`Gate::open`] writes a line. Deterministic, no sleeps on either side.
///
/// The test side keeps the fifo open read-write for the gate's whole life, so opening it
/// never blocks and a line written before the container reads is not lost.
#[derive(Debug)]
pub struct Gate {
    dir: TempDir,
    fifo: File,
}

impl Gate {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gate-")
            .tempdir()
            .expect("gate dir");
        let path = dir.path().join("go");
        let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL in a temp path");
        // SAFETY: c is a valid NUL-terminated path.
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(
            rc,
            0,
            "mkfifo {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        let fifo = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("opening fifo {}: {e}", path.display()));
        Gate { dir, fifo }
    }

    /// Mounts the gate's directory at `/ctl`; the fifo is `/ctl/go`.
    pub fn mount(&self) -> Mount {
        Mount {
            source: self.dir.path().to_path_buf(),
            destination: "/ctl".into(),
            read_only: false,
        }
    }

    /// Lets one `read x < /ctl/go` through.
    pub fn open(&self) {
        (&self.fifo)
            .write_all(b"go\n")
            .expect("writing to the gate fifo");
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}
