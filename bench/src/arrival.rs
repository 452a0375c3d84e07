//! When a file lands: the wall-clock time a file is renamed into a folder (how the
//! sidecar writes its `--status-file`, whole or not at all), seen through inotify as
//! it happens. File timestamps would not do: the kernel stamps them with its coarse
//! clock (a tick, 4 ms here), the size of figure 11's smallest result.
use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::SystemTime,
};

use anyhow::Context as _;

/// A watch on one folder, from [`Arrival::watch`] until [`Arrival::finish`].
pub struct Arrival {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<std::io::Result<Option<SystemTime>>>,
}

impl Arrival {
    /// Starts watching `dir` for a file renamed into it; the watch is in place when
    /// this returns.
    pub fn watch(dir: &Path) -> anyhow::Result<Self> {
        // SAFETY: inotify_init1 takes flags and returns a new fd or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("inotify_init1");
        }
        // SAFETY: fd is a new inotify fd that we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            .context("a folder path without NUL")?;
        // SAFETY: a valid inotify fd and a NUL-terminated path.
        let wd =
            unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_MOVED_TO) };
        if wd < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("inotify_add_watch {}", dir.display()));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || first_event(&fd, &flag));
        Ok(Self { stop, thread })
    }

    /// The time of the first rename into the folder, or `None` if there was none.
    pub fn finish(self) -> anyhow::Result<Option<SystemTime>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the inotify watcher panicked"))?
            .context("reading inotify events")
    }
}

/// Waits for the first event on `fd` (checking `stop` every 50 ms) and returns when
/// it was read.
fn first_event(fd: &OwnedFd, stop: &AtomicBool) -> std::io::Result<Option<SystemTime>> {
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 50) };
        if n > 0 {
            return Ok(Some(SystemTime::now()));
        }
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::Arrival;

    #[test]
    fn a_rename_into_the_folder_is_timed_and_a_write_elsewhere_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let watched = dir.path().join("watched");
        std::fs::create_dir(&watched).expect("mkdir");
        let arrival = Arrival::watch(&watched).expect("watch");
        std::fs::write(dir.path().join("status.json.tmp"), "{}").expect("write");
        std::thread::sleep(Duration::from_millis(100));
        let before = SystemTime::now();
        std::fs::rename(
            dir.path().join("status.json.tmp"),
            watched.join("status.json"),
        )
        .expect("rename");
        std::thread::sleep(Duration::from_millis(100));
        let after = SystemTime::now();
        let at = arrival.finish().expect("finish").expect("an arrival");
        assert!(
            before <= at && at <= after,
            "{at:?} not in {before:?}..{after:?}"
        );

        let idle = Arrival::watch(&watched).expect("watch");
        assert_eq!(idle.finish().expect("finish"), None);
    }
}
