//! A writer for the "newc" cpio format, the only one the kernel's initramfs unpacker reads
//! (Documentation/driver-api/early-userspace/buffer-format.rst).
//!
//! The kernel does not create missing parent directories while unpacking, so
//! [`Archive`] collects entries first and writes them sorted by path: `Path`'s ordering is
//! component-wise, which puts every directory before what it contains. Missing parents are
//! added as directories.
use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, BufWriter, Write},
    path::{Component, Path, PathBuf},
};

use anyhow::{Context as _, bail};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// What one archive entry is.
#[derive(Debug, Clone)]
enum Entry {
    Dir {
        mode: u32,
    },
    /// Contents read from `source` when the archive is written.
    File {
        source: PathBuf,
        mode: u32,
    },
    Data {
        data: Vec<u8>,
        mode: u32,
    },
    Symlink {
        target: PathBuf,
    },
    CharDev {
        mode: u32,
        major: u32,
        minor: u32,
    },
}

/// An initramfs under construction: paths are absolute inside the guest.
#[derive(Debug, Default)]
pub struct Archive {
    entries: BTreeMap<PathBuf, Entry>,
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether something was added at `path` (exactly, not as a parent).
    pub fn contains(&self, path: &Path) -> bool {
        self.entries.contains_key(&relative(path))
    }

    pub fn dir(&mut self, path: impl AsRef<Path>, mode: u32) {
        self.entries
            .insert(relative(path.as_ref()), Entry::Dir { mode });
    }

    /// A regular file copied from the host file `source`.
    pub fn file(&mut self, path: impl AsRef<Path>, source: impl Into<PathBuf>, mode: u32) {
        let source = source.into();
        self.entries
            .insert(relative(path.as_ref()), Entry::File { source, mode });
    }

    /// A regular file with the given contents.
    pub fn data(&mut self, path: impl AsRef<Path>, data: impl Into<Vec<u8>>, mode: u32) {
        let data = data.into();
        self.entries
            .insert(relative(path.as_ref()), Entry::Data { data, mode });
    }

    pub fn symlink(&mut self, path: impl AsRef<Path>, target: impl Into<PathBuf>) {
        let target = target.into();
        self.entries
            .insert(relative(path.as_ref()), Entry::Symlink { target });
    }

    pub fn char_dev(&mut self, path: impl AsRef<Path>, mode: u32, major: u32, minor: u32) {
        self.entries.insert(
            relative(path.as_ref()),
            Entry::CharDev { mode, major, minor },
        );
    }

    /// Writes the archive (uncompressed: the kernel takes it as is, and compressing
    /// 100+ MiB of binaries costs more time here than unpacking saves in the guest).
    pub fn write(mut self, out: &Path) -> anyhow::Result<()> {
        // Every parent of every entry must be a directory entry of its own.
        let parents: Vec<PathBuf> = self
            .entries
            .keys()
            .flat_map(|p| p.ancestors().skip(1).map(Path::to_path_buf))
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        for p in parents {
            self.entries.entry(p).or_insert(Entry::Dir { mode: 0o755 });
        }
        let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut w = Writer {
            out: BufWriter::with_capacity(1 << 20, file),
            ino: 0,
        };
        for (path, entry) in &self.entries {
            w.entry(path, entry)
                .with_context(|| format!("adding /{} to {}", path.display(), out.display()))?;
        }
        w.header("TRAILER!!!", 0, 0, 0, (0, 0))?;
        w.out
            .flush()
            .with_context(|| format!("writing {}", out.display()))?;
        Ok(())
    }
}

/// `/a/b` → `a/b`: cpio names are relative to the root.
fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

struct Writer {
    out: BufWriter<File>,
    ino: u32,
}

