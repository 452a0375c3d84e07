//! Google Cloud Storage against an emulator (`gcp-storage-emulator` on loopback, behind
//! the header shim of `integration_test::gcs`, which adds only the `ETag` and
//! `Last-Modified` headers the emulator leaves out): `copilot download` and
//! `copilot sidecar` (the Go-compatible `signal` watchers, so no pod is needed) with
//! `gs://bucket/key` URLs, the service account from a mounted file named by
//! `GOOGLE_SERVICE_ACCOUNT` only, 1,000 small objects, a 16 MiB object, a missing
//! object, and the server killed mid-upload.
//!
//! Not here, because the emulator answers `501` to them (see the fixture's docs):
//! multipart blob (folder) inputs, which copilot lists, and outputs over 16 MiB, which
//! copilot uploads in parts.
use std::{
    path::Path,
    process::Output,
    time::{Duration, Instant},
};

use copilot::{
    literals::make,
    proto::core::{ErrorDocument, LiteralMap, literal, primitive, scalar},
};
use integration_test::{
    GcsEmulator, preflight,
    store_task::{Sidecar, StoreAccess, assert_no_secret, big_bytes, make_outputs},
};
use prost::Message as _;

/// copilot's largest single-PUT upload (`copilot::storage::SINGLE_PUT_MAX`); larger
/// files go in parts, which the emulator does not serve.
const BIG: usize = 16 << 20;

/// The emulator, with the service account from the mounted file only.
fn access(gcs: &GcsEmulator) -> StoreAccess {
    StoreAccess {
        flags: GcsEmulator::flags(),
        env: gcs.env(),
        env_remove: &[
            "GOOGLE_SERVICE_ACCOUNT_KEY",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "SERVICE_ACCOUNT",
        ],
    }
}

fn download(gcs: &GcsEmulator, from: &str, prefix: &str, dir: &Path) -> Output {
    access(gcs).download(from, prefix, dir)
}

/// The data plane on GCS, with the service account in a mounted file: inputs (an
/// integer and a single blob) downloaded through `gs://` URLs, then outputs uploaded:
/// 1,000 small files, a 16 MiB blob, an integer, each read back. The key appears in no
/// log line, command line or document.
#[test]
fn service_account_file_round_trip() {
    preflight();
    let gcs = GcsEmulator::start("flyte");
    let key = gcs.private_key().to_owned();
    gcs.put("gs://flyte/run/raw-in/data.txt", &b"line one\n"[..]);
    let inputs = make::literal_map([
        ("n", make::integer(7)),
        (
            "data",
            make::blob("gs://flyte/run/raw-in/data.txt", "txt", false),
        ),
    ]);
    gcs.put("gs://flyte/run/inputs.pb", inputs.encode_to_vec());
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("inputs");
    let out = download(&gcs, "gs://flyte/run/inputs.pb", "gs://flyte/run/out", &dir);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_no_secret("the downloader's log", &log, &[&key]);
    let read = |p: &str| std::fs::read_to_string(dir.join(p)).expect(p);
    assert_eq!(read("n"), "7");
    assert_eq!(read("data"), "line one\n");

    make_outputs(&work.path().join("outputs"), 1000, BIG);
    let sidecar = Sidecar::start(&access(&gcs), work.path(), "gs://flyte/run");
    let cmdline = sidecar.cmdline();
    assert!(cmdline.contains("sidecar"), "{cmdline}");
    assert_no_secret("the sidecar's command line", &cmdline, &[&key]);
    let (code, log) = sidecar.finish(Duration::from_secs(180));
    assert_eq!(code, 0, "{log}");
    assert_no_secret("the sidecar's log", &log, &[&key]);

    let doc = gcs
        .get("gs://flyte/run/out/outputs.pb")
        .expect("outputs.pb");
    let outputs = LiteralMap::decode(doc.as_slice()).expect("a LiteralMap");
    assert_eq!(outputs.literals.len(), 3, "{outputs:?}");
    let answer = outputs.literals.get("answer").and_then(|l| match &l.value {
        Some(literal::Value::Scalar(s)) => match &s.value {
            Some(scalar::Value::Primitive(p)) => match p.value {
                Some(primitive::Value::Integer(i)) => Some(i),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    });
    assert_eq!(answer, Some(42), "{outputs:?}");

    let raw = gcs.list_json("flyte", "run/raw/");
    let many = raw
        .iter()
        .filter(|(k, _)| k.starts_with("run/raw/many/"))
        .count();
    assert_eq!(many, 1000, "1,000 objects: {:?}", &raw[..raw.len().min(4)]);
    assert!(
        raw.contains(&("run/raw/big".to_string(), BIG as u64)),
        "{:?}",
        &raw[..raw.len().min(4)]
    );
    assert_eq!(
        gcs.get("gs://flyte/run/raw/many/f0999").as_deref(),
        Some(&b"999"[..])
    );
    let big = gcs.get("gs://flyte/run/raw/big").expect("big");
    assert!(big == big_bytes(BIG), "the 16 MiB object differs");
}

/// A missing inputs.pb: `InputDownloadFailed`, naming the object, with no credential in
/// the document or the log.
#[test]
fn a_missing_object_is_input_download_failed() {
    preflight();
    let gcs = GcsEmulator::start("flyte");
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("inputs");
    let out = download(
        &gcs,
        "gs://flyte/run/nothing.pb",
        "gs://flyte/run/out",
        &dir,
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    let doc = gcs.get("gs://flyte/run/out/errors.pb").expect("errors.pb");
    let error = ErrorDocument::decode(doc.as_slice())
        .expect("an ErrorDocument")
        .error
        .expect("error");
    assert_eq!(error.code, "InputDownloadFailed");
    assert!(
        error.message.contains("gs://flyte/run/nothing.pb"),
        "{}",
        error.message
    );
    assert_no_secret("errors.pb", &error.message, &[gcs.private_key()]);
    assert_no_secret("the downloader's log", &log, &[gcs.private_key()]);
}

/// The server dies while outputs upload (once the first objects have arrived): the
/// sidecar says what failed and exits non-zero within its retry budget (no hang).
#[test]
fn the_server_killed_mid_upload_fails_clearly() {
    preflight();
    let mut gcs = GcsEmulator::start("flyte");
    let key = gcs.private_key().to_owned();
    let work = tempfile::tempdir().expect("tempdir");
    make_outputs(&work.path().join("outputs"), 2000, BIG);
    let sidecar = Sidecar::start(&access(&gcs), work.path(), "gs://flyte/run");
    sidecar.terminate();
    let deadline = Instant::now() + Duration::from_secs(30);
    while gcs.list_json("flyte", "run/raw/").is_empty() {
        assert!(Instant::now() < deadline, "no upload began within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    gcs.kill();
    let started = Instant::now();
    let (code, log) = sidecar.finish(Duration::from_secs(90));
    assert_ne!(code, 0, "the upload cannot have succeeded:\n{log}");
    assert!(started.elapsed() < Duration::from_secs(90));
    assert!(log.contains("gs://flyte/run"), "names what failed:\n{log}");
    assert_no_secret("the sidecar's log", &log, &[&key]);
}
