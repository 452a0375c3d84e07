//! The ready file (`--ready-file`): written once the watcher is attached, so that
//! from then on no exit of the main container can be missed; `copilot probe`
//! (the `probe` module) checks for it.

use std::path::Path;

/// Writes the ready marker (this process's pid) atomically.
pub(super) fn write_ready(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_file_holds_the_pid_and_no_temporary_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run/ready");
        write_ready(&path).expect("written");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, format!("{}\n", std::process::id()));
        assert!(!dir.path().join("run/ready.tmp").exists());
        assert_eq!(super::super::probe(&path), std::process::ExitCode::SUCCESS);
    }
}
