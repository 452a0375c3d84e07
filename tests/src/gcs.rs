//! A Google Cloud Storage emulator (`gcp-storage-emulator`, PyPI) on loopback, behind a
//! small header shim, and a blocking client for it. Credentials reach copilot through a
//! mounted service-account file (`GOOGLE_SERVICE_ACCOUNT`) only.
//!
//! # The header shim, and exactly what it adds
//!
//! object_store 0.12's GCS client speaks the XML API (`PUT`/`GET /<bucket>/<object>`).
//! The emulator serves those two calls, but its answers lack headers object_store
//! requires, so copilot would fail on every object without them. The shim is a
//! loopback HTTP/1.1 reverse proxy that forwards every request unchanged (method, path,
//! query, headers, body) to the emulator and its answer unchanged back, except that
//! it **adds** these headers when the emulator's answer lacks them, and nothing else:
//!
//! - On a successful `GET /<bucket>/<object>` (200 or 206): `Last-Modified` and `ETag`.
//!   object_store's `GetClient` for GCS sets `last_modified_required` and
//!   `etag_required` (`ObjectStore::get`, copilot's every download and read:
//!   "Last-Modified Header missing from response" otherwise).
//! - On a successful `PUT /<bucket>/<object>` (no query): `ETag`. object_store's
//!   `put` reads the new object's ETag from the answer (`get_put_result`;
//!   "ETag Header missing from response" otherwise): copilot's every upload.
//!
//! The values are the emulator's own: the shim asks the emulator's JSON API for the
//! object's metadata (`GET /storage/v1/b/<bucket>/o/<object>`) and copies its `updated`
//! time (as an HTTP date) into `Last-Modified` and its `etag` (the content's MD5) into
//! `ETag`. Everything else, every byte stored or served, is the real emulator.
//!
//! Two things a proxy does anyway: it lets at most 4 requests reach the emulator at
//! once (the emulator is Python's single-threaded `HTTPServer`, which serves one
//! request at a time with a listen backlog of 5, while copilot moves up to 32 objects at
//! once: the rest wait in the shim, not in the kernel's queue), and when the emulator
//! cannot be reached it answers `502 Bad Gateway` (object_store retries that as it
//! would a real server's 5xx). [`GcsEmulator::kill`] stops both, so the client then
//! sees refused connections.
//!
//! # What the emulator cannot serve (no shim here)
//!
//! `gcp-storage-emulator` answers `501 Not Implemented` to three XML API calls that
//! object_store makes, and a header cannot fix that, so the tests do not use them:
//! - listing (`GET /<bucket>?list-type=2`, `ObjectStore::list`): copilot lists a
//!   multipart blob's prefix to download it, so folder inputs are not tested on GCS;
//! - multipart uploads (`POST /<bucket>/<object>?uploads`, `ObjectStore::put_multipart`):
//!   copilot uploads a file over 16 MiB (`SINGLE_PUT_MAX`) in parts, so the largest
//!   output tested is 16 MiB, one PUT;
//! - `HEAD` (`ObjectStore::head`), which copilot does not call.
use std::{
    convert::Infallible,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use copilot::storage::{Secret, StorageConfig, StorageType};
use http_body_util::{BodyExt as _, Full};
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderMap, HeaderValue},
};

use crate::{
    env::{missing, random_hex, workspace_root},
    store_client::StoreClient,
};

/// `gcp-storage-emulator` (in memory, one bucket) on a free loopback port behind the
/// header shim on another, for the life of this value (both stopped on drop). Missing
/// is a failure, never a skip.
pub struct GcsEmulator {
    child: Option<Child>,
    shim: Option<tokio::runtime::Runtime>,
    shim_port: u16,
    emulator_port: u16,
    /// The service-account file (a throwaway, see [`GcsEmulator::private_key`]).
    key_file: PathBuf,
    private_key: String,
    _dir: tempfile::TempDir,
    client: StoreClient,
}

impl std::ops::Deref for GcsEmulator {
    type Target = StoreClient;

