//! FlyteIDL literals ↔ local files, both directions: [`download`] (inputs →
//! files + `inputs.pb|json|yaml`) and [`upload`] (files → output literals,
//! driven by the output interface); [`error_document`] builds and writes
//! the `errors.pb` Flyte reads, [`error_file`] reads the task's `_ERROR`.
//! [`budget`] bounds the memory decoded literals take; [`beneath`] reads a folder the task can still change, race-free; [`names`]
//! keeps every name inside its directory, [`values`] owns the text forms of scalars, [`types`] checks
//! literals against interfaces, [`make`] builds literals.
pub mod beneath;
pub mod budget;
pub mod download;
pub mod error_document;
pub mod error_file;
pub mod make;
pub mod names;
pub mod types;
pub mod upload;
pub mod values;

pub use download::{Layout, Materialized, MetadataFormat, download_inputs};
pub use error_document::{ErrorCode, ErrorKind, ErrorOrigin, error_document, write_error_document};
pub use error_file::{ErrorFile, read_error_file};
pub use upload::{UploadLimits, collect_outputs};
