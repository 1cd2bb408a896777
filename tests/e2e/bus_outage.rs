//! NATS down while books are being bought: the book-store saga in
//! distributed mode (`zocalo serve auth|catalog|orders|gateway` and
//! `zocalo worker orders`) with its jobs and events on a private
//! `nats-server`. The server is killed after some orders are placed, more
//! orders are placed while it is down (the orders API only writes its
//! outbox), and it is restarted on the same port and storage directory.
//! Every order must then be delivered, charged exactly once, and projected
//! into the seller's sales exactly once: no job or event lost or doubled.
//!
//! Discovery runs on the shared NATS server, so the outage touches only
//! the bus.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zocalo_testkit::{Backend, database};

use super::distributed::{Served, deployment_env, with};
use super::support::{accepted_order, eventually, json, nats_url, one_copy_order, unique_bucket};
use super::{access, free_port, tempfile_dir};

/// How long every order gets to reach its final state once NATS is back.
const SETTLE: Duration = Duration::from_secs(60);

/// How long NATS stays down.
const OUTAGE: Duration = Duration::from_secs(8);

/// Where `nats-server` is installed on the test machines.
const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// A private JetStream server on a loopback port, its storage in a
/// directory that outlives restarts; killed on drop.
struct NatsProcess {
    port: u16,
    store: tempfile_dir::Dir,
    child: Option<Child>,
}

