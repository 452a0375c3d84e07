//! `copilot sidecar`: wait for the main container to exit — seen in the kernel,
//! with its exit status — then upload what it left in the outputs folder as
//! Flyte literals, or an error document that says why there are none.
//!
//! Order of writes: blobs first, `outputs.pb` last, so a reader never sees
//! outputs that point at missing data. Exit code 0 after outputs or an error
//! document were written (Flyte reads the document); non-zero only when not even
//! the error document could be written.
//!
//! | module       | owns                                                        |
//! |--------------|-------------------------------------------------------------|
//! | `run`        | the top-level run: options, wait, upload, status, idle      |
//! | `watchers`   | running the watchers the flags ask for, and their fallback  |
//! | [`wait`]     | the watchers themselves (eBPF, SIGTERM, marker file)        |
//! | [`select`]   | which container of the pod is the main one (pure)           |
//! | `failure`    | the failure policy: which error document, with which code   |
//! | `ready`      | the ready file, written once no exit can be missed          |
//! | `probe`      | `copilot probe`, which succeeds once the ready file exists  |
//! | `term`       | the SIGTERM stream                                          |
//! | [`status`]   | the `--status-file` document                                |

mod failure;
mod probe;
mod ready;
mod run;
pub mod select;
pub mod status;
mod term;
pub mod wait;
mod watchers;

use std::{path::PathBuf, time::Duration};

use crate::literals::MetadataFormat;
use wait::WatcherType;

pub use probe::probe;
pub use run::run;

/// What `copilot sidecar` does (its flags, see `cli::sidecar`).
#[derive(Debug, Clone)]
pub struct Options {
    /// The error document's name under `to_output_prefix`.
    pub err_output_name: String,
    /// Where the node's shared eBPF program set is pinned.
    pub bpf_dir: PathBuf,
    /// Remote prefix for outputs.pb or the error document (e.g. s3://bucket/run/outputs).
    pub to_output_prefix: String,
    /// Remote prefix under which blobs are uploaded.
    pub to_raw_output: String,
    /// Local folder where the main container leaves its outputs.
    pub from_local_dir: PathBuf,
    /// The task's flyteidl.core.TypedInterface, serialized and base64 encoded.
    pub interface: Option<String>,
    /// Name of the outputs document under --to-output-prefix.
    pub meta_output_name: String,
    /// Longest time the upload may take (Go notation: 30s, 1m40s, 1h; 0 for no limit).
    pub timeout: Duration,
    /// Longest wait for the main container to start; 0 means no limit.
    pub start_timeout: Duration,
    /// Metadata format (accepted for compatibility: outputs are always written as
    /// outputs.pb). `Err` holds a value that names no format: checked after start,
    /// so it is an error document.
    pub format: Result<MetadataFormat, String>,
    /// Upload mode (accepted for compatibility: outputs are uploaded once, on exit).
    /// `Err` holds a value that names no mode: an error document, as in Go.
    pub upload_mode: Result<UploadMode, String>,
    /// How to learn that the main container started.
    pub start_watcher: WatcherType,
    /// How to learn that the main container exited.
    pub exit_watcher: WatcherType,
    /// The pod's cgroup (path in the v2 cgroupfs, or relative to its mount).
    pub pod_cgroup: Option<PathBuf>,
    /// The pod's UID (downward API: metadata.uid), searched under --cgroup-root.
    pub pod_uid: Option<String>,
    /// Where the host's cgroupfs is mounted in this container.
    pub cgroup_root: PathBuf,
    /// The main container's id (as in its cgroup name); default: the one other container.
    pub main_container_id: Option<String>,
    /// The main container's name (flyte-copilot compatibility); needs --main-container-id here.
    pub watch_container: Option<String>,
    /// Pod namespace (flyte-copilot compatibility).
    pub namespace: Option<String>,
    /// Pod name (flyte-copilot compatibility).
    pub pod_name: Option<String>,
    /// Written once the watcher is attached: from then on no exit can be missed.
    pub ready_file: Option<PathBuf>,
    /// What to do once the outputs or the error document are written: wait for SIGTERM
    /// (a native sidecar, which the kubelet restarts if it exits while the pod runs, as
    /// the Go binary does), or exit at once.
    pub after_upload: AfterUpload,
    /// Where to write the result as JSON (outcome, error code, how main ended, time
    /// from its exit to outputs.pb) once the outputs or error document are written.
    pub status_file: Option<PathBuf>,
}

/// See [`Options::after_upload`].
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterUpload {
    WaitForSigterm,
    Exit,
}

/// `--upload-mode`, as `flyte-copilot` spells it (any case). Every mode uploads
/// once, on exit.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadMode {
    #[value(name = "UPLOAD_ON_EXIT")]
    UploadOnExit,
    #[value(name = "UPLOAD_EAGER")]
    UploadEager,
    #[value(name = "DO_NOT_UPLOAD")]
    DoNotUpload,
}

/// Why not even the error document could be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage configuration")]
    Storage(#[from] crate::storage::ConfigError),
    #[error("--err-output-name {name:?} must be one plain file name")]
    ErrorName {
        name: String,
        #[source]
        source: crate::storage::StorageError,
    },
    #[error("installing the SIGTERM handler")]
    Signal(#[source] std::io::Error),
    #[error("writing the ready file {}", path.display())]
    Ready {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the error document to {url}")]
    ErrorDocument {
        url: String,
        #[source]
        source: crate::storage::StorageError,
    },
    #[error("writing the status file {}", path.display())]
    Status {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
