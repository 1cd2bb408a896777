//! TLS termination for a server (the gateway is the one that uses it).
//!
//! The certificate chain and key come from PEM files and are re-read while
//! the server runs: a renewed certificate (cert-manager, certbot, a
//! Kubernetes Secret update) is served to new connections within a reload
//! interval, without a restart and without dropping open connections. A
//! pair that does not load (unreadable, not PEM, key not matching the
//! certificate — for instance while only one of the two files has been
//! replaced) is logged and counted, and the pair in force stays.
//!
//! [`TlsListener`] is an [`axum::serve::Listener`]: handshakes run on their
//! own tasks, so a slow or silent client never holds up the others, and
//! `axum::serve` keeps its graceful shutdown. ALPN offers HTTP/2 and
//! HTTP/1.1. The only crypto provider is `ring`.
//!
//! [`redirect_router`] answers plain-HTTP requests with a permanent
//! redirect to the same path over HTTPS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::Problem;

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const ACCEPT_QUEUE: usize = 256;

/// Where the certificate and key are, and what to do around them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSettings {
    /// PEM: the server certificate first, then any intermediates.
    pub cert_file: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// How often the two files are checked for a change.
    #[serde(default = "default_reload_interval_ms")]
    pub reload_interval_ms: u64,
    /// Also listen here for plain HTTP and redirect every request to HTTPS
    /// (308, same host, path and query).
    #[serde(default)]
    pub redirect_listen: Option<SocketAddr>,
    /// The HTTPS port redirects point to; the TLS listener's own port when
    /// absent (set it when a load balancer or a port mapping publishes
    /// another one). 443 is left out of the URL.
    #[serde(default)]
    pub redirect_port: Option<u16>,
}

