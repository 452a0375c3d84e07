//! `cargo xtask demo`: a whole Flyte task on this machine (download, a runc main
//! container, the sidecar seeing its exit, upload), local files as the object store.

#[derive(clap::Args, Debug, Default)]
pub struct Options {}

pub fn run(_opts: Options) -> anyhow::Result<()> {
    anyhow::bail!("the demo is not written yet")
}
