//! Whole-stack tests: run the real `zocalo` binary as a user would and talk
//! to it only through the gateway.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod breaker_outage;
mod bus_outage;
mod cinema;
mod cinema_query;
mod deploy;
mod discovery;
mod distributed;
mod otlp;
mod process_live;
mod redis_outage;
mod replica_outage;
mod service_calls;
mod support;
mod tls;

const ADMIN_EMAIL: &str = "root@example.com";
const ADMIN_PASSWORD: &str = "root-password-1";

/// A running `zocalo up`; killed if the test fails before stopping it.
struct Stack {
    child: Child,
    base: String,
    http: reqwest::Client,
    _data: Option<tempfile_dir::Dir>,
}

mod tempfile_dir {
    /// A scratch directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);

    impl Dir {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(format!("zocalo-e2e-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn zocalo() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_zocalo"));
    command
        .env_remove("ZOCALO_CONFIG")
        .env("ZOCALO_LOG__FORMAT", "json")
        .env("ZOCALO_LOG__FILTER", "warn");
    command
}

impl Stack {
    fn start() -> Self {
        let data = tempfile_dir::Dir::new();
        let mut stack = Self::start_in(&data.0, free_port(), &[]);
        stack._data = Some(data);
        stack
    }

    /// `zocalo up` over an existing data directory (a restart), with extra
    /// environment.
    fn start_in(data: &std::path::Path, port: u16, env: &[(&str, &str)]) -> Self {
        let mut child = zocalo()
            .args(["up", "--port", &port.to_string(), "--data-dir"])
            .arg(data)
            .env("ZOCALO_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("ZOCALO_ORDERS__SHIPPING_STEP_MS", "100")
            .envs(env.iter().copied())
            .env("ZOCALO_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn zocalo up");
        let lines = support::stdout_lines(&mut child);
        let base = support::wait_for_line(&lines, "zocalo up printed where it listens", |line| {
            line.strip_prefix("gateway listening on ")
                .map(str::to_owned)
        });
        assert_eq!(base, format!("http://127.0.0.1:{port}"));
        Self {
            child,
            base,
            http: reqwest::Client::new(),
            _data: None,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn token(&self, form: &[(&str, &str)]) -> reqwest::Response {
        token_at(&self.http, &self.base, form).await
    }

    async fn login(&self, email: &str, password: &str) -> Value {
        login_at(&self.http, &self.base, email, password).await
    }

    /// SIGTERM, then wait for a clean exit.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "zocalo did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn access(tokens: &Value) -> &str {
    tokens["access_token"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_finds_what_an_editor_published() {
    let stack = Stack::start();
    let http = &stack.http;

    // An editor registers; the bootstrap admin grants the role.
    let registered = http
        .post(stack.url("/auth/register"))
        .json(&json!({"email": "eve@example.com", "password": "eve-password-1", "name": "Eve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    assert!(registered.headers().contains_key("x-request-id"));
    let eve: Value = registered.json().await.unwrap();
    let admin = stack.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let granted = http
        .put(stack.url(&format!(
            "/auth/users/{}/roles/editor",
            eve["id"].as_str().unwrap()
        )))
        .bearer_auth(access(&admin))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 200);

    // Without the role a write is refused; with it, it goes through.
    let session = stack.login("eve@example.com", "eve-password-1").await;
    let camera = http
        .post(stack.url("/api/cameras"))
        .bearer_auth(access(&session))
        .json(&json!({"brand": "Hasselblad", "model": "X2D", "sensor": "medium format", "megapixels": 100.0, "released": 2022}))
        .send()
        .await
        .unwrap();
    assert_eq!(camera.status(), 201);
    let camera: Value = camera.json().await.unwrap();
    let review = http
        .post(stack.url("/api/reviews"))
        .bearer_auth(access(&session))
        .json(&json!({"title": "A hundred megapixels", "content": "Colour science that justifies the weight.", "rating": 5, "camera_id": camera["id"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(review.status(), 201);
    let review: Value = review.json().await.unwrap();

    // A reader with no account reads, searches and compares.
    let read = support::json(
        http.get(stack.url(&format!("/api/content/{}", review["id"].as_str().unwrap()))),
    )
    .await;
    assert_eq!(read["editor_name"], "Eve");
    let found = support::json(http.get(stack.url("/api/content?q=colour%20weight"))).await;
    assert_eq!(found["items"][0]["id"], review["id"]);

    // A forged token never reaches the service.
    let forged = http
        .post(stack.url("/api/reviews"))
        .bearer_auth("eyJhbGciOiJFZERTQSIsImtpZCI6Ingif.e30.AAAA")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    // Refresh rotates; replaying the old refresh token revokes the family.
    let old_refresh = session["refresh_token"].as_str().unwrap();
    let rotated = stack
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", old_refresh),
        ])
        .await;
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.unwrap();
    let replay = stack
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", old_refresh),
        ])
        .await;
    assert_eq!(replay.status(), 400);
    let after_replay = stack
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", rotated["refresh_token"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(after_replay.status(), 400, "the whole family is revoked");

    // Logout ends the other sessions too.
    let fresh = stack.login("eve@example.com", "eve-password-1").await;
    let logout = http
        .post(stack.url("/auth/logout"))
        .bearer_auth(access(&fresh))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    let after_logout = stack
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", fresh["refresh_token"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(after_logout.status(), 400);

    let status = stack.stop();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}

async fn register_and_login(stack: &Stack, email: &str) -> Value {
    register_and_login_at(&stack.http, &stack.base, email).await
}

async fn token_at(http: &reqwest::Client, base: &str, form: &[(&str, &str)]) -> reqwest::Response {
    http.post(format!("{base}/auth/token"))
        .form(form)
        .send()
        .await
        .unwrap()
}

/// Tokens for `email` from the gateway at `base`.
async fn login_at(http: &reqwest::Client, base: &str, email: &str, password: &str) -> Value {
    let form = [
        ("grant_type", "password"),
        ("username", email),
        ("password", password),
    ];
    let response = token_at(http, base, &form).await;
    assert_eq!(response.status(), 200, "login of {email}");
    response.json().await.unwrap()
}

/// A new account with the password `a-good-password`, signed in.
async fn register_and_login_at(http: &reqwest::Client, base: &str, email: &str) -> Value {
    let registered = http
        .post(format!("{base}/auth/register"))
        .json(&json!({"email": email, "password": "a-good-password", "name": email}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    login_at(http, base, email, "a-good-password").await
}

/// The account id behind an access token.
async fn user_id(http: &reqwest::Client, base: &str, access_token: &str) -> String {
    let me = support::json(
        http.get(format!("{base}/auth/me"))
            .bearer_auth(access_token),
    )
    .await;
    me["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_receives_a_book_a_seller_listed() {
    let stack = Stack::start();
    let http = &stack.http;
    let seller = register_and_login(&stack, "sol@example.com").await;
    let buyer = register_and_login(&stack, "bruno@example.com").await;

    let listed = http
        .post(stack.url("/api/books"))
        .bearer_auth(access(&seller))
        .json(&json!({
            "title": "Rayuela", "author": "Julio Cortázar", "isbn": "978-0-394-75284-6",
            "description": "First English edition, some wear.", "condition": "good",
            "price": {"amount": "18.50", "currency": "USD"}, "stock": 2
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 201);
    let book: Value = listed.json().await.unwrap();

    let found = support::json(http.get(stack.url("/api/books?q=rayuela"))).await;
    assert_eq!(found["items"][0]["id"], book["id"]);

    let order = support::accepted_order(
        http.post(stack.url("/api/orders"))
            .bearer_auth(access(&buyer))
            .header("idempotency-key", "first-purchase")
            .json(&support::one_copy_order(
                book["id"].clone(),
                "Corrientes 1234, Buenos Aires",
                "dhl",
                "4242 4242 4242 4242",
            )),
    )
    .await;
    let order_url = stack.url(&format!("/api/orders/{}", order["id"].as_str().unwrap()));

    let delivered =
        wait_for_status(&stack, &buyer, order["id"].as_str().unwrap(), "delivered").await;
    assert_eq!(delivered["total_cents"], 1850);
    assert_eq!(delivered["shipment"]["provider"], "dhl");

    let after =
        support::json(http.get(stack.url(&format!("/api/books/{}", book["id"].as_str().unwrap()))))
            .await;
    assert_eq!(after["stock"], 1);
    let others = http
        .get(&order_url)
        .bearer_auth(access(&seller))
        .send()
        .await
        .unwrap();
    assert_eq!(others.status(), 404, "other people's orders are not found");
    let sales = support::json(
        http.get(stack.url("/api/sales"))
            .bearer_auth(access(&seller)),
    )
    .await;
    assert_eq!(sales[0]["title"], "Rayuela");
    assert!(stack.stop().success());
}

async fn list_book(stack: &Stack, seller: &Value, stock: u32) -> Value {
    let listed = stack
        .http
        .post(stack.url("/api/books"))
        .bearer_auth(access(seller))
        .json(&json!({
            "title": "Pedro Páramo", "author": "Juan Rulfo", "isbn": "9780802133908",
            "description": "Paperback.", "condition": "like_new",
            "price": {"amount": "11.00", "currency": "USD"}, "stock": stock
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 201);
    listed.json().await.unwrap()
}

async fn order_status(stack: &Stack, buyer: &Value, order: &str) -> Value {
    stack
        .http
        .get(stack.url(&format!("/api/orders/{order}")))
        .bearer_auth(access(buyer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_for_status(stack: &Stack, buyer: &Value, order: &str, status: &str) -> Value {
    support::eventually(
        Duration::from_secs(40),
        Duration::from_millis(100),
        async || {
            let current = order_status(stack, buyer, order).await;
            if current["status"] == status {
                Ok(current)
            } else {
                Err(format!("order never {status}: {current}"))
            }
        },
    )
    .await
}

/// SIGKILL the whole process while the worker is inside the payment step,
/// restart it on the same data: the job comes back after its visibility
/// timeout and the order completes, with one charge and one copy sold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_payment_resumes_and_charges_once() {
    let data = tempfile_dir::Dir::new();
    let port = free_port();
    let slow = [
        ("ZOCALO_ORDERS__PAYMENT_LATENCY_MS", "5000"),
        ("ZOCALO_ORDERS__JOB_VISIBILITY_MS", "2000"),
    ];
    let mut first = Stack::start_in(&data.0, port, &slow);
    let seller = register_and_login(&first, "sara@example.com").await;
    let buyer = register_and_login(&first, "beto@example.com").await;
    let book = list_book(&first, &seller, 3).await;
    let order = support::accepted_order(
        first
            .http
            .post(first.url("/api/orders"))
            .bearer_auth(access(&buyer))
            .header("idempotency-key", "crash-test")
            .json(&support::one_copy_order(
                book["id"].clone(),
                "Comala, Colima",
                "fedex",
                "4242424242424242",
            )),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Reserved means the worker is now waiting on the (slow) card processor.
    wait_for_status(&first, &buyer, &order, "reserved").await;
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    let second = Stack::start_in(
        &data.0,
        port,
        &[("ZOCALO_ORDERS__JOB_VISIBILITY_MS", "2000")],
    );
    let done = wait_for_status(&second, &buyer, &order, "delivered").await;
    assert_eq!(done["total_cents"], 1100);
    let after = support::json(
        second
            .http
            .get(second.url(&format!("/api/books/{}", book["id"].as_str().unwrap()))),
    )
    .await;
    assert_eq!(after["stock"], 2, "one copy sold, whatever the crash");
    let orders = zocalo_orders::store::open(&zocalo_store::DatabaseSettings {
        url: format!("sqlite://{}", data.0.join("orders.db").display()),
        read_url: None,
        max_connections: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        orders
            .ledger()
            .charges(order.parse().unwrap())
            .await
            .unwrap(),
        ["captured"]
    );
    assert!(second.stop().success());
}

#[test]
fn invalid_configuration_exits_64_naming_the_key() {
    let output = zocalo()
        .args(["up", "--port", "0"])
        .env("ZOCALO_GATEWAY__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("gateway.listen"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
}

#[test]
fn migrate_applies_migrations_and_exits() {
    let data = tempfile_dir::Dir::new();
    support::run_ok(zocalo().arg("migrate").env("ZOCALO_DATA_DIR", &data.0));
    assert!(data.0.join("auth.db").exists());
    assert!(data.0.join("reviews.db").exists());
    assert!(data.0.join("catalog.db").exists());
    assert!(data.0.join("orders.db").exists());
    assert!(data.0.join("cinema-command.db").exists());
}

/// GET `/api/books` through the gateway; anything but 200 or 429 fails.
async fn books_status(stack: &Stack) -> u16 {
    let response = stack
        .http
        .get(stack.url("/api/books"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert!(status == 200 || status == 429, "unexpected status {status}");
    status
}

/// Poll `/api/books` until it answers `wanted`, within 15 s.
async fn wait_for_books_status(stack: &Stack, wanted: u16, what: &str) {
    support::eventually(
        Duration::from_secs(15),
        Duration::from_millis(100),
        async || {
            if books_status(stack).await == wanted {
                Ok(())
            } else {
                Err(what.to_owned())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_changed_in_the_live_file_is_enforced_without_restart() {
    let data = tempfile_dir::Dir::new();
    let live = data.0.join("gateway-live.toml");
    std::fs::write(&live, "rate_limit = { per_second = 100, burst = 1000 }\n").unwrap();
    let live_path = live.to_str().unwrap().to_owned();
    let prefix = format!("zocalo-e2e:{}:", uuid::Uuid::new_v4().simple());
    let mut env = vec![
        ("ZOCALO_GATEWAY__LIVE_CONFIG_FILE", live_path.as_str()),
        ("ZOCALO_GATEWAY__REDIS_KEY_PREFIX", prefix.as_str()),
    ];
    // With Redis the limit is counted there; the live change works alike.
    let redis = zocalo_testkit::redis::redis_url();
    if let Some(url) = &redis {
        env.push(("ZOCALO_GATEWAY__REDIS_URL", url.as_str()));
    }
    let mut stack = Stack::start_in(&data.0, free_port(), &env);
    stack._data = Some(data);

    for _ in 0..5 {
        assert_eq!(books_status(&stack).await, 200);
    }
    std::fs::write(&live, "rate_limit = { per_second = 0.01, burst = 2 }\n").unwrap();
    wait_for_books_status(&stack, 429, "new limit enforced within seconds").await;

    // A broken version is rejected: the tight limit stays in force.
    std::fs::write(&live, "rate_limit = { per_second = \n").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(books_status(&stack).await, 429);

    std::fs::write(&live, "rate_limit = { per_second = 0, burst = 1 }\n").unwrap();
    wait_for_books_status(&stack, 200, "limiting switched off live").await;
    assert!(stack.stop().success());
}
