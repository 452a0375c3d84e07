//! Descriptor-relative access to a folder that untrusted code can change while
//! copilot reads it (the task's outputs folder: a process of the task may still
//! run after the main process exits).
//!
//! Every lookup is one `openat2(2)` relative to the folder's descriptor with
//! `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`: the kernel refuses, during the
//! lookup itself, any `..` or symlink that would leave the folder, so there is no
//! window between a check and a use. A symlink that stays inside is followed.
//! A node is first opened with `O_PATH` (which never blocks and never runs a
//! device's `open`), its type taken with `fstat` on that descriptor, and only a
//! regular file is then opened for reading — and the second descriptor must be
//! the same inode, or the read is refused as a race. Needs Linux 5.6 (openat2).
use std::{
    ffi::OsString,
    fs::File,
    io::Read as _,
    os::{fd::OwnedFd, unix::ffi::OsStringExt as _},
    path::{Path, PathBuf},
};

use rustix::{
    fs::{Dir, FileType, Mode, OFlags, ResolveFlags, Stat},
    io::Errno,
};

/// A lookup below the folder that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum BeneathError {
    #[error("{path} leads outside {root} (a symlink or `..` that escapes)")]
    Escapes { path: PathBuf, root: PathBuf },
    #[error("{path} is a {found}, not a regular file or directory")]
    Special { path: PathBuf, found: &'static str },
    #[error("{path} changed while it was being opened (replaced by another file)")]
    Raced { path: PathBuf },
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a path below the folder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// A regular file of this many bytes.
    File(u64),
    Dir,
}

/// An open folder; every path given to its methods is relative to it.
#[derive(Debug)]
pub struct Beneath {
    root: OwnedFd,
    path: PathBuf,
}

fn resolve() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
}

fn file_kind(stat: &Stat) -> Result<Node, &'static str> {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => Ok(Node::File(u64::try_from(stat.st_size).unwrap_or(0))),
        FileType::Directory => Ok(Node::Dir),
        FileType::Symlink => Err("symlink"),
        FileType::Fifo => Err("FIFO"),
        FileType::Socket => Err("socket"),
        FileType::CharacterDevice => Err("character device"),
        FileType::BlockDevice => Err("block device"),
        FileType::Unknown => Err("file of unknown type"),
    }
}

