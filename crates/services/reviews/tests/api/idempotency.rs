//! `Idempotency-Key` on the creating requests: a retry, on this instance or
//! another, gets the first answer and creates nothing new.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use zocalo_testkit::{Backend, Client, backend_tests, expect_problem};

use crate::helpers::{TestApp, spawn};

backend_tests!(
    a_repeat_with_the_key_gets_the_first_answer,
    a_key_reused_for_another_request_is_422,
    malformed_keys_are_400,
    concurrent_retries_with_one_key_create_one_review,
    keys_of_different_users_do_not_collide,
    the_header_is_documented,
);

/// What a client saw of one POST.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    location: Option<String>,
    replayed: bool,
    body: Value,
}

/// POST `body` (raw JSON text, so tests can vary its formatting) with an
/// `Idempotency-Key`.
async fn post_keyed(api: &Client, path: &str, token: &str, key: &str, body: &str) -> Answer {
    let response = api
        .post(path)
        .bearer_auth(token)
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let location = header("location");
    let replayed = header("idempotent-replayed").as_deref() == Some("true");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap();
    Answer {
        status,
        location,
        replayed,
        body,
    }
}

/// The same answer, but for the header that marks a replay.
fn assert_replay_of(replay: &Answer, first: &Answer) {
    assert_eq!(first.status, 201, "{first:?}");
    assert!(!first.replayed);
    assert!(replay.replayed, "{replay:?}");
    assert_eq!(replay.status, first.status);
    assert_eq!(replay.location, first.location);
    assert_eq!(replay.body, first.body);
}

async fn review_count_of(app: &TestApp, editor: uuid::Uuid) -> usize {
    app.content(&format!("?editor_id={editor}&limit=100")).await["items"]
        .as_array()
        .unwrap()
        .len()
}

async fn a_repeat_with_the_key_gets_the_first_answer(backend: Backend) {
    let app = spawn(backend).await;
    let token = app.editor.1.clone();

    let camera =
        r#"{"brand": "Hasselblad", "model": "X2D", "sensor": "medium format", "megapixels": 100}"#;
    // The same request, formatted differently.
    let camera_again =
        r#"{"megapixels":100.0,"sensor":"medium format","model":"X2D","brand":"Hasselblad"}"#;
    let first = post_keyed(&app.api, "/api/cameras", &token, "cam-1", camera).await;
    let again = post_keyed(&app.api, "/api/cameras", &token, "cam-1", camera_again).await;
    assert_replay_of(&again, &first);
    let camera_id = first.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        first.location.as_deref(),
        Some(format!("/api/cameras/{camera_id}").as_str())
    );
    let listed = app.get_json("/api/cameras?brand=hasselblad").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);

    let lens = r#"{"brand": "Laowa", "model": "9mm", "mount": "E", "focal_min_mm": 9, "focal_max_mm": 9, "max_aperture": 5.6}"#;
    let first_lens = post_keyed(&app.api, "/api/lenses", &token, "lens-1", lens).await;
    let lens_again = post_keyed(&app.api, "/api/lenses", &token, "lens-1", lens).await;
    assert_replay_of(&lens_again, &first_lens);

    let review =
        json!({"title": "Big files", "content": "Huge detail.", "rating": 5, "camera_id": camera_id})
            .to_string();
    let first_review = post_keyed(&app.api, "/api/reviews", &token, "rev-1", &review).await;
    let review_again = post_keyed(&app.api, "/api/reviews", &token, "rev-1", &review).await;
    assert_replay_of(&review_again, &first_review);
    assert_eq!(first_review.body["target_model"], "X2D");
    assert_eq!(review_count_of(&app, app.editor.0).await, 1);

    // The key is remembered even after the review is gone: a late retry
    // must not publish it again.
    let location = first_review.location.clone().unwrap();
    let deleted = app
        .api
        .delete(&location)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let late = post_keyed(&app.api, "/api/reviews", &token, "rev-1", &review).await;
    assert_replay_of(&late, &first_review);
    assert_eq!(review_count_of(&app, app.editor.0).await, 0);

    // Without a key, every POST creates.
    let body: Value = serde_json::from_str(&review).unwrap();
    assert_eq!(app.post_review(&token, body.clone()).await.status(), 201);
    assert_eq!(app.post_review(&token, body).await.status(), 201);
    assert_eq!(review_count_of(&app, app.editor.0).await, 2);
}

async fn a_key_reused_for_another_request_is_422(backend: Backend) {
    let app = spawn(backend).await;
    let token = app.editor.1.clone();
    let camera = app.camera("Nikon", "Zf").await;
    let review = |rating: u8| {
        json!({"title": "Retro", "content": "Dials.", "rating": rating, "camera_id": camera})
            .to_string()
    };
    let first = post_keyed(&app.api, "/api/reviews", &token, "k", &review(4)).await;
    assert_eq!(first.status, 201);

    let different = app
        .api
        .post("/api/reviews")
        .bearer_auth(&token)
        .header("idempotency-key", "k")
        .header("content-type", "application/json")
        .body(review(5))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(different, 422).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key reused with a different request"),
        "{problem}"
    );
    // The same key on another endpoint is another request too.
    let elsewhere = app
        .api
        .post("/api/lenses")
        .bearer_auth(&token)
        .header("idempotency-key", "k")
        .json(&json!({"brand": "Nikon", "model": "40mm", "mount": "Z", "focal_min_mm": 40, "focal_max_mm": 40, "max_aperture": 2}))
        .send()
        .await
        .unwrap();
    expect_problem(elsewhere, 422).await;

    // Neither created anything, and the first request still replays.
    assert_eq!(review_count_of(&app, app.editor.0).await, 1);
    let lenses = app.get_json("/api/lenses").await;
    assert!(lenses["items"].as_array().unwrap().is_empty());
    let again = post_keyed(&app.api, "/api/reviews", &token, "k", &review(4)).await;
    assert_replay_of(&again, &first);
}

