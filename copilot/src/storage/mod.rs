//! Object storage behind one small interface: URL → object_store client
//! (s3, gs, abfs/az, file, mem) or a read-only HTTP client, configured by
//! the `--storage.*` flags; streaming transfers with bounded concurrency,
//! retries, and atomic results (no partial file or object is ever visible).
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use copilot::storage::{Progress, Store, StorageConfig};
//! let store = Store::new(StorageConfig::default());
//! let inputs = store.read_bytes("s3://bucket/run/inputs.pb", 64 << 20).await?;
//! store.download_file("s3://bucket/raw/x.csv", "/data/x.csv".as_ref(), &Progress::default()).await?;
//! # Ok(()) }
//! ```
pub(crate) mod config;
pub mod key;
mod progress;
mod store;

pub use config::{AuthType, ConfigError, Secret, StorageConfig, StorageType};
pub use progress::{Progress, ProgressSnapshot, ReporterGuard};
pub use store::{
    ListedObject, ObjectRef, PART_SIZE, SINGLE_PUT_MAX, StorageError, Store, is_local_file,
    join_url,
};
