//! `copilot download`'s flags, compatible with `flyte-copilot download`.
use std::path::PathBuf;

use crate::{
    download::{Options, TERMINATION_LOG},
    literals::{Layout, MetadataFormat},
};

/// Flags of `copilot download`, compatible with `flyte-copilot download`.
#[derive(clap::Args, Debug, Clone)]
pub struct DownloadArgs {
    /// The remote inputs (a serialized LiteralMap), e.g. s3://bucket/…/inputs.pb.
    #[arg(short = 'f', long = "from-remote")]
    pub from_remote: String,
    /// The remote output prefix; the error document is written here on failure.
    #[arg(long = "to-output-prefix")]
    pub to_output_prefix: String,
    /// The local directory the inputs are written to.
    #[arg(short = 'o', long = "to-local-dir")]
    pub to_local_dir: PathBuf,
    /// Metadata written next to inputs.pb.
    #[arg(
        short = 'm',
        long = "format",
        value_enum,
        default_value = "JSON",
        ignore_case = true
    )]
    pub format: MetadataFormat,
    /// Accepted for compatibility: inputs are always downloaded eagerly.
    #[arg(short = 'd', long = "download-mode", default_value = "DOWNLOAD_EAGER")]
    pub download_mode: String,
    /// How single-file inputs are laid out.
    #[arg(
        long = "file-input-layout",
        value_enum,
        default_value = "DIRECT",
        ignore_case = true
    )]
    pub file_input_layout: Layout,
    /// The longest the download may take (Go duration, e.g. 1h, 30m; 0 for no limit).
    #[arg(short = 't', long = "timeout", default_value = "1h")]
    pub timeout: String,
    /// The input interface: a base64 serialized flyteidl.core.VariableMap.
    #[arg(short = 'i', long = "input-interface")]
    pub input_interface: Option<String>,
    /// Where the kubelet reads a container's termination message. On failure the
    /// one-line cause is written there if the file exists (never created).
    #[arg(long = "termination-log", default_value = TERMINATION_LOG, hide = true)]
    pub termination_log: PathBuf,
}

impl DownloadArgs {
    /// The command's options; the error document is named by the root flags.
    pub fn into_options(self, err_output_name: String) -> Options {
        Options {
            from_remote: self.from_remote,
            to_output_prefix: self.to_output_prefix,
            err_output_name,
            to_local_dir: self.to_local_dir,
            format: self.format,
            download_mode: super::checked_later(&self.download_mode, false),
            file_input_layout: self.file_input_layout,
            timeout: self.timeout,
            input_interface: self.input_interface,
            termination_log: self.termination_log,
        }
    }
}
