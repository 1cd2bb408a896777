use serde_json::Value;
use tokio_util::sync::CancellationToken;
use zocalo_auth::{AdminBootstrap, Application, Settings};
use zocalo_http::ratelimit::RateLimit;
use zocalo_testkit::{Backend, Client, TestDatabase};

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password-1";
pub const ISSUER: &str = "http://zocalo.test";

pub struct TestApp {
    pub api: Client,
    shutdown: CancellationToken,
    db: TestDatabase,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn settings(url: &str) -> Settings {
    Settings {
        database_url: url.to_owned(),
        database_max_connections: 4,
        issuer: ISSUER.into(),
        login_per_account: RateLimit {
            per_second: 10.0,
            burst: 100,
        },
        login_per_ip: RateLimit {
            per_second: 100.0,
            burst: 1000,
        },
        ..Settings::default()
    }
}

pub async fn spawn(backend: Backend) -> TestApp {
    spawn_with(backend, |_| {}).await
}

pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let db = zocalo_testkit::database(backend).await.expect("database");
    let mut settings = settings(&db.url);
    tweak(&mut settings);
    let (api, shutdown) = serve(settings).await;
    TestApp { api, shutdown, db }
}

/// Another instance on `first`'s database, as `zocalo serve auth` run
/// twice would be; it stops when `first` is dropped.
pub async fn spawn_beside(first: &TestApp, tweak: impl FnOnce(&mut Settings)) -> Client {
    let mut settings = settings(&first.db.url);
    tweak(&mut settings);
    let (api, shutdown) = serve(settings).await;
    let stop_with_first = first.shutdown.clone();
    tokio::spawn(async move {
        stop_with_first.cancelled().await;
        shutdown.cancel();
    });
    api
}

async fn serve(settings: Settings) -> (Client, CancellationToken) {
    let admin = AdminBootstrap {
        email: ADMIN_EMAIL.into(),
        password: ADMIN_PASSWORD.into(),
    };
    let app = Application::build(settings, Some(admin))
        .await
        .expect("build auth");
    let port = app.port();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    (Client::new(format!("http://127.0.0.1:{port}")), shutdown)
}

/// Ask `api` for tokens with the password grant.
pub async fn login_at(api: &Client, email: &str, password: &str) -> reqwest::Response {
    api.post("/auth/token")
        .form(&[
            ("grant_type", "password"),
            ("username", email),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
}

impl TestApp {
    pub async fn register(&self, email: &str, password: &str) -> reqwest::Response {
        self.api
            .post("/auth/register")
            .json(&serde_json::json!({"email": email, "password": password, "name": "Ana"}))
            .send()
            .await
            .unwrap()
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        login_at(&self.api, email, password).await
    }

    /// Log in and return the token response.
    pub async fn tokens(&self, email: &str, password: &str) -> Value {
        let response = self.login(email, password).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    pub async fn admin_token(&self) -> String {
        self.tokens(ADMIN_EMAIL, ADMIN_PASSWORD).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.api
            .post("/auth/token")
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ])
            .send()
            .await
            .unwrap()
    }

    /// Register a user and return its id.
    pub async fn user(&self, email: &str) -> String {
        let response = self.register(email, "a-good-password").await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }
}
