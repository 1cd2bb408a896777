//! Webhooks: managers register them, every event of their cinema reaches
//! a real HTTP receiver signed, failures are retried with backoff and
//! dead-lettered, and the delivery log tells what happened.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use uuid::Uuid;
use zocalo_notify::WebhookSettings;
use zocalo_notify::webhook::{SIGNATURE_HEADER, verify};
use zocalo_testkit::serve::Served;
use zocalo_testkit::{Backend, backend_tests, expect_problem};

use crate::helpers::{CARD, TestApp, id, spawn_with};

backend_tests!(
    a_managers_webhook_gets_signed_events_and_logs_deliveries,
    a_failing_receiver_is_retried_then_dead_lettered,
    only_the_cinemas_managers_see_its_webhooks,
    bad_webhook_requests_are_4xx,
    private_addresses_are_refused_unless_allowed,
    concurrent_registrations_respect_the_limit_and_uniqueness,
);

const WAIT: Duration = Duration::from_secs(20);

fn fast(max_attempts: u32) -> WebhookSettings {
    WebhookSettings {
        timeout_ms: 2_000,
        max_attempts,
        backoff_base_ms: 30,
        backoff_cap_ms: 200,
        concurrency: 4,
        // The receivers here listen on 127.0.0.1.
        allow_private_targets: true,
    }
}

async fn app(backend: Backend, max_attempts: u32) -> TestApp {
    spawn_with(backend, |s| s.webhooks = fast(max_attempts)).await
}

