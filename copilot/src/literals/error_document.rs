//! The error document (`flyteidl.core.ErrorDocument`) that Flyte reads from
//! `<output prefix>/<err-output-name>` when a task fails: built here and
//! written atomically (one PUT).
use prost::Message as _;

use crate::{
    proto::core::{ContainerError, ErrorDocument, container_error, execution_error},
    storage::{StorageError, Store},
};

/// Whether Flyte may retry (`ContainerError.Kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Recoverable,
    NonRecoverable,
}

/// Who caused it (`ExecutionError.ErrorKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorOrigin {
    User,
    System,
    Unknown,
}

/// Every code copilot writes, each with the kind and origin that steer Flyte's retries
/// (a RECOVERABLE error uses the task's own retries, a SYSTEM-origin one the system
/// budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The downloader could not materialise the inputs (as Go: recoverable).
    InputDownloadFailed,
    /// The task's `_ERROR`, or a failed upload: recoverable, origin unset, as Go
    /// writes both, so the task's own retries apply.
    OutputUploadFailed,
    /// SIGTERM while the main container still ran (the pod is being deleted).
    UploadCutShort,
    /// The main container did not start within `--start-timeout`.
    ContainerNotStarted,
    /// The sidecar itself could not follow the pod.
    SidecarFailed,
    /// The kernel's OOM killer ended the main container.
    OomKilled,
    /// The main container ended with no record of its status: never a success.
    ExitStatusUnknown,
    /// A signal ended the main container.
    ContainerKilled,
    /// The main container exited non-zero: the task's own failure.
    NonZeroExitCode,
}

impl ErrorCode {
    /// The code as Flyte shows it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InputDownloadFailed => "InputDownloadFailed",
            Self::OutputUploadFailed => "OutputUploadFailed",
            Self::UploadCutShort => "UploadCutShort",
            Self::ContainerNotStarted => "ContainerNotStarted",
            Self::SidecarFailed => "SidecarFailed",
            Self::OomKilled => "OOMKilled",
            Self::ExitStatusUnknown => "ExitStatusUnknown",
            Self::ContainerKilled => "ContainerKilled",
            Self::NonZeroExitCode => "NonZeroExitCode",
        }
    }

    pub const fn kind(self) -> ErrorKind {
        match self {
            Self::NonZeroExitCode => ErrorKind::NonRecoverable,
            _ => ErrorKind::Recoverable,
        }
    }

    pub const fn origin(self) -> ErrorOrigin {
        match self {
            Self::OutputUploadFailed | Self::ContainerKilled => ErrorOrigin::Unknown,
            Self::OomKilled | Self::NonZeroExitCode => ErrorOrigin::User,
            Self::InputDownloadFailed
            | Self::UploadCutShort
            | Self::ContainerNotStarted
            | Self::SidecarFailed
            | Self::ExitStatusUnknown => ErrorOrigin::System,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds the error document for `code` (with its kind and origin).
pub fn error_document(code: ErrorCode, message: &str) -> ErrorDocument {
    let kind = match code.kind() {
        ErrorKind::Recoverable => container_error::Kind::Recoverable,
        ErrorKind::NonRecoverable => container_error::Kind::NonRecoverable,
    };
    let origin = match code.origin() {
        ErrorOrigin::User => execution_error::ErrorKind::User,
        ErrorOrigin::System => execution_error::ErrorKind::System,
        ErrorOrigin::Unknown => execution_error::ErrorKind::Unknown,
    };
    let now = std::time::SystemTime::now();
    ErrorDocument {
        error: Some(ContainerError {
            code: code.as_str().to_owned(),
            message: message.to_owned(),
            kind: kind as i32,
            origin: origin as i32,
            timestamp: Some(prost_types::Timestamp::from(now)),
            worker: std::env::var("HOSTNAME").unwrap_or_default(),
        }),
    }
}

/// Writes `doc` to `<prefix>/<name>` (`name` one plain file name); returns the URL written.
pub async fn write_error_document(
    store: &Store,
    prefix: &str,
    name: &str,
    doc: &ErrorDocument,
) -> Result<String, StorageError> {
    let url = store.child(prefix, &[name])?;
    store.put_bytes(&url, doc.encode_to_vec().into()).await?;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageConfig;

    #[tokio::test]
    async fn written_document_decodes_with_kind_and_origin() {
        let store = Store::new(StorageConfig::default());
        let doc = error_document(ErrorCode::InputDownloadFailed, "boom");
        let url = write_error_document(&store, "mem://b/out/", "errors.pb", &doc)
            .await
            .expect("write");
        assert_eq!(url, "mem://b/out/errors.pb");
        let bytes = store.read_bytes(&url, 1 << 20).await.expect("read");
        let back = ErrorDocument::decode(bytes).expect("decode");
        let err = back.error.expect("error set");
        assert_eq!(err.code, "InputDownloadFailed");
        assert_eq!(err.message, "boom");
        assert_eq!(err.kind, container_error::Kind::Recoverable as i32);
        assert_eq!(err.origin, execution_error::ErrorKind::System as i32);
    }
}
