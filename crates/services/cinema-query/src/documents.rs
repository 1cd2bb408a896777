//! The read models: denormalised documents, one per chain, cinema, room,
//! movie, showtime, seat map and purchase, each stored as JSON with the few
//! columns needed to find it ([`Doc`]).
//!
//! A document holds the state of its own aggregate and copies of the
//! aggregates it shows (a showtime shows its movie's title, its room and its
//! cinema). Every copy carries the version it was taken at, so a change is
//! copied in only when it is newer than what the document holds.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use zocalo_contracts::cinema::{SeatPrice, Ticket};

/// The document sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Chain,
    Cinema,
    Room,
    Movie,
    Showtime,
    SeatMap,
    Purchase,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Chain,
        Kind::Cinema,
        Kind::Room,
        Kind::Movie,
        Kind::Showtime,
        Kind::SeatMap,
        Kind::Purchase,
    ];

    /// The value of the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Chain => "chain",
            Kind::Cinema => "cinema",
            Kind::Room => "room",
            Kind::Movie => "movie",
            Kind::Showtime => "showtime",
            Kind::SeatMap => "seat_map",
            Kind::Purchase => "purchase",
        }
    }

    pub fn parse(value: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == value)
    }
}

/// A reference column of a document: the aggregates it shows or belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    Chain,
    Cinema,
    Room,
    Movie,
    Showtime,
    Customer,
}

impl Key {
    /// The column holding this key (a fixed name, safe to put in SQL).
    pub fn column(self) -> &'static str {
        match self {
            Key::Chain => "chain_id",
            Key::Cinema => "cinema_id",
            Key::Room => "room_id",
            Key::Movie => "movie_id",
            Key::Showtime => "showtime_id",
            Key::Customer => "customer_id",
        }
    }
}

/// The reference columns of a document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keys {
    pub chain_id: Option<Uuid>,
    pub cinema_id: Option<Uuid>,
    pub room_id: Option<Uuid>,
    pub movie_id: Option<Uuid>,
    pub showtime_id: Option<Uuid>,
    pub customer_id: Option<Uuid>,
}

impl Keys {
    pub fn get(&self, key: Key) -> Option<Uuid> {
        match key {
            Key::Chain => self.chain_id,
            Key::Cinema => self.cinema_id,
            Key::Room => self.room_id,
            Key::Movie => self.movie_id,
            Key::Showtime => self.showtime_id,
            Key::Customer => self.customer_id,
        }
    }
}

/// One stored document.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub kind: Kind,
    pub id: Uuid,
    /// The version of the document's own aggregate (for seat maps, the seat
    /// map's version; for purchases, how far the purchase got: see
    /// [`PurchaseView::rank`]). A deleted aggregate keeps a tombstone with
    /// its deletion's version, so an older event arriving late is ignored.
    pub version: i64,
    pub deleted: bool,
    pub keys: Keys,
    /// Lower-cased city (cinemas), for `?city=`.
    pub city: Option<String>,
    /// Lower-cased name (chains, cinemas, movies), the listing order.
    pub name: Option<String>,
    /// When it happens (showtimes: start; purchases: time of purchase).
    pub at: Option<DateTime<Utc>>,
    /// Showtimes: `scheduled` or `cancelled`.
    pub status: Option<String>,
    /// The document itself; `null` for a tombstone.
    pub body: serde_json::Value,
}

impl Doc {
    /// A live document with no columns and no body yet.
    pub fn empty(kind: Kind, id: Uuid, version: i64) -> Self {
        Doc {
            kind,
            id,
            version,
            deleted: false,
            keys: Keys::default(),
            city: None,
            name: None,
            at: None,
            status: None,
            body: serde_json::Value::Null,
        }
    }

    pub fn tombstone(kind: Kind, id: Uuid, version: i64) -> Self {
        Doc {
            deleted: true,
            ..Doc::empty(kind, id, version)
        }
    }

    /// The body as its view type; `None` for a tombstone.
    pub fn view<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        if self.deleted {
            return None;
        }
        T::deserialize(&self.body).ok()
    }
}

/// `{id, version, name}` of a chain or room shown inside another document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NamedRef {
    pub id: Uuid,
    pub version: i64,
    pub name: String,
}

