//! `copilot sidecar` and `copilot probe` flags, compatible with
//! `flyte-copilot sidecar`.
use std::{path::PathBuf, time::Duration};

use crate::{
    duration,
    sidecar::{AfterUpload, Options, wait::WatcherType},
};

/// Flags of `copilot sidecar`, compatible with `flyte-copilot sidecar`.
#[derive(clap::Args, Debug, Clone)]
pub struct SidecarArgs {
    /// Remote prefix for outputs.pb or the error document (e.g. s3://bucket/run/outputs).
    #[arg(short = 'o', long = "to-output-prefix")]
    pub to_output_prefix: String,
    /// Remote prefix under which blobs are uploaded.
    #[arg(short = 'x', long = "to-raw-output")]
    pub to_raw_output: String,
    /// Local folder where the main container leaves its outputs.
    #[arg(short = 'f', long = "from-local-dir")]
    pub from_local_dir: PathBuf,
    /// The task's flyteidl.core.TypedInterface, serialized and base64 encoded.
    #[arg(short = 'i', long = "interface")]
    pub interface: Option<String>,
    /// Name of the outputs document under --to-output-prefix.
    #[arg(long = "meta-output-name", default_value = "outputs.pb")]
    pub meta_output_name: String,
    /// Longest time the upload may take (Go notation: 30s, 1m40s, 1h; 0 for no limit).
    #[arg(short = 't', long = "timeout", default_value = "1h", value_parser = duration::flag)]
    pub timeout: Duration,
    /// Longest wait for the main container to start; 0 means no limit.
    #[arg(long = "start-timeout", env = "COPILOT_START_TIMEOUT", default_value = "0", value_parser = duration::flag)]
    pub start_timeout: Duration,
    /// Metadata format (JSON, YAML, PROTO; accepted for compatibility: outputs are
    /// always written as outputs.pb). Checked after start, so a bad value is an error document.
    #[arg(short = 'm', long = "format", default_value = "JSON")]
    pub format: String,
    /// Upload mode (UPLOAD_ON_EXIT, UPLOAD_EAGER, DO_NOT_UPLOAD; accepted for compatibility:
    /// outputs are uploaded once, on exit). A bad value is an error document, as in Go.
    #[arg(short = 'u', long = "upload-mode", default_value = "UPLOAD_ON_EXIT")]
    pub upload_mode: String,
    /// How to learn that the main container started.
    #[arg(
        long = "start-watcher-type",
        value_enum,
        default_value = "ebpf",
        ignore_case = true
    )]
    pub start_watcher: WatcherType,
    /// How to learn that the main container exited.
    #[arg(
        long = "exit-watcher-type",
        value_enum,
        default_value = "ebpf",
        ignore_case = true
    )]
    pub exit_watcher: WatcherType,
    /// The pod's cgroup (path in the v2 cgroupfs, or relative to its mount).
    #[arg(long)]
    pub pod_cgroup: Option<PathBuf>,
    /// The pod's UID (downward API: metadata.uid), searched under --cgroup-root.
    #[arg(long, env = "POD_UID")]
    pub pod_uid: Option<String>,
    /// Where the host's cgroupfs is mounted in this container.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
    /// The main container's id (as in its cgroup name); default: the one other container.
    #[arg(long)]
    pub main_container_id: Option<String>,
    /// The main container's name (flyte-copilot compatibility); needs --main-container-id here.
    #[arg(long = "watch-container")]
    pub watch_container: Option<String>,
    /// Pod namespace (flyte-copilot compatibility).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// Pod name (flyte-copilot compatibility).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Written once the watcher is attached: from then on no exit can be missed.
    #[arg(long, env = "COPILOT_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// What to do once the outputs or the error document are written: wait for SIGTERM
    /// (a native sidecar, which the kubelet restarts if it exits while the pod runs, as
    /// the Go binary does), or exit at once.
    #[arg(
        long,
        env = "COPILOT_AFTER_UPLOAD",
        value_enum,
        default_value = "wait-for-sigterm"
    )]
    pub after_upload: AfterUpload,
    /// Where to write the result as JSON (outcome, error code, how main ended, time
    /// from its exit to outputs.pb) once the outputs or error document are written.
    #[arg(long, env = "COPILOT_STATUS_FILE")]
    pub status_file: Option<PathBuf>,
}

impl SidecarArgs {
    /// The command's options, with the root flags it needs.
    pub fn into_options(self, err_output_name: String, bpf_dir: PathBuf) -> Options {
        Options {
            err_output_name,
            bpf_dir,
            to_output_prefix: self.to_output_prefix,
            to_raw_output: self.to_raw_output,
            from_local_dir: self.from_local_dir,
            interface: self.interface,
            meta_output_name: self.meta_output_name,
            timeout: self.timeout,
            start_timeout: self.start_timeout,
            format: super::checked_later(&self.format, true),
            upload_mode: super::checked_later(&self.upload_mode, true),
            start_watcher: self.start_watcher,
            exit_watcher: self.exit_watcher,
            pod_cgroup: self.pod_cgroup,
            pod_uid: self.pod_uid,
            cgroup_root: self.cgroup_root,
            main_container_id: self.main_container_id,
            watch_container: self.watch_container,
            namespace: self.namespace,
            pod_name: self.pod_name,
            ready_file: self.ready_file,
            after_upload: self.after_upload,
            status_file: self.status_file,
        }
    }
}

/// `copilot probe`: succeeds once the sidecar is ready (for a startup probe).
#[derive(clap::Args, Debug, Clone)]
pub struct ProbeArgs {
    /// The file `copilot sidecar --ready-file` writes.
    #[arg(long, env = "COPILOT_READY_FILE")]
    pub ready_file: PathBuf,
}
