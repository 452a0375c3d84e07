//! `copilot download`: materialise a task's inputs on the shared volume.

/// Flags of `copilot download`, compatible with `flyte-copilot download`.
#[derive(clap::Args, Debug, Clone)]
pub struct DownloadArgs {}

#[derive(Debug, thiserror::Error)]
pub enum Error {}

pub async fn run(_root: &crate::cli::RootArgs, _args: DownloadArgs) -> Result<(), Error> {
    Ok(())
}
