//! `copilot download` (the binary) reading `https://` inputs from a real HTTPS
//! server on loopback whose certificate is signed by a CA made by the test. The
//! binary trusts that CA the way any Linux program is told to: `SSL_CERT_FILE`
//! or `SSL_CERT_DIR` in its environment. Cases: a blob, a redirect (and one to plain
//! http, refused), 404 and 500,
//! a body shorter than its Content-Length, a certificate no trusted CA signed,
//! broken CA settings; and the S3 client (object_store) against moto serving
//! https with a certificate of the same kind, trusted the same way.
use std::{
    ffi::OsString,
    path::Path,
    process::Output,
    time::{Duration, Instant},
};

use copilot::literals::make;

use crate::support::{
    Task,
    https::{HttpsServer, TestCa, ok, redirect, short, status},
};

/// Runs the task's `copilot download` with only the given certificate variables
/// set (those of the calling environment removed), two retries, and more flags.
fn download_with(task: &Task, env: &[(&str, &Path)], flags: &[String]) -> Output {
    let mut cmd = task.download();
    cmd.arg("--storage.retries=2")
        .args(flags)
        .env_remove("AWS_CA_BUNDLE")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for var in [
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    for (var, value) in env {
        cmd.env(var, OsString::from(value.as_os_str()));
    }
    cmd.output().expect("run copilot download")
}

/// [`download_with`] without more flags.
fn download(task: &Task, env: &[(&str, &Path)]) -> Output {
    download_with(task, env, &[])
}

/// The error document's code and message.
fn error_document(task: &Task) -> (String, String) {
    let e = task.error_document().error.expect("an error");
    (e.code, e.message)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// 300 KiB that no shifted or truncated copy matches (many TLS records).
fn payload() -> Vec<u8> {
    (0..300 * 1024u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// A failed download: exit status 1 and an `InputDownloadFailed` error
/// document; returns its message.
fn failed(task: &Task, out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    let (code, message) = error_document(task);
    assert_eq!(code, "InputDownloadFailed", "{message}");
    eprintln!("error document: {message}");
    message
}

#[test]
fn a_blob_and_a_redirect_download_over_https_trusting_ssl_cert_file() {
    let ca = TestCa::new("copilot test CA");
    let body = payload();
    let server = HttpsServer::start(
        &ca,
        vec![
            ("/data/blob.bin", ok(&body)),
            ("/moved", redirect("/data/blob.bin")),
        ],
    );
    let task = Task::new(&make::literal_map([
        (
            "direct",
            make::blob(server.url("/data/blob.bin"), "", false),
        ),
        ("moved", make::blob(server.url("/moved"), "", false)),
        (
            "by_name",
            make::blob(server.localhost_url("/data/blob.bin"), "", false),
        ),
    ]));
    let ca_file = task.path("ca.pem");
    ca.write_pem(&ca_file);
    let out = download(&task, &[("SSL_CERT_FILE", &ca_file)]);
    assert!(out.status.success(), "{}", stderr(&out));
    for name in ["direct", "moved", "by_name"] {
        let got = std::fs::read(task.inputs_dir().join(name))
            .unwrap_or_else(|e| panic!("input {name}: {e}"));
        assert!(got == body, "input {name}: {} bytes differ", got.len());
    }
    let mut requests = server.requests();
    requests.sort();
    assert_eq!(
        requests,
        [
            "/data/blob.bin",
            "/data/blob.bin",
            "/data/blob.bin",
            "/moved"
        ],
        "the redirect is followed once, every blob fetched once"
    );
}

#[test]
fn ssl_cert_dir_alone_is_trusted_too() {
    let ca = TestCa::new("copilot test CA (dir)");
    let server = HttpsServer::start(&ca, vec![("/a.txt", ok(b"from a CA directory\n"))]);
    let task = Task::new(&make::literal_map([(
        "a",
        make::blob(server.url("/a.txt"), "", false),
    )]));
    let dir = task.path("certs");
    std::fs::create_dir(&dir).expect("mkdir");
    ca.write_pem(&dir.join("test-ca.pem"));
    let out = download(&task, &[("SSL_CERT_DIR", &dir)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(task.inputs_dir().join("a")).expect("input a"),
        "from a CA directory\n"
    );
}

/// reqwest follows a redirect from https to http by default; copilot refuses it,
/// at once (no retries), naming where it was sent.
#[test]
fn a_redirect_from_https_to_plain_http_is_refused() {
    let ca = TestCa::new("copilot test CA");
    let server = HttpsServer::start(&ca, vec![("/down", redirect("http://127.0.0.1:9/x.bin"))]);
    let task = Task::new(&make::literal_map([(
        "x",
        make::blob(server.url("/down"), "", false),
    )]));
    let ca_file = task.path("ca.pem");
    ca.write_pem(&ca_file);
    let out = download(&task, &[("SSL_CERT_FILE", &ca_file)]);
    let message = failed(&task, &out);
    assert!(
        message.contains("refused a redirect from https to plain http (http://127.0.0.1:9/x.bin)"),
        "{message}"
    );
    assert_eq!(server.requests(), ["/down"], "asked once, not retried");
}

#[test]
fn http_404_and_500_fail_naming_the_url_and_status() {
    let ca = TestCa::new("copilot test CA");
    let server = HttpsServer::start(
        &ca,
        vec![
            ("/missing", status("404 Not Found")),
            ("/broken", status("500 Internal Server Error")),
        ],
    );
    // 404 is final; 500 is retried (--storage.retries=2), then reported.
    for (path, code, tries) in [("/missing", "404", 1), ("/broken", "500", 3)] {
        let task = Task::new(&make::literal_map([(
            "x",
            make::blob(server.url(path), "", false),
        )]));
        let ca_file = task.path("ca.pem");
        ca.write_pem(&ca_file);
        let before = server.requests().len();
        let out = download(&task, &[("SSL_CERT_FILE", &ca_file)]);
        let message = failed(&task, &out);
        assert!(message.contains(&server.url(path)), "{message}");
        assert!(message.contains(code), "{message}");
        assert_eq!(server.requests().len() - before, tries, "{path}: {message}");
        assert!(
            !task.inputs_dir().join("x").exists(),
            "{path}: an input file was left: {:?}",
            task.inputs_tree()
        );
    }
}

#[test]
fn a_body_shorter_than_its_content_length_fails_and_leaves_no_file() {
    let ca = TestCa::new("copilot test CA");
    let server = HttpsServer::start(&ca, vec![("/cut.bin", short(100_000, &[b'x'; 40_000]))]);
    let task = Task::new(&make::literal_map([(
        "cut",
        make::blob(server.url("/cut.bin"), "", false),
    )]));
    let ca_file = task.path("ca.pem");
    ca.write_pem(&ca_file);
    let out = download(&task, &[("SSL_CERT_FILE", &ca_file)]);
    let message = failed(&task, &out);
    assert!(message.contains(&server.url("/cut.bin")), "{message}");
    assert_eq!(server.requests().len(), 3, "a cut body is retried (twice)");
    assert_eq!(
        task.inputs_tree(),
        Vec::<String>::new(),
        "nothing (no partial file, no staging folder) is left in the inputs folder"
    );
}

#[test]
fn a_certificate_no_trusted_ca_signed_is_refused_without_retries() {
    let trusted = TestCa::new("copilot test CA");
    let rogue = TestCa::new("someone else's CA");
    let server = HttpsServer::start(&rogue, vec![("/blob.bin", ok(b"must not arrive"))]);
    let task = Task::new(&make::literal_map([(
        "x",
        make::blob(server.url("/blob.bin"), "", false),
    )]));
    let ca_file = task.path("ca.pem");
    trusted.write_pem(&ca_file);
    // Trusting another CA through SSL_CERT_FILE, then the system's CA store.
    let runs: [&[(&str, &Path)]; 2] = [&[("SSL_CERT_FILE", &ca_file)], &[]];
    for env in runs {
        let before = server.connections();
        let started = Instant::now();
        let out = download(&task, env);
        let message = failed(&task, &out);
        assert!(message.contains(&server.url("/blob.bin")), "{message}");
        assert!(message.contains("certificate"), "{message}");
        assert!(message.contains("UnknownIssuer"), "{message}");
        assert_eq!(
            server.connections() - before,
            1,
            "an untrusted certificate is not retried: {message}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            server.requests(),
            Vec::<String>::new(),
            "no request was sent"
        );
        assert!(!task.inputs_dir().join("x").exists());
    }
}

#[test]
fn a_broken_or_missing_ssl_cert_file_is_reported_not_a_crash() {
    let ca = TestCa::new("copilot test CA");
    let server = HttpsServer::start(&ca, vec![("/blob.bin", ok(b"must not arrive"))]);
    let task = Task::new(&make::literal_map([(
        "x",
        make::blob(server.url("/blob.bin"), "", false),
    )]));
    // One PEM block that is no certificate: reqwest refuses such a CA store.
    let broken = task.path("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let missing = task.path("missing.pem");
    let missing_text = missing.display().to_string();
    for (file, logged) in [
        (
            &broken,
            ["cannot load the trusted CA certificates", "zero valid"],
        ),
        (
            &missing,
            [
                "cannot read the CA certificates that SSL_CERT_FILE names",
                missing_text.as_str(),
            ],
        ),
    ] {
        let out = download(&task, &[("SSL_CERT_FILE", file)]);
        let message = failed(&task, &out);
        assert!(message.contains("SSL_CERT_FILE"), "{message}");
        let log_text = stderr(&out);
        for text in logged {
            assert!(log_text.contains(text), "{}: {log_text}", file.display());
        }
        assert_eq!(server.requests(), Vec::<String>::new());
    }
}

#[test]
fn s3_over_https_trusts_ssl_cert_file_too() {
    let ca = TestCa::new("copilot test CA (s3)");
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = ca.write_leaf(certs.path());
    let Some(moto) = crate::support::moto::start_moto_tls(&cert, &key) else {
        return;
    };
    let body = payload();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let trusting = reqwest::Certificate::from_pem(ca.pem().as_bytes()).expect("CA");
        let client = reqwest::Client::builder()
            .add_root_certificate(trusting)
            .build()
            .expect("client");
        for (url, bytes) in [
            (format!("{}/bucket", moto.endpoint()), Vec::new()),
            (
                format!("{}/bucket/data/blob.bin", moto.endpoint()),
                body.clone(),
            ),
        ] {
            let response = client
                .put(&url)
                .body(bytes)
                .send()
                .await
                .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
            assert!(
                response.status().is_success(),
                "PUT {url}: {}",
                response.status()
            );
        }
    });
    let task = Task::new(&make::literal_map([(
        "blob",
        make::blob("s3://bucket/data/blob.bin", "", false),
    )]));
    let ca_file = task.path("ca.pem");
    ca.write_pem(&ca_file);
    let out = download_with(&task, &[("SSL_CERT_FILE", &ca_file)], &moto.flags());
    assert!(out.status.success(), "{}", stderr(&out));
    let got = std::fs::read(task.inputs_dir().join("blob")).expect("input blob");
    assert!(got == body, "{} bytes differ", got.len());
    // Without it (the system's CA store) the same server is refused.
    let task = Task::new(&make::literal_map([(
        "blob",
        make::blob("s3://bucket/data/blob.bin", "", false),
    )]));
    let out = download_with(&task, &[], &moto.flags());
    let message = failed(&task, &out);
    assert!(message.contains("s3://bucket/data/blob.bin"), "{message}");
    assert!(!task.inputs_dir().join("blob").exists());
}
