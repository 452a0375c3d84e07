//! Azure Blob Storage against a real server (azurite, on loopback): `copilot download`
//! and `copilot sidecar` (the Go-compatible `signal` watchers, so no pod is needed) with
//! `az://container/key` and `abfs://container@account.dfs.core.windows.net/key` URLs,
//! credentials from the environment only (account key, or a SAS token), single and
//! multipart blobs, 1,000 small objects, a missing object, and the server killed
//! mid-upload.
use std::{
    path::Path,
    process::Output,
    time::{Duration, Instant},
};

use copilot::{
    literals::make,
    proto::core::{ErrorDocument, LiteralMap},
};
use integration_test::{
    Azurite, preflight,
    store_task::{Sidecar, StoreAccess, assert_no_secret, make_outputs},
};
use prost::Message as _;

fn abfs(url_path: &str) -> String {
    format!(
        "abfs://flyte@{}.dfs.core.windows.net/{url_path}",
        integration_test::azurite::ACCOUNT
    )
}

/// The server, with credentials from `env` only.
fn access(azurite: &Azurite, env: &[(&'static str, String)]) -> StoreAccess {
    StoreAccess {
        flags: azurite.flags(),
        env: env.to_vec(),
        env_remove: &["AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_KEY"],
    }
}

fn download(
    azurite: &Azurite,
    from: &str,
    prefix: &str,
    dir: &Path,
    env: &[(&'static str, String)],
) -> Output {
    access(azurite, env).download(from, prefix, dir)
}

/// The whole data plane on Azure, with the account key in the environment: inputs
/// (a single and a multipart blob) downloaded through `abfs://` and `az://` URLs, then
/// outputs uploaded: 1,000 small files, a 20 MiB blob (uploaded in blocks), an integer.
/// The key appears in no log line, command line or document.
#[test]
fn account_key_from_the_environment_round_trip() {
    preflight();
    let azurite = Azurite::start();
    let sas = azurite.create_container("flyte");
    let key = integration_test::azurite::KEY;
    let env = Azurite::key_env();
    azurite.put("az://flyte/run/raw-in/data.txt", &b"line one\n"[..]);
    azurite.put("az://flyte/run/raw-in/dir/a.txt", &b"A"[..]);
    azurite.put("az://flyte/run/raw-in/dir/sub/b.txt", &b"B"[..]);
    let inputs = make::literal_map([
        ("n", make::integer(7)),
        (
            "data",
            make::blob("az://flyte/run/raw-in/data.txt", "txt", false),
        ),
        ("dir", make::blob(abfs("run/raw-in/dir"), "", true)),
    ]);
    azurite.put("az://flyte/run/inputs.pb", inputs.encode_to_vec());
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("inputs");
    let out = download(
        &azurite,
        &abfs("run/inputs.pb"),
        "az://flyte/run/out",
        &dir,
        &env,
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_no_secret("the downloader's log", &log, &[key, &sas]);
    let read = |p: &str| std::fs::read_to_string(dir.join(p)).expect(p);
    assert_eq!(read("n"), "7");
    assert_eq!(read("data"), "line one\n");
    assert_eq!(
        (read("dir/a.txt"), read("dir/sub/b.txt")),
        ("A".into(), "B".into())
    );

    make_outputs(&work.path().join("outputs"), 1000, 20 << 20);
    let sidecar = Sidecar::start(&access(&azurite, &env), work.path(), "az://flyte/run");
    assert_no_secret("the sidecar's command line", &sidecar.cmdline(), &[key]);
    let (code, log) = sidecar.finish(Duration::from_secs(120));
    assert_eq!(code, 0, "{log}");
    assert_no_secret("the sidecar's log", &log, &[key, &sas]);
    let doc = azurite
        .get("az://flyte/run/out/outputs.pb")
        .expect("outputs.pb");
    let outputs = LiteralMap::decode(doc.as_slice()).expect("a LiteralMap");
    assert_eq!(outputs.literals.len(), 3);
    let raw = azurite.list("az://flyte/run/raw");
    let many = raw.iter().filter(|(k, _)| k.starts_with("many/")).count();
    assert_eq!(many, 1000, "1,000 objects: {:?}", &raw[..raw.len().min(4)]);
    assert!(
        raw.contains(&("big".to_string(), 20 << 20)),
        "{:?}",
        &raw[..1]
    );
}

/// A SAS token (and the account name) in the environment, no account key.
#[test]
fn a_sas_token_from_the_environment_downloads() {
    preflight();
    let azurite = Azurite::start();
    let sas = azurite.create_container("flyte");
    assert!(sas.contains("sig="), "a SAS token");
    azurite.put(
        "az://flyte/run/inputs.pb",
        make::literal_map([("n", make::integer(3))]).encode_to_vec(),
    );
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("inputs");
    let env = [
        (
            "AZURE_STORAGE_ACCOUNT_NAME",
            integration_test::azurite::ACCOUNT.to_string(),
        ),
        ("AZURE_STORAGE_SAS_KEY", sas.clone()),
    ];
    let out = download(
        &azurite,
        "az://flyte/run/inputs.pb",
        "az://flyte/run/out",
        &dir,
        &env,
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(std::fs::read_to_string(dir.join("n")).expect("n"), "3");
    let sig = sas
        .split('&')
        .find(|p| p.starts_with("sig="))
        .expect("a signature");
    assert_no_secret("the downloader's log", &log, &[sig]);
}

/// A missing inputs.pb: `InputDownloadFailed`, naming the object, with no credential in
/// the document or the log.
#[test]
fn a_missing_object_is_input_download_failed() {
    preflight();
    let azurite = Azurite::start();
    azurite.create_container("flyte");
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("inputs");
    let env = Azurite::key_env();
    let out = download(
        &azurite,
        "az://flyte/run/nothing.pb",
        "az://flyte/run/out",
        &dir,
        &env,
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    let doc = azurite
        .get("az://flyte/run/out/errors.pb")
        .expect("errors.pb");
    let error = ErrorDocument::decode(doc.as_slice())
        .expect("an ErrorDocument")
        .error
        .expect("error");
    assert_eq!(error.code, "InputDownloadFailed");
    assert!(
        error.message.contains("az://flyte/run/nothing.pb"),
        "{}",
        error.message
    );
    assert_no_secret(
        "errors.pb",
        &error.message,
        &[integration_test::azurite::KEY],
    );
    assert_no_secret(
        "the downloader's log",
        &log,
        &[integration_test::azurite::KEY],
    );
}

/// The server dies while a 200 MiB output uploads: the sidecar says what failed and exits
/// non-zero within its retry budget (no hang), and nothing claims success.
#[test]
fn the_server_killed_mid_upload_fails_clearly() {
    preflight();
    let mut azurite = Azurite::start();
    azurite.create_container("flyte");
    let work = tempfile::tempdir().expect("tempdir");
    make_outputs(&work.path().join("outputs"), 1, 200 << 20);
    let env = Azurite::key_env();
    let sidecar = Sidecar::start(&access(&azurite, &env), work.path(), "az://flyte/run");
    sidecar.terminate();
    std::thread::sleep(Duration::from_millis(300));
    azurite.kill();
    let started = Instant::now();
    let (code, log) = sidecar.finish(Duration::from_secs(90));
    assert_ne!(code, 0, "the upload cannot have succeeded:\n{log}");
    assert!(started.elapsed() < Duration::from_secs(90));
    assert!(log.contains("az://flyte/run"), "names what failed:\n{log}");
    assert_no_secret("the sidecar's log", &log, &[integration_test::azurite::KEY]);
}
