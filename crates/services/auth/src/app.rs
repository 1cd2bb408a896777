//! Building and running the auth service.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::FromRef;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use zocalo_cache::{Redis, SharedLimiter};
use zocalo_config::Secret;
use zocalo_http::auth::{KeySource, TokenVerifier};
use zocalo_http::ratelimit::{RateLimit, RateLimiter};
use zocalo_http::server::Server;
use zocalo_store::DatabaseSettings;

use crate::keys::KeyRing;
use crate::store::{self, AuthStore};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub listen: SocketAddr,
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    pub database_read_url: Option<String>,
    /// More read replicas; reads fall back to the primary when none is healthy.
    pub database_read_urls: Vec<String>,
    pub database_max_connections: usize,
    /// The `iss` of every token and of the RFC 8414 metadata.
    pub issuer: String,
    /// The `aud` of access tokens.
    pub audience: String,
    /// The URL clients reach us at (through the gateway), for the metadata.
    pub public_url: String,
    pub access_ttl_secs: i64,
    pub refresh_ttl_secs: i64,
    pub login_per_account: RateLimit,
    pub login_per_ip: RateLimit,
    /// Count the login limits in this Redis (`redis://host:6379`) so that
    /// all auth instances share one budget per account and per IP; without
    /// it each instance counts on its own. While Redis is down or slow,
    /// each instance falls back to counting on its own (never refusing
    /// because of Redis).
    pub redis_url: Option<String>,
    /// Namespace of the auth service's Redis keys, for several deployments
    /// sharing one Redis.
    pub redis_key_prefix: String,
    /// Peers whose `X-Forwarded-For` we believe (loopback always is).
    pub trusted_proxies: Vec<IpAddr>,
    /// Service clients created (or updated) at start, so services can use
    /// the client_credentials grant without an admin registering them.
    pub clients: Vec<ClientSeed>,
}

/// A service client declared in configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientSeed {
    pub client_id: String,
    pub client_secret: Secret,
    pub name: String,
    pub roles: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: "sqlite://data/auth.db".into(),
            database_read_url: None,
            database_read_urls: Vec::new(),
            database_max_connections: 16,
            issuer: "http://127.0.0.1:8080".into(),
            audience: "zocalo-api".into(),
            public_url: "http://127.0.0.1:8080".into(),
            access_ttl_secs: 15 * 60,
            refresh_ttl_secs: 30 * 24 * 3600,
            login_per_account: RateLimit {
                per_second: 0.2,
                burst: 10,
            },
            login_per_ip: RateLimit {
                per_second: 5.0,
                burst: 50,
            },
            redis_url: None,
            redis_key_prefix: "zocalo:auth:".into(),
            trusted_proxies: Vec::new(),
            clients: Vec::new(),
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

/// The account that `ZOCALO_ADMIN_EMAIL` / `ZOCALO_ADMIN_PASSWORD` create.
#[derive(Clone)]
pub struct AdminBootstrap {
    pub email: String,
    pub password: String,
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn AuthStore>,
    pub keys: Arc<KeyRing>,
    pub verifier: Arc<TokenVerifier>,
    pub settings: Arc<Settings>,
    pub login_by_account: Arc<RateLimiter>,
    pub login_by_ip: Arc<RateLimiter>,
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
    pub async fn build(settings: Settings, admin: Option<AdminBootstrap>) -> anyhow::Result<Self> {
        let store = store::open(&settings.database()).await?;
        let state = state(settings, store).await?;
        if let Some(admin) = admin {
            crate::routes::ensure_admin(&state, admin).await?;
        }
        for seed in &state.settings.clients {
            crate::routes::seed_client(&state, seed).await?;
        }
        Ok(Self {
            server: Server::bind(state.settings.listen, crate::routes::router(state)).await?,
        })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        self.server.run_until_stopped(shutdown).await
    }
}

async fn state(settings: Settings, store: Arc<dyn AuthStore>) -> anyhow::Result<AppState> {
    let keys = KeyRing::load(store.as_ref()).await?;
    let verifier = TokenVerifier::new(
        KeySource::Static(keys.jwks().await),
        &settings.issuer,
        &settings.audience,
    );
    let (login_by_account, login_by_ip) = login_limiters(&settings)?;
    Ok(AppState {
        login_by_account: Arc::new(login_by_account),
        login_by_ip: Arc::new(login_by_ip),
        store,
        keys: Arc::new(keys),
        verifier,
        settings: Arc::new(settings),
    })
}

/// The per-account and per-IP login limiters, counting in Redis when
/// `redis_url` is set. They share one Redis handle but not a key space: an
/// email and an IP address never name the same budget.
fn login_limiters(settings: &Settings) -> anyhow::Result<(RateLimiter, RateLimiter)> {
    let redis = settings
        .redis_url
        .as_deref()
        .map(Redis::new)
        .transpose()
        .context("auth.redis_url")?;
    let shared = |kind: &str| {
        let prefix = format!("{}login:{kind}:", settings.redis_key_prefix);
        redis.clone().map(|redis| SharedLimiter::new(redis, prefix))
    };
    Ok((
        RateLimiter::new(Some(settings.login_per_account), shared("account")),
        RateLimiter::new(Some(settings.login_per_ip), shared("ip")),
    ))
}
