//! Transfer progress: counters the transfers bump, and a reporter that logs
//! them every few seconds (and draws a line on a terminal).
use std::{
    io::IsTerminal as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Bytes and files moved so far, against the expected totals.
#[derive(Debug, Default)]
pub struct Progress {
    bytes: AtomicU64,
    files: AtomicU64,
    total_bytes: AtomicU64,
    total_files: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressSnapshot {
    pub bytes: u64,
    pub files: u64,
    pub total_bytes: u64,
    pub total_files: u64,
}

impl Progress {
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }
    /// Takes back bytes counted by an attempt that is being retried.
    pub fn unadd_bytes(&self, n: u64) {
        self.bytes.fetch_sub(n.min(self.bytes.load(Ordering::Relaxed)), Ordering::Relaxed);
    }
    pub fn add_file(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds to the expected totals (as objects are discovered).
    pub fn expect(&self, files: u64, bytes: u64) {
        self.total_files.fetch_add(files, Ordering::Relaxed);
        self.total_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            bytes: self.bytes.load(Ordering::Relaxed),
            files: self.files.load(Ordering::Relaxed),
            total_bytes: self.total_bytes.load(Ordering::Relaxed),
            total_files: self.total_files.load(Ordering::Relaxed),
        }
    }

    /// Logs progress every `every` until the returned guard is dropped; on a
    /// terminal, also redraws one status line on stderr.
    pub fn report(self: &Arc<Self>, label: &'static str, every: Duration) -> ReporterGuard {
        let progress = self.clone();
        let tty = std::io::stderr().is_terminal();
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(if tty { Duration::from_millis(250) } else { every });
            tick.tick().await;
            let mut last_log = Instant::now();
            loop {
                tick.tick().await;
                let s = progress.snapshot();
                let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
                let rate = mib(s.bytes) / started.elapsed().as_secs_f64().max(0.001);
                if tty {
                    eprint!(
                        "\r{label}: {}/{} files, {:.1}/{:.1} MiB, {rate:.1} MiB/s   ",
                        s.files,
                        s.total_files,
                        mib(s.bytes),
                        mib(s.total_bytes)
                    );
                }
                if last_log.elapsed() >= every {
                    last_log = Instant::now();
                    tracing::info!(
                        files = s.files,
                        total_files = s.total_files,
                        mib = format!("{:.1}", mib(s.bytes)),
                        total_mib = format!("{:.1}", mib(s.total_bytes)),
                        mib_per_s = format!("{rate:.1}"),
                        "{label} in progress"
                    );
                }
            }
        });
        ReporterGuard { task, tty }
    }
}

/// Stops the progress reporter when dropped.
#[derive(Debug)]
pub struct ReporterGuard {
    task: tokio::task::JoinHandle<()>,
    tty: bool,
}

impl Drop for ReporterGuard {
    fn drop(&mut self) {
        self.task.abort();
        if self.tty {
            eprintln!();
        }
    }
}
