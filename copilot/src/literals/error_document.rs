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

/// Builds an error document. `code` is a short tag such as
/// `InputDownloadFailed`, `OutputUploadFailed` or `UserError`.
pub fn error_document(
    code: &str,
    message: &str,
    kind: ErrorKind,
    origin: ErrorOrigin,
) -> ErrorDocument {
    let kind = match kind {
        ErrorKind::Recoverable => container_error::Kind::Recoverable,
        ErrorKind::NonRecoverable => container_error::Kind::NonRecoverable,
    };
    let origin = match origin {
        ErrorOrigin::User => execution_error::ErrorKind::User,
        ErrorOrigin::System => execution_error::ErrorKind::System,
        ErrorOrigin::Unknown => execution_error::ErrorKind::Unknown,
    };
    let now = std::time::SystemTime::now();
    ErrorDocument {
        error: Some(ContainerError {
            code: code.to_owned(),
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
        let doc = error_document(
            "InputDownloadFailed",
            "boom",
            ErrorKind::Recoverable,
            ErrorOrigin::System,
        );
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
