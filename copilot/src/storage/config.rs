//! Storage configuration: the `--storage.*` flags `flyte-copilot` accepts
//! (and that Flyte's pod plugin passes), the flytestdlib `--config` YAML
//! file, and the secrets among them, which never reach a log.
use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

/// A configuration error.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `reason` is the parser's message with every quoted value redacted.
    #[error("the config file {path} is not valid YAML for copilot's `storage:` section: {reason}")]
    ParseFile { path: PathBuf, reason: String },
    #[error("--config {pattern}: {reason}")]
    Glob { pattern: PathBuf, reason: String },
    #[error(
        "--storage.stow.config expects key=value pairs; item {item} has no '=' (not shown: it may be a secret)"
    )]
    StowConfig { item: usize },
    #[error("invalid duration for {flag}: {source}")]
    Duration {
        flag: &'static str,
        #[source]
        source: crate::literals::values::ValueError,
    },
}

/// A string that is never printed: `Debug` and `Display` show `<redacted>`.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself, for handing to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "<redacted>"
        })
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

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

/// The storage configuration once flags, file and defaults are merged.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub kind: String,
    pub container: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub auth_type: Option<String>,
    pub access_key: Option<Secret>,
    pub secret_key: Option<Secret>,
    pub disable_ssl: bool,
    pub stow_kind: Option<String>,
    pub stow_config: BTreeMap<String, Secret>,
    /// Objects transferred at once.
    pub max_concurrency: usize,
    /// Retries of one failed request (object_store's retry) and of one
    /// failed object transfer (a stream cut mid-way).
    pub retries: usize,
    pub retry_timeout: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            kind: String::new(),
            container: None,
            endpoint: None,
            region: None,
            auth_type: None,
            access_key: None,
            secret_key: None,
            disable_ssl: false,
            stow_kind: None,
            stow_config: BTreeMap::new(),
            max_concurrency: 32,
            retries: 5,
            retry_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Default, serde::Deserialize)]
