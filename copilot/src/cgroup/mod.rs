//! cgroup v2: finding the unified hierarchy, resolving a cgroup to its id and
//! level, listing a pod's container cgroups and their processes, and the
//! counters that tell whether a cgroup ever ran and whether the OOM killer struck.
//!
//! The id of a cgroup v2 directory is its inode number (the kernfs node id on
//! 64-bit kernels), the same value `bpf_get_current_cgroup_id` returns. Its level
//! is its depth below the hierarchy's root, which is what
//! `bpf_get_current_ancestor_cgroup_id` counts — in a cgroup namespace the mount's
//! root is not the hierarchy's root, so the mount root's own depth is added.

pub mod container_id;
mod watch;

use std::{
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Component, Path, PathBuf},
};

pub use watch::{Watch, WatchEvent};

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no cgroup v2 hierarchy is mounted (looked in {mountinfo})")]
    NoUnifiedHierarchy { mountinfo: &'static str },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cgroup {path} does not exist")]
    NotFound { path: PathBuf },
    #[error("{path} is not a directory, so not a cgroup")]
    NotADirectory { path: PathBuf },
    #[error(
        "{path} is a cgroup v1 directory; copilot needs the cgroup v2 (unified) hierarchy, mounted at {unified}"
    )]
    V1Only { path: PathBuf, unified: String },
    #[error("{path} is not in a cgroup filesystem")]
    NotACgroup { path: PathBuf },
    #[error("{given} leads out of the cgroup v2 mount at {mount}")]
    Escapes { given: PathBuf, mount: PathBuf },
    #[error("{path} is not inside the cgroup v2 mount at {mount}")]
    OutsideMount { path: PathBuf, mount: PathBuf },
    #[error("watching {path} with inotify")]
    Watch {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The mounted cgroup v2 hierarchy.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    /// Where it is mounted (`/sys/fs/cgroup` on pure v2 hosts, `/sys/fs/cgroup/unified` on hybrid).
    pub mount: PathBuf,
    /// Depth of the mount's root in the hierarchy (non-zero inside a cgroup namespace).
    pub root_level: u32,
    /// The cgroup v1 memory controller's mount on hybrid hosts (OOM counters live there).
    pub v1_memory: Option<PathBuf>,
}

impl Hierarchy {
    /// Finds the cgroup2 mount in `/proc/self/mountinfo`: the first one, or the
    /// first one at or below `under` (a container that mounts the host's
    /// cgroupfs at e.g. `/host/sys/fs/cgroup` also sees its own namespaced one).
    pub fn discover(under: Option<&Path>) -> Result<Self, Error> {
        const MOUNTINFO: &str = "/proc/self/mountinfo";
        let text = fs::read_to_string(MOUNTINFO).map_err(|source| Error::Read {
            path: MOUNTINFO.into(),
            source,
        })?;
        Self::from_mountinfo(&text, under).ok_or(Error::NoUnifiedHierarchy {
            mountinfo: MOUNTINFO,
        })
    }

