//! Command-line definitions. Flag names follow `flyte-copilot` where the
//! command exists there, so Flyte's pod plugin can run copilot unchanged.
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "copilot", version, about = "Flyte CoPilot rebuilt on eBPF", long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub root: RootArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts (persistent flags in `flyte-copilot`).
#[derive(clap::Args, Debug, Clone)]
pub struct RootArgs {
    /// Name of the error document written under the output prefix on failure.
    #[arg(long = "err-output-name", global = true, default_value = "errors.pb")]
    pub err_output_name: String,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing directive).
    #[arg(long = "log-level", global = true, env = "COPILOT_LOG")]
    pub log_level: Option<String>,
    /// flytestdlib's numeric log level as Flyte passes it (0 panic … 5 debug).
    #[arg(long = "logger.level", global = true, hide = true)]
    pub logger_level: Option<u8>,
    #[command(flatten)]
    pub storage: crate::storage::StorageArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print every exec and process exit in a pod (or any cgroup subtree), one JSON object a line.
    Trace(crate::trace::TraceArgs),
    /// Download a task's inputs to a local directory.
    Download(crate::download::DownloadArgs),
    /// Wait for the main container to exit, then upload its outputs.
    Sidecar(Box<crate::sidecar::SidecarArgs>),
    /// Succeed once `sidecar --ready-file` exists (a startup probe).
    Probe(crate::sidecar::ProbeArgs),
}

impl RootArgs {
    /// The tracing filter: `--log-level`, else Flyte's `--logger.level`, else `info`.
    pub fn log_filter(&self) -> String {
        if let Some(l) = &self.log_level {
            return l.clone();
        }
        match self.logger_level {
            Some(0..=2) => "error",
            Some(3) => "warn",
            Some(5..) => "debug",
            _ => "info",
        }
        .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn flyte_pod_plugin_command_lines_parse() {
        // What Flyte's pod plugin runs (flytek8s/copilot.go), with example values.
        let sidecar = Cli::try_parse_from([
            "copilot",
            "--storage.limits.maxDownloadMBs=0",
            "--logger.level=5",
            "--storage.type=s3",
            "--storage.stow.config",
            "region=us-east-1",
            "--storage.stow.kind=s3",
            "sidecar",
            "--timeout",
            "1h0m0s",
            "--to-raw-output",
            "s3://b/raw",
            "--to-output-prefix",
            "s3://b/out",
            "--from-local-dir",
            "/var/outputs",
            "--interface",
            "EgsKCQoBeBIECgIIAQ==",
        ])
        .unwrap();
        assert_eq!(sidecar.root.log_filter(), "debug");
        let Command::Sidecar(args) = sidecar.command else {
            panic!("not sidecar")
        };
        assert_eq!(args.timeout, std::time::Duration::from_secs(3600));
        let download = Cli::try_parse_from([
            "copilot",
            "--logger.level=4",
            "--storage.type=s3",
            "download",
            "--from-remote",
            "s3://b/in/inputs.pb",
            "--to-output-prefix",
            "s3://b/out",
            "--to-local-dir",
            "/var/inputs",
            "--format",
            "JSON",
            "--file-input-layout",
            "DIRECT",
            "--input-interface",
            "CgA=",
        ])
        .unwrap();
        assert_eq!(download.root.log_filter(), "info");
        assert_eq!(download.root.err_output_name, "errors.pb");
    }
}
