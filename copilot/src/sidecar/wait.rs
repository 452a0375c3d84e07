//! Waiting for the main container: to start, then to exit. The `ebpf` watcher
//! follows the pod's lifecycle from kernel events; `signal`, `file` and `noop`
//! keep the Go binary's configurations working. None of them polls.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::signal::unix::{Signal, SignalKind, signal};

use super::select::{self, Ambiguous, MainSelector, Own};
use crate::{
    lifecycle::{Container, State},
    monitor::{self, Monitor, Output, Tuning},
    pod::{self, PodSelector},
    tracer::ExitStatus,
};

/// How to learn that the main container started or exited.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatcherType {
    /// Kernel events (sched_process_exec/exit) for the pod's cgroup.
    Ebpf,
    /// SIGTERM, as sent to a native sidecar once the main container ended.
    Signal,
    /// `_SUCCESS` or `_ERROR` appearing in the outputs folder.
    File,
    /// Do not wait.
    Noop,
}

/// How long a SIGTERM waits for a main container's exit already under way.
pub const SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Pod(#[from] pod::Error),
    #[error(transparent)]
    Monitor(#[from] monitor::Error),
    #[error(transparent)]
    Ambiguous(#[from] Ambiguous),
    #[error("the main container did not start within {0:?} (--start-timeout)")]
    StartTimeout(Duration),
    #[error("SIGTERM arrived while the main container was still running")]
    Terminated,
    #[error("installing the SIGTERM handler")]
    Signal(#[source] std::io::Error),
    #[error("watching {path} for _SUCCESS/_ERROR")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {0:?} watcher cannot be used with {1:?}")]
    Unsupported(WatcherType, &'static str),
}

/// How the main container ended, as far as the watcher can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MainExit {
    /// Container id (or cgroup name) of the main container, when known.
    pub container: Option<String>,
    pub pid: Option<u32>,
    /// `None` when the watcher cannot see it (signal/file/noop, or exited before attach).
    pub status: Option<ExitStatus>,
    pub oom_killed: bool,
    /// CLOCK_BOOTTIME of the exit, from the kernel event.
    pub time_ns: Option<u64>,
}

/// Follows the main container through kernel events.
pub struct EbpfWatcher {
    monitor: Monitor,
    selector: MainSelector,
    own: Own,
    main: Option<u64>,
    sigterm: Signal,
}

impl EbpfWatcher {
    /// Attaches and snapshots; when this returns, no start or exit can be missed.
    pub fn start(
        sel: &PodSelector,
        selector: MainSelector,
        tuning: &Tuning,
    ) -> Result<Self, Error> {
        let (hierarchy, pod_cgroup) = pod::find_pod(sel)?;
        let (monitor, first) = Monitor::start(hierarchy, pod_cgroup, tuning)?;
        log_outputs(&first);
        let own = Own {
            cgroup: pod::own_container_in(monitor.pod_cgroup()),
            comm: std::fs::read_to_string("/proc/self/comm")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
        };
        Ok(Self {
            monitor,
            selector,
            own,
            main: None,
            sigterm: signal(SignalKind::terminate()).map_err(Error::Signal)?,
        })
    }

    pub fn pod_cgroup(&self) -> &Path {
        &self.monitor.pod_cgroup().path
    }

    /// Waits until the main container has started (or already ended).
    pub async fn wait_started(&mut self, timeout: Option<Duration>) -> Result<(), Error> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            if let Some(c) = self.main_container()?
                && !matches!(c.state, State::Created)
            {
                return Ok(());
            }
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = self.monitor.next() => log_outputs(&r?),
                _ = sleep => return Err(Error::StartTimeout(timeout.unwrap_or_default())),
                _ = self.sigterm.recv() => return self.settle().await,
            }
        }
    }

    /// Waits until the main container has exited.
    pub async fn wait_exited(&mut self) -> Result<MainExit, Error> {
        loop {
            if let Some(c) = self.main_container()?
                && let State::Exited(e) = c.state
            {
                return Ok(MainExit {
                    container: Some(
                        crate::cgroup::container_id::parse(&c.name).unwrap_or(c.name.clone()),
                    ),
                    pid: e.pid,
                    status: e.status,
                    oom_killed: e.oom_killed,
                    time_ns: e.time_ns,
                });
            }
            tokio::select! {
                r = self.monitor.next() => log_outputs(&r?),
                _ = self.sigterm.recv() => self.settle().await?,
            }
        }
    }

    /// SIGTERM came before the main container was seen to exit. A native sidecar
    /// gets it only once the regular containers have ended (KEP-753), so the exit
    /// may still be in the ring buffer or the cgroup notifications: they are read
    /// for up to [`SETTLE`]. `Ok` once the main container is known to have exited;
    /// `Terminated` if it still runs (or never started): the pod is being deleted.
    async fn settle(&mut self) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            if let Some(c) = self.main_container()?
                && matches!(c.state, State::Exited(_))
            {
                tracing::info!("SIGTERM after the main container exited: uploading");
                return Ok(());
            }
            tokio::select! {
                r = self.monitor.next() => log_outputs(&r?),
                () = tokio::time::sleep_until(deadline) => return Err(Error::Terminated),
            }
        }
    }

    /// The main container, chosen again at every change (see [`select`]): a
    /// second candidate (a mesh proxy, an agent) makes it [`Error::Ambiguous`],
    /// even after a first choice: which of them is the task cannot be told from
    /// the pod alone.
    fn main_container(&mut self) -> Result<Option<&Container>, Error> {
        let chosen = select::main_container(self.monitor.pod(), &self.selector, &self.own)?;
        if chosen != self.main
            && let Some(c) = chosen.and_then(|id| self.monitor.pod().container(id))
        {
            tracing::info!(container = %c.name, "main container found");
        }
        self.main = chosen;
        Ok(self.main.and_then(|id| self.monitor.pod().container(id)))
    }
}

