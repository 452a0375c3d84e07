//! The `--storage.*` flags `flyte-copilot` accepts (and that Flyte's pod plugin
//! passes), merged with the `--config` file into a [`StorageConfig`].
use std::path::PathBuf;

use crate::storage::{ConfigError, Secret, StorageConfig, config};

/// `--storage.*` flags, compatible with `flyte-copilot`'s (flytestdlib's
/// storage config). Flags win over the `--config` file, which wins over the
/// defaults; each cloud's standard environment variables (`AWS_*`,
/// `GOOGLE_*`, `AZURE_*`) fill in what neither sets.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StorageArgs {
    /// flytestdlib config file (YAML); its `storage:` section is read.
    #[arg(long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Storage type: s3, minio, stow, local, mem.
    #[arg(long = "storage.type", global = true)]
    pub kind: Option<String>,
    /// Default bucket/container (used for references without one).
    #[arg(long = "storage.container", global = true)]
    pub container: Option<String>,
    /// S3-compatible endpoint URL (e.g. http://minio:9000).
    #[arg(long = "storage.connection.endpoint", global = true)]
    pub endpoint: Option<String>,
    /// Region.
    #[arg(long = "storage.connection.region", global = true)]
    pub region: Option<String>,
    /// `iam` (the environment's credential chain) or `accesskey`.
    #[arg(long = "storage.connection.auth-type", global = true)]
    pub auth_type: Option<String>,
    /// Access key id (auth-type accesskey).
    #[arg(long = "storage.connection.access-key", global = true)]
    pub access_key: Option<Secret>,
    /// Secret key (auth-type accesskey).
    #[arg(long = "storage.connection.secret-key", global = true)]
    pub secret_key: Option<Secret>,
    /// Allow plain http to the endpoint.
    #[arg(long = "storage.connection.disable-ssl", global = true, num_args = 0..=1,
          default_missing_value = "true",
        require_equals = true, value_parser = clap::builder::BoolishValueParser::new())]
    pub disable_ssl: Option<bool>,
    /// stow kind: s3, google, azure, local.
    #[arg(long = "storage.stow.kind", global = true)]
    pub stow_kind: Option<String>,
    /// stow configuration, `key=value` (repeatable, or comma-separated).
    #[arg(long = "storage.stow.config", global = true, value_name = "KEY=VALUE")]
    pub stow_config: Vec<Secret>,
    /// Accepted for compatibility (flytestdlib's download size cap; 0 = none).
    #[arg(long = "storage.limits.maxDownloadMBs", global = true)]
    pub max_download_mbs: Option<u64>,
    /// Accepted for compatibility (flytestdlib's multi-container mode).
    #[arg(long = "storage.enable-multicontainer", global = true, num_args = 0..=1,
          default_missing_value = "true",
        require_equals = true, value_parser = clap::builder::BoolishValueParser::new())]
    pub enable_multicontainer: Option<bool>,
    /// How many objects move at once.
    #[arg(long = "storage.max-concurrency", global = true, default_value_t = 32)]
    pub max_concurrency: usize,
    /// How often a failed request is retried (transient errors only).
    #[arg(long = "storage.retries", global = true, default_value_t = 5)]
    pub retries: usize,
    /// How long retries of one request may go on (Go duration, e.g. 30s).
    #[arg(long = "storage.retry-timeout", global = true, default_value = "1m")]
    pub retry_timeout: String,
}

