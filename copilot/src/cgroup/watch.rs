//! Event-driven cgroup watching with inotify: new and removed container
//! cgroups under a pod (mkdir/rmdir on cgroupfs go through the VFS, so they
//! raise IN_CREATE/IN_DELETE), and `cgroup.events` changes (the kernel notifies
//! a modification when `populated` flips), all on one non-blocking fd.
//!
//! The watch is a backstop to the kernel events, not their source: where no
//! inotify instance is left (`fs.inotify.max_user_instances`, 128 by default,
//! counts every process of one uid on the node, and a node runs up to 250 pods),
//! it says so once and reports nothing, and the pod is followed by kernel events
//! alone.

use std::{collections::HashMap, io, path::Path};

use inotify::{Inotify, WatchDescriptor, WatchMask};
use tokio::io::{Interest, unix::AsyncFd};

use super::{Cgroup, Error};

/// Something that changed under the watched pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A directory (child cgroup) was created under the pod.
    ChildCreated(String),
    /// A child cgroup was removed.
    ChildRemoved(String),
    /// `cgroup.events` of the cgroup with this id changed; re-read `populated`.
    EventsChanged(u64),
}

pub struct Watch {
    /// `None` when no inotify instance could be had.
    fd: Option<AsyncFd<Inotify>>,
    pod: Option<WatchDescriptor>,
    files: HashMap<WatchDescriptor, u64>,
    buf: Vec<u8>,
}

impl Watch {
    /// Watches the pod directory for child cgroups coming and going.
    pub fn new(pod: &Cgroup) -> Result<Self, Error> {
        let err = |source| Error::Watch {
            path: pod.path.clone(),
            source,
        };
        let inotify = match Inotify::init() {
            Ok(i) => i,
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                tracing::warn!(
                    "no inotify instance left (fs.inotify.max_user_instances is used up): \
                     following the pod by kernel events alone, without cgroup notifications"
                );
                return Ok(Self {
                    fd: None,
                    pod: None,
                    files: HashMap::new(),
                    buf: Vec::new(),
                });
            }
            Err(e) => return Err(err(e)),
        };
        let wd = inotify
            .watches()
            .add(
                &pod.path,
                WatchMask::CREATE | WatchMask::DELETE | WatchMask::ONLYDIR,
            )
            .map_err(err)?;
        // SAFETY: `Inotify` owns its fd and keeps it open, unchanged, until dropped.
        let fd = unsafe { AsyncFd::register_with_interest(inotify, Interest::READABLE) }
            .map_err(|e| err(e.into_parts().1))?;
        Ok(Self {
            fd: Some(fd),
            pod: Some(wd),
            files: HashMap::new(),
            buf: vec![0; 4096],
        })
    }

    /// Also reports changes of `<dir>/cgroup.events` as [`WatchEvent::EventsChanged`]`(id)`.
    /// A cgroup that vanished meanwhile is not an error: it is simply empty.
    pub fn add_events(&mut self, id: u64, dir: &Path) -> Result<bool, Error> {
        let path = dir.join("cgroup.events");
        let Some(fd) = &self.fd else {
            return Ok(false);
        };
        match fd.get_ref().watches().add(&path, WatchMask::MODIFY) {
            Ok(wd) => {
                self.files.insert(wd, id);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(Error::Watch { path, source }),
        }
    }

    /// Waits for the next batch of changes.
    pub async fn next(&mut self) -> Result<Vec<WatchEvent>, Error> {
        let Some(fd) = &mut self.fd else {
            return std::future::pending().await;
        };
        loop {
            let mut guard = fd.readable_mut().await.map_err(|source| Error::Watch {
                path: "inotify".into(),
                source,
            })?;
            let inotify = guard.get_inner_mut();
            let events = match inotify.read_events(&mut self.buf) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    guard.clear_ready();
                    continue;
                }
                Err(source) => {
                    return Err(Error::Watch {
                        path: "inotify".into(),
                        source,
                    });
                }
            };
            let mut out = Vec::new();
            for ev in events {
                if Some(&ev.wd) == self.pod.as_ref() {
                    let Some(name) = ev.name else { continue };
                    let name = name.to_string_lossy().into_owned();
                    if ev.mask.contains(inotify::EventMask::CREATE) {
                        out.push(WatchEvent::ChildCreated(name));
                    } else if ev.mask.contains(inotify::EventMask::DELETE) {
                        out.push(WatchEvent::ChildRemoved(name));
                    }
                } else if let Some(&id) = self.files.get(&ev.wd) {
                    if ev.mask.contains(inotify::EventMask::IGNORED) {
                        // The cgroup was removed: it is certainly empty now.
                        self.files.remove(&ev.wd);
                    }
                    out.push(WatchEvent::EventsChanged(id));
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }
}
