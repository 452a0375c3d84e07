//! flytekit, Flyte's own Python SDK, as the client of copilot's data plane: it
//! makes a task's inputs from Python values and reads its outputs back
//! (`tests/py/flyte_client.py`, run in the venv `cargo xtask setup` makes).
use std::{path::Path, process::Command};

use crate::env::{missing, workspace_root};

/// Runs `flyte_client.py ARGS…` with `env` added and returns what it printed
/// (one line of JSON or text).
pub fn flytekit(args: &[&str], env: &[(&str, String)]) -> String {
    let python = workspace_root().join("target/venv-flytekit/bin/python");
    if !python.is_file() {
        missing(format!(
            "{} does not exist (cargo xtask setup installs flytekit there)",
            python.display()
        ));
    }
    let script = workspace_root().join("tests/py/flyte_client.py");
    let out = Command::new(&python)
        .arg(&script)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "flyte_client.py {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned()
}

/// [`flytekit`] for a command that prints JSON.
pub fn flytekit_json(args: &[&str], env: &[(&str, String)]) -> serde_json::Value {
    let text = flytekit(args, env);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("flyte_client.py printed {text:?}: {e}"))
}

/// A path argument for [`flytekit`].
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}