struct FileRoot {
    #[serde(default)]
    storage: FileStorage,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct FileStorage {
    #[serde(rename = "type")]
    kind: Option<String>,
    container: Option<String>,
    #[serde(default)]
    connection: FileConnection,
    #[serde(default)]
    stow: FileStow,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct FileConnection {
    endpoint: Option<String>,
    region: Option<String>,
    auth_type: Option<String>,
    access_key: Option<Secret>,
    secret_key: Option<Secret>,
    disable_ssl: Option<bool>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct FileStow {
    kind: Option<String>,
    #[serde(default)]
    config: BTreeMap<String, Secret>,
}

fn parse_stow_pairs(
    args: &[Secret],
    into: &mut BTreeMap<String, Secret>,
) -> Result<(), ConfigError> {
    let mut item = 0;
    for arg in args {
        let text = arg.expose();
        // "k=v" or "k1=v1,k2=v2" (pflag's StringToString form).
        let pieces: Vec<&str> = if text.split(',').all(|p| p.contains('=')) {
            text.split(',').collect()
        } else {
            vec![text]
        };
        for piece in pieces {
            item += 1;
            let (k, v) = piece
                .split_once('=')
                .ok_or(ConfigError::StowConfig { item })?;
            into.insert(k.trim().to_owned(), Secret::new(v));
        }
    }
    Ok(())
}

/// The text with every `"…"` and `'…'` span replaced: a YAML error quotes the
/// value it could not read (`invalid type: string "<secret>", expected u32`).
fn redact_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut open: Option<char> = None;
    for c in text.chars() {
        match open {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                open = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if c == '"' || c == '\'' {
                    open = Some(c);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod config_file_tests {
    use super::*;

    #[test]
    fn quoted_values_never_reach_the_message() {
        let text = r#"storage.connection: invalid type: string "hunter2", expected u32 at line 3 column 12"#;
        let redacted = redact_quoted(text);
        assert!(!redacted.contains("hunter2"), "{redacted}");
        assert!(redacted.contains("line 3 column 12"), "{redacted}");
    }

    #[test]
    fn a_config_glob_merges_its_files_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("00-base.yaml"),
            "storage:\n  type: s3\n  connection:\n    region: us-east-1\n    endpoint: http://a\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("10-override.yaml"),
            "storage:\n  connection:\n    endpoint: http://b\nlogger:\n  level: 5\n",
        )
        .expect("write");
        let file = read_config_files(&dir.path().join("*.yaml")).expect("merged");
        let text = format!("{file:?}");
        assert!(
            text.contains("http://b") && !text.contains("http://a"),
            "{text}"
        );
        assert!(text.contains("us-east-1"), "{text}");
        let err = read_config_files(&dir.path().join("*.json")).expect_err("no match");
        assert!(err.to_string().contains("no file matches"), "{err}");
    }

    #[test]
    fn a_stow_item_without_equals_is_not_echoed() {
        let mut into = BTreeMap::new();
        let err = parse_stow_pairs(
            &[Secret::new("region=x"), Secret::new("hunter2")],
            &mut into,
        )
        .expect_err("no '='");
        let text = err.to_string();
        assert!(text.contains("item 2"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}

/// The files `--config` names: one path, or a glob (Flyte 2 passes
/// `/etc/flyte/copilot/*.yaml`), in sorted order.
fn config_files(pattern: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let text = pattern.to_string_lossy();
    if !text.contains(['*', '?', '[']) {
        return Ok(vec![pattern.to_path_buf()]);
    }
    let bad = |reason: String| ConfigError::Glob {
        pattern: pattern.to_path_buf(),
        reason,
    };
    let mut files = glob::glob(&text)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if files.is_empty() {
        return Err(bad("no file matches".into()));
    }
    files.sort();
    Ok(files)
}

/// Reads every `--config` file and merges them, later files winning key by key
/// (as flytestdlib merges its config files), then takes the `storage:` section.
fn read_config_files(pattern: &Path) -> Result<FileStorage, ConfigError> {
    let mut merged = serde_yaml_ng::Value::Null;
    let files = config_files(pattern)?;
    for path in &files {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.clone(),
            source,
        })?;
        let value: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::ParseFile {
                path: path.clone(),
                reason: redact_quoted(&e.to_string()),
            })?;
        merge_yaml(&mut merged, value);
    }
    if merged.is_null() {
        return Ok(FileStorage::default());
    }
    let root: FileRoot = serde_yaml_ng::from_value(merged).map_err(|e| ConfigError::ParseFile {
        path: pattern.to_path_buf(),
        reason: redact_quoted(&e.to_string()),
    })?;
    Ok(root.storage)
}

fn merge_yaml(into: &mut serde_yaml_ng::Value, from: serde_yaml_ng::Value) {
    use serde_yaml_ng::Value;
    match (into, from) {
        (Value::Mapping(into), Value::Mapping(from)) => {
            for (k, v) in from {
                match into.get_mut(&k) {
                    Some(slot) => merge_yaml(slot, v),
                    None => {
                        into.insert(k, v);
                    }
                }
            }
        }
        (_, Value::Null) => {}
        (slot, v) => *slot = v,
    }
}

impl StorageArgs {
    /// Merges flags, the `--config` file and defaults.
    pub fn to_config(&self) -> Result<StorageConfig, ConfigError> {
        let file = match &self.config {
            Some(pattern) => read_config_files(pattern)?,
            None => FileStorage::default(),
        };
        let mut stow_config = file.stow.config;
        parse_stow_pairs(&self.stow_config, &mut stow_config)?;
        let retry_timeout = crate::literals::values::parse_std_duration(&self.retry_timeout)
            .map_err(|source| ConfigError::Duration {
                flag: "--storage.retry-timeout",
                source,
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
