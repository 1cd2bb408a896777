//! A real upstream service and a real gateway in front of it, both on
//! loopback port 0, so every test exercises actual sockets, pooling and
//! streaming rather than mocks of our own code.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use zocalo_config::live::Live;
use zocalo_gateway::{Application, LiveSettings, Settings, Upstreams};
use zocalo_testkit::serve::{Served, serve};
use zocalo_testkit::{AUDIENCE, Client, ISSUER, TestTokens, text_of};

/// Size of one chunk of `/api/content/big`, and how many there are.
pub const BIG_CHUNK: usize = 64 * 1024;
pub const BIG_CHUNKS: usize = 64;

/// Headers the upstream echoes back as `x-echo-<name>`.
const ECHOED: [&str; 8] = [
    "x-request-id",
    "traceparent",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "authorization",
    "host",
    "content-length",
];

#[derive(Clone)]
struct UpstreamState {
    name: &'static str,
    hits: Arc<AtomicUsize>,
    jwks: Arc<serde_json::Value>,
}

/// A running upstream service that counts the requests it was proxied.
pub struct TestUpstream {
    pub url: String,
    pub hits: Arc<AtomicUsize>,
    _served: Served,
}

impl TestUpstream {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// The common arrangement: a gateway with default settings in front of an
/// upstream named `reviews` that publishes the keys of the tokens returned.
pub async fn gateway_over_reviews() -> (TestGateway, TestUpstream, TestTokens) {
    let tokens = TestTokens::new();
    let upstream = spawn_upstream("reviews", &tokens).await;
    let gateway = spawn_gateway(settings(&upstream.url)).await;
    (gateway, upstream, tokens)
}

/// Start an upstream named `name` (it says so in `x-echo-upstream`) that
/// publishes the keys of `tokens`.
pub async fn spawn_upstream(name: &'static str, tokens: &TestTokens) -> TestUpstream {
    let hits = Arc::new(AtomicUsize::new(0));
    let state = UpstreamState {
        name,
        hits: hits.clone(),
        jwks: Arc::new(serde_json::to_value(tokens.jwks()).unwrap()),
    };
    let app = Router::new()
        // Key fetches come from the verifier, not from clients: not a hit.
        .route(
            "/.well-known/jwks.json",
            get(|State(s): State<UpstreamState>| async move { axum::Json((*s.jwks).clone()) }),
        )
        .route("/api/compare/slow", get(slow))
        .route("/api/compare/pause", get(pause))
        .route("/api/content/big", get(big))
        .route("/api/content/count", axum::routing::post(count))
        .route("/api/content/own-headers", get(own_headers))
        .fallback(echo)
        .with_state(state);
    let served = serve(app).await;
    TestUpstream {
        url: served.url.clone(),
        _served: served,
        hits,
    }
}

/// Streams the request body straight back, with what the upstream saw of
/// the request in `x-echo-*` headers.
async fn echo(State(state): State<UpstreamState>, request: Request) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    let mut put = |name: &str, value: &str| {
        headers.insert(
            HeaderName::from_bytes(format!("x-echo-{name}").as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    };
    put("upstream", state.name);
    put("method", parts.method.as_str());
    put("path", parts.uri.path());
    if let Some(query) = parts.uri.query() {
        put("query", query);
    }
    for name in ECHOED {
        if let Some(value) = parts.headers.get(name) {
            put(name, value.to_str().unwrap());
        }
    }
    let names: Vec<_> = parts.headers.keys().map(|k| k.as_str()).collect();
    put("header-names", &names.join(","));
    response
}

async fn slow(State(state): State<UpstreamState>) -> &'static str {
    state.hits.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    "too late"
}

async fn pause(State(state): State<UpstreamState>) -> &'static str {
    state.hits.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    "finished"
}

/// `BIG_CHUNKS` chunks of `BIG_CHUNK` bytes, chunk `i` filled with byte `i`,
/// with no length known up front.
async fn big(State(state): State<UpstreamState>) -> Body {
    state.hits.fetch_add(1, Ordering::SeqCst);
    Body::new(Chunks { next: 0 })
}

struct Chunks {
    next: usize,
}

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.next == BIG_CHUNKS {
            return Poll::Ready(None);
        }
        let chunk = Bytes::from(vec![this.next as u8; BIG_CHUNK]);
        this.next += 1;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
}

/// Reads the whole body before answering, so that a body the gateway cuts
/// off fails before any response exists.
async fn count(State(state): State<UpstreamState>, body: Body) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes.len().to_string().into_response(),
        Err(_) => (axum::http::StatusCode::BAD_REQUEST, "body failed").into_response(),
    }
}

async fn own_headers(State(state): State<UpstreamState>) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    (
        [
            ("x-frame-options", "SAMEORIGIN"),
            ("keep-alive", "timeout=5"),
            ("proxy-authenticate", "Basic"),
        ],
        "framed",
    )
        .into_response()
}

/// Gateway settings with every default route pointing at `upstream`, the
/// test token issuer, and no rate limit unless a test sets one.
pub fn settings(upstream: &str) -> Settings {
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        rate_limit: None,
        ..Settings::default()
    };
    // Without the web pages' catch-all, so that unknown paths stay unknown.
    settings.routes.retain(|route| route.prefix != "/");
    for route in &mut settings.routes {
        route.upstreams = vec![upstream.to_owned()];
    }
    settings
}

/// A running gateway and a client for it.
pub struct TestGateway {
    pub client: Client,
    pub port: u16,
    /// Changes the instances of a service while the gateway runs.
    pub upstreams: Upstreams,
    /// The live settings in force.
    pub live: Arc<Live<LiveSettings>>,
    stop: CancellationToken,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestGateway {
    /// Ask for a graceful shutdown and wait until the server has drained.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.stop.cancel();
        match self.server.take() {
            Some(server) => server.await.unwrap(),
            None => Ok(()),
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub async fn spawn_gateway(settings: Settings) -> TestGateway {
    let app = Application::build(settings).await.expect("gateway builds");
    let port = app.port();
    let upstreams = app.upstreams();
    let live = app.live();
    let stop = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(stop.clone()));
    TestGateway {
        client: Client::new(format!("http://127.0.0.1:{port}")),
        port,
        upstreams,
        live,
        stop,
        server: Some(server),
    }
}

/// An address nothing listens on: bound, then released.
pub async fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// Send raw bytes (for what reqwest will not send: chunked uploads, dot
/// segments) and read until the server closes the connection.
pub async fn raw_exchange(port: u16, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    // A reset after the response was sent still leaves what was read.
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the gateway answers and closes within 10 s");
    String::from_utf8_lossy(&response).into_owned()
}

/// The status code of a raw HTTP/1.1 response.
pub fn raw_status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// The sum of the series of `metric` whose labels contain `label`, as the
/// gateway that `client` talks to reports them.
pub async fn metric(client: &Client, metric: &str, label: &str) -> f64 {
    let text = text_of(client.get("/metrics")).await;
    let prefix = format!("{metric}{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}
