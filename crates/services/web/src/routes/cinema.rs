//! The cinema pages: movies now showing, a movie's showtimes by cinema and
//! day, a showtime's seat map (a form of checkboxes), checkout with a
//! card, the purchase with its tickets, "my tickets" and the tickets' PDFs
//! (fetched with the visitor's token and passed on).

use askama::Template;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::app::AppState;
use crate::csrf::CsrfForm;
use crate::error::WebError;
use crate::gateway::ApiError;
use crate::session::Visitor;
use crate::views::{Chrome, FormErrors, money, render, when};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/cinema", get(now_showing))
        .route("/cinema/movies/{id}", get(movie))
        .route("/cinema/showtimes/{id}", get(seat_map))
        .route(
            "/cinema/showtimes/{id}/checkout",
            get(checkout_page).post(checkout),
        )
        .route("/cinema/purchases/{id}", get(purchase))
        .route("/cinema/tickets", get(my_tickets))
        .route("/cinema/tickets/{file}", get(ticket_pdf))
}

/// A list answer of the cinema's read side.
#[derive(Debug, Deserialize)]
pub(super) struct Page<T> {
    pub(super) items: Vec<T>,
}

#[derive(Debug, Deserialize)]
struct Movie {
    id: Uuid,
    title: String,
    #[serde(default)]
    synopsis: String,
    duration_min: u16,
    #[serde(default)]
    classification: String,
    #[serde(default)]
    genres: Vec<String>,
    #[serde(default)]
    showtimes: Vec<ShowtimeCard>,
}

impl Movie {
    fn next_showing(&self) -> Option<String> {
        self.showtimes.first().map(|s| when(&s.starts_at))
    }
}

#[derive(Debug, Deserialize)]
struct ShowtimeCard {
    starts_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
struct Named {
    id: Uuid,
    name: String,
}

#[derive(Debug, Deserialize)]
struct MovieRef {
    id: Uuid,
    title: String,
}

#[derive(Debug, Deserialize)]
struct SeatPrice {
    class: String,
    cents: i64,
}

#[derive(Debug, Deserialize)]
struct Showtime {
    id: Uuid,
    starts_at: DateTime<Utc>,
    status: String,
    #[serde(default)]
    prices: Vec<SeatPrice>,
    currency: String,
    movie: Option<MovieRef>,
    room: Option<Named>,
    cinema: Option<Named>,
}

impl Showtime {
    fn starts(&self) -> String {
        when(&self.starts_at)
    }

    fn title(&self) -> String {
        self.movie
            .as_ref()
            .map_or_else(|| "Showtime".into(), |m| m.title.clone())
    }

    fn place(&self) -> String {
        let cinema = self.cinema.as_ref().map_or("", |c| c.name.as_str());
        let room = self.room.as_ref().map_or("", |r| r.name.as_str());
        format!("{cinema}, {room}")
    }

    fn price_cents(&self, class: &str) -> i64 {
        self.prices
            .iter()
            .find(|p| p.class == class)
            .or_else(|| self.prices.first())
            .map_or(0, |p| p.cents)
    }

    fn prices_text(&self) -> String {
        self.prices
            .iter()
            .map(|p| format!("{} {}", p.class, money(p.cents, &self.currency)))
            .collect::<Vec<_>>()
            .join(" · ")
    }
}

#[derive(Debug, Deserialize)]
struct SeatMap {
    free: u32,
    capacity: u32,
    rows: Vec<SeatRow>,
}

#[derive(Debug, Deserialize)]
struct SeatRow {
    row: String,
    seats: Vec<Seat>,
}

#[derive(Debug, Deserialize)]
struct Seat {
    seat: String,
    class: String,
    state: String,
}

impl Seat {
    fn free(&self) -> bool {
        self.state == "free"
    }

