use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use serde_json::Value;
use uuid::Uuid;
use zocalo_bus::Event;
use zocalo_bus::outbox::{self, Message, Source};
use zocalo_contracts::cinema::{LoggedEvent, SeatMapState, Ticket};
use zocalo_payments::ChargeLedger;
use zocalo_store::{SqlitePool, StoreError};

use super::{
    CinemaStore, Held, Kind, Record, Refusal, Saved, SeatMapEvent, SeatPlanner, Venue,
    completed_event, in_seat_order, refunded_event, total,
};
use crate::domain::{
    NewPurchase, Purchase, PurchaseStatus, SeatLabel, TicketPrice, verification_code,
};

mod migrations {
    refinery::embed_migrations!("migrations/sqlite");
}

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub fn open(path: &Path, readers: usize) -> Result<Self, StoreError> {
        Ok(Self {
            pool: SqlitePool::open(path, readers.min(8), migrations::migrations::runner())?,
        })
    }
}

fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// Append events to the log and the outbox, in the caller's transaction.
/// SQLite has one writer, so `seq` (AUTOINCREMENT) is in commit order.
fn append(tx: &Transaction<'_>, events: Vec<Event>) -> Result<(), StoreError> {
    for event in events {
        tx.execute(
            "INSERT INTO event_log (id, kind, payload, occurred_at) VALUES (?1, ?2, ?3, ?4)",
            params![event.id, event.kind, event.payload, event.occurred_at],
        )?;
        outbox::insert_sqlite(tx, &Message::Event(event))?;
    }
    Ok(())
}

/// A scheduled showtime of the same room overlapping `record`'s slot.
fn overlap(tx: &Transaction<'_>, record: &Record) -> Result<Option<Uuid>, StoreError> {
    let Some(slot) = record.slot.filter(|s| s.scheduled) else {
        return Ok(None);
    };
    Ok(tx
        .query_row(
            "SELECT id FROM showtimes WHERE room_id = ?1 AND status = 'scheduled' AND id <> ?2 \
             AND starts_ms < ?4 AND ends_ms > ?3 ORDER BY starts_ms LIMIT 1",
            params![
                slot.room_id,
                record.id,
                ms(slot.starts_at),
                ms(slot.ends_at)
            ],
            |row| row.get(0),
        )
        .optional()?)
}

fn write_record(tx: &Transaction<'_>, record: &Record) -> Result<usize, StoreError> {
    let table = record.kind.table();
    let changed = match (record.slot, record.kind.parent_column(), record.version) {
        (Some(slot), _, 1) => tx.execute(
            "INSERT INTO showtimes (id, room_id, movie_id, version, starts_ms, ends_ms, status, doc) \
             VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7)",
            params![record.id, slot.room_id, slot.movie_id, ms(slot.starts_at), ms(slot.ends_at), status(slot.scheduled), record.doc],
        )?,
        (Some(slot), _, version) => tx.execute(
            "UPDATE showtimes SET version = ?2, starts_ms = ?3, ends_ms = ?4, status = ?5, doc = ?6 \
             WHERE id = ?1 AND version = ?2 - 1",
            params![record.id, version, ms(slot.starts_at), ms(slot.ends_at), status(slot.scheduled), record.doc],
        )?,
        (None, Some(parent), 1) => tx.execute(
            &format!("INSERT INTO {table} (id, {parent}, version, doc) VALUES (?1, ?2, 1, ?3)"),
            params![record.id, record.parent, record.doc],
        )?,
        (None, None, 1) => tx.execute(
            &format!("INSERT INTO {table} (id, version, doc) VALUES (?1, 1, ?2)"),
            params![record.id, record.doc],
        )?,
        (None, _, version) => tx.execute(
            &format!("UPDATE {table} SET version = ?2, doc = ?3 WHERE id = ?1 AND version = ?2 - 1"),
            params![record.id, version, record.doc],
        )?,
    };
    Ok(changed)
}

