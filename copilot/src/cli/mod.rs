//! The command line, and nothing else uses clap's definitions: flag names
//! follow `flyte-copilot` where the command exists there, so Flyte's pod plugin
//! can run copilot unchanged. Each command gets plain options and a built
//! [`Store`]; [`run`] dispatches.
pub mod download;
pub mod sidecar;
pub mod storage;
pub mod trace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::storage::Store;

#[derive(Parser, Debug)]
#[command(name = "copilot", version = version(), about = "Flyte CoPilot rebuilt on eBPF", long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub root: RootArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// What `copilot --version` prints after the name: the crate version and the hash of
/// the eBPF object (the name of the node's program set), e.g.
/// `0.1.0 (eBPF object 0123456789abcdef)`.
fn version() -> &'static str {
    static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let object = match crate::tracer::object_hash() {
            Some(hash) => format!("eBPF object {hash}"),
            None => "no eBPF object: built with AYA_BUILD_SKIP=1".to_owned(),
        };
        format!("{} ({object})", env!("CARGO_PKG_VERSION"))
    });
    VERSION.as_str()
}

/// A flag value that `flyte-copilot` checks only once the command runs: read as
/// `T` here, or kept as given (`Err`) for the command to report in its error
/// document.
fn checked_later<T: clap::ValueEnum>(value: &str, ignore_case: bool) -> Result<T, String> {
    T::from_str(value, ignore_case).map_err(|_| value.to_owned())
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
    /// Where the node's shared eBPF program set is pinned (a directory on bpffs,
    /// made if missing). Where it cannot be used, copilot loads programs of its own.
    #[arg(long = "bpf-dir", global = true, env = "COPILOT_BPF_DIR",
          default_value = crate::tracer::DEFAULT_NODE_DIR, value_name = "DIR")]
    pub bpf_dir: std::path::PathBuf,
    #[command(flatten)]
    pub storage: storage::StorageArgs,
    #[command(flatten)]
    pub ignored: IgnoredArgs,
}

/// flytestdlib and klog flags that `flyte-copilot` accepts (they are registered
/// on its root command) and that mean nothing here: accepted so that any command
/// line written for the Go binary parses, and listed in one debug line.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct IgnoredArgs {
    #[arg(long = "logger.formatter.type", global = true, hide = true)]
    logger_formatter: Option<String>,
    #[arg(long = "logger.show-source", global = true, hide = true, num_args = 0..=1,
          default_missing_value = "true", require_equals = true)]
    logger_show_source: Option<String>,
    #[arg(long = "logger.mute", global = true, hide = true, num_args = 0..=1,
          default_missing_value = "true", require_equals = true)]
    logger_mute: Option<String>,
    #[arg(long = "storage.cache.max_size_mbs", global = true, hide = true)]
    cache_max_size: Option<String>,
    #[arg(long = "storage.cache.target_gc_percent", global = true, hide = true)]
    cache_gc_percent: Option<String>,
    #[arg(long = "storage.defaultHttpClient.timeout", global = true, hide = true)]
    http_client_timeout: Option<String>,
    #[arg(long = "v", global = true, hide = true)]
    klog_v: Option<String>,
    #[arg(long = "vmodule", global = true, hide = true)]
    klog_vmodule: Option<String>,
    #[arg(long = "logtostderr", global = true, hide = true, num_args = 0..=1,
          default_missing_value = "true", require_equals = true)]
    klog_logtostderr: Option<String>,
    #[arg(long = "alsologtostderr", global = true, hide = true, num_args = 0..=1,
          default_missing_value = "true", require_equals = true)]
    klog_alsologtostderr: Option<String>,
    #[arg(long = "stderrthreshold", global = true, hide = true)]
    klog_stderrthreshold: Option<String>,
    #[arg(long = "log_dir", global = true, hide = true)]
    klog_log_dir: Option<String>,
    #[arg(long = "log_file", global = true, hide = true)]
    klog_log_file: Option<String>,
}

impl IgnoredArgs {
    /// The flags given, for the debug line.
    pub fn given(&self) -> Vec<&'static str> {
        [
            ("--logger.formatter.type", self.logger_formatter.is_some()),
            ("--logger.show-source", self.logger_show_source.is_some()),
            ("--logger.mute", self.logger_mute.is_some()),
            (
                "--storage.cache.max_size_mbs",
                self.cache_max_size.is_some(),
            ),
            (
                "--storage.cache.target_gc_percent",
                self.cache_gc_percent.is_some(),
            ),
            (
                "--storage.defaultHttpClient.timeout",
                self.http_client_timeout.is_some(),
            ),
            ("--v", self.klog_v.is_some()),
            ("--vmodule", self.klog_vmodule.is_some()),
            ("--logtostderr", self.klog_logtostderr.is_some()),
            ("--alsologtostderr", self.klog_alsologtostderr.is_some()),
            ("--stderrthreshold", self.klog_stderrthreshold.is_some()),
            ("--log_dir", self.klog_log_dir.is_some()),
            ("--log_file", self.klog_log_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, set)| set.then_some(flag))
        .collect()
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print every exec and process exit in a pod (or any cgroup subtree), one JSON object a line.
    Trace(trace::TraceArgs),
    /// Download a task's inputs to a local directory.
    Download(download::DownloadArgs),
    /// Wait for the main container to exit, then upload its outputs.
    Sidecar(Box<sidecar::SidecarArgs>),
    /// Succeed once `sidecar --ready-file` exists (a startup probe).
    Probe(sidecar::ProbeArgs),
}

/// Runs the command `cli` names. A download that fails prints its cause and
/// exits with its own code (1, or 128 + the signal that stopped it).
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let root = cli.root;
    match cli.command {
        Command::Trace(args) => Ok(crate::trace::run(args.into_options(root.bpf_dir)).await?),
        Command::Probe(args) => Ok(crate::sidecar::probe(&args.ready_file)),
        Command::Sidecar(args) => {
            let store = Store::new(
                root.storage
                    .to_config()
                    .map_err(crate::sidecar::Error::from)?,
            );
            let opts = args.into_options(root.err_output_name, root.bpf_dir);
            Ok(crate::sidecar::run(&store, opts).await?)
        }
        Command::Download(args) => {
            let opts = args.into_options(root.err_output_name);
            let outcome = match root.storage.to_config() {
                Ok(config) => crate::download::run(&Store::new(config), &opts).await,
                Err(e) => Err(e.into()),
            };
            Ok(outcome.map_or_else(
                |e| {
                    let code = e.exit_code();
                    eprintln!("copilot: {:#}", anyhow::Error::from(e));
                    ExitCode::from(code)
                },
                |()| ExitCode::SUCCESS,
            ))
        }
    }
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

    #[test]
    fn go_only_flags_parse_and_are_listed() {
        let cli = super::Cli::try_parse_from([
            "copilot",
            "--logger.formatter.type=json",
            "--logger.show-source",
            "--v=4",
            "--alsologtostderr",
            "download",
            "--storage.cache.max_size_mbs",
            "0",
            "--from-remote",
            "s3://b/inputs.pb",
            "--to-output-prefix",
            "s3://b/out",
            "--to-local-dir",
            "/tmp/x",
        ])
        .expect("parses");
        assert_eq!(
            cli.root.ignored.given(),
            [
                "--logger.formatter.type",
                "--logger.show-source",
                "--storage.cache.max_size_mbs",
                "--v",
                "--alsologtostderr"
            ]
        );
    }

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
