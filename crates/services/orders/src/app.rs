//! Building and running the orders service: the HTTP API with its outbox
//! relay ([`Application`]) and the job and event consumers ([`Worker`]),
//! which `zocalo up` runs together and `zocalo worker orders` runs alone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use zocalo_bus::{Bus, EventHandler, JobError, JobHandler, WorkerOptions};
use zocalo_config::Secret;
use zocalo_contracts::orders::{self as contract, OrderJob, OrderPaid};
use zocalo_http::auth::{KeySource, TokenVerifier};
use zocalo_http::balance::InvalidEndpoint;
use zocalo_http::client::{ClientSettings, ServiceClient};
use zocalo_http::server::Server;
use zocalo_http::service_auth::{ServiceAuth, auth_client};
use zocalo_store::DatabaseSettings;

use crate::catalog::CatalogClient;
use crate::payment::SimulatedProcessor;
use crate::saga::Saga;
use crate::store::{self, OrdersStore};

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
    pub jwks_url: String,
    pub issuer: String,
    pub audience: String,
    /// The catalog's own address (its internal API is not behind the
    /// gateway). With a discovery source, the discovered `catalog`
    /// instances replace it.
    pub catalog_url: String,
    /// Where to get a service token (`client_credentials`). With a
    /// discovery source, its path is asked of the discovered `auth`
    /// instances.
    pub token_url: String,
    /// Balancing, breakers, retries and timeouts of the calls to catalog
    /// and auth.
    pub outgoing: ClientSettings,
    pub client_id: String,
    pub client_secret: Secret,
    /// Share of payments the simulated processor declines (0.0–1.0).
    pub payment_decline_rate: f64,
    pub payment_latency_ms: u64,
    /// Time between shipment steps (label → in transit → delivered).
    pub shipping_step_ms: u64,
    pub reservation_ttl_secs: u32,
    pub relay_interval_ms: u64,
    pub worker_concurrency: usize,
    /// How long a job a worker took stays hidden from the others: if that
    /// worker dies, the job runs again after this long. Longer than the
    /// slowest step (payment latency included).
    pub job_visibility_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: "sqlite://data/orders.db".into(),
            database_read_url: None,
            database_read_urls: Vec::new(),
            database_max_connections: 16,
            bus_url: "sqlite://data/bus.db".into(),
            jwks_url: "http://127.0.0.1:8080/.well-known/jwks.json".into(),
            issuer: "http://127.0.0.1:8080".into(),
            audience: "zocalo-api".into(),
            catalog_url: "http://127.0.0.1:8080".into(),
            token_url: "http://127.0.0.1:8080/auth/token".into(),
            outgoing: ClientSettings::default(),
            client_id: "orders".into(),
            client_secret: Secret::default(),
            payment_decline_rate: 0.0,
            payment_latency_ms: 0,
            shipping_step_ms: 5_000,
            reservation_ttl_secs: 900,
            relay_interval_ms: 200,
            worker_concurrency: 4,
            job_visibility_ms: 30_000,
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

    /// Clients for the services the worker calls, over the configured
    /// static addresses (follow discovery on them to replace those).
    pub fn clients(&self) -> anyhow::Result<Clients> {
        let catalog = ServiceClient::with_instances(
            "catalog",
            std::slice::from_ref(&self.catalog_url),
            &self.outgoing,
        )
        .map_err(|e| anyhow::anyhow!("key `orders.catalog_url`: {e}"))?;
        let auth = auth_client(&self.token_url, &self.outgoing).map_err(token_url_error)?;
        Ok(Clients { catalog, auth })
    }

    /// Service tokens from the token path of `token_url`, asked of `auth`.
    fn service_auth(&self, auth: ServiceClient) -> anyhow::Result<ServiceAuth> {
        ServiceAuth::client_credentials_at(
            auth,
            &self.token_url,
            self.client_id.clone(),
            self.client_secret.expose().to_owned(),
        )
        .map_err(token_url_error)
    }
}

fn token_url_error(error: InvalidEndpoint) -> anyhow::Error {
    anyhow::anyhow!("key `orders.token_url`: {error}")
}

/// The services the orders worker calls, each balanced over its instances.
#[derive(Debug, Clone)]
pub struct Clients {
    pub catalog: ServiceClient,
    pub auth: ServiceClient,
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn OrdersStore>,
    pub verifier: Arc<TokenVerifier>,
    /// Wakes the outbox relay as soon as a request wrote something.
    pub relay_wake: Arc<Notify>,
}

