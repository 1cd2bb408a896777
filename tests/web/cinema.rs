//! The cinema through the pages: a manager's showtime is found among the
//! movies now showing, seats are picked on the seat map and paid for, the
//! tickets and their PDF are the buyer's, and the API's refusals (seats
//! taken, too few free) are shown on the checkout form.

use std::time::Duration;

use reqwest::StatusCode;

use crate::client::{Page, Visitor, value_after};
use crate::stack::{MANAGER_PASSWORD, Stack};

const PASSWORD: &str = "correct horse 42";
const CARD: &str = "4242424242424242";
const TITLE: &str = "Amores perros";

/// GET `path` until it contains `text` (the read side follows the command
/// side within moments), at most 15 s.
async fn until_contains(visitor: &mut Visitor, path: &str, text: &str) -> Page {
    for _ in 0..150 {
        let page = visitor.get(path).await;
        if page.status == StatusCode::OK && page.html.contains(text) {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never showed {text:?}");
}

async fn pay(visitor: &mut Visitor, showtime: &str, query: &str) -> Page {
    let checkout = format!("/cinema/showtimes/{showtime}/checkout");
    let form = visitor.get(&format!("{checkout}?{query}")).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.html);
    let key = value_after(&form.html, r#"name="key" value=""#).unwrap();
    let mut fields: Vec<(&str, &str)> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .collect();
    fields.extend([("key", key.as_str()), ("card", CARD)]);
    visitor.submit(&checkout, &form, &fields).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seats_are_picked_paid_for_and_their_tickets_downloaded() {
    let stack = Stack::start();
    let (movie, showtime) = stack.showtime("mara@example.com", TITLE).await;
    let mut carla = Visitor::new(&stack.base);
    carla.sign_up("Carla", "carla@example.com", PASSWORD).await;

    // Now showing → the movie's showtimes → the seat map.
    let showing = until_contains(&mut carla, "/cinema", TITLE).await;
    showing.assert_contains(&format!("/cinema/movies/{movie}"));
    let movie_page = carla.get(&format!("/cinema/movies/{movie}")).await;
    movie_page.assert_contains(&format!("/cinema/showtimes/{showtime}"));
    movie_page.assert_contains("90.00");
    let bad_day = carla
        .get(&format!("/cinema/movies/{movie}?date=someday"))
        .await;
    bad_day.assert_contains(r#"id="e-date""#);
    let seats = carla.get(&format!("/cinema/showtimes/{showtime}")).await;
    assert_eq!(seats.status, StatusCode::OK);
    seats.assert_contains(r#"name="seat" value="A2""#);
    seats.assert_contains("10 of 10");

    // Two seats picked and paid for: the tickets, at once.
    let bought = pay(&mut carla, &showtime, "seat=A2&seat=A3").await;
    assert_eq!(bought.status, StatusCode::OK, "{}", bought.html);
    bought.assert_contains("Your tickets");
    bought.assert_contains("180.00");
    let ticket = value_after(&bought.html, r#"<a href="/cinema/tickets/"#).unwrap();
    assert!(ticket.ends_with(".pdf"), "{ticket}");

    // Taken seats and too many seats are the checkout form's errors.
    let mut bruno = Visitor::new(&stack.base);
    bruno.sign_up("Bruno", "bruno@example.com", PASSWORD).await;
    let taken = pay(&mut bruno, &showtime, "seat=A3&seat=A4").await;
    assert_eq!(taken.status, StatusCode::OK);
    taken.assert_contains(r#"role="alert""#);
    taken.assert_contains("seats already taken: A3");
    let too_many = pay(&mut bruno, &showtime, "quantity=9").await;
    too_many.assert_contains("only 8 free");
    let none = bruno
        .get(&format!("/cinema/showtimes/{showtime}/checkout?quantity="))
        .await;
    none.assert_contains("pick seats on the map");

    // The seat map shows them sold; "my tickets" lists the purchase.
    until_contains(
        &mut carla,
        &format!("/cinema/showtimes/{showtime}"),
        "8 of 10",
    )
    .await;
    let mine = until_contains(&mut carla, "/cinema/tickets", TITLE).await;
    mine.assert_contains("A2, A3");
    let purchase = value_after(&mine.html, r#"<a href="/cinema/purchases/"#).unwrap();
    let page = carla.get(&format!("/cinema/purchases/{purchase}")).await;
    page.assert_contains("A3");

    // The PDF is made in the background and passed on to its buyer only.
    let path = format!("/cinema/tickets/{ticket}");
    let mut pdf = None;
    for _ in 0..200 {
        let response = carla.get(&path).await;
        if response.status == StatusCode::OK {
            pdf = Some(response);
            break;
        }
        assert_eq!(response.status, StatusCode::NOT_FOUND, "{path}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pdf = pdf.expect("the ticket PDF within 20 s");
    assert_eq!(pdf.content_type, "application/pdf");
    assert!(pdf.html.starts_with("%PDF"));
    assert_eq!(bruno.get(&path).await.status, StatusCode::NOT_FOUND);
    let anonymous = Visitor::new(&stack.base).get(&path).await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_adds_a_room_a_movie_and_a_showtime_through_the_forms() {
    let stack = Stack::start();
    stack.showtime("mara@example.com", TITLE).await;
    let mut carla = Visitor::new(&stack.base);
    carla.sign_up("Carla", "carla@example.com", PASSWORD).await;
    assert_eq!(
        carla.get("/cinema/manage").await.status,
        StatusCode::FORBIDDEN
    );

    let mut mara = Visitor::new(&stack.base);
    mara.sign_in("mara@example.com", MANAGER_PASSWORD).await;
    let page = mara.get("/cinema/manage").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    let cinema = value_after(
        &page.html,
        r#"name="cinema_id">
      <option value=""#,
    )
    .unwrap();
    let room = |rows| {
        [
            ("cinema_id", cinema.as_str()),
            ("name", "Sala 2"),
            ("rows", rows),
            ("seats_per_row", "8"),
        ]
    };
    let bad = mara
        .submit("/cinema/manage/rooms", &page, &room("many"))
        .await;
    bad.assert_contains(r#"id="e-rows""#);
    let added = mara.submit("/cinema/manage/rooms", &page, &room("3")).await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.html);

    let movie = [("title", "Sexo, pudor y lágrimas"), ("duration_min", "110")];
    let added = mara.submit("/cinema/manage/movies", &page, &movie).await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.html);
    let after = mara.get(&added.location.unwrap()).await;
    after.assert_contains("The movie was added");
    let new_movie = value_after(
        &after.html,
        r#"name="movie_id">
      <option value=""#,
    )
    .unwrap();

    // The new room shows once the read side has it; then a showtime in it.
    let page = until_contains(&mut mara, "/cinema/manage", "Sala 2 (24 seats)").await;
    // The room's option: the last `value="…"` before its label.
    let before_label = page.html.split("Sala 2 (24").next().unwrap();
    let option = before_label.rsplit("<option").next().unwrap();
    let sala2 = value_after(option, r#"value=""#).unwrap();
    let starts = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    let bad_price = [
        ("movie_id", new_movie.as_str()),
        ("room_id", sala2.as_str()),
        ("starts_at", starts.as_str()),
        ("price", "lots"),
    ];
    let refused = mara
        .submit("/cinema/manage/showtimes", &page, &bad_price)
        .await;
    refused.assert_contains(r#"id="e-price""#);
    let showtime = [
        ("movie_id", new_movie.as_str()),
        ("room_id", sala2.as_str()),
        ("starts_at", starts.as_str()),
        ("price", "75.50"),
    ];
    let added = mara
        .submit("/cinema/manage/showtimes", &page, &showtime)
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.html);
    let showing = until_contains(&mut carla, "/cinema", "Sexo, pudor y lágrimas").await;
    showing.assert_contains(TITLE);
}
