//! The API gateway: the one address clients talk to.
//!
//! It routes each request by path prefix to an instance of the service that
//! owns the path (balanced over pooled HTTP/1.1 connections, bodies
//! streamed both ways), and refuses at the edge what no service should have
//! to see: unverifiable bearer tokens, oversized headers or bodies, clients
//! over their rate limit. It adds request ids, `X-Forwarded-*` headers, CORS
//! and security headers, and serves its own `/live`, `/ready`, `/metrics` and
//! `/openapi.json`. Every error it produces itself is problem+json.
//!
//! Instances are balanced with power of two choices on requests in flight;
//! an instance that keeps failing is ejected by its circuit breaker and
//! probed back in; idempotent requests are retried on another instance
//! within a retry budget; each service has a concurrency limit beyond which
//! the gateway sheds load with 503 (see `zocalo_http::balance` and
//! docs/design-resilience.md). The instances can change at runtime through
//! [`Upstreams`].
//!
//! Anonymous GETs of answers a service marks `public` are served from a
//! response cache shared by all instances through Redis when `redis_url` is
//! set (in-process otherwise, and while Redis is down), with `Age`,
//! `X-Cache` and `304` on a matching `If-None-Match` (see `cache.rs` and
//! [`CacheSettings`]).
//!
//! Its rate limit (shared by all instances through Redis when `redis_url`
//! is set), log level, feature flags and the weights of instances change
//! without a restart, from a watched file or a NATS KV key (see
//! [`LiveSettings`]).
//!
//! With `tls` set it terminates TLS itself (rustls, certificate re-read
//! when its files change; see `zocalo_http::tls`), optionally redirecting
//! plain HTTP from a second port, and sends HSTS when `hsts` is on.
//!
//! Not supported yet: protocol upgrades (WebSocket) and TLS to upstreams.
//!
//! Like every service it depends on platform crates only (`zocalo-http`,
//! `zocalo-telemetry`, `zocalo-config`), never on another service: services
//! are reached over HTTP at the addresses in [`Settings`].

mod bulkhead;
mod cache;
mod edge;
mod error;
mod layers;
mod live;
mod openapi;
mod proxy;
mod routes;
mod settings;
#[cfg(test)]
mod test_headers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};
use zocalo_config::live::Live;
use zocalo_http::Problem;
use zocalo_http::auth::TokenVerifier;
use zocalo_telemetry::{ReadinessCheck, admin_router, always_ready};

pub use routes::Upstreams;
pub use settings::{
    CacheSettings, LiveSettings, MAX_ROUTE_WEIGHT, RouteSettings, Settings, TlsSettings,
};
pub use zocalo_http::balance::{BreakerSettings, RetrySettings, Strategy};

use crate::proxy::Gateway;

/// How long a shutdown waits for in-flight requests (long downloads, slow
/// upstreams) before it gives up on them.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// A gateway bound to its port, ready to serve.
pub struct Application {
    listener: TcpListener,
    router: Router,
    /// Present when the gateway terminates TLS.
    tls: Option<Tls>,
    port: u16,
    upstreams: Upstreams,
    live: Arc<Live<LiveSettings>>,
    /// Stops the live-configuration tasks when the application goes away.
    _live_tasks: DropGuard,
}

/// What serving over TLS needs besides the main listener.
struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    /// The plain-HTTP listener that redirects to HTTPS, and the HTTPS port
    /// its redirects name.
    redirect: Option<(TcpListener, u16)>,
}