async fn malformed_keys_are_400(backend: Backend) {
    let app = spawn(backend).await;
    let token = app.editor.1.clone();
    let camera = app.camera("Canon", "R6").await;
    let body = json!({"title": "t", "content": "c", "rating": 3, "camera_id": camera});
    let post = |key: reqwest::header::HeaderValue| {
        app.api
            .post("/api/reviews")
            .bearer_auth(&token)
            .header("idempotency-key", key)
            .json(&body)
    };
    for bad in ["x".repeat(201), String::new(), "   ".into()] {
        let value = reqwest::header::HeaderValue::from_str(&bad).unwrap();
        expect_problem(post(value).send().await.unwrap(), 400).await;
    }
    let not_ascii = reqwest::header::HeaderValue::from_bytes("clé".as_bytes()).unwrap();
    expect_problem(post(not_ascii).send().await.unwrap(), 400).await;
    let twice = post(reqwest::header::HeaderValue::from_static("a"))
        .header("idempotency-key", "b")
        .send()
        .await
        .unwrap();
    expect_problem(twice, 400).await;
    assert_eq!(review_count_of(&app, app.editor.0).await, 0);

    let longest = reqwest::header::HeaderValue::from_str(&"x".repeat(200)).unwrap();
    assert_eq!(post(longest).send().await.unwrap().status(), 201);
}

/// Twenty copies of one request at once — as when retries of a request
/// that timed out race the original — spread over two instances on one
/// PostgreSQL database (one instance on SQLite, whose file is not shared).
async fn concurrent_retries_with_one_key_create_one_review(backend: Backend) {
    let app = spawn(backend).await;
    let camera = app.camera("Sony", "A1").await;
    let mut clients = vec![app.api.clone()];
    let _second = match backend {
        Backend::Postgres => {
            let second = app.another_instance().await;
            clients.push(second.api.clone());
            Some(second)
        }
        Backend::Sqlite => None,
    };
    let body = json!({"title": "Fast", "content": "Very fast.", "rating": 5, "camera_id": camera})
        .to_string();
    let start = Arc::new(Barrier::new(20));
    let mut requests = JoinSet::new();
    for i in 0..20 {
        let api = clients[i % clients.len()].clone();
        let (token, body, start) = (app.editor.1.clone(), body.clone(), start.clone());
        requests.spawn(async move {
            start.wait().await;
            tokio::time::timeout(
                Duration::from_secs(30),
                post_keyed(&api, "/api/reviews", &token, "one-key", &body),
            )
            .await
            .expect("answered within 30 s")
        });
    }
    let answers = requests.join_all().await;
    let first = answers.iter().find(|a| !a.replayed).expect("one creates");
    for answer in &answers {
        assert_eq!(answer.status, 201, "{answer:?}");
        assert_eq!(answer.body["id"], first.body["id"]);
        assert_eq!(answer.body, first.body);
        assert_eq!(answer.location, first.location);
    }
    assert_eq!(answers.iter().filter(|a| !a.replayed).count(), 1);
    assert_eq!(review_count_of(&app, app.editor.0).await, 1);
}

async fn keys_of_different_users_do_not_collide(backend: Backend) {
    let app = spawn(backend).await;
    let camera = app.camera("Pentax", "K-1 II").await;
    let (other, other_token) = app.token_for(&["editor"]);
    let body =
        json!({"title": "Rugged", "content": "Weather sealed.", "rating": 4, "camera_id": camera})
            .to_string();
    let mine = post_keyed(&app.api, "/api/reviews", &app.editor.1, "shared", &body).await;
    let theirs = post_keyed(&app.api, "/api/reviews", &other_token, "shared", &body).await;
    assert_eq!((mine.status, theirs.status), (201, 201));
    assert!(!theirs.replayed);
    assert_ne!(mine.body["id"], theirs.body["id"]);
    assert_eq!(theirs.body["editor_id"], other.to_string());
    assert_eq!(review_count_of(&app, app.editor.0).await, 1);
    assert_eq!(review_count_of(&app, other).await, 1);
    let theirs_again = post_keyed(&app.api, "/api/reviews", &other_token, "shared", &body).await;
    assert_replay_of(&theirs_again, &theirs);
}

async fn the_header_is_documented(backend: Backend) {
    let app = spawn(backend).await;
    let openapi = app.get_json("/openapi.json").await;
    for path in ["/api/reviews", "/api/cameras", "/api/lenses"] {
        let parameters = openapi["paths"][path]["post"]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{path} has parameters"));
        let header = parameters
            .iter()
            .find(|p| p["name"] == "Idempotency-Key")
            .unwrap_or_else(|| panic!("{path} documents Idempotency-Key"));
        assert_eq!(header["in"], "header");
        assert_ne!(header["required"], true);
    }
}
