//! The API: who may change what, showtimes that never overlap, the event
//! log endpoint, and problem+json for every client mistake.

use futures_util::future::join_all;
use serde_json::{Value, json};
use uuid::Uuid;
use zocalo_testkit::{Backend, assert_rejects_malformed_json, backend_tests, expect_problem};

use crate::helpers::{CARD, id, spawn};

backend_tests!(
    roles_decide_who_changes_what,
    a_manager_of_cinema_a_cannot_touch_cinema_b,
    showtimes_of_a_room_never_overlap,
    concurrent_overlapping_showtimes_get_one_slot,
    every_change_is_in_the_event_log_in_order,
    bad_input_gets_problem_json_never_500,
);

async fn roles_decide_who_changes_what(backend: Backend) {
    let app = spawn(backend).await;
    let (_, customer) = app.customer();
    let (_, manager) = app.manager();
    let chain = json!({"name": "Cinépolis"});
    expect_problem(app.post(&customer, "/api/cinema/chains", &chain).await, 403).await;
    expect_problem(app.post(&manager, "/api/cinema/chains", &chain).await, 403).await;
    let unauthenticated = app
        .api
        .post("/api/cinema/chains")
        .json(&chain)
        .send()
        .await
        .unwrap();
    expect_problem(unauthenticated, 401).await;
    let (chain_id, cinema, cinema_manager) = app.cinema().await;
    let movie = json!({"title": "Amores perros", "duration_min": 154});
    expect_problem(app.post(&customer, "/api/cinema/movies", &movie).await, 403).await;
    app.expect(&cinema_manager, "/api/cinema/movies", &movie, 201)
        .await;
    let room = json!({"cinema_id": cinema, "name": "Sala 2", "rows": 5, "seats_per_row": 8});
    expect_problem(app.post(&customer, "/api/cinema/rooms", &room).await, 403).await;
    // Chains, cinemas and managers are the admin's, even for the manager.
    let patch = json!({"name": "Cinemex Centro"});
    let path = format!("/api/cinema/cinemas/{cinema}");
    expect_problem(app.patch(&cinema_manager, &path, &patch).await, 403).await;
    let renamed = app.patch(&app.admin, &path, &patch).await;
    assert_eq!(renamed.status(), 200);
    let renamed: Value = renamed.json().await.unwrap();
    assert_eq!(renamed["version"], 3, "created, manager assigned, renamed");
    assert_eq!(renamed["manager_ids"].as_array().unwrap().len(), 1);
    let busy = app
        .delete(&app.admin, &format!("/api/cinema/chains/{chain_id}"))
        .await;
    let problem = expect_problem(busy, 409).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("cinemas"),
        "{problem}"
    );
}

async fn a_manager_of_cinema_a_cannot_touch_cinema_b(backend: Backend) {
    let app = spawn(backend).await;
    let a = app.venue(3, 4, json!({})).await;
    let b = app.venue(3, 4, json!({})).await;
    let room_b = json!({"cinema_id": b.cinema, "name": "Intrusa", "rows": 2, "seats_per_row": 2});
    expect_problem(
        app.post(&a.manager, "/api/cinema/rooms", &room_b).await,
        404,
    )
    .await;
    let rename = json!({"name": "Mía"});
    let path = format!("/api/cinema/rooms/{}", b.room);
    expect_problem(app.patch(&a.manager, &path, &rename).await, 404).await;
    expect_problem(app.delete(&a.manager, &path).await, 404).await;
    let moved = json!({"starts_at": "2030-05-02T18:00:00Z"});
    let path = format!("/api/cinema/showtimes/{}", b.showtime);
    expect_problem(app.patch(&a.manager, &path, &moved).await, 404).await;
    expect_problem(app.delete(&a.manager, &path).await, 404).await;
    let scheduled = app
        .showtime(&a.manager, b.room, a.movie, "2030-06-01T12:00:00Z")
        .await;
    expect_problem(scheduled, 404).await;
    // B's own manager can.
    assert_eq!(app.patch(&b.manager, &path, &moved).await.status(), 200);
    // And an unassigned manager loses access at once.
    let removed = app
        .api
        .delete(&format!(
            "/api/cinema/cinemas/{}/managers/{}",
            b.cinema,
            Uuid::nil()
        ))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(
        removed.status(),
        200,
        "removing someone not listed changes nothing"
    );
}

