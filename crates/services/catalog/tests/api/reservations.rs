//! The internal reservation API: who may call it, all-or-nothing holds,
//! idempotent settlement, expiry, and stock under concurrency.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use uuid::Uuid;
use zocalo_testkit::{Backend, backend_tests, expect_problem};

use crate::helpers::{fields, one_item, spawn, spawn_with};
use tokio_util::sync::CancellationToken;
use zocalo_catalog::{Application, Settings};
use zocalo_testkit::TestTokens;

backend_tests!(
    internal_endpoints_need_the_service_role,
    reserve_commit_and_release_are_idempotent,
    a_returned_sale_restocks_once,
    only_committed_reservations_can_be_returned,
    concurrent_returns_restock_once,
    insufficient_stock_reserves_nothing,
    the_sweep_expires_holds_and_returns_stock_once,
    concurrent_reservations_never_oversell,
    concurrent_release_and_sweep_return_stock_once,
    shutdown_stops_the_server_and_the_sweep,
);

async fn internal_endpoints_need_the_service_role(backend: Backend) {
    let app = spawn(backend).await;
    let book = app.book("Guarded", "4.00", 5).await;
    let id = Uuid::now_v7();
    let body = one_item(id, book, 1);
    let (_, user) = app.user(&[]);
    let (_, admin) = app.user(&["admin", "seller"]);
    let call = |token: Option<String>, method: &str, path: String| {
        let mut request = match method {
            "GET" => app.api.get(&path),
            _ => app.api.post(&path),
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if path == "/internal/reservations" {
            request = request.json(&body);
        }
        request.send()
    };
    let endpoints = [
        ("POST", "/internal/reservations".to_owned()),
        ("GET", format!("/internal/reservations/{id}")),
        ("POST", format!("/internal/reservations/{id}/commit")),
        ("POST", format!("/internal/reservations/{id}/release")),
        ("POST", format!("/internal/reservations/{id}/return")),
    ];
    for (method, path) in &endpoints {
        expect_problem(call(None, method, path.clone()).await.unwrap(), 401).await;
        for token in [&user, &admin, &app.seller.1] {
            let response = call(Some(token.clone()), method, path.clone())
                .await
                .unwrap();
            expect_problem(response, 403).await;
        }
        let bad_token = call(Some("not.a.token".into()), method, path.clone())
            .await
            .unwrap();
        expect_problem(bad_token, 401).await;
    }
    assert_eq!(app.stock(book).await, 5, "refused callers moved no stock");
    assert_eq!(app.reserve(&body).await.status(), 201);
    assert_eq!(app.stock(book).await, 4);
}

async fn reserve_commit_and_release_are_idempotent(backend: Backend) {
    let app = spawn(backend).await;
    let a = app.book("Book A", "12.50", 5).await;
    let b = app.book("Book B", "3.00", 3).await;
    let order = Uuid::now_v7();
    let body = json!({"reservation_id": order, "items": [
        {"book_id": a, "quantity": 1}, {"book_id": b, "quantity": 1}, {"book_id": a, "quantity": 1}
    ]});
    let response = app.reserve(&body).await;
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers()["location"],
        format!("/internal/reservations/{order}").as_str()
    );
    let held: Value = response.json().await.unwrap();
    assert_eq!(held["reservation_id"], order.to_string());
    assert_eq!(held["status"], "held");
    let items = held["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "repeated books are merged");
    assert_eq!(items[0]["book_id"], a.to_string());
    assert_eq!(items[0]["quantity"], 2);
    assert_eq!(
        items[0]["unit_price"],
        json!({"amount": "12.50", "currency": "USD"})
    );
    assert_eq!(items[0]["title"], "Book A");
    assert_eq!(items[0]["seller_id"], app.seller.0.to_string());
    assert_eq!(items[1]["quantity"], 1);
    let expires: chrono::DateTime<Utc> = held["expires_at"].as_str().unwrap().parse().unwrap();
    let ttl = expires - Utc::now();
    assert!(
        ttl > chrono::Duration::seconds(880) && ttl <= chrono::Duration::seconds(900),
        "default ttl"
    );
    assert_eq!((app.stock(a).await, app.stock(b).await), (3, 2));

    // The same request again (a retry after a timeout) changes nothing.
    let again = app.reserve(&body).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap(), held);
    assert_eq!((app.stock(a).await, app.stock(b).await), (3, 2));
    let reused = app.reserve(&one_item(order, b, 1)).await;
    expect_problem(reused, 409).await;
    let fetched: Value = app.reservation(order).await.json().await.unwrap();
    assert_eq!(fetched, held);

    // Later price edits do not change what was reserved.
    let repriced = app
        .api
        .patch(&format!("/api/books/{a}"))
        .bearer_auth(&app.seller.1)
        .json(&json!({"price": {"amount": "99.00", "currency": "USD"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(repriced.status(), 200);

    let committed = app.settle(order, "commit").await;
    assert_eq!(committed.status(), 200);
    let committed: Value = committed.json().await.unwrap();
    assert_eq!(committed["status"], "committed");
    assert_eq!(committed["items"][0]["unit_price"]["amount"], "12.50");
    assert_eq!(
        app.settle(order, "commit").await.status(),
        200,
        "commit is idempotent"
    );
    let problem = expect_problem(app.settle(order, "release").await, 409).await;
    assert_eq!(problem["type"], "urn:zocalo:problem:reservation-state");
    assert_eq!(
        (app.stock(a).await, app.stock(b).await),
        (3, 2),
        "sold copies stay sold"
    );

    let second = Uuid::now_v7();
    assert_eq!(app.reserve(&one_item(second, b, 2)).await.status(), 201);
    assert_eq!(app.stock(b).await, 0);
    for _ in 0..3 {
        let released = app.settle(second, "release").await;
        assert_eq!(released.status(), 200);
        assert_eq!(
            released.json::<Value>().await.unwrap()["status"],
            "released"
        );
        assert_eq!(app.stock(b).await, 2, "stock returns once");
    }
    let problem = expect_problem(app.settle(second, "commit").await, 409).await;
    assert!(problem["detail"].as_str().unwrap().contains("released"));
    let replay = app.reserve(&one_item(second, b, 2)).await;
    assert_eq!(
        replay.status(),
        200,
        "a settled id is still the same reservation"
    );
    assert_eq!(replay.json::<Value>().await.unwrap()["status"], "released");
    assert_eq!(app.stock(b).await, 2);

    let unknown = Uuid::now_v7();
    for action in ["commit", "release"] {
        expect_problem(app.settle(unknown, action).await, 404).await;
    }
    expect_problem(app.reservation(unknown).await, 404).await;
}

async fn a_returned_sale_restocks_once(backend: Backend) {
    let app = spawn(backend).await;
    let a = app.book("Returned A", "6.00", 3).await;
    let b = app.book("Returned B", "2.00", 1).await;
    let order = Uuid::now_v7();
    let body = json!({"reservation_id": order, "items": [
        {"book_id": a, "quantity": 2}, {"book_id": b, "quantity": 1}
    ]});
    assert_eq!(app.reserve(&body).await.status(), 201);
    assert_eq!(app.settle(order, "commit").await.status(), 200);
    assert_eq!((app.stock(a).await, app.stock(b).await), (1, 0));

    for _ in 0..3 {
        let returned = app.settle(order, "return").await;
        assert_eq!(returned.status(), 200);
        let returned: Value = returned.json().await.unwrap();
        assert_eq!(returned["status"], "returned");
        assert_eq!(returned["items"].as_array().unwrap().len(), 2);
        assert_eq!(
            (app.stock(a).await, app.stock(b).await),
            (3, 1),
            "every line's copies come back, once"
        );
    }
    let fetched: Value = app.reservation(order).await.json().await.unwrap();
    assert_eq!(fetched["status"], "returned");

    // Returned is final: it can be neither committed nor released again.
    for action in ["commit", "release"] {
        let problem = expect_problem(app.settle(order, action).await, 409).await;
        assert_eq!(problem["type"], "urn:zocalo:problem:reservation-state");
        assert!(
            problem["detail"].as_str().unwrap().contains("returned"),
            "{problem}"
        );
    }
    assert_eq!((app.stock(a).await, app.stock(b).await), (3, 1));
    let replay = app.reserve(&body).await;
    assert_eq!(replay.status(), 200, "the id stays used");
    assert_eq!(replay.json::<Value>().await.unwrap()["status"], "returned");
    assert_eq!((app.stock(a).await, app.stock(b).await), (3, 1));
}

async fn only_committed_reservations_can_be_returned(backend: Backend) {
    let app = spawn_with(backend, |settings| settings.sweep_interval_ms = 60_000).await;
    let book = app.book("Unsold", "3.00", 5).await;

    let held = Uuid::now_v7();
    assert_eq!(app.reserve(&one_item(held, book, 2)).await.status(), 201);
    let problem = expect_problem(app.settle(held, "return").await, 409).await;
    assert_eq!(problem["type"], "urn:zocalo:problem:reservation-state");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("held") && detail.contains("committed"),
        "{detail}"
    );
    assert_eq!(app.stock(book).await, 3, "a held reservation is untouched");
    assert_eq!(
        app.reservation(held).await.json::<Value>().await.unwrap()["status"],
        "held"
    );

    let released = Uuid::now_v7();
    assert_eq!(
        app.reserve(&one_item(released, book, 1)).await.status(),
        201
    );
    assert_eq!(app.settle(released, "release").await.status(), 200);
    let problem = expect_problem(app.settle(released, "return").await, 409).await;
    assert!(problem["detail"].as_str().unwrap().contains("released"));

    let expired = Uuid::now_v7();
    assert_eq!(app.reserve(&one_item(expired, book, 1)).await.status(), 201);
    let later = Utc::now() + chrono::Duration::hours(1);
    assert_eq!(app.store.release_expired(later).await.unwrap(), 2);
    let problem = expect_problem(app.settle(expired, "return").await, 409).await;
    assert!(problem["detail"].as_str().unwrap().contains("expired"));
    assert_eq!(
        app.stock(book).await,
        5,
        "each hold came back once, no more"
    );

    let unknown = expect_problem(app.settle(Uuid::now_v7(), "return").await, 404).await;
    assert_eq!(unknown["status"], 404);
    assert_eq!(app.stock(book).await, 5);
}

async fn concurrent_returns_restock_once(backend: Backend) {
    let app = spawn(backend).await;
    let book = app.book("Contested return", "8.00", 10).await;
    let mut orders = Vec::new();
    for _ in 0..5 {
        let order = Uuid::now_v7();
        assert_eq!(app.reserve(&one_item(order, book, 2)).await.status(), 201);
        assert_eq!(app.settle(order, "commit").await.status(), 200);
        orders.push(order);
    }
    assert_eq!(app.stock(book).await, 0);
    // Every sale is returned by eight callers at once (retries on several
    // orders workers and catalog instances).
    let mut racers = JoinSet::new();
    for order in &orders {
        for _ in 0..8 {
            let api = app.api.clone();
            let token = app.service.clone();
            let path = format!("/internal/reservations/{order}/return");
            racers.spawn(async move {
                let response = api.post(&path).bearer_auth(token).send().await.unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                (
                    status,
                    body["status"].as_str().unwrap_or_default().to_owned(),
                )
            });
        }
    }
    while let Some(answer) = racers.join_next().await {
        assert_eq!(answer.unwrap(), (200, "returned".to_owned()));
    }
    assert_eq!(
        app.stock(book).await,
        10,
        "every sold copy came back exactly once"
    );
}

async fn insufficient_stock_reserves_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let plenty = app.book("Plenty", "1.00", 5).await;
    let scarce = app.book("Scarce", "2.00", 1).await;
    let empty = app.book("Empty", "3.00", 0).await;
    let order = Uuid::now_v7();
    let response = app
        .reserve(&json!({"reservation_id": order, "items": [
            {"book_id": plenty, "quantity": 2}, {"book_id": scarce, "quantity": 2}, {"book_id": empty, "quantity": 1}
        ]}))
        .await;
    let problem = expect_problem(response, 409).await;
    assert_eq!(problem["type"], "urn:zocalo:problem:insufficient-stock");
    assert_eq!(fields(&problem), ["items[1].quantity", "items[2].quantity"]);
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains(&scarce.to_string()) && detail.contains(&empty.to_string()),
        "{detail}"
    );
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("1 available")
    );
    assert_eq!(
        (
            app.stock(plenty).await,
            app.stock(scarce).await,
            app.stock(empty).await
        ),
        (5, 1, 0),
        "no item of a refused reservation is held"
    );
    expect_problem(app.reservation(order).await, 404).await;

    let unknown = Uuid::now_v7();
    let response = app
        .reserve(&json!({"reservation_id": order, "items": [
            {"book_id": plenty, "quantity": 1}, {"book_id": unknown, "quantity": 1}, {"book_id": scarce, "quantity": 9}
        ]}))
        .await;
    let problem = expect_problem(response, 422).await;
    assert_eq!(
        fields(&problem),
        ["items[1].book_id"],
        "unknown books first: retrying cannot help"
    );
    assert_eq!(app.stock(plenty).await, 5);

    // The refused id was not used up: the order may try again.
    let retried = app.reserve(&one_item(order, plenty, 5)).await;
    assert_eq!(retried.status(), 201);
    assert_eq!(app.stock(plenty).await, 0);
}

