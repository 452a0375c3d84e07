use std::process::ExitCode;

use clap::Parser as _;
use copilot::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr; stdout is reserved for command output (e.g. `trace` JSON lines).
    let filter =
        EnvFilter::try_new(cli.root.log_filter()).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("copilot: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<ExitCode> = runtime.block_on(async move {
        match cli.command {
            Command::Trace(args) => Ok(copilot::trace::run(args).await?),
            Command::Sidecar(args) => Ok(copilot::sidecar::run(&cli.root, *args).await?),
            Command::Probe(args) => Ok(copilot::sidecar::probe(&args)),
            Command::Download(args) => {
                copilot::download::run(&cli.root, args).await?;
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("copilot: {e:#}");
            ExitCode::FAILURE
        }
    }
}
