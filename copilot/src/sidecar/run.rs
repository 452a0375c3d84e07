//! The sidecar's top-level run: check the options, attach, write the ready file,
//! wait for the main container's exit, then upload its outputs (blobs first,
//! `outputs.pb` last) or write the error document the failure policy gives, the
//! status file, and idle until SIGTERM if asked.

use std::{process::ExitCode, sync::Arc};

use base64::Engine as _;
use prost::Message as _;

use super::{
    AfterUpload, Error, Options,
    failure::{self, Failure},
    ready::write_ready,
    status::{Main, Outcome, Status},
    term::Term,
    wait::{EbpfWatcher, MainExit},
    watchers,
};
use crate::{
    error_chain as chain,
    literals::{self, UploadLimits},
    proto::core::{ErrorDocument, LiteralMap, TypedInterface},
    storage::{Progress, Store},
};

/// Runs `copilot sidecar`; see [`sidecar`](crate::sidecar) for what it writes.
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
    let mut ebpf = None;
    let status = if let Some(url) = finished_before(store, &args, &errors_url).await {
        // A restarted native sidecar (the kubelet restarts one that exits while the
        // pod runs): the work is done, and writing anything now could only undo it.
        tracing::info!(%url, "a document is already at the output prefix; nothing to do");
        if let Some(path) = &args.ready_file {
            write_ready(path).map_err(|source| Error::Ready {
                path: path.clone(),
                source,
            })?;
        }
        Status {
            outcome: Outcome::AlreadyDone,
            error_code: None,
            main: None,
            since_exit_ms: None,
            url: Some(url),
        }
    } else {
        let mut main = None;
        let result = sidecar(store, &args, &mut term, &mut main, &mut ebpf).await;
        let (mut status, doc) = failure::outcome(result, main);
        if let Some(doc) = doc {
            failure::write_document(store, &args, &errors_url, &doc).await?;
            status.url = Some(errors_url.clone());
        }
        status
    };
    if let Some(path) = &args.status_file {
        status.write(path).map_err(|source| Error::Status {
            path: path.clone(),
            source,
        })?;
    }
    // Only now: unregistering the pod deletes from a hash of maps, which waits for
    // an RCU grace period (~15 ms here), and the result must not wait for it.
    drop(ebpf);
    if args.after_upload == AfterUpload::WaitForSigterm {
        tracing::info!("done; idle until SIGTERM");
        term.wait().await;
    }
    Ok(ExitCode::SUCCESS)
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

/// What a sidecar run that did not fail ends with.
#[derive(Debug)]
pub(super) enum Done {
    /// outputs.pb written at `url`.
    Outputs {
        url: String,
        since_exit_ms: Option<f64>,
    },
    /// The interface has no outputs: nothing written.
    NoOutputs,
    /// An error document to write (the task's own).
    Document(ErrorDocument),
}

/// Waits and uploads; sets `main` once the main container's exit is known, and
/// leaves the eBPF watcher in `ebpf` for the caller to drop after the result.
async fn sidecar(
    store: &Store,
    args: &Options,
    term: &mut Term,
    main: &mut Option<Main>,
    ebpf: &mut Option<EbpfWatcher>,
) -> Result<Done, Failure> {
    let interface = check_options(args)?;
    let mut args = args.clone();
    let bpf_dir = args.bpf_dir.clone();
    *ebpf = watchers::start_ebpf(&mut args, &bpf_dir);
    let args = &args;
    if let Some(path) = &args.ready_file {
        write_ready(path).map_err(|e| {
            Failure::upload(format!("writing the ready file {}: {e}", path.display()))
        })?;
    }
    let exit = watchers::main_exit(ebpf.as_mut(), args, term).await?;
    *main = exit.as_ref().map(Main::from);

    let limits = UploadLimits::default();
    // The task's own `_ERROR` explains a failure better than an exit code, and
    // keeps the exit status beside its message.
    let error_file = literals::read_error_file(&args.from_local_dir, limits.max_error_bytes);
    let exit_note = exit
        .as_ref()
        .and_then(failure::main_failure)
        .map(|f| f.message);
    if let Some(doc) = error_file.document(exit_note.as_deref()) {
        return Ok(Done::Document(doc));
    }
    if let Some(f) = exit.as_ref().and_then(failure::main_failure) {
        return Err(f);
    }
    let outputs_empty = interface
        .outputs
        .as_ref()
        .is_none_or(|o| o.variables.is_empty());
    if outputs_empty {
        tracing::info!("the interface has no outputs: nothing to upload");
        return Ok(Done::NoOutputs);
    }
    let map = upload(store, args, &interface, &limits, term).await?;
    write_outputs(store, args, &map, exit.as_ref()).await
}

/// The interface, once the options Go checks after start are checked (a bad
/// value is an error document, as in Go).
fn check_options(args: &Options) -> Result<TypedInterface, Failure> {
    let interface = decode_interface(args.interface.as_deref())?;
    if let Err(value) = &args.upload_mode {
        let expected = "UPLOAD_ON_EXIT, UPLOAD_EAGER, DO_NOT_UPLOAD";
        return Err(unsupported("--upload-mode", value, expected));
    }
    if let Err(value) = &args.format {
        return Err(unsupported("--format", value, "JSON, YAML, PROTO"));
    }
    if args.watch_container.is_some() && args.main_container_id.is_none() {
        tracing::warn!(
            "--watch-container needs the Kubernetes API to map a name to an id, which this \
             build does not use; falling back to the sibling rule (pass --main-container-id)"
        );
    }
    Ok(interface)
}

fn unsupported(flag: &str, value: &str, expected: &str) -> Failure {
    Failure::upload(format!(
        "unsupported {flag} {value:?} (expected one of {expected})"
    ))
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

/// Writes `outputs.pb` last (after every blob it points at), and the result.
async fn write_outputs(
    store: &Store,
    args: &Options,
    map: &LiteralMap,
    exit: Option<&MainExit>,
) -> Result<Done, Failure> {
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
    Ok(Done::Outputs { url, since_exit_ms })
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

#[cfg(test)]
mod tests {
    use super::*;

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