async fn the_sweep_expires_holds_and_returns_stock_once(backend: Backend) {
    let app = spawn_with(backend, |settings| settings.sweep_interval_ms = 50).await;
    let book = app.book("Fleeting", "5.00", 3).await;
    let order = Uuid::now_v7();
    let mut body = one_item(order, book, 2);
    body["ttl_secs"] = json!(1);
    assert_eq!(app.reserve(&body).await.status(), 201);
    let kept = Uuid::now_v7();
    assert_eq!(app.reserve(&one_item(kept, book, 1)).await.status(), 201);
    assert_eq!(app.stock(book).await, 0);

    let mut status = Value::Null;
    for _ in 0..100 {
        status = app.reservation(order).await.json::<Value>().await.unwrap()["status"].clone();
        if status == "expired" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "expired", "the background sweep expired the hold");
    assert_eq!(
        app.stock(book).await,
        2,
        "its stock came back; the other hold stays"
    );
    assert_eq!(
        app.reservation(kept).await.json::<Value>().await.unwrap()["status"],
        "held"
    );

    let released = app.settle(order, "release").await;
    assert_eq!(
        released.status(),
        200,
        "releasing an expired hold is a no-op"
    );
    assert_eq!(released.json::<Value>().await.unwrap()["status"], "expired");
    expect_problem(app.settle(order, "commit").await, 409).await;
    let later = Utc::now() + chrono::Duration::hours(2);
    assert_eq!(
        app.store.release_expired(later).await.unwrap(),
        1,
        "only the other hold was left"
    );
    assert_eq!(app.store.release_expired(later).await.unwrap(), 0);
    assert_eq!(
        app.stock(book).await,
        3,
        "each hold returned its stock exactly once"
    );
}

