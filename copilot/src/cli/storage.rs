//! The `--storage.*` flags `flyte-copilot` accepts (and that Flyte's pod plugin
//! passes), merged with the `--config` file into a [`StorageConfig`].
use std::{ffi::OsStr, marker::PhantomData, path::PathBuf};

use clap::builder::{EnumValueParser, PossibleValue, TypedValueParser};

use crate::storage::{AuthType, ConfigError, Secret, StorageConfig, StorageType, config};

/// A flag value that may be given empty (`--flag=`), which leaves it unset:
/// Flyte's pod plugin passes every `--storage.connection.*` flag, empty or not.
/// (An alias, so that clap takes `Option<Blankable<T>>` as one optional value.)
type Blankable<T> = Option<T>;

/// Parses a [`Blankable`] `T`: empty is `None`, anything else one of `T`'s
/// spellings, or clap's error naming the flag and the values it takes.
#[derive(Clone)]
struct BlankOr<T>(PhantomData<T>);

fn blank_or<T>() -> BlankOr<T> {
    BlankOr(PhantomData)
}

impl<T: clap::ValueEnum + Clone + Send + Sync + 'static> TypedValueParser for BlankOr<T> {
    type Value = Blankable<T>;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Self::Value, clap::Error> {
        if value.is_empty() {
            return Ok(None);
        }
        EnumValueParser::<T>::new()
            .parse_ref(cmd, arg, value)
            .map(Some)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            T::value_variants()
                .iter()
                .filter_map(clap::ValueEnum::to_possible_value),
        ))
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
    /// Storage type (accepted for compatibility: each URL's scheme picks the backend;
    /// `redis`, which flyte-copilot accepts, is refused once parsed: copilot has no redis store).
    #[arg(long = "storage.type", global = true, value_parser = blank_or::<StorageType>())]
    pub kind: Option<Blankable<StorageType>>,
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
    #[arg(long = "storage.connection.auth-type", global = true, value_parser = blank_or::<AuthType>())]
    pub auth_type: Option<Blankable<AuthType>>,
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
        // Checked here, so that a bad value fails at start, not at the first s3 access.
        config::stow_auth_type(&stow_config)?;
        let kind = self.kind.unwrap_or(file.kind);
        if kind == Some(StorageType::Redis) {
            return Err(ConfigError::RedisUnsupported);
        }
        let retry_timeout = crate::duration::parse_std(&self.retry_timeout).map_err(|source| {
            ConfigError::Duration {
                flag: "--storage.retry-timeout",
                source,
            }
        })?;
        Ok(StorageConfig {
            kind,
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
            auth_type: self.auth_type.unwrap_or(file.connection.auth_type),
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
        assert_eq!(config.kind, Some(StorageType::S3));
        assert_eq!(config.auth_type, Some(AuthType::AccessKey));
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
        assert_eq!(config.kind, Some(StorageType::Minio));
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
    fn storage_type_and_auth_type_take_flyte_copilots_spellings() {
        let parse = |flags: &[&str]| {
            Cli::try_parse_from(std::iter::once("copilot").chain(flags.iter().copied()))
        };
        for (text, kind) in [
            ("mem", StorageType::Mem),
            ("s3", StorageType::S3),
            ("local", StorageType::Local),
            ("minio", StorageType::Minio),
            ("stow", StorageType::Stow),
            ("azure", StorageType::Azure),
        ] {
            let flag = format!("--storage.type={text}");
            let config = parse(&[&flag]).expect("parse").storage.to_config();
            assert_eq!(config.expect("valid").kind, Some(kind), "{text}");
        }
        for (text, auth) in [("iam", AuthType::Iam), ("accesskey", AuthType::AccessKey)] {
            let flag = format!("--storage.connection.auth-type={text}");
            let config = parse(&[&flag]).expect("parse").storage.to_config();
            assert_eq!(config.expect("valid").auth_type, Some(auth), "{text}");
        }
        // Empty, as Flyte's plugin passes a value its config leaves unset.
        let cli = parse(&["--storage.type=", "--storage.connection.auth-type="]).expect("parse");
        let config = cli.storage.to_config().expect("valid");
        assert_eq!((config.kind, config.auth_type), (None, None));
        for flags in [
            ["--storage.type=gcs"],
            ["--storage.type=S3"],
            ["--storage.connection.auth-type=access-key"],
        ] {
            let err = parse(&flags).err().expect("an unknown value is refused");
            let text = err.to_string();
            let flag = flags[0].split('=').next().expect("a flag");
            assert!(text.contains(flag), "names the flag: {text}");
            assert!(text.contains("possible values"), "names the values: {text}");
        }
    }

    #[test]
    fn the_config_file_takes_the_same_spellings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("config.yaml");
        let config = |text: &str| {
            std::fs::write(&file, text).expect("write config");
            let path = file.to_str().expect("utf-8 path");
            let cli = Cli::try_parse_from(["copilot", "--config", path]).expect("parse");
            cli.storage.to_config()
        };
        let ok =
            config("storage:\n  type: stow\n  connection:\n    auth-type: iam\n").expect("valid");
        assert_eq!(
            (ok.kind, ok.auth_type),
            (Some(StorageType::Stow), Some(AuthType::Iam))
        );
        let blank = config("storage:\n  type: ''\n  connection:\n    auth-type: ''\n")
            .expect("empty is unset");
        assert_eq!((blank.kind, blank.auth_type), (None, None));
        let err = config("storage:\n  type: gcs\n").expect_err("unknown type");
        assert!(err.to_string().contains("gcs"), "{err}");
    }

    #[test]
    fn redis_parses_then_is_refused_naming_the_flag() {
        let cli = Cli::try_parse_from(["copilot", "--storage.type=redis"])
            .expect("redis parses, as flytestdlib accepts it");
        assert_eq!(cli.storage.kind, Some(Some(StorageType::Redis)));
        let err = cli.storage.to_config().expect_err("no redis store");
        let text = err.to_string();
        assert!(text.contains("--storage.type redis"), "{text}");
        assert!(text.contains("no redis store"), "{text}");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, "storage:\n  type: redis\n").expect("write config");
        let path = file.to_str().expect("utf-8 path");
        let cli = Cli::try_parse_from(["copilot", "--config", path]).expect("parse");
        let err = cli.storage.to_config().expect_err("no redis store");
        assert!(matches!(err, ConfigError::RedisUnsupported), "{err}");
    }

    #[test]
    fn stow_auth_type_takes_the_same_spellings_as_the_flag() {
        let config = |pair: &str| {
            Cli::try_parse_from(["copilot", "--storage.stow.config", pair])
                .expect("parse")
                .storage
                .to_config()
        };
        for ok in ["auth_type=iam", "auth_type=accesskey", "auth_type="] {
            config(ok).expect(ok);
        }
        for bad in ["auth_type=IAM", "auth_type=access-key", "auth_type=sts"] {
            let err = config(bad).expect_err(bad).to_string();
            assert!(err.contains("--storage.stow.config auth_type"), "{err}");
            assert!(err.contains("`iam` or `accesskey`"), "{err}");
        }
    }

    #[test]
    fn bad_stow_pair_names_the_key_only() {
        let cli =
            Cli::try_parse_from(["copilot", "--storage.stow.config", "novalue"]).expect("parse");
        let err = cli.storage.to_config().expect_err("must fail");
        assert!(err.to_string().contains("key=value"), "{err}");
    }
}
