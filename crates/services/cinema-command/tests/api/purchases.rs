//! Seat purchases: never a seat sold twice, whatever the concurrency;
//! retries charge once; declined cards and expired holds free the seats.

use std::collections::HashSet;

use futures_util::future::join_all;
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use uuid::Uuid;
use zocalo_cinema_command::store::{Held, Kind, Record, Saved};
use zocalo_contracts::cinema::ShowtimeSaved;
use zocalo_testkit::{Backend, backend_tests, expect_problem};

use crate::helpers::{CARD, DECLINING_CARD, TestApp, id, spawn};

backend_tests!(
    a_hundred_buyers_of_one_seat_get_one_ticket,
    a_hundred_buyers_of_overlapping_seats_never_share_one,
    a_retried_purchase_is_charged_once,
    a_declined_card_releases_the_seats,
    expired_holds_are_released_and_refunded,
    a_quantity_gets_the_best_free_seats_or_a_clear_409,
    unknown_and_disabled_seats_are_422,
    a_refund_frees_the_seats_for_the_owner_or_manager_only,
    sales_close_when_the_showtime_starts,
);

const BUYERS: usize = 100;

async fn a_hundred_buyers_of_one_seat_get_one_ticket(backend: Backend) {
    let app = spawn(backend).await;
    let venue = app.venue(5, 10, json!({})).await;
    let attempts = (0..BUYERS).map(|i| {
        let app = &app;
        async move {
            let (_, token) = app.customer();
            let body = json!({"seats": ["C5"], "card": CARD});
            let response = app
                .buy(&token, &format!("k{i}"), venue.showtime, &body)
                .await;
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    });
    let answers = join_all(attempts).await;
    let won: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(won.len(), 1, "exactly one buyer gets the seat");
    assert_eq!(won[0]["tickets"].as_array().unwrap().len(), 1);
    for (status, body) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 409, "{body}");
        assert!(
            body["detail"].as_str().unwrap().contains("C5"),
            "names the seat: {body}"
        );
    }
    let seat_map = app.store.seat_map(venue.showtime).await.unwrap();
    assert_eq!(seat_map.sold, ["C5"]);
    assert_eq!(seat_map.version, 1);
    assert_eq!(
        app.store.taken_seats(venue.showtime).await.unwrap(),
        ["C5"],
        "no hold left behind"
    );
}

