//! `copilot download`: materialise a task's inputs on the shared volume,
//! as `flyte-copilot download` does. On failure an error document
//! (`InputDownloadFailed`, RECOVERABLE) goes to
//! `<to-output-prefix>/<err-output-name>`, nothing half-written stays on
//! disk, and the command fails with its cause as the container's termination
//! message (so the main container never starts on missing inputs, and Flyte
//! shows why). SIGTERM or SIGINT stops it the same way (exit 143 or 130).
//! Literals are decoded only within the memory budget (`literals::budget`).
use std::{path::PathBuf, sync::Arc, time::Instant};

use base64::Engine as _;
use prost::Message as _;

use crate::{
    error_chain as chain,
    literals::{
        self, Layout, MetadataFormat,
        budget::{Budget, Message as WireMessage, OverBudget},
        download::DownloadError,
        error_document::ErrorCode,
        types::TypeMismatch,
    },
    proto::core::{LiteralMap, VariableMap},
    storage::{ConfigError, Progress, StorageError, Store},
};

/// Memory kept for everything but decoded literals (runtime, clients, buffers).
pub const RESERVED_BYTES: u64 = 24 * 1024 * 1024;

/// The memory a download's literals may take under `memory_limit`.
pub fn literal_budget(memory_limit: Option<u64>) -> Budget {
    match memory_limit {
        Some(limit) if limit < literals::download::DEFAULT_BUDGET => Budget::new(
            limit.saturating_sub(RESERVED_BYTES),
            format!(
                "the memory limit of {} MiB (less {} MiB for copilot itself)",
                limit >> 20,
                RESERVED_BYTES >> 20
            ),
        ),
        _ => literals::download::Options::default().budget,
    }
}

/// What `copilot download` does (its flags, see `cli::download`).
#[derive(Debug, Clone)]
pub struct Options {
    /// The remote inputs (a serialized LiteralMap).
    pub from_remote: String,
    /// The remote output prefix; the error document is written here on failure.
    pub to_output_prefix: String,
    /// The error document's name under `to_output_prefix`.
    pub err_output_name: String,
    /// The local directory the inputs are written to.
    pub to_local_dir: PathBuf,
    /// Metadata written next to inputs.pb.
    pub format: MetadataFormat,
    /// Checked, then ignored: inputs are always downloaded eagerly. `Err` holds a
    /// value that names no mode, reported once the download runs.
    pub download_mode: Result<DownloadMode, String>,
    /// How single-file inputs are laid out.
    pub file_input_layout: Layout,
    /// The longest the download may take (Go duration; 0 for no limit). Parsed
    /// once the download runs, so a bad value is an error document.
    pub timeout: String,
    /// The input interface: a base64 serialized flyteidl.core.VariableMap.
    pub input_interface: Option<String>,
    /// Where the kubelet reads a container's termination message (written on
    /// failure if the file exists, never created).
    pub termination_log: PathBuf,
}

/// `--download-mode`, as `flyte-copilot` spells it (upper case only).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadMode {
    #[value(name = "DOWNLOAD_EAGER")]
    DownloadEager,
    #[value(name = "DOWNLOAD_STREAM")]
    DownloadStream,
    #[value(name = "DO_NOT_DOWNLOAD")]
    DoNotDownload,
}

/// The kubelet's default `terminationMessagePath`.
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// The kubelet keeps at most this much of a termination message.
const TERMINATION_MESSAGE_MAX: usize = 4096;

/// Writes the cause where the kubelet looks for the container's termination
/// message. Propeller's `DemystifyFailure` (`flytek8s/pod_helper.go`) puts each
/// failed container's message into the task's error; without one, the kubelet
/// takes the log tail (`FallbackToLogsOnError`), timestamps and all.
fn write_termination_message(path: &std::path::Path, cause: &str) {
    let Ok(mut file) = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
    else {
        return;
    };
    let mut end = cause.len().min(TERMINATION_MESSAGE_MAX);
    while !cause.is_char_boundary(end) {
        end -= 1;
    }
    if let Err(e) = std::io::Write::write_all(&mut file, &cause.as_bytes()[..end]) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the termination message");
    }
}