/// A chain with its cinemas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChainView {
    pub id: Uuid,
    pub version: i64,
    pub name: String,
    pub description: String,
    /// By name.
    pub cinemas: Vec<CinemaCard>,
}

/// A cinema as listed in its chain and shown in its showtimes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CinemaCard {
    pub id: Uuid,
    pub version: i64,
    pub name: String,
    pub city: String,
    pub address: String,
}

/// A cinema with its chain and rooms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CinemaView {
    pub id: Uuid,
    pub version: i64,
    pub chain_id: Uuid,
    pub name: String,
    pub city: String,
    pub address: String,
    /// `None` until the chain's own event is projected.
    pub chain: Option<NamedRef>,
    /// By name.
    pub rooms: Vec<RoomView>,
}

/// A room and its seat layout. Seats are row letter + number (`A1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RoomView {
    pub id: Uuid,
    pub version: i64,
    pub cinema_id: Uuid,
    pub name: String,
    pub rows: u16,
    pub seats_per_row: u16,
    pub disabled: Vec<String>,
    pub accessible: Vec<String>,
    /// Seats that can be sold (all but the disabled ones).
    pub capacity: u32,
}

/// A movie with its showtimes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MovieView {
    pub id: Uuid,
    pub version: i64,
    pub title: String,
    pub synopsis: String,
    pub duration_min: u16,
    pub classification: String,
    pub genres: Vec<String>,
    /// Every showtime of the movie, by start (listings keep the coming ones).
    pub showtimes: Vec<ShowtimeCard>,
}

/// A showtime as listed under its movie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShowtimeCard {
    pub id: Uuid,
    pub version: i64,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub cinema_id: Uuid,
    pub room_id: Uuid,
    pub status: String,
}

/// What a showtime shows of its movie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MovieRef {
    pub id: Uuid,
    pub version: i64,
    pub title: String,
    pub duration_min: u16,
    pub classification: String,
}

/// A showtime with its movie, room, cinema, chain and prices. The copies
/// are `None` until their own events are projected (or after a deletion).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShowtimeView {
    pub id: Uuid,
    pub version: i64,
    pub movie_id: Uuid,
    pub room_id: Uuid,
    pub cinema_id: Uuid,
    pub chain_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub status: String,
    #[schema(value_type = Vec<Object>)]
    pub prices: Vec<SeatPrice>,
    pub currency: String,
    pub movie: Option<MovieRef>,
    pub room: Option<NamedRef>,
    pub cinema: Option<CinemaCard>,
    pub chain: Option<NamedRef>,
}

/// The showtime facts a seat map needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShowtimeRef {
    pub id: Uuid,
    pub version: i64,
    pub starts_at: DateTime<Utc>,
    pub status: String,
    pub room_id: Uuid,
}

/// The stored seat map of a showtime: the room's layout and the sold seats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SeatMapView {
    pub showtime_id: Uuid,
    /// The seat map's own version (0 before the first sale).
    pub version: i64,
    /// Sorted.
    pub sold: Vec<String>,
    pub showtime: Option<ShowtimeRef>,
    pub room: Option<RoomView>,
}

/// Purchase statuses in the read model.
pub const COMPLETED: &str = "completed";
pub const REFUNDED: &str = "refunded";

/// A customer's purchase with its tickets and the showtime they are for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PurchaseView {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub showtime_id: Option<Uuid>,
    /// `completed` or `refunded`; `None` while only the PDF is known.
    pub status: Option<String>,
    /// As the command side issued them; `code` is what the door checks.
    #[schema(value_type = Vec<Object>)]
    pub tickets: Vec<Ticket>,
    pub total_cents: i64,
    pub currency: String,
    pub purchased_at: Option<DateTime<Utc>>,
    pub refunded_at: Option<DateTime<Utc>>,
    /// Whether the tickets' PDF is ready (the command side serves it).
    pub tickets_pdf_ready: bool,
    pub showtime: Option<ShowtimeView>,
}

impl PurchaseView {
    /// How far the purchase got: 0 nothing but its PDF, 1 completed, 2
    /// refunded. A purchase only moves forward, so this is its version.
    pub fn rank(&self) -> i64 {
        match self.status.as_deref() {
            Some(REFUNDED) => 2,
            Some(_) => 1,
            None => 0,
        }
    }
}
