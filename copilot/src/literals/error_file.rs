//! The `_ERROR` file a task writes into its outputs folder to report its own
//! failure, and the error document it becomes.
//!
//! As the Go binary writes it (`flytecopilot/data/upload.go`): code
//! `OutputUploadFailed`, message `User Error: <text>`, kind RECOVERABLE, origin
//! unset, so the task's own retries apply. copilot adds, after Go's text, what it
//! knows besides: how the main container exited, and that a long message was cut.
//! A file that cannot be read (a directory, a FIFO, a symlink out of the folder)
//! still yields a document that says so; the exit status is never lost to it.
use std::path::Path;

use super::{
    beneath::{Beneath, BeneathError},
    error_document::{ErrorCode, error_document},
};
use crate::proto::core::ErrorDocument;

/// The file a task writes to report its own failure.
pub const ERROR_FILE: &str = "_ERROR";
/// The code Go's copilot gives a document made from `_ERROR`.
pub const ERROR_FILE_CODE: ErrorCode = ErrorCode::OutputUploadFailed;

/// What the outputs folder says about `_ERROR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorFile {
    Absent,
    /// The trimmed text, cut at the limit; `total` is the file's size when it was cut.
    Message {
        text: String,
        cut_from: Option<u64>,
    },
    /// `_ERROR` exists but cannot be read as a message; why.
    Unreadable {
        problem: String,
    },
}

/// Reads `<dir>/_ERROR`, at most `limit` bytes of it, never blocking and never
/// following a symlink out of `dir`.
pub fn read_error_file(dir: &Path, limit: u64) -> ErrorFile {
    let tree = match Beneath::open(dir) {
        Ok(tree) => tree,
        Err(e) => {
            return ErrorFile::Unreadable {
                problem: e.to_string(),
            };
        }
    };
    read_in(&tree, limit)
}

/// [`read_error_file`] in an already opened folder.
pub fn read_in(tree: &Beneath, limit: u64) -> ErrorFile {
    let rel = Path::new(ERROR_FILE);
    let size = match tree.stat(rel) {
        Ok(None) => return ErrorFile::Absent,
        Ok(Some(super::beneath::Node::File(size))) => size,
        Ok(Some(super::beneath::Node::Dir)) => {
            return ErrorFile::Unreadable {
                problem: format!("{} is a directory", tree.display(rel).display()),
            };
        }
        Err(e) => return unreadable(e),
    };
    match tree.read_prefix(rel, limit) {
        Ok(Some((bytes, longer))) => ErrorFile::Message {
            text: String::from_utf8_lossy(&bytes).trim().to_owned(),
            cut_from: longer.then_some(size.max(limit + 1)),
        },
        // Removed between the two looks: it was there, say so.
        Ok(None) => ErrorFile::Unreadable {
            problem: format!("{} vanished while it was read", tree.display(rel).display()),
        },
        Err(e) => unreadable(e),
    }
}

fn unreadable(e: BeneathError) -> ErrorFile {
    ErrorFile::Unreadable {
        problem: e.to_string(),
    }
}

impl ErrorFile {
    /// The error document, with `exit` (how the main container ended, when known)
    /// added after Go's text. `None` when there is no `_ERROR`.
    pub fn document(&self, exit: Option<&str>) -> Option<ErrorDocument> {
        let mut message = match self {
            Self::Absent => return None,
            Self::Message { text, cut_from } => {
                let mut m = format!("User Error: {text}");
                if let Some(total) = cut_from {
                    m.push_str(&format!(
                        " […] (_ERROR is {total} bytes; only the first {} are kept)",
                        text.len()
                    ));
                }
                m
            }
            Self::Unreadable { problem } => {
                format!("User Error: the task wrote _ERROR, but it cannot be read: {problem}")
            }
        };
        if let Some(exit) = exit {
            message.push_str(&format!("\n({exit})"));
        }
        Some(error_document(ERROR_FILE_CODE, &message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::core::{container_error, execution_error};

    #[test]
    fn a_message_becomes_gos_document_with_the_exit_status() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_error_file(dir.path(), 100), ErrorFile::Absent);
        assert!(ErrorFile::Absent.document(None).is_none());
        std::fs::write(dir.path().join(ERROR_FILE), "  it broke\n").unwrap();
        let file = read_error_file(dir.path(), 100);
        let doc = file.document(Some("the main container exited with code 3"));
        let e = doc.unwrap().error.unwrap();
        assert_eq!(e.code, "OutputUploadFailed");
        assert_eq!(
            e.message,
            "User Error: it broke\n(the main container exited with code 3)"
        );
        assert_eq!(e.kind, container_error::Kind::Recoverable as i32);
        assert_eq!(e.origin, execution_error::ErrorKind::Unknown as i32);
    }

    #[test]
    fn a_long_message_is_cut_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ERROR_FILE), vec![b'x'; 10_000_000]).unwrap();
        let file = read_error_file(dir.path(), 1000);
        let ErrorFile::Message { text, cut_from } = &file else {
            panic!("{file:?}")
        };
        assert_eq!((text.len(), *cut_from), (1000, Some(10_000_000)));
        let e = file.document(Some("exit 3")).unwrap().error.unwrap();
        assert!(
            e.message
                .ends_with("(_ERROR is 10000000 bytes; only the first 1000 are kept)\n(exit 3)"),
            "{}",
            e.message
        );
    }

    #[test]
    fn an_unreadable_error_file_keeps_the_exit_status() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(ERROR_FILE)).unwrap();
        let e = read_error_file(dir.path(), 100)
            .document(Some("the main container exited with code 3"))
            .unwrap()
            .error
            .unwrap();
        assert!(e.message.contains("is a directory"), "{}", e.message);
        assert!(e.message.ends_with("exited with code 3)"), "{}", e.message);
        std::fs::remove_dir(dir.path().join(ERROR_FILE)).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("token"), "SECRET-TOKEN").unwrap();
        std::os::unix::fs::symlink(outside.path().join("token"), dir.path().join(ERROR_FILE))
            .unwrap();
        let e = read_error_file(dir.path(), 100)
            .document(None)
            .unwrap()
            .error
            .unwrap();
        assert!(!e.message.contains("SECRET-TOKEN"), "{}", e.message);
        assert!(e.message.contains("leads outside"), "{}", e.message);
    }
}
