//! The cinema's resources as the command side sees them, and the input that
//! creates or changes them, validated once here.
//!
//! Every aggregate is kept as the payload of its latest `…saved` event
//! (the contract types, version included): what is stored and what is
//! published cannot diverge.

mod purchase;
mod seats;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;
use zocalo_contracts::cinema::{
    ChainSaved, CinemaSaved, MovieSaved, RoomSaved, SCHEDULED, STANDARD, SeatPrice, ShowtimeSaved,
};
use zocalo_http::{FieldError, Problem};

pub use purchase::{
    NewPurchase, Purchase, PurchaseInput, PurchaseStatus, SeatRequest, TicketPrice,
    verification_code,
};
pub use seats::{Layout, MAX_ROWS, MAX_SEATS_PER_ROW, SeatLabel, Unsellable};

/// Collects every invalid field of an input, to answer one 422 naming all.
#[derive(Debug, Default)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Add the error unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, message: &str) {
        if !ok {
            self.add(field, message);
        }
    }

    pub fn finish(self) -> Result<(), Problem> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Problem::invalid_fields(self.0))
        }
    }
}

/// Trimmed text with 1 to `max` characters.
fn text(errors: &mut Errors, field: &str, value: &str, max: usize) -> String {
    let value = value.trim().to_owned();
    let length = value.chars().count();
    errors.check(
        (1..=max).contains(&length),
        field,
        &format!("must have 1 to {max} characters"),
    );
    value
}

/// Trimmed text with at most `max` characters (may be empty).
fn optional_text(errors: &mut Errors, field: &str, value: &str, max: usize) -> String {
    let value = value.trim().to_owned();
    errors.check(
        value.chars().count() <= max,
        field,
        &format!("must have at most {max} characters"),
    );
    value
}

fn in_range(errors: &mut Errors, field: &str, value: i64, min: i64, max: i64) -> i64 {
    errors.check(
        (min..=max).contains(&value),
        field,
        &format!("must be {min} to {max}"),
    );
    value.clamp(min, max)
}

