//! Building and running the catalog service: the HTTP API plus the sweep
//! that expires forgotten reservations.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use zocalo_http::auth::{KeySource, TokenVerifier};
use zocalo_http::server::Server;
use zocalo_store::DatabaseSettings;

use crate::store::{self, CatalogStore};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database_url: String,
    pub database_read_url: Option<String>,
    /// More read replicas; reads fall back to the primary when none is healthy.
    pub database_read_urls: Vec<String>,
    pub database_max_connections: usize,
    /// The auth service's JWKS, e.g. `http://auth:8080/.well-known/jwks.json`.
    pub jwks_url: String,
    pub issuer: String,
    pub audience: String,
    /// `Cache-Control: max-age` of public reads, in seconds. Short, because
    /// stock changes with every sale.
    pub cache_max_age_secs: u32,
    /// How often held reservations past their expiry are released.
    pub sweep_interval_ms: u64,
    /// How long a reservation is held when the caller does not say.
    pub default_reservation_ttl_secs: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: "sqlite://data/catalog.db".into(),
            database_read_url: None,
            database_read_urls: Vec::new(),
            database_max_connections: 16,
            jwks_url: "http://127.0.0.1:8080/.well-known/jwks.json".into(),
            issuer: "http://127.0.0.1:8080".into(),
            audience: "zocalo-api".into(),
            cache_max_age_secs: 10,
            sweep_interval_ms: 1000,
            default_reservation_ttl_secs: 900,
        }
    }
}

impl Settings {
    pub fn database(&self) -> DatabaseSettings {
        DatabaseSettings {
            url: self.database_url.clone(),
            read_url: self.database_read_url.clone(),
            read_urls: self.database_read_urls.clone(),
            max_connections: self.database_max_connections,
            ..DatabaseSettings::default()
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn CatalogStore>,
    pub verifier: Arc<TokenVerifier>,
    pub default_ttl_secs: u32,
}

impl FromRef<AppState> for Arc<TokenVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

pub struct Application {
    server: Server,
    store: Arc<dyn CatalogStore>,
    sweep_interval: Duration,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let keys = KeySource::Url(settings.jwks_url.clone());
        Self::build_with_keys(settings, keys).await
    }

    /// Build with a given key source; tests pass the JWK set of the tokens
    /// they mint.
    pub async fn build_with_keys(
        settings: Settings,
        keys: impl Into<KeySource>,
    ) -> anyhow::Result<Self> {
        let verifier = TokenVerifier::new(keys.into(), &settings.issuer, &settings.audience);
        let store = store::open(&settings.database()).await?;
        let state = AppState {
            store: store.clone(),
            verifier,
            default_ttl_secs: settings.default_reservation_ttl_secs,
        };
        Ok(Self {
            server: Server::bind(
                settings.listen,
                crate::routes::router(state, settings.cache_max_age_secs),
            )
            .await?,
            store,
            // A zero interval would spin; 10 ms is already far below need.
            sweep_interval: Duration::from_millis(settings.sweep_interval_ms.max(10)),
        })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The store this application serves, for tests and admin tasks that
    /// act on it directly (e.g. running the expiry sweep by hand).
    pub fn store(&self) -> Arc<dyn CatalogStore> {
        self.store.clone()
    }

    /// Serve until `shutdown` fires; the expiry sweep runs alongside and is
    /// stopped (after its current batch) before this returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let sweep_stop = shutdown.child_token();
        let sweeper = tokio::spawn(sweep_expired(
            self.store,
            self.sweep_interval,
            sweep_stop.clone(),
        ));
        let served = self.server.run_until_stopped(shutdown).await;
        // The server may also stop on an I/O error; the sweep goes with it.
        sweep_stop.cancel();
        if let Err(error) = sweeper.await {
            tracing::error!(%error, "reservation sweep task failed");
        }
        served
    }
}

/// Release held reservations past their expiry, every `interval`, until
/// `stop`. A failed pass is logged and retried on the next tick: expiry is
/// idempotent, so nothing is lost by trying again.
async fn sweep_expired(store: Arc<dyn CatalogStore>, interval: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match store.release_expired(crate::domain::now()).await {
            Ok(0) => {}
            Ok(expired) => {
                tracing::info!(expired, "released expired reservations");
                metrics::counter!("catalog_reservations_total", "outcome" => "expired")
                    .increment(expired);
            }
            Err(error) => tracing::warn!(%error, "reservation sweep failed"),
        }
    }
}