    fn deref(&self) -> &StoreClient {
        &self.client
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl GcsEmulator {
    /// Starts the emulator with `bucket` created, and the shim in front of it.
    pub fn start(bucket: &str) -> Self {
        let binary = workspace_root().join("target/venv-gcs/bin/gcp-storage-emulator");
        if !binary.is_file() {
            missing(format!(
                "{} does not exist (run `cargo xtask setup`)",
                binary.display()
            ));
        }
        let emulator_port = free_port();
        let mut child = Command::new(&binary)
            .args(["start", "--host", "127.0.0.1", "--port"])
            .arg(emulator_port.to_string())
            .args(["--in-memory", "--quiet", "--default-bucket", bucket])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        crate::env::wait_listening(&mut child, "gcp-storage-emulator", emulator_port);

        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port for the shim");
        let shim_port = listener.local_addr().expect("the shim's address").port();
        let shim = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("the shim's runtime");
        let upstream = Arc::new(Upstream {
            base: format!("http://127.0.0.1:{emulator_port}"),
            http: reqwest::Client::new(),
            slots: tokio::sync::Semaphore::new(4),
        });
        shim.spawn(serve(listener, upstream));

        let dir = tempfile::Builder::new()
            .prefix("gcs-")
            .tempdir()
            .expect("tempdir");
        // With `disable_oauth`, object_store sends no token and never reads the key: a
        // random marker stands in for it, so the tests can look for leaks of it.
        let private_key = format!("not-a-key-{}", random_hex(16));
        let base_url = format!("http://127.0.0.1:{shim_port}");
        let json = serde_json::json!({
            "type": "service_account",
            "client_email": "copilot-test@example.invalid",
            "private_key_id": random_hex(8),
            "private_key": private_key,
            "gcs_base_url": base_url,
            "disable_oauth": true,
        })
        .to_string();
        let key_file = dir.path().join("service-account.json");
        std::fs::write(&key_file, &json).expect("writing the service-account file");
        let client = StoreClient::new(StorageConfig {
            kind: Some(StorageType::Stow),
            stow_kind: Some("google".into()),
            stow_config: [("json".to_string(), Secret::new(json))].into(),
            disable_ssl: true,
            retries: 1,
            retry_timeout: Duration::from_secs(5),
            ..StorageConfig::default()
        });
        let mut gcs = GcsEmulator {
            child: Some(child),
            shim: Some(shim),
            shim_port,
            emulator_port,
            key_file,
            private_key,
            _dir: dir,
            client,
        };
        crate::env::wait_listening(
            gcs.child.as_mut().expect("the emulator"),
            "the GCS header shim",
            shim_port,
        );
        gcs
    }

    /// The `--storage.*` flags for copilot (as Flyte's GCS configuration has them): no
    /// credential, and plain http to the emulator.
    pub fn flags() -> Vec<String> {
        vec![
            "--storage.type=stow".into(),
            "--storage.stow.kind=google".into(),
            "--storage.connection.disable-ssl".into(),
            "--storage.retries=1".into(),
            "--storage.retry-timeout=5s".into(),
        ]
    }

    /// The environment a pod would get from a mounted Secret: the service-account file.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![(
            "GOOGLE_SERVICE_ACCOUNT",
            self.key_file.to_string_lossy().into_owned(),
        )]
    }

    /// The service account's private key (a marker that must never be printed).
    pub fn private_key(&self) -> &str {
        &self.private_key
    }

    /// The object names below `prefix` in `bucket`, with sizes, from the emulator's own
    /// JSON API (not through copilot's store, which cannot list here).
    pub fn list_json(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        let base = format!(
            "http://127.0.0.1:{}/storage/v1/b/{bucket}/o",
            self.emulator_port
        );
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("prefix", prefix.to_owned())];
            if let Some(t) = &token {
                query.push(("pageToken", t.clone()));
            }
            let body = self.block_on(async {
                reqwest::Client::new()
                    .get(&base)
                    .query(&query)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .unwrap_or_else(|e| panic!("listing {bucket}/{prefix}: {e}"))
                    .bytes()
                    .await
                    .unwrap_or_else(|e| panic!("listing {bucket}/{prefix}: {e}"))
            });
            let page: serde_json::Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("listing {bucket}/{prefix}: {e}"));
            for item in page["items"].as_array().into_iter().flatten() {
                let name = item["name"].as_str().unwrap_or_default().to_owned();
                let size = item["size"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                names.push((name, size));
            }
            token = page["nextPageToken"].as_str().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        names.sort();
        names
    }

    /// The mounted service-account file.
    pub fn key_path(&self) -> &Path {
        &self.key_file
    }

    /// Kills the emulator and stops the shim: the store goes away mid-transfer.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(shim) = self.shim.take() {
            shim.shutdown_background();
        }
    }

    /// The shim's address (what copilot talks to).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.shim_port)
    }
}

impl Drop for GcsEmulator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The emulator, as the shim reaches it.
struct Upstream {
    base: String,
    http: reqwest::Client,
    /// At most this many requests to the emulator at once: it serves one at a time
    /// (Python's `HTTPServer`) with a listen backlog of 5.
    slots: tokio::sync::Semaphore,
}