async fn concurrent_reservations_never_oversell(backend: Backend) {
    let app = spawn(backend).await;
    let book = app.book("Bestseller", "20.00", 10).await;
    let mut buyers = JoinSet::new();
    for _ in 0..200 {
        let api = app.api.clone();
        let token = app.service.clone();
        let body = one_item(Uuid::now_v7(), book, 1);
        buyers.spawn(async move {
            let response = api
                .post("/internal/reservations")
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            if status == 409 {
                let problem: Value = response.json().await.unwrap();
                assert_eq!(problem["type"], "urn:zocalo:problem:insufficient-stock");
            }
            status
        });
    }
    let (mut held, mut refused) = (0, 0);
    while let Some(status) = buyers.join_next().await {
        match status.unwrap() {
            201 => held += 1,
            409 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((held, refused), (10, 190));
    assert_eq!(app.stock(book).await, 0);
    let listed = app.get_json(&format!("/api/books/{book}")).await;
    assert_eq!(listed["stock"], 0);
    // Nothing left to sell, and the database would refuse to go below zero.
    let more = app.reserve(&one_item(Uuid::now_v7(), book, 1)).await;
    expect_problem(more, 409).await;
}

async fn concurrent_release_and_sweep_return_stock_once(backend: Backend) {
    let app = spawn(backend).await;
    let book = app.book("Contested", "8.00", 20).await;
    let mut orders = Vec::new();
    for _ in 0..20 {
        let order = Uuid::now_v7();
        assert_eq!(app.reserve(&one_item(order, book, 1)).await.status(), 201);
        orders.push(order);
    }
    assert_eq!(app.stock(book).await, 0);
    // Every hold is due for the sweep (run with a future clock) while the
    // orders service releases each one at the same moment.
    let future = Utc::now() + chrono::Duration::hours(1);
    let mut racers = JoinSet::new();
    for _ in 0..3 {
        let store = app.store.clone();
        racers.spawn(async move { store.release_expired(future).await.unwrap() });
    }
    for order in &orders {
        let api = app.api.clone();
        let token = app.service.clone();
        let path = format!("/internal/reservations/{order}/release");
        racers.spawn(async move {
            let response = api.post(&path).bearer_auth(token).send().await.unwrap();
            assert_eq!(response.status(), 200);
            0
        });
    }
    let mut expired = 0;
    while let Some(count) = racers.join_next().await {
        expired += count.unwrap();
    }
    assert!(expired <= 20);
    assert_eq!(
        app.stock(book).await,
        20,
        "every unit came back exactly once"
    );
    let mut statuses = Vec::new();
    for order in &orders {
        let reservation: Value = app.reservation(*order).await.json().await.unwrap();
        statuses.push(reservation["status"].as_str().unwrap().to_owned());
    }
    let swept = statuses.iter().filter(|s| *s == "expired").count() as u64;
    assert_eq!(swept, expired, "the sweep counted what it settled");
    assert!(
        statuses.iter().all(|s| s == "expired" || s == "released"),
        "{statuses:?}"
    );
}

async fn shutdown_stops_the_server_and_the_sweep(backend: Backend) {
    let db = zocalo_testkit::database(backend).await.unwrap();
    let tokens = TestTokens::new();
    let settings = Settings {
        database_url: db.url.clone(),
        database_max_connections: 2,
        sweep_interval_ms: 10,
        ..Settings::default()
    };
    let app = Application::build_with_keys(settings, tokens.jwks())
        .await
        .unwrap();
    let port = app.port();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let live = reqwest::get(format!("http://127.0.0.1:{port}/live"))
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    // Let the sweep tick a few times, then stop everything.
    tokio::time::sleep(Duration::from_millis(50)).await;
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(5), running).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "run_until_stopped returns promptly: {stopped:?}"
    );
}
