//! [`Store`]: one handle over every storage URL copilot meets. Each
//! `scheme://bucket` gets its own object_store client (built on first use,
//! then shared); `http(s)://` is read with a plain HTTP client whose status
//! is checked. Transfers stream, run at most `max_concurrency` at once,
//! retry transient failures, and never leave a partial file or object.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreScheme, RetryConfig, WriteMultipart,
    aws::{AmazonS3, AmazonS3Builder},
    azure::{MicrosoftAzure, MicrosoftAzureBuilder},
    gcp::{GoogleCloudStorage, GoogleCloudStorageBuilder},
    local::LocalFileSystem,
    memory::InMemory,
    path::Path as ObjectPath,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    sync::Semaphore,
};
use url::Url;

use super::{
    AuthType, Progress, StorageConfig,
    key::{KeyError, child_url},
};

/// Objects up to this size are uploaded with one PUT; larger ones in parts.
pub const SINGLE_PUT_MAX: u64 = 16 * 1024 * 1024;
/// Part size of a multipart upload (S3 wants ≥ 5 MiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;
/// Memory all uploads of a store may hold in buffers at once, in MiB. A file read
/// whole for one PUT holds its size; a multipart upload its parts in flight and the
/// one being filled. Uploads wait for their share, so a folder of large files
/// uploads within the 128 MiB propeller gives the sidecar, whatever the concurrency.
pub const UPLOAD_BUFFER_MIB: u32 = 64;
const MIB: u64 = 1024 * 1024;
/// The read buffer of a multipart upload.
const READ_BUFFER: usize = 1024 * 1024;
/// The bytes a local copy moves per blocking call.
const COPY_CHUNK: u64 = 64 * 1024 * 1024;

/// A storage failure, naming the URL (never a credential).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{url:?} is not a storage URL or path")]
    BadUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error(
        "unsupported storage URL scheme {scheme:?} in {url:?} (use s3, gs, abfs/az, file, mem, http(s))"
    )]
    UnsupportedScheme { url: String, scheme: String },
    #[error("{url:?}: {what} is not possible over http(s) (read-only, no listing)")]
    HttpReadOnly { url: String, what: &'static str },
    #[error("cannot set up the storage client for {url:?}")]
    Client {
        url: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("object {url:?} does not exist")]
    NotFound {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{op} {url:?} failed")]
    Object {
        op: &'static str,
        url: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error(
        "GET {url:?}: the TLS handshake failed (server certificates are checked against the \
         system's CA certificates, or, when SSL_CERT_FILE or SSL_CERT_DIR is set, against those only)"
    )]
    HttpTls {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url:?} answered HTTP {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("GET {url:?} failed")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url:?} is {size} bytes, more than the {limit} allowed here")]
    TooLarge { url: String, size: u64, limit: u64 },
    #[error("{op} local file {path}")]
    Local {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{url:?}: the object listing holds a key that is not under the prefix: {key:?}")]
    ListingKey { url: String, key: String },
    #[error("cannot name an object below {prefix:?}")]
    Key {
        prefix: String,
        #[source]
        source: KeyError,
    },
}

impl StorageError {
    /// Whether trying again may help (network trouble, server errors).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Object { source, .. } => !matches!(
                **source,
                object_store::Error::NotFound { .. }
                    | object_store::Error::InvalidPath { .. }
                    | object_store::Error::NotSupported { .. }
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
                    | object_store::Error::UnknownConfigurationKey { .. }
                    | object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. }
            ),
            Self::HttpStatus { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            Self::Http { source, .. } => !source.is_redirect(),
            _ => false,
        }
    }
}

/// An object found by [`Store::list`].
#[derive(Debug, Clone)]
pub struct ListedObject {
    /// The key below the listed prefix, `/`-separated (nesting kept).
    pub relative: String,
    pub size: u64,
    pub object: ObjectRef,
}

/// A resolved object: a client and a key, or an http(s) URL.
#[derive(Clone)]
pub struct ObjectRef {
    url: String,
    target: Target,
    /// Its size, when a listing told it.
    size: Option<u64>,
}

impl std::fmt::Debug for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ObjectRef").field(&self.url).finish()
    }
}

impl ObjectRef {
    /// The URL this object was resolved from.
    pub fn url(&self) -> &str {
        &self.url
    }
}

#[derive(Clone)]
enum Target {
    Object {
        store: Arc<dyn ObjectStore>,
        path: ObjectPath,
    },
    Http(Url),
}

struct Inner {
    config: StorageConfig,
    clients: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    memory: Arc<InMemory>,
    local: Arc<LocalFileSystem>,
    http: reqwest::Client,
    permits: Semaphore,
    /// Upload buffers, in MiB: see [`UPLOAD_BUFFER_MIB`].
    buffers: Semaphore,
}