async fn serve(listener: TcpListener, upstream: Arc<Upstream>) {
    listener
        .set_nonblocking(true)
        .expect("a non-blocking listener");
    let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let upstream = upstream.clone();
                async move { Ok::<_, Infallible>(forward(&upstream, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Headers that belong to one hop, not to the request or answer.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    for name in HOP_BY_HOP {
        out.remove(*name);
    }
    out
}

/// `(bucket, object)` of an XML API object path (`/<bucket>/<object>`, the object
/// still percent-encoded), or `None` for the emulator's other APIs.
fn xml_object(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (bucket, object) = rest.split_once('/')?;
    let other_api = ["storage", "upload", "download", "batch"].contains(&bucket);
    (!other_api && !object.is_empty()).then_some((bucket, object))
}

/// Which headers the shim adds to the answer to `method path?query`.
fn adds(method: &Method, query: Option<&str>, status: StatusCode) -> &'static [header::HeaderName] {
    const GET: &[header::HeaderName] = &[header::LAST_MODIFIED, header::ETAG];
    const PUT: &[header::HeaderName] = &[header::ETAG];
    if !status.is_success() {
        return &[];
    }
    match *method {
        Method::GET => GET,
        Method::PUT if query.is_none_or(str::is_empty) => PUT,
        _ => &[],
    }
}

async fn forward(upstream: &Upstream, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return bad_gateway(format!("reading the request body: {e}")),
    };
    let Ok(_slot) = upstream.slots.acquire().await else {
        return bad_gateway("the shim is stopping".into());
    };
    let path_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let sent = upstream
        .http
        .request(
            parts.method.clone(),
            format!("{}{path_query}", upstream.base),
        )
        .headers(end_to_end(&parts.headers))
        .body(body)
        .send()
        .await;
    let answer = match sent {
        Ok(a) => a,
        Err(e) => return bad_gateway(format!("forwarding to the emulator: {e}")),
    };
    let status = answer.status();
    let mut headers = end_to_end(answer.headers());
    let bytes = match answer.bytes().await {
        Ok(b) => b,
        Err(e) => return bad_gateway(format!("reading the emulator's answer: {e}")),
    };
    let wanted: Vec<_> = adds(&parts.method, parts.uri.query(), status)
        .iter()
        .filter(|h| !headers.contains_key(*h))
        .collect();
    if let (false, Some((bucket, object))) = (wanted.is_empty(), xml_object(parts.uri.path())) {
        match metadata(upstream, bucket, object).await {
            Ok(meta) => {
                for name in wanted {
                    if let Some(value) = meta.header(name) {
                        headers.insert(name.clone(), value);
                    }
                }
            }
            Err(e) => return bad_gateway(format!("the object's metadata: {e}")),
        }
    }
    let mut response = Response::new(Full::new(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn bad_gateway(why: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(why)));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

/// What the emulator's JSON API says of an object.
struct Metadata {
    /// `updated`, RFC 3339.
    updated: String,
    /// `etag` (the emulator's is the content's base64 MD5).
    etag: String,
}

impl Metadata {
    fn header(&self, name: &header::HeaderName) -> Option<HeaderValue> {
        let value = if *name == header::ETAG {
            format!("\"{}\"", self.etag)
        } else if *name == header::LAST_MODIFIED {
            http_date(&self.updated)?
        } else {
            return None;
        };
        HeaderValue::from_str(&value).ok()
    }
}

/// RFC 3339 → the HTTP date `Last-Modified` carries (RFC 7231, IMF-fixdate).
fn http_date(rfc3339: &str) -> Option<String> {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).ok()?;
    Some(
        t.with_timezone(&chrono::Utc)
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string(),
    )
}

async fn metadata(upstream: &Upstream, bucket: &str, object: &str) -> Result<Metadata, String> {
    let url = format!("{}/storage/v1/b/{bucket}/o/{object}", upstream.base);
    let body = upstream
        .http
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| e.to_string())?
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    let meta: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))?;
    let field = |name: &str| {
        meta[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{url}: no `{name}` in {meta}"))
    };
    Ok(Metadata {
        updated: field("updated")?,
        etag: field("etag")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_xml_object_paths_are_shimmed() {
        assert_eq!(
            xml_object("/flyte/run%2Fa.txt"),
            Some(("flyte", "run%2Fa.txt"))
        );
        assert_eq!(xml_object("/flyte"), None);
        assert_eq!(xml_object("/flyte/"), None);
        assert_eq!(xml_object("/storage/v1/b/flyte/o/x"), None);
        assert_eq!(xml_object("/upload/storage/v1/b/flyte/o"), None);
    }

    #[test]
    fn headers_are_added_to_successful_gets_and_plain_puts_only() {
        let ok = StatusCode::OK;
        assert_eq!(adds(&Method::GET, None, ok).len(), 2);
        assert_eq!(adds(&Method::GET, None, StatusCode::NOT_FOUND).len(), 0);
        assert_eq!(adds(&Method::PUT, None, ok), &[header::ETAG]);
        assert!(adds(&Method::PUT, Some("partNumber=1&uploadId=x"), ok).is_empty());
        assert!(adds(&Method::POST, Some("uploads="), ok).is_empty());
        assert!(adds(&Method::DELETE, None, ok).is_empty());
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            http_date("2026-12-05T14:09:59.313120Z").as_deref(),
            Some("Sat, 05 Dec 2026 14:09:59 GMT")
        );
        assert_eq!(http_date("yesterday"), None);
    }
}