    /// Parses mountinfo text; see [`Hierarchy::discover`].
    pub fn from_mountinfo(text: &str, under: Option<&Path>) -> Option<Self> {
        // (fstype, super options, root, mount point) of every mount.
        let mounts: Vec<(&str, &str, &str, PathBuf)> = text
            .lines()
            .filter_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                let mut r = right.split_whitespace();
                let (fstype, options) = (r.next()?, r.nth(1)?);
                let mut l = left.split_whitespace();
                let root = l.nth(3)?;
                let mount = PathBuf::from(unescape_mountinfo(l.next()?));
                Some((fstype, options, root, mount))
            })
            .filter(|(.., mount)| under.is_none_or(|u| mount.starts_with(u)))
            .collect();
        let v1_memory = mounts.iter().find_map(|(fstype, options, _, mount)| {
            (*fstype == "cgroup" && options.split(',').any(|o| o == "memory"))
                .then(|| mount.clone())
        });
        mounts.iter().find_map(|(fstype, _, root, mount)| {
            (*fstype == "cgroup2").then(|| Self {
                mount: mount.clone(),
                root_level: depth(Path::new(root)),
                v1_memory: v1_memory.clone(),
            })
        })
    }

    /// Resolves a user-given cgroup: an absolute path in the cgroupfs, or a
    /// path relative to the v2 mount (`/kubepods/pod…` or `kubepods/pod…`).
    /// The path is made canonical first (`..`, `.`, doubled slashes, symlinks),
    /// since the pod cgroup's level in the hierarchy is counted from it; one that
    /// leads out of the mount is refused.
    pub fn resolve(&self, given: &Path) -> Result<Cgroup, Error> {
        let candidate = if given.starts_with(&self.mount) || (given.is_absolute() && given.exists())
        {
            given.to_path_buf()
        } else {
            self.mount.join(given.strip_prefix("/").unwrap_or(given))
        };
        let path = fs::canonicalize(&candidate).map_err(|_| Error::NotFound {
            path: given.to_path_buf(),
        })?;
        let mount = fs::canonicalize(&self.mount).unwrap_or_else(|_| self.mount.clone());
        if !path.starts_with(&mount) && candidate.starts_with(&self.mount) {
            return Err(Error::Escapes {
                given: given.to_path_buf(),
                mount: self.mount.clone(),
            });
        }
        let path = match path.strip_prefix(&mount) {
            Ok(rel) => self.mount.join(rel),
            Err(_) => path,
        };
        let meta = stat(&path)?;
        if !meta.is_dir() {
            return Err(Error::NotADirectory { path });
        }
        match fs_magic(&path)? {
            CGROUP2_SUPER_MAGIC => {}
            CGROUP_SUPER_MAGIC => {
                return Err(Error::V1Only {
                    path,
                    unified: self.mount.display().to_string(),
                });
            }
            _ => return Err(Error::NotACgroup { path }),
        }
        let rel = path
            .strip_prefix(&self.mount)
            .map_err(|_| Error::OutsideMount {
                path: path.clone(),
                mount: self.mount.clone(),
            })?
            .to_path_buf();
        Ok(Cgroup {
            id: meta.ino(),
            level: self.root_level + depth(&rel),
            rel,
            path,
        })
    }
}

/// A resolved cgroup v2 directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// Absolute path in the cgroupfs.
    pub path: PathBuf,
    /// Path relative to the v2 mount (also its path in every v1 hierarchy that runc mirrors).
    pub rel: PathBuf,
    /// cgroup id (inode number of the directory).
    pub id: u64,
    /// Depth below the hierarchy's root.
    pub level: u32,
}

impl Cgroup {
    /// The direct child cgroups (name, id); in a pod these are its containers.
    pub fn children(&self) -> Result<Vec<(String, u64)>, Error> {
        let read = |source| Error::Read {
            path: self.path.clone(),
            source,
        };
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.path).map_err(read)? {
            let entry = entry.map_err(read)?;
            let Ok(ft) = entry.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            // A child removed while listing is simply gone.
            let Ok(meta) = entry.metadata() else { continue };
            out.push((entry.file_name().to_string_lossy().into_owned(), meta.ino()));
        }
        out.sort();
        Ok(out)
    }

    /// Processes in this cgroup and every cgroup below it.
    pub fn procs_recursive(&self) -> Result<Vec<u32>, Error> {
        let mut out = Vec::new();
        collect_procs(&self.path, &mut out)?;
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// `populated` from `cgroup.events`: any process here or below.
    pub fn populated(&self) -> Result<bool, Error> {
        Ok(read_key(&self.path.join("cgroup.events"), "populated")? != Some(0))
    }

    /// Whether any process ever ran here: `usage_usec` of the core `cpu.stat`.
    /// Tells an emptied cgroup (exited) from a freshly made one (not started yet).
    pub fn ever_ran(&self) -> Result<bool, Error> {
        Ok(read_key(&self.path.join("cpu.stat"), "usage_usec")?.unwrap_or(0) > 0)
    }

    /// The OOM kill counter of this cgroup's memory controller: v2
    /// `memory.events` `oom_kill`, else the v1 `memory.oom_control` of the same
    /// relative path (hybrid hosts such as this one keep memory on v1).
    pub fn oom_kills(&self, hierarchy: &Hierarchy) -> Option<u64> {
        if let Ok(Some(n)) = read_key(&self.path.join("memory.events"), "oom_kill") {
            return Some(n);
        }
        let v1 = hierarchy.v1_memory.as_ref()?;
        read_key(&v1.join(&self.rel).join("memory.oom_control"), "oom_kill")
            .ok()
            .flatten()
    }

    /// The child cgroup `name`, resolved without re-checking the filesystem type.
    pub fn child(&self, name: &str) -> Result<Cgroup, Error> {
        let path = self.path.join(name);
        let meta = stat(&path)?;
        Ok(Cgroup {
            id: meta.ino(),
            level: self.level + 1,
            rel: self.rel.join(name),
            path,
        })
    }
}

