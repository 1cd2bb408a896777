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

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zocalo_testkit::{Backend, database};

use super::breaker_outage::{nats_url, unique_bucket};
use super::distributed::{Served, deployment_env, with};
use super::{access, free_port, tempfile_dir, zocalo};

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

/// `zocalo worker orders`: it serves nothing, so it is ready once it says
/// it runs. Killed on drop.
struct OrdersWorker {
    child: Child,
    _data: tempfile_dir::Dir,
}

impl OrdersWorker {
    fn start(env: &[(String, String)]) -> Self {
        let data = tempfile_dir::Dir::new();
        let mut child = zocalo()
            .args(["worker", "orders"])
            .env("ZOCALO_DATA_DIR", &data.0)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn zocalo worker");
        let stdout = child.stdout.take().unwrap();
        // Owned from here on, so a failed start still reaps the process.
        let worker = Self { child, _data: data };
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .expect("zocalo worker orders said it runs");
            if line.ends_with("worker running") {
                return worker;
            }
        }
    }
}

impl Drop for OrdersWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let placed = http
        .post(format!("{gateway}/api/orders"))
        .bearer_auth(access(buyer))
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(&json!({
            "items": [{"book_id": book, "quantity": 1}],
            "shipping_address": "Calle Falsa 123, Springfield",
            "provider": "dhl",
            "card": "4242 4242 4242 4242"
        }))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let status = placed.status();
    let body: Value = placed.json().await.unwrap_or_default();
    assert_eq!(status, 202, "order accepted: {body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn order_status(http: &reqwest::Client, gateway: &str, buyer: &Value, order: &str) -> Value {
    http.get(format!("{gateway}/api/orders/{order}"))
        .bearer_auth(access(buyer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_placed_while_nats_is_down_are_all_delivered_and_charged_once() {
    let Some(discovery_nats) = nats_url() else {
        return;
    };
    let Some(orders_db) = database(Backend::Postgres).await else {
        eprintln!("ZOCALO_TEST_POSTGRES_URL is unset: failure test not run");
        return;
    };
    let Some(mut bus) = NatsProcess::start() else {
        return;
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
            // Slow enough that NATS dies while cards are being charged: the
            // charges finish during the outage and their acks are lost.
            ("ZOCALO_ORDERS__PAYMENT_LATENCY_MS", "1500".into()),
            // A job whose ack was lost in the outage comes back soon.
            ("ZOCALO_ORDERS__JOB_VISIBILITY_MS", "3000".into()),
        ],
    );
    let _orders = Served::start("orders", &orders_env);
    let _worker = OrdersWorker::start(&orders_env);
    let _gateway = Served::start(
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
    // Discovery may take a moment to show every service to the gateway.
    let deadline = Instant::now() + Duration::from_secs(20);
    let seller = loop {
        let registered = http
            .post(format!("{gateway}/auth/register"))
            .json(
                &json!({"email": "sam@example.com", "password": "a-good-password", "name": "Sam"}),
            )
            .send()
            .await
            .unwrap();
        if registered.status() == 201 {
            break super::login_at(&http, &gateway, "sam@example.com", "a-good-password").await;
        }
        assert!(Instant::now() < deadline, "the gateway never reached auth");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let buyer = super::register_and_login_at(&http, &gateway, "bea@example.com").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let book: Value = loop {
        let listed = http
            .post(format!("{gateway}/api/books"))
            .bearer_auth(access(&seller))
            .json(&json!({
                "title": "Ficciones", "author": "Jorge Luis Borges", "isbn": "9780802130303",
                "description": "Grove Press paperback.", "condition": "good",
                "price": {"amount": "12.00", "currency": "USD"}, "stock": 10
            }))
            .send()
            .await
            .unwrap();
        if listed.status() == 201 {
            break listed.json().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never reached catalog"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let book = book["id"].as_str().unwrap().to_owned();

    // Orders before the outage; NATS dies while the first is being paid.
    let mut orders = Vec::new();
    for _ in 0..3 {
        orders.push(place_order(&http, &gateway, &buyer, &book).await);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let current = order_status(&http, &gateway, &buyer, &orders[0]).await;
        if current["status"] == "reserved" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first order never reached payment: {current}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bus.kill();
    // The API keeps accepting orders: they wait in its outbox.
    for _ in 0..3 {
        orders.push(place_order(&http, &gateway, &buyer, &book).await);
    }
    // Longer than the NATS client's reconnect backoff grows to, so the
    // clients are in their slowest retry cadence when the server returns.
    tokio::time::sleep(OUTAGE).await;
    // Nothing moved them on meanwhile: the saga really needs the bus.
    for order in &orders[3..] {
        let current = order_status(&http, &gateway, &buyer, order).await;
        assert_ne!(current["status"], "delivered", "no bus, no saga: {current}");
    }
    bus.restart();

    let deadline = Instant::now() + SETTLE;
    for order in &orders {
        loop {
            let current = order_status(&http, &gateway, &buyer, order).await;
            if current["status"] == "delivered" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "order {order} not delivered within {SETTLE:?} of NATS returning: {current}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let store = zocalo_orders::store::open(&zocalo_store::DatabaseSettings {
        url: orders_db.url.clone(),
        read_url: None,
        max_connections: 1,
    })
    .await
    .unwrap();
    for order in &orders {
        assert_eq!(
            store.charges(order.parse().unwrap()).await.unwrap(),
            ["captured"],
            "order {order} charged exactly once"
        );
    }
    let stock: Value = http
        .get(format!("{gateway}/api/books/{book}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stock["stock"], 10 - orders.len(), "one copy per order");
    // Every `order.paid` event reached the sales projection, once.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sales: Value = http
            .get(format!("{gateway}/api/sales?limit=100"))
            .bearer_auth(access(&seller))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let count = sales.as_array().map_or(0, Vec::len);
        assert!(count <= orders.len(), "a sale projected twice: {sales}");
        if count == orders.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{count} of {} sales projected",
            orders.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
