//! The query API over HTTP: public reads with ETags and problems for bad
//! queries, and purchases visible to their customer only.

use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use zocalo_cinema_query::store::CinemaStore;
use zocalo_cinema_query::{Application, Settings};
use zocalo_testkit::{Backend, Client, TestDatabase, TestTokens, backend_tests, expect_problem};

use crate::world::{World, apply_all};

backend_tests!(
    public_reads_follow_the_cinemanzana_path,
    purchases_are_visible_to_their_customer_only,
    bad_queries_are_problems,
);

pub struct TestApp {
    pub api: Client,
    pub tokens: TestTokens,
    pub store: Arc<dyn CinemaStore>,
    shutdown: CancellationToken,
    _db: TestDatabase,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The service on a fresh database, projector off unless `tune` turns it on.
pub async fn spawn(backend: Backend, tune: impl FnOnce(&mut Settings)) -> TestApp {
    let db = zocalo_testkit::database(backend).await.expect("database");
    let mut settings = Settings {
        database_url: db.url.clone(),
        database_max_connections: 4,
        issuer: zocalo_testkit::ISSUER.into(),
        audience: zocalo_testkit::AUDIENCE.into(),
        projector: false,
        ..Settings::default()
    };
    tune(&mut settings);
    let tokens = TestTokens::new();
    let app = Application::build_with_keys(settings, tokens.jwks())
        .await
        .expect("build cinema-query");
    let store = app.store();
    let api = Client::new(format!("http://127.0.0.1:{}", app.port()));
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp {
        api,
        tokens,
        store,
        shutdown,
        _db: db,
    }
}

async fn json(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200, "{:?}", response.url().path());
    response.json().await.unwrap()
}

