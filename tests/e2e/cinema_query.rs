//! `zocalo up` runs the cinema read side with its projector: events
//! published on the embedded bus (the SQLite file every service of the
//! process shares) show up in the read models it serves.

use std::process::Stdio;
use std::time::Duration;

use chrono::{Duration as Span, Utc};
use serde::Serialize;
use uuid::Uuid;
use zocalo_bus::Event;
use zocalo_contracts::cinema::*;

use crate::support::{eventually, stdout_lines, wait_for_line};
use crate::{free_port, tempfile_dir, zocalo};

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
