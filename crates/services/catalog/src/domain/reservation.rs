//! Reservations: the only way stock changes after a listing is created.
//!
//! An order reserves copies (`held`, with an expiry), then either commits
//! them (sold) or releases them (stock returns). A hold nobody settles
//! expires and its stock returns. A committed sale that is cancelled
//! afterwards is returned (`committed → returned`, stock returns). Each
//! transition happens at most once (a conditional update of the status),
//! which is what makes returned stock exact.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use zocalo_http::Problem;

use super::money::{Money, Price};
use super::{Checks, now};

/// At most this many distinct lines in one reservation.
pub const MAX_ITEMS: usize = 100;
/// At most this many copies of one book per line.
pub const MAX_QUANTITY: i64 = 10_000;
/// A hold lasts at most a day.
pub const MAX_TTL_SECS: i64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    Held,
    Committed,
    Released,
    Expired,
    /// Was committed; the sale was undone and its copies are back in stock.
    Returned,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Held => "held",
            ReservationStatus::Committed => "committed",
            ReservationStatus::Released => "released",
            ReservationStatus::Expired => "expired",
            ReservationStatus::Returned => "returned",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "held" => Some(Self::Held),
            "committed" => Some(Self::Committed),
            "released" => Some(Self::Released),
            "expired" => Some(Self::Expired),
            "returned" => Some(Self::Returned),
            _ => None,
        }
    }

    /// A hold whose stock went back to the listings (released by request
    /// or expired).
    pub fn returned_stock(self) -> bool {
        matches!(self, Self::Released | Self::Expired)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReservedItem {
    pub book_id: Uuid,
    pub quantity: i32,
    /// The listing's price when reserved; later price edits do not change it.
    #[schema(value_type = Money)]
    pub unit_price: Price,
    pub title: String,
    pub seller_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Reservation {
    pub reservation_id: Uuid,
    pub status: ReservationStatus,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// In the order first asked.
    pub items: Vec<ReservedItem>,
}

impl Reservation {
    /// Does this reservation hold exactly these lines (same books, same
    /// quantities)? A repeated request must ask for the same thing.
    pub fn matches(&self, lines: &[ReservationLine]) -> bool {
        let held: HashMap<Uuid, i32> = self.items.iter().map(|i| (i.book_id, i.quantity)).collect();
        held.len() == lines.len()
            && lines
                .iter()
                .all(|l| held.get(&l.book_id) == Some(&l.quantity))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ItemInput {
    pub book_id: Uuid,
    /// 1 to 10000.
    pub quantity: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ReservationInput {
    /// Chosen by the caller (the order id); repeating it is idempotent.
    pub reservation_id: Uuid,
    pub items: Vec<ItemInput>,
    /// Seconds until an unsettled hold expires, 1 to 86400; the service
    /// default when absent.
    pub ttl_secs: Option<i64>,
}

/// One book's line of a reservation; repeated book ids are merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationLine {
    pub book_id: Uuid,
    pub quantity: i32,
    /// Index in the request's `items` where this book first appeared, for
    /// naming it in errors and keeping the response in request order.
    pub index: usize,
}

#[derive(Debug, Clone)]
pub struct NewReservation {
    pub id: Uuid,
    /// In request order, one per book.
    pub lines: Vec<ReservationLine>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl NewReservation {
    /// The lines sorted by book id. Every transaction that touches several
    /// listings locks them in this order, so two of them never wait on each
    /// other in a cycle (no deadlocks on PostgreSQL).
    pub fn lines_by_book(&self) -> Vec<ReservationLine> {
        let mut lines = self.lines.clone();
        lines.sort_by_key(|l| l.book_id);
        lines
    }
}

impl NewReservation {
    /// The reservation as stored once every line is held: the adapters
    /// build it from what their conditional updates returned instead of
    /// reading it back while the listings are still locked.
    pub fn held(&self, mut items: Vec<(usize, ReservedItem)>) -> Reservation {
        items.sort_by_key(|(index, _)| *index);
        Reservation {
            reservation_id: self.id,
            status: ReservationStatus::Held,
            expires_at: self.expires_at,
            created_at: self.created_at,
            updated_at: self.created_at,
            items: items.into_iter().map(|(_, item)| item).collect(),
        }
    }
}

impl ReservationInput {
    pub fn validate(self, default_ttl_secs: u32) -> Result<NewReservation, Problem> {
        let mut checks = Checks::default();
        if self.items.is_empty() || self.items.len() > MAX_ITEMS {
            checks.fail("items", format!("must list 1 to {MAX_ITEMS} items"));
        }
        let mut lines: Vec<ReservationLine> = Vec::new();
        for (index, item) in self.items.iter().enumerate() {
            if !(1..=MAX_QUANTITY).contains(&item.quantity) {
                checks.fail(
                    &format!("items[{index}].quantity"),
                    format!("must be a whole number from 1 to {MAX_QUANTITY}"),
                );
                continue;
            }
            // Bounded: at most MAX_ITEMS lines of at most MAX_QUANTITY each.
            let quantity = item.quantity as i32;
            match lines.iter_mut().find(|l| l.book_id == item.book_id) {
                Some(line) => line.quantity += quantity,
                None => lines.push(ReservationLine {
                    book_id: item.book_id,
                    quantity,
                    index,
                }),
            }
        }
        let ttl = self.ttl_secs.unwrap_or(i64::from(default_ttl_secs));
        if !(1..=MAX_TTL_SECS).contains(&ttl) {
            checks.fail("ttl_secs", format!("must be from 1 to {MAX_TTL_SECS}"));
        }
        if !checks.is_ok() {
            return Err(checks.into_problem());
        }
        let created_at = now();
        Ok(NewReservation {
            id: self.reservation_id,
            lines,
            expires_at: created_at + Duration::seconds(ttl),
            created_at,
        })
    }
}

/// Why one line could not be held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShortfallKind {
    /// No such listing, or it was withdrawn.
    Unavailable,
    /// Fewer copies than asked; `available` as seen just after the refusal.
    Insufficient { available: i32, requested: i32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    pub index: usize,
    pub book_id: Uuid,
    pub kind: ShortfallKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReserveOutcome {
    /// Every line held, in one transaction.
    Created(Reservation),
    /// This reservation id exists already; nothing was touched.
    Existing(Reservation),
    /// Some lines could not be held; nothing was held, every failing line
    /// is listed in request order.
    Rejected(Vec<Shortfall>),
}

/// A reservation after a commit, release or return attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Transitioned {
    pub reservation: Reservation,
    /// Did this call change it (as opposed to finding it settled already)?
    pub changed: bool,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn repeated_books_are_merged_and_bad_lines_named() {
        let book = Uuid::now_v7();
        let other = Uuid::now_v7();
        let input: ReservationInput = serde_json::from_value(json!({
            "reservation_id": Uuid::now_v7(),
            "items": [{"book_id": book, "quantity": 1}, {"book_id": other, "quantity": 2},
                      {"book_id": book, "quantity": 3}]
        }))
        .unwrap();
        let new = input.validate(900).unwrap();
        assert_eq!(new.lines.len(), 2);
        assert_eq!((new.lines[0].book_id, new.lines[0].quantity), (book, 4));
        assert_eq!(new.lines[1].index, 1);
        assert_eq!((new.expires_at - new.created_at).num_seconds(), 900);

        let bad: ReservationInput = serde_json::from_value(json!({
            "reservation_id": Uuid::now_v7(), "ttl_secs": 0,
            "items": [{"book_id": book, "quantity": 0}, {"book_id": other, "quantity": 1}]
        }))
        .unwrap();
        let fields: Vec<String> = bad
            .validate(900)
            .unwrap_err()
            .errors
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["items[0].quantity", "ttl_secs"]);
    }

    #[test]
    fn empty_reservations_are_refused() {
        let empty: ReservationInput =
            serde_json::from_value(json!({"reservation_id": Uuid::now_v7(), "items": []})).unwrap();
        assert_eq!(empty.validate(900).unwrap_err().errors[0].field, "items");
    }
}
