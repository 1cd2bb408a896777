use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use zocalo_http::client::ServiceClient;
use zocalo_orders::ServiceAuth;
use zocalo_testkit::{Backend, Client, TestDatabase, TestTokens};

pub struct BookStore {
    pub catalog: Client,
    pub catalog_url: String,
    catalog_settings: zocalo_catalog::Settings,
    /// Two instances of the orders API over one database and bus.
    pub orders: [Client; 2],
    pub tokens: TestTokens,
    pub orders_settings: zocalo_orders::Settings,
    pub seller: (Uuid, String),
    shutdown: CancellationToken,
    _catalog_db: TestDatabase,
    _orders_db: TestDatabase,
    _bus: tempfile::TempDir,
}

impl Drop for BookStore {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub struct Options {
    /// Use NATS JetStream (`ZOCALO_TEST_NATS_URL`) as the bus instead of a
    /// SQLite file.
    pub nats: bool,
    pub workers: usize,
    pub start_apis: bool,
    pub tweak: fn(&mut zocalo_orders::Settings),
}

impl Options {
    /// Shipping waits a minute, so paid orders stay `paid` (their copies
    /// sold, the parcel not yet gone) for as long as a test needs.
    pub fn slow_shipping() -> Self {
        Self {
            tweak: |s| s.shipping_step_ms = 60_000,
            ..Self::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nats: false,
            workers: 2,
            start_apis: true,
            tweak: |_| {},
        }
    }
}

impl BookStore {
    pub async fn start(backend: Backend, options: Options) -> Self {
        let tokens = TestTokens::new();
        let shutdown = CancellationToken::new();
        let catalog_db = zocalo_testkit::database(backend).await.unwrap();
        let orders_db = zocalo_testkit::database(backend).await.unwrap();
        let bus = tempfile::tempdir().unwrap();

        let catalog_settings = zocalo_catalog::Settings {
            database_url: catalog_db.url.clone(),
            database_max_connections: 8,
            issuer: zocalo_testkit::ISSUER.into(),
            audience: zocalo_testkit::AUDIENCE.into(),
            sweep_interval_ms: 100,
            ..zocalo_catalog::Settings::default()
        };
        let catalog =
            zocalo_catalog::Application::build_with_keys(catalog_settings.clone(), tokens.jwks())
                .await
                .unwrap();
        let catalog_url = format!("http://127.0.0.1:{}", catalog.port());
        let catalog_client = Client::new(catalog_url.clone());
        tokio::spawn(catalog.run_until_stopped(shutdown.clone()));

        let mut orders_settings = zocalo_orders::Settings {
            database_url: orders_db.url.clone(),
            database_max_connections: 16,
            bus_url: format!("sqlite://{}", bus.path().join("bus.db").display()),
            issuer: zocalo_testkit::ISSUER.into(),
            audience: zocalo_testkit::AUDIENCE.into(),
            catalog_url: catalog_url.clone(),
            shipping_step_ms: 50,
            relay_interval_ms: 50,
            worker_concurrency: 4,
            ..zocalo_orders::Settings::default()
        };
        if options.nats {
            let nats = std::env::var("ZOCALO_TEST_NATS_URL").expect("ZOCALO_TEST_NATS_URL");
            // Streams of their own, so parallel tests never share messages.
            orders_settings.bus_url = format!("{nats}?prefix=bs{}", Uuid::new_v4().simple());
        }
        (options.tweak)(&mut orders_settings);

        let mut orders = Vec::new();
        for _ in 0..2 {
            let app =
                zocalo_orders::Application::build_with_keys(orders_settings.clone(), tokens.jwks())
                    .await
                    .unwrap();
            orders.push(Client::new(format!("http://127.0.0.1:{}", app.port())));
            if options.start_apis {
                tokio::spawn(app.run_until_stopped(shutdown.clone()));
            }
        }
        let store = Self {
            catalog: catalog_client,
            catalog_url,
            catalog_settings,
            orders: [orders[0].clone(), orders[1].clone()],
            seller: {
                let id = Uuid::now_v7();
                (id, tokens.token(&id.to_string(), &[]))
            },
            tokens,
            orders_settings,
            shutdown,
            _catalog_db: catalog_db,
            _orders_db: orders_db,
            _bus: bus,
        };
        for _ in 0..options.workers {
            store.start_worker().await;
        }
        store
    }

    pub fn service_token(&self) -> String {
        self.tokens.token_with(
            "client:orders",
            &["service"],
            zocalo_testkit::AUDIENCE,
            3600,
        )
    }

