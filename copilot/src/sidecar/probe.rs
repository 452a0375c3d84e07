//! `copilot probe`: a startup probe for the sidecar, which succeeds once the
//! ready file (see `ready`) exists.

use std::{path::Path, process::ExitCode};

/// Succeeds once the sidecar is ready; says what it waits for otherwise.
pub fn probe(ready_file: &Path) -> ExitCode {
    if ready_file.exists() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "copilot: not ready: {} does not exist yet",
            ready_file.display()
        );
        ExitCode::FAILURE
    }
}