fn status(scheduled: bool) -> &'static str {
    if scheduled { "scheduled" } else { "cancelled" }
}

/// Map a refused reference (a missing parent, a child still there).
fn or_reference(result: Result<Saved, StoreError>) -> Result<Saved, StoreError> {
    match result {
        Err(error) if error.is_constraint("FOREIGN KEY") => Ok(Saved::Reference),
        other => other,
    }
}

const PURCHASE_COLUMNS: &str = "id, showtime_id, customer_id, status, total_cents, currency, card_last4, \
     seat_map_version, held_until_ms, created_at, updated_at, request_hash, card_token";

fn purchase_from_row(row: &Row<'_>) -> rusqlite::Result<Purchase> {
    let status: String = row.get(3)?;
    let held_until: i64 = row.get(8)?;
    Ok(Purchase {
        purchase_id: row.get(0)?,
        showtime_id: row.get(1)?,
        customer_id: row.get(2)?,
        status: PurchaseStatus::parse(&status).unwrap_or(PurchaseStatus::Expired),
        seats: Vec::new(),
        tickets: Vec::new(),
        total_cents: row.get(4)?,
        currency: row.get(5)?,
        card_last4: row.get(6)?,
        seat_map_version: row.get(7)?,
        held_until: DateTime::from_timestamp_millis(held_until).unwrap_or_default(),
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
        request_hash: row.get(11)?,
        card_token: row.get(12)?,
    })
}

