//! The sidecar's failure policy: what it writes when there are no outputs.
//!
//! Every failure becomes an error document with a code that says whether Flyte
//! may retry: the main container's own failure (its `_ERROR` file first, else
//! how it ended: exit code, signal, OOM kill, an exit status never seen), a wait
//! cut short by SIGTERM, a main container that never started, an upload that
//! failed. A document already at the output prefix (the downloader's) is kept:
//! it explains the failure better than a later "cut short".

use crate::{
    error_chain as chain,
    literals::{ErrorCode, error_document, write_error_document},
    proto::core::ErrorDocument,
    storage::Store,
};

use super::{
    Error, Options,
    run::Done,
    status::{Main, Outcome, Status},
    wait::{self, MainExit},
};

/// Why there are no outputs.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) code: ErrorCode,
    pub(super) message: String,
}

impl Failure {
    pub(super) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// An upload failure as Go writes it: RECOVERABLE, origin unset, so the task's
    /// own retries apply (not the system budget of a SYSTEM origin).
    pub(super) fn upload(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::OutputUploadFailed, message)
    }

    /// A wait for the main container that ended without its exit.
    pub(super) fn from_wait(e: &wait::Error) -> Self {
        match e {
            wait::Error::Terminated => Self::new(
                ErrorCode::UploadCutShort,
                "copilot received SIGTERM (the pod is being deleted) while the main container \
                 was still running, or before it started; no outputs were uploaded",
            ),
            wait::Error::StartTimeout(_) => {
                Self::new(ErrorCode::ContainerNotStarted, e.to_string())
            }
            e => Self::new(ErrorCode::SidecarFailed, chain(e)),
        }
    }
}

/// The status of a run that waited for the main container (`main`, when its exit
/// was seen), and the error document to write, if any. Every result names its
/// outcome here: there is no default one to fall back on.
pub(super) fn outcome(
    result: Result<Done, Failure>,
    main: Option<Main>,
) -> (Status, Option<ErrorDocument>) {
    let status = |outcome, since_exit_ms, url| Status {
        outcome,
        error_code: None,
        main,
        since_exit_ms,
        url,
    };
    let doc = match result {
        Ok(Done::Outputs { url, since_exit_ms }) => {
            return (status(Outcome::Outputs, since_exit_ms, Some(url)), None);
        }
        Ok(Done::NoOutputs) => return (status(Outcome::NoOutputs, None, None), None),
        Ok(Done::Document(doc)) => doc,
        Err(f) => {
            tracing::error!(code = %f.code, "{}", f.message);
            error_document(f.code, &f.message)
        }
    };
    let error_code = doc.error.as_ref().map(|error| error.code.clone());
    let status = Status {
        error_code,
        ..status(Outcome::Error, None, None)
    };
    (status, Some(doc))
}

/// Writes the error document at `url`, unless one is already there.
pub(super) async fn write_document(
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

/// The error document for a main container that did not succeed.
pub(super) fn main_failure(exit: &MainExit) -> Option<Failure> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{literals, tracer::ExitStatus};

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
    fn a_wait_that_ends_without_an_exit_has_its_own_code() {
        let f = Failure::from_wait(&wait::Error::Terminated);
        assert_eq!(f.code, ErrorCode::UploadCutShort);
        let f = Failure::from_wait(&wait::Error::StartTimeout(std::time::Duration::from_secs(
            2,
        )));
        assert_eq!(f.code, ErrorCode::ContainerNotStarted);
        assert!(f.message.contains("--start-timeout"), "{}", f.message);
    }

    #[test]
    fn every_result_names_its_outcome_and_none_is_already_done() {
        let main = Some(Main::from(&exit(Some(0), false)));
        let outputs = Done::Outputs {
            url: "s3://b/out/outputs.pb".into(),
            since_exit_ms: Some(2.0),
        };
        let (status, doc) = outcome(Ok(outputs), main.clone());
        assert_eq!(
            (status.outcome, status.url.as_deref(), status.since_exit_ms),
            (Outcome::Outputs, Some("s3://b/out/outputs.pb"), Some(2.0))
        );
        assert!(doc.is_none() && status.main == main);
        let (status, doc) = outcome(Ok(Done::NoOutputs), None);
        assert_eq!((status.outcome, status.url), (Outcome::NoOutputs, None));
        assert!(doc.is_none());
        let task_doc = error_document(ErrorCode::UploadCutShort, "the task's own");
        let (status, doc) = outcome(Ok(Done::Document(task_doc)), None);
        assert_eq!(status.outcome, Outcome::Error);
        assert_eq!(status.error_code, doc.and_then(|d| d.error).map(|e| e.code));
        let failed = Failure::upload("writing s3://b/out/outputs.pb: refused");
        let (status, doc) = outcome(Err(failed), main);
        assert_eq!(status.outcome, Outcome::Error);
        assert!(status.error_code.is_some() && doc.is_some());
    }
}
