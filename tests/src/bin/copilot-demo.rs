//! `copilot-demo [ROOT]`: one whole task (see `integration_test::demo`), under ROOT
//! (default `<workspace>/target/demo`). `cargo xtask demo` builds copilot and runs this
//! with `COPILOT_BIN` set. Exits non-zero if anything failed.
use std::{path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| integration_test::workspace_root().join("target/demo"));
    println!("copilot demo: a whole Flyte task on this machine\n");
    match integration_test::demo::run(&root) {
        Ok(report) => {
            println!(
                "\ndemo OK: main container exit -> outputs.pb in {}",
                report
                    .since_exit_ms
                    .map_or("(unknown)".into(), |ms| format!("{ms:.1} ms"))
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\ndemo FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