fn stat(path: &Path) -> Result<fs::Metadata, Error> {
    fs::metadata(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => Error::NotFound {
            path: path.to_path_buf(),
        },
        _ => Error::Read {
            path: path.to_path_buf(),
            source,
        },
    })
}

fn collect_procs(dir: &Path, out: &mut Vec<u32>) -> Result<(), Error> {
    let procs = dir.join("cgroup.procs");
    match fs::read_to_string(&procs) {
        // A task of a PID namespace we cannot see reads as `0`: not a process of ours.
        Ok(text) => out.extend(
            text.lines()
                .filter_map(|l| l.trim().parse::<u32>().ok())
                .filter(|&pid| pid != 0),
        ),
        // Removed while we looked: no processes.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Read {
                path: procs,
                source,
            });
        }
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_procs(&entry.path(), out)?;
        }
    }
    Ok(())
}

/// Reads `key value` from a flat-keyed cgroup file; `None` when the file or key is absent.
fn read_key(path: &Path, key: &str) -> Result<Option<u64>, Error> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    Ok(parse_key(&text, key))
}

fn parse_key(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(char::is_whitespace)?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn depth(p: &Path) -> u32 {
    p.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count() as u32
}

fn fs_magic(path: &Path) -> Result<i64, Error> {
    use std::os::unix::ffi::OsStrExt as _;
    let mut c = path.as_os_str().as_bytes().to_vec();
    c.push(0);
    // SAFETY: `c` is NUL-terminated; `st` is a plain out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statfs(c.as_ptr().cast(), &mut st) };
    if rc != 0 {
        return Err(Error::Read {
            path: path.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(st.f_type as i64)
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_hybrid_and_namespaced() {
        let hybrid = "35 24 0:30 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let h = Hierarchy::from_mountinfo(hybrid, None).unwrap();
        assert_eq!(h.mount, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(h.root_level, 0);

        let ns = "50 40 0:27 /kubepods/pod1/abc /sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw\n";
        let h = Hierarchy::from_mountinfo(ns, None).unwrap();
        assert_eq!(h.mount, Path::new("/sys/fs/cgroup"));
        assert_eq!(h.root_level, 3);

        let v1 = "41 31 0:38 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert!(Hierarchy::from_mountinfo(v1, None).is_none());
        let both = format!("{v1}{hybrid}");
        let h = Hierarchy::from_mountinfo(&both, None).unwrap();
        assert_eq!(
            h.v1_memory.as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );

        let host = "60 40 0:27 / /host/sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let in_pod = format!("{ns}{host}");
        let under = Some(Path::new("/host/sys/fs/cgroup"));
        let h = Hierarchy::from_mountinfo(&in_pod, under).unwrap();
        assert_eq!(h.mount, Path::new("/host/sys/fs/cgroup"));
        assert_eq!(h.root_level, 0);
        assert!(Hierarchy::from_mountinfo(&in_pod, Some(Path::new("/elsewhere"))).is_none());
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo(r"/x\\"), r"/x\\");
    }

    #[test]
    fn flat_keyed_files() {
        let events = "populated 0\nfrozen 0\n";
        assert_eq!(parse_key(events, "populated"), Some(0));
        let oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(parse_key(oom, "oom_kill"), Some(2));
        assert_eq!(parse_key(oom, "oom"), None);
    }
}