impl Application {
    /// Validate the settings, build the proxy and bind `settings.listen`
    /// (port 0 picks a free port).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Before any metric handle is registered (balancers, bulkheads):
        // handles taken without a recorder never report.
        let _ = zocalo_telemetry::metrics_handle();
        let gateway = Arc::new(Gateway::new(&settings)?);
        log_routes(&gateway);
        let upstreams = gateway.routes.upstreams().clone();
        let live_tasks = CancellationToken::new();
        let live_tasks_guard = live_tasks.clone().drop_guard();
        let live = live::start(gateway.clone(), &settings, &live_tasks)?;
        let router = router(gateway, &settings)?;
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let port = listener.local_addr()?.port();
        let tls = match &settings.tls {
            Some(tls) => Some(Tls::start(tls, port, &live_tasks).await?),
            None => None,
        };
        Ok(Self {
            listener,
            router,
            tls,
            port,
            upstreams,
            live,
            _live_tasks: live_tasks_guard,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to change the instances of each service while the gateway
    /// runs (discovery calls it on every change).
    pub fn upstreams(&self) -> Upstreams {
        self.upstreams.clone()
    }

    /// The live settings in force (feature flags, rate limit, log level).
    pub fn live(&self) -> Arc<Live<LiveSettings>> {
        self.live.clone()
    }

    /// Serve until `shutdown` is cancelled, then let in-flight requests
    /// finish (for at most [`DRAIN_LIMIT`]).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        let stopped = shutdown.clone().cancelled_owned();
        let Some(tls) = self.tls else {
            tracing::info!(port = self.port, "gateway listening");
            let listener = self.listener.tap_io(|stream| {
                // Proxied responses are often small; do not let Nagle delay them.
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set TCP_NODELAY");
                }
            });
            let server = axum::serve(listener, service).with_graceful_shutdown(stopped);
            return with_drain_limit(server.into_future(), &shutdown).await;
        };
        tracing::info!(port = self.port, "gateway listening with TLS");
        // `tap_io` gives the connections their peer address (`ConnectInfo`).
        let listener =
            zocalo_http::tls::TlsListener::new(self.listener, tls.acceptor)?.tap_io(|_| {});
        let server = axum::serve(listener, service).with_graceful_shutdown(stopped);
        let redirect = async {
            let Some((listener, https_port)) = tls.redirect else {
                return Ok(());
            };
            let router = zocalo_http::tls::redirect_router(https_port);
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                .await
        };
        let (served, redirected) =
            tokio::join!(with_drain_limit(server.into_future(), &shutdown), redirect);
        served.and(redirected)
    }
}

impl Tls {
    /// Load the certificate (failing now if it does not load), follow its
    /// files until `stop`, and bind the redirect listener.
    async fn start(
        settings: &TlsSettings,
        https_port: u16,
        stop: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let (acceptor, cert) = zocalo_http::tls::acceptor(settings).context("key `gateway.tls`")?;
        zocalo_http::tls::follow_files(cert, settings.clone(), stop.clone());
        let redirect = match settings.redirect_listen {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?;
                Some((listener, settings.redirect_port.unwrap_or(https_port)))
            }
            None => None,
        };
        Ok(Self { acceptor, redirect })
    }
}

/// Run `server` to its end, but once `shutdown` fires give the requests in
/// flight at most [`DRAIN_LIMIT`] before dropping them.
async fn with_drain_limit(
    server: impl Future<Output = std::io::Result<()>>,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_LIMIT).await;
    };
    tokio::select! {
        result = server => result,
        () = deadline => {
            tracing::warn!("drain limit reached, dropping remaining connections");
            Ok(())
        }
    }
}

/// The gateway's own endpoints, the proxy behind everything else, and the
/// middleware around both (outermost last).
fn router(gateway: Arc<Gateway>, settings: &Settings) -> anyhow::Result<Router> {
    let openapi = Arc::new(openapi::document(&gateway.routes));
    let ready = readiness(gateway.verifier.clone());
    let mut router = Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let doc = openapi.clone();
                async move { axum::Json((*doc).clone()) }
            }),
        )
        .merge(admin_router(ready))
        .fallback(proxy::handle)
        .method_not_allowed_fallback(|| async {
            Problem::new(StatusCode::METHOD_NOT_ALLOWED)
                .with_detail("method not allowed on this path")
        })
        .with_state(gateway)
        .layer(layers::OutcomeLayer::default());
    if let Some(cors) = layers::cors(&settings.cors_allowed_origins)? {
        router = router.layer(cors);
    }
    Ok(router.layer(edge::EdgeLayer {
        hsts: settings.hsts,
    }))
}

/// Ready when bearer tokens can be verified, i.e. the JWKS is fetchable, or
/// when no key source is configured at all.
fn readiness(verifier: Option<Arc<TokenVerifier>>) -> ReadinessCheck {
    let Some(verifier) = verifier else {
        return always_ready();
    };
    Arc::new(move || {
        let verifier = verifier.clone();
        Box::pin(async move { verifier.refresh().await.map_err(|e| e.to_string()) })
    })
}

fn log_routes(gateway: &Gateway) {
    for route in gateway.routes.iter() {
        if route.has_upstreams() {
            tracing::debug!(prefix = %route.prefix, service = %route.service, "route");
        } else {
            tracing::info!(
                prefix = %route.prefix,
                service = %route.service,
                "route has no instances: its requests will get 503"
            );
        }
    }
    if gateway.verifier.is_none() {
        tracing::warn!("no JWKS source: requests with bearer tokens will get 503");
    }
}
