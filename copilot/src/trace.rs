//! `copilot trace`: print the lifecycle events of a pod as JSON lines.
use std::process::ExitCode;

#[derive(clap::Args, Debug, Clone)]
pub struct TraceArgs {}

#[derive(Debug, thiserror::Error)]
pub enum Error {}

pub async fn run(_args: TraceArgs) -> Result<ExitCode, Error> {
    Ok(ExitCode::SUCCESS)
}
