//! The command side's storage, on PostgreSQL or SQLite.
//!
//! Aggregates (chains, cinemas, rooms, movies, showtimes) are saved with an
//! optimistic version check and their events in one transaction; every
//! event goes both to the append-only event log (for replays) and to the
//! outbox (for the bus). The schema holds the invariants: a seat of a
//! showtime is held or sold once (primary key), scheduled showtimes of a
//! room never overlap (exclusion constraint; a check inside the single
//! writer's transaction on SQLite), one purchase per idempotency key, one
//! charge per purchase (the ledger's primary key), references exist.

mod postgres;
mod sqlite;

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;
use zocalo_bus::Event;
use zocalo_bus::outbox::Source;
use zocalo_contracts::cinema::{
    self as contract, LoggedEvent, PurchaseCompleted, PurchaseRefunded, SCHEDULED, SeatMapState,
    ShowtimeSaved,
};
use zocalo_payments::ChargeLedger;
use zocalo_store::{DatabaseSettings, Engine, StoreError};

use crate::domain::{
    Layout, NewPurchase, Purchase, Room, SeatLabel, SeatRequest, TicketPrice, Unsellable, price_of,
};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The aggregates, each in its own table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chain,
    Cinema,
    Room,
    Movie,
    Showtime,
}

impl Kind {
    pub fn table(self) -> &'static str {
        match self {
            Kind::Chain => "chains",
            Kind::Cinema => "cinemas",
            Kind::Room => "rooms",
            Kind::Movie => "movies",
            Kind::Showtime => "showtimes",
        }
    }

    /// The column naming the aggregate it belongs to, if any.
    fn parent_column(self) -> Option<&'static str> {
        match self {
            Kind::Cinema => Some("chain_id"),
            Kind::Room => Some("cinema_id"),
            _ => None,
        }
    }
}

/// An aggregate's new state: its document (the `…saved` payload) and the
/// columns the schema constrains.
#[derive(Debug, Clone)]
pub struct Record {
    pub kind: Kind,
    pub id: Uuid,
    /// The new version: 1 inserts, n updates the row at n − 1.
    pub version: i64,
    pub parent: Option<Uuid>,
    pub doc: Value,
    pub slot: Option<Slot>,
}

/// Where and when a showtime is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub room_id: Uuid,
    pub movie_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub scheduled: bool,
}

impl Record {
    pub fn showtime(showtime: &ShowtimeSaved) -> Self {
        Self {
            kind: Kind::Showtime,
            id: showtime.showtime_id,
            version: showtime.version,
            parent: None,
            doc: serde_json::to_value(showtime).unwrap_or_default(),
            slot: Some(Slot {
                room_id: showtime.room_id,
                movie_id: showtime.movie_id,
                starts_at: showtime.starts_at,
                ends_at: showtime.ends_at,
                scheduled: showtime.status == SCHEDULED,
            }),
        }
    }
}

/// What became of a save or a deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    Saved,
    /// Someone changed (or deleted) the aggregate since it was read.
    Stale,
    /// The showtime would overlap this scheduled one in the same room.
    Overlaps(Uuid),
    /// A referenced aggregate does not exist (insert), or others still
    /// reference this one (delete).
    Reference,
}

/// Why a purchase could not hold its seats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NoShowtime,
    NotScheduled,
    /// Sales close when the showtime starts.
    Started,
    Unsellable(Vec<(String, Unsellable)>),
    Taken(Vec<String>),
    NotEnough {
        free: usize,
    },
}

/// What `hold` did.
#[derive(Debug, Clone)]
pub enum Held {
    New(Purchase),
    /// The idempotency key was used before: its purchase, and whether this
    /// request is the same as that one.
    Existing {
        purchase: Purchase,
        same_request: bool,
    },
    Refused(Refusal),
}