async fn showtimes_of_a_room_never_overlap(backend: Backend) {
    let app = spawn(backend).await;
    let (_, cinema, manager) = app.cinema().await;
    let room = app
        .room(&manager, cinema, 4, 4, json!({"cleaning_min": 20}))
        .await;
    let movie = app.movie(&manager, 100).await;
    let first = app
        .showtime(&manager, room, movie, "2030-01-01T18:00:00Z")
        .await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(
        first["ends_at"], "2030-01-01T20:00:00Z",
        "100 min + 20 min cleaning"
    );
    let first_id = id(&first, "showtime_id");
    // Starts during the cleaning of the first.
    let clash = app
        .showtime(&manager, room, movie, "2030-01-01T19:50:00Z")
        .await;
    let problem = expect_problem(clash, 409).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&first_id.to_string()),
        "{problem}"
    );
    let before = app
        .showtime(&manager, room, movie, "2030-01-01T16:00:00Z")
        .await;
    assert_eq!(before.status(), 201, "ends exactly when the first starts");
    let after = app
        .showtime(&manager, room, movie, "2030-01-01T20:00:00Z")
        .await;
    assert_eq!(after.status(), 201);
    let after_id = id(&after.json().await.unwrap(), "showtime_id");
    // Moving onto another is refused too; cancelling frees the slot.
    let path = format!("/api/cinema/showtimes/{after_id}");
    let moved = app
        .patch(
            &manager,
            &path,
            &json!({"starts_at": "2030-01-01T19:00:00Z"}),
        )
        .await;
    expect_problem(moved, 409).await;
    let cancelled = app
        .delete(&manager, &format!("/api/cinema/showtimes/{first_id}"))
        .await;
    assert_eq!(cancelled.status(), 200);
    assert_eq!(
        cancelled.json::<Value>().await.unwrap()["status"],
        "cancelled"
    );
    let moved = app
        .patch(
            &manager,
            &path,
            &json!({"starts_at": "2030-01-01T18:00:00Z"}),
        )
        .await;
    assert_eq!(moved.status(), 200);
    let (_, customer) = app.customer();
    let closed = app
        .buy(
            &customer,
            "k",
            first_id,
            &json!({"quantity": 1, "card": CARD}),
        )
        .await;
    expect_problem(closed, 409).await;
}

async fn concurrent_overlapping_showtimes_get_one_slot(backend: Backend) {
    let app = spawn(backend).await;
    let (_, cinema, manager) = app.cinema().await;
    let room = app.room(&manager, cinema, 4, 4, json!({})).await;
    let movie = app.movie(&manager, 90).await;
    let starts = [
        "2030-03-01T18:00:00Z",
        "2030-03-01T18:30:00Z",
        "2030-03-01T19:00:00Z",
        "2030-03-01T17:30:00Z",
    ];
    let attempts = (0..20).map(|i| app.showtime(&manager, room, movie, starts[i % starts.len()]));
    let statuses: Vec<u16> = join_all(attempts)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{statuses:?}"
    );
}

async fn every_change_is_in_the_event_log_in_order(backend: Backend) {
    let app = spawn(backend).await;
    let venue = app.venue(3, 4, json!({})).await;
    let (_, customer) = app.customer();
    let bought = app
        .buy(
            &customer,
            "k",
            venue.showtime,
            &json!({"seats": ["A1", "A2"], "card": CARD}),
        )
        .await;
    assert_eq!(bought.status(), 201);
    let forbidden = app
        .api
        .get("/internal/events")
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    expect_problem(forbidden, 403).await;
    let service = app.service();
    let mut kinds = Vec::new();
    let mut after = 0;
    loop {
        let page: Value = app
            .api
            .get(&format!("/internal/events?after={after}&limit=2"))
            .bearer_auth(&service)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for event in page["events"].as_array().unwrap() {
            assert!(event["seq"].as_i64().unwrap() > after);
            after = event["seq"].as_i64().unwrap();
            kinds.push(event["kind"].as_str().unwrap().to_owned());
        }
        if page["next_after"].is_null() {
            break;
        }
    }
    assert_eq!(
        kinds,
        [
            "chain.saved",
            "cinema.saved",
            "cinema.saved",
            "room.saved",
            "movie.saved",
            "showtime.saved",
            "purchase.completed"
        ]
    );
    let last: Value = app
        .api
        .get(&format!("/internal/events?after={}", after - 1))
        .bearer_auth(&service)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let completed = &last["events"][0]["payload"];
    assert_eq!(
        completed["seat_map"],
        json!({"version": 1, "sold": ["A1", "A2"]})
    );
    assert_eq!(completed["tickets"].as_array().unwrap().len(), 2);
    for bad in ["after=-1", "limit=0", "limit=5000", "after=x"] {
        let response = app
            .api
            .get(&format!("/internal/events?{bad}"))
            .bearer_auth(&service)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error(), "{bad}");
        expect_problem(response, if bad == "after=x" { 400 } else { 422 }).await;
    }
}