// ---------------------------------------------------------------- chains

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ChainInput {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct ChainPatch {
    pub name: Option<String>,
    pub description: Option<String>,
}

impl ChainInput {
    pub fn validate(self) -> Result<ChainSaved, Problem> {
        let mut errors = Errors::default();
        let chain = ChainSaved {
            chain_id: Uuid::now_v7(),
            version: 1,
            name: text(&mut errors, "name", &self.name, 200),
            description: optional_text(&mut errors, "description", &self.description, 2000),
        };
        errors.finish().map(|()| chain)
    }
}

impl ChainPatch {
    pub fn apply(self, mut chain: ChainSaved) -> Result<ChainSaved, Problem> {
        let mut errors = Errors::default();
        if let Some(name) = self.name {
            chain.name = text(&mut errors, "name", &name, 200);
        }
        if let Some(description) = self.description {
            chain.description = optional_text(&mut errors, "description", &description, 2000);
        }
        chain.version += 1;
        errors.finish().map(|()| chain)
    }
}

// --------------------------------------------------------------- cinemas

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CinemaInput {
    pub chain_id: Uuid,
    pub name: String,
    pub city: String,
    pub address: String,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct CinemaPatch {
    pub name: Option<String>,
    pub city: Option<String>,
    pub address: Option<String>,
}

impl CinemaInput {
    pub fn validate(self) -> Result<CinemaSaved, Problem> {
        let mut errors = Errors::default();
        let cinema = CinemaSaved {
            cinema_id: Uuid::now_v7(),
            chain_id: self.chain_id,
            version: 1,
            name: text(&mut errors, "name", &self.name, 200),
            city: text(&mut errors, "city", &self.city, 100),
            address: text(&mut errors, "address", &self.address, 500),
            manager_ids: Vec::new(),
        };
        errors.finish().map(|()| cinema)
    }
}

impl CinemaPatch {
    pub fn apply(self, mut cinema: CinemaSaved) -> Result<CinemaSaved, Problem> {
        let mut errors = Errors::default();
        if let Some(name) = self.name {
            cinema.name = text(&mut errors, "name", &name, 200);
        }
        if let Some(city) = self.city {
            cinema.city = text(&mut errors, "city", &city, 100);
        }
        if let Some(address) = self.address {
            cinema.address = text(&mut errors, "address", &address, 500);
        }
        cinema.version += 1;
        errors.finish().map(|()| cinema)
    }
}

/// Add or remove a manager; `None` when nothing changes (the request is
/// then answered without a new version).
pub fn with_manager(mut cinema: CinemaSaved, user: Uuid, assigned: bool) -> Option<CinemaSaved> {
    let listed = cinema.manager_ids.contains(&user);
    if listed == assigned {
        return None;
    }
    if assigned {
        cinema.manager_ids.push(user);
    } else {
        cinema.manager_ids.retain(|id| *id != user);
    }
    cinema.version += 1;
    Some(cinema)
}

// ----------------------------------------------------------------- rooms

/// A room: its seat map as published, plus the cleaning time that every
/// showtime in it adds to the movie's length.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Room {
    #[serde(flatten)]
    pub saved: RoomSaved,
    pub cleaning_min: u16,
}

impl Room {
    pub fn layout(&self) -> Layout {
        let labels = |list: &[String]| list.iter().filter_map(|s| SeatLabel::parse(s)).collect();
        Layout {
            rows: self.saved.rows,
            seats_per_row: self.saved.seats_per_row,
            disabled: labels(&self.saved.disabled),
            accessible: labels(&self.saved.accessible),
        }
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct RoomInput {
    pub cinema_id: Uuid,
    pub name: String,
    pub rows: i64,
    pub seats_per_row: i64,
    #[serde(default)]
    pub disabled: Vec<String>,
    #[serde(default)]
    pub accessible: Vec<String>,
    /// Minutes between showtimes for cleaning; the service's default when
    /// absent.
    pub cleaning_min: Option<i64>,
}

/// The seat map's size is fixed once the room exists (sold seats refer to
/// it); name, disabled and accessible seats and cleaning time may change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct RoomPatch {
    pub name: Option<String>,
    pub disabled: Option<Vec<String>>,
    pub accessible: Option<Vec<String>>,
    pub cleaning_min: Option<i64>,
}

/// Valid, sorted, de-duplicated seat labels of a room of `rows` × `per_row`.
fn seat_list(
    errors: &mut Errors,
    field: &str,
    seats: &[String],
    rows: u16,
    per_row: u16,
) -> Vec<String> {
    let layout = Layout {
        rows,
        seats_per_row: per_row,
        disabled: Default::default(),
        accessible: Default::default(),
    };
    let mut labels = Vec::new();
    for (i, text) in seats.iter().enumerate() {
        match SeatLabel::parse(text).filter(|s| layout.contains(*s)) {
            Some(seat) => labels.push(seat),
            None => errors.add(
                format!("{field}[{i}]"),
                format!("`{text}` is not a seat of this room"),
            ),
        }
    }
    labels.sort_unstable();
    labels.dedup();
    labels.iter().map(ToString::to_string).collect()
}

const MAX_CLEANING_MIN: i64 = 240;

impl RoomInput {
    pub fn validate(self, default_cleaning_min: u16) -> Result<Room, Problem> {
        let mut errors = Errors::default();
        let rows = in_range(&mut errors, "rows", self.rows, 1, i64::from(MAX_ROWS)) as u16;
        let per_row = in_range(
            &mut errors,
            "seats_per_row",
            self.seats_per_row,
            1,
            i64::from(MAX_SEATS_PER_ROW),
        ) as u16;
        let cleaning = self.cleaning_min.unwrap_or(i64::from(default_cleaning_min));
        let room = Room {
            saved: RoomSaved {
                room_id: Uuid::now_v7(),
                cinema_id: self.cinema_id,
                version: 1,
                name: text(&mut errors, "name", &self.name, 100),
                rows,
                seats_per_row: per_row,
                disabled: seat_list(&mut errors, "disabled", &self.disabled, rows, per_row),
                accessible: seat_list(&mut errors, "accessible", &self.accessible, rows, per_row),
            },
            cleaning_min: in_range(&mut errors, "cleaning_min", cleaning, 0, MAX_CLEANING_MIN)
                as u16,
        };
        errors.finish().map(|()| room)
    }
}

impl RoomPatch {
    pub fn apply(self, mut room: Room) -> Result<Room, Problem> {
        let mut errors = Errors::default();
        let (rows, per_row) = (room.saved.rows, room.saved.seats_per_row);
        if let Some(name) = self.name {
            room.saved.name = text(&mut errors, "name", &name, 100);
        }
        if let Some(disabled) = self.disabled {
            room.saved.disabled = seat_list(&mut errors, "disabled", &disabled, rows, per_row);
        }
        if let Some(accessible) = self.accessible {
            room.saved.accessible =
                seat_list(&mut errors, "accessible", &accessible, rows, per_row);
        }
        if let Some(cleaning) = self.cleaning_min {
            room.cleaning_min =
                in_range(&mut errors, "cleaning_min", cleaning, 0, MAX_CLEANING_MIN) as u16;
        }
        room.saved.version += 1;
        errors.finish().map(|()| room)
    }
}

// ---------------------------------------------------------------- movies

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct MovieInput {
    pub title: String,
    #[serde(default)]
    pub synopsis: String,
    pub duration_min: i64,
    #[serde(default)]
    pub classification: String,
    #[serde(default)]
    pub genres: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct MoviePatch {
    pub title: Option<String>,
    pub synopsis: Option<String>,
    pub duration_min: Option<i64>,
    pub classification: Option<String>,
    pub genres: Option<Vec<String>>,
}

const MAX_DURATION_MIN: i64 = 600;

fn genres(errors: &mut Errors, genres: &[String]) -> Vec<String> {
    errors.check(genres.len() <= 10, "genres", "must list at most 10 genres");
    genres
        .iter()
        .enumerate()
        .map(|(i, g)| text(errors, &format!("genres[{i}]"), g, 50))
        .collect()
}

impl MovieInput {
    pub fn validate(self) -> Result<MovieSaved, Problem> {
        let mut errors = Errors::default();
        let movie = MovieSaved {
            movie_id: Uuid::now_v7(),
            version: 1,
            title: text(&mut errors, "title", &self.title, 300),
            synopsis: optional_text(&mut errors, "synopsis", &self.synopsis, 5000),
            duration_min: in_range(
                &mut errors,
                "duration_min",
                self.duration_min,
                1,
                MAX_DURATION_MIN,
            ) as u16,
            classification: optional_text(&mut errors, "classification", &self.classification, 20),
            genres: genres(&mut errors, &self.genres),
        };
        errors.finish().map(|()| movie)
    }
}

impl MoviePatch {
    pub fn apply(self, mut movie: MovieSaved) -> Result<MovieSaved, Problem> {
        let mut errors = Errors::default();
        if let Some(title) = self.title {
            movie.title = text(&mut errors, "title", &title, 300);
        }
        if let Some(synopsis) = self.synopsis {
            movie.synopsis = optional_text(&mut errors, "synopsis", &synopsis, 5000);
        }
        if let Some(duration) = self.duration_min {
            movie.duration_min =
                in_range(&mut errors, "duration_min", duration, 1, MAX_DURATION_MIN) as u16;
        }
        if let Some(classification) = self.classification {
            movie.classification =
                optional_text(&mut errors, "classification", &classification, 20);
        }
        if let Some(list) = self.genres {
            movie.genres = genres(&mut errors, &list);
        }
        movie.version += 1;
        errors.finish().map(|()| movie)
    }
}

// ------------------------------------------------------------- showtimes

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct PriceInput {
    pub class: String,
    pub cents: i64,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ShowtimeInput {
    pub movie_id: Uuid,
    pub room_id: Uuid,
    pub starts_at: DateTime<Utc>,
    /// One price per seat class; `standard` is required, `accessible`
    /// costs the standard price when absent.
    pub prices: Vec<PriceInput>,
    /// ISO 4217 code; the service's default when absent.
    pub currency: Option<String>,
}

/// A new start (the end follows), new prices, or a new status
/// (`cancelled` to cancel, `scheduled` to restore).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct ShowtimePatch {
    pub starts_at: Option<DateTime<Utc>>,
    pub prices: Option<Vec<PriceInput>>,
    pub status: Option<String>,
}

/// A showtime: the movie and the room it needs to compute its end.
pub struct ShowtimeContext<'a> {
    pub movie: &'a MovieSaved,
    pub room: &'a Room,
    pub chain_id: Uuid,
}

const MAX_PRICE_CENTS: i64 = 10_000_000;

fn prices(errors: &mut Errors, input: &[PriceInput]) -> Vec<SeatPrice> {
    let mut prices: Vec<SeatPrice> = Vec::new();
    for (i, price) in input.iter().enumerate() {
        let known =
            [STANDARD, zocalo_contracts::cinema::ACCESSIBLE].contains(&price.class.as_str());
        errors.check(
            known,
            &format!("prices[{i}].class"),
            "must be standard or accessible",
        );
        in_range(
            errors,
            &format!("prices[{i}].cents"),
            price.cents,
            0,
            MAX_PRICE_CENTS,
        );
        if prices.iter().any(|p| p.class == price.class) {
            errors.add(format!("prices[{i}].class"), "appears twice");
        } else if known {
            prices.push(SeatPrice {
                class: price.class.clone(),
                cents: price.cents,
            });
        }
    }
    let standard = prices.iter().find(|p| p.class == STANDARD).map(|p| p.cents);
    match standard {
        None => errors.add("prices", "must include the standard price"),
        Some(cents)
            if !prices
                .iter()
                .any(|p| p.class == zocalo_contracts::cinema::ACCESSIBLE) =>
        {
            prices.push(SeatPrice {
                class: zocalo_contracts::cinema::ACCESSIBLE.into(),
                cents,
            })
        }
        Some(_) => {}
    }
    prices.sort_by(|a, b| b.class.cmp(&a.class));
    prices
}

fn currency(errors: &mut Errors, code: &str) -> String {
    let code = code.trim().to_ascii_uppercase();
    errors.check(
        code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()),
        "currency",
        "must be a three-letter ISO 4217 code",
    );
    code
}

/// The end of a showtime: the movie, then the room's cleaning.
pub fn ends_at(starts_at: DateTime<Utc>, movie: &MovieSaved, room: &Room) -> DateTime<Utc> {
    starts_at
        + chrono::Duration::minutes(i64::from(movie.duration_min) + i64::from(room.cleaning_min))
}

/// Showtimes are scheduled (or moved) into the future only.
fn future(errors: &mut Errors, starts_at: DateTime<Utc>) {
    errors.check(starts_at > Utc::now(), "starts_at", "must be in the future");
}

impl ShowtimeInput {
    pub fn validate(
        self,
        at: ShowtimeContext<'_>,
        default_currency: &str,
    ) -> Result<ShowtimeSaved, Problem> {
        let mut errors = Errors::default();
        future(&mut errors, self.starts_at);
        let showtime = ShowtimeSaved {
            showtime_id: Uuid::now_v7(),
            version: 1,
            movie_id: self.movie_id,
            room_id: self.room_id,
            cinema_id: at.room.saved.cinema_id,
            chain_id: at.chain_id,
            starts_at: self.starts_at,
            ends_at: ends_at(self.starts_at, at.movie, at.room),
            prices: prices(&mut errors, &self.prices),
            currency: currency(
                &mut errors,
                self.currency.as_deref().unwrap_or(default_currency),
            ),
            status: SCHEDULED.into(),
        };
        errors.finish().map(|()| showtime)
    }
}

impl ShowtimePatch {
    pub fn apply(
        self,
        mut showtime: ShowtimeSaved,
        at: ShowtimeContext<'_>,
    ) -> Result<ShowtimeSaved, Problem> {
        let mut errors = Errors::default();
        // Only a move takes the movie's and room's current lengths: a
        // scheduled showtime keeps its end when they change.
        if let Some(starts_at) = self.starts_at {
            future(&mut errors, starts_at);
            showtime.starts_at = starts_at;
            showtime.ends_at = ends_at(starts_at, at.movie, at.room);
        }
        if let Some(list) = self.prices {
            showtime.prices = prices(&mut errors, &list);
        }
        if let Some(status) = self.status {
            let known = [SCHEDULED, zocalo_contracts::cinema::CANCELLED].contains(&status.as_str());
            errors.check(known, "status", "must be scheduled or cancelled");
            showtime.status = status;
        }
        showtime.version += 1;
        errors.finish().map(|()| showtime)
    }
}

/// The price of a seat class in a showtime.
pub fn price_of(showtime: &ShowtimeSaved, class: &str) -> i64 {
    showtime
        .prices
        .iter()
        .find(|p| p.class == class)
        .or_else(|| showtime.prices.iter().find(|p| p.class == STANDARD))
        .map_or(0, |p| p.cents)
}