fn default_reload_interval_ms() -> u64 {
    1000
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("certificate and key do not go together: {0}")]
    Mismatch(rustls::Error),
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Parse a certificate chain and its key from PEM bytes and check that
/// they belong together.
fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    settings: &TlsSettings,
) -> Result<CertifiedKey, TlsError> {
    let pem_error = |path: &Path, reason: String| TlsError::Pem {
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(&settings.cert_file, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(&settings.cert_file, "no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| pem_error(&settings.key_file, e.to_string()))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(TlsError::Mismatch)
}

/// The certificate in force, swapped whole when the files change.
#[derive(Debug)]
pub struct ReloadingCert {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The files as last read, to notice a change without parsing.
#[derive(PartialEq, Eq)]
struct Snapshot {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Snapshot {
    fn read(settings: &TlsSettings) -> Result<Self, TlsError> {
        Ok(Self {
            cert: read(&settings.cert_file)?,
            key: read(&settings.key_file)?,
        })
    }
}

/// A TLS acceptor over the files in `settings`, and the certificate it
/// serves (to be kept fresh with [`follow_files`]). Fails when the files
/// do not load now: a server must not start without a certificate.
pub fn acceptor(settings: &TlsSettings) -> Result<(TlsAcceptor, Arc<ReloadingCert>), TlsError> {
    let snapshot = Snapshot::read(settings)?;
    let key = certified_key(&snapshot.cert, &snapshot.key, settings)?;
    let cert = Arc::new(ReloadingCert {
        current: ArcSwap::from_pointee(key),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(cert.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), cert))
}

/// Re-read the files every `reload_interval_ms` until `stop`, and put a new
/// pair in force when it loads. A pair that does not load is logged once
/// per change and counted in `tls_certificate_reloads_total`.
pub fn follow_files(cert: Arc<ReloadingCert>, settings: TlsSettings, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut last = Snapshot::read(&settings).ok();
        let mut tick =
            tokio::time::interval(Duration::from_millis(settings.reload_interval_ms.max(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let snapshot = match Snapshot::read(&settings) {
                Ok(snapshot) => snapshot,
                Err(error) => {
                    // Files being replaced can be briefly absent; the pair
                    // in force keeps serving.
                    tracing::debug!(%error, "TLS files not readable now");
                    continue;
                }
            };
            if last.as_ref() == Some(&snapshot) {
                continue;
            }
            let result = match certified_key(&snapshot.cert, &snapshot.key, &settings) {
                Ok(key) => {
                    cert.current.store(Arc::new(key));
                    tracing::info!(cert = %settings.cert_file.display(), "TLS certificate reloaded");
                    "ok"
                }
                Err(error) => {
                    tracing::warn!(%error, "TLS certificate not reloaded; the previous one stays");
                    "rejected"
                }
            };
            metrics::counter!("tls_certificate_reloads_total", "result" => result).increment(1);
            last = Some(snapshot);
        }
    });
}

/// Connections that finished their TLS handshake, for `axum::serve`.
pub struct TlsListener {
    handshaken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    /// Accept on `tcp` and hand every connection to `acceptor` on its own
    /// task; the accept loop ends when the listener is dropped.
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let local_addr = tcp.local_addr()?;
        let (sender, handshaken) = mpsc::channel(ACCEPT_QUEUE);
        tokio::spawn(accept_loop(tcp, acceptor, sender));
        Ok(Self {
            handshaken,
            local_addr,
        })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    sender: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let accepted = tokio::select! {
            () = sender.closed() => return,
            accepted = tcp.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off, as
                // axum's own TCP listener does.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small proxied responses must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = sender.send((tls, peer)).await;
                }
                Ok(Err(error)) => {
                    metrics::counter!("tls_handshake_failures_total").increment(1);
                    tracing::debug!(%error, %peer, "TLS handshake failed");
                }
                Err(_) => {
                    metrics::counter!("tls_handshake_failures_total").increment(1);
                    tracing::debug!(%peer, "TLS handshake timed out");
                }
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(connection) => connection,
            // The accept loop only ends once we are gone; never resolve.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// Plain-HTTP requests answered with `308 Permanent Redirect` to the same
/// host (without its port), path and query on `https_port`.
pub fn redirect_router(https_port: u16) -> Router {
    Router::new().fallback(move |request: Request| async move { redirect(&request, https_port) })
}

fn redirect(request: &Request, https_port: u16) -> Response {
    let Some(host) = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(host_without_port)
    else {
        return Problem::bad_request("a Host header naming where to redirect is required")
            .into_response();
    };
    let port = match https_port {
        443 => String::new(),
        port => format!(":{port}"),
    };
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{path}");
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, location)],
    )
        .into_response()
}

/// `example.org:8080` → `example.org`, `[::1]:80` → `[::1]`; `None` for
/// anything that is not a plain host name or address (it goes into a URL).
fn host_without_port(host: &str) -> Option<&str> {
    let name = if host.starts_with('[') {
        &host[..=host.find(']')?]
    } else {
        host.split(':').next()?
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':');
    (!name.is_empty() && name.chars().all(allowed)).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_keep_host_path_and_query() {
        let request = Request::builder()
            .uri("/api/books?q=rayuela")
            .header(header::HOST, "shop.example.org:8080")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = redirect(&request, 8443);
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            response.headers()[header::LOCATION],
            "https://shop.example.org:8443/api/books?q=rayuela"
        );
        let standard = redirect(&request, 443);
        assert_eq!(
            standard.headers()[header::LOCATION],
            "https://shop.example.org/api/books?q=rayuela"
        );
    }

    #[test]
    fn hosts_that_cannot_go_into_a_url_are_refused() {
        assert_eq!(host_without_port("[::1]:80"), Some("[::1]"));
        assert_eq!(host_without_port("127.0.0.1"), Some("127.0.0.1"));
        assert_eq!(host_without_port("evil.org/x"), None);
        assert_eq!(host_without_port(""), None);
        let request = Request::builder()
            .uri("/")
            .header(header::HOST, "a b")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(redirect(&request, 443).status(), StatusCode::BAD_REQUEST);
    }
}
