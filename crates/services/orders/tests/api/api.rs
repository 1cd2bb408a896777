use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use zocalo_orders::{Application, Settings};
use zocalo_testkit::{Backend, Client, TestDatabase, TestTokens, backend_tests, expect_problem};

backend_tests!(
    an_order_is_accepted_once_per_idempotency_key,
    orders_are_private_to_their_buyer,
    bad_orders_get_problem_json_never_500,
);

struct TestApp {
    api: Client,
    tokens: TestTokens,
    shutdown: CancellationToken,
    _db: TestDatabase,
    _bus: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn spawn(backend: Backend) -> TestApp {
    let db = zocalo_testkit::database(backend).await.unwrap();
    let bus = tempfile::tempdir().unwrap();
    let tokens = TestTokens::new();
    let settings = Settings {
        database_url: db.url.clone(),
        database_max_connections: 4,
        bus_url: format!("sqlite://{}", bus.path().join("bus.db").display()),
        issuer: zocalo_testkit::ISSUER.into(),
        audience: zocalo_testkit::AUDIENCE.into(),
        ..Settings::default()
    };
    let app = Application::build_with_keys(settings, tokens.jwks())
        .await
        .unwrap();
    let port = app.port();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp {
        api: Client::new(format!("http://127.0.0.1:{port}")),
        tokens,
        shutdown,
        _db: db,
        _bus: bus,
    }
}

fn order_body(book: Uuid) -> Value {
    json!({
        "items": [{"book_id": book, "quantity": 2}],
        "shipping_address": "Calle 5 #12, Bogotá",
        "provider": "servientrega",
        "card": "4242 4242 4242 4242"
    })
}

impl TestApp {
    fn buyer(&self) -> (Uuid, String) {
        let id = Uuid::now_v7();
        (id, self.tokens.token(&id.to_string(), &[]))
    }

    async fn order(&self, token: &str, key: &str, body: &Value) -> reqwest::Response {
        self.api
            .post("/api/orders")
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
            .unwrap()
    }
}

async fn an_order_is_accepted_once_per_idempotency_key(backend: Backend) {
    let app = spawn(backend).await;
    let (buyer, token) = app.buyer();
    let body = order_body(Uuid::now_v7());
    let first = app.order(&token, "key-1", &body).await;
    assert_eq!(first.status(), 202);
    assert!(
        first.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/api/orders/")
    );
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["status"], "pending");
    assert_eq!(first["buyer_id"], buyer.to_string());
    assert_eq!(first["card_last4"], "4242");
    assert!(
        first.get("card_token").is_none(),
        "the card token never leaves the service"
    );

    // Twenty concurrent retries of the same request: the same order, always.
    let retries: Vec<_> = (0..20)
        .map(|_| {
            let (api, token, body) = (app.api.clone(), token.clone(), body.clone());
            tokio::spawn(async move {
                let response = api
                    .post("/api/orders")
                    .bearer_auth(token)
                    .header("idempotency-key", "key-1")
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                (
                    response.status().as_u16(),
                    response.json::<Value>().await.unwrap()["id"].clone(),
                )
            })
        })
        .collect();
    for retry in retries {
        let (status, id) = retry.await.unwrap();
        assert_eq!((status, id), (202, first["id"].clone()));
    }
    // The same key for a different request is refused.
    let other = app
        .order(&token, "key-1", &order_body(Uuid::now_v7()))
        .await;
    expect_problem(other, 422).await;
    // Another buyer may use the same key string.
    let (_, someone) = app.buyer();
    let theirs: Value = app
        .order(&someone, "key-1", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(theirs["id"], first["id"]);

    let mine: Value = app
        .api
        .get("/api/orders")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
}

async fn orders_are_private_to_their_buyer(backend: Backend) {
    let app = spawn(backend).await;
    let (_, token) = app.buyer();
    let order: Value = app
        .order(&token, "k", &order_body(Uuid::now_v7()))
        .await
        .json()
        .await
        .unwrap();
    let path = format!("/api/orders/{}", order["id"].as_str().unwrap());
    assert_eq!(
        app.api
            .get(&path)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (_, stranger) = app.buyer();
    expect_problem(
        app.api
            .get(&path)
            .bearer_auth(&stranger)
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    expect_problem(
        app.api
            .post(&format!("{path}/cancel"))
            .bearer_auth(&stranger)
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    expect_problem(app.api.get(&path).send().await.unwrap(), 401).await;

    let cancelled: Value = app
        .api
        .post(&format!("{path}/cancel"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    let again = app
        .api
        .post(&format!("{path}/cancel"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    expect_problem(again, 409).await;
}

async fn bad_orders_get_problem_json_never_500(backend: Backend) {
    let app = spawn(backend).await;
    let (_, token) = app.buyer();
    let no_key = app
        .api
        .post("/api/orders")
        .bearer_auth(&token)
        .json(&order_body(Uuid::now_v7()))
        .send()
        .await
        .unwrap();
    expect_problem(no_key, 400).await;
    let invalid = app
        .order(&token, "k", &json!({"items": [{"book_id": Uuid::now_v7(), "quantity": 0}], "shipping_address": "x", "provider": "ups", "card": "1234"}))
        .await;
    let problem = expect_problem(invalid, 422).await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["items[0].quantity", "shipping_address", "provider", "card"]
    );
    let empty = app.order(&token, "k2", &json!({"items": [], "shipping_address": "somewhere 1", "provider": "dhl", "card": "4242424242424242"})).await;
    expect_problem(empty, 422).await;
    let malformed = app
        .api
        .post("/api/orders")
        .bearer_auth(&token)
        .header("idempotency-key", "k3")
        .header("content-type", "application/json")
        .body("{\"items\": [")
        .send()
        .await
        .unwrap();
    expect_problem(malformed, 400).await;
    let service = app.tokens.token("client:orders", &["service"]);
    let not_a_user = app.order(&service, "k4", &order_body(Uuid::now_v7())).await;
    expect_problem(not_a_user, 403).await;
    expect_problem(
        app.api
            .get("/api/orders/not-an-id")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
}