impl Writer {
    fn entry(&mut self, path: &Path, entry: &Entry) -> anyhow::Result<()> {
        let name = path.to_str().context("non-UTF-8 path")?;
        match entry {
            Entry::Dir { mode } => self.header(name, S_IFDIR | mode, 2, 0, (0, 0)),
            Entry::Data { data, mode } => {
                self.header(name, S_IFREG | mode, 1, data.len(), (0, 0))?;
                self.out.write_all(data)?;
                self.pad(data.len())
            }
            Entry::Symlink { target } => {
                let target = target.to_str().context("non-UTF-8 symlink target")?;
                self.header(name, S_IFLNK | 0o777, 1, target.len(), (0, 0))?;
                self.out.write_all(target.as_bytes())?;
                self.pad(target.len())
            }
            Entry::CharDev { mode, major, minor } => {
                self.header(name, S_IFCHR | mode, 1, 0, (*major, *minor))
            }
            Entry::File { source, mode } => {
                let mut file =
                    File::open(source).with_context(|| format!("opening {}", source.display()))?;
                let len = file
                    .metadata()
                    .with_context(|| format!("stat {}", source.display()))?
                    .len();
                let len = usize::try_from(len)?;
                self.header(name, S_IFREG | mode, 1, len, (0, 0))?;
                let copied = io::copy(&mut file, &mut self.out)
                    .with_context(|| format!("copying {}", source.display()))?;
                if copied != len as u64 {
                    bail!(
                        "{} changed size while being archived ({len} → {copied} bytes)",
                        source.display()
                    );
                }
                self.pad(len)
            }
        }
    }

    /// The 110-byte newc header and the NUL-terminated name, padded to 4 bytes.
    fn header(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        size: usize,
        rdev: (u32, u32),
    ) -> anyhow::Result<()> {
        let size = u32::try_from(size).context("cpio newc files are limited to 4 GiB")?;
        self.ino += 1;
        let namesize = name.len() + 1;
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed, so the archive is reproducible
            size,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            u32::try_from(namesize)?,
            0, // check: only the "070702" format uses it
        ];
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        for f in fields {
            header.push_str(&format!("{f:08x}"));
        }
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(110 + namesize)
    }

    fn pad(&mut self, len: usize) -> anyhow::Result<()> {
        let n = (4 - len % 4) % 4;
        self.out.write_all(&[0; 3][..n])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fields of each header in a written archive: (name, mode, filesize, data).
    fn parse(bytes: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        let align = |n: usize| n.div_ceil(4) * 4;
        loop {
            let h = std::str::from_utf8(&bytes[at..at + 110]).unwrap();
            assert_eq!(&h[..6], "070701");
            let field = |i: usize| u32::from_str_radix(&h[6 + 8 * i..14 + 8 * i], 16).unwrap();
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
            let name = std::str::from_utf8(&bytes[at + 110..at + 110 + namesize - 1])
                .unwrap()
                .to_string();
            at = align(at + 110 + namesize);
            let data = bytes[at..at + size].to_vec();
            at = align(at + size);
            if name == "TRAILER!!!" {
                return out;
            }
            out.push((name, mode, data));
        }
    }

    #[test]
    fn parents_come_first_and_padding_is_right() {
        let dir = std::env::temp_dir().join(format!("cpio-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("src");
        std::fs::write(&src, b"hello").unwrap();
        let mut a = Archive::new();
        a.file("/usr/bin/x", &src, 0o755);
        a.data("/init", b"#!/bin/sh\n".to_vec(), 0o755);
        a.symlink("/bin", "usr/bin");
        a.char_dev("/dev/console", 0o600, 5, 1);
        let out = dir.join("out.cpio");
        a.write(&out).unwrap();
        let entries = parse(&std::fs::read(&out).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "dev",
                "dev/console",
                "init",
                "usr",
                "usr/bin",
                "usr/bin/x"
            ]
        );
        assert_eq!(entries[0].1, S_IFLNK | 0o777);
        assert_eq!(entries[0].2, b"usr/bin");
        assert_eq!(entries[1].1, S_IFDIR | 0o755);
        assert_eq!(entries[2].1, S_IFCHR | 0o600);
        assert_eq!(entries[6].2, b"hello");
    }
}
