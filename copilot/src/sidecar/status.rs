//! The sidecar's machine-readable result (`--status-file`): what it decided and how
//! fast, as one JSON document written atomically (temporary file, then rename) once the
//! outputs or the error document are durable. For scripts, tests and benchmarks that
//! would otherwise read the log.
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::wait::MainExit;

/// What the sidecar did. No default: every path that ends a run names its outcome,
/// so one that forgot could not pass for any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// outputs.pb written.
    Outputs,
    /// The interface has no outputs: nothing written.
    NoOutputs,
    /// An error document written (or one already there was kept).
    Error,
    /// A document was already at the output prefix (a restarted sidecar): nothing done.
    AlreadyDone,
}

/// How the main container ended, as the sidecar saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Main {
    /// Its container id (or cgroup name), when known.
    pub container: Option<String>,
    /// Its pid in the sidecar's view (host pid, or pid in its own namespace).
    pub pid: Option<u32>,
    pub exit_code: Option<u8>,
    pub signal: Option<u8>,
    pub oom_killed: bool,
    /// False when the watcher could not see the status (signal design, or unrecorded).
    pub status_known: bool,
}

impl From<&MainExit> for Main {
    fn from(exit: &MainExit) -> Self {
        Self {
            container: exit.container.clone(),
            pid: exit.pid,
            exit_code: exit.status.and_then(|s| s.code()),
            signal: exit.status.and_then(|s| s.signal()),
            oom_killed: exit.oom_killed,
            status_known: exit.status.is_some(),
        }
    }
}

/// The document `--status-file` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub outcome: Outcome,
    /// The error document's code, for [`Outcome::Error`].
    pub error_code: Option<String>,
    /// `None` when the main container's exit was not seen (signal design, a failure
    /// before it).
    pub main: Option<Main>,
    /// From the kernel's exit event to outputs.pb durable in the store.
    pub since_exit_ms: Option<f64>,
    /// The document written (outputs.pb or the error document).
    pub url: Option<String>,
}

impl Status {
    /// Reads a status file (for tests and tools).
    pub fn read(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read(path)?;
        serde_json::from_slice(&text).map_err(std::io::Error::other)
    }

    /// Writes `path` whole or not at all.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracer::ExitStatus;

    #[test]
    fn a_status_round_trips_and_spells_its_outcome_in_snake_case() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("status.json");
        let status = Status {
            outcome: Outcome::NoOutputs,
            main: Some(Main::from(&MainExit {
                container: Some("abc".into()),
                pid: Some(1),
                status: Some(ExitStatus(3 << 8)),
                oom_killed: false,
                time_ns: None,
            })),
            since_exit_ms: Some(1.5),
            error_code: None,
            url: None,
        };
        status.write(&path).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("\"no_outputs\""), "{text}");
        assert!(!dir.path().join("status.json.tmp").exists());
        let back = Status::read(&path).expect("parse");
        assert_eq!(back, status);
        let main = back.main.expect("main");
        assert_eq!(
            (main.exit_code, main.signal, main.status_known),
            (Some(3), None, true)
        );
    }
}
