//! `cargo xtask bench`: copilot's figures beside the polling designs and the physical floor.

#[derive(clap::Args, Debug, Default)]
pub struct Options {}

pub fn run(_opts: Options) -> anyhow::Result<()> {
    anyhow::bail!("the benchmarks are not written yet")
}
