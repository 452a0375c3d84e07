//! Where things are, and the prerequisites every privileged test shares.
use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    dir.parent().unwrap_or(dir).to_path_buf()
}

/// Whether this is a CI run (`CI=true`, set by `.ci/run`).
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Panics with `reason`, saying how to fix it. Never a skip, in CI or not.
#[track_caller]
pub(crate) fn missing(reason: impl std::fmt::Display) -> ! {
    let ci = if is_ci() {
        " (CI=true: nothing may be skipped)"
    } else {
        ""
    };
    panic!(
        "integration-test prerequisite missing{ci}: {reason}. \
         Run as root after `cargo xtask setup`, via `cargo xtask integration-test`."
    )
}

/// Checks once per test binary that we are root and have runc and a cgroup2 mount.
pub fn preflight() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            missing("not running as root (cgroups, runc and BPF need it)");
        }
        match std::process::Command::new("runc").arg("--version").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => missing(format!("`runc --version` failed: {}", out.status)),
            Err(e) => missing(format!("runc not found on PATH: {e}")),
        }
        let _ = crate::cgroup::cgroup2_mount();
    });
}

/// The copilot binary under test: `$COPILOT_BIN`, else `<workspace>/target/debug/copilot`.
pub fn copilot_bin() -> PathBuf {
    let path = std::env::var_os("COPILOT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/copilot"));
    if !path.is_file() {
        missing(format!(
            "copilot binary {} does not exist (set COPILOT_BIN or build it)",
            path.display()
        ));
    }
    path
}

/// `bytes` random bytes from the kernel, as lowercase hex (2 × `bytes` characters).
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    let mut filled = 0;
    while filled < bytes {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), bytes - filled, 0) };
        assert!(n > 0, "getrandom: {}", std::io::Error::last_os_error());
        filled += n as usize;
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits, without polling, until process `pid` has exited (pidfd readable), or `timeout`.
/// Returns whether it exited; a pid that is already gone counts as exited.
pub fn pidfd_wait(pid: u32, timeout: Duration) -> bool {
    let Some(fd) = pidfd_open(pid) else {
        return true;
    };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n > 0 {
            return true;
        }
        if n == 0 {
            return false;
        }
        let err = std::io::Error::last_os_error();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::Interrupted,
            "poll(pidfd {pid}): {err}"
        );
    }
}

/// A pidfd of process `pid`; `None` if it is already gone.
pub fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::ESRCH),
            "pidfd_open({pid}): {err}"
        );
        return None;
    }
    // SAFETY: fd is a new pidfd that we own.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until process `pid` runs `comm` (has exec'd it); panics after `timeout`.
pub fn wait_comm(pid: u32, comm: &str, timeout: Duration) {
    if let Err(e) = try_wait_comm(pid, comm, timeout) {
        panic!("{e}");
    }
}

/// [`wait_comm`] that says why instead of panicking.
pub fn try_wait_comm(pid: u32, comm: &str, timeout: Duration) -> Result<(), String> {
    let path = format!("/proc/{pid}/comm");
    let deadline = Instant::now() + timeout;
    loop {
        let now = std::fs::read_to_string(&path).unwrap_or_default();
        if now.trim() == comm {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("pid {pid} is {now:?}, never became {comm:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `server` (a child just spawned) accepts connections on loopback
/// `port`; panics if it exits first or takes more than 30 s (servers that import
/// a lot, such as moto or azurite, have no readiness fd to wait on).
pub fn wait_listening(server: &mut std::process::Child, name: &str, port: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = server.try_wait() {
            panic!("{name} exited before listening: {status}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} did not listen on port {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