    fn accessible(&self) -> bool {
        self.class == "accessible"
    }
}

#[derive(Debug, Clone, Deserialize)]
struct Ticket {
    ticket_id: Uuid,
    seat: String,
    class: String,
    price_cents: i64,
    code: String,
}

/// A purchase as the command side answers it or the read side shows it.
#[derive(Debug, Deserialize)]
struct Purchase {
    #[serde(alias = "purchase_id")]
    id: Uuid,
    status: Option<String>,
    #[serde(default)]
    tickets: Vec<Ticket>,
    total_cents: i64,
    currency: String,
    purchased_at: Option<DateTime<Utc>>,
    created_at: Option<DateTime<Utc>>,
    showtime: Option<Showtime>,
}

impl Purchase {
    fn total(&self) -> String {
        money(self.total_cents, &self.currency)
    }

    fn bought(&self) -> String {
        self.purchased_at
            .or(self.created_at)
            .map(|at| when(&at))
            .unwrap_or_default()
    }

    fn status_text(&self) -> &str {
        match self.status.as_deref() {
            Some("refunded") => "Refunded",
            Some("completed") | None => "Paid",
            Some(other) => other,
        }
    }

    fn ticket_price(&self, ticket: &Ticket) -> String {
        money(ticket.price_cents, &self.currency)
    }
}

#[derive(Template)]
#[template(path = "cinema/movies.html")]
struct NowShowing {
    chrome: Chrome,
    movies: Vec<Movie>,
}

async fn now_showing(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
) -> Result<Response, WebError> {
    let page: Page<Movie> = state
        .gateway
        .get_query("/api/cinema/movies", &[("limit", "100".into())], None)
        .await?;
    render(NowShowing {
        chrome: Chrome::new(&visitor, "Now showing", "cinema"),
        movies: page.items,
    })
}

#[derive(Debug, Default, Deserialize)]
struct ShowtimeFilter {
    #[serde(default)]
    cinema_id: String,
    #[serde(default)]
    date: String,
}

#[derive(Template)]
#[template(path = "cinema/movie.html")]
struct MoviePage {
    chrome: Chrome,
    movie: Movie,
    cinemas: Vec<Named>,
    filter: ShowtimeFilter,
    showtimes: Vec<Showtime>,
    errors: FormErrors,
}

async fn movie(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<Uuid>,
    Query(filter): Query<ShowtimeFilter>,
) -> Result<Response, WebError> {
    let movie: Movie = state
        .gateway
        .get(&format!("/api/cinema/movies/{id}"), None)
        .await?;
    let cinemas: Page<Named> = state
        .gateway
        .get_query("/api/cinema/cinemas", &[("limit", "100".into())], None)
        .await?;
    let query = [
        ("movie_id", id.to_string()),
        ("cinema_id", filter.cinema_id.clone()),
        ("date", filter.date.clone()),
        ("limit", "100".into()),
    ];
    // A day that is not a day is shown next to its field (browsers without
    // a date picker let anything be typed).
    let bad_day = !filter.date.is_empty()
        && chrono::NaiveDate::parse_from_str(&filter.date, "%Y-%m-%d").is_err();
    let listed: Result<Page<Showtime>, ApiError> = if bad_day {
        Ok(Page { items: Vec::new() })
    } else {
        state
            .gateway
            .get_query("/api/cinema/showtimes", &query, None)
            .await
    };
    let (showtimes, errors) = match listed {
        Ok(_) if bad_day => (
            Vec::new(),
            FormErrors::field("date", "must be a day as YYYY-MM-DD"),
        ),
        Ok(page) => (page.items, FormErrors::none()),
        Err(error) => (Vec::new(), FormErrors::from_api(error, &[])?),
    };
    render(MoviePage {
        chrome: Chrome::new(&visitor, movie.title.clone(), "cinema"),
        movie,
        cinemas: cinemas.items,
        filter,
        showtimes,
        errors,
    })
}

#[derive(Template)]
#[template(path = "cinema/seats.html")]
struct SeatMapPage {
    chrome: Chrome,
    showtime: Showtime,
    map: SeatMap,
}

impl SeatMapPage {
    fn price_of(&self, seat: &Seat) -> i64 {
        self.showtime.price_cents(&seat.class)
    }
}

async fn fetch_showtime(state: &AppState, id: Uuid) -> Result<Showtime, WebError> {
    Ok(state
        .gateway
        .get(&format!("/api/cinema/showtimes/{id}"), None)
        .await?)
}

async fn seat_map(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<Uuid>,
) -> Result<Response, WebError> {
    let showtime = fetch_showtime(&state, id).await?;
    let map: SeatMap = state
        .gateway
        .get(&format!("/api/cinema/showtimes/{id}/seats"), None)
        .await?;
    render(SeatMapPage {
        chrome: Chrome::new(&visitor, format!("Seats: {}", showtime.title()), "cinema"),
        showtime,
        map,
    })
}

/// What the checkout form carries: the seats picked on the seat map (or a
/// number of seats to be picked by the cinema), the card, and the key that
/// makes a resubmitted form buy once.
#[derive(Debug, Default, Deserialize)]
struct Choice {
    seats: Vec<String>,
    quantity: String,
    card: String,
    key: String,
}

impl Choice {
    /// The seat map's form sends `seat=A1&seat=A2`; the checkout form sends
    /// the same names back, so one parser reads both.
    fn parse(pairs: &[(String, String)]) -> Self {
        let value = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_default()
        };
        let mut seen = std::collections::HashSet::new();
        let seats: Vec<String> = pairs
            .iter()
            .filter(|(k, v)| k == "seat" && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_uppercase())
            // A seat sent twice (anywhere in the form) is one seat.
            .filter(|seat| seen.insert(seat.clone()))
            .collect();
        Self {
            seats,
            quantity: value("quantity"),
            card: value("card"),
            key: value("key"),
        }
    }