async fn bad_input_gets_problem_json_never_500(backend: Backend) {
    let app = spawn(backend).await;
    let venue = app.venue(3, 4, json!({})).await;
    for path in [
        "/api/cinema/chains",
        "/api/cinema/movies",
        "/api/cinema/rooms",
        "/api/cinema/showtimes",
    ] {
        assert_rejects_malformed_json(&app.api, path, Some(&app.admin)).await;
    }
    let purchases = format!("/api/cinema/showtimes/{}/purchases", venue.showtime);
    assert_rejects_malformed_json(&app.api, &purchases, Some(&app.admin)).await;
    let invalid = [
        ("/api/cinema/chains", json!({"name": ""})),
        ("/api/cinema/chains", json!({"name": 5})),
        (
            "/api/cinema/cinemas",
            json!({"chain_id": venue.chain, "name": "x", "city": "", "address": "y"}),
        ),
        (
            "/api/cinema/cinemas",
            json!({"chain_id": Uuid::nil(), "name": "x", "city": "y", "address": "z"}),
        ),
        (
            "/api/cinema/cinemas",
            json!({"chain_id": "not-a-uuid", "name": "x", "city": "y", "address": "z"}),
        ),
        (
            "/api/cinema/rooms",
            json!({"cinema_id": venue.cinema, "name": "x", "rows": 0, "seats_per_row": 5}),
        ),
        (
            "/api/cinema/rooms",
            json!({"cinema_id": venue.cinema, "name": "x", "rows": 27, "seats_per_row": 5}),
        ),
        (
            "/api/cinema/rooms",
            json!({"cinema_id": venue.cinema, "name": "x", "rows": 2, "seats_per_row": 5, "disabled": ["C1"]}),
        ),
        (
            "/api/cinema/movies",
            json!({"title": "x", "duration_min": -5}),
        ),
        (
            "/api/cinema/movies",
            json!({"title": "x", "duration_min": 90, "genres": [""]}),
        ),
        (
            "/api/cinema/showtimes",
            json!({"movie_id": venue.movie, "room_id": venue.room, "starts_at": "2031-01-01T10:00:00Z", "prices": [{"class": "standard", "cents": -100}]}),
        ),
        (
            "/api/cinema/showtimes",
            json!({"movie_id": venue.movie, "room_id": venue.room, "starts_at": "2031-01-01T10:00:00Z", "prices": [{"class": "vip", "cents": 100}]}),
        ),
        (
            "/api/cinema/showtimes",
            json!({"movie_id": venue.movie, "room_id": venue.room, "starts_at": "2031-01-01T10:00:00Z", "prices": []}),
        ),
        (
            "/api/cinema/showtimes",
            json!({"movie_id": venue.movie, "room_id": venue.room, "starts_at": "2031-01-01T10:00:00Z", "prices": [{"class": "standard", "cents": 100}], "currency": "pesos"}),
        ),
        (
            "/api/cinema/showtimes",
            json!({"movie_id": Uuid::nil(), "room_id": venue.room, "starts_at": "2031-01-01T10:00:00Z", "prices": [{"class": "standard", "cents": 100}]}),
        ),
        (
            "/api/cinema/showtimes",
            json!({"movie_id": venue.movie, "room_id": venue.room, "starts_at": "tomorrow", "prices": [{"class": "standard", "cents": 100}]}),
        ),
        (purchases.as_str(), json!({"seats": ["A1"], "card": "1234"})),
        (purchases.as_str(), json!({"quantity": -1, "card": CARD})),
        (purchases.as_str(), json!({"seats": ["??"], "card": CARD})),
    ];
    for (path, body) in invalid {
        let response = app
            .api
            .post(path)
            .bearer_auth(&app.admin)
            .header("idempotency-key", Uuid::now_v7().to_string())
            .json(&body)
            .send()
            .await
            .unwrap();
        let problem = expect_problem(response, 422).await;
        assert!(
            !problem["detail"].as_str().unwrap_or_default().is_empty(),
            "{path} {body}: {problem}"
        );
    }
    let no_key = app
        .post(
            &app.admin,
            &purchases,
            &json!({"seats": ["A1"], "card": CARD}),
        )
        .await;
    expect_problem(no_key, 400).await;
    let bad_id = app
        .patch(&app.admin, "/api/cinema/chains/not-a-uuid", &json!({}))
        .await;
    expect_problem(bad_id, 404).await;
    let missing = app
        .patch(
            &app.admin,
            &format!("/api/cinema/chains/{}", Uuid::nil()),
            &json!({}),
        )
        .await;
    expect_problem(missing, 404).await;
    let get = app.api.get("/api/cinema/chains").send().await.unwrap();
    expect_problem(get, 405).await;
}
