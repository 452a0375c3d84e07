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
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use copilot::{
    literals::make,
    proto::core::{
        ErrorDocument, LiteralMap, SimpleType, TypedInterface, Variable, VariableMap, literal,
        primitive, scalar,
    },
};
use integration_test::{GcsEmulator, copilot_bin, pidfd_wait, preflight};
use prost::Message as _;

/// copilot's largest single-PUT upload (`copilot::storage::SINGLE_PUT_MAX`); larger
/// files go in parts, which the emulator does not serve.
const BIG: usize = 16 << 20;

fn copilot(gcs: &GcsEmulator, args: &[&str]) -> Command {
    let mut cmd = Command::new(copilot_bin());
    cmd.args(GcsEmulator::flags())
        .args(args)
        .env_remove("GOOGLE_SERVICE_ACCOUNT_KEY")
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env_remove("SERVICE_ACCOUNT")
        .envs(gcs.env())
        .stdin(Stdio::null());
    cmd
}

fn download(gcs: &GcsEmulator, from: &str, prefix: &str, dir: &Path) -> Output {
    copilot(
        gcs,
        &[
            "download",
            "--from-remote",
            from,
            "--to-output-prefix",
            prefix,
            "--to-local-dir",
        ],
    )
    .arg(dir)
    .output()
    .expect("running copilot download")
}

fn outputs_interface() -> String {
    let var = |ty| Variable {
        r#type: Some(ty),
        ..Variable::default()
    };
    let iface = TypedInterface {
        inputs: None,
        outputs: Some(VariableMap {
            variables: [
                (
                    "answer".to_string(),
                    var(make::simple_type(SimpleType::Integer)),
                ),
                ("big".to_string(), var(make::blob_literal_type("", false))),
                ("many".to_string(), var(make::blob_literal_type("", true))),
            ]
            .into(),
        }),
    };
    base64::engine::general_purpose::STANDARD.encode(iface.encode_to_vec())
}

/// `copilot sidecar` with the `signal` watchers: it uploads when SIGTERM comes.
struct Sidecar {
    child: Child,
    stderr: std::path::PathBuf,
}

impl Sidecar {
    fn start(gcs: &GcsEmulator, work: &Path, prefix: &str) -> Self {
        let stderr = work.join("sidecar.log");
        let ready = work.join("ready");
        let raw = format!("{prefix}/raw");
        let out = format!("{prefix}/out");
        let outputs = work.join("outputs");
        let iface = outputs_interface();
        let child = copilot(
            gcs,
            &[
                "sidecar",
                "--start-watcher-type=signal",
                "--exit-watcher-type=signal",
                "--after-upload=exit",
                "--to-output-prefix",
                &out,
                "--to-raw-output",
                &raw,
                "--interface",
                &iface,
                "--ready-file",
                &ready.to_string_lossy(),
                "--from-local-dir",
            ],
        )
        .arg(&outputs)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("log file"))
        .spawn()
        .expect("spawning copilot sidecar");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready.exists() {
            assert!(
                Instant::now() < deadline,
                "the sidecar never wrote its ready file"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { child, stderr }
    }

    fn cmdline(&self) -> String {
        let raw = std::fs::read(format!("/proc/{}/cmdline", self.child.id())).unwrap_or_default();
        String::from_utf8_lossy(&raw).replace('\0', " ")
    }

    fn terminate(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// SIGTERM, then its exit code and log.
    fn finish(mut self, timeout: Duration) -> (i32, String) {
        self.terminate();
        assert!(
            pidfd_wait(self.child.id(), timeout),
            "the sidecar did not exit within {timeout:?}"
        );
        let code = self.child.wait().expect("wait").code().unwrap_or(-1);
        (
            code,
            std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        )
    }
}

fn big_bytes(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

fn make_outputs(dir: &Path, files: usize, big: usize) {
    std::fs::create_dir_all(dir.join("many")).expect("mkdir");
    std::fs::write(dir.join("answer"), "42\n").expect("write");
    std::fs::write(dir.join("big"), big_bytes(big)).expect("write");
    for i in 0..files {
        std::fs::write(dir.join("many").join(format!("f{i:04}")), format!("{i}")).expect("write");
    }
}

fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "{what} holds a credential:\n{text}");
    }
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
    let sidecar = Sidecar::start(&gcs, work.path(), "gs://flyte/run");
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
    let sidecar = Sidecar::start(&gcs, work.path(), "gs://flyte/run");
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
