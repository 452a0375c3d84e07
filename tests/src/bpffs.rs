//! A BPF filesystem of the test's own: a node, as far as copilot's shared program
//! set is concerned, that no other test shares.

use std::path::{Path, PathBuf};

/// bpffs mounted on a temporary directory; unmounted on drop, which unpins (and,
/// once no copilot holds them, frees and detaches) everything pinned in it.
pub struct Bpffs {
    dir: tempfile::TempDir,
}

impl Bpffs {
    pub fn new() -> Self {
        crate::env::preflight();
        let dir = tempfile::Builder::new()
            .prefix("copilot-bpffs-")
            .tempdir()
            .expect("temporary directory");
        let status = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mount -t bpf on {}: {status}",
            dir.path().display()
        );
        Self { dir }
    }

    /// Where copilot is told to pin its node set (`--bpf-dir`).
    pub fn node_dir(&self) -> PathBuf {
        self.dir.path().join("copilot")
    }

    /// The one program set pinned there (`<node_dir>/<object hash>`); panics unless
    /// there is exactly one.
    pub fn set_dir(&self) -> PathBuf {
        let sets: Vec<PathBuf> = std::fs::read_dir(self.node_dir())
            .unwrap_or_else(|e| panic!("listing {}: {e}", self.node_dir().display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        assert_eq!(sets.len(), 1, "one set under the node dir: {sets:?}");
        sets.into_iter().next().expect("one")
    }

    /// Names in the set directory, sorted.
    pub fn set_entries(&self) -> Vec<String> {
        list(&self.set_dir())
    }
}

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

impl Default for Bpffs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l"])
            .arg(self.dir.path())
            .status();
    }
}