/// One handle over every storage URL (cheap to clone).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Joins `key` (`/`-separated, relative) to a storage URL or path.
pub fn join_url(base: &str, key: &str) -> String {
    let key = key.trim_start_matches('/');
    if base.ends_with('/') {
        format!("{base}{key}")
    } else {
        format!("{base}/{key}")
    }
}

impl Store {
    /// A store with the given configuration. Clients are built lazily, on
    /// the first use of each `scheme://bucket`.
    pub fn new(config: StorageConfig) -> Self {
        let permits = Semaphore::new(config.max_concurrency.max(1));
        Self::check_ca_env();
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(30))
                .redirect(redirect_policy())
        };
        let http = builder().build().unwrap_or_else(|e| {
            // reqwest refuses a CA store holding only certificates it cannot parse
            // (e.g. SSL_CERT_FILE naming a broken file). Go on without one: every
            // other store still works, and each https read says what to check.
            tracing::warn!(
                error = crate::error_chain(&e),
                "cannot load the trusted CA certificates; https servers will be refused"
            );
            builder()
                .tls_built_in_root_certs(false)
                .build()
                .unwrap_or_default()
        });
        Self {
            inner: Arc::new(Inner {
                config,
                clients: Mutex::new(HashMap::new()),
                memory: Arc::new(InMemory::new()),
                local: Arc::new(LocalFileSystem::new()),
                http,
                permits,
                buffers: Semaphore::new(UPLOAD_BUFFER_MIB as usize),
            }),
        }
    }

    /// Warns about a CA location named by `SSL_CERT_FILE` / `SSL_CERT_DIR` that
    /// cannot be read. Every http(s) client here (reqwest, and object_store's for
    /// s3/gcs/azure) trusts the system's CA certificates through
    /// rustls-native-certs, which reads those variables and, when either is set,
    /// those locations only, skipping one it cannot read without a word.
    fn check_ca_env() {
        for var in ["SSL_CERT_FILE", "SSL_CERT_DIR"] {
            let Some(value) = std::env::var_os(var) else {
                continue;
            };
            let paths: Vec<PathBuf> = if var == "SSL_CERT_DIR" {
                std::env::split_paths(&value).collect()
            } else {
                vec![PathBuf::from(value)]
            };
            for path in paths.iter().filter(|p| !p.as_os_str().is_empty()) {
                if let Err(e) = std::fs::metadata(path) {
                    tracing::warn!(
                        var,
                        path = %path.display(),
                        error = %e,
                        "cannot read the CA certificates that {var} names"
                    );
                }
            }
        }
    }

    pub fn config(&self) -> &StorageConfig {
        &self.inner.config
    }

    /// The URL of the object `segments` (local names, one key segment each) below
    /// `prefix`, checked to name exactly the key `<prefix key>/<segments…>`: no
    /// segment can be folded, decoded or dropped on the way into a key, so the
    /// object written is the one the URL names, and it lies under the prefix.
    pub fn child<S: AsRef<str>>(
        &self,
        prefix: &str,
        segments: &[S],
    ) -> Result<String, StorageError> {
        let key_error = |source| StorageError::Key {
            prefix: prefix.to_owned(),
            source,
        };
        let url = child_url(prefix, segments).map_err(key_error)?;
        let base = self.resolve(prefix)?;
        let child = self.resolve(&url)?;
        let (Target::Object { path: base, .. }, Target::Object { path: got, .. }) =
            (&base.target, &child.target)
        else {
            return Err(StorageError::HttpReadOnly {
                url,
                what: "writing",
            });
        };
        let mut expected = base.as_ref().to_owned();
        for segment in segments {
            if !expected.is_empty() {
                expected.push('/');
            }
            expected.push_str(segment.as_ref());
        }
        if got.as_ref() != expected {
            return Err(key_error(KeyError::NotUnder {
                url,
                expected,
                segments: segments.iter().map(|s| s.as_ref().to_owned()).collect(),
            }));
        }
        Ok(url)
    }

    /// Resolves a URL (`s3://b/k`, `gs://b/k`, `abfs://c@a.dfs.core.windows.net/k`,
    /// `az://c/k`, `file:///p`, a plain path, `mem://b/k`, `http(s)://…`).
    pub fn resolve(&self, url: &str) -> Result<ObjectRef, StorageError> {
        let parsed = parse_location(url)?;
        let target = match parsed.scheme() {
            "http" | "https" => {
                // Cloud endpoints spelt as https (e.g. *.amazonaws.com) still go through object_store.
                match ObjectStoreScheme::parse(&parsed) {
                    Ok((ObjectStoreScheme::Http, _)) | Err(_) => Target::Http(parsed),
                    Ok(_) => self.object_target(url, &parsed)?,
                }
            }
            _ => self.object_target(url, &parsed)?,
        };
        Ok(ObjectRef {
            url: url.to_owned(),
            target,
            size: None,
        })
    }

    fn object_target(&self, url: &str, parsed: &Url) -> Result<Target, StorageError> {
        let scheme = parsed.scheme();
        if scheme == "mem" || scheme == "memory" {
            let key = format!("{}{}", parsed.host_str().unwrap_or_default(), parsed.path());
            let path =
                ObjectPath::from_url_path(key.trim_start_matches('/')).map_err(|source| {
                    StorageError::Client {
                        url: url.to_owned(),
                        source: Box::new(source.into()),
                    }
                })?;
            return Ok(Target::Object {
                store: self.inner.memory.clone(),
                path,
            });
        }
        let (kind, mut path) =
            ObjectStoreScheme::parse(parsed).map_err(|_| StorageError::UnsupportedScheme {
                url: url.to_owned(),
                scheme: scheme.to_owned(),
            })?;
        if scheme == "az" {
            // `az://container/key` as Flyte and fsspec (adlfs) write it, and as
            // object_store's Azure builder reads it (the host is the container).
            // `ObjectStoreScheme::parse` (0.12) reads `az://account/container/key`
            // instead and drops the key's first segment.
            path = ObjectPath::from_url_path(parsed.path()).map_err(|source| {
                StorageError::Client {
                    url: url.to_owned(),
                    source: Box::new(source.into()),
                }
            })?;
        }
        let store: Arc<dyn ObjectStore> = match kind {
            ObjectStoreScheme::Local => self.inner.local.clone(),
            ObjectStoreScheme::Memory => self.inner.memory.clone(),
            ObjectStoreScheme::AmazonS3
            | ObjectStoreScheme::GoogleCloudStorage
            | ObjectStoreScheme::MicrosoftAzure => {
                let bucket_key = bucket_key(parsed);
                let mut clients = lock(&self.inner.clients);
                match clients.get(&bucket_key) {
                    Some(client) => client.clone(),
                    None => {
                        let client = self.build_client(&kind, parsed).map_err(|source| {
                            StorageError::Client {
                                url: url.to_owned(),
                                source: Box::new(source),
                            }
                        })?;
                        clients.insert(bucket_key, client.clone());
                        client
                    }
                }
            }
            _ => {
                return Err(StorageError::UnsupportedScheme {
                    url: url.to_owned(),
                    scheme: scheme.to_owned(),
                });
            }
        };
        Ok(Target::Object { store, path })
    }

    fn retry(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: self.inner.config.retries,
            retry_timeout: self.inner.config.retry_timeout,
        }
    }

    /// A client for the bucket (or container) of `url`; flags name the
    /// endpoint, region and keys, and the `stow_config` map fills what they leave.
    fn build_client(
        &self,
        kind: &ObjectStoreScheme,
        url: &Url,
    ) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
        let options = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(30))
            .with_timeout(Duration::from_secs(300));
        let base = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
        Ok(match kind {
            ObjectStoreScheme::AmazonS3 => Arc::new(self.s3_client(base, options)?),
            ObjectStoreScheme::GoogleCloudStorage => Arc::new(self.gcs_client(base, options)?),
            ObjectStoreScheme::MicrosoftAzure => Arc::new(self.azure_client(url, options)?),
            _ => return Err(object_store::Error::NotImplemented),
        })
    }

    /// A non-empty value of the `stow_config` map.
    fn stow(&self, key: &str) -> Option<String> {
        self.inner
            .config
            .stow_config
            .get(key)
            .map(|s| s.expose().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// An S3 client: plain http when SSL is disabled or the endpoint says
    /// `http://`; path-style requests to a custom endpoint; the keys unless
    /// the auth type is `iam` (then the environment's credentials).
    fn s3_client(
        &self,
        base: String,
        options: ClientOptions,
    ) -> Result<AmazonS3, object_store::Error> {
        let cfg = &self.inner.config;
        let endpoint = cfg.endpoint.clone().or_else(|| self.stow("endpoint"));
        let allow_http = cfg.disable_ssl
            || self.stow("disable_ssl").is_some_and(|v| v == "true")
            || endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://"));
        let mut b = AmazonS3Builder::from_env()
            .with_url(base)
            .with_retry(self.retry())
            .with_client_options(options.with_allow_http(allow_http));
        if let Some(endpoint) = endpoint {
            b = b
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        if let Some(region) = cfg.region.clone().or_else(|| self.stow("region")) {
            b = b.with_region(region);
        }
        let stow_auth = super::config::stow_auth_type(&cfg.stow_config).map_err(|e| {
            object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            }
        })?;
        let iam = cfg.auth_type.or(stow_auth) == Some(AuthType::Iam);
        let access = cfg
            .access_key
            .as_ref()
            .map(|s| s.expose().to_owned())
            .or_else(|| self.stow("access_key_id"));
        let secret = cfg
            .secret_key
            .as_ref()
            .map(|s| s.expose().to_owned())
            .or_else(|| self.stow("secret_key"));
        if !iam && let (Some(access), Some(secret)) = (access, secret) {
            b = b.with_access_key_id(access).with_secret_access_key(secret);
        }
        b.build()
    }

    /// A Google Cloud Storage client. An emulator's base URL comes in the
    /// credentials (`gcs_base_url`); plain http to it only with
    /// `--storage.connection.disable-ssl`.
    fn gcs_client(
        &self,
        base: String,
        options: ClientOptions,
    ) -> Result<GoogleCloudStorage, object_store::Error> {
        let mut b = GoogleCloudStorageBuilder::from_env()
            .with_url(base)
            .with_retry(self.retry())
            .with_client_options(options.with_allow_http(self.inner.config.disable_ssl));
        if let Some(json) = self.stow("json") {
            b = b.with_service_account_key(json);
        }
        b.build()
    }

    /// An Azure Blob client. The endpoint is for Azure Stack or an emulator
    /// (azurite); http only when it says so.
    fn azure_client(
        &self,
        url: &Url,
        options: ClientOptions,
    ) -> Result<MicrosoftAzure, object_store::Error> {
        let cfg = &self.inner.config;
        let endpoint = cfg.endpoint.clone().or_else(|| self.stow("endpoint"));
        let http = endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        let mut b = MicrosoftAzureBuilder::from_env()
            .with_url(url.to_string())
            .with_retry(self.retry())
            .with_client_options(options.with_allow_http(cfg.disable_ssl || http));
        if let Some(endpoint) = endpoint {
            b = b.with_endpoint(endpoint);
        }
        if let Some(account) = self.stow("account") {
            b = b.with_account(account);
        }
        if let Some(key) = self.stow("key") {
            b = b.with_access_key(key);
        }
        b.build()
    }

    /// The buffer memory an upload of a `size`-byte file holds (see [`UPLOAD_BUFFER_MIB`]).
    async fn buffers(&self, size: u64) -> tokio::sync::SemaphorePermit<'_> {
        let bytes = if size <= SINGLE_PUT_MAX {
            size
        } else {
            // The parts in flight, the one being filled, and the read buffer.
            (PARTS_IN_FLIGHT as u64 + 1) * PART_SIZE as u64 + READ_BUFFER as u64
        };
        let mib = u32::try_from(bytes.div_ceil(MIB).max(1)).unwrap_or(UPLOAD_BUFFER_MIB);
        match self
            .inner
            .buffers
            .acquire_many(mib.min(UPLOAD_BUFFER_MIB))
            .await
        {
            Ok(p) => p,
            Err(_) => unreachable!("the buffer semaphore is never closed"),
        }
    }

    async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        // The semaphore is never closed.
        match self.inner.permits.acquire().await {
            Ok(p) => p,
            Err(_) => unreachable!("the transfer semaphore is never closed"),
        }
    }

    /// Reads a whole (small) object, refusing one larger than `limit` bytes.
    pub async fn read_bytes(&self, url: &str, limit: u64) -> Result<Bytes, StorageError> {
        let object = self.resolve(url)?;
        let _permit = self.permit().await;
        let mut attempt = 0;
        loop {
            let result = self.read_bytes_once(&object, limit).await;
            match result {
                Err(e) if e.is_transient() && attempt < self.inner.config.retries => {
                    attempt += 1;
                    tracing::warn!(url, attempt, error = %e, "transient read failure, retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn read_bytes_once(&self, object: &ObjectRef, limit: u64) -> Result<Bytes, StorageError> {
        let url = &object.url;
        let too_large = |size| StorageError::TooLarge {
            url: url.clone(),
            size,
            limit,
        };
        let mut buf = Vec::new();
        let mut stream = self.open(object).await?;
        if let Some(size) = stream.size
            && size > limit
        {
            return Err(too_large(size));
        }
        while let Some(chunk) = stream.body.next().await {
            let chunk = chunk?;
            if (buf.len() + chunk.len()) as u64 > limit {
                return Err(too_large((buf.len() + chunk.len()) as u64));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(buf))
    }

    async fn open(&self, object: &ObjectRef) -> Result<Opened, StorageError> {
        let url = object.url.clone();
        match &object.target {
            Target::Object { store, path } => {
                let result = store
                    .get(path)
                    .await
                    .map_err(|source| object_error("GET", &url, source))?;
                let size = result.meta.size;
                let body = result
                    .into_stream()
                    .map_err(move |source| object_error("GET", &url, source))
                    .boxed();
                Ok(Opened {
                    size: Some(size),
                    body,
                })
            }
            Target::Http(parsed) => {
                let response =
                    self.inner
                        .http
                        .get(parsed.clone())
                        .send()
                        .await
                        .map_err(|source| {
                            if is_tls_failure(&source) {
                                StorageError::HttpTls {
                                    url: url.clone(),
                                    source,
                                }
                            } else {
                                StorageError::Http {
                                    url: url.clone(),
                                    source,
                                }
                            }
                        })?;
                let status = response.status();
                if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
                    return Err(StorageError::NotFound {
                        url: url.clone(),
                        source: format!("HTTP {status}").into(),
                    });
                }
                if !status.is_success() {
                    return Err(StorageError::HttpStatus {
                        url: url.clone(),
                        status: status.as_u16(),
                    });
                }
                let size = response.content_length();
                let body = response
                    .bytes_stream()
                    .map_err(move |source| StorageError::Http {
                        url: url.clone(),
                        source,
                    })
                    .boxed();
                Ok(Opened { size, body })
            }
        }
    }

    /// Downloads `url` to the file `dest`: streamed to a temporary file next
    /// to it, renamed into place once complete (never a partial `dest`);
    /// retried from the start on a transient failure. Returns the size.
    pub async fn download_file(
        &self,
        url: &str,
        dest: &Path,
        progress: &Progress,
    ) -> Result<u64, StorageError> {
        let object = self.resolve(url)?;
        self.download_object(&object, dest, progress).await
    }

    /// [`Store::download_file`] for an object already resolved (e.g. listed).
    pub async fn download_object(
        &self,
        object: &ObjectRef,
        dest: &Path,
        progress: &Progress,
    ) -> Result<u64, StorageError> {
        let _permit = self.permit().await;
        let mut attempt = 0;
        // An object no listing sized adds its size to the expected total once known.
        let mut sized = object.size.is_some();
        loop {
            let mut counted = 0;
            let result = self
                .download_once(object, dest, progress, &mut counted, &mut sized)
                .await;
            match result {
                Err(e) if e.is_transient() && attempt < self.inner.config.retries => {
                    attempt += 1;
                    progress.unadd_bytes(counted);
                    tracing::warn!(url = object.url, attempt, error = %e, "transient download failure, retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn download_once(
        &self,
        object: &ObjectRef,
        dest: &Path,
        progress: &Progress,
        counted: &mut u64,
        sized: &mut bool,
    ) -> Result<u64, StorageError> {
        let local = |op, source| StorageError::Local {
            op,
            path: dest.to_path_buf(),
            source,
        };
        let parent = dest.parent().unwrap_or(Path::new("."));
        if let Some(src) = self.local_file(object) {
            if let (false, Ok(meta)) = (*sized, std::fs::metadata(&src)) {
                progress.expect(0, meta.len());
                *sized = true;
            }
            return self.copy_local(&src, dest, parent, progress, counted).await;
        }
        let mut stream = self.open(object).await?;
        if let (false, Some(size)) = (*sized, stream.size) {
            progress.expect(0, size);
            *sized = true;
        }
        let (file, temp_path) = partial_file(parent, dest)?;
        let mut file = tokio::fs::File::from_std(file);
        let mut written = 0u64;
        while let Some(chunk) = stream.body.next().await {
            let chunk = chunk?;
            file.write_all(&chunk)
                .await
                .map_err(|e| local("write", e))?;
            written += chunk.len() as u64;
            *counted += chunk.len() as u64;
            progress.add_bytes(chunk.len() as u64);
        }
        if let Some(size) = stream.size
            && size != written
        {
            return Err(StorageError::Local {
                op: "complete (the stream ended early)",
                path: dest.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("got {written} of {size} bytes from {}", object.url),
                ),
            });
        }
        file.flush().await.map_err(|e| local("flush", e))?;
        drop(file);
        persist(temp_path, dest, progress)?;
        Ok(written)
    }

    /// The file behind an object of the local store. object_store reads local
    /// files in 8 KiB chunks, each a blocking task (measured: 1 GiB in 5.9 s
    /// against `cp`'s 2.5 s); one copy (copy_file_range) is as fast as `cp`.
    fn local_file(&self, object: &ObjectRef) -> Option<std::path::PathBuf> {
        let Target::Object { store, path } = &object.target else {
            return None;
        };
        let local: Arc<dyn ObjectStore> = self.inner.local.clone();
        if !Arc::ptr_eq(store, &local) {
            return None;
        }
        self.inner.local.path_to_filesystem(path).ok()
    }

    async fn copy_local(
        &self,
        src: &Path,
        dest: &Path,
        parent: &Path,
        progress: &Progress,
        counted: &mut u64,
    ) -> Result<u64, StorageError> {
        let local = |op, source| StorageError::Local {
            op,
            path: dest.to_path_buf(),
            source,
        };
        let not_found = |source: std::io::Error| StorageError::NotFound {
            url: format!("file://{}", src.display()),
            source: Box::new(source),
        };
        let source = open_regular(src).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidInput => not_found(e),
            _ => local("read the source of", e),
        })?;
        let (file, temp_path) = partial_file(parent, dest)?;
        // Only the executable bit carries over: never setuid, setgid or sticky.
        let exec = source
            .metadata()
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
            .unwrap_or(false);
        let mode = if exec { 0o755 } else { 0o644 };
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(|e| local("set the mode of", e))?;
        let (source, file) = (Arc::new(source), Arc::new(file));
        let mut written = 0u64;
        loop {
            let (from, to) = (source.clone(), file.clone());
            // One chunk per blocking call: a download dropped by --timeout or a signal
            // stops within a chunk (one `copy` of a 3 GiB file ran on for 20 s).
            let chunk = tokio::task::spawn_blocking(move || {
                std::io::copy(&mut std::io::Read::take(&*from, COPY_CHUNK), &mut &*to)
            })
            .await
            .map_err(|e| local("copy into", std::io::Error::other(e)))?
            .map_err(|e| local("copy into", e))?;
            if chunk == 0 {
                break;
            }
            written += chunk;
            *counted += chunk;
            progress.add_bytes(chunk);
        }
        persist(temp_path, dest, progress)?;
        Ok(written)
    }

    /// Lists every object below the `prefix_url` "directory", recursively,
    /// with its key relative to the prefix. Keys that would not form a
    /// relative path are refused by the caller, not here.
    pub async fn list(&self, prefix_url: &str) -> Result<Vec<ListedObject>, StorageError> {
        let object = self.resolve(prefix_url)?;
        let Target::Object { store, path } = &object.target else {
            return Err(StorageError::HttpReadOnly {
                url: prefix_url.to_owned(),
                what: "listing",
            });
        };
        let prefix = (!path.as_ref().is_empty()).then_some(path);
        let mut listed = Vec::new();
        let mut stream = store.list(prefix);
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|source| object_error("LIST", prefix_url, source))?;
            let relative = match prefix {
                Some(p) => meta.location.prefix_match(p).map(|parts| {
                    parts
                        .map(|part| part.as_ref().to_owned())
                        .collect::<Vec<_>>()
                        .join("/")
                }),
                None => Some(meta.location.as_ref().to_owned()),
            };
            let Some(relative) = relative.filter(|r| !r.is_empty()) else {
                return Err(StorageError::ListingKey {
                    url: prefix_url.to_owned(),
                    key: meta.location.to_string(),
                });
            };
            listed.push(ListedObject {
                relative: relative.clone(),
                size: meta.size,
                object: ObjectRef {
                    url: join_url(prefix_url, &relative),
                    target: Target::Object {
                        store: store.clone(),
                        path: meta.location,
                    },
                    size: Some(meta.size),
                },
            });
        }
        listed.sort_by(|a, b| a.relative.cmp(&b.relative));
        Ok(listed)
    }

    /// Writes a small object in one request (atomic: readers see the old
    /// object or the whole new one).
    pub async fn put_bytes(&self, url: &str, bytes: Bytes) -> Result<(), StorageError> {
        let object = self.resolve(url)?;
        let Target::Object { store, path } = &object.target else {
            return Err(StorageError::HttpReadOnly {
                url: url.to_owned(),
                what: "writing",
            });
        };
        let _permit = self.permit().await;
        let mut attempt = 0;
        loop {
            let result = store
                .put(path, bytes.clone().into())
                .await
                .map(|_| ())
                .map_err(|source| object_error("PUT", url, source));
            match result {
                Err(e) if e.is_transient() && attempt < self.inner.config.retries => {
                    attempt += 1;
                    tracing::warn!(url, attempt, error = %e, "transient write failure, retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// Uploads the open local file `file` (named `src` in messages) to `url`,
    /// streamed: one PUT up to [`SINGLE_PUT_MAX`], a multipart upload (completed
    /// only once every part is in, aborted on failure) beyond it. The caller opens
    /// the file, so what is checked is what is read. Returns the size.
    pub async fn upload_file(
        &self,
        file: std::fs::File,
        src: &Path,
        url: &str,
        progress: &Progress,
    ) -> Result<u64, StorageError> {
        let object = self.resolve(url)?;
        let Target::Object { store, path } = &object.target else {
            return Err(StorageError::HttpReadOnly {
                url: url.to_owned(),
                what: "writing",
            });
        };
        let local = |op, source| StorageError::Local {
            op,
            path: src.to_path_buf(),
            source,
        };
        let size = file.metadata().map_err(|e| local("inspect", e))?.len();
        let _buffers = self.buffers(size).await;
        if size <= SINGLE_PUT_MAX {
            let data = read_exactly(file, size)
                .await
                .map_err(|e| local("read", e))?;
            let len = data.len() as u64;
            self.put_bytes(url, Bytes::from(data)).await?;
            progress.add_bytes(len);
            progress.add_file();
            return Ok(len);
        }
        let mut file = tokio::fs::File::from_std(file);
        let _permit = self.permit().await;
        let upload = store
            .put_multipart(path)
            .await
            .map_err(|source| object_error("start multipart upload of", url, source))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let result = stream_parts(&mut file, &mut writer, src, url, progress).await;
        match result {
            Ok(sent) => {
                writer
                    .finish()
                    .await
                    .map_err(|source| object_error("complete multipart upload of", url, source))?;
                progress.add_file();
                Ok(sent)
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(url, error = %abort, "could not abort the multipart upload");
                }
                Err(e)
            }
        }
    }
}

/// Reads `file` as it was when its `size` was taken (a later append is not
/// uploaded), on a blocking thread, straight into a buffer of exactly that size:
/// `tokio::fs` would copy through a buffer of its own, and a growing `Vec` holds up
/// to twice its length while it grows, beyond the share taken from the budget.
async fn read_exactly(file: std::fs::File, size: u64) -> std::io::Result<Vec<u8>> {
    let task = tokio::task::spawn_blocking(move || {
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        std::io::Read::read_to_end(&mut std::io::Read::take(file, size), &mut data)?;
        Ok(data)
    });
    task.await.map_err(std::io::Error::other)?
}

/// Feeds the rest of `file` (named `src`) to `writer`; returns the bytes sent.
async fn stream_parts(
    file: &mut tokio::fs::File,
    writer: &mut WriteMultipart,
    src: &Path,
    url: &str,
    progress: &Progress,
) -> Result<u64, StorageError> {
    let mut buf = vec![0u8; READ_BUFFER];
    let mut sent = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(|source| StorageError::Local {
                op: "read",
                path: src.to_path_buf(),
                source,
            })?;
        if n == 0 {
            return Ok(sent);
        }
        writer
            .wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(|source| object_error("upload a part of", url, source))?;
        writer.write(&buf[..n]);
        sent += n as u64;
        progress.add_bytes(n as u64);
    }
}

struct Opened {
    size: Option<u64>,
    body: futures::stream::BoxStream<'static, Result<Bytes, StorageError>>,
}

fn object_error(op: &'static str, url: &str, source: object_store::Error) -> StorageError {
    match source {
        object_store::Error::NotFound { .. } => StorageError::NotFound {
            url: url.to_owned(),
            source: Box::new(source),
        },
        source => StorageError::Object {
            op,
            url: url.to_owned(),
            source: Box::new(source),
        },
    }
}

/// Redirects are followed (at most 10), except from https to plain http: an
/// input fetched over TLS must not be handed to an unauthenticated server on the
/// way (reqwest's default policy follows such a redirect).
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.url().scheme() == "http"
            && attempt.previous().iter().any(|u| u.scheme() == "https");
        if downgrade {
            let to = attempt.url().to_string();
            attempt.error(format!(
                "refused a redirect from https to plain http ({to})"
            ))
        } else if attempt.previous().len() > 10 {
            attempt.error("more than 10 redirects")
        } else {
            attempt.follow()
        }
    })
}

/// Whether a request failed in the TLS handshake (a certificate no trusted CA
/// signed, a name it does not cover, no common protocol): a matter of
/// configuration that trying again does not change. The rustls error comes up
/// inside `io::Error`s (two, nested), whose `source()` skips what they wrap.
fn is_tls_failure(e: &reqwest::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = next {
        if error.is::<rustls::Error>() {
            return true;
        }
        next = match error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    false
}

fn backoff(attempt: usize) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << attempt.min(5)))
}

