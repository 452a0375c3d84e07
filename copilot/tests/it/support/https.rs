//! A real HTTPS server on loopback for the http(s) input tests: a CA made by the
//! test ([`TestCa`], rcgen), a leaf certificate for `127.0.0.1` and `localhost`
//! signed by it, rustls in front, and HTTP/1.1 responses written out byte by byte
//! so that a test can also send a broken one (a body shorter than its
//! Content-Length). The server runs on its own thread until dropped.
use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    },
};

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate (PEM) to `path`.
    pub fn write_pem(&self, path: &Path) {
        std::fs::write(path, self.pem()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// A server certificate for `127.0.0.1` and `localhost` and its key, written
    /// as PEM files `server.pem` and `server-key.pem` in `dir` (for a server
    /// that reads files, e.g. moto).
    pub fn write_leaf(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = self.leaf_pair();
        let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server-key.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write the server certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("write the server key");
        (cert_path, key_path)
    }

    fn leaf_pair(&self) -> (rcgen::Certificate, KeyPair) {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".into()])
            .expect("leaf parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        (cert, key)
    }

    /// A server certificate for `127.0.0.1` and `localhost`, and its key.
    fn leaf(&self) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let (cert, key) = self.leaf_pair();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.der().clone(), key)
    }
}

/// `200 OK` with `body` and its length.
pub fn ok(body: &[u8]) -> Vec<u8> {
    let mut out = head("200 OK", &[("Content-Length", &body.len().to_string())]);
    out.extend_from_slice(body);
    out
}

/// `302 Found` to `location`.
pub fn redirect(location: &str) -> Vec<u8> {
    head(
        "302 Found",
        &[("Location", location), ("Content-Length", "0")],
    )
}

/// An error status with a short text body.
pub fn status(line: &str) -> Vec<u8> {
    let body = format!("{line}\n");
    let mut out = head(line, &[("Content-Length", &body.len().to_string())]);
    out.extend_from_slice(body.as_bytes());
    out
}

/// `200 OK` that announces `declared` bytes and sends only `body`, then closes
/// the connection cleanly (TLS close_notify): only the length tells it is cut.
pub fn short(declared: usize, body: &[u8]) -> Vec<u8> {
    assert!(
        body.len() < declared,
        "a short body is shorter than declared"
    );
    let mut out = head("200 OK", &[("Content-Length", &declared.to_string())]);
    out.extend_from_slice(body);
    out
}

fn head(status: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

#[derive(Default)]
struct Seen {
    /// TCP connections accepted.
    connections: AtomicUsize,
    /// Request paths, in order.
    requests: Mutex<Vec<String>>,
}

/// An HTTPS server on `127.0.0.1`, answering each path with fixed bytes (any
/// other path: 404). Stopped when dropped.
pub struct HttpsServer {
    addr: SocketAddr,
    seen: Arc<Seen>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpsServer {
    /// Serves `routes` (path → the raw response) with a certificate signed by `ca`.
    pub fn start(ca: &TestCa, routes: Vec<(&str, Vec<u8>)>) -> Self {
        let (cert, key) = ca.leaf();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("server certificate");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let routes: Arc<HashMap<String, Vec<u8>>> = Arc::new(
            routes
                .into_iter()
                .map(|(path, bytes)| (path.to_owned(), bytes))
                .collect(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("address");
        let seen = Arc::new(Seen::default());
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread_seen = seen.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let tcp = tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => match accepted {
                            Ok((tcp, _)) => tcp,
                            Err(_) => continue,
                        },
                    };
                    thread_seen.connections.fetch_add(1, Ordering::SeqCst);
                    let (acceptor, routes, seen) =
                        (acceptor.clone(), routes.clone(), thread_seen.clone());
                    tokio::spawn(async move {
                        // A client that refuses the certificate ends the handshake here.
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let Some(path) = read_request_path(&mut tls).await else {
                            return;
                        };
                        let response = routes
                            .get(&path)
                            .cloned()
                            .unwrap_or_else(|| status("404 Not Found"));
                        lock(&seen.requests).push(path);
                        let _ = tls.write_all(&response).await;
                        let _ = tls.shutdown().await;
                    });
                }
            });
        });
        Self {
            addr,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `https://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// `https://localhost:PORT{path}` (the certificate names both).
    pub fn localhost_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// TCP connections accepted so far (a refused handshake counts).
    pub fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    /// The paths requested so far, in order.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.seen.requests).clone()
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads one request head and returns its path (`GET /x HTTP/1.1`).
async fn read_request_path<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 || head.len() > 64 * 1024 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split(' ');
    let (_method, path) = (words.next()?, words.next()?);
    Some(path.to_owned())
}
