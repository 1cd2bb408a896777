use std::sync::Arc;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use zocalo_catalog::store::CatalogStore;
use zocalo_catalog::{Application, Settings};
use zocalo_testkit::{Backend, Client, TestDatabase, TestTokens};

/// A valid ISBN-13, written with hyphens as sellers do.
pub const ISBN: &str = "978-0-306-40615-7";

pub struct TestApp {
    pub api: Client,
    pub tokens: TestTokens,
    /// A seller's id and token (any signed-in user may sell).
    pub seller: (Uuid, String),
    /// A token of the orders service, for the internal API.
    pub service: String,
    /// The app's own store, to run the expiry sweep by hand.
    pub store: Arc<dyn CatalogStore>,
    shutdown: CancellationToken,
    _db: TestDatabase,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn(backend: Backend) -> TestApp {
    spawn_with(backend, |_| {}).await
}

pub async fn spawn_with(backend: Backend, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let db = zocalo_testkit::database(backend).await.expect("database");
    let tokens = TestTokens::new();
    let mut settings = Settings {
        database_url: db.url.clone(),
        database_max_connections: 8,
        issuer: zocalo_testkit::ISSUER.into(),
        audience: zocalo_testkit::AUDIENCE.into(),
        // Tests run the sweep by hand unless they ask for it.
        sweep_interval_ms: 3_600_000,
        ..Settings::default()
    };
    configure(&mut settings);
    let app = Application::build_with_keys(settings, tokens.jwks())
        .await
        .expect("build catalog");
    let port = app.port();
    let store = app.store();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let seller_id = Uuid::now_v7();
    let seller_token = tokens.token(&seller_id.to_string(), &[]);
    let service = tokens.token("client:orders", &["service"]);
    TestApp {
        api: Client::new(format!("http://127.0.0.1:{port}")),
        tokens,
        seller: (seller_id, seller_token),
        service,
        store,
        shutdown,
        _db: db,
    }
}

pub fn listing(title: &str, author: &str, amount: &str, stock: i64) -> Value {
    json!({
        "title": title,
        "author": author,
        "isbn": ISBN,
        "description": format!("A copy of {title}."),
        "condition": "good",
        "price": {"amount": amount, "currency": "USD"},
        "stock": stock
    })
}

impl TestApp {
    pub fn user(&self, roles: &[&str]) -> (Uuid, String) {
        let id = Uuid::now_v7();
        (id, self.tokens.token(&id.to_string(), roles))
    }

    pub async fn post_book(&self, token: &str, body: &Value) -> reqwest::Response {
        self.api
            .post("/api/books")
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// List a book as the default seller; returns its id.
    pub async fn book(&self, title: &str, amount: &str, stock: i64) -> Uuid {
        self.book_with(&listing(title, "Anon", amount, stock)).await
    }

    pub async fn book_with(&self, body: &Value) -> Uuid {
        let response = self.post_book(&self.seller.1, body).await;
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        id_of(response).await
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.api.get(path).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    pub async fn books(&self, query: &str) -> Value {
        self.get_json(&format!("/api/books{query}")).await
    }

    /// Stock as the store holds it (also for withdrawn listings).
    pub async fn stock(&self, book: Uuid) -> i32 {
        self.store.book(book).await.unwrap().expect("book").stock
    }

    pub async fn reserve(&self, body: &Value) -> reqwest::Response {
        self.api
            .post("/internal/reservations")
            .bearer_auth(&self.service)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `POST /internal/reservations/{id}/{action}` with the service token.
    pub async fn settle(&self, id: Uuid, action: &str) -> reqwest::Response {
        self.api
            .post(&format!("/internal/reservations/{id}/{action}"))
            .bearer_auth(&self.service)
            .send()
            .await
            .unwrap()
    }

    pub async fn reservation(&self, id: Uuid) -> reqwest::Response {
        self.api
            .get(&format!("/internal/reservations/{id}"))
            .bearer_auth(&self.service)
            .send()
            .await
            .unwrap()
    }
}

pub fn one_item(reservation: Uuid, book: Uuid, quantity: i64) -> Value {
    json!({"reservation_id": reservation, "items": [{"book_id": book, "quantity": quantity}]})
}

pub async fn id_of(response: reqwest::Response) -> Uuid {
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().parse().unwrap()
}

pub fn titles(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["title"].as_str().unwrap().to_owned())
        .collect()
}

pub fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}
