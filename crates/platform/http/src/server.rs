//! Serving a service: binding, the middleware every service shares, and
//! graceful shutdown.
//!
//! [`finish`] turns a service's API router into the router that is served:
//! it adds the admin routes, `/openapi.json`, request ids, per-route metrics,
//! the read-your-writes scope ([`crate::session`]), tracing spans joined to
//! the caller's trace (W3C `traceparent`), panic catching and problem+json
//! fallbacks. [`serve`] runs it until the shutdown token fires, then drains
//! in-flight requests.

use std::net::SocketAddr;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use zocalo_telemetry::ReadinessCheck;

use crate::Problem;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id of the request being served, as set by [`request_id`].
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

/// Bind a TCP listener; port 0 picks a free port (tests).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Everything a service serves besides its API, wrapped around its API.
pub fn finish(
    service: &'static str,
    api: Router,
    ready: ReadinessCheck,
    openapi: serde_json::Value,
) -> Router {
    let openapi = std::sync::Arc::new(openapi);
    api.route(
        "/openapi.json",
        get(move || {
            let doc = openapi.clone();
            async move { axum::Json((*doc).clone()) }
        }),
    )
    .merge(zocalo_telemetry::admin_router(ready))
    .fallback(|| async { Problem::not_found().with_detail("no route for this path") })
    .method_not_allowed_fallback(|| async {
        Problem::new(StatusCode::METHOD_NOT_ALLOWED).with_detail("method not allowed on this path")
    })
    .route_layer(middleware::from_fn(move |req, next| {
        record_metrics(service, req, next)
    }))
    .layer(middleware::from_fn(crate::session::read_your_writes))
    .layer(CatchPanicLayer::custom(|_| {
        Problem::internal("handler panicked").into_response()
    }))
    .layer(
        TraceLayer::new_for_http()
            .make_span_with(move |req: &Request| {
                let id = req
                    .extensions()
                    .get::<RequestId>()
                    .and_then(|id| id.0.to_str().ok())
                    .unwrap_or("-");
                let span = tracing::info_span!("request", service, request_id = %id, method = %req.method(), path = %req.uri().path());
                // The caller's `traceparent` makes this request part of its
                // trace; without one the request starts a trace.
                zocalo_telemetry::trace::set_parent_from_headers(&span, req.headers());
                span
            })
            .on_request(())
            .on_response(
                tower_http::trace::DefaultOnResponse::new().level(tracing::Level::DEBUG),
            ),
    )
    .layer(middleware::from_fn(request_id))
}

/// Keep a well-formed incoming `X-Request-Id`, otherwise mint one; expose it
/// to handlers and echo it on the response.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = request_id_of(req.headers_mut());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(req).await;
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

/// The request's id: its well-formed `X-Request-Id`, or a new one; the
/// header then holds exactly that id.
pub fn request_id_of(headers: &mut HeaderMap) -> HeaderValue {
    let id = headers
        .get(&REQUEST_ID)
        .filter(|v| is_valid_request_id(v.as_bytes()))
        .cloned()
        .unwrap_or_else(new_request_id);
    headers.insert(REQUEST_ID, id.clone());
    id
}

/// Printable ASCII without spaces, at most 128 bytes: enough for any tracing
/// system's ids, too little to smuggle anything into logs.
pub fn is_valid_request_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= 128 && id.iter().all(|b| b.is_ascii_graphic())
}

/// 128 random bits in hex. The thread-local generator costs no system call,
/// unlike a fresh v4 UUID, which matters on the gateway's hot path; the hex
/// is written in place, not through a formatted `String`.
pub fn new_request_id() -> HeaderValue {
    let mut text = [0u8; uuid::fmt::Simple::LENGTH];
    let hex = uuid::Uuid::from_u128(rand::random())
        .simple()
        .encode_lower(&mut text);
    HeaderValue::from_str(hex).expect("hex is a valid header value")
}

async fn record_metrics(service: &'static str, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let response = next.run(req).await;
    let labels = [
        ("service", service.to_owned()),
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    response
}

/// A service's router bound to its port: what every `Application` wraps.
pub struct Server {
    listener: TcpListener,
    router: Router,
}

impl Server {
    /// Bind `addr` (port 0 picks a free port) for `router`.
    pub async fn bind(addr: SocketAddr, router: Router) -> std::io::Result<Self> {
        Ok(Self {
            listener: bind(addr).await?,
            router,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    }

    /// Serve until `shutdown` is cancelled, then finish the requests in
    /// flight.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        serve(self.listener, self.router, shutdown).await
    }
}

/// Serve `router` on `listener` until `shutdown` is cancelled, then finish
/// the requests in flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_bounded_printable_ascii() {
        assert!(is_valid_request_id(b"abc-123"));
        assert!(!is_valid_request_id(b""));
        assert!(!is_valid_request_id(b"has space"));
        assert!(!is_valid_request_id(&[b'a'; 129]));
        assert!(is_valid_request_id(new_request_id().as_bytes()));
    }
}
