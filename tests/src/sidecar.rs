//! `copilot sidecar` (and other copilot commands) as child processes: stderr captured,
//! the ready file awaited with inotify, the exit awaited on a pidfd.
use std::{
    ffi::CString,
    io::{BufRead as _, BufReader},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    cgroup::PodCgroup,
    env::{copilot_bin, preflight, random_hex},
};

/// Where the sidecar process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// A host process outside the pod (pass `--pod-cgroup` or `--pod-uid`).
    Host,
    /// A host process moved, before it execs copilot, into a fresh container cgroup
    /// `<pod>/<64-hex id>` of the pod: the sidecar's "own" container, from which it can
    /// infer the pod (its parent cgroup).
    OwnContainer,
    /// As a pod without hostPID runs it: in a container cgroup of its own under the
    /// pod, as pid 1 of its own PID namespace, in its own mount and cgroup namespaces,
    /// without tracefs, with its own cgroupfs beside the host's (the `nsrun` helper,
    /// which goes before any wrapper).
    InPod,
}

/// A running `copilot` command; SIGKILLed on drop if it is still running.
pub struct Copilot {
    child: Option<Child>,
    pidfd: OwnedFd,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    status: Option<ExitStatus>,
    own_cgroup: Option<PathBuf>,
    label: String,
}

impl Copilot {
    /// Starts `$COPILOT_BIN args…` with `env`, in `placement` relative to `pod`.
    /// stderr is collected and echoed as `<label>: line`.
    pub fn spawn(
        label: &str,
        args: &[String],
        env: &[(&str, &str)],
        pod: &PodCgroup,
        placement: Placement,
    ) -> Self {
        Self::spawn_wrapped(label, &[], args, env, pod, placement)
    }

    /// Like [`Copilot::spawn`], but runs `wrapper… $COPILOT_BIN args…` (e.g. `setpriv`
    /// with a reduced capability set). The process is moved into its cgroup before the
    /// wrapper runs.
    pub fn spawn_wrapped(
        label: &str,
        wrapper: &[&str],
        args: &[String],
        env: &[(&str, &str)],
        pod: &PodCgroup,
        placement: Placement,
    ) -> Self {
        preflight();
        let in_pod = (placement == Placement::InPod)
            .then(|| pod.path().join(pod.container_dir_name(&random_hex(32))));
        let nsrun = crate::rootfs::helper_path("nsrun");
        let mut line: Vec<std::ffi::OsString> = Vec::new();
        if let Some(dir) = &in_pod {
            std::fs::create_dir(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
            line.extend([nsrun.into(), "--cgroup".into(), dir.into()]);
        }
        line.extend(wrapper.iter().map(Into::into));
        line.push(copilot_bin().into());
        let mut cmd = Command::new(&line[0]);
        cmd.args(&line[1..]);
        cmd.args(args)
            .envs(env.iter().copied())
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let own_cgroup = match placement {
            Placement::Host => None,
            Placement::InPod => in_pod,
            Placement::OwnContainer => {
                let dir = pod.path().join(pod.container_dir_name(&random_hex(32)));
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
                crate::cgroup::join_at_exec(&mut cmd, &dir);
                Some(dir)
            }
        };
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning copilot {args:?}: {e}"));
        let pidfd = crate::env::pidfd_open(child.id()).expect("the copilot just spawned");
        let pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let prefix = label.to_string();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("{prefix}: {line}");
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        Copilot {
            child: Some(child),
            pidfd,
            stderr,
            reader: Some(reader),
            status: None,
            own_cgroup,
            label: label.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The container cgroup the process was put in ([`Placement::OwnContainer`]).
    pub fn own_cgroup(&self) -> Option<&Path> {
        self.own_cgroup.as_deref()
    }

    /// Everything copilot logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: pidfd_send_signal with a pidfd we own; no memory is passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        assert_eq!(
            rc,
            0,
            "signalling {}: {}",
            self.label,
            std::io::Error::last_os_error()
        );
    }

    /// Waits until `path` exists (inotify on its directory), failing at once if the
    /// process exits first, or after `timeout`.
    pub fn wait_for_file(&mut self, path: &Path, timeout: Duration) {
        let dir = path.parent().expect("a file in a directory");
        let inotify = Inotify::watch(dir);
        let deadline = Instant::now() + timeout;
        while !path.exists() {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{} did not appear within {timeout:?}\n{}:\n{}",
                path.display(),
                self.label,
                self.stderr()
            );
            let mut fds = [
                libc::pollfd {
                    fd: inotify.fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, millis(left)) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                assert_eq!(err.kind(), std::io::ErrorKind::Interrupted, "poll: {err}");
                continue;
            }
            if fds[0].revents != 0 {
                inotify.drain();
            }
            if fds[1].revents != 0 && !path.exists() {
                let status = self.wait(Duration::from_secs(1));
                panic!(
                    "{} exited ({status:?}) before {} appeared:\n{}",
                    self.label,
                    path.display(),
                    self.stderr()
                );
            }
        }
    }

    /// Waits for the process to exit; `None` on timeout (it keeps running).
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.status {
            return Some(s);
        }
        let child = self.child.as_mut()?;
        if !crate::env::pidfd_wait(child.id(), timeout) {
            return None;
        }
        let status = child.wait().expect("waiting for copilot");
        self.status = Some(status);
        // The reader sees EOF once the process is gone: then every line is in.
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        Some(status)
    }

    /// Waits for the exit and returns the exit code; panics (with the logs) on a timeout
    /// or a death by signal.
    pub fn exit_code(&mut self, timeout: Duration) -> i32 {
        match self.wait(timeout) {
            Some(s) => s
                .code()
                .unwrap_or_else(|| panic!("{} died: {s}\n{}", self.label, self.stderr())),
            None => panic!(
                "{} still running after {timeout:?}:\n{}",
                self.label,
                self.stderr()
            ),
        }
    }
}

impl Drop for Copilot {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut()
            && self.status.is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.own_cgroup {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Runs `$COPILOT_BIN args…` to completion (a host process) and returns (exit code, stderr).
pub fn run_copilot(args: &[String], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(copilot_bin())
        .args(args)
        .envs(env.iter().copied())
        .env_remove("AWS_CA_BUNDLE")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running copilot {args:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out
        .status
        .code()
        .unwrap_or_else(|| panic!("copilot {args:?} died: {}\n{stderr}", out.status));
    (code, stderr)
}

fn millis(d: Duration) -> i32 {
    d.as_millis().clamp(1, i32::MAX as u128) as i32
}

/// An inotify instance watching one directory for entries created or moved in.
struct Inotify {
    fd: OwnedFd,
}

impl Inotify {
    fn watch(dir: &Path) -> Self {
        // SAFETY: inotify_init1 takes flags only.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(
            fd >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a new fd that we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let c = CString::new(dir.as_os_str().as_bytes()).expect("no NUL in a path");
        // SAFETY: a valid fd and NUL-terminated path.
        let wd = unsafe {
            libc::inotify_add_watch(
                fd.as_raw_fd(),
                c.as_ptr(),
                libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE,
            )
        };
        assert!(
            wd >= 0,
            "inotify_add_watch {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
        Inotify { fd }
    }

    fn drain(&self) {
        let mut buf = [0u8; 4096];
        // SAFETY: reading into a buffer we own, of its length.
        while unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }
}