#[async_trait]
pub trait CinemaStore: Send + Sync + 'static {
    /// The document of an aggregate.
    async fn load(&self, kind: Kind, id: Uuid) -> Result<Option<Value>, StoreError>;
    /// Insert (version 1) or update (version n over n − 1) the aggregate and
    /// append `events`, atomically.
    async fn save(&self, record: Record, events: Vec<Event>) -> Result<Saved, StoreError>;
    /// Delete the aggregate if it is still at `version`, and append `events`.
    async fn delete(
        &self,
        kind: Kind,
        id: Uuid,
        version: i64,
        events: Vec<Event>,
    ) -> Result<Saved, StoreError>;

    /// Create the purchase and hold its seats (all or none); with a used
    /// idempotency key, find the purchase it created instead.
    async fn hold(&self, purchase: NewPurchase) -> Result<Held, StoreError>;
    /// `held → completed`: seats sold, tickets issued with the given codes
    /// source, `purchase.completed` appended. Returns the purchase as it is
    /// afterwards and whether this call completed it.
    async fn complete(&self, id: Uuid, now: DateTime<Utc>) -> Result<(bool, Purchase), StoreError>;
    /// `held → to` (declined or expired), seats released.
    async fn release(&self, id: Uuid, to: &str, now: DateTime<Utc>) -> Result<bool, StoreError>;
    /// `completed → refunded`: seats free again, `purchase.refunded`
    /// appended. Returns the purchase afterwards and whether this call
    /// refunded it.
    async fn refund(&self, id: Uuid, now: DateTime<Utc>) -> Result<(bool, Purchase), StoreError>;
    async fn purchase(&self, id: Uuid) -> Result<Option<Purchase>, StoreError>;
    /// Holds past their deadline, oldest first.
    async fn expired_holds(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Uuid>, StoreError>;
    /// The sold seats of a showtime and its seat map version, as stored.
    async fn seat_map(&self, showtime: Uuid) -> Result<SeatMapState, StoreError>;
    /// Seats with a row (held or sold) per showtime, for audits and tests.
    async fn taken_seats(&self, showtime: Uuid) -> Result<Vec<String>, StoreError>;

    /// Events with `seq > after`, in order, at most `limit`.
    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<LoggedEvent>, StoreError>;

    /// The card processor's ledger (`payment_charges`), in this database.
    fn ledger(&self) -> Arc<dyn ChargeLedger>;
    /// Where the outbox relay reads.
    fn outbox(&self) -> Source;
    async fn ping(&self) -> Result<(), StoreError>;
}

pub async fn open(settings: &DatabaseSettings) -> Result<Arc<dyn CinemaStore>, StoreError> {
    Ok(match Engine::from_url(&settings.url)? {
        Engine::Sqlite(path) => Arc::new(SqliteStore::open(&path, settings.max_connections)?),
        Engine::Postgres(_) => Arc::new(PostgresStore::connect(settings).await?),
    })
}

/// How many times a quantity purchase re-picks seats that others took
/// between its read and its insert before it gives up.
const PICK_ATTEMPTS: usize = 5;

/// The showtime and room a purchase is for, read inside its transaction.
pub(crate) struct Venue {
    pub showtime: ShowtimeSaved,
    pub layout: Layout,
}

impl Venue {
    /// Why this showtime sells nothing at `now`, if it does not.
    pub fn closed(&self, now: DateTime<Utc>) -> Option<Refusal> {
        if self.showtime.status != SCHEDULED {
            Some(Refusal::NotScheduled)
        } else if self.showtime.starts_at <= now {
            Some(Refusal::Started)
        } else {
            None
        }
    }

    pub fn parse(showtime: Value, room: Value) -> Result<Self, StoreError> {
        let showtime: ShowtimeSaved = from_doc(showtime)?;
        let room: Room = from_doc(room)?;
        Ok(Self {
            showtime,
            layout: room.layout(),
        })
    }

    fn priced(&self, seat: SeatLabel) -> TicketPrice {
        let class = self.layout.class_of(seat);
        TicketPrice {
            seat,
            class,
            price_cents: price_of(&self.showtime, class),
        }
    }

    /// Check explicitly requested seats against the room.
    pub fn check(&self, seats: &[SeatLabel]) -> Result<Vec<TicketPrice>, Refusal> {
        let unsellable: Vec<(String, Unsellable)> = seats
            .iter()
            .filter_map(|s| self.layout.check(*s).err().map(|why| (s.to_string(), why)))
            .collect();
        if unsellable.is_empty() {
            Ok(seats.iter().map(|s| self.priced(*s)).collect())
        } else {
            Err(Refusal::Unsellable(unsellable))
        }
    }

    /// The best `wanted` seats not in `taken`, or how many are free.
    pub fn pick(
        &self,
        taken: &HashSet<SeatLabel>,
        wanted: usize,
    ) -> Result<Vec<TicketPrice>, Refusal> {
        let picked = self.layout.best_free(taken, wanted);
        if picked.len() < wanted {
            return Err(Refusal::NotEnough { free: picked.len() });
        }
        Ok(picked.into_iter().map(|s| self.priced(s)).collect())
    }
}

/// Plans which seats a purchase holds, one insert attempt at a time, so
/// that both adapters run the same rules around their own SQL: explicit
/// seats are held all or none; a quantity re-picks around seats others took
/// between its read and its insert, a few times before it gives up.
pub(crate) struct SeatPlanner<'a> {
    venue: &'a Venue,
    request: &'a SeatRequest,
    mine: Vec<TicketPrice>,
    attempts: usize,
}

