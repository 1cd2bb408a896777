//! A running command side with tokens for its roles, and the venue every
//! purchase test needs (chain → cinema with a manager → room → movie →
//! showtime).

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use zocalo_cinema_command::store::CinemaStore;
use zocalo_cinema_command::{Application, Settings};
use zocalo_testkit::{Backend, Client, TestDatabase, TestTokens};

pub struct TestApp {
    pub api: Client,
    pub tokens: TestTokens,
    pub store: std::sync::Arc<dyn CinemaStore>,
    pub admin: String,
    shutdown: CancellationToken,
    _db: TestDatabase,
    _bus: tempfile::TempDir,
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
    let db = zocalo_testkit::database(backend).await.unwrap();
    let bus = tempfile::tempdir().unwrap();
    let tokens = TestTokens::new();
    let mut settings = Settings {
        database_url: db.url.clone(),
        database_max_connections: 8,
        bus_url: format!("sqlite://{}", bus.path().join("bus.db").display()),
        issuer: zocalo_testkit::ISSUER.into(),
        audience: zocalo_testkit::AUDIENCE.into(),
        ..Settings::default()
    };
    configure(&mut settings);
    let app = Application::build_with_keys(settings, tokens.jwks())
        .await
        .unwrap();
    let port = app.port();
    let store = app.store();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let admin = tokens.token(&Uuid::now_v7().to_string(), &["admin"]);
    TestApp {
        api: Client::new(format!("http://127.0.0.1:{port}")),
        tokens,
        store,
        admin,
        shutdown,
        _db: db,
        _bus: bus,
    }
}

/// The ids of a venue set up through the API.
#[derive(Debug, Clone)]
pub struct Venue {
    pub chain: Uuid,
    pub cinema: Uuid,
    pub room: Uuid,
    pub movie: Uuid,
    pub showtime: Uuid,
    /// The token of the cinema's manager.
    pub manager: String,
}

pub fn id(body: &Value, field: &str) -> Uuid {
    body[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {body}"))
        .parse()
        .unwrap()
}

impl TestApp {
    /// A signed-in user without roles.
    pub fn customer(&self) -> (Uuid, String) {
        let id = Uuid::now_v7();
        (id, self.tokens.token(&id.to_string(), &[]))
    }

    pub fn manager(&self) -> (Uuid, String) {
        let id = Uuid::now_v7();
        (id, self.tokens.token(&id.to_string(), &["manager"]))
    }

    pub fn service(&self) -> String {
        self.tokens.token("client:cinema-query", &["service"])
    }

    pub async fn post(&self, token: &str, path: &str, body: &Value) -> reqwest::Response {
        self.api
            .post(path)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn patch(&self, token: &str, path: &str, body: &Value) -> reqwest::Response {
        self.api
            .patch(path)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete(&self, token: &str, path: &str) -> reqwest::Response {
        self.api
            .delete(path)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// POST that must answer `status`; its body.
    pub async fn expect(&self, token: &str, path: &str, body: &Value, status: u16) -> Value {
        let response = self.post(token, path, body).await;
        let got = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or_default();
        assert_eq!(got, status, "POST {path}: {body}");
        body
    }

    /// A cinema of a new chain, run by a new manager.
    pub async fn cinema(&self) -> (Uuid, Uuid, String) {
        let chain = self
            .expect(
                &self.admin,
                "/api/cinema/chains",
                &json!({"name": "Cinemex"}),
                201,
            )
            .await;
        let chain = id(&chain, "chain_id");
        let cinema = self
            .expect(
                &self.admin,
                "/api/cinema/cinemas",
                &json!({"chain_id": chain, "name": "Cinemex Reforma", "city": "CDMX", "address": "Paseo de la Reforma 222"}),
                201,
            )
            .await;
        let cinema = id(&cinema, "cinema_id");
        let (manager_id, manager) = self.manager();
        let assigned = self
            .api
            .put(&format!(
                "/api/cinema/cinemas/{cinema}/managers/{manager_id}"
            ))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap();
        assert_eq!(assigned.status(), 200);
        (chain, cinema, manager)
    }

    pub async fn room(
        &self,
        manager: &str,
        cinema: Uuid,
        rows: u16,
        per_row: u16,
        extra: Value,
    ) -> Uuid {
        let mut body =
            json!({"cinema_id": cinema, "name": "Sala 1", "rows": rows, "seats_per_row": per_row});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        id(
            &self.expect(manager, "/api/cinema/rooms", &body, 201).await,
            "room_id",
        )
    }

    pub async fn movie(&self, token: &str, minutes: u16) -> Uuid {
        let body = json!({"title": "Roma", "duration_min": minutes, "classification": "B15", "genres": ["drama"]});
        id(
            &self.expect(token, "/api/cinema/movies", &body, 201).await,
            "movie_id",
        )
    }

    pub async fn showtime(
        &self,
        manager: &str,
        room: Uuid,
        movie: Uuid,
        starts_at: &str,
    ) -> reqwest::Response {
        let body = json!({
            "movie_id": movie,
            "room_id": room,
            "starts_at": starts_at,
            "prices": [{"class": "standard", "cents": 9000}, {"class": "accessible", "cents": 6000}],
        });
        self.post(manager, "/api/cinema/showtimes", &body).await
    }

    /// A whole venue with a room of `rows` × `per_row` seats.
    pub async fn venue(&self, rows: u16, per_row: u16, extra_room: Value) -> Venue {
        let (chain, cinema, manager) = self.cinema().await;
        let room = self.room(&manager, cinema, rows, per_row, extra_room).await;
        let movie = self.movie(&manager, 120).await;
        let showtime = self
            .showtime(&manager, room, movie, "2030-05-01T18:00:00Z")
            .await;
        assert_eq!(showtime.status(), 201);
        let showtime = id(&showtime.json().await.unwrap(), "showtime_id");
        Venue {
            chain,
            cinema,
            room,
            movie,
            showtime,
            manager,
        }
    }

    /// Buy as a careful client does: a 503 (the service shed load, e.g. a
    /// database pool that stayed busy too long on a loaded machine) is
    /// retried with the same key, which can never buy twice.
    pub async fn buy(
        &self,
        token: &str,
        key: &str,
        showtime: Uuid,
        body: &Value,
    ) -> reqwest::Response {
        let mut attempt = 1;
        loop {
            let response = self
                .api
                .post(&format!("/api/cinema/showtimes/{showtime}/purchases"))
                .bearer_auth(token)
                .header("idempotency-key", key)
                .json(body)
                .send()
                .await
                .unwrap();
            if response.status() != 503 || attempt == BUY_ATTEMPTS {
                return response;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
            attempt += 1;
        }
    }
}

const BUY_ATTEMPTS: u64 = 5;

pub const CARD: &str = "4242 4242 4242 4242";
pub const DECLINING_CARD: &str = "4000 0000 0000 0002";
