//! `copilot sidecar`: wait for the main container to exit — seen in the kernel,
//! with its exit status — then upload what it left in the outputs folder as
//! Flyte literals, or an error document that says why there are none.
//!
//! Order of writes: blobs first, `outputs.pb` last, so a reader never sees
//! outputs that point at missing data. Exit code 0 after outputs or an error
//! document were written (Flyte reads the document); non-zero only when not even
//! the error document could be written.

pub mod status;
pub mod wait;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use base64::Engine as _;
use prost::Message as _;

use crate::{
    error_chain as chain,
    literals::{self, ErrorCode, UploadLimits, error_document, write_error_document},
    pod::PodSelector,
    proto::core::{ErrorDocument, LiteralMap, TypedInterface},
    storage::{Progress, Store},
};
use status::{Main, Outcome, Status};
use wait::{EbpfWatcher, MainExit, MainSelector, WatcherType};

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
    /// Metadata format (JSON, YAML, PROTO; accepted for compatibility: outputs are
    /// always written as outputs.pb). Checked after start, so a bad value is an error document.
    pub format: String,
    /// Upload mode (UPLOAD_ON_EXIT, UPLOAD_EAGER, DO_NOT_UPLOAD; accepted for compatibility:
    /// outputs are uploaded once, on exit). A bad value is an error document, as in Go.
    pub upload_mode: String,
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

/// The SIGTERM stream, remembering whether one arrived (so a SIGTERM consumed while
/// uploading still ends the idle wait after it).
struct Term {
    signal: tokio::signal::unix::Signal,
    seen: bool,
}

impl Term {
    fn install() -> std::io::Result<Self> {
        let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        Ok(Self {
            signal,
            seen: false,
        })
    }

    async fn wait(&mut self) {
        if !self.seen {
            self.signal.recv().await;
            self.seen = true;
        }
    }
}

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

/// Why there are no outputs.
#[derive(Debug)]
struct Failure {
    code: ErrorCode,
    message: String,
}

impl Failure {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// An upload failure as Go writes it: RECOVERABLE, origin unset, so the task's
    /// own retries apply (not the system budget of a SYSTEM origin).
    fn upload(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::OutputUploadFailed, message)
    }
}

