//! A real S3-compatible server (moto) on loopback, and a blocking client for it.
use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use copilot::storage::{Secret, StorageConfig, StorageType};

use crate::{
    env::{missing, workspace_root},
    store_client::StoreClient,
};

/// `moto_server` on a free loopback port, for the life of this value (killed on drop).
///
/// The binary is `$COPILOT_MOTO_SERVER`, else `<workspace>/target/venv-moto/bin/moto_server`
/// (installed by `cargo xtask setup`). Missing is a failure, never a skip.
/// Objects are read and written through [`StoreClient`] (`moto.put(…)`, `moto.get(…)`).
pub struct Moto {
    child: Child,
    port: u16,
    client: StoreClient,
}

impl std::ops::Deref for Moto {
    type Target = StoreClient;

    fn deref(&self) -> &StoreClient {
        &self.client
    }
}

impl Moto {
    /// Starts the server and waits until it accepts connections.
    pub fn start() -> Self {
        let binary = std::env::var_os("COPILOT_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target/venv-moto/bin/moto_server"));
        Self::start_with(&binary)
    }

    /// [`Moto::start`] with the given `moto_server`.
    pub fn start_with(binary: &std::path::Path) -> Self {
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
        let child = Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let client = StoreClient::new(StorageConfig {
            kind: Some(StorageType::S3),
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
            client,
        };
        crate::env::wait_listening(&mut moto.child, "moto_server", port);
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

    /// Kills the server now (for tests of a server dying mid-way).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Creates a bucket (moto accepts an unsigned CreateBucket).
    pub fn create_bucket(&self, name: &str) {
        let url = format!("{}/{name}", self.endpoint());
        let status = self.client.block_on(async {
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
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}
