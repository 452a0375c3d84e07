//! Test support: a real S3-compatible server (moto) on loopback, started
//! per test and killed on drop; an HTTPS server with a test CA ([`https`]);
//! an HTTP server whose body stalls ([`StallingServer`]).
#![allow(dead_code, reason = "each test binary uses a different part")]
pub mod https;

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use copilot::storage::{Secret, StorageConfig, StorageType, Store};

/// A running moto server; killed when dropped.
pub struct Moto {
    child: Child,
    pub port: u16,
    /// `http`, or `https` when started with a certificate ([`start_moto_tls`]).
    scheme: &'static str,
}

impl Moto {
    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// Storage flags for the copilot binary.
    pub fn flags(&self) -> Vec<String> {
        let mut flags = vec![
            "--storage.type=s3".into(),
            format!("--storage.connection.endpoint={}", self.endpoint()),
            "--storage.connection.region=us-east-1".into(),
            "--storage.connection.auth-type=accesskey".into(),
            "--storage.connection.access-key=testing".into(),
            "--storage.connection.secret-key=testing".into(),
        ];
        if self.scheme == "http" {
            flags.push("--storage.connection.disable-ssl".into());
        }
        flags
    }

    pub fn store(&self) -> Store {
        Store::new(StorageConfig {
            kind: Some(StorageType::S3),
            endpoint: Some(self.endpoint()),
            region: Some("us-east-1".into()),
            access_key: Some(Secret::new("testing")),
            secret_key: Some(Secret::new("testing")),
            disable_ssl: true,
            retries: 1,
            retry_timeout: Duration::from_secs(5),
            ..StorageConfig::default()
        })
    }

    /// Creates a bucket (moto accepts the unsigned CreateBucket call).
    pub async fn create_bucket(&self, name: &str) {
        let response = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket {name}: {e}"));
        assert!(
            response.status().is_success(),
            "create bucket {name}: HTTP {}",
            response.status()
        );
    }

    /// Kills the server now (for tests of a server dying mid-way).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
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

/// Starts moto, or returns None (test skipped) when it is not installed —
/// except under `CI=true`, where a missing server fails the test.
pub fn start_moto() -> Option<Moto> {
    start(&[], "http")
}

/// [`start_moto`] serving https with the given certificate and key (PEM files).
pub fn start_moto_tls(cert: &std::path::Path, key: &std::path::Path) -> Option<Moto> {
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    start(&["--ssl-cert", &cert, "--ssl-key", &key], "https")
}

fn start(extra: &[&str], scheme: &'static str) -> Option<Moto> {
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
        .args(extra)
        .env_remove("AWS_CA_BUNDLE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
    let moto = Moto {
        child,
        port,
        scheme,
    };
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

/// An HTTP server that answers every GET with a large Content-Length, sends
/// 64 KiB of it and then stalls until dropped.
pub struct StallingServer {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl StallingServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let flag = flag.clone();
                std::thread::spawn(move || {
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request);
                    let head = "HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n";
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(&vec![b'x'; 64 * 1024]);
                    while !flag.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                });
            }
        });
        Self { port, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/big.bin", self.port)
    }
}

impl Drop for StallingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
