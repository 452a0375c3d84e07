//! Hostile inputs for `copilot download`, each reproduced as the hardening sweep
//! found it: setuid modes carried into the inputs, literals of a remote store that
//! name the downloader's own files, a FIFO posing as a blob, signals and timeouts
//! mid-transfer, and secrets echoed in error messages. The store is a real
//! `file://` folder or the in-memory store; slow transfers come from a real HTTP
//! server on loopback that sends a little and then stalls.
use std::{
    io::Read as _,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use copilot::{
    literals::{
        download::{DownloadError, Options},
        download_inputs, make,
    },
    proto::core::{ErrorDocument, LiteralMap, Schema, StructuredDataset, scalar},
    storage::{Progress, StorageConfig, Store},
};

use crate::support::Task;

fn store() -> Store {
    Store::new(StorageConfig::default())
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn download(inputs: LiteralMap, dir: &Path, local_uris: bool) -> Result<(), DownloadError> {
    download_from(&store(), inputs, dir, local_uris).await
}

async fn download_from(
    store: &Store,
    inputs: LiteralMap,
    dir: &Path,
    local_uris: bool,
) -> Result<(), DownloadError> {
    let options = Options {
        local_uris,
        ..Options::default()
    };
    let progress = Arc::new(Progress::default());
    download_inputs(store, inputs, dir, &options, &progress)
        .await
        .map(drop)
}

#[tokio::test]
async fn setuid_and_other_special_modes_never_survive_a_download() {
    let src = tempfile::tempdir().expect("tempdir");
    let (suid, private, multi) = (
        src.path().join("suid"),
        src.path().join("private"),
        src.path().join("multi"),
    );
    std::fs::write(&suid, "#!/bin/sh\n").expect("write");
    chmod(&suid, 0o4755);
    std::fs::write(&private, "secret-ish").expect("write");
    chmod(&private, 0o600);
    std::fs::create_dir(&multi).expect("mkdir");
    std::fs::write(multi.join("sgid"), "x").expect("write");
    chmod(&multi.join("sgid"), 0o2775);
    std::fs::write(multi.join("sticky"), "y").expect("write");
    chmod(&multi.join("sticky"), 0o1640);
    let url = |p: &Path| format!("file://{}", p.display());
    let inputs = make::literal_map([
        ("a", make::blob(url(&suid), "", false)),
        ("b", make::blob(url(&private), "", false)),
        ("m", make::blob(url(&multi), "", true)),
        ("n", make::integer(7)),
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    download(inputs, dir.path(), true).await.expect("download");
    let want = [
        ("a", 0o755),
        ("b", 0o644),
        ("m", 0o755),
        ("m/sgid", 0o755),
        ("m/sticky", 0o644),
        ("n", 0o644),
        ("inputs.pb", 0o644),
        ("inputs.json", 0o644),
    ];
    for (rel, expected) in want {
        let got = mode(&dir.path().join(rel));
        assert_eq!(got, expected, "{rel}: mode {got:o}, want {expected:o}");
    }
}

fn is_local_uri(err: &DownloadError) -> bool {
    match err {
        DownloadError::LocalUri { .. } => true,
        DownloadError::Offloaded { source, .. } => is_local_uri(source),
        _ => false,
    }
}

#[tokio::test]
async fn literals_of_a_remote_store_may_not_name_local_files() {
    let cases = [
        make::blob("file:///proc/self/environ", "", false),
        make::blob("/etc/passwd", "", false),
        make::blob("file:///etc", "", true),
        make::scalar_literal(scalar::Value::Schema(Schema {
            uri: "file:///etc".into(),
            r#type: None,
        })),
        make::scalar_literal(scalar::Value::StructuredDataset(StructuredDataset {
            uri: "/etc/ssl".into(),
            metadata: None,
        })),
        make::collection(vec![make::blob("file:///etc/shadow", "", false)]),
        make::offloaded("file:///etc/hostname"),
    ];
    for lit in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let shown = format!("{lit:?}");
        let err = download(make::literal_map([("x", lit)]), dir.path(), false)
            .await
            .expect_err(&shown);
        assert!(is_local_uri(&err), "{shown}: {err}");
        assert!(
            err.to_string().contains("input x"),
            "names the input: {err}"
        );
        assert_eq!(entries(dir.path()), Vec::<String>::new(), "{shown}");
    }
    // A remote object is still fine.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store();
    store
        .put_bytes("mem://b/k", bytes::Bytes::from_static(b"ok"))
        .await
        .expect("put");
    download_from(
        &store,
        make::literal_map([("x", make::blob("mem://b/k", "", false))]),
        dir.path(),
        false,
    )
    .await
    .expect("a remote blob downloads");
    assert_eq!(std::fs::read(dir.path().join("x")).expect("x"), b"ok");
}

#[tokio::test]
async fn a_fifo_posing_as_a_blob_is_refused_without_blocking() {
    let src = tempfile::tempdir().expect("tempdir");
    let fifo = src.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("no NUL");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let inputs = make::literal_map([(
        "f",
        make::blob(format!("file://{}", fifo.display()), "", false),
    )]);
    let err = tokio::time::timeout(Duration::from_secs(10), download(inputs, dir.path(), true))
        .await
        .expect("the download returns, not blocked on the FIFO")
        .expect_err("a FIFO is not a blob");
    let text = format!(
        "{err}: {:?}",
        std::error::Error::source(&err).map(|s| s.to_string())
    );
    assert!(
        text.contains("not a regular file") || text.contains("does not exist"),
        "{text}"
    );
    assert!(
        !entries(dir.path()).iter().any(|n| n == "f"),
        "{:?}",
        entries(dir.path())
    );
}

/// `copilot download` of the task with `extra` flags, its stderr piped.
fn download_cmd(task: &Task, extra: &[&str]) -> Command {
    let mut cmd = task.download();
    cmd.args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            return (status, stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("copilot download did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn message(doc: &ErrorDocument) -> (String, String) {
    let e = doc.error.as_ref().expect("an error");
    (e.code.clone(), e.message.clone())
}

#[test]
fn a_signal_mid_download_removes_the_staging_folder_and_writes_errors_pb() {
    let server = crate::support::StallingServer::start();
    for (signal, name, code) in [
        (libc::SIGTERM, "SIGTERM", 143),
        (libc::SIGINT, "SIGINT", 130),
    ] {
        let task = Task::new(&make::literal_map([(
            "big",
            make::blob(server.url(), "", false),
        )]));
        let mut child = download_cmd(&task, &[])
            .spawn()
            .expect("spawn copilot download");
        wait_for("the staging folder", Duration::from_secs(20), || {
            !task.staging().is_empty()
        });
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let (status, stderr) = wait_exit(&mut child, Duration::from_secs(10));
        assert_eq!(status.code(), Some(code), "{name}: {status}\n{stderr}");
        assert_eq!(
            task.staging(),
            Vec::<String>::new(),
            "{name}: staging left behind"
        );
        assert!(
            !task.inputs_dir().join("big").exists(),
            "{name}: partial input"
        );
        let (code, text) = message(&task.error_document());
        assert_eq!(code, "InputDownloadFailed");
        assert!(text.contains(name), "{name}: {text}");
    }
}

#[test]
fn a_stale_staging_folder_is_removed_by_the_next_download() {
    let task = Task::new(&make::literal_map([("n", make::integer(1))]));
    let stale = task.inputs_dir().join(".copilot-staging-AbC123");
    std::fs::create_dir_all(stale.join("sub")).expect("mkdir");
    std::fs::write(stale.join("sub/partial"), vec![0u8; 4096]).expect("write");
    let out = download_cmd(&task, &[]).output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        entries(&task.inputs_dir()),
        ["inputs.json", "inputs.pb", "n"]
    );
}

#[test]
fn the_timeout_stops_stalled_and_long_transfers() {
    let server = crate::support::StallingServer::start();
    // A 16 GiB sparse file: one copy call would write it all before the timeout
    // could act; chunked, the download stops within one chunk.
    let src = tempfile::tempdir().expect("tempdir");
    let sparse = src.path().join("huge");
    std::fs::File::create(&sparse)
        .and_then(|f| f.set_len(16 << 30))
        .expect("sparse file");
    let sources = [server.url(), format!("file://{}", sparse.display())];
    for source in sources {
        let task = Task::new(&make::literal_map([(
            "big",
            make::blob(&source, "", false),
        )]));
        let started = Instant::now();
        let mut child = download_cmd(&task, &["--timeout", "1s"])
            .spawn()
            .expect("spawn copilot download");
        let (status, stderr) = wait_exit(&mut child, Duration::from_secs(60));
        let elapsed = started.elapsed();
        assert_eq!(status.code(), Some(1), "{source}: {status}\n{stderr}");
        assert!(
            elapsed < Duration::from_secs(6),
            "{source}: --timeout 1s returned after {elapsed:?}"
        );
        let (code, text) = message(&task.error_document());
        assert_eq!(code, "InputDownloadFailed");
        assert!(text.contains("--timeout 1s"), "{text}");
        assert_eq!(
            task.staging(),
            Vec::<String>::new(),
            "{source}: staging left"
        );
    }
}

#[test]
fn a_failed_download_leaves_its_cause_as_the_termination_message() {
    let task = Task::new(&make::literal_map([(
        "gone",
        make::blob("mem://nowhere/missing", "", false),
    )]));
    let log = task.path("termination-log");
    std::fs::write(&log, "").expect("the kubelet creates the file");
    let mut cmd = download_cmd(&task, &[]);
    cmd.arg("--termination-log").arg(&log);
    let out = cmd.output().expect("run");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let message = std::fs::read_to_string(&log).expect("termination log");
    assert!(
        message.starts_with("input download failed: ") && message.contains("input gone"),
        "{message}"
    );
    assert!(!message.contains('\n'), "one line: {message}");
    // Where the kubelet made no file, none is created.
    let absent = task.path("absent-log");
    let mut cmd = download_cmd(&task, &[]);
    cmd.arg("--termination-log").arg(&absent);
    let _ = cmd.output().expect("run");
    assert!(!absent.exists());
}

#[test]
fn a_zero_timeout_is_no_limit() {
    let task = Task::new(&make::literal_map([("n", make::integer(1))]));
    let out = download_cmd(&task, &["--timeout", "0"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(task.inputs_dir().join("n")).expect("n"),
        "1"
    );
}

#[test]
fn secrets_in_bad_storage_flags_and_config_files_are_never_echoed() {
    let task = Task::new(&make::literal_map([("n", make::integer(1))]));
    let config = task.path("bad.yaml");
    std::fs::write(
        &config,
        "storage:\n  connection:\n    disable-ssl: hunter2-in-yaml\n",
    )
    .expect("write");
    let runs: [Vec<String>; 2] = [
        vec!["--storage.stow.config".into(), "hunter2-bare".into()],
        vec!["--config".into(), config.display().to_string()],
    ];
    for flags in runs {
        let mut cmd = download_cmd(&task, &[]);
        cmd.args(&flags);
        let out = cmd.output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} must fail: {stderr}");
        assert!(
            !stderr.contains("hunter2"),
            "{flags:?} echoed the secret: {stderr}"
        );
        assert!(
            stderr.contains("stow.config") || stderr.contains("bad.yaml"),
            "{flags:?}: names what was wrong: {stderr}"
        );
    }
}