impl<'a> SeatPlanner<'a> {
    pub fn new(venue: &'a Venue, request: &'a SeatRequest) -> Self {
        Self {
            venue,
            request,
            mine: Vec::new(),
            attempts: 0,
        }
    }

    /// Whether [`Self::next`] needs the seats already taken.
    pub fn needs_taken(&self) -> bool {
        matches!(self.request, SeatRequest::Quantity(_))
    }

    /// The seats to try inserting next, given those with a row (ours
    /// included) in the database.
    pub fn next(&mut self, taken: &HashSet<SeatLabel>) -> Result<Vec<TicketPrice>, Refusal> {
        let wanted = match self.request {
            SeatRequest::Seats(seats) => return self.venue.check(seats),
            SeatRequest::Quantity(wanted) => *wanted,
        };
        self.attempts += 1;
        let mut unavailable = taken.clone();
        unavailable.extend(self.mine.iter().map(|p| p.seat));
        if self.attempts > PICK_ATTEMPTS {
            let free = self.venue.layout.sellable_count() - unavailable.len() + self.mine.len();
            return Err(Refusal::NotEnough { free });
        }
        self.venue
            .pick(&unavailable, wanted - self.mine.len())
            .map_err(|refusal| match refusal {
                Refusal::NotEnough { free } => Refusal::NotEnough {
                    free: free + self.mine.len(),
                },
                other => other,
            })
    }

    /// Record which of the `tried` seats were inserted; the outcome once
    /// there is one.
    pub fn inserted(
        &mut self,
        tried: Vec<TicketPrice>,
        inserted: &[SeatLabel],
    ) -> Option<Result<Vec<TicketPrice>, Refusal>> {
        let (won, lost): (Vec<TicketPrice>, Vec<TicketPrice>) =
            tried.into_iter().partition(|p| inserted.contains(&p.seat));
        self.mine.extend(won);
        match self.request {
            SeatRequest::Seats(_) if lost.is_empty() => Some(Ok(std::mem::take(&mut self.mine))),
            SeatRequest::Seats(_) => Some(Err(Refusal::Taken(
                lost.iter().map(|p| p.seat.to_string()).collect(),
            ))),
            SeatRequest::Quantity(wanted) if self.mine.len() == *wanted => {
                let mut mine = std::mem::take(&mut self.mine);
                mine.sort_by_key(|p| p.seat);
                Some(Ok(mine))
            }
            SeatRequest::Quantity(_) => None,
        }
    }
}

/// Seat labels in seat order (`A2` before `A10`).
pub(crate) fn in_seat_order(mut seats: Vec<String>) -> Vec<String> {
    seats.sort_by_key(|s| SeatLabel::parse(s));
    seats
}

pub(crate) fn from_doc<T: serde::de::DeserializeOwned>(doc: Value) -> Result<T, StoreError> {
    serde_json::from_value(doc).map_err(|e| StoreError::Other(format!("unreadable document: {e}")))
}

pub(crate) fn total(priced: &[TicketPrice]) -> i64 {
    priced.iter().map(|p| p.price_cents).sum()
}

/// Builds the event of a purchase that changed its showtime's seat map.
pub(crate) type SeatMapEvent = fn(&Purchase, SeatMapState, DateTime<Utc>) -> Event;

/// `purchase.completed`, with the seat map after it.
pub(crate) fn completed_event(
    purchase: &Purchase,
    seat_map: SeatMapState,
    at: DateTime<Utc>,
) -> Event {
    let payload = PurchaseCompleted {
        purchase_id: purchase.purchase_id,
        showtime_id: purchase.showtime_id,
        customer_id: purchase.customer_id,
        tickets: purchase.tickets.clone(),
        total_cents: purchase.total_cents,
        currency: purchase.currency.clone(),
        at,
        seat_map,
    };
    Event::new(
        contract::TOPIC,
        contract::PURCHASE_COMPLETED,
        serde_json::to_value(payload).unwrap_or_default(),
    )
}

/// `purchase.refunded`, with the seat map after it.
pub(crate) fn refunded_event(
    purchase: &Purchase,
    seat_map: SeatMapState,
    at: DateTime<Utc>,
) -> Event {
    let payload = PurchaseRefunded {
        purchase_id: purchase.purchase_id,
        showtime_id: purchase.showtime_id,
        customer_id: purchase.customer_id,
        at,
        seat_map,
    };
    Event::new(
        contract::TOPIC,
        contract::PURCHASE_REFUNDED,
        serde_json::to_value(payload).unwrap_or_default(),
    )
}
