//! `copilot download` (the binary) against a real S3-compatible server
//! (moto) on loopback: single and multipart blobs, 1,000 objects, a missing
//! object, garbage inputs, and a server that dies mid-way.
//!
//! The server is the crate's [`Moto`]: missing, it fails the test (never a skip).
use std::{
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use bytes::Bytes;
use copilot::{
    literals::make,
    proto::core::{ContainerError, ErrorDocument, LiteralMap, container_error},
};
use integration_test::{Moto, copilot_bin};
use prost::Message as _;

/// `copilot` with the server's flags, its retry timeout replaced by `retry_timeout`.
fn command(moto: &Moto, retry_timeout: &str) -> Command {
    let mut cmd = Command::new(copilot_bin());
    cmd.args(
        moto.flags()
            .into_iter()
            .filter(|f| !f.starts_with("--storage.retry-timeout=")),
    )
    .arg(format!("--storage.retry-timeout={retry_timeout}"))
    .env_remove("AWS_CA_BUNDLE")
    .envs(Moto::env())
    .stdin(Stdio::null());
    cmd
}

fn copilot(moto: &Moto, args: &[&str]) -> std::process::Output {
    command(moto, "3s")
        .args(args)
        .output()
        .expect("run copilot")
}

fn put_many(moto: &Moto, prefix: &str, n: usize) {
    moto.put_all((0..n).map(|i| {
        (
            format!("{prefix}/d{}/f{i:04}.txt", i % 10),
            Bytes::from(format!("file {i}")),
        )
    }));
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn download_single_multipart_and_1000_objects_from_s3() {
    let moto = Moto::start();
    moto.create_bucket("flyte");
    let big: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    moto.put("s3://flyte/raw/big.bin", Bytes::from(big.clone()));
    moto.put(
        "s3://flyte/raw/model/weights/a.bin",
        Bytes::from_static(b"A"),
    );
    moto.put(
        "s3://flyte/raw/model/config.json",
        Bytes::from_static(b"{}"),
    );
    put_many(&moto, "s3://flyte/raw/many", 1000);
    let inputs = make::literal_map([
        ("n", make::integer(3)),
        ("name", make::string("run")),
        ("big", make::blob("s3://flyte/raw/big.bin", "bin", false)),
        ("model", make::blob("s3://flyte/raw/model", "", true)),
        ("many", make::blob("s3://flyte/raw/many", "", true)),
    ]);
    moto.put(
        "s3://flyte/run/inputs.pb",
        Bytes::from(inputs.encode_to_vec()),
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("inputs");
    let started = Instant::now();
    let out = copilot(
        &moto,
        &[
            "download",
            "--from-remote",
            "s3://flyte/run/inputs.pb",
            "--to-output-prefix",
            "s3://flyte/run/out",
            "--to-local-dir",
            local.to_str().expect("utf-8"),
            "--format",
            "JSON",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "download failed: {stderr}");
    eprintln!(
        "downloaded 1,003 objects + 4 MiB in {:?}",
        started.elapsed()
    );
    assert_eq!(std::fs::read(local.join("big")).expect("big"), big);
    assert_eq!(
        std::fs::read_to_string(local.join("model/weights/a.bin")).expect("nested"),
        "A"
    );
    assert_eq!(std::fs::read_to_string(local.join("n")).expect("n"), "3");
    let mut count = 0;
    for d in 0..10 {
        count += std::fs::read_dir(local.join(format!("many/d{d}")))
            .expect("many dir")
            .count();
    }
    assert_eq!(count, 1000);
    assert_eq!(
        std::fs::read_to_string(local.join("many/d7/f0997.txt")).expect("one of many"),
        "file 997"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(local.join("inputs.json")).expect("json"))
            .expect("parse");
    assert_eq!(json["n"], 3);
    let local_canon = local.canonicalize().expect("canonical");
    assert_eq!(
        json["many"],
        serde_json::json!(local_canon.join("many").to_str().expect("utf-8"))
    );
    let pb = LiteralMap::decode(
        std::fs::read(local.join("inputs.pb"))
            .expect("pb")
            .as_slice(),
    )
    .expect("decode pb");
    assert_eq!(pb.literals.len(), 5);
    assert!(
        moto.get("s3://flyte/run/out/errors.pb").is_none(),
        "no error document on success"
    );
}

fn error_document(moto: &Moto, url: &str) -> ErrorDocument {
    let bytes = moto
        .get(url)
        .unwrap_or_else(|| panic!("no error document at {url}"));
    ErrorDocument::decode(bytes.as_slice()).expect("decode error document")
}

/// Runs `copilot download` of `inputs` into `dir` with `extra` flags, expects it to
/// fail, and returns the error of the document it wrote under `out` (`errors.pb`).
fn failed_download(
    moto: &Moto,
    (inputs, out): (&str, &str),
    dir: &Path,
    extra: &[&str],
) -> ContainerError {
    let dir = dir.to_str().expect("utf-8");
    let mut args = vec![
        "download",
        "-f",
        inputs,
        "--to-output-prefix",
        out,
        "-o",
        dir,
    ];
    args.extend_from_slice(extra);
    let run = copilot(moto, &args);
    assert!(
        !run.status.success(),
        "downloading {inputs} succeeded: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    error_document(moto, &format!("{out}/errors.pb"))
        .error
        .expect("error")
}

#[test]
fn missing_object_and_garbage_inputs_write_an_error_document() {
    let moto = Moto::start();
    moto.create_bucket("flyte");
    moto.put("s3://flyte/raw/present", Bytes::from_static(b"here"));
    let inputs = make::literal_map([
        ("ok", make::blob("s3://flyte/raw/present", "", false)),
        ("gone", make::blob("s3://flyte/raw/absent", "", false)),
    ]);
    moto.put(
        "s3://flyte/a/inputs.pb",
        Bytes::from(inputs.encode_to_vec()),
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let out = copilot(
        &moto,
        &[
            "download",
            "-f",
            "s3://flyte/a/inputs.pb",
            "--to-output-prefix",
            "s3://flyte/a/out",
            "-o",
            dir.path().to_str().expect("utf-8"),
            "--err-output-name",
            "err.pb",
        ],
    );
    assert!(
        !out.status.success(),
        "a missing object must fail the download"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("s3://flyte/raw/absent"),
        "the missing object is named: {stderr}"
    );
    let doc = error_document(&moto, "s3://flyte/a/out/err.pb");
    let e = doc.error.expect("error");
    assert_eq!(e.code, "InputDownloadFailed");
    assert_eq!(e.kind, container_error::Kind::Recoverable as i32);
    assert!(
        e.message.contains("gone") && e.message.contains("does not exist"),
        "{}",
        e.message
    );
    assert!(
        entries(dir.path()).is_empty(),
        "nothing partial on disk: {:?}",
        entries(dir.path())
    );

    // Truncated inputs.pb.
    let bytes = inputs.encode_to_vec();
    moto.put(
        "s3://flyte/b/inputs.pb",
        Bytes::from(bytes[..bytes.len() / 2].to_vec()),
    );
    let e = failed_download(
        &moto,
        ("s3://flyte/b/inputs.pb", "s3://flyte/b/out"),
        dir.path(),
        &[],
    );
    assert!(
        e.message
            .contains("not a serialized flyteidl.core.LiteralMap"),
        "{}",
        e.message
    );

    // Unsupported blob scheme.
    let inputs = make::literal_map([("x", make::blob("ftp://example/x", "", false))]);
    moto.put(
        "s3://flyte/c/inputs.pb",
        Bytes::from(inputs.encode_to_vec()),
    );
    let e = failed_download(
        &moto,
        ("s3://flyte/c/inputs.pb", "s3://flyte/c/out"),
        dir.path(),
        &[],
    );
    assert!(
        e.message.contains("unsupported storage URL scheme \"ftp\""),
        "{}",
        e.message
    );

    // Type mismatch against --input-interface.
    use base64::Engine as _;
    let iface = copilot::proto::core::VariableMap {
        variables: [(
            "ok".to_owned(),
            copilot::proto::core::Variable {
                r#type: Some(make::simple_type(copilot::proto::core::SimpleType::Integer)),
                description: String::new(),
            },
        )]
        .into_iter()
        .collect(),
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(iface.encode_to_vec());
    let e = failed_download(
        &moto,
        ("s3://flyte/a/inputs.pb", "s3://flyte/d/out"),
        dir.path(),
        &["-i", &b64],
    );
    assert!(
        e.message
            .contains("input ok: expected integer, found a single blob"),
        "{}",
        e.message
    );
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn server_dying_midway_fails_without_partial_files() {
    let mut moto = Moto::start();
    moto.create_bucket("flyte");
    put_many(&moto, "s3://flyte/raw/many", 1000);
    let inputs = make::literal_map([
        ("many", make::blob("s3://flyte/raw/many", "", true)),
        ("x", make::integer(1)),
    ]);
    moto.put(
        "s3://flyte/run/inputs.pb",
        Bytes::from(inputs.encode_to_vec()),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let child = command(&moto, "2s")
        .arg("--storage.max-concurrency=1")
        .args([
            "download",
            "-f",
            "s3://flyte/run/inputs.pb",
            "--to-output-prefix",
            "s3://flyte/run/out",
            "-o",
            dir.path().to_str().expect("utf-8"),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn copilot");
    // Let it list and start fetching, then take the server away.
    std::thread::sleep(std::time::Duration::from_millis(1000));
    moto.kill();
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the download cannot succeed without its server: {stderr}"
    );
    assert!(
        stderr.contains("error document"),
        "the failed error-document write is reported: {stderr}"
    );
    assert!(
        entries(dir.path()).is_empty(),
        "nothing partial on disk: {:?}",
        entries(dir.path())
    );
}