pub async fn run(store: &Store, args: Options) -> Result<ExitCode, Error> {
    // Installed first, so a SIGTERM never kills the sidecar silently: before the
    // main container's exit it becomes `UploadCutShort`, after it is logged.
    let mut term = Term::install().map_err(Error::Signal)?;
    let errors_url = store
        .child(&args.to_output_prefix, &[&args.err_output_name])
        .map_err(|source| Error::ErrorName {
            name: args.err_output_name.clone(),
            source,
        })?;
    let mut status = Status::default();
    if let Some(url) = finished_before(store, &args, &errors_url).await {
        // A restarted native sidecar (the kubelet restarts one that exits while the
        // pod runs): the work is done, and writing anything now could only undo it.
        tracing::info!(%url, "a document is already at the output prefix; nothing to do");
        status.url = Some(url);
        if let Some(path) = &args.ready_file {
            write_ready(path).map_err(|source| Error::Ready {
                path: path.clone(),
                source,
            })?;
        }
    } else {
        let result = sidecar(store, &args, &mut term, &mut status).await;
        if let Some(doc) = outcome(result, &mut status) {
            write_document(store, &args, &errors_url, &doc).await?;
            status.url = Some(errors_url.clone());
        }
    }
    if let Some(path) = &args.status_file {
        status.write(path).map_err(|source| Error::Status {
            path: path.clone(),
            source,
        })?;
    }
    if args.after_upload == AfterUpload::WaitForSigterm {
        tracing::info!("done; idle until SIGTERM");
        term.wait().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// The error document to write, if any; the status says which.
fn outcome(
    result: Result<Option<ErrorDocument>, Failure>,
    status: &mut Status,
) -> Option<ErrorDocument> {
    let doc = match result {
        Ok(doc) => doc,
        Err(f) => {
            tracing::error!(code = %f.code, "{}", f.message);
            Some(error_document(f.code, &f.message))
        }
    };
    if let Some(error) = doc.as_ref().and_then(|d| d.error.as_ref()) {
        status.outcome = Outcome::Error;
        status.error_code = Some(error.code.clone());
    }
    doc
}

/// The URL of `outputs.pb` or the error document if either is already written.
async fn finished_before(store: &Store, args: &Options, errors_url: &str) -> Option<String> {
    let outputs_url = store
        .child(&args.to_output_prefix, &[&args.meta_output_name])
        .ok()?;
    for url in [outputs_url, errors_url.to_owned()] {
        if store.read_bytes(&url, 64 << 20).await.is_ok() {
            return Some(url);
        }
    }
    None
}

async fn write_document(
    store: &Store,
    args: &Options,
    url: &str,
    doc: &ErrorDocument,
) -> Result<(), Error> {
    // The downloader's document (inputs missing, so the main container never
    // ran) explains the failure; a later "cut short" must not replace it.
    if store.read_bytes(url, 1 << 20).await.is_ok() {
        tracing::warn!(%url, "an error document is already there (the downloader's?); keeping it");
        return Ok(());
    }
    write_error_document(store, &args.to_output_prefix, &args.err_output_name, doc)
        .await
        .map_err(|source| Error::ErrorDocument {
            url: url.to_owned(),
            source,
        })?;
    tracing::info!(%url, "error document written");
    Ok(())
}

/// Waits and uploads; `Ok(Some(doc))` is an error document to write (the task's own).
async fn sidecar(
    store: &Store,
    args: &Options,
    term: &mut Term,
    status: &mut Status,
) -> Result<Option<ErrorDocument>, Failure> {
    let interface = check_options(args)?;
    let mut args = args.clone();
    let bpf_dir = args.bpf_dir.clone();
    let mut ebpf = start_ebpf(&mut args, &bpf_dir);
    let args = &args;
    if let Some(path) = &args.ready_file {
        write_ready(path).map_err(|e| {
            Failure::upload(format!("writing the ready file {}: {e}", path.display()))
        })?;
    }
    let exit = main_exit(ebpf.as_mut(), args, term).await?;
    status.main = exit.as_ref().map(Main::from);

    let limits = UploadLimits::default();
    // The task's own `_ERROR` explains a failure better than an exit code, and
    // keeps the exit status beside its message.
    let error_file = literals::read_error_file(&args.from_local_dir, limits.max_error_bytes);
    let exit_note = exit.as_ref().and_then(main_failure).map(|f| f.message);
    if let Some(doc) = error_file.document(exit_note.as_deref()) {
        return Ok(Some(doc));
    }
    if let Some(f) = exit.as_ref().and_then(main_failure) {
        return Err(f);
    }
    let outputs_empty = interface
        .outputs
        .as_ref()
        .is_none_or(|o| o.variables.is_empty());
    if outputs_empty {
        tracing::info!("the interface has no outputs: nothing to upload");
        status.outcome = Outcome::NoOutputs;
        return Ok(None);
    }
    let map = upload(store, args, &interface, &limits, term).await?;
    write_outputs(store, args, &map, exit.as_ref(), status).await?;
    Ok(None)
}

/// The interface, once the options Go checks after start are checked (a bad
/// value is an error document, as in Go).
fn check_options(args: &Options) -> Result<TypedInterface, Failure> {
    let interface = decode_interface(args.interface.as_deref())?;
    check_choice("--upload-mode", &args.upload_mode, UPLOAD_MODES)?;
    check_choice("--format", &args.format, FORMATS)?;
    if args.watch_container.is_some() && args.main_container_id.is_none() {
        tracing::warn!(
            "--watch-container needs the Kubernetes API to map a name to an id, which this \
             build does not use; falling back to the sibling rule (pass --main-container-id)"
        );
    }
    Ok(interface)
}

/// Waits for the main container's exit (`None`: its status cannot be known);
/// a wait that ends otherwise is the failure it stands for.
async fn main_exit(
    ebpf: Option<&mut EbpfWatcher>,
    args: &Options,
    term: &mut Term,
) -> Result<Option<MainExit>, Failure> {
    let exit = match wait_main(ebpf, args, term).await {
        Ok(exit) => exit,
        Err(wait::Error::Terminated) => {
            return Err(Failure::new(
                ErrorCode::UploadCutShort,
                "copilot received SIGTERM (the pod is being deleted) while the main container \
                 was still running, or before it started; no outputs were uploaded",
            ));
        }
        Err(e @ wait::Error::StartTimeout(_)) => {
            return Err(Failure::new(ErrorCode::ContainerNotStarted, e.to_string()));
        }
        Err(e) => return Err(Failure::new(ErrorCode::SidecarFailed, chain(&e))),
    };
    if let Some(exit) = &exit {
        tracing::info!(
            container = exit.container.as_deref().unwrap_or("?"),
            pid = exit.pid,
            status = %exit.status.map_or("unknown".into(), |s| s.to_string()),
            oom_killed = exit.oom_killed,
            "main container exited"
        );
    }
    Ok(exit)
}

/// Writes `outputs.pb` last (after every blob it points at), and the result.
async fn write_outputs(
    store: &Store,
    args: &Options,
    map: &LiteralMap,
    exit: Option<&MainExit>,
    status: &mut Status,
) -> Result<(), Failure> {
    let url = store
        .child(&args.to_output_prefix, &[&args.meta_output_name])
        .map_err(|e| Failure::upload(format!("--meta-output-name: {}", chain(&e))))?;
    store
        .put_bytes(&url, map.encode_to_vec().into())
        .await
        .map_err(|e| Failure::upload(format!("writing {url}: {}", chain(&e))))?;
    let since_exit = exit
        .and_then(|e| e.time_ns)
        .and_then(|t| crate::tracer::boottime_ns().checked_sub(t));
    let since_exit_ms = since_exit.map(|ns| ns as f64 / 1e6);
    tracing::info!(%url, outputs = map.literals.len(), since_exit_ms, "outputs written");
    *status = Status {
        outcome: Outcome::Outputs,
        since_exit_ms,
        url: Some(url),
        ..status.clone()
    };
    Ok(())
}

/// The values `flyte-copilot` accepts for `--upload-mode` and `--format`.
const UPLOAD_MODES: &[&str] = &["UPLOAD_ON_EXIT", "UPLOAD_EAGER", "DO_NOT_UPLOAD"];
const FORMATS: &[&str] = &["JSON", "YAML", "PROTO"];

fn check_choice(flag: &str, value: &str, allowed: &[&str]) -> Result<(), Failure> {
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(value)) {
        return Ok(());
    }
    Err(Failure::upload(format!(
        "unsupported {flag} {value:?} (expected one of {})",
        allowed.join(", ")
    )))
}

/// Collects and uploads the outputs within `--timeout`.
async fn upload(
    store: &Store,
    args: &Options,
    interface: &TypedInterface,
    limits: &UploadLimits,
    term: &mut Term,
) -> Result<LiteralMap, Failure> {
    let progress = Arc::new(Progress::default());
    let _reporter = progress.report("upload", std::time::Duration::from_secs(5));
    let collect = literals::collect_outputs(
        &args.from_local_dir,
        interface,
        store,
        &args.to_raw_output,
        limits,
        &progress,
    );
    let upload = async {
        if args.timeout.is_zero() {
            // As in Go: a zero timeout is no limit.
            return Ok(collect.await);
        }
        tokio::time::timeout(args.timeout, collect).await
    };
    tokio::pin!(upload);
    // The main container is done: a SIGTERM now (the pod is being torn down)
    // does not stop the upload; the kubelet's grace period bounds it.
    let collected = tokio::select! {
        r = &mut upload => r,
        () = term.wait() => {
            tracing::warn!("SIGTERM during the upload: finishing it within the grace period");
            upload.await
        }
    };
    collected
        .map_err(|_| {
            Failure::upload(format!(
                "the upload did not finish within {:?} (--timeout)",
                args.timeout
            ))
        })?
        .map_err(|e| Failure::upload(chain(&e)))
}

/// Waits for the main container as the watchers say. When other containers run
/// beside the task (a mesh proxy, an agent) and none is named, the main container
/// cannot be told apart: the sidecar then does what the Go binary's `signal`
/// watcher does, and says so.
async fn wait_main(
    ebpf: Option<&mut EbpfWatcher>,
    args: &Options,
    term: &mut Term,
) -> Result<Option<MainExit>, wait::Error> {
    match wait_watchers(ebpf, args, term).await {
        Err(e @ wait::Error::Ambiguous { .. }) => {
            tracing::warn!(
                "{e}; uploading on SIGTERM instead, which the kubelet sends a native sidecar \
                 once the regular containers have ended"
            );
            term.wait().await;
            Ok(None)
        }
        other => other,
    }
}

async fn wait_watchers(
    ebpf: Option<&mut EbpfWatcher>,
    args: &Options,
    term: &mut Term,
) -> Result<Option<MainExit>, wait::Error> {
    let timeout = (!args.start_timeout.is_zero()).then_some(args.start_timeout);
    let mut ebpf = ebpf;
    match args.start_watcher {
        WatcherType::Ebpf => {
            if let Some(w) = ebpf.as_deref_mut() {
                w.wait_started(timeout).await?;
            }
        }
        WatcherType::Signal | WatcherType::Noop | WatcherType::File => {}
    }
    match args.exit_watcher {
        WatcherType::Ebpf => match ebpf {
            Some(w) => Ok(Some(w.wait_exited().await?)),
            None => Err(wait::Error::Unsupported(WatcherType::Ebpf, "no pod")),
        },
        WatcherType::Signal => {
            term.wait().await;
            Ok(None)
        }
        WatcherType::File => tokio::select! {
            r = wait::wait_marker_file(&args.from_local_dir) => r.map(|()| None),
            () = term.wait() => Err(wait::Error::Terminated),
        },
        WatcherType::Noop => Ok(None),
    }
}

/// Starts the eBPF watcher when a watcher flag asks for it. When it cannot start
/// (no capability, no BTF, no way to find the pod…), the sidecar does what the Go
/// binary's default `signal` watcher does: SIGTERM, which the kubelet sends a native
/// sidecar once the regular containers have ended, means "upload now". Said once.
fn start_ebpf(args: &mut Options, bpf_dir: &Path) -> Option<EbpfWatcher> {
    let uses_ebpf =
        args.start_watcher == WatcherType::Ebpf || args.exit_watcher == WatcherType::Ebpf;
    if !uses_ebpf {
        return None;
    }
    let sel = PodSelector {
        pod_cgroup: args.pod_cgroup.clone(),
        pod_uid: args.pod_uid.clone(),
        cgroup_root: args.cgroup_root.clone(),
    };
    let selector = MainSelector {
        id: args.main_container_id.clone(),
    };
    let tuning = crate::monitor::Tuning {
        node_dir: Some(bpf_dir.to_owned()),
        ..Default::default()
    };
    match EbpfWatcher::start(&sel, selector, &tuning) {
        Ok(w) => {
            tracing::info!(pod = %w.pod_cgroup().display(), "attached to the pod");
            Some(w)
        }
        Err(e) => {
            tracing::warn!(
                "cannot watch the main container in the kernel ({}); falling back to the \
                 signal watcher: outputs are uploaded when SIGTERM arrives",
                chain(&e)
            );
            let fallback = |w: WatcherType| {
                if w == WatcherType::Ebpf {
                    WatcherType::Signal
                } else {
                    w
                }
            };
            args.start_watcher = match args.start_watcher {
                WatcherType::Ebpf => WatcherType::Noop,
                w => w,
            };
            args.exit_watcher = fallback(args.exit_watcher);
            None
        }
    }
}

/// The error document for a main container that did not succeed.
fn main_failure(exit: &MainExit) -> Option<Failure> {
    let who = exit
        .container
        .as_deref()
        .map_or("the main container".to_owned(), |c| {
            format!("the main container {}", &c[..c.len().min(12)])
        });
    if exit.oom_killed {
        return Some(Failure::new(
            ErrorCode::OomKilled,
            format!("{who} was killed by the kernel's OOM killer (out of memory, SIGKILL)"),
        ));
    }
    let Some(status) = exit.status else {
        // Seen only as an emptied cgroup, with no record of the exit in the kernel:
        // never guess success.
        return Some(Failure::new(
            ErrorCode::ExitStatusUnknown,
            format!(
                "{who} exited, but its exit status is unknown: copilot did not see the exit \
                 (it ended before copilot attached, or the kernel's events about it were lost)"
            ),
        ));
    };
    if let Some(sig) = status.signal() {
        return Some(Failure::new(
            ErrorCode::ContainerKilled,
            format!(
                "{who} was {status}{}",
                signal_name(sig).map_or(String::new(), |n| format!(" ({n})"))
            ),
        ));
    }
    match status.code() {
        Some(0) | None => None,
        Some(code) => Some(Failure::new(
            ErrorCode::NonZeroExitCode,
            format!("{who} exited with code {code}"),
        )),
    }
}

fn signal_name(sig: u8) -> Option<&'static str> {
    Some(match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return None,
    })
}

