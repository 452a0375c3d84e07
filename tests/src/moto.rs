//! A real S3-compatible server (moto) on loopback, and a blocking client for it.
use std::{
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use copilot::storage::{Secret, StorageConfig, StorageError, Store};

use crate::env::{missing, workspace_root};

/// `moto_server` on a free loopback port, for the life of this value (killed on drop).
///
/// The binary is `$COPILOT_MOTO_SERVER`, else `<workspace>/target/venv-moto/bin/moto_server`
/// (installed by `cargo xtask setup`). Missing is a failure, never a skip.
pub struct Moto {
    child: Child,
    port: u16,
    rt: tokio::runtime::Runtime,
    store: Store,
}

impl Moto {
    /// Starts the server and waits until it accepts connections.
    pub fn start() -> Self {
        let binary = std::env::var_os("COPILOT_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target/venv-moto/bin/moto_server"));
        if !binary.is_file() {
            missing(format!(
                "moto_server {} does not exist (set COPILOT_MOTO_SERVER or run `cargo xtask setup`)",
                binary.display()
            ));
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let store = Store::new(StorageConfig {
            kind: "s3".into(),
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            region: Some("us-east-1".into()),
            access_key: Some(Secret::new("testing")),
            secret_key: Some(Secret::new("testing")),
            disable_ssl: true,
            retries: 1,
            retry_timeout: Duration::from_secs(5),
            ..StorageConfig::default()
        });
        let mut moto = Moto {
            child,
            port,
            rt,
            store,
        };
        // moto (python) needs a second or two to import; there is no readiness fd to wait on.
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited before listening: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on port {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `--storage.*` flags that point copilot at this server.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--storage.type=s3".into(),
            format!("--storage.connection.endpoint={}", self.endpoint()),
            "--storage.connection.region=us-east-1".into(),
            "--storage.connection.auth-type=accesskey".into(),
            "--storage.connection.access-key=testing".into(),
            "--storage.connection.secret-key=testing".into(),
            "--storage.connection.disable-ssl".into(),
            "--storage.retries=1".into(),
            "--storage.retry-timeout=5s".into(),
        ]
    }

    /// Environment for a copilot process talking to this server (no TLS bundle, no IMDS).
    pub fn env() -> [(&'static str, &'static str); 1] {
        [("AWS_EC2_METADATA_DISABLED", "true")]
    }

    /// Creates a bucket (moto accepts an unsigned CreateBucket).
    pub fn create_bucket(&self, name: &str) {
        let url = format!("{}/{name}", self.endpoint());
        let status = self.rt.block_on(async {
            reqwest::Client::new()
                .put(&url)
                .send()
                .await
                .map(|r| r.status())
        });
        match status {
            Ok(s) if s.is_success() => {}
            Ok(s) => panic!("create bucket {name}: HTTP {s}"),
            Err(e) => panic!("create bucket {name}: {e}"),
        }
    }

    pub fn put(&self, url: &str, bytes: impl Into<Bytes>) {
        self.rt
            .block_on(self.store.put_bytes(url, bytes.into()))
            .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
    }

    /// The object at `url`, or `None` if it does not exist.
    pub fn get(&self, url: &str) -> Option<Vec<u8>> {
        match self.rt.block_on(self.store.read_bytes(url, 1 << 30)) {
            Ok(b) => Some(b.to_vec()),
            Err(StorageError::NotFound { .. }) => None,
            Err(e) => panic!("GET {url}: {e}"),
        }
    }

    /// Keys below `prefix` (relative to it), sorted, with their sizes.
    pub fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        self.rt
            .block_on(self.store.list(prefix))
            .unwrap_or_else(|e| panic!("LIST {prefix}: {e}"))
            .into_iter()
            .map(|o| (o.relative, o.size))
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