/// Why the download failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid storage configuration")]
    Config(#[from] ConfigError),
    #[error("invalid --timeout {value:?}")]
    Timeout {
        value: String,
        #[source]
        source: crate::duration::Error,
    },
    #[error("unsupported --download-mode {0:?} (DOWNLOAD_EAGER, DOWNLOAD_STREAM, DO_NOT_DOWNLOAD)")]
    DownloadMode(String),
    #[error("--input-interface is not valid base64")]
    InterfaceBase64(#[source] base64::DecodeError),
    #[error("--input-interface is not a serialized flyteidl.core.VariableMap")]
    InterfaceDecode(#[source] prost::DecodeError),
    #[error("cannot read the inputs {url:?}")]
    ReadInputs {
        url: String,
        #[source]
        source: Box<StorageError>,
    },
    #[error(
        "the inputs {url:?} are not a serialized flyteidl.core.LiteralMap (truncated or not protobuf?)"
    )]
    DecodeInputs {
        url: String,
        #[source]
        source: prost::DecodeError,
    },
    #[error("the inputs do not match the input interface")]
    Types(#[source] TypeMismatch),
    #[error("the inputs lack {missing:?}, which the input interface declares")]
    MissingInputs { missing: Vec<String> },
    #[error(transparent)]
    Download(#[from] DownloadError),
    #[error("the download did not finish within --timeout {0}")]
    TimedOut(String),
    #[error("the inputs {url:?} do not fit in memory")]
    InputsTooLarge {
        url: String,
        #[source]
        source: OverBudget,
    },
    #[error("the download was stopped by {0}")]
    Interrupted(&'static str),
    #[error("{cause}; writing the error document to {url:?} failed too: {source}")]
    ErrorDocument {
        cause: String,
        url: String,
        #[source]
        source: Box<StorageError>,
    },
    #[error("input download failed (error document written to {url:?}): {cause}")]
    Failed {
        cause: String,
        url: String,
        exit: u8,
    },
}

impl Error {
    /// The exit status a shell expects: 128 + the signal for an interrupted
    /// download, 1 for any other failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Failed { exit, .. } => *exit,
            Self::Interrupted(signal) => signal_exit(signal),
            _ => 1,
        }
    }
}

fn signal_exit(signal: &str) -> u8 {
    match signal {
        "SIGINT" => 130,
        _ => 143,
    }
}

/// Resolves with the name of the first SIGTERM or SIGINT.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Runs `copilot download`.
pub async fn run(store: &Store, args: &Options) -> Result<(), Error> {
    let started = Instant::now();
    let memory = crate::memory::cgroup_limit();
    // Dropping the download on a signal drops its staging folder, which removes it.
    let outcome = tokio::select! {
        outcome = download(store, args, memory) => outcome,
        signal = interrupted() => Err(Error::Interrupted(signal)),
    };
    match outcome {
        Ok(materialized) => {
            tracing::info!(
                inputs = materialized.literals.literals.len(),
                files = materialized.files,
                mib = format!("{:.1}", materialized.bytes as f64 / (1024.0 * 1024.0)),
                seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
                dir = %args.to_local_dir.display(),
                "inputs downloaded"
            );
            Ok(())
        }
        Err(e) => {
            let exit = e.exit_code();
            let cause = chain(&e);
            tracing::error!(error = cause, "input download failed");
            write_termination_message(
                &args.termination_log,
                &format!("input download failed: {}", cause.replace('\n', " ")),
            );
            let doc = literals::error_document(ErrorCode::InputDownloadFailed, &cause);
            match literals::write_error_document(
                store,
                &args.to_output_prefix,
                &args.err_output_name,
                &doc,
            )
            .await
            {
                Ok(url) => {
                    tracing::info!(url, "error document written");
                    Err(Error::Failed { cause, url, exit })
                }
                Err(source) => {
                    let url =
                        crate::storage::join_url(&args.to_output_prefix, &args.err_output_name);
                    Err(Error::ErrorDocument {
                        cause,
                        url,
                        source: Box::new(source),
                    })
                }
            }
        }
    }
}

/// The download itself, without the error document.
/// `memory` is the limit the download runs under, if any (see [`literal_budget`]).
pub async fn download(
    store: &Store,
    args: &Options,
    memory: Option<u64>,
) -> Result<literals::Materialized, Error> {
    let timeout = crate::duration::parse_std(&args.timeout).map_err(|source| Error::Timeout {
        value: args.timeout.clone(),
        source,
    })?;
    let mut budget = literal_budget(memory);
    if let Err(value) = &args.download_mode {
        return Err(Error::DownloadMode(value.clone()));
    }
    let interface = match &args.input_interface {
        Some(b64) if !b64.is_empty() => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(Error::InterfaceBase64)?;
            Some(VariableMap::decode(bytes.as_slice()).map_err(Error::InterfaceDecode)?)
        }
        _ => None,
    };
    let work = async {
        let url = &args.from_remote;
        let too_large = |source| Error::InputsTooLarge {
            url: url.clone(),
            source,
        };
        let bytes = match store.read_bytes(url, budget.max_read()).await {
            Err(crate::storage::StorageError::TooLarge { size, .. }) => {
                return Err(too_large(budget.oversized(size)));
            }
            read => read.map_err(|source| Error::ReadInputs {
                url: url.clone(),
                source: Box::new(source),
            })?,
        };
        budget
            .take(&bytes, WireMessage::LiteralMap)
            .map_err(too_large)?;
        let inputs = LiteralMap::decode(bytes).map_err(|source| Error::DecodeInputs {
            url: url.clone(),
            source,
        })?;
        if let Some(interface) = &interface {
            check_against_interface(&inputs, interface)?;
        }
        tracing::info!(url, inputs = inputs.literals.len(), dir = %args.to_local_dir.display(), "downloading inputs");
        let progress = Arc::new(Progress::default());
        let _reporter = progress.report("download", std::time::Duration::from_secs(5));
        let options = literals::download::Options {
            layout: args.file_input_layout,
            format: args.format,
            local_uris: crate::storage::is_local_file(url),
            budget,
        };
        Ok(
            literals::download_inputs(store, inputs, &args.to_local_dir, &options, &progress)
                .await?,
        )
    };
    if timeout.is_zero() {
        // As in Go: a zero timeout is no limit.
        return work.await;
    }
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| Error::TimedOut(args.timeout.clone()))?
}

/// Checks every input against its declared type; inputs the interface
/// declares but the map lacks are an error, extra inputs are logged.
fn check_against_interface(inputs: &LiteralMap, interface: &VariableMap) -> Result<(), Error> {
    let mut missing: Vec<String> = interface
        .variables
        .keys()
        .filter(|k| !inputs.literals.contains_key(*k))
        .cloned()
        .collect();
    if !missing.is_empty() {
        missing.sort();
        return Err(Error::MissingInputs { missing });
    }
    for (name, lit) in &inputs.literals {
        match interface
            .variables
            .get(name)
            .and_then(|v| v.r#type.as_ref())
        {
            Some(ty) => literals::types::check(lit, ty, name).map_err(Error::Types)?,
            None => tracing::warn!(
                input = name,
                "input not in the input interface; downloading it anyway"
            ),
        }
    }
    Ok(())
}