impl StorageArgs {
    /// Merges flags, the `--config` file and defaults.
    pub fn to_config(&self) -> Result<StorageConfig, ConfigError> {
        let file = match &self.config {
            Some(pattern) => config::read_config_files(pattern)?,
            None => config::FileStorage::default(),
        };
        let mut stow_config = file.stow.config;
        config::parse_stow_pairs(&self.stow_config, &mut stow_config)?;
        let retry_timeout = crate::duration::parse_std(&self.retry_timeout).map_err(|source| {
            ConfigError::Duration {
                flag: "--storage.retry-timeout",
                source,
            }
        })?;
        Ok(StorageConfig {
            kind: self.kind.clone().or(file.kind).unwrap_or_default(),
            container: self.container.clone().or(file.container),
            endpoint: self
                .endpoint
                .clone()
                .or(file.connection.endpoint)
                .filter(|e| !e.is_empty()),
            region: self
                .region
                .clone()
                .or(file.connection.region)
                .filter(|r| !r.is_empty()),
            auth_type: self
                .auth_type
                .clone()
                .or(file.connection.auth_type)
                .filter(|a| !a.is_empty()),
            access_key: self
                .access_key
                .clone()
                .or(file.connection.access_key)
                .filter(|k| !k.is_empty()),
            secret_key: self
                .secret_key
                .clone()
                .or(file.connection.secret_key)
                .filter(|k| !k.is_empty()),
            disable_ssl: self
                .disable_ssl
                .or(file.connection.disable_ssl)
                .unwrap_or(false),
            stow_kind: self
                .stow_kind
                .clone()
                .or(file.stow.kind)
                .filter(|k| !k.is_empty()),
            stow_config,
            max_concurrency: self.max_concurrency.max(1),
            retries: self.retries,
            retry_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        storage: StorageArgs,
    }

    #[test]
    fn flyte_plugin_flags_parse_and_secrets_stay_hidden() {
        let cli = Cli::try_parse_from([
            "copilot",
            "--storage.limits.maxDownloadMBs=0",
            "--storage.enable-multicontainer",
            "--storage.type=s3",
            "--storage.connection.secret-key=SUPERSECRET",
            "--storage.connection.access-key=AKIAEXAMPLE",
            "--storage.connection.auth-type=accesskey",
            "--storage.connection.region=us-east-1",
            "--storage.connection.endpoint=http://127.0.0.1:9000",
            "--storage.connection.disable-ssl=true",
        ])
        .expect("flags Flyte passes must parse");
        let config = cli.storage.to_config().expect("valid config");
        assert_eq!(config.kind, "s3");
        assert_eq!(config.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(config.disable_ssl);
        assert_eq!(
            config.secret_key.as_ref().map(Secret::expose),
            Some("SUPERSECRET")
        );
        let debug = format!("{:?} {:?}", cli.storage, config);
        assert!(!debug.contains("SUPERSECRET"), "secret leaked: {debug}");
        assert!(!debug.contains("AKIAEXAMPLE"), "access key leaked: {debug}");
    }

    #[test]
    fn stow_config_pairs_and_config_file_merge() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("config.yaml");
        std::fs::write(
            &file,
            "storage:\n  type: minio\n  container: bucket\n  connection:\n    endpoint: http://minio:9000\n    disable-ssl: true\n  stow:\n    kind: s3\n    config:\n      region: eu-west-1\nlogger:\n  level: 4\n",
        )
        .expect("write config");
        let cli = Cli::try_parse_from([
            "copilot",
            "--config",
            file.to_str().expect("utf-8 path"),
            "--storage.stow.config",
            "access_key_id=AK",
            "--storage.stow.config",
            "secret_key=SK,auth_type=accesskey",
            "--storage.connection.endpoint=http://override:1",
        ])
        .expect("parse");
        let config = cli.storage.to_config().expect("valid config");
        assert_eq!(config.kind, "minio");
        assert_eq!(config.container.as_deref(), Some("bucket"));
        assert_eq!(
            config.endpoint.as_deref(),
            Some("http://override:1"),
            "flags win over the file"
        );
        assert!(config.disable_ssl);
        assert_eq!(config.stow_kind.as_deref(), Some("s3"));
        let keys: Vec<&str> = config.stow_config.keys().map(String::as_str).collect();
        assert_eq!(keys, ["access_key_id", "auth_type", "region", "secret_key"]);
    }

    #[test]
    fn bare_boolean_flags_do_not_swallow_the_subcommand() {
        let cli = crate::cli::Cli::try_parse_from([
            "copilot",
            "--storage.enable-multicontainer",
            "--storage.connection.disable-ssl",
            "download",
            "--from-remote",
            "s3://b/inputs.pb",
            "--to-output-prefix",
            "s3://b/out",
            "--to-local-dir",
            "/tmp/x",
        ])
        .expect("bare boolean flags before the subcommand must parse");
        assert_eq!(cli.root.storage.disable_ssl, Some(true));
        assert_eq!(cli.root.storage.enable_multicontainer, Some(true));
        assert!(matches!(cli.command, crate::cli::Command::Download(_)));
        let cli = Cli::try_parse_from(["copilot", "--storage.connection.disable-ssl=false"])
            .expect("parse");
        assert_eq!(cli.storage.disable_ssl, Some(false));
    }

    #[test]
    fn bad_stow_pair_names_the_key_only() {
        let cli =
            Cli::try_parse_from(["copilot", "--storage.stow.config", "novalue"]).expect("parse");
        let err = cli.storage.to_config().expect_err("must fail");
        assert!(err.to_string().contains("key=value"), "{err}");
    }
}
