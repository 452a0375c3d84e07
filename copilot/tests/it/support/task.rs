//! A `file://` store holding one `inputs.pb`, and the folders of one
//! `copilot download` from it: the fixture every download test of this crate starts
//! from.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use copilot::proto::core::{ErrorDocument, LiteralMap};
use prost::Message as _;

/// `<root>/store/inputs.pb` (with `<root>/store/out` for the error document), the
/// inputs folder `<root>/inputs`, and room for more files under `<root>`.
pub struct Task {
    root: tempfile::TempDir,
}

impl Task {
    pub fn new(inputs: &LiteralMap) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("store/out")).expect("mkdir");
        std::fs::write(root.path().join("store/inputs.pb"), inputs.encode_to_vec()).expect("write");
        Self { root }
    }

    /// `<root>/name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    pub fn inputs_dir(&self) -> PathBuf {
        self.path("inputs")
    }

    /// The words of `copilot download` from this store into the inputs folder,
    /// the binary first.
    pub fn download_words(&self) -> Vec<String> {
        let store = self.path("store");
        vec![
            env!("CARGO_BIN_EXE_copilot").to_owned(),
            "download".into(),
            "--from-remote".into(),
            format!("file://{}/inputs.pb", store.display()),
            "--to-output-prefix".into(),
            format!("file://{}/out", store.display()),
            "--to-local-dir".into(),
            self.inputs_dir().display().to_string(),
        ]
    }

    /// `copilot download` from this store into the inputs folder; callers add flags,
    /// environment and stdio.
    pub fn download(&self) -> Command {
        let words = self.download_words();
        let mut cmd = Command::new(&words[0]);
        cmd.args(&words[1..]);
        cmd
    }

    /// The error document the download wrote (panics if there is none).
    pub fn error_document(&self) -> ErrorDocument {
        let path = self.path("store/out/errors.pb");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        ErrorDocument::decode(bytes.as_slice()).expect("errors.pb decodes")
    }

    /// Staging folders left in the inputs folder.
    pub fn staging(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.inputs_dir())
            .map(|rd| {
                rd.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(".copilot-staging-"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Everything in the inputs folder, recursively, as sorted relative paths.
    pub fn inputs_tree(&self) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries {
                let path = entry.expect("entry").path();
                let relative = path.strip_prefix(root).expect("under root");
                out.push(relative.display().to_string());
                if path.is_dir() {
                    walk(root, &path, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.inputs_dir(), &self.inputs_dir(), &mut out);
        out.sort();
        out
    }
}
