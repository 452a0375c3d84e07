//! Transfer progress: counters the transfers bump, and a reporter that logs
//! them every few seconds (and draws a progress bar on a terminal).
use std::{
    io::IsTerminal as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

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
        self.bytes
            .fetch_sub(n.min(self.bytes.load(Ordering::Relaxed)), Ordering::Relaxed);
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
    /// terminal, also draws a progress bar on stderr (bytes, files, rate, time
    /// left). Off a terminal (a pod's log) only the structured line is written.
    pub fn report(self: &Arc<Self>, label: &'static str, every: Duration) -> ReporterGuard {
        let bar = std::io::stderr().is_terminal().then(|| progress_bar(label));
        let task = tokio::spawn(report_loop(self.clone(), label, every, bar.clone()));
        ReporterGuard { task, bar }
    }
}

/// The terminal's bar: totals grow as objects are found, so its length is
/// set on every tick, with the position; indicatif estimates rate and ETA.
fn progress_bar(label: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{prefix}: {msg}, {binary_bytes}/{binary_total_bytes}, {binary_bytes_per_sec}, \
         {eta} left [{wide_bar}]",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(label);
    bar
}

async fn report_loop(
    progress: Arc<Progress>,
    label: &'static str,
    every: Duration,
    bar: Option<ProgressBar>,
) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(if bar.is_some() {
        Duration::from_millis(250)
    } else {
        every
    });
    tick.tick().await;
    let mut last_log = Instant::now();
    loop {
        tick.tick().await;
        let s = progress.snapshot();
        if let Some(bar) = &bar {
            bar.set_length(s.total_bytes.max(s.bytes));
            bar.set_position(s.bytes);
            bar.set_message(format!("{}/{} files", s.files, s.total_files));
        }
        if last_log.elapsed() >= every {
            last_log = Instant::now();
            log_line(label, s, started.elapsed());
        }
    }
}

fn log_line(label: &str, s: ProgressSnapshot, elapsed: Duration) {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let rate = mib(s.bytes) / elapsed.as_secs_f64().max(0.001);
    tracing::info!(
        files = s.files,
        total_files = s.total_files,
        mib = format!("{:.1}", mib(s.bytes)),
        total_mib = format!("{:.1}", mib(s.total_bytes)),
        mib_per_s = format!("{rate:.1}"),
        "{label} in progress"
    );
}

/// Stops the progress reporter when dropped (and clears the bar).
#[derive(Debug)]
pub struct ReporterGuard {
    task: tokio::task::JoinHandle<()>,
    bar: Option<ProgressBar>,
}

impl Drop for ReporterGuard {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
