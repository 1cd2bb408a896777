//! `zocalo up` runs the cinema read side with its projector: events
//! published on the embedded bus (the SQLite file every service of the
//! process shares) show up in the read models it serves; and the whole
//! CineManzana purchase through the gateway, with a rebuild.

use std::process::Stdio;
use std::time::Duration;

use chrono::{Duration as Span, Utc};
use serde::Serialize;
use uuid::Uuid;
use zocalo_bus::Event;
use zocalo_contracts::cinema::*;

use serde_json::{Value, json};

use crate::cinema::{created, post};
use crate::support::{eventually, stdout_lines, wait_for_line};
use crate::{
    ADMIN_EMAIL, ADMIN_PASSWORD, Stack, access, free_port, register_and_login, tempfile_dir, zocalo,
};

fn event(kind: &str, payload: impl Serialize) -> Event {
    Event::new(TOPIC, kind, serde_json::to_value(payload).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_projects_cinema_events_into_the_seat_map() {
    let data = tempfile_dir::Dir::new();
    let mut child = zocalo()
        .args(["up", "--port", &free_port().to_string(), "--data-dir"])
        .arg(&data.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn zocalo up");
    let lines = stdout_lines(&mut child);
    let _kill = KillOnDrop(child);
    let query = wait_for_line(&lines, "cinema-query printed where it listens", |line| {
        line.strip_prefix("cinema-query listening on ")
            .map(str::to_owned)
    });

    let (chain, cinema, room, movie, showtime) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let starts_at = Utc::now() + Span::days(1);
    let bus = zocalo_bus::connect(&format!("sqlite://{}", data.0.join("bus.db").display()))
        .await
        .unwrap();
    let events = [
        // The purchase first: the seat map converges whatever the order.
        event(
            PURCHASE_COMPLETED,
            PurchaseCompleted {
                purchase_id: Uuid::now_v7(),
                showtime_id: showtime,
                customer_id: Uuid::now_v7(),
                tickets: vec![Ticket {
                    ticket_id: Uuid::now_v7(),
                    seat: "B2".into(),
                    class: STANDARD.into(),
                    price_cents: 8_000,
                    code: "K7Q2".into(),
                }],
                total_cents: 8_000,
                currency: "MXN".into(),
                at: Utc::now(),
                seat_map: SeatMapState {
                    version: 1,
                    sold: vec!["B2".into()],
                },
            },
        ),
        event(
            CHAIN_SAVED,
            ChainSaved {
                chain_id: chain,
                version: 1,
                name: "CineManzana".into(),
                description: String::new(),
            },
        ),
        event(
            CINEMA_SAVED,
            CinemaSaved {
                cinema_id: cinema,
                chain_id: chain,
                version: 1,
                name: "Centro".into(),
                city: "Puebla".into(),
                address: "5 de Mayo 10".into(),
                manager_ids: vec![],
            },
        ),
        event(
            ROOM_SAVED,
            RoomSaved {
                room_id: room,
                cinema_id: cinema,
                version: 1,
                name: "Sala 1".into(),
                rows: 3,
                seats_per_row: 4,
                disabled: vec![],
                accessible: vec![],
            },
        ),
        event(
            MOVIE_SAVED,
            MovieSaved {
                movie_id: movie,
                version: 1,
                title: "Nosotros los nobles".into(),
                synopsis: String::new(),
                duration_min: 108,
                classification: "A".into(),
                genres: vec![],
            },
        ),
        event(
            SHOWTIME_SAVED,
            ShowtimeSaved {
                showtime_id: showtime,
                version: 1,
                movie_id: movie,
                room_id: room,
                cinema_id: cinema,
                chain_id: chain,
                starts_at,
                ends_at: starts_at + Span::minutes(125),
                prices: vec![SeatPrice {
                    class: STANDARD.into(),
                    cents: 8_000,
                }],
                currency: "MXN".into(),
                status: SCHEDULED.into(),
            },
        ),
    ];
    for event in &events {
        bus.events.publish(event).await.unwrap();
    }

    let http = reqwest::Client::new();
    let seats_url = format!("{query}/api/cinema/showtimes/{showtime}/seats");
    let seats = eventually(
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || {
            let response = http
                .get(&seats_url)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let seats: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
            (seats["capacity"] == 12)
                .then_some(seats.clone())
                .ok_or(format!("{seats}"))
        },
    )
    .await;
    assert_eq!(seats["sold"], 1);
    assert_eq!(seats["rows"][1]["seats"][1]["state"], "sold");

    let movies: serde_json::Value = http
        .get(format!("{query}/api/cinema/movies"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(movies["items"][0]["title"], "Nosotros los nobles");
    let metrics = crate::support::metrics(&http, &query).await;
    assert!(
        metrics.contains("cinema_projection_lag_seconds"),
        "{metrics}"
    );
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The original CineManzana flow through the gateway, reads from the query
/// side and writes to the command side: choose a movie → a showtime → its
/// cinema → a quantity → seats on the live seat map → pay by card → the
/// ticket is issued and shows up in "my purchases". Asking for more seats
/// than are free is a clear 409. Then `zocalo admin rebuild cinema-query`
/// replays the command side's log into the same read model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cinemanzana_buys_tickets_and_a_rebuild_keeps_the_read_model() {
    let data = tempfile_dir::Dir::new();
    let config = data.0.join("zocalo.toml");
    std::fs::write(
        &config,
        "[[auth.clients]]\nclient_id = \"cinema-query\"\nclient_secret = \"rebuild-secret-1\"\n\
         name = \"cinema-query rebuild\"\nroles = [\"service\"]\n",
    )
    .unwrap();
    let command_port = free_port().to_string();
    let command_listen = format!("127.0.0.1:{command_port}");
    let stack = Stack::start_in(
        &data.0,
        free_port(),
        &[
            ("ZOCALO_CONFIG", config.to_str().unwrap()),
            ("ZOCALO_CINEMA_COMMAND__LISTEN", &command_listen),
        ],
    );
    let admin = stack.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let admin = access(&admin);
    let chain = json!({"name": "CineManzana"});
    let chain = created(&stack, admin, "/api/cinema/chains", chain, "chain_id").await;
    let cinema = json!({"chain_id": chain, "name": "Manzana Centro", "city": "Puebla", "address": "5 de Mayo 10"});
    let cinema = created(&stack, admin, "/api/cinema/cinemas", cinema, "cinema_id").await;
    let room = json!({"cinema_id": cinema, "name": "Sala 1", "rows": 3, "seats_per_row": 4});
    let room = created(&stack, admin, "/api/cinema/rooms", room, "room_id").await;
    let movie = json!({"title": "Nosotros los nobles", "duration_min": 108});
    let movie = created(&stack, admin, "/api/cinema/movies", movie, "movie_id").await;
    let starts_at = (Utc::now() + Span::days(2))
        .format("%Y-%m-%dT20:00:00Z")
        .to_string();
    let showtime = json!({"movie_id": movie, "room_id": room, "starts_at": starts_at,
        "prices": [{"class": "standard", "cents": 7500}]});
    created(
        &stack,
        admin,
        "/api/cinema/showtimes",
        showtime,
        "showtime_id",
    )
    .await;

    // Choose a movie now showing (the read model catches up within moments).
    let movies = eventually(
        Duration::from_secs(20),
        Duration::from_millis(100),
        async || {
            let movies = json_of(&stack, "/api/cinema/movies", None).await;
            (movies["items"].as_array().unwrap().len() == 1)
                .then_some(movies.clone())
                .ok_or(format!("{movies}"))
        },
    )
    .await;
    let chosen = &movies["items"][0];
    assert_eq!(chosen["title"], "Nosotros los nobles");
    // → a showtime of it, → the cinema it is at.
    let showtimes = json_of(
        &stack,
        &format!(
            "/api/cinema/showtimes?movie_id={}",
            chosen["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    let showtime = &showtimes["items"][0];
    let showtime_id = showtime["id"].as_str().unwrap().to_owned();
    assert_eq!(showtime["cinema"]["name"], "Manzana Centro");
    let cinema_doc = json_of(
        &stack,
        &format!(
            "/api/cinema/cinemas/{}",
            showtime["cinema_id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(cinema_doc["city"], "Puebla");
    // → a quantity, → that many free seats from the seat map.
    let quantity = 2;
    let seats_path = format!("/api/cinema/showtimes/{showtime_id}/seats");
    let seat_map = json_of(&stack, &seats_path, None).await;
    assert_eq!(seat_map["free"], 12);
    let wanted: Vec<String> = seat_map["rows"][1]["seats"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|seat| seat["state"] == "free")
        .take(quantity)
        .map(|seat| seat["seat"].as_str().unwrap().to_owned())
        .collect();
    // → pay by card: the ticket is issued.
    let customer = register_and_login(&stack, "lucia@example.com").await;
    let customer = access(&customer);
    let purchases = format!("/api/cinema/showtimes/{showtime_id}/purchases");
    let paid = post(
        &stack,
        customer,
        &purchases,
        json!({"seats": wanted, "card": "4242424242424242"}),
    )
    .await;
    assert_eq!(paid.status(), 201);
    let paid: Value = paid.json().await.unwrap();
    assert_eq!(paid["tickets"].as_array().unwrap().len(), quantity);
    let purchase_id = paid["purchase_id"].as_str().unwrap().to_owned();

    // The read side shows the sale and the customer's tickets.
    let mine = eventually(
        Duration::from_secs(20),
        Duration::from_millis(100),
        async || {
            let mine = json_of(&stack, "/api/cinema/purchases", Some(customer)).await;
            (mine["items"].as_array().unwrap().len() == 1)
                .then_some(mine.clone())
                .ok_or(format!("{mine}"))
        },
    )
    .await;
    assert_eq!(mine["items"][0]["id"], purchase_id.as_str());
    let codes: Vec<&str> = mine["items"][0]["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes.len(), quantity);
    let seat_map = json_of(&stack, &seats_path, None).await;
    assert_eq!(seat_map["sold"], quantity);
    assert_eq!(seat_map["rows"][1]["seats"][0]["state"], "sold");

    // Another customer cannot see those tickets.
    let other = register_and_login(&stack, "pablo@example.com").await;
    let other = stack
        .http
        .get(stack.url(&format!("/api/cinema/purchases/{purchase_id}")))
        .bearer_auth(access(&other))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);

    // Quantity larger than the free seats: a clear 409.
    let too_many = post(
        &stack,
        customer,
        &purchases,
        json!({"quantity": 11, "card": "4242424242424242"}),
    )
    .await;
    assert_eq!(too_many.status(), 409);
    let problem: Value = too_many.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("10"),
        "{problem}"
    );

    // Rebuild from the command side's log: the same read model.
    let before = (
        json_of(&stack, &seats_path, None).await,
        json_of(&stack, "/api/cinema/purchases", Some(customer)).await,
        json_of(&stack, "/api/cinema/movies", None).await,
    );
    let rebuilt = zocalo()
        .args(["admin", "rebuild", "cinema-query"])
        .env("ZOCALO_CONFIG", &config)
        .env("ZOCALO_DATA_DIR", &data.0)
        .env(
            "ZOCALO_CINEMA_QUERY__COMMAND_URL",
            format!("http://{command_listen}"),
        )
        .env("ZOCALO_CINEMA_QUERY__TOKEN_URL", stack.url("/auth/token"))
        .env("ZOCALO_CINEMA_QUERY__CLIENT_SECRET", "rebuild-secret-1")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&rebuilt.stdout);
    assert!(
        rebuilt.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    assert!(said.contains("cinema-query: rebuilt from"), "{said}");
    let after = (
        json_of(&stack, &seats_path, None).await,
        json_of(&stack, "/api/cinema/purchases", Some(customer)).await,
        json_of(&stack, "/api/cinema/movies", None).await,
    );
    assert_eq!(after, before);
    assert!(stack.stop().success());
}

/// GET through the gateway, as a customer when `token` is given; bypasses
/// caches so the answer is the read model's.
async fn json_of(stack: &Stack, path: &str, token: Option<&str>) -> Value {
    let mut request = stack
        .http
        .get(stack.url(path))
        .header("cache-control", "no-cache");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}
