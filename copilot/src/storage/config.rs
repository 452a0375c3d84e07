//! Storage configuration: what the `--storage.*` flags (`cli::storage`) and the
//! flytestdlib `--config` YAML file (read here) set, merged into one
//! [`StorageConfig`], and the secrets among them, which never reach a log.
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
    #[error(
        "--storage.type redis (or `type: redis` in the --config file's storage section): \
         flyte-copilot accepts it for Flyte 2's redis store, but copilot has no redis store; \
         use s3, minio, stow, azure, local or mem"
    )]
    RedisUnsupported,
    #[error(
        "--storage.stow.config auth_type must be `iam` or `accesskey`, as for \
         --storage.connection.auth-type (the value is not shown: it may be a secret)"
    )]
    StowAuthType,
    #[error("invalid duration for {flag}: {source}")]
    Duration {
        flag: &'static str,
        #[source]
        source: crate::duration::Error,
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

/// `--storage.type` (`storage.type` in the config file), spelled as
/// `flyte-copilot` (flytestdlib) accepts it. Accepted for compatibility: each
/// reference's URL scheme picks the backend.
#[derive(clap::ValueEnum, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageType {
    /// In memory (flytestdlib `mem`).
    Mem,
    S3,
    Local,
    Minio,
    /// Any stow kind (`--storage.stow.kind`).
    Stow,
    /// Azure Blob Storage: copilot's own spelling (flytestdlib reaches Azure
    /// through `stow`), which copilot's own tests and benches use.
    Azure,
    /// Flyte 2's redis store: accepted at parse time, as flytestdlib accepts
    /// it, then refused when the store is set up ([`ConfigError::RedisUnsupported`]).
    Redis,
}

/// `--storage.connection.auth-type`, spelled as `flyte-copilot` accepts it.
#[derive(clap::ValueEnum, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthType {
    /// The environment's credential chain: the access and secret keys are not used.
    Iam,
    /// The access and secret keys given.
    #[value(name = "accesskey")]
    AccessKey,
}

/// A config file value that may be empty: empty is unset, as for the flags
/// (Flyte's pod plugin passes `--flag=` for a value its config leaves empty).
fn blank_is_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::{Deserialize as _, de::IntoDeserializer as _};
    match Option::<String>::deserialize(d)? {
        Some(text) if !text.is_empty() => T::deserialize(text.into_deserializer()).map(Some),
        _ => Ok(None),
    }
}

/// The storage configuration once flags, file and defaults are merged.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub kind: Option<StorageType>,
    pub container: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub auth_type: Option<AuthType>,
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
            kind: None,
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
pub(crate) struct FileStorage {
    #[serde(rename = "type", default, deserialize_with = "blank_is_none")]
    pub(crate) kind: Option<StorageType>,
    pub(crate) container: Option<String>,
    #[serde(default)]
    pub(crate) connection: FileConnection,
    #[serde(default)]
    pub(crate) stow: FileStow,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct FileConnection {
    pub(crate) endpoint: Option<String>,
    pub(crate) region: Option<String>,
    #[serde(default, deserialize_with = "blank_is_none")]
    pub(crate) auth_type: Option<AuthType>,
    pub(crate) access_key: Option<Secret>,
    pub(crate) secret_key: Option<Secret>,
    pub(crate) disable_ssl: Option<bool>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct FileStow {
    pub(crate) kind: Option<String>,
    #[serde(default)]
    pub(crate) config: BTreeMap<String, Secret>,
}

/// The `auth_type` of the stow config map, read with [`AuthType`]'s spellings
/// so that it and `--storage.connection.auth-type` agree; empty or absent is unset.
///
/// Before, `auth_type` was compared with `"iam"` and any other text meant the
/// access keys: the only spellings that meant something were `iam` and
/// `accesskey`, which [`AuthType`] takes, so none is lost. Another value
/// (`IAM`, `access-key`) now fails, as stow's s3 client (flyte-copilot's)
/// refuses an `auth_type` other than those two, instead of silently meaning
/// the access keys.
pub(crate) fn stow_auth_type(
    stow_config: &BTreeMap<String, Secret>,
) -> Result<Option<AuthType>, ConfigError> {
    match stow_config.get("auth_type").map(Secret::expose) {
        None | Some("") => Ok(None),
        Some(text) => <AuthType as clap::ValueEnum>::from_str(text, false)
            .map(Some)
            .map_err(|_| ConfigError::StowAuthType),
    }
}

pub(crate) fn parse_stow_pairs(
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
pub(crate) fn read_config_files(pattern: &Path) -> Result<FileStorage, ConfigError> {
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
    fn stow_auth_type_takes_the_flags_spellings() {
        let map = |value: &str| BTreeMap::from([("auth_type".to_owned(), Secret::new(value))]);
        assert_eq!(stow_auth_type(&BTreeMap::new()).expect("absent"), None);
        assert_eq!(stow_auth_type(&map("")).expect("empty"), None);
        assert_eq!(
            stow_auth_type(&map("iam")).expect("iam"),
            Some(AuthType::Iam)
        );
        assert_eq!(
            stow_auth_type(&map("accesskey")).expect("accesskey"),
            Some(AuthType::AccessKey)
        );
        for bad in ["IAM", "access-key", "hunter2"] {
            let err = stow_auth_type(&map(bad)).expect_err(bad).to_string();
            assert!(err.contains("auth_type") && err.contains("iam"), "{err}");
            assert!(!err.contains(bad), "the value is not echoed: {err}");
        }
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
