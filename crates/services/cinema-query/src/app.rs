//! Building and running the cinema query service: the HTTP API and, in the
//! same process, the projector that keeps its read models up to date.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use zocalo_bus::Bus;
use zocalo_config::Secret;
use zocalo_contracts::cinema as contract;
use zocalo_http::auth::{KeySource, TokenVerifier};
use zocalo_http::balance::InvalidEndpoint;
use zocalo_http::client::{ClientSettings, ServiceClient};
use zocalo_http::conditional::ReadCache;
use zocalo_http::server::Server;
use zocalo_http::service_auth::{ServiceAuth, auth_client};
use zocalo_store::DatabaseSettings;

use crate::projector::{GROUP, Projector};
use crate::rebuild::{EventLog, Report};
use crate::store::{self, CinemaStore};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database_url: String,
    pub database_read_url: Option<String>,
    /// More read replicas; reads fall back to the primary when none is healthy.
    pub database_read_urls: Vec<String>,
    pub database_max_connections: usize,
    /// `sqlite://…/bus.db` (embedded) or `nats://…` (JetStream).
    pub bus_url: String,
    /// Run the projector in this process (one consumer of the `cinema`
    /// group per instance). Off for instances that only serve reads.
    pub projector: bool,
    pub jwks_url: String,
    pub issuer: String,
    pub audience: String,
    /// `Cache-Control: max-age` of public reads, in seconds.
    pub cache_max_age_secs: u32,
    /// How long a rendered public read is served from memory at most (an
    /// event projected on this instance clears it at once); 0 turns it off.
    pub read_cache_ttl_ms: u64,
    /// "Now showing": movies with a showtime within this many days.
    pub now_showing_days: u32,
    /// The command service's own address, for its event log (rebuild).
    /// With a discovery source, the discovered `cinema-command` instances
    /// replace it.
    pub command_url: String,
    /// Where to get a service token (`client_credentials`). With a
    /// discovery source, its path is asked of the discovered `auth`
    /// instances.
    pub token_url: String,
    pub outgoing: ClientSettings,
    pub client_id: String,
    pub client_secret: Secret,
    /// Events per page of the log when rebuilding.
    pub rebuild_page_size: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: "sqlite://data/cinema-query.db".into(),
            database_read_url: None,
            database_read_urls: Vec::new(),
            database_max_connections: 16,
            bus_url: "sqlite://data/bus.db".into(),
            projector: true,
            jwks_url: "http://127.0.0.1:8080/.well-known/jwks.json".into(),
            issuer: "http://127.0.0.1:8080".into(),
            audience: "zocalo-api".into(),
            cache_max_age_secs: 5,
            read_cache_ttl_ms: 1_000,
            now_showing_days: 7,
            command_url: "http://127.0.0.1:8080".into(),
            token_url: "http://127.0.0.1:8080/auth/token".into(),
            outgoing: ClientSettings::default(),
            client_id: "cinema-query".into(),
            client_secret: Secret::default(),
            rebuild_page_size: 500,
        }
    }
}

/// The services a rebuild calls, each balanced over its instances.
#[derive(Debug, Clone)]
pub struct Clients {
    pub command: ServiceClient,
    pub auth: ServiceClient,
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

    /// Clients over the configured static addresses (follow discovery on
    /// them to replace those).
    pub fn clients(&self) -> anyhow::Result<Clients> {
        let command = ServiceClient::with_instances(
            "cinema-command",
            std::slice::from_ref(&self.command_url),
            &self.outgoing,
        )
        .map_err(|e| anyhow::anyhow!("key `cinema_query.command_url`: {e}"))?;
        let auth = auth_client(&self.token_url, &self.outgoing).map_err(token_url_error)?;
        Ok(Clients { command, auth })
    }

    /// The command side's log, read with tokens asked of `clients.auth`.
    pub fn event_log(&self, clients: Clients) -> anyhow::Result<EventLog> {
        let auth = ServiceAuth::client_credentials_at(
            clients.auth,
            &self.token_url,
            self.client_id.clone(),
            self.client_secret.expose().to_owned(),
        )
        .map_err(token_url_error)?;
        Ok(EventLog::new(clients.command, auth, self.rebuild_page_size))
    }
}

fn token_url_error(error: InvalidEndpoint) -> anyhow::Error {
    anyhow::anyhow!("key `cinema_query.token_url`: {error}")
}

/// Wipe the read models and replay the command side's log into them
/// (`zocalo admin rebuild cinema-query`).
pub async fn rebuild(settings: &Settings, clients: Clients) -> anyhow::Result<Report> {
    let store = store::open(&settings.database()).await?;
    let log = settings.event_log(clients)?;
    crate::rebuild::rebuild(store, &log).await
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn CinemaStore>,
    pub verifier: Arc<TokenVerifier>,
    pub read_cache: Option<Arc<ReadCache>>,
    pub now_showing: chrono::Duration,
}

impl FromRef<AppState> for Arc<TokenVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

pub struct Application {
    server: Server,
    state: AppState,
    /// The bus the projector consumes; `None` when it runs elsewhere.
    bus: Option<Bus>,
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
        let bus = if settings.projector {
            Some(zocalo_bus::connect(&settings.bus_url).await?)
        } else {
            None
        };
        let read_cache = (settings.read_cache_ttl_ms > 0)
            .then(|| ReadCache::new(10_000, Duration::from_millis(settings.read_cache_ttl_ms)));
        let state = AppState {
            store,
            verifier,
            read_cache,
            now_showing: chrono::Duration::days(i64::from(settings.now_showing_days.max(1))),
        };
        let router = crate::routes::router(state.clone(), settings.cache_max_age_secs);
        Ok(Self {
            server: Server::bind(settings.listen, router).await?,
            state,
            bus,
        })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub fn store(&self) -> Arc<dyn CinemaStore> {
        self.state.store.clone()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let projector = self.bus.map(|bus| {
            let cache = self.state.read_cache.clone();
            let applied: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
                if let Some(cache) = &cache {
                    cache.invalidate();
                }
            });
            tokio::spawn(zocalo_bus::run_subscriber(
                bus.events.clone(),
                contract::TOPIC,
                GROUP,
                Projector::new(self.state.store.clone()).handler(applied),
                shutdown.clone(),
            ))
        });
        let served = self.server.run_until_stopped(shutdown).await;
        if let Some(projector) = projector {
            let _ = projector.await;
        }
        served
    }
}