impl FromRef<AppState> for Arc<TokenVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// The HTTP API and the outbox relay.
pub struct Application {
    server: Server,
    state: AppState,
    bus: Bus,
    relay_interval: Duration,
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
        let bus = zocalo_bus::connect(&settings.bus_url).await?;
        let state = AppState {
            store,
            verifier,
            relay_wake: Arc::new(Notify::new()),
        };
        Ok(Self {
            server: Server::bind(settings.listen, crate::routes::router(state.clone())).await?,
            state,
            bus,
            relay_interval: Duration::from_millis(settings.relay_interval_ms.max(10)),
        })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let relay = tokio::spawn(zocalo_bus::outbox::run_relay_with_wake(
            self.state.store.outbox(),
            self.bus.clone(),
            self.relay_interval,
            self.state.relay_wake.clone(),
            shutdown.clone(),
        ));
        let served = self.server.run_until_stopped(shutdown).await;
        let _ = relay.await;
        served
    }
}

/// The job consumers (saga, shipping) and the sales projection.
pub struct Worker {
    saga: Arc<Saga>,
    bus: Bus,
    options: WorkerOptions,
}

impl Worker {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let clients = settings.clients()?;
        Self::build_with_clients(settings, clients).await
    }

    /// Build with the given clients (following discovery, say).
    pub async fn build_with_clients(settings: Settings, clients: Clients) -> anyhow::Result<Self> {
        let auth = settings.service_auth(clients.auth)?;
        Self::build_with(settings, clients.catalog, auth).await
    }

    /// Build with a fixed service token (tests).
    pub async fn build_with_auth(settings: Settings, auth: ServiceAuth) -> anyhow::Result<Self> {
        let catalog = settings.clients()?.catalog;
        Self::build_with(settings, catalog, auth).await
    }

    /// Build calling the catalog through `catalog`, authenticated by `auth`.
    pub async fn build_with(
        settings: Settings,
        catalog: ServiceClient,
        auth: ServiceAuth,
    ) -> anyhow::Result<Self> {
        let store = store::open(&settings.database()).await?;
        let bus = zocalo_bus::connect(&settings.bus_url).await?;
        let payments = Arc::new(SimulatedProcessor::new(
            store.ledger(),
            settings.payment_decline_rate,
            Duration::from_millis(settings.payment_latency_ms),
        ));
        let saga = Arc::new(Saga {
            store,
            catalog: CatalogClient::new(catalog, auth),
            payments,
            reservation_ttl_secs: settings.reservation_ttl_secs,
            shipping_step: Duration::from_millis(settings.shipping_step_ms),
        });
        let options = WorkerOptions {
            concurrency: settings.worker_concurrency.max(1),
            visibility: Duration::from_millis(settings.job_visibility_ms.max(100)),
            ..WorkerOptions::default()
        };
        Ok(Self { saga, bus, options })
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        let options = self.options;
        let process = zocalo_bus::run_worker(
            self.bus.jobs.clone(),
            contract::PROCESS_QUEUE,
            job_handler(self.saga.clone(), |saga, id| {
                async move { saga.process(id).await }.boxed()
            }),
            options,
            shutdown.clone(),
        );
        let shipping = zocalo_bus::run_worker(
            self.bus.jobs.clone(),
            contract::SHIPPING_QUEUE,
            job_handler(self.saga.clone(), |saga, id| {
                async move { saga.advance_shipping(id).await }.boxed()
            }),
            options,
            shutdown.clone(),
        );
        let sales = zocalo_bus::run_subscriber(
            self.bus.events.clone(),
            contract::TOPIC,
            "orders-sales",
            sales_handler(self.saga.clone()),
            shutdown.clone(),
        );
        tokio::join!(process, shipping, sales);
    }
}

type Step =
    fn(Arc<Saga>, uuid::Uuid) -> futures_util::future::BoxFuture<'static, Result<(), JobError>>;

fn job_handler(saga: Arc<Saga>, step: Step) -> JobHandler {
    Arc::new(move |job| {
        let saga = saga.clone();
        match serde_json::from_value::<OrderJob>(job.payload) {
            Ok(payload) => step(saga, payload.order_id),
            Err(error) => {
                async move { Err(JobError::Fatal(format!("unreadable job: {error}"))) }.boxed()
            }
        }
    })
}

/// Sellers' view: each `order.paid` adds its lines once, whatever the number
/// of deliveries.
fn sales_handler(saga: Arc<Saga>) -> EventHandler {
    Arc::new(move |event| {
        let store = saga.store.clone();
        async move {
            if event.kind != contract::ORDER_PAID {
                return Ok(());
            }
            let paid: OrderPaid = serde_json::from_value(event.payload)
                .map_err(|e| JobError::Fatal(format!("unreadable order.paid: {e}")))?;
            store
                .record_sale(event.id, &paid)
                .await
                .map(|_| ())
                .map_err(|e| JobError::Retry(e.to_string()))
        }
        .boxed()
    })
}
