use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use zocalo_reviews::{Application, Settings};
use zocalo_testkit::{Backend, Client, TestDatabase, TestTokens};

pub struct TestApp {
    pub api: Client,
    pub tokens: TestTokens,
    /// An editor's id and token.
    pub editor: (Uuid, String),
    shutdown: CancellationToken,
    _db: TestDatabase,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Another instance of the app under test, on the same database.
pub struct Instance {
    pub api: Client,
    shutdown: CancellationToken,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Build and run one instance on `database_url`, with settings adjusted by
/// `tune`.
async fn start(
    database_url: &str,
    tokens: &TestTokens,
    tune: impl FnOnce(&mut Settings),
) -> (Client, CancellationToken) {
    let mut settings = Settings {
        database_url: database_url.into(),
        database_max_connections: 4,
        issuer: zocalo_testkit::ISSUER.into(),
        audience: zocalo_testkit::AUDIENCE.into(),
        ..Settings::default()
    };
    tune(&mut settings);
    let app = Application::build_with_keys(settings, tokens.jwks())
        .await
        .expect("build reviews");
    let port = app.port();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    (Client::new(format!("http://127.0.0.1:{port}")), shutdown)
}

pub async fn spawn(backend: Backend) -> TestApp {
    let db = zocalo_testkit::database(backend).await.expect("database");
    spawn_on(db, |_| {}).await
}

/// Like [`spawn`], on a given database and with settings adjusted by `tune`.
pub async fn spawn_on(db: TestDatabase, tune: impl FnOnce(&mut Settings)) -> TestApp {
    let tokens = TestTokens::new();
    let (api, shutdown) = start(&db.url, &tokens, tune).await;
    let editor_id = Uuid::now_v7();
    let editor_token = tokens.token(&editor_id.to_string(), &["editor"]);
    TestApp {
        api,
        tokens,
        editor: (editor_id, editor_token),
        shutdown,
        _db: db,
    }
}

impl TestApp {
    /// A second instance sharing this one's database and token keys, as
    /// when several run behind the gateway.
    pub async fn another_instance(&self) -> Instance {
        let (api, shutdown) = start(&self._db.url, &self.tokens, |_| {}).await;
        Instance { api, shutdown }
    }

    pub fn token_for(&self, roles: &[&str]) -> (Uuid, String) {
        let id = Uuid::now_v7();
        (id, self.tokens.token(&id.to_string(), roles))
    }

    pub async fn camera(&self, brand: &str, model: &str) -> Uuid {
        let response = self
            .api
            .post("/api/cameras")
            .bearer_auth(&self.editor.1)
            .json(&json!({"brand": brand, "model": model, "sensor": "full frame", "megapixels": 24.2, "released": 2020}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        id_of(response).await
    }

    pub async fn lens(&self, brand: &str, model: &str) -> Uuid {
        let response = self
            .api
            .post("/api/lenses")
            .bearer_auth(&self.editor.1)
            .json(&json!({"brand": brand, "model": model, "mount": "E", "focal_min_mm": 24, "focal_max_mm": 70, "max_aperture": 2.8}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        id_of(response).await
    }

    pub async fn post_review(&self, token: &str, body: Value) -> reqwest::Response {
        self.api
            .post("/api/reviews")
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Publish a review of a camera as the default editor; returns its id.
    pub async fn review(&self, camera: Uuid, title: &str, content: &str, rating: u8) -> Uuid {
        let response = self
            .post_review(
                &self.editor.1,
                json!({"title": title, "content": content, "rating": rating, "camera_id": camera}),
            )
            .await;
        assert_eq!(response.status(), 201);
        id_of(response).await
    }

    /// GET `path` anonymously and decode the JSON answer.
    pub async fn get_json(&self, path: &str) -> Value {
        self.api
            .get(path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn content(&self, query: &str) -> Value {
        let response = self
            .api
            .get(&format!("/api/content{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET /api/content{query}");
        response.json().await.unwrap()
    }
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
        .map(|r| r["title"].as_str().unwrap().to_owned())
        .collect()
}
