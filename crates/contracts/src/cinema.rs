//! The cinema's event catalogue: what `cinema-command` publishes and
//! `cinema-query` projects into read models.
//!
//! Events carry state, not deltas. Every `…saved` event holds the whole
//! aggregate as it is after the change, with the aggregate's `version` (1 on
//! creation, +1 on every change, assigned in the command side's transaction);
//! a deletion is a tombstone with the next version. A projector therefore
//! keeps, per document, the highest version it has seen and ignores anything
//! older or equal: duplicates and out-of-order delivery change nothing.
//!
//! Seats follow the same rule per showtime: every purchase or refund carries
//! the showtime's whole [`SeatMapState`] (the sold seats after the change and
//! the seat map's own version), so the live seat map converges whatever the
//! order in which purchases arrive.
//!
//! The command side also keeps every event in an append-only log with a
//! global sequence number, served page by page as [`EventLogPage`]; the query
//! side rebuilds its read models from scratch by replaying that log.

use super::*;

pub const TOPIC: &str = "cinema";

pub const CHAIN_SAVED: &str = "chain.saved";
pub const CHAIN_DELETED: &str = "chain.deleted";
pub const CINEMA_SAVED: &str = "cinema.saved";
pub const CINEMA_DELETED: &str = "cinema.deleted";
pub const ROOM_SAVED: &str = "room.saved";
pub const ROOM_DELETED: &str = "room.deleted";
pub const MOVIE_SAVED: &str = "movie.saved";
pub const MOVIE_DELETED: &str = "movie.deleted";
/// A showtime created, changed or cancelled (`status` says which).
pub const SHOWTIME_SAVED: &str = "showtime.saved";
pub const PURCHASE_COMPLETED: &str = "purchase.completed";
pub const PURCHASE_REFUNDED: &str = "purchase.refunded";
/// The PDF of a purchase's tickets is in object storage.
pub const TICKETS_DOCUMENT_READY: &str = "tickets.document_ready";

/// Jobs of the cinema command side (its own queues).
pub const TICKETS_PDF_QUEUE: &str = "cinema.tickets_pdf";
pub const WEBHOOK_QUEUE: &str = "cinema.webhook";

/// Showtime statuses.
pub const SCHEDULED: &str = "scheduled";
pub const CANCELLED: &str = "cancelled";

/// Seat classes priced separately in a showtime.
pub const STANDARD: &str = "standard";
pub const ACCESSIBLE: &str = "accessible";

/// Payload of `chain.saved`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainSaved {
    pub chain_id: Uuid,
    pub version: i64,
    pub name: String,
    pub description: String,
}

/// Payload of `cinema.saved`; `manager_ids` are the users (role `manager`)
/// who run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CinemaSaved {
    pub cinema_id: Uuid,
    pub chain_id: Uuid,
    pub version: i64,
    pub name: String,
    pub city: String,
    pub address: String,
    pub manager_ids: Vec<Uuid>,
}

/// Payload of `room.saved`. Seats are labelled row letter + number (`A1`,
/// `C12`); `disabled` seats are never sold, `accessible` ones are priced in
/// the `accessible` class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSaved {
    pub room_id: Uuid,
    pub cinema_id: Uuid,
    pub version: i64,
    pub name: String,
    pub rows: u16,
    pub seats_per_row: u16,
    pub disabled: Vec<String>,
    pub accessible: Vec<String>,
}

/// Payload of `movie.saved`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovieSaved {
    pub movie_id: Uuid,
    pub version: i64,
    pub title: String,
    pub synopsis: String,
    pub duration_min: u16,
    /// Age classification as printed on the poster (`G`, `PG-13`, `B15`…).
    pub classification: String,
    pub genres: Vec<String>,
}

/// One seat class's price in a showtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatPrice {
    pub class: String,
    pub cents: i64,
}

/// Payload of `showtime.saved`. `ends_at` includes the room's cleaning time,
/// so showtimes of one room never overlap on `[starts_at, ends_at)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowtimeSaved {
    pub showtime_id: Uuid,
    pub version: i64,
    pub movie_id: Uuid,
    pub room_id: Uuid,
    pub cinema_id: Uuid,
    pub chain_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub prices: Vec<SeatPrice>,
    pub currency: String,
    /// [`SCHEDULED`] or [`CANCELLED`].
    pub status: String,
}

/// Payload of every `…deleted` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub id: Uuid,
    pub version: i64,
}

/// The sold seats of one showtime after a change, with the seat map's own
/// version (1 after the first sale, +1 per purchase or refund).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatMapState {
    pub version: i64,
    pub sold: Vec<String>,
}

/// One ticket: one seat of one showtime. `code` is what the door checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub ticket_id: Uuid,
    pub seat: String,
    pub class: String,
    pub price_cents: i64,
    pub code: String,
}

/// Payload of `purchase.completed`: seats paid for and tickets issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseCompleted {
    pub purchase_id: Uuid,
    pub showtime_id: Uuid,
    pub customer_id: Uuid,
    pub tickets: Vec<Ticket>,
    pub total_cents: i64,
    pub currency: String,
    pub at: DateTime<Utc>,
    pub seat_map: SeatMapState,
}

/// Payload of `purchase.refunded`: the purchase's seats are free again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseRefunded {
    pub purchase_id: Uuid,
    pub showtime_id: Uuid,
    pub customer_id: Uuid,
    pub at: DateTime<Utc>,
    pub seat_map: SeatMapState,
}

/// Payload of `tickets.document_ready`: where the purchase's PDF is kept
/// (an object storage key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketsDocumentReady {
    pub purchase_id: Uuid,
    pub customer_id: Uuid,
    pub object_key: String,
}

/// Payload of the `cinema.tickets_pdf` job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketsPdfJob {
    pub purchase_id: Uuid,
}

/// One entry of the command side's event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedEvent {
    /// Increasing with every event; a reader that pages with `after` sees
    /// each event once.
    pub seq: i64,
    pub id: Uuid,
    pub kind: String,
    pub payload: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
}

/// A page of `GET /internal/events?after=<seq>&limit=<n>`; `next_after` is
/// absent on the last page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventLogPage {
    pub events: Vec<LoggedEvent>,
    pub next_after: Option<i64>,
}
