//! Building and running the reviews service.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use zocalo_http::auth::{KeySource, TokenVerifier};
use zocalo_http::conditional::ReadCache;
use zocalo_http::server::Server;
use zocalo_store::DatabaseSettings;

use crate::store::{self, ReviewsStore};

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
    /// `Cache-Control: max-age` of public reads, in seconds.
    pub cache_max_age_secs: u32,
    /// How long a rendered public read is served from memory at most
    /// (writes on this instance clear it at once); 0 turns the cache off.
    pub read_cache_ttl_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: "sqlite://data/reviews.db".into(),
            database_read_url: None,
            database_read_urls: Vec::new(),
            database_max_connections: 16,
            jwks_url: "http://127.0.0.1:8080/.well-known/jwks.json".into(),
            issuer: "http://127.0.0.1:8080".into(),
            audience: "zocalo-api".into(),
            cache_max_age_secs: 30,
            read_cache_ttl_ms: 2_000,
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
    pub store: Arc<dyn ReviewsStore>,
    pub verifier: Arc<TokenVerifier>,
    pub read_cache: Option<Arc<ReadCache>>,
}

impl AppState {
    /// Something public changed: rendered reads are stale.
    pub fn changed(&self) {
        if let Some(cache) = &self.read_cache {
            cache.invalidate();
        }
    }
}

impl FromRef<AppState> for Arc<TokenVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

pub struct Application {
    server: Server,
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
        let read_cache = (settings.read_cache_ttl_ms > 0)
            .then(|| ReadCache::new(10_000, Duration::from_millis(settings.read_cache_ttl_ms)));
        let state = AppState {
            store,
            verifier,
            read_cache,
        };
        Ok(Self {
            server: Server::bind(
                settings.listen,
                crate::routes::router(state, settings.cache_max_age_secs),
            )
            .await?,
        })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        self.server.run_until_stopped(shutdown).await
    }
}