/// `scheme://host` identifies one client (one bucket/container/account).
fn bucket_key(url: &Url) -> String {
    let mut key = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    if url.scheme() == "az"
        && let Some(first) = url.path().trim_start_matches('/').split('/').next()
    {
        key.push('/');
        key.push_str(first);
    }
    if !url.username().is_empty() {
        key.push('@');
        key.push_str(url.username());
    }
    key
}

/// Whether `url` names a file of this machine (`file://…` or a plain path),
/// as opposed to an object of a store.
pub fn is_local_file(url: &str) -> bool {
    match Url::parse(url) {
        Ok(parsed) => parsed.scheme() == "file",
        Err(e) => e == url::ParseError::RelativeUrlWithoutBase,
    }
}

/// Parses a storage URL; a plain path (absolute or relative) becomes `file://`.
fn parse_location(url: &str) -> Result<Url, StorageError> {
    match Url::parse(url) {
        Ok(parsed) => Ok(parsed),
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            let path = Path::new(url);
            let absolute = if path.is_absolute() {
                path.to_path_buf()
            } else {
                std::env::current_dir()
                    .map_err(|_| StorageError::BadUrl {
                        url: url.to_owned(),
                        source: url::ParseError::RelativeUrlWithoutBase,
                    })?
                    .join(path)
            };
            Url::from_file_path(&absolute).map_err(|()| StorageError::BadUrl {
                url: url.to_owned(),
                source: url::ParseError::RelativeUrlWithoutBase,
            })
        }
        Err(source) => Err(StorageError::BadUrl {
            url: url.to_owned(),
            source,
        }),
    }
}

