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
    #[arg(
        long = "log-level",
        global = true,
        env = "COPILOT_LOG",
        default_value = "info"
    )]
    pub log_level: String,
    #[command(flatten)]
    pub storage: crate::storage::StorageArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print every exec and process exit in a pod (or any cgroup subtree), one JSON object a line.
    Trace(crate::trace::TraceArgs),
    /// Download a task's inputs to a local directory.
    Download(crate::download::DownloadArgs),
}
