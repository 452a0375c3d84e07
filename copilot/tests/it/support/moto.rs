//! A real S3-compatible server (moto) on loopback serving https with a test
//! certificate, for the S3 client's TLS tests; killed on drop. Plain-http moto tests
//! live in the integration-test crate (`tests/tests/s3.rs`).
use std::{
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A running moto server; killed when dropped.
pub struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Storage flags for the copilot binary.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--storage.type=s3".into(),
            format!("--storage.connection.endpoint={}", self.endpoint()),
            "--storage.connection.region=us-east-1".into(),
            "--storage.connection.auth-type=accesskey".into(),
            "--storage.connection.access-key=testing".into(),
            "--storage.connection.secret-key=testing".into(),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("COPILOT_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let p = workspace.join("target/venv-moto/bin/moto_server");
    p.exists().then_some(p)
}

/// Starts moto serving https with the given certificate and key (PEM files), or
/// returns None (test skipped) when it is not installed — except under `CI=true`,
/// where a missing server fails the test.
pub fn start_moto_tls(cert: &Path, key: &Path) -> Option<Moto> {
    let Some(binary) = moto_binary() else {
        let msg = "moto_server not found: set COPILOT_MOTO_SERVER or run `cargo xtask setup` (target/venv-moto)";
        // As the integration-test crate's `is_ci`.
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let child = Command::new(&binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .arg("--ssl-cert")
        .arg(cert)
        .arg("--ssl-key")
        .arg(key)
        .env_remove("AWS_CA_BUNDLE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
    let moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not listen on port {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(moto)
}