/// Opens a local source without blocking on a FIFO or a device and checks, on
/// the descriptor it then reads, that it is a regular file (`InvalidInput` if not).
fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// A temporary file next to `dest`, renamed over it by [`persist`] once complete,
/// so a reader never sees a partial file.
fn partial_file(
    parent: &Path,
    dest: &Path,
) -> Result<(std::fs::File, tempfile::TempPath), StorageError> {
    let temp = tempfile::Builder::new()
        .prefix(".copilot-partial-")
        .tempfile_in(parent)
        .map_err(|source| StorageError::Local {
            op: "create a temporary file for",
            path: dest.to_path_buf(),
            source,
        })?;
    Ok(temp.into_parts())
}

fn persist(temp: tempfile::TempPath, dest: &Path, progress: &Progress) -> Result<(), StorageError> {
    temp.persist(dest).map_err(|e| StorageError::Local {
        op: "rename into place",
        path: dest.to_path_buf(),
        source: e.error,
    })?;
    progress.add_file();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(StorageConfig::default())
    }

    /// The object key an Azure URL names: all of its path, whatever the form.
    #[test]
    fn azure_urls_keep_their_whole_key() {
        let s = Store::new(StorageConfig {
            stow_config: [
                ("account".to_string(), crate::storage::Secret::new("acct")),
                ("key".to_string(), crate::storage::Secret::new("a2V5")),
            ]
            .into(),
            ..StorageConfig::default()
        });
        for url in [
            "az://flyte/run/in/inputs.pb",
            "abfs://flyte@acct.dfs.core.windows.net/run/in/inputs.pb",
        ] {
            let parsed = Url::parse(url).expect("a URL");
            match s.object_target(url, &parsed) {
                Ok(Target::Object { path, .. }) => {
                    assert_eq!(path.as_ref(), "run/in/inputs.pb", "{url}");
                }
                Ok(Target::Http(_)) => panic!("{url}: not an object store"),
                Err(e) => panic!("{url}: {e}"),
            }
        }
    }

    #[tokio::test]
    async fn memory_put_read_list_download() {
        let s = store();
        s.put_bytes("mem://b/p/one", Bytes::from_static(b"1"))
            .await
            .expect("put");
        s.put_bytes("mem://b/p/sub/two", Bytes::from_static(b"22"))
            .await
            .expect("put");
        s.put_bytes("mem://b/other", Bytes::from_static(b"x"))
            .await
            .expect("put");
        assert_eq!(
            s.read_bytes("mem://b/p/one", 10).await.expect("read"),
            Bytes::from_static(b"1")
        );
        let listed = s.list("mem://b/p").await.expect("list");
        let keys: Vec<(&str, u64)> = listed
            .iter()
            .map(|l| (l.relative.as_str(), l.size))
            .collect();
        assert_eq!(keys, [("one", 1), ("sub/two", 2)]);
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("two");
        let progress = Progress::default();
        let n = s
            .download_object(&listed[1].object, &dest, &progress)
            .await
            .expect("download");
        assert_eq!(n, 2);
        assert_eq!(std::fs::read(&dest).expect("read back"), b"22");
        assert_eq!(progress.snapshot().bytes, 2);
    }

    #[tokio::test]
    async fn missing_object_is_not_found_and_leaves_no_file() {
        let s = store();
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("x");
        let err = s
            .download_file("mem://b/nope", &dest, &Progress::default())
            .await
            .expect_err("must fail");
        assert!(matches!(err, StorageError::NotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("mem://b/nope"));
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("ls").count(),
            0,
            "no partial file left"
        );
    }

    #[tokio::test]
    async fn read_limit_is_enforced() {
        let s = store();
        s.put_bytes("mem://b/big", Bytes::from(vec![0u8; 100]))
            .await
            .expect("put");
        let err = s
            .read_bytes("mem://b/big", 10)
            .await
            .expect_err("too large");
        assert!(
            matches!(
                err,
                StorageError::TooLarge {
                    size: 100,
                    limit: 10,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn local_files_and_plain_paths() {
        let s = store();
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src.bin");
        std::fs::write(&src, vec![7u8; 20 * 1024 * 1024]).expect("write");
        let remote = format!("file://{}/remote/obj.bin", dir.path().display());
        let file = std::fs::File::open(&src).expect("open");
        let n = s
            .upload_file(file, &src, &remote, &Progress::default())
            .await
            .expect("multipart upload to file://");
        assert_eq!(n, 20 * 1024 * 1024);
        let plain = dir.path().join("remote/obj.bin");
        let got = s
            .read_bytes(plain.to_str().expect("utf-8"), u64::MAX)
            .await
            .expect("read plain path");
        assert_eq!(got.len(), 20 * 1024 * 1024);
        assert!(got.iter().all(|b| *b == 7));
    }

    #[test]
    fn unsupported_scheme_is_named() {
        let err = store()
            .resolve("ftp://host/x")
            .expect_err("ftp is unsupported");
        assert!(
            matches!(err, StorageError::UnsupportedScheme { ref scheme, .. } if scheme == "ftp"),
            "{err:?}"
        );
    }

    #[test]
    fn join_url_handles_slashes() {
        assert_eq!(join_url("s3://b/p", "k"), "s3://b/p/k");
        assert_eq!(join_url("s3://b/p/", "/k"), "s3://b/p/k");
    }
}
