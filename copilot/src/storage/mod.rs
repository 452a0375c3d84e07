//! Object storage behind one small interface (object_store).

/// `--storage.*` flags, compatible with `flyte-copilot`'s.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StorageArgs {}