/// A receiver that answers 503 to its first `failures` requests.
#[derive(Clone, Default)]
struct Receiver {
    calls: Arc<Mutex<usize>>,
    received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    failures: usize,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let call = {
        let mut calls = r.calls.lock().unwrap();
        *calls += 1;
        *calls
    };
    if call <= r.failures {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    r.received.lock().unwrap().push((headers, body));
    StatusCode::OK
}

async fn receiver(failures: usize) -> (Receiver, Served) {
    let r = Receiver {
        failures,
        ..Receiver::default()
    };
    let router = Router::new()
        .route("/in", post(receive))
        .with_state(r.clone());
    (r, zocalo_testkit::serve::serve(router).await)
}

impl Receiver {
    /// The bodies received so far, once there are `n`.
    async fn bodies(&self, n: usize) -> Vec<(HeaderMap, Bytes)> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.received.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} deliveries",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

async fn register(app: &TestApp, token: &str, cinema: Uuid, url: &str) -> Value {
    app.expect(
        token,
        &format!("/api/cinema/cinemas/{cinema}/webhooks"),
        &json!({"url": url}),
        201,
    )
    .await
}

async fn get(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.api.get(path).bearer_auth(token).send().await.unwrap()
}

/// The delivery log once `done` says it is complete.
async fn log_until(
    app: &TestApp,
    token: &str,
    path: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let response = get(app, token, path).await;
        assert_eq!(response.status(), 200);
        let log: Vec<Value> = response.json().await.unwrap();
        if done(&log) {
            return log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery log stuck at {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn a_managers_webhook_gets_signed_events_and_logs_deliveries(backend: Backend) {
    let app = app(backend, 5).await;
    let venue = app.venue(5, 10, json!({})).await;
    let (receiver, served) = receiver(1).await;
    let created = register(
        &app,
        &venue.manager,
        venue.cinema,
        &format!("{}/in", served.url),
    )
    .await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    let webhook = id(&created, "webhook_id");

    // Events after the registration: a new showtime, a purchase, a refund.
    let showtime = app
        .showtime(
            &venue.manager,
            venue.room,
            venue.movie,
            "2030-05-02T18:00:00Z",
        )
        .await;
    assert_eq!(showtime.status(), 201);
    let (_, customer) = app.customer();
    let purchase = app
        .buy(
            &customer,
            "k1",
            venue.showtime,
            &json!({"seats": ["A1"], "card": CARD}),
        )
        .await;
    assert_eq!(purchase.status(), 201);
    let purchase_id = id(&purchase.json().await.unwrap(), "purchase_id");
    app.expect(
        &customer,
        &format!("/api/cinema/purchases/{purchase_id}/refund"),
        &json!({}),
        200,
    )
    .await;

    let received = receiver.bodies(3).await;
    let mut kinds = Vec::new();
    for (headers, body) in &received {
        let signature = headers[SIGNATURE_HEADER].to_str().unwrap();
        verify(
            &secret,
            signature,
            body,
            chrono::Utc::now(),
            Duration::from_secs(300),
        )
        .expect("signed with the secret shown at registration");
        let envelope: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(headers["zocalo-event-id"], envelope["id"].as_str().unwrap());
        kinds.push(envelope["type"].as_str().unwrap().to_owned());
    }
    kinds.sort();
    assert_eq!(
        kinds,
        ["purchase.completed", "purchase.refunded", "showtime.saved"]
    );

    let path = format!(
        "/api/cinema/cinemas/{}/webhooks/{webhook}/deliveries",
        venue.cinema
    );
    let log = log_until(&app, &venue.manager, &path, |log| {
        log.iter().filter(|d| d["outcome"] == "delivered").count() == 3
    })
    .await;
    assert_eq!(
        log.len(),
        4,
        "one failed attempt, three deliveries: {log:?}"
    );
    let failed: Vec<&Value> = log.iter().filter(|d| d["outcome"] == "retrying").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["status"], 503);
    assert_eq!(failed[0]["attempt"], 1);
    let alias = get(
        &app,
        &venue.manager,
        &format!("/api/cinema/webhooks/{webhook}/deliveries"),
    )
    .await;
    assert_eq!(alias.json::<Vec<Value>>().await.unwrap().len(), 4);

    // Listed without the secret; deleting stops deliveries.
    let listed: Vec<Value> = get(
        &app,
        &venue.manager,
        &format!("/api/cinema/cinemas/{}/webhooks", venue.cinema),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].get("secret").is_none());
    let deleted = app
        .delete(
            &venue.manager,
            &format!("/api/cinema/cinemas/{}/webhooks/{webhook}", venue.cinema),
        )
        .await;
    assert_eq!(deleted.status(), 204);
    expect_problem(get(&app, &venue.manager, &path).await, 404).await;
}

async fn a_failing_receiver_is_retried_then_dead_lettered(backend: Backend) {
    let app = app(backend, 3).await;
    let venue = app.venue(5, 10, json!({})).await;
    let (receiver, served) = receiver(usize::MAX).await;
    let created = register(
        &app,
        &venue.manager,
        venue.cinema,
        &format!("{}/in", served.url),
    )
    .await;
    let webhook = id(&created, "webhook_id");
    let response = app
        .patch(
            &venue.manager,
            &format!("/api/cinema/showtimes/{}", venue.showtime),
            &json!({"starts_at": "2030-05-01T19:00:00Z"}),
        )
        .await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);

    let path = format!(
        "/api/cinema/cinemas/{}/webhooks/{webhook}/deliveries",
        venue.cinema
    );
    let log = log_until(&app, &venue.manager, &path, |log| {
        log.iter().any(|d| d["outcome"] == "gave_up")
    })
    .await;
    let attempts: Vec<(i64, &str)> = log
        .iter()
        .rev()
        .map(|d| {
            (
                d["attempt"].as_i64().unwrap(),
                d["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(attempts, [(1, "retrying"), (2, "retrying"), (3, "gave_up")]);
    assert_eq!(
        *receiver.calls.lock().unwrap(),
        3,
        "no attempt after the last"
    );
}

async fn only_the_cinemas_managers_see_its_webhooks(backend: Backend) {
    let app = app(backend, 3).await;
    let a = app.venue(5, 10, json!({})).await;
    let b = app.venue(5, 10, json!({})).await;
    let created = register(&app, &a.manager, a.cinema, "https://hooks.example.com/a").await;
    let webhook = id(&created, "webhook_id");
    let (_, customer) = app.customer();
    let base = format!("/api/cinema/cinemas/{}/webhooks", a.cinema);
    for token in [&b.manager, &customer] {
        expect_problem(
            app.post(token, &base, &json!({"url": "https://x.example.com/"}))
                .await,
            404,
        )
        .await;
        expect_problem(get(&app, token, &base).await, 404).await;
        expect_problem(
            get(&app, token, &format!("{base}/{webhook}/deliveries")).await,
            404,
        )
        .await;
        expect_problem(
            get(
                &app,
                token,
                &format!("/api/cinema/webhooks/{webhook}/deliveries"),
            )
            .await,
            404,
        )
        .await;
        expect_problem(
            get(
                &app,
                token,
                &format!("/api/cinema/webhooks?cinema_id={}", a.cinema),
            )
            .await,
            404,
        )
        .await;
        expect_problem(app.delete(token, &format!("{base}/{webhook}")).await, 404).await;
    }
    // A's webhook is not B's, even for B's manager on B's path.
    expect_problem(
        app.delete(
            &b.manager,
            &format!("/api/cinema/cinemas/{}/webhooks/{webhook}", b.cinema),
        )
        .await,
        404,
    )
    .await;
    // The admin may.
    let listed: Vec<Value> = get(&app, &app.admin, &base).await.json().await.unwrap();
    assert_eq!(listed.len(), 1);
}

async fn bad_webhook_requests_are_4xx(backend: Backend) {
    let app = app(backend, 3).await;
    let venue = app.venue(5, 10, json!({})).await;
    let base = format!("/api/cinema/cinemas/{}/webhooks", venue.cinema);
    for (body, status) in [
        (json!({"url": "ftp://example.com/in"}), 422),
        (json!({"url": "https://user:pw@example.com/in"}), 422),
        (json!({"url": "not a url"}), 422),
        (json!({"url": 7}), 422),
        (json!({}), 422),
        (json!({"url": "https://example.com/in", "extra": true}), 422),
    ] {
        expect_problem(app.post(&venue.manager, &base, &body).await, status).await;
    }
    let malformed = app
        .api
        .post(&base)
        .bearer_auth(&venue.manager)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_problem(malformed, 400).await;
    expect_problem(
        app.post(
            &venue.manager,
            &format!("/api/cinema/cinemas/{}/webhooks", Uuid::now_v7()),
            &json!({"url": "https://example.com/"}),
        )
        .await,
        404,
    )
    .await;

    register(&app, &venue.manager, venue.cinema, "https://example.com/in").await;
    expect_problem(
        app.post(
            &venue.manager,
            &base,
            &json!({"url": "https://example.com/in"}),
        )
        .await,
        409,
    )
    .await;
    for i in 1..10 {
        register(
            &app,
            &venue.manager,
            venue.cinema,
            &format!("https://example.com/in/{i}"),
        )
        .await;
    }
    let problem = expect_problem(
        app.post(
            &venue.manager,
            &base,
            &json!({"url": "https://example.com/eleven"}),
        )
        .await,
        409,
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("at most 10"),
        "{problem}"
    );
    expect_problem(
        get(
            &app,
            &venue.manager,
            &format!("/api/cinema/webhooks/{}/deliveries?limit=0", Uuid::now_v7()),
        )
        .await,
        422,
    )
    .await;
    expect_problem(
        get(&app, &venue.manager, "/api/cinema/webhooks?cinema_id=nope").await,
        400,
    )
    .await;
}

async fn concurrent_registrations_respect_the_limit_and_uniqueness(backend: Backend) {
    let app = app(backend, 3).await;
    let venue = app.venue(5, 10, json!({})).await;
    let base = format!("/api/cinema/cinemas/{}/webhooks", venue.cinema);
    let statuses = |urls: Vec<String>| {
        let (app, base, manager) = (&app, &base, &venue.manager);
        futures_util::future::join_all(urls.into_iter().map(move |url| async move {
            app.post(manager, base, &json!({"url": url}))
                .await
                .status()
                .as_u16()
        }))
    };
    // The same URL 10 times at once: one webhook.
    let same = statuses(vec!["https://example.com/same".to_owned(); 10]).await;
    assert_eq!(same.iter().filter(|s| **s == 201).count(), 1, "{same:?}");
    assert!(same.iter().all(|s| *s == 201 || *s == 409), "{same:?}");
    // 20 different URLs at once: the cinema ends with exactly 10.
    let many = statuses(
        (0..20)
            .map(|i| format!("https://example.com/{i}"))
            .collect(),
    )
    .await;
    assert_eq!(many.iter().filter(|s| **s == 201).count(), 9, "{many:?}");
    assert!(many.iter().all(|s| *s == 201 || *s == 409), "{many:?}");
    let listed: Vec<Value> = get(&app, &venue.manager, &base).await.json().await.unwrap();
    assert_eq!(listed.len(), 10);
}

/// A manager cannot point a webhook at the platform's own network: an
/// address that is loopback, private or link-local is a 422 naming `url`
/// unless the operator allowed private targets.
async fn private_addresses_are_refused_unless_allowed(backend: Backend) {
    let strict = spawn_with(backend, |s| {
        s.webhooks = WebhookSettings {
            allow_private_targets: false,
            ..fast(3)
        }
    })
    .await;
    let venue = strict.venue(5, 10, json!({})).await;
    let base = format!("/api/cinema/cinemas/{}/webhooks", venue.cinema);
    for url in [
        "http://127.0.0.1:8081/internal/events",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.7/hook",
        "http://[::1]/hook",
        "http://[::ffff:192.168.1.1]/hook",
    ] {
        let response = strict
            .post(&venue.manager, &base, &json!({ "url": url }))
            .await;
        let problem = expect_problem(response, 422).await;
        assert_eq!(problem["errors"][0]["field"], "url", "{url}: {problem}");
        let message = problem["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("private"), "{url}: {problem}");
    }
    register(
        &strict,
        &venue.manager,
        venue.cinema,
        "https://example.com/in",
    )
    .await;

    // The operator may allow them (the other tests' receivers are local).
    let allowed = app(backend, 3).await;
    let venue = allowed.venue(5, 10, json!({})).await;
    register(
        &allowed,
        &venue.manager,
        venue.cinema,
        "http://127.0.0.1:9/hook",
    )
    .await;
}
