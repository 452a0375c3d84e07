//! Clocks, percentiles, process accounting and small helpers shared by the figures.
use std::{
    io::Read as _,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bench_results::Summary;

/// CLOCK_BOOTTIME in ns: the clock of the kernel's event timestamps.
pub use copilot::tracer::boottime_ns;

/// n, p50, p99, min, max, mean of `samples` (any unit).
pub fn summary(samples: &[f64]) -> Summary {
    Summary::of(samples)
}

/// What the kernel accounts to a process, summed over its threads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// On-CPU time (`/proc/PID/task/*/schedstat`, ns resolution).
    pub cpu_ns: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub rss_kib: u64,
    /// Of which anonymous memory (heap, stacks) and file-backed (the binary, libraries).
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
}

impl Usage {
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        let mut u = Usage::default();
        let tasks = format!("/proc/{pid}/task");
        for entry in std::fs::read_dir(&tasks).with_context(|| format!("reading {tasks}"))? {
            let dir = entry?.path();
            // A thread may exit while we read: skip it.
            let Ok(sched) = std::fs::read_to_string(dir.join("schedstat")) else {
                continue;
            };
            u.cpu_ns += sched
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
            u.voluntary_switches += status_field(&status, "voluntary_ctxt_switches:");
            u.involuntary_switches += status_field(&status, "nonvoluntary_ctxt_switches:");
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        u.rss_kib = status_field(&status, "VmRSS:");
        u.rss_anon_kib = status_field(&status, "RssAnon:");
        u.rss_file_kib = status_field(&status, "RssFile:");
        Ok(u)
    }

    pub fn switches(&self) -> u64 {
        self.voluntary_switches + self.involuntary_switches
    }

    /// The change from `before` to `self` (RSS is the later value).
    pub fn since(&self, before: &Usage) -> Usage {
        Usage {
            cpu_ns: self.cpu_ns.saturating_sub(before.cpu_ns),
            voluntary_switches: self
                .voluntary_switches
                .saturating_sub(before.voluntary_switches),
            involuntary_switches: self
                .involuntary_switches
                .saturating_sub(before.involuntary_switches),
            rss_kib: self.rss_kib,
            rss_anon_kib: self.rss_anon_kib,
            rss_file_kib: self.rss_file_kib,
        }
    }

    /// As the results file has it.
    pub fn result(self) -> bench_results::Usage {
        bench_results::Usage {
            cpu_ms: Some(self.cpu_ns as f64 / 1e6),
            voluntary_switches: self.voluntary_switches,
            involuntary_switches: self.involuntary_switches,
            switches: self.switches(),
            rss_mib: Some(self.rss_kib as f64 / 1024.0),
            rss_anon_mib: Some(self.rss_anon_kib as f64 / 1024.0),
            rss_file_mib: Some(self.rss_file_kib as f64 / 1024.0),
        }
    }
}

fn status_field(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits until `path` exists, woken by inotify (no polling); returns when it saw it.
pub fn wait_for_file(path: &Path, timeout: Duration) -> anyhow::Result<Instant> {
    let dir = path.parent().context("path without parent")?;
    // SAFETY: plain syscall, returns a new fd or -1.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    if fd < 0 {
        bail!("inotify_init1: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a new fd that we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let cdir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: valid fd and NUL-terminated path.
    let wd = unsafe {
        libc::inotify_add_watch(
            fd.as_raw_fd(),
            cdir.as_ptr(),
            libc::IN_CREATE | libc::IN_MOVED_TO,
        )
    };
    if wd < 0 {
        bail!(
            "inotify_add_watch {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    let deadline = Instant::now() + timeout;
    let mut file = std::fs::File::from(fd);
    loop {
        if path.exists() {
            return Ok(Instant::now());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("{} did not appear within {timeout:?}", path.display());
        }
        let mut pfd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        let mut buf = [0u8; 4096];
        let _ = file.read(&mut buf);
    }
}

/// A pidfd, to learn without polling when a process (not our child) exits.
pub struct PidFd(OwnedFd);

impl PidFd {
    pub fn open(pid: u32) -> anyhow::Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            bail!("pidfd_open({pid}): {}", std::io::Error::last_os_error());
        }
        // SAFETY: a new fd that we own.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Blocks until the process exited; returns CLOCK_BOOTTIME at wake-up.
    pub fn wait(&self, timeout: Duration) -> anyhow::Result<u64> {
        let mut pfd = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe {
            libc::poll(
                &mut pfd,
                1,
                timeout.as_millis().min(i32::MAX as u128) as i32,
            )
        };
        let t = boottime_ns();
        if n <= 0 {
            bail!("process did not exit within {timeout:?}");
        }
        Ok(t)
    }
}

/// The load average line, for readers to judge the noise.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Fills `dir` with `count` files of `size` bytes of incompressible-ish data.
pub fn make_files(dir: &Path, count: usize, size: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; size.min(8 << 20)];
    for i in 0..count {
        let path = dir.join(format!("f{i:05}.bin"));
        let mut f = std::fs::File::create(&path)?;
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len());
            for chunk in buf[..n].chunks_mut(8) {
                // xorshift64: fast and not compressible.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let b = state.to_le_bytes();
                chunk.copy_from_slice(&b[..chunk.len()]);
            }
            std::io::Write::write_all(&mut f, &buf[..n])?;
            left -= n;
        }
    }
    Ok(())
}

/// Total bytes and files under `dir`.
pub fn tree_size(dir: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&d) else {
            continue;
        };
        if md.is_file() {
            bytes += md.len();
            files += 1;
            continue;
        }
        if let Ok(rd) = std::fs::read_dir(&d) {
            stack.extend(rd.flatten().map(|e| e.path()));
        }
    }
    (bytes, files)
}

/// The median of `v` (sorted in place); NaN when empty.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