impl NatsProcess {
    /// `None` (with the reason printed) when `nats-server` is missing.
    fn start() -> Option<Self> {
        let mut process = Self {
            port: free_port(),
            store: tempfile_dir::Dir::new(),
            child: None,
        };
        if let Err(error) = process.spawn() {
            eprintln!("skipping: cannot run {NATS_SERVER}: {error}");
            return None;
        }
        Some(process)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: an outage, not a clean shutdown.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port and storage: what JetStream had
    /// persisted is back.
    fn restart(&mut self) {
        self.kill();
        self.spawn().expect("nats-server restarts");
    }

    /// Start again on the same port with empty storage, as a replacement
    /// server without the old one's volume.
    fn restart_empty(&mut self) {
        self.kill();
        self.store = tempfile_dir::Dir::new();
        self.spawn().expect("nats-server restarts");
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new(NATS_SERVER)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(&self.store.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on port {} within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for NatsProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Settings every process reads: the orders service's client credentials,
/// declared to auth (lists do not fit in environment variables).
fn write_config(dir: &std::path::Path) -> String {
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let path = dir.join("zocalo.toml");
    std::fs::write(
        &path,
        format!(
            "[orders]\nclient_secret = \"{secret}\"\n\n[[auth.clients]]\nclient_id = \"orders\"\n\
             client_secret = \"{secret}\"\nname = \"orders\"\nroles = [\"service\"]\n"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// Place one order for one copy of `book`, under its own Idempotency-Key.
async fn place_order(http: &reqwest::Client, gateway: &str, buyer: &Value, book: &str) -> String {
    let order = accepted_order(
        http.post(format!("{gateway}/api/orders"))
            .bearer_auth(access(buyer))
            .header("idempotency-key", uuid::Uuid::new_v4().to_string())
            .json(&one_copy_order(
                book,
                "Calle Falsa 123, Springfield",
                "dhl",
                "4242 4242 4242 4242",
            ))
            .timeout(Duration::from_secs(10)),
    )
    .await;
    order["id"].as_str().unwrap().to_owned()
}

async fn order_status(http: &reqwest::Client, gateway: &str, buyer: &Value, order: &str) -> Value {
    json(
        http.get(format!("{gateway}/api/orders/{order}"))
            .bearer_auth(access(buyer)),
    )
    .await
}

/// The book store deployed against a private bus, with a seller, a buyer
/// and one listed book (10 copies).
struct Shop {
    http: reqwest::Client,
    gateway: String,
    seller: Value,
    buyer: Value,
    book: String,
    orders_db: zocalo_testkit::TestDatabase,
    _processes: (Vec<Served>, tempfile_dir::Dir),
}

impl Shop {
    /// `None` when a backend the test needs is not configured.
    async fn open(bus: &NatsProcess, payment_latency_ms: u64) -> Option<Self> {
        let discovery_nats = nats_url("failure")?;
        let Some(orders_db) = database(Backend::Postgres).await else {
            eprintln!("ZOCALO_TEST_POSTGRES_URL is unset: failure test not run");
            return None;
        };
        let config_dir = tempfile_dir::Dir::new();
        let port = free_port();
        let gateway = format!("http://127.0.0.1:{port}");
        let env = with(
            &deployment_env(&discovery_nats, &unique_bucket(), &gateway),
            &[("ZOCALO_CONFIG", write_config(&config_dir.0))],
        );
        let auth = Served::start("auth", &env);
        let jwks = format!("{}/.well-known/jwks.json", auth.url());
        let catalog = Served::start(
            "catalog",
            &with(&env, &[("ZOCALO_CATALOG__JWKS_URL", jwks.clone())]),
        );
        let orders_env = with(
            &env,
            &[
                ("ZOCALO_ORDERS__DATABASE_URL", orders_db.url.clone()),
                ("ZOCALO_ORDERS__BUS_URL", bus.url()),
                ("ZOCALO_ORDERS__JWKS_URL", jwks),
                ("ZOCALO_ORDERS__CATALOG_URL", catalog.url()),
                (
                    "ZOCALO_ORDERS__TOKEN_URL",
                    format!("{}/auth/token", auth.url()),
                ),
                ("ZOCALO_ORDERS__SHIPPING_STEP_MS", "100".into()),
                (
                    "ZOCALO_ORDERS__PAYMENT_LATENCY_MS",
                    payment_latency_ms.to_string(),
                ),
                // A job whose ack was lost in the outage comes back soon.
                ("ZOCALO_ORDERS__JOB_VISIBILITY_MS", "3000".into()),
            ],
        );
        let orders = Served::start("orders", &orders_env);
        let worker = Served::start_worker("orders", &orders_env);
        let gateway_process = Served::start(
            "gateway",
            &with(
                &env,
                &[
                    ("ZOCALO_GATEWAY__LISTEN", format!("127.0.0.1:{port}")),
                    ("ZOCALO_GATEWAY__RATE_LIMIT__PER_SECOND", "0".into()),
                ],
            ),
        );
        let http = reqwest::Client::new();
        let seller = first_account(&http, &gateway, "sam@example.com").await;
        let buyer = super::register_and_login_at(&http, &gateway, "bea@example.com").await;
        let book = list_book(&http, &gateway, &seller).await;
        Some(Self {
            http,
            gateway,
            seller,
            buyer,
            book,
            orders_db,
            _processes: (
                vec![auth, catalog, orders, worker, gateway_process],
                config_dir,
            ),
        })
    }

    async fn place_order(&self) -> String {
        place_order(&self.http, &self.gateway, &self.buyer, &self.book).await
    }

    async fn status(&self, order: &str) -> Value {
        order_status(&self.http, &self.gateway, &self.buyer, order).await
    }

    /// Wait (within `within`) until `order` has `status`.
    async fn wait_for(&self, order: &str, status: &str, within: Duration) {
        eventually(within, Duration::from_millis(100), async || {
            let current = self.status(order).await;
            if current["status"] == status {
                Ok(())
            } else {
                Err(format!(
                    "order {order} not {status} within {within:?}: {current}"
                ))
            }
        })
        .await;
    }

    /// Every order delivered, charged once, one copy each, and one sale each
    /// in the seller's projection (`sales` in all).
    async fn assert_all_completed_once(&self, orders: &[String], sales: usize) {
        let deadline = Instant::now() + SETTLE;
        for order in orders {
            self.wait_for(
                order,
                "delivered",
                deadline.saturating_duration_since(Instant::now()),
            )
            .await;
        }
        let store = zocalo_orders::store::open(&zocalo_store::DatabaseSettings {
            url: self.orders_db.url.clone(),
            max_connections: 1,
            ..Default::default()
        })
        .await
        .unwrap();
        for order in orders {
            assert_eq!(
                store
                    .ledger()
                    .charges(order.parse().unwrap())
                    .await
                    .unwrap(),
                ["captured"],
                "order {order} charged exactly once"
            );
        }
        let book = json(
            self.http
                .get(format!("{}/api/books/{}", self.gateway, self.book)),
        )
        .await;
        assert_eq!(book["stock"], 10 - sales, "one copy per order");
        // Every `order.paid` event reached the sales projection, once.
        eventually(
            Duration::from_secs(20),
            Duration::from_millis(200),
            async || {
                let listed = json(
                    self.http
                        .get(format!("{}/api/sales?limit=100", self.gateway))
                        .bearer_auth(access(&self.seller)),
                )
                .await;
                let count = listed.as_array().map_or(0, Vec::len);
                assert!(count <= sales, "a sale projected twice: {listed}");
                if count == sales {
                    Ok(())
                } else {
                    Err(format!("{count} of {sales} sales projected"))
                }
            },
        )
        .await;
    }
}

/// Register `email` once the gateway reaches auth (discovery may take a
/// moment to show every service), and sign in.
async fn first_account(http: &reqwest::Client, gateway: &str, email: &str) -> Value {
    eventually(
        Duration::from_secs(20),
        Duration::from_millis(200),
        async || {
            let registered = http
                .post(format!("{gateway}/auth/register"))
                .json(&json!({"email": email, "password": "a-good-password", "name": email}))
                .send()
                .await
                .unwrap();
            if registered.status() == 201 {
                Ok(())
            } else {
                Err("the gateway never reached auth".to_owned())
            }
        },
    )
    .await;
    super::login_at(http, gateway, email, "a-good-password").await
}

/// List 10 copies of a book once the gateway reaches catalog.
async fn list_book(http: &reqwest::Client, gateway: &str, seller: &Value) -> String {
    eventually(
        Duration::from_secs(20),
        Duration::from_millis(200),
        async || {
            let listed = http
                .post(format!("{gateway}/api/books"))
                .bearer_auth(access(seller))
                .json(&json!({
                    "title": "Ficciones", "author": "Jorge Luis Borges", "isbn": "9780802130303",
                    "description": "Grove Press paperback.", "condition": "good",
                    "price": {"amount": "12.00", "currency": "USD"}, "stock": 10
                }))
                .send()
                .await
                .unwrap();
            if listed.status() != 201 {
                return Err("the gateway never reached catalog".to_owned());
            }
            let book: Value = listed.json().await.unwrap();
            Ok(book["id"].as_str().unwrap().to_owned())
        },
    )
    .await
}

/// Place `count` orders while NATS is down and check that none advances:
/// the API accepts them into its outbox, but the saga needs the bus.
async fn place_during_outage(shop: &Shop, count: usize) -> Vec<String> {
    let mut orders = Vec::new();
    for _ in 0..count {
        orders.push(shop.place_order().await);
    }
    // Longer than the NATS client's reconnect backoff grows to, so the
    // clients are in their slowest retry cadence when the server returns.
    tokio::time::sleep(OUTAGE).await;
    for order in &orders {
        let current = shop.status(order).await;
        assert_ne!(current["status"], "delivered", "no bus, no saga: {current}");
    }
    orders
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_placed_while_nats_is_down_are_all_delivered_and_charged_once() {
    let Some(mut bus) = NatsProcess::start() else {
        return;
    };
    // Slow enough that NATS dies while a card is being charged: the charge
    // finishes during the outage and the job's ack is lost.
    let Some(shop) = Shop::open(&bus, 1500).await else {
        return;
    };
    let mut orders = Vec::new();
    for _ in 0..3 {
        orders.push(shop.place_order().await);
    }
    shop.wait_for(&orders[0], "reserved", Duration::from_secs(20))
        .await;
    bus.kill();
    orders.extend(place_during_outage(&shop, 3).await);
    bus.restart();
    shop.assert_all_completed_once(&orders, orders.len()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_back_without_its_storage_still_gets_the_outbox_through() {
    let Some(mut bus) = NatsProcess::start() else {
        return;
    };
    let Some(shop) = Shop::open(&bus, 0).await else {
        return;
    };
    // Settled before the outage: nothing of theirs is left in the streams.
    let before = [shop.place_order().await, shop.place_order().await];
    for order in &before {
        shop.wait_for(order, "delivered", SETTLE).await;
    }
    bus.kill();
    let during = place_during_outage(&shop, 3).await;
    // A new server on the same port with empty storage: the running
    // processes must declare their streams and consumers again.
    bus.restart_empty();
    shop.assert_all_completed_once(&during, before.len() + during.len())
        .await;
}