fn ids(items: &Value) -> Vec<String> {
    items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Choose a movie → its showtimes → a cinema → the seat map, as the
/// original CineManzana flow does, all anonymously.
async fn public_reads_follow_the_cinemanzana_path(backend: Backend) {
    let app = spawn(backend, |_| {}).await;
    let world = World::new();
    apply_all(&app.store, &world.events).await;

    let movies = json(app.api.get("/api/cinema/movies").send().await.unwrap()).await;
    assert_eq!(
        ids(&movies),
        [world.movie_2.to_string(), world.movie_1.to_string()],
        "now showing, by title; the deleted movie is gone"
    );
    let roma = &movies["items"][1];
    assert_eq!(roma["title"], "Roma (remastered)");
    assert_eq!(roma["showtimes"].as_array().unwrap().len(), 2);
    let amores = &movies["items"][0];
    assert_eq!(
        amores["showtimes"].as_array().unwrap().len(),
        1,
        "the cancelled showtime is not offered"
    );

    let showtimes = json(
        app.api
            .get(&format!("/api/cinema/showtimes?movie_id={}", world.movie_1))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        ids(&showtimes),
        [
            world.showtimes[0].to_string(),
            world.showtimes[1].to_string()
        ]
    );
    let first = &showtimes["items"][0];
    assert_eq!(first["movie"]["title"], "Roma (remastered)");
    assert_eq!(first["cinema"]["name"], "Reforma");
    assert_eq!(first["prices"][0]["cents"], 9000);
    let day = first["starts_at"].as_str().unwrap()[..10].to_owned();
    let that_day = json(
        app.api
            .get(&format!(
                "/api/cinema/showtimes?cinema_id={}&date={day}",
                world.cinema_1
            ))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        ids(&that_day),
        [
            world.showtimes[0].to_string(),
            world.showtimes[4].to_string()
        ]
    );

    let cinema = json(
        app.api
            .get(&format!("/api/cinema/cinemas/{}", world.cinema_1))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(cinema["rooms"].as_array().unwrap().len(), 2);
    let in_city = json(
        app.api
            .get("/api/cinema/cinemas?city=CIUDAD%20DE%20M%C3%89XICO")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ids(&in_city).len(), 2, "city matches whatever the case");
    let chains = app.api.get("/api/cinema/chains").send().await.unwrap();
    assert_eq!(chains.headers()["cache-control"], "public, max-age=5");
    let chains = json(chains).await;
    assert_eq!(ids(&chains).len(), 2);

    let seats_path = format!("/api/cinema/showtimes/{}/seats", world.showtimes[0]);
    let response = app.api.get(&seats_path).send().await.unwrap();
    let etag = response.headers()["etag"].clone();
    assert_eq!(
        response.headers()["cache-control"],
        "public, no-cache",
        "a live seat map is revalidated, never served stale by a shared cache"
    );
    let seats = json(response).await;
    assert_eq!(
        (seats["capacity"].as_u64(), seats["sold"].as_u64()),
        (Some(39), Some(1))
    );
    assert_eq!(seats["free"], 38);
    let row_c = &seats["rows"][2];
    assert_eq!(row_c["row"], "C");
    assert_eq!(row_c["seats"][2]["seat"], "C3");
    assert_eq!(row_c["seats"][2]["state"], "sold");
    assert_eq!(seats["rows"][0]["seats"][0]["state"], "disabled");
    assert_eq!(seats["rows"][0]["seats"][1]["class"], "accessible");
    let again = app
        .api
        .get(&seats_path)
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    let share = json(
        app.api
            .get(&format!(
                "/api/cinema/share/showtimes/{}",
                world.showtimes[0]
            ))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(share["title"], "Roma (remastered)");
    assert!(
        share["text"].as_str().unwrap().contains("Reforma"),
        "{share}"
    );
    assert_eq!(share["free_seats"], 38);

    let missing = app
        .api
        .get(&format!("/api/cinema/showtimes/{}", Uuid::now_v7()))
        .send()
        .await
        .unwrap();
    expect_problem(missing, 404).await;
    let gone = app
        .api
        .get(&format!("/api/cinema/movies/{}", world.movie_gone))
        .send()
        .await
        .unwrap();
    expect_problem(gone, 404).await;
}

async fn purchases_are_visible_to_their_customer_only(backend: Backend) {
    let app = spawn(backend, |_| {}).await;
    let world = World::new();
    apply_all(&app.store, &world.events).await;
    let x = app.tokens.token(&world.customer_x.to_string(), &[]);
    let y = app.tokens.token(&world.customer_y.to_string(), &[]);

    let mine = app
        .api
        .get("/api/cinema/purchases")
        .bearer_auth(&x)
        .send()
        .await
        .unwrap();
    assert_eq!(mine.headers()["cache-control"], "private, no-store");
    let mine = json(mine).await;
    let mut listed = ids(&mine);
    listed.sort();
    let mut expected = vec![world.purchase_1.to_string(), world.purchase_3.to_string()];
    expected.sort();
    assert_eq!(listed, expected);

    let theirs = json(
        app.api
            .get("/api/cinema/purchases")
            .bearer_auth(&y)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ids(&theirs), [world.purchase_2.to_string()]);
    assert_eq!(theirs["items"][0]["tickets"][0]["code"], "CODE-C3");

    let own = app
        .api
        .get(&format!("/api/cinema/purchases/{}", world.purchase_2))
        .bearer_auth(&y)
        .send()
        .await
        .unwrap();
    assert_eq!(json(own).await["tickets_pdf_ready"], true);
    let other = app
        .api
        .get(&format!("/api/cinema/purchases/{}", world.purchase_2))
        .bearer_auth(&x)
        .send()
        .await
        .unwrap();
    expect_problem(other, 404).await;
    let anonymous = app.api.get("/api/cinema/purchases").send().await.unwrap();
    expect_problem(anonymous, 401).await;
}

async fn bad_queries_are_problems(backend: Backend) {
    let app = spawn(backend, |_| {}).await;
    for path in [
        "/api/cinema/chains?limit=0",
        "/api/cinema/chains?limit=101",
        "/api/cinema/cinemas?offset=99999",
        "/api/cinema/cinemas?city=",
        "/api/cinema/showtimes?date=24-12-2026",
        "/api/cinema/showtimes?movie_id=not-a-uuid",
        "/api/cinema/movies?limit=ten",
    ] {
        let response = app.api.get(path).send().await.unwrap();
        let problem = expect_problem(response, 400).await;
        assert!(problem["detail"].is_string(), "{path}: {problem}");
    }
    let not_an_id = app
        .api
        .get("/api/cinema/showtimes/not-a-uuid")
        .send()
        .await
        .unwrap();
    expect_problem(not_an_id, 404).await;
    let post = app.api.post("/api/cinema/chains").send().await.unwrap();
    expect_problem(post, 405).await;
    let openapi = json(app.api.get("/openapi.json").send().await.unwrap()).await;
    assert!(openapi["paths"]["/api/cinema/showtimes/{id}/seats"]["get"].is_object());
}
