//! A `file://` store holding one `inputs.pb`, and the folders of one
//! `copilot download` from it (`$COPILOT_BIN`): this crate's twin of copilot's own
//! test fixture (`copilot/tests/it/support/task.rs`), which needs its crate's binary.
use std::{path::PathBuf, process::Command};

use copilot::proto::core::{ErrorDocument, LiteralMap};
use prost::Message as _;

use crate::copilot_bin;

/// `<root>/store/inputs.pb` (with `<root>/store/out` for the error document) and the
/// inputs folder `<root>/inputs`.
pub struct FileTask {
    root: tempfile::TempDir,
}

impl FileTask {
    pub fn new(inputs: &LiteralMap) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("store/out")).expect("mkdir");
        std::fs::write(root.path().join("store/inputs.pb"), inputs.encode_to_vec())
            .expect("write inputs.pb");
        Self { root }
    }

    /// The store folder (`file://` + this is the store's root URL).
    pub fn store(&self) -> PathBuf {
        self.root.path().join("store")
    }

    pub fn inputs_dir(&self) -> PathBuf {
        self.root.path().join("inputs")
    }

    /// `copilot download` from this store into the inputs folder; callers add flags,
    /// environment and stdio.
    pub fn download(&self) -> Command {
        let store = self.store();
        let mut cmd = Command::new(copilot_bin());
        cmd.arg("download")
            .arg("--from-remote")
            .arg(format!("file://{}/inputs.pb", store.display()))
            .arg("--to-output-prefix")
            .arg(format!("file://{}/out", store.display()))
            .arg("--to-local-dir")
            .arg(self.inputs_dir());
        cmd
    }

    /// The error document the download wrote (panics if there is none).
    pub fn error_document(&self) -> ErrorDocument {
        let path = self.store().join("out/errors.pb");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        ErrorDocument::decode(bytes.as_slice()).expect("errors.pb decodes")
    }
}