fn decode_interface(b64: Option<&str>) -> Result<TypedInterface, Failure> {
    let Some(b64) = b64.filter(|s| !s.trim().is_empty()) else {
        return Ok(TypedInterface::default());
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| Failure::upload(format!("--interface is not valid base64: {e}")))?;
    TypedInterface::decode(bytes.as_slice()).map_err(|e| {
        Failure::upload(format!(
            "--interface is not a flyteidl.core.TypedInterface: {e}"
        ))
    })
}

/// Writes the ready marker atomically.
fn write_ready(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
    std::fs::rename(tmp, path)
}

/// `copilot probe`: succeeds once the sidecar is ready (for a startup probe).
pub fn probe(ready_file: &Path) -> ExitCode {
    if ready_file.exists() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "copilot: not ready: {} does not exist yet",
            ready_file.display()
        );
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracer::ExitStatus;

    fn exit(status: Option<u32>, oom: bool) -> MainExit {
        MainExit {
            container: Some("0123456789abcdef".repeat(4)),
            pid: Some(1),
            status: status.map(ExitStatus),
            oom_killed: oom,
            time_ns: None,
        }
    }

    #[test]
    fn failures_say_what_happened() {
        assert!(main_failure(&exit(Some(0), false)).is_none());
        let unknown = main_failure(&exit(None, false)).expect("unknown status is not success");
        assert_eq!(unknown.code, ErrorCode::ExitStatusUnknown);
        assert_eq!(
            (unknown.code.kind(), unknown.code.origin()),
            (
                literals::ErrorKind::Recoverable,
                literals::ErrorOrigin::System
            )
        );
        let f = main_failure(&exit(Some(3 << 8), false)).unwrap();
        assert_eq!(f.code, ErrorCode::NonZeroExitCode);
        assert_eq!(
            f.message,
            "the main container 0123456789ab exited with code 3"
        );
        let f = main_failure(&exit(Some(9), true)).unwrap();
        assert_eq!(f.code, ErrorCode::OomKilled);
        let f = main_failure(&exit(Some(11 | 0x80), false)).unwrap();
        assert_eq!(f.code, ErrorCode::ContainerKilled);
        assert!(
            f.message
                .contains("killed by signal 11 (core dumped) (SIGSEGV)"),
            "{}",
            f.message
        );
    }

    #[test]
    fn interface_decoding() {
        assert!(decode_interface(None).unwrap().outputs.is_none());
        let err = decode_interface(Some("%%%")).err().unwrap();
        assert!(err.message.contains("not valid base64"), "{}", err.message);
        // Three zero bytes: a protobuf field number 0 is invalid.
        let err = decode_interface(Some("AAAA")).err().unwrap();
        assert!(err.message.contains("TypedInterface"), "{}", err.message);
    }
}