fn load_purchase(conn: &Connection, id: Uuid) -> Result<Option<Purchase>, StoreError> {
    let sql = format!("SELECT {PURCHASE_COLUMNS} FROM purchases WHERE id = ?1");
    let Some(mut purchase) = conn.query_row(&sql, [id], purchase_from_row).optional()? else {
        return Ok(None);
    };
    let mut tickets = conn.prepare_cached(
        "SELECT id, seat, class, price_cents, code FROM tickets WHERE purchase_id = ?1",
    )?;
    purchase.tickets = tickets
        .query_map([id], |row| {
            Ok(Ticket {
                ticket_id: row.get(0)?,
                seat: row.get(1)?,
                class: row.get(2)?,
                price_cents: row.get(3)?,
                code: row.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    purchase.tickets.sort_by_key(|t| SeatLabel::parse(&t.seat));
    purchase.seats = if purchase.tickets.is_empty() {
        let mut seats = conn.prepare_cached("SELECT seat FROM seats WHERE purchase_id = ?1")?;
        let rows = seats.query_map([id], |row| row.get(0))?;
        in_seat_order(rows.collect::<Result<_, _>>()?)
    } else {
        purchase.tickets.iter().map(|t| t.seat.clone()).collect()
    };
    Ok(Some(purchase))
}

fn loaded(conn: &Connection, id: Uuid) -> Result<Purchase, StoreError> {
    load_purchase(conn, id)?.ok_or(StoreError::NotFound)
}

fn taken(conn: &Connection, showtime: Uuid) -> Result<HashSet<SeatLabel>, StoreError> {
    let mut statement = conn.prepare_cached("SELECT seat FROM seats WHERE showtime_id = ?1")?;
    let rows = statement.query_map([showtime], |row| row.get::<_, String>(0))?;
    let mut taken = HashSet::new();
    for seat in rows {
        taken.extend(SeatLabel::parse(&seat?));
    }
    Ok(taken)
}

fn insert_seats(
    tx: &Transaction<'_>,
    purchase: &NewPurchase,
    seats: &[TicketPrice],
) -> Result<Vec<SeatLabel>, StoreError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO seats (showtime_id, seat, purchase_id, state, class, price_cents) \
         VALUES (?1, ?2, ?3, 'held', ?4, ?5) ON CONFLICT DO NOTHING",
    )?;
    let mut inserted = Vec::new();
    for seat in seats {
        let label = seat.seat.to_string();
        if insert.execute(params![
            purchase.showtime_id,
            label,
            purchase.purchase_id,
            seat.class,
            seat.price_cents
        ])? > 0
        {
            inserted.push(seat.seat);
        }
    }
    Ok(inserted)
}

fn venue(tx: &Transaction<'_>, showtime: Uuid) -> Result<Option<Venue>, StoreError> {
    let docs: Option<(Value, Value)> = tx
        .query_row(
            "SELECT s.doc, r.doc FROM showtimes s JOIN rooms r ON r.id = s.room_id WHERE s.id = ?1",
            [showtime],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    docs.map(|(showtime, room)| Venue::parse(showtime, room))
        .transpose()
}

fn existing(tx: &Transaction<'_>, purchase: &NewPurchase) -> Result<Option<Held>, StoreError> {
    let id: Option<Uuid> = tx
        .query_row(
            "SELECT id FROM purchases WHERE customer_id = ?1 AND idempotency_key = ?2",
            params![purchase.customer_id, purchase.idempotency_key],
            |row| row.get(0),
        )
        .optional()?;
    id.map(|id| {
        let found = loaded(tx, id)?;
        Ok(Held::Existing {
            same_request: found.request_hash == purchase.request_hash,
            purchase: found,
        })
    })
    .transpose()
}

fn hold_in(tx: &Transaction<'_>, purchase: &NewPurchase) -> Result<Held, StoreError> {
    if let Some(found) = existing(tx, purchase)? {
        return Ok(found);
    }
    let Some(venue) = venue(tx, purchase.showtime_id)? else {
        return Ok(Held::Refused(Refusal::NoShowtime));
    };
    if let Some(refusal) = venue.closed(purchase.created_at) {
        return Ok(Held::Refused(refusal));
    }
    tx.execute(
        &format!("INSERT INTO purchases ({PURCHASE_COLUMNS}, idempotency_key) VALUES (?1, ?2, ?3, 'held', 0, ?4, ?5, NULL, ?6, ?7, ?7, ?8, ?9, ?10)"),
        params![
            purchase.purchase_id, purchase.showtime_id, purchase.customer_id, venue.showtime.currency,
            purchase.card_last4, ms(purchase.held_until), purchase.created_at, purchase.request_hash,
            purchase.card_token, purchase.idempotency_key
        ],
    )?;
    let mut planner = SeatPlanner::new(&venue, &purchase.seats);
    let held = loop {
        let taken = if planner.needs_taken() {
            taken(tx, purchase.showtime_id)?
        } else {
            HashSet::new()
        };
        let tried = match planner.next(&taken) {
            Ok(tried) => tried,
            Err(refusal) => return Ok(Held::Refused(refusal)),
        };
        let inserted = insert_seats(tx, purchase, &tried)?;
        if let Some(outcome) = planner.inserted(tried, &inserted) {
            break outcome;
        }
    };
    match held {
        Ok(seats) => {
            tx.execute(
                "UPDATE purchases SET total_cents = ?2 WHERE id = ?1",
                params![purchase.purchase_id, total(&seats)],
            )?;
            Ok(Held::New(loaded(tx, purchase.purchase_id)?))
        }
        Err(refusal) => Ok(Held::Refused(refusal)),
    }
}

/// Bump the showtime's seat map version and read its sold seats. The
/// single writer makes the pair consistent.
fn next_seat_map(tx: &Transaction<'_>, showtime: Uuid) -> Result<SeatMapState, StoreError> {
    let version: i64 = tx.query_row(
        "UPDATE showtimes SET seat_map_version = seat_map_version + 1 WHERE id = ?1 RETURNING seat_map_version",
        [showtime],
        |row| row.get(0),
    )?;
    Ok(SeatMapState {
        version,
        sold: sold(tx, showtime)?,
    })
}

fn sold(conn: &Connection, showtime: Uuid) -> Result<Vec<String>, StoreError> {
    let mut statement =
        conn.prepare_cached("SELECT seat FROM seats WHERE showtime_id = ?1 AND state = 'sold'")?;
    let rows = statement.query_map([showtime], |row| row.get(0))?;
    Ok(in_seat_order(rows.collect::<Result<_, _>>()?))
}

/// Issue one ticket per held seat of the purchase, with fresh codes.
fn issue_tickets(tx: &Transaction<'_>, id: Uuid) -> Result<(), StoreError> {
    let seats: Vec<(String, String, i64)> = {
        let mut statement =
            tx.prepare_cached("SELECT seat, class, price_cents FROM seats WHERE purchase_id = ?1")?;
        let rows = statement.query_map([id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for (seat, class, price) in seats {
        tx.execute(
            "INSERT INTO tickets (id, purchase_id, seat, class, price_cents, code) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![Uuid::now_v7(), id, seat, class, price, verification_code()],
        )?;
    }
    Ok(())
}

fn transition(
    tx: &Transaction<'_>,
    id: Uuid,
    from: &str,
    to: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    Ok(tx.execute(
        "UPDATE purchases SET status = ?3, updated_at = ?4 WHERE id = ?1 AND status = ?2",
        params![id, from, to, now],
    )? > 0)
}

/// After a purchase changed its seats: the showtime's next seat map version
/// on the purchase, and its event in the log.
fn publish_seat_map(
    tx: &Transaction<'_>,
    id: Uuid,
    event: SeatMapEvent,
    now: DateTime<Utc>,
) -> Result<Purchase, StoreError> {
    let showtime: Uuid = tx.query_row(
        "SELECT showtime_id FROM purchases WHERE id = ?1",
        [id],
        |row| row.get(0),
    )?;
    let seat_map = next_seat_map(tx, showtime)?;
    tx.execute(
        "UPDATE purchases SET seat_map_version = ?2 WHERE id = ?1",
        params![id, seat_map.version],
    )?;
    let purchase = loaded(tx, id)?;
    append(tx, vec![event(&purchase, seat_map, now)])?;
    Ok(purchase)
}

#[async_trait]
impl CinemaStore for SqliteStore {
    async fn load(&self, kind: Kind, id: Uuid) -> Result<Option<Value>, StoreError> {
        self.pool
            .read(move |conn| {
                let sql = format!("SELECT doc FROM {} WHERE id = ?1", kind.table());
                Ok(conn.query_row(&sql, [id], |row| row.get(0)).optional()?)
            })
            .await
    }

    async fn save(&self, record: Record, events: Vec<Event>) -> Result<Saved, StoreError> {
        let saved = self
            .pool
            .write(move |conn| {
                let tx = conn.transaction()?;
                if let Some(clash) = overlap(&tx, &record)? {
                    return Ok(Saved::Overlaps(clash));
                }
                if write_record(&tx, &record)? == 0 {
                    return Ok(Saved::Stale);
                }
                append(&tx, events)?;
                tx.commit()?;
                Ok(Saved::Saved)
            })
            .await;
        or_reference(saved)
    }

    async fn delete(
        &self,
        kind: Kind,
        id: Uuid,
        version: i64,
        events: Vec<Event>,
    ) -> Result<Saved, StoreError> {
        let deleted = self
            .pool
            .write(move |conn| {
                let tx = conn.transaction()?;
                let sql = format!(
                    "DELETE FROM {} WHERE id = ?1 AND version = ?2",
                    kind.table()
                );
                if tx.execute(&sql, params![id, version])? == 0 {
                    return Ok(Saved::Stale);
                }
                append(&tx, events)?;
                tx.commit()?;
                Ok(Saved::Saved)
            })
            .await;
        or_reference(deleted)
    }

    async fn hold(&self, purchase: NewPurchase) -> Result<Held, StoreError> {
        self.pool
            .write(move |conn| {
                let tx = conn.transaction()?;
                let held = hold_in(&tx, &purchase)?;
                // A refusal rolls back: nothing of the purchase remains.
                if matches!(held, Held::New(_)) {
                    tx.commit()?;
                }
                Ok(held)
            })
            .await
    }

    async fn complete(&self, id: Uuid, now: DateTime<Utc>) -> Result<(bool, Purchase), StoreError> {
        self.pool
            .write(move |conn| {
                let tx = conn.transaction()?;
                if !transition(&tx, id, "held", "completed", now)? {
                    return Ok((false, loaded(&tx, id)?));
                }
                tx.execute(
                    "UPDATE seats SET state = 'sold' WHERE purchase_id = ?1",
                    [id],
                )?;
                issue_tickets(&tx, id)?;
                let purchase = publish_seat_map(&tx, id, completed_event, now)?;
                tx.commit()?;
                Ok((true, purchase))
            })
            .await
    }

    async fn release(&self, id: Uuid, to: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let to = to.to_owned();
        self.pool
            .write(move |conn| {
                let tx = conn.transaction()?;
                if !transition(&tx, id, "held", &to, now)? {
                    return Ok(false);
                }
                tx.execute("DELETE FROM seats WHERE purchase_id = ?1", [id])?;
                tx.commit()?;
                Ok(true)
            })
            .await
    }

    async fn refund(&self, id: Uuid, now: DateTime<Utc>) -> Result<(bool, Purchase), StoreError> {
        self.pool
            .write(move |conn| {
                let tx = conn.transaction()?;
                if !transition(&tx, id, "completed", "refunded", now)? {
                    return Ok((false, loaded(&tx, id)?));
                }
                tx.execute("DELETE FROM seats WHERE purchase_id = ?1", [id])?;
                let purchase = publish_seat_map(&tx, id, refunded_event, now)?;
                tx.commit()?;
                Ok((true, purchase))
            })
            .await
    }

    async fn purchase(&self, id: Uuid) -> Result<Option<Purchase>, StoreError> {
        self.pool.read(move |conn| load_purchase(conn, id)).await
    }

    async fn expired_holds(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Uuid>, StoreError> {
        self.pool
            .read(move |conn| {
                let mut statement = conn.prepare_cached(
                    "SELECT id FROM purchases WHERE status = 'held' AND held_until_ms < ?1 ORDER BY held_until_ms LIMIT ?2",
                )?;
                let rows = statement.query_map(params![ms(now), limit], |row| row.get(0))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn seat_map(&self, showtime: Uuid) -> Result<SeatMapState, StoreError> {
        self.pool
            .read(move |conn| {
                let version = conn.query_row(
                    "SELECT seat_map_version FROM showtimes WHERE id = ?1",
                    [showtime],
                    |row| row.get(0),
                )?;
                Ok(SeatMapState {
                    version,
                    sold: sold(conn, showtime)?,
                })
            })
            .await
    }

    async fn taken_seats(&self, showtime: Uuid) -> Result<Vec<String>, StoreError> {
        self.pool
            .read(move |conn| {
                let mut statement =
                    conn.prepare_cached("SELECT seat FROM seats WHERE showtime_id = ?1")?;
                let rows = statement.query_map([showtime], |row| row.get(0))?;
                Ok(in_seat_order(rows.collect::<Result<_, _>>()?))
            })
            .await
    }

    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<LoggedEvent>, StoreError> {
        self.pool
            .read(move |conn| {
                let mut statement = conn.prepare_cached(
                    "SELECT seq, id, kind, payload, occurred_at FROM event_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )?;
                let rows = statement.query_map(params![after, limit], |row| {
                    Ok(LoggedEvent {
                        seq: row.get(0)?,
                        id: row.get(1)?,
                        kind: row.get(2)?,
                        payload: row.get(3)?,
                        occurred_at: row.get(4)?,
                    })
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
    }

    fn ledger(&self) -> Arc<dyn ChargeLedger> {
        Arc::new(self.pool.clone())
    }

    fn outbox(&self) -> Source {
        Source::Sqlite(self.pool.clone())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.pool.ping().await
    }
}