async fn a_hundred_buyers_of_overlapping_seats_never_share_one(backend: Backend) {
    let app = spawn(backend).await;
    let venue = app.venue(5, 10, json!({})).await;
    let all: Vec<String> = (0..5u8)
        .flat_map(|row| (1..=10).map(move |n| format!("{}{n}", char::from(b'A' + row))))
        .collect();
    let requests: Vec<Vec<String>> = (0..BUYERS)
        .map(|_| {
            let mut rng = rand::thread_rng();
            let n = rand::Rng::gen_range(&mut rng, 1..=4);
            all.choose_multiple(&mut rng, n).cloned().collect()
        })
        .collect();
    let attempts = requests.iter().enumerate().map(|(i, seats)| {
        let app = &app;
        async move {
            let (_, token) = app.customer();
            let body = json!({"seats": seats, "card": CARD});
            let response = app
                .buy(&token, &format!("k{i}"), venue.showtime, &body)
                .await;
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    });
    let answers = join_all(attempts).await;
    let mut sold_by_answers: Vec<String> = Vec::new();
    for (status, body) in &answers {
        match status {
            201 => sold_by_answers.extend(
                body["tickets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t["seat"].as_str().unwrap().to_owned()),
            ),
            409 => assert!(
                body["errors"].as_array().is_some_and(|e| !e.is_empty()),
                "{body}"
            ),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let distinct: HashSet<&String> = sold_by_answers.iter().collect();
    assert_eq!(
        distinct.len(),
        sold_by_answers.len(),
        "no seat in two answers"
    );
    assert!(sold_by_answers.len() <= 50);
    // The database agrees with the answers.
    let seat_map = app.store.seat_map(venue.showtime).await.unwrap();
    let mut expected: Vec<String> = sold_by_answers.clone();
    expected.sort();
    let mut stored = seat_map.sold.clone();
    stored.sort();
    assert_eq!(stored, expected);
    let completed = answers.iter().filter(|(s, _)| *s == 201).count() as i64;
    assert_eq!(
        seat_map.version, completed,
        "one seat map version per purchase"
    );
    assert_eq!(
        app.store.taken_seats(venue.showtime).await.unwrap().len(),
        stored.len()
    );
}

async fn a_retried_purchase_is_charged_once(backend: Backend) {
    let app = spawn(backend).await;
    let venue = app.venue(5, 10, json!({})).await;
    let (_, token) = app.customer();
    let body = json!({"seats": ["B2", "B3"], "card": CARD});
    let retries = (0..10).map(|_| app.buy(&token, "same-key", venue.showtime, &body));
    let mut answers = Vec::new();
    for response in join_all(retries).await {
        assert_eq!(response.status(), 201);
        answers.push(response.json::<Value>().await.unwrap());
    }
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "every retry gets the first answer"
    );
    let purchase = id(&answers[0], "purchase_id");
    assert_eq!(answers[0]["total_cents"], 18000);
    assert_eq!(
        app.store.ledger().charges(purchase).await.unwrap(),
        ["captured"]
    );
    let other = json!({"seats": ["B4"], "card": CARD});
    let reused = app.buy(&token, "same-key", venue.showtime, &other).await;
    expect_problem(reused, 422).await;
}

async fn a_declined_card_releases_the_seats(backend: Backend) {
    let app = spawn(backend).await;
    let venue = app.venue(5, 10, json!({})).await;
    let (_, token) = app.customer();
    let declined = app
        .buy(
            &token,
            "k1",
            venue.showtime,
            &json!({"seats": ["D4", "D5"], "card": DECLINING_CARD}),
        )
        .await;
    expect_problem(declined, 402).await;
    assert!(
        app.store
            .taken_seats(venue.showtime)
            .await
            .unwrap()
            .is_empty()
    );
    let retry = app
        .buy(
            &token,
            "k1",
            venue.showtime,
            &json!({"seats": ["D4", "D5"], "card": DECLINING_CARD}),
        )
        .await;
    expect_problem(retry, 402).await;
    let (_, other) = app.customer();
    let bought = app
        .buy(
            &other,
            "k2",
            venue.showtime,
            &json!({"seats": ["D4", "D5"], "card": CARD}),
        )
        .await;
    assert_eq!(bought.status(), 201, "the released seats are for sale");
}

async fn expired_holds_are_released_and_refunded(backend: Backend) {
    let app = spawn(backend).await;
    let venue = app.venue(5, 10, json!({})).await;
    // A purchase that held its seats and was charged, then its process
    // died before completing: written the way the API would.
    let input = zocalo_cinema_command::domain::PurchaseInput {
        seats: Some(vec!["E1".into(), "E2".into()]),
        quantity: None,
        card: CARD.into(),
    };
    let new = input
        .validate(
            venue.showtime,
            Uuid::now_v7(),
            "crash".into(),
            chrono::Duration::milliseconds(-1),
        )
        .unwrap();
    let Held::New(held) = app.store.hold(new).await.unwrap() else {
        panic!("not held")
    };
    let payments =
        zocalo_payments::SimulatedProcessor::new(app.store.ledger(), 0.0, Default::default());
    let charge = zocalo_payments::Charge {
        key: held.purchase_id,
        amount_cents: held.total_cents,
        currency: &held.currency,
        card_token: &held.card_token,
        card_last4: &held.card_last4,
    };
    use zocalo_payments::PaymentProcessor;
    payments.charge(charge).await.unwrap();
    assert_eq!(
        app.store.taken_seats(venue.showtime).await.unwrap(),
        ["E1", "E2"]
    );
    let released = zocalo_cinema_command::sweep_once(app.store.as_ref(), &payments)
        .await
        .unwrap();
    assert_eq!(released, 1);
    assert!(
        app.store
            .taken_seats(venue.showtime)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        app.store.ledger().charges(held.purchase_id).await.unwrap(),
        ["refunded"]
    );
    let after = app.store.purchase(held.purchase_id).await.unwrap().unwrap();
    assert_eq!(after.status.as_str(), "expired");
    assert!(
        !app.store
            .complete(held.purchase_id, chrono::Utc::now())
            .await
            .unwrap()
            .0,
        "an expired hold never completes"
    );
    assert_eq!(
        zocalo_cinema_command::sweep_once(app.store.as_ref(), &payments)
            .await
            .unwrap(),
        0
    );
}

async fn a_quantity_gets_the_best_free_seats_or_a_clear_409(backend: Backend) {
    let app = spawn(backend).await;
    // 3 × 4 = 12 seats, one disabled, two accessible.
    let venue = app
        .venue(
            3,
            4,
            json!({"disabled": ["A1"], "accessible": ["C1", "C4"]}),
        )
        .await;
    let (_, token) = app.customer();
    let first = app
        .buy(
            &token,
            "q1",
            venue.showtime,
            &json!({"quantity": 2, "card": CARD}),
        )
        .await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let seats: Vec<&str> = first["seats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(seats, ["B2", "B3"], "the middle of the sweet row");
    expect_only_free(&app, &token, venue.showtime, 10, 9).await;
    let rest = app
        .buy(
            &token,
            "q3",
            venue.showtime,
            &json!({"quantity": 9, "card": CARD}),
        )
        .await;
    assert_eq!(rest.status(), 201);
    let rest: Value = rest.json().await.unwrap();
    let tickets = rest["tickets"].as_array().unwrap();
    let accessible: Vec<&Value> = tickets
        .iter()
        .filter(|t| t["class"] == "accessible")
        .collect();
    assert_eq!(accessible.len(), 2);
    assert!(accessible.iter().all(|t| t["price_cents"] == 6000));
    assert_eq!(rest["total_cents"], 7 * 9000 + 2 * 6000);
    let codes: HashSet<&str> = tickets
        .iter()
        .map(|t| t["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes.len(), 9, "every ticket has its own code");
    expect_only_free(&app, &token, venue.showtime, 1, 0).await;
}

/// Asking for `quantity` seats is a 409 saying how many are free.
async fn expect_only_free(
    app: &TestApp,
    token: &str,
    showtime: Uuid,
    quantity: usize,
    free: usize,
) {
    let body = json!({"quantity": quantity, "card": CARD});
    let response = app
        .buy(token, &Uuid::now_v7().to_string(), showtime, &body)
        .await;
    let problem = expect_problem(response, 409).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("only {free} free")), "{problem}");
}

async fn unknown_and_disabled_seats_are_422(backend: Backend) {
    let app = spawn(backend).await;
    let venue = app.venue(3, 4, json!({"disabled": ["A1"]})).await;
    let (_, token) = app.customer();
    for seats in [
        json!(["A1"]),
        json!(["D1"]),
        json!(["A5"]),
        json!(["B2", "Z9"]),
    ] {
        let response = app
            .buy(
                &token,
                &Uuid::now_v7().to_string(),
                venue.showtime,
                &json!({"seats": seats, "card": CARD}),
            )
            .await;
        expect_problem(response, 422).await;
    }
    assert!(
        app.store
            .taken_seats(venue.showtime)
            .await
            .unwrap()
            .is_empty(),
        "nothing held"
    );
    let unknown = app
        .buy(
            &token,
            "x",
            Uuid::now_v7(),
            &json!({"seats": ["A2"], "card": CARD}),
        )
        .await;
    expect_problem(unknown, 404).await;
}

async fn refund(app: &TestApp, token: &str, purchase: Uuid) -> reqwest::Response {
    app.api
        .post(&format!("/api/cinema/purchases/{purchase}/refund"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn a_refund_frees_the_seats_for_the_owner_or_manager_only(backend: Backend) {
    let app = spawn(backend).await;
    let venue = app.venue(3, 4, json!({})).await;
    let (_, owner) = app.customer();
    let bought = app
        .buy(
            &owner,
            "r1",
            venue.showtime,
            &json!({"seats": ["B1"], "card": CARD}),
        )
        .await;
    let purchase = id(&bought.json().await.unwrap(), "purchase_id");
    let (_, stranger) = app.customer();
    expect_problem(refund(&app, &stranger, purchase).await, 404).await;
    let (_, other_manager) = app.manager();
    expect_problem(refund(&app, &other_manager, purchase).await, 404).await;
    let refunded = refund(&app, &owner, purchase).await;
    assert_eq!(refunded.status(), 200);
    let refunded: Value = refunded.json().await.unwrap();
    assert_eq!(refunded["status"], "refunded");
    assert_eq!(refunded["seat_map_version"], 2);
    assert_eq!(
        refund(&app, &venue.manager, purchase).await.status(),
        200,
        "repeating answers the same"
    );
    assert_eq!(
        app.store.ledger().charges(purchase).await.unwrap(),
        ["refunded"]
    );
    assert!(
        app.store
            .seat_map(venue.showtime)
            .await
            .unwrap()
            .sold
            .is_empty()
    );
    let again = app
        .buy(
            &stranger,
            "r2",
            venue.showtime,
            &json!({"seats": ["B1"], "card": CARD}),
        )
        .await;
    assert_eq!(again.status(), 201, "the seat is for sale again");
    let second = id(&again.json().await.unwrap(), "purchase_id");
    assert_eq!(
        refund(&app, &venue.manager, second).await.status(),
        200,
        "the cinema's manager may refund"
    );
}

async fn sales_close_when_the_showtime_starts(backend: Backend) {
    let app = spawn(backend).await;
    let venue = app.venue(3, 4, json!({})).await;
    // Scheduling into the past is refused; a showtime that has started
    // (written as time would leave it) sells nothing.
    let past = app
        .showtime(
            &venue.manager,
            venue.room,
            venue.movie,
            "2020-01-01T18:00:00Z",
        )
        .await;
    expect_problem(past, 422).await;
    let mut started: ShowtimeSaved = serde_json::from_value(
        app.store
            .load(Kind::Showtime, venue.showtime)
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    started.starts_at = chrono::Utc::now() - chrono::Duration::minutes(5);
    started.ends_at = started.starts_at + chrono::Duration::minutes(135);
    started.version += 1;
    let saved = app
        .store
        .save(Record::showtime(&started), vec![])
        .await
        .unwrap();
    assert_eq!(saved, Saved::Saved);
    let (_, token) = app.customer();
    let late = app
        .buy(
            &token,
            "late",
            venue.showtime,
            &json!({"seats": ["A2"], "card": CARD}),
        )
        .await;
    let problem = expect_problem(late, 409).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("started"),
        "{problem}"
    );
}
