//! Building and running the cinema command side: the HTTP API with its
//! outbox relay and hold sweeper ([`Application`]); the relay and the
//! sweeper alone ([`Worker`]) for `zocalo worker cinema-command`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use zocalo_bus::Bus;
use zocalo_http::auth::{KeySource, TokenVerifier};
use zocalo_http::server::Server;
use zocalo_payments::{PaymentProcessor, SimulatedProcessor};
use zocalo_store::DatabaseSettings;

use crate::domain::PurchaseStatus;
use crate::store::{self, CinemaStore};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database_url: String,
    pub database_max_connections: usize,
    /// `sqlite://…/bus.db` (embedded) or `nats://…` (JetStream).
    pub bus_url: String,
    pub jwks_url: String,
    pub issuer: String,
    pub audience: String,
    /// Minutes of cleaning after a showtime, for rooms that do not say.
    pub default_cleaning_min: u16,
    /// Currency of showtimes that do not say (ISO 4217).
    pub default_currency: String,
    /// How long a purchase may hold its seats before the card is charged
    /// and the tickets issued; a hold left by a crash is released after it.
    pub hold_ttl_secs: u32,
    /// How often expired holds are looked for.
    pub sweep_interval_ms: u64,
    pub relay_interval_ms: u64,
    /// Share of payments the simulated processor declines (0.0–1.0).
    pub payment_decline_rate: f64,
    pub payment_latency_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: "sqlite://data/cinema-command.db".into(),
            database_max_connections: 16,
            bus_url: "sqlite://data/bus.db".into(),
            jwks_url: "http://127.0.0.1:8080/.well-known/jwks.json".into(),
            issuer: "http://127.0.0.1:8080".into(),
            audience: "zocalo-api".into(),
            default_cleaning_min: 15,
            default_currency: "MXN".into(),
            hold_ttl_secs: 300,
            sweep_interval_ms: 1000,
            relay_interval_ms: 200,
            payment_decline_rate: 0.0,
            payment_latency_ms: 0,
        }
    }
}

impl Settings {
    pub fn database(&self) -> DatabaseSettings {
        DatabaseSettings {
            url: self.database_url.clone(),
            max_connections: self.database_max_connections,
            ..DatabaseSettings::default()
        }
    }

    fn payments(&self, store: &Arc<dyn CinemaStore>) -> Arc<dyn PaymentProcessor> {
        Arc::new(SimulatedProcessor::new(
            store.ledger(),
            self.payment_decline_rate,
            Duration::from_millis(self.payment_latency_ms),
        ))
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn CinemaStore>,
    pub verifier: Arc<TokenVerifier>,
    pub payments: Arc<dyn PaymentProcessor>,
    /// Wakes the outbox relay as soon as a request wrote something.
    pub relay_wake: Arc<Notify>,
    pub default_cleaning_min: u16,
    pub default_currency: String,
    pub hold_ttl: chrono::Duration,
}

impl FromRef<AppState> for Arc<TokenVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// The HTTP API, with the outbox relay and the hold sweeper beside it.
pub struct Application {
    server: Server,
    state: AppState,
    background: Worker,
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
        let background = Worker::build(settings.clone()).await?;
        let state = AppState {
            store: background.store.clone(),
            verifier,
            payments: background.payments.clone(),
            relay_wake: background.relay_wake.clone(),
            default_cleaning_min: settings.default_cleaning_min,
            default_currency: settings.default_currency.clone(),
            hold_ttl: chrono::Duration::seconds(i64::from(settings.hold_ttl_secs.max(1))),
        };
        Ok(Self {
            server: Server::bind(settings.listen, crate::routes::router(state.clone())).await?,
            state,
            background,
        })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The store this application serves, for tests and admin tasks.
    pub fn store(&self) -> Arc<dyn CinemaStore> {
        self.state.store.clone()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let stop = shutdown.child_token();
        let background = tokio::spawn(self.background.run_until_stopped(stop.clone()));
        let served = self.server.run_until_stopped(shutdown).await;
        stop.cancel();
        if let Err(error) = background.await {
            tracing::error!(%error, "cinema background tasks failed");
        }
        served
    }
}

/// The outbox relay and the sweeper of expired holds. Both are safe to run
/// in several processes at once: the relay claims rows, the sweeper's
/// transitions are conditional.
pub struct Worker {
    store: Arc<dyn CinemaStore>,
    payments: Arc<dyn PaymentProcessor>,
    bus: Bus,
    relay_wake: Arc<Notify>,
    relay_interval: Duration,
    sweep_interval: Duration,
}

impl Worker {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store = store::open(&settings.database()).await?;
        let bus = zocalo_bus::connect(&settings.bus_url).await?;
        Ok(Self {
            payments: settings.payments(&store),
            store,
            bus,
            relay_wake: Arc::new(Notify::new()),
            relay_interval: Duration::from_millis(settings.relay_interval_ms.max(10)),
            // A zero interval would spin; 10 ms is already far below need.
            sweep_interval: Duration::from_millis(settings.sweep_interval_ms.max(10)),
        })
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        let relay = zocalo_bus::outbox::run_relay_with_wake(
            self.store.outbox(),
            self.bus.clone(),
            self.relay_interval,
            self.relay_wake.clone(),
            shutdown.clone(),
        );
        let sweep = sweep_expired(
            self.store.clone(),
            self.payments.clone(),
            self.sweep_interval,
            shutdown,
        );
        tokio::join!(relay, sweep);
    }
}

/// Holds released per sweep pass.
const SWEEP_BATCH: u32 = 200;

/// Release holds past their deadline every `interval` until `stop`. A
/// crash between charging and completing leaves a captured charge behind
/// such a hold: it is refunded once the hold is expired (refunds are
/// idempotent, and the purchase can no longer complete). A failed pass is
/// logged and tried again on the next tick.
async fn sweep_expired(
    store: Arc<dyn CinemaStore>,
    payments: Arc<dyn PaymentProcessor>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match sweep_once(store.as_ref(), payments.as_ref()).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "released expired seat holds"),
            Err(error) => tracing::warn!(%error, "seat hold sweep failed"),
        }
    }
}

/// One pass of the sweeper; how many holds it released.
pub async fn sweep_once(
    store: &dyn CinemaStore,
    payments: &dyn PaymentProcessor,
) -> Result<u64, zocalo_store::StoreError> {
    let now = chrono::Utc::now();
    let mut released = 0;
    for id in store.expired_holds(now, SWEEP_BATCH).await? {
        if store
            .release(id, PurchaseStatus::Expired.as_str(), now)
            .await?
        {
            payments.refund(id).await?;
            released += 1;
            metrics::counter!("cinema_hold_expiries_total").increment(1);
        }
    }
    Ok(released)
}
