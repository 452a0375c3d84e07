//! A real Azure Blob Storage server (azurite, Microsoft's emulator) on loopback, and a
//! blocking client for it. Credentials reach copilot through the environment only.
use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::Duration,
};

use copilot::storage::{Secret, StorageConfig, StorageType};

use crate::{
    env::{missing, workspace_root},
    store_client::StoreClient,
};

/// azurite's well-known development account (documented, not a secret).
pub const ACCOUNT: &str = "devstoreaccount1";
/// Its well-known key (azurite's documentation, "Default storage account").
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// `azurite-blob` on a free loopback port with its data in a temporary folder, for the
/// life of this value (killed on drop). From `target/azurite` (`cargo xtask setup`);
/// missing is a failure, never a skip.
pub struct Azurite {
    child: Option<Child>,
    port: u16,
    _data: tempfile::TempDir,
    client: StoreClient,
}

impl std::ops::Deref for Azurite {
    type Target = StoreClient;

    fn deref(&self) -> &StoreClient {
        &self.client
    }
}

impl Azurite {
    pub fn start() -> Self {
        let binary = workspace_root().join("target/azurite/node_modules/.bin/azurite-blob");
        if !binary.is_file() {
            missing(format!(
                "{} does not exist (run `cargo xtask setup`)",
                binary.display()
            ));
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let data = tempfile::Builder::new()
            .prefix("azurite-")
            .tempdir()
            .expect("tempdir");
        let child = Command::new(&binary)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(data.path())
            .args(["--silent", "--skipApiVersionCheck"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let endpoint = format!("http://127.0.0.1:{port}/{ACCOUNT}");
        let client = StoreClient::new(StorageConfig {
            kind: Some(StorageType::Azure),
            endpoint: Some(endpoint),
            stow_config: [
                ("account".to_string(), Secret::new(ACCOUNT)),
                ("key".to_string(), Secret::new(KEY)),
            ]
            .into(),
            retries: 1,
            retry_timeout: Duration::from_secs(5),
            ..StorageConfig::default()
        });
        let mut azurite = Azurite {
            child: Some(child),
            port,
            _data: data,
            client,
        };
        if let Some(child) = azurite.child.as_mut() {
            crate::env::wait_listening(child, "azurite", port);
        }
        azurite
    }

    /// The account's blob endpoint (`--storage.connection.endpoint`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// The `--storage.*` flags for copilot: the endpoint only, no credential.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--storage.type=azure".into(),
            format!("--storage.connection.endpoint={}", self.endpoint()),
            "--storage.retries=1".into(),
            "--storage.retry-timeout=5s".into(),
        ]
    }

    /// The account-key credentials, as a pod would get them from a Secret.
    pub fn key_env() -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT.into()),
            ("AZURE_STORAGE_ACCOUNT_KEY", KEY.into()),
        ]
    }

    /// Creates a container, and returns a SAS token for it (read, write, list; 1 h).
    pub fn create_container(&self, name: &str) -> String {
        let run = |command: &str| {
            let python = workspace_root().join("target/venv-flytekit/bin/python");
            let script = workspace_root().join("tests/py/azure_container.py");
            let out = Command::new(&python)
                .arg(&script)
                .args([command, &self.endpoint(), name])
                .envs(Self::key_env())
                .output()
                .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
            assert!(
                out.status.success(),
                "azure_container.py {command} {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        run("create");
        run("sas")
    }

    /// Kills the server (a store that goes away mid-transfer).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.kill();
    }
}