    fn body(&self) -> Result<serde_json::Value, FormErrors> {
        if !self.seats.is_empty() {
            return Ok(serde_json::json!({"seats": self.seats, "card": self.card}));
        }
        match self.quantity.parse::<i64>() {
            Ok(quantity) if quantity > 0 => {
                Ok(serde_json::json!({"quantity": quantity, "card": self.card}))
            }
            _ => Err(FormErrors::field(
                "quantity",
                "must be a number of seats, or pick seats on the map",
            )),
        }
    }
}

#[derive(Template)]
#[template(path = "cinema/checkout.html")]
struct Checkout {
    chrome: Chrome,
    showtime: Showtime,
    choice: Choice,
    errors: FormErrors,
}

impl Checkout {
    /// Refusals naming something other than the card (unknown seats).
    fn other_errors(&self) -> Vec<String> {
        self.errors.others(&["card", "quantity"])
    }
}

fn checkout_form(
    visitor: &Visitor,
    showtime: Showtime,
    choice: Choice,
    errors: FormErrors,
) -> Result<Response, WebError> {
    render(Checkout {
        chrome: Chrome::new(visitor, "Checkout", "cinema"),
        showtime,
        choice,
        errors,
    })
}

fn query_pairs(raw: Option<String>) -> Result<Vec<(String, String)>, WebError> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or_default())
        .map_err(|_| WebError::BadRequest("the seat choice is malformed".into()))
}

async fn checkout_page(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<Uuid>,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let here = format!(
        "/cinema/showtimes/{id}/checkout?{}",
        raw.clone().unwrap_or_default()
    );
    visitor.require(&here)?;
    let mut choice = Choice::parse(&query_pairs(raw)?);
    choice.key = Uuid::new_v4().to_string();
    let showtime = fetch_showtime(&state, id).await?;
    let errors = match choice.body() {
        Ok(_) => FormErrors::none(),
        Err(errors) => errors,
    };
    checkout_form(&visitor, showtime, choice, errors)
}

async fn checkout(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<Uuid>,
    CsrfForm(pairs): CsrfForm<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let token = visitor
        .require(&format!("/cinema/showtimes/{id}"))?
        .access_token
        .clone();
    let mut choice = Choice::parse(&pairs);
    if choice.key.is_empty() {
        choice.key = Uuid::new_v4().to_string();
    }
    let showtime = fetch_showtime(&state, id).await?;
    let body = match choice.body() {
        Ok(body) => body,
        Err(errors) => return checkout_form(&visitor, showtime, choice, errors),
    };
    let bought: Result<Purchase, ApiError> = state
        .gateway
        .send(
            Method::POST,
            &format!("/api/cinema/showtimes/{id}/purchases"),
            Some(&token),
            &body,
            Some(&choice.key),
        )
        .await;
    match bought {
        // The command side's answer is authoritative (the read side may
        // not have the purchase yet), so the page is rendered from it; a
        // resubmitted form gets the same purchase back by its key.
        Ok(purchase) => purchase_page(
            &visitor,
            Purchase {
                showtime: Some(showtime),
                ..purchase
            },
        ),
        Err(error) => {
            // Seats taken or too few free (409), a declined card (402): the
            // API's sentence names the seats or the free count, and the
            // map is one link away.
            let errors = match error.status() {
                Some(402 | 409) => FormErrors::message(error.detail()),
                _ => FormErrors::from_api(error, &[])?,
            };
            choice.card.clear();
            checkout_form(&visitor, showtime, choice, errors)
        }
    }
}