impl Beneath {
    /// Opens the folder `path` itself (which the caller chose, so it may be a symlink).
    pub fn open(path: &Path) -> Result<Self, BeneathError> {
        let fd = rustix::fs::open(
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| BeneathError::Io {
            op: "open the folder",
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(Self {
            root: fd,
            path: path.to_path_buf(),
        })
    }

    /// The folder as the caller named it.
    pub fn root(&self) -> &Path {
        &self.path
    }

    /// `rel` as a path under the folder, for messages.
    pub fn display(&self, rel: &Path) -> PathBuf {
        self.path.join(rel)
    }

    fn openat(&self, rel: &Path, flags: OFlags) -> Result<Option<OwnedFd>, BeneathError> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        match rustix::fs::openat2(
            &self.root,
            rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            resolve(),
        ) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT) => Ok(None),
            // EXDEV: the lookup would leave the folder; ELOOP: a magic link (or a loop).
            Err(Errno::XDEV | Errno::LOOP) => Err(BeneathError::Escapes {
                path: self.display(rel),
                root: self.path.clone(),
            }),
            Err(e) => Err(BeneathError::Io {
                op: "open",
                path: self.display(rel),
                source: e.into(),
            }),
        }
    }

    fn fstat(&self, fd: &OwnedFd, rel: &Path) -> Result<Stat, BeneathError> {
        rustix::fs::fstat(fd).map_err(|e| BeneathError::Io {
            op: "inspect",
            path: self.display(rel),
            source: e.into(),
        })
    }

    /// What `rel` is, or `None` when nothing is there.
    pub fn stat(&self, rel: &Path) -> Result<Option<Node>, BeneathError> {
        let Some(fd) = self.openat(rel, OFlags::PATH)? else {
            return Ok(None);
        };
        let stat = self.fstat(&fd, rel)?;
        file_kind(&stat)
            .map(Some)
            .map_err(|found| BeneathError::Special {
                path: self.display(rel),
                found,
            })
    }

    /// Opens the regular file `rel` for reading; `None` when nothing is there.
    pub fn open_file(&self, rel: &Path) -> Result<Option<(File, u64)>, BeneathError> {
        let Some(probe) = self.openat(rel, OFlags::PATH)? else {
            return Ok(None);
        };
        let first = self.fstat(&probe, rel)?;
        let special = |found| BeneathError::Special {
            path: self.display(rel),
            found,
        };
        if file_kind(&first).map_err(special)? == Node::Dir {
            return Err(special("directory"));
        }
        // O_NONBLOCK: should a FIFO be swapped in after the probe, open does not wait for
        // a writer; the inode comparison below then refuses it.
        let Some(fd) = self.openat(rel, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY)? else {
            return Err(BeneathError::Raced {
                path: self.display(rel),
            });
        };
        let second = self.fstat(&fd, rel)?;
        if (second.st_dev, second.st_ino) != (first.st_dev, first.st_ino) {
            return Err(BeneathError::Raced {
                path: self.display(rel),
            });
        }
        let size = u64::try_from(second.st_size).unwrap_or(0);
        Ok(Some((File::from(fd), size)))
    }

    /// Reads at most `limit` bytes of the regular file `rel`; the flag says whether
    /// the file held more.
    pub fn read_prefix(
        &self,
        rel: &Path,
        limit: u64,
    ) -> Result<Option<(Vec<u8>, bool)>, BeneathError> {
        let Some((file, _)) = self.open_file(rel)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        file.take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|source| BeneathError::Io {
                op: "read",
                path: self.display(rel),
                source,
            })?;
        let longer = bytes.len() as u64 > limit;
        bytes.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(Some((bytes, longer)))
    }

    /// The entry names of the directory `rel` (without `.` and `..`), unsorted.
    pub fn list(&self, rel: &Path) -> Result<Vec<OsString>, BeneathError> {
        let io = |op, e: Errno| BeneathError::Io {
            op,
            path: self.display(rel),
            source: e.into(),
        };
        let fd = self
            .openat(rel, OFlags::RDONLY | OFlags::DIRECTORY)?
            .ok_or_else(|| io("list", Errno::NOENT))?;
        let dir = Dir::new(fd).map_err(|e| io("list", e))?;
        let mut names = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| io("list", e))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name.to_vec()));
            }
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn tree() -> (tempfile::TempDir, tempfile::TempDir, Beneath) {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "outside").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/f"), "inside").unwrap();
        let b = Beneath::open(dir.path()).unwrap();
        (dir, outside, b)
    }

    #[test]
    fn reads_files_and_symlinks_that_stay_inside() {
        let (dir, _outside, b) = tree();
        symlink("sub/f", dir.path().join("link")).unwrap();
        assert_eq!(b.stat(Path::new("sub")).unwrap(), Some(Node::Dir));
        assert_eq!(b.stat(Path::new("sub/f")).unwrap(), Some(Node::File(6)));
        assert_eq!(b.stat(Path::new("none")).unwrap(), None);
        let (bytes, longer) = b.read_prefix(Path::new("link"), 100).unwrap().unwrap();
        assert_eq!((bytes.as_slice(), longer), (&b"inside"[..], false));
        let (bytes, longer) = b.read_prefix(Path::new("sub/f"), 3).unwrap().unwrap();
        assert_eq!((bytes.as_slice(), longer), (&b"ins"[..], true));
        let mut names = b.list(Path::new("")).unwrap();
        names.sort();
        assert_eq!(names, ["link", "sub"]);
    }

    #[test]
    fn escapes_are_refused_by_the_kernel() {
        let (dir, outside, b) = tree();
        symlink(outside.path().join("secret"), dir.path().join("abs")).unwrap();
        symlink("../../../../../../../etc/passwd", dir.path().join("rel")).unwrap();
        symlink(outside.path(), dir.path().join("dirlink")).unwrap();
        symlink("/proc/self/root/etc/passwd", dir.path().join("magic")).unwrap();
        for name in ["abs", "rel", "dirlink/secret", "magic", "../x"] {
            let err = b.read_prefix(Path::new(name), 100).unwrap_err();
            assert!(matches!(err, BeneathError::Escapes { .. }), "{name}: {err}");
        }
        assert!(matches!(
            b.list(Path::new("dirlink")),
            Err(BeneathError::Escapes { .. })
        ));
    }

    #[test]
    fn special_files_are_never_opened() {
        let (dir, _outside, b) = tree();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // A blocking open of a FIFO with no writer would hang this test.
        let err = b.read_prefix(Path::new("fifo"), 10).unwrap_err();
        assert!(
            matches!(err, BeneathError::Special { found: "FIFO", .. }),
            "{err}"
        );
        let err = b.open_file(Path::new("sub")).unwrap_err();
        assert!(
            matches!(
                err,
                BeneathError::Special {
                    found: "directory",
                    ..
                }
            ),
            "{err}"
        );
    }
}
