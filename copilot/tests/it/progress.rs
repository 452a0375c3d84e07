//! Long transfers people watch: `copilot download` on a terminal draws a
//! progress bar (bytes, files, rate, time left) on stderr; with stderr on a
//! pipe (a pod's log) it draws none. The terminal is a real pty made by
//! util-linux `script`; the transfer is a body that stalls after 64 KiB.
use std::process::Command;

use copilot::literals::make;

use crate::support::Task;

/// `copilot download … --timeout 2s` of the task as words of a command line.
fn download_line(task: &Task) -> Vec<String> {
    let mut words = task.download_words();
    words.extend(["--timeout".into(), "2s".into()]);
    words
}

fn has_bar(text: &str) -> bool {
    text.contains("download: 0/1 files, ") && text.contains(" left [") && text.contains("/s, ")
}

#[test]
fn a_terminal_gets_a_progress_bar_and_a_pipe_does_not() {
    let server = crate::support::StallingServer::start();
    let task = Task::new(&make::literal_map([(
        "big",
        make::blob(server.url(), "", false),
    )]));
    let line = download_line(&task).join(" ");

    // On a pty: `script` runs the command with its stdio on a new terminal and
    // copies what the terminal shows to its own stdout.
    let tty = Command::new("script")
        .args(["-q", "-e", "-f", "-c", &line, "/dev/null"])
        .output()
        .expect("running script(1) from util-linux");
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert_eq!(
        tty.status.code(),
        Some(1),
        "the stall hits --timeout: {shown}"
    );
    assert!(
        has_bar(&shown),
        "no progress bar on the terminal: {shown:?}"
    );
    assert!(
        shown.contains("64.00 KiB/1.00 GiB"),
        "the bytes received of the Content-Length: {shown:?}"
    );

    // On a pipe: the same failure, and no bar in the log.
    std::fs::remove_dir_all(task.inputs_dir()).ok();
    let words = download_line(&task);
    let piped = Command::new(&words[0])
        .args(&words[1..])
        .output()
        .expect("running copilot download");
    let log = String::from_utf8_lossy(&piped.stderr);
    assert_eq!(piped.status.code(), Some(1), "{log}");
    assert!(
        !has_bar(&log) && !log.contains('\r'),
        "a bar in a log: {log:?}"
    );
    assert!(log.contains("--timeout 2s"), "{log}");
    drop(server);
}