    pub async fn start_worker(&self) {
        let worker = zocalo_orders::Worker::build_with_auth(
            self.orders_settings.clone(),
            ServiceAuth::Static(self.service_token()),
        )
        .await
        .unwrap();
        tokio::spawn(worker.run_until_stopped(self.shutdown.clone()));
    }

    /// A worker calling the catalog through `catalog` (several instances,
    /// say) instead of the configured `catalog_url`.
    pub async fn start_worker_calling(&self, catalog: ServiceClient) {
        let worker = zocalo_orders::Worker::build_with(
            self.orders_settings.clone(),
            catalog,
            ServiceAuth::Static(self.service_token()),
        )
        .await
        .unwrap();
        tokio::spawn(worker.run_until_stopped(self.shutdown.clone()));
    }

    /// Another catalog instance over the same database; cancelling `stop`
    /// shuts it down, and the handle ends when it has.
    pub async fn start_catalog_instance(
        &self,
        stop: CancellationToken,
    ) -> (String, JoinHandle<std::io::Result<()>>) {
        let catalog = zocalo_catalog::Application::build_with_keys(
            self.catalog_settings.clone(),
            self.tokens.jwks(),
        )
        .await
        .unwrap();
        let url = format!("http://127.0.0.1:{}", catalog.port());
        (url, tokio::spawn(catalog.run_until_stopped(stop)))
    }

    /// Start an orders API over the same database (a restart after a crash).
    pub async fn start_orders_api(&self) -> Client {
        let app = zocalo_orders::Application::build_with_keys(
            self.orders_settings.clone(),
            self.tokens.jwks(),
        )
        .await
        .unwrap();
        let client = Client::new(format!("http://127.0.0.1:{}", app.port()));
        tokio::spawn(app.run_until_stopped(self.shutdown.clone()));
        client
    }

    pub fn buyer(&self) -> (Uuid, String) {
        let id = Uuid::now_v7();
        (id, self.tokens.token(&id.to_string(), &[]))
    }

    pub async fn list_book(&self, title: &str, stock: u32) -> Uuid {
        let response = self
            .catalog
            .post("/api/books")
            .bearer_auth(&self.seller.1)
            .json(&json!({
                "title": title, "author": "Julio Cortázar", "isbn": "9780394752846",
                "description": "Second-hand, good condition.", "condition": "good",
                "price": {"amount": "9.99", "currency": "USD"}, "stock": stock
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            201,
            "{}",
            response.text().await.unwrap_or_default()
        );
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().parse().unwrap()
    }

    pub async fn stock(&self, book: Uuid) -> i64 {
        let body: Value = self
            .catalog
            .get(&format!("/api/books/{book}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["stock"].as_i64().unwrap()
    }

    /// Place an order the way a careful client does: on 503 (the service
    /// shedding load) retry with the same Idempotency-Key, which can never
    /// order twice. Bounded: ten tries.
    pub async fn place_order(
        &self,
        instance: usize,
        token: &str,
        key: &str,
        book: Uuid,
        quantity: u32,
        card: &str,
    ) -> Value {
        let body = json!({
            "items": [{"book_id": book, "quantity": quantity}],
            "shipping_address": "Carrera 7 #32-16, Bogotá",
            "provider": "envia",
            "card": card
        });
        for attempt in 0..10 {
            let response = self.orders[(instance + attempt) % 2]
                .post("/api/orders")
                .bearer_auth(token)
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            if response.status() == 503 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            assert_eq!(response.status(), 202);
            return response.json().await.unwrap();
        }
        panic!("the order was refused ten times with 503");
    }

    pub async fn order(&self, token: &str, id: &str) -> Value {
        order_at(&self.orders[0], token, id).await
    }

    /// Poll until the order's status is one of `statuses` (at most 30 s).
    pub async fn wait_for(&self, token: &str, id: &str, statuses: &[&str]) -> Value {
        wait_for_at(&self.orders[0], token, id, statuses).await
    }

    pub async fn charges(&self, order: Uuid) -> Vec<String> {
        let store = zocalo_orders::store::open(&self.orders_settings.database())
            .await
            .unwrap();
        store.ledger().charges(order).await.unwrap()
    }
}

/// The id of a resource (an order, a book) in its JSON answer.
pub fn id(resource: &Value) -> String {
    resource["id"].as_str().unwrap().to_owned()
}

pub async fn order_at(api: &Client, token: &str, id: &str) -> Value {
    api.get(&format!("/api/orders/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Poll `api` until the order's status is one of `statuses` (at most 30 s).
pub async fn wait_for_at(api: &Client, token: &str, id: &str, statuses: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let order = order_at(api, token, id).await;
        if statuses.contains(&order["status"].as_str().unwrap_or_default()) {
            return order;
        }
        assert!(Instant::now() < deadline, "order {id} stuck in {order}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