fn log_outputs(outputs: &[Output]) {
    for o in outputs {
        match o {
            Output::Change { change, name, .. } => {
                tracing::debug!(container = %name, state = change.state.name(), source = ?change.source, "container");
            }
            Output::Lost { count } => tracing::warn!(count, "kernel events lost; state re-read"),
            Output::Process { .. } => {}
        }
    }
}

/// Waits for `_SUCCESS` or `_ERROR` to appear in `dir` (the `file` watcher's exit).
pub async fn wait_marker_file(dir: &Path) -> Result<(), Error> {
    use inotify::{Inotify, WatchMask};
    let err = |source| Error::File {
        path: dir.to_path_buf(),
        source,
    };
    let present = || ["_SUCCESS", "_ERROR"].iter().any(|f| dir.join(f).exists());
    std::fs::create_dir_all(dir).map_err(err)?;
    let inotify = Inotify::init().map_err(err)?;
    inotify
        .watches()
        .add(
            dir,
            // Not CREATE: a marker written in two steps (`_ERROR` with its message)
            // counts once it is closed, or renamed into place, complete.
            WatchMask::MOVED_TO | WatchMask::CLOSE_WRITE,
        )
        .map_err(err)?;
    // After the watch is in place, so a file made in between is not missed.
    if present() {
        return Ok(());
    }
    // SAFETY: `Inotify` owns its fd and keeps it open, unchanged, until dropped.
    let fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(inotify, tokio::io::Interest::READABLE)
    }
    .map_err(|e| err(e.into_parts().1))?;
    let mut fd = fd;
    let mut buf = [0u8; 4096];
    loop {
        let mut guard = fd.readable_mut().await.map_err(err)?;
        match guard.get_inner_mut().read_events(&mut buf) {
            Ok(events) => {
                let done = events
                    .into_iter()
                    .any(|ev| ev.name.is_some_and(|n| n == "_SUCCESS" || n == "_ERROR"));
                if done {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => guard.clear_ready(),
            Err(e) => return Err(err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Write as _, time::Duration};

    use super::wait_marker_file;

    #[tokio::test]
    async fn a_marker_counts_once_it_is_closed_not_when_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let waiter = tokio::spawn(async move { wait_marker_file(&path).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut file = std::fs::File::create(dir.path().join("_ERROR")).unwrap();
        file.write_all(b"first half, ").unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiter.is_finished(), "acted on a file still being written");
        file.write_all(b"second half").unwrap();
        drop(file);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("acts on close")
            .unwrap()
            .unwrap();
    }
}
