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
use zocalo_bus::{Bus, WorkerOptions};
use zocalo_contracts::cinema as contract;
use zocalo_http::auth::{KeySource, TokenVerifier};
use zocalo_http::server::Server;
use zocalo_notify::{WebhookSender, WebhookSettings};
use zocalo_objects::{ObjectStore, ObjectsSettings};
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
    /// Where ticket PDFs are kept (`tickets/<purchase_id>.pdf`).
    pub objects: ObjectsSettings,
    /// The email sender: `log:`, `file:///dir`, `smtp://host:port`,
    /// `smtps://user:password@host:465`.
    pub mail_url: String,
    pub mail_from: String,
    /// Offset from UTC of the times printed on tickets and in emails, in
    /// minutes (cinemas keep no time zone of their own).
    pub ticket_utc_offset_min: i32,
    /// Delivery of outbound webhooks: timeout, attempts, backoff.
    pub webhooks: WebhookSettings,
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
            objects: ObjectsSettings::default(),
            mail_url: "log:".into(),
            mail_from: "Zócalo Cinemas <tickets@zocalo.invalid>".into(),
            ticket_utc_offset_min: 0,
            webhooks: WebhookSettings::default(),
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

    /// The offset ticket times are printed at.
    pub fn ticket_offset(&self) -> anyhow::Result<chrono::FixedOffset> {
        chrono::FixedOffset::east_opt(self.ticket_utc_offset_min.saturating_mul(60))
            .ok_or_else(|| anyhow::anyhow!("ticket_utc_offset_min must be within ±1439 minutes"))
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
    /// Where ticket PDFs are read from.
    pub objects: Arc<dyn ObjectStore>,
    /// Whether webhook URLs may name private addresses.
    pub allow_private_webhooks: bool,
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
            objects: background.tickets.objects.clone(),
            allow_private_webhooks: settings.webhooks.allow_private_targets,
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

/// The outbox relay, the sweeper of expired holds, the ticket documents
/// job and the webhook fan-out and deliveries. All are safe to run in
/// several processes at once: the relay claims rows, the sweeper's
/// transitions are conditional, jobs and events go to one consumer each.
pub struct Worker {
    store: Arc<dyn CinemaStore>,
    payments: Arc<dyn PaymentProcessor>,
    bus: Bus,
    relay_wake: Arc<Notify>,
    relay_interval: Duration,
    sweep_interval: Duration,
    tickets: Arc<crate::tickets::TicketsWorker>,
    webhooks: WebhookSettings,
    webhook_sender: WebhookSender,
}

impl Worker {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store = store::open(&settings.database()).await?;
        let bus = zocalo_bus::connect(&settings.bus_url).await?;
        let relay_wake = Arc::new(Notify::new());
        let tickets = Arc::new(crate::tickets::TicketsWorker {
            store: store.clone(),
            objects: zocalo_objects::open(&settings.objects).await?,
            mailer: zocalo_notify::mailer(&settings.mail_url, &settings.mail_from)?,
            offset: settings.ticket_offset()?,
            relay_wake: relay_wake.clone(),
        });
        Ok(Self {
            payments: settings.payments(&store),
            store,
            bus,
            relay_wake,
            tickets,
            webhooks: settings.webhooks,
            webhook_sender: WebhookSender::new(&settings.webhooks)?,
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
            shutdown.clone(),
        );
        let tickets = zocalo_bus::run_worker(
            self.bus.jobs.clone(),
            contract::TICKETS_PDF_QUEUE,
            self.tickets.clone().handler(),
            WorkerOptions {
                concurrency: 2,
                ..WorkerOptions::default()
            },
            shutdown.clone(),
        );
        let fanout = zocalo_bus::run_subscriber(
            self.bus.events.clone(),
            contract::TOPIC,
            crate::webhooks::GROUP,
            crate::webhooks::fanout(self.store.clone(), self.bus.jobs.clone(), self.webhooks),
            shutdown.clone(),
        );
        let registry = Arc::new(crate::webhooks::StoreRegistry(self.store.clone()));
        let deliveries = zocalo_bus::run_worker(
            self.bus.jobs.clone(),
            contract::WEBHOOK_QUEUE,
            zocalo_notify::webhook::job_handler(self.webhook_sender.clone(), registry),
            self.webhooks.worker_options(),
            shutdown,
        );
        tokio::join!(relay, sweep, tickets, fanout, deliveries);
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