#[derive(Template)]
#[template(path = "cinema/purchase.html")]
struct PurchasePage {
    chrome: Chrome,
    purchase: Purchase,
}

fn purchase_page(visitor: &Visitor, purchase: Purchase) -> Result<Response, WebError> {
    render(PurchasePage {
        chrome: Chrome::new(visitor, "Your tickets", "cinema"),
        purchase,
    })
}

async fn purchase(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<Uuid>,
) -> Result<Response, WebError> {
    let token = &visitor
        .require(&format!("/cinema/purchases/{id}"))?
        .access_token;
    let purchase: Purchase = state
        .gateway
        .get(&format!("/api/cinema/purchases/{id}"), Some(token))
        .await?;
    purchase_page(&visitor, purchase)
}

#[derive(Template)]
#[template(path = "cinema/tickets.html")]
struct MyTickets {
    chrome: Chrome,
    purchases: Vec<Purchase>,
}

async fn my_tickets(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
) -> Result<Response, WebError> {
    let token = &visitor.require("/cinema/tickets")?.access_token;
    let page: Page<Purchase> = state
        .gateway
        .get_query(
            "/api/cinema/purchases",
            &[("limit", "100".into())],
            Some(token),
        )
        .await?;
    render(MyTickets {
        chrome: Chrome::new(&visitor, "My tickets", "cinema"),
        purchases: page.items,
    })
}

/// A ticket's PDF (`<ticket>.pdf`) or a purchase's (`purchases/<id>.pdf`
/// is reached as `purchase-<id>.pdf`), fetched with the visitor's token.
async fn ticket_pdf(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Path(file): Path<String>,
) -> Result<Response, WebError> {
    let token = &visitor.require("/cinema/tickets")?.access_token;
    let id = file.strip_suffix(".pdf").ok_or(WebError::NotFound)?;
    let path = match id.strip_prefix("purchase-") {
        Some(purchase) => format!(
            "/api/cinema/tickets/purchases/{}.pdf",
            purchase.parse::<Uuid>().map_err(|_| WebError::NotFound)?
        ),
        None => format!(
            "/api/cinema/tickets/{}.pdf",
            id.parse::<Uuid>().map_err(|_| WebError::NotFound)?
        ),
    };
    Ok(crate::download::pass_on(&state, &path, token, None)
        .await?
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &str) -> Vec<(String, String)> {
        serde_urlencoded::from_str(query).unwrap()
    }

    #[test]
    fn a_seat_sent_twice_is_chosen_once_in_its_first_place() {
        let choice = Choice::parse(&pairs("seat=A1&seat=b2&seat=a1&card=4242"));
        assert_eq!(choice.seats, ["A1", "B2"]);
        assert_eq!(choice.card, "4242");
    }

    #[test]
    fn the_seat_choice_reads_repeated_seats_or_a_quantity() {
        let choice = Choice::parse(&pairs("seat=a1&seat=A2&seat=&quantity=&card=4242"));
        assert_eq!(choice.seats, ["A1", "A2"]);
        assert_eq!(
            choice.body().unwrap(),
            serde_json::json!({"seats": ["A1", "A2"], "card": "4242"})
        );
        let choice = Choice::parse(&pairs("quantity=3&card=4242"));
        assert_eq!(choice.body().unwrap()["quantity"], 3);
        let nothing = Choice::parse(&pairs("quantity=0"));
        assert!(nothing.body().unwrap_err().get("quantity").is_some());
    }
}
