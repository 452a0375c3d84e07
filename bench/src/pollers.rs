//! The polling designs copilot replaces, re-implemented faithfully, each run as a
//! process of its own so that its CPU time and context switches can be read.
//!
//! - `poll-proc DIR`: flyte-copilot's shared-process-namespace watcher
//!   (`flytecopilot/cmd/containerwatcher/spns_watcher.go`): a ticker every 2 s lists
//!   every process of the namespace (go-ps reads `/proc/<pid>/stat` of each), keeps
//!   those whose parent pid is 0 (the containers' entrypoints), and declares the main
//!   container exited after 2 ticks that found none. Here DIR is the container's own
//!   procfs (`/proc/<main>/root/proc`, opened while it runs): the same view a sidecar
//!   sharing the pod's pid namespace has (without the pause process, which the Go
//!   code filters out anyway).
//! - `poll-file PATH`: stat PATH (`_SUCCESS`) every second until it exists.
//!
//! Both take the delay to their first tick (a random phase, in ms) as a last argument,
//! print `ready` once set up and `detected <CLOCK_BOOTTIME ns>` when they decide.
use std::{
    io::Write as _,
    os::fd::AsRawFd as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::util::boottime_ns;

/// Sleeps until tick `n` (1, 2, …) of a ticker whose first tick is at `start + phase`
/// (Go's `time.Ticker`; the phase stands for a poller started at a random time
/// before the container exits, as in production).
fn tick(start: Instant, phase: Duration, n: u32, interval: Duration) {
    let at = start + phase + interval * (n - 1);
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
}

fn say(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
    let _ = out.flush();
}

pub fn poll_proc(
    dir: PathBuf,
    interval: Duration,
    phase: Duration,
    cycles: u32,
) -> anyhow::Result<()> {
    let handle = std::fs::File::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
    say("ready");
    let start = Instant::now();
    let mut missing = 0;
    for n in 1.. {
        tick(start, phase, n, interval);
        let mut running = 0;
        if let Ok(entries) = std::fs::read_dir(&path) {
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(_pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                    continue;
                };
                // `pid (comm) state ppid …`: comm may hold spaces, so split after ')'.
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<u32>().ok());
                if ppid == Some(0) {
                    running += 1;
                }
            }
        }
        if running == 0 {
            missing += 1;
            if missing >= cycles {
                say(&format!("detected {}", boottime_ns()));
                return Ok(());
            }
        }
    }
    Ok(())
}

pub fn poll_file(path: PathBuf, interval: Duration, phase: Duration) -> anyhow::Result<()> {
    say("ready");
    let start = Instant::now();
    for n in 1.. {
        tick(start, phase, n, interval);
        if std::fs::metadata(&path).is_ok() {
            say(&format!("detected {}", boottime_ns()));
            return Ok(());
        }
    }
    Ok(())
}
