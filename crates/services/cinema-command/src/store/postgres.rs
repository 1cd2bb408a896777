use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::{GenericClient, Row, Transaction};
use uuid::Uuid;
use zocalo_bus::Event;
use zocalo_bus::outbox::{self, Message, Source};
use zocalo_contracts::cinema::{LoggedEvent, SeatMapState, Ticket};
use zocalo_payments::ChargeLedger;
use zocalo_store::{DatabaseSettings, PgPools, StoreError};

use super::{
    CinemaStore, Held, Kind, Record, Refusal, Saved, SeatMapEvent, SeatPlanner, Venue,
    completed_event, in_seat_order, refunded_event, total,
};
use crate::domain::{
    NewPurchase, Purchase, PurchaseStatus, SeatLabel, TicketPrice, verification_code,
};

mod migrations {
    refinery::embed_migrations!("migrations/postgres");
}

pub struct PostgresStore {
    pools: PgPools,
}

impl PostgresStore {
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, StoreError> {
        Ok(Self {
            pools: PgPools::connect(settings, migrations::migrations::runner()).await?,
        })
    }
}

/// Append events to the log and the outbox, in the caller's transaction.
/// The sequence number comes from the one-row counter, whose row lock this
/// transaction then holds until it commits: appends are serialised, so
/// numbers commit in order (callers append last, to hold it briefly).
async fn append(tx: &Transaction<'_>, events: Vec<Event>) -> Result<(), StoreError> {
    for event in events {
        let seq: i64 = tx
            .query_one(
                "UPDATE event_counter SET last = last + 1 WHERE id = 1 RETURNING last",
                &[],
            )
            .await?
            .get(0);
        tx.execute(
            "INSERT INTO event_log (seq, id, kind, payload, occurred_at) VALUES ($1, $2, $3, $4, $5)",
            &[&seq, &event.id, &event.kind, &event.payload, &event.occurred_at],
        )
        .await?;
        outbox::insert_postgres(tx, &Message::Event(event)).await?;
    }
    Ok(())
}

/// A scheduled showtime of the same room overlapping `record`'s slot.
async fn overlap<C: GenericClient>(
    client: &C,
    record: &Record,
) -> Result<Option<Uuid>, StoreError> {
    let Some(slot) = record.slot.filter(|s| s.scheduled) else {
        return Ok(None);
    };
    let row = client
        .query_opt(
            "SELECT id FROM showtimes WHERE room_id = $1 AND status = 'scheduled' AND id <> $2 \
             AND tstzrange(starts_at, ends_at) && tstzrange($3, $4) ORDER BY starts_at LIMIT 1",
            &[&slot.room_id, &record.id, &slot.starts_at, &slot.ends_at],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

fn status(scheduled: bool) -> &'static str {
    if scheduled { "scheduled" } else { "cancelled" }
}

async fn write_record(tx: &Transaction<'_>, record: &Record) -> Result<u64, StoreError> {
    let table = record.kind.table();
    let changed = match (record.slot, record.kind.parent_column(), record.version) {
        (Some(slot), _, 1) => {
            tx.execute(
                "INSERT INTO showtimes (id, room_id, movie_id, version, starts_at, ends_at, status, doc) \
                 VALUES ($1, $2, $3, 1, $4, $5, $6, $7)",
                &[&record.id, &slot.room_id, &slot.movie_id, &slot.starts_at, &slot.ends_at, &status(slot.scheduled), &record.doc],
            )
            .await?
        }
        (Some(slot), _, version) => {
            tx.execute(
                "UPDATE showtimes SET version = $2, starts_at = $3, ends_at = $4, status = $5, doc = $6 \
                 WHERE id = $1 AND version = $2::bigint - 1",
                &[&record.id, &version, &slot.starts_at, &slot.ends_at, &status(slot.scheduled), &record.doc],
            )
            .await?
        }
        (None, Some(parent), 1) => {
            tx.execute(
                &format!("INSERT INTO {table} (id, {parent}, version, doc) VALUES ($1, $2, 1, $3)"),
                &[&record.id, &record.parent, &record.doc],
            )
            .await?
        }
        (None, None, 1) => {
            tx.execute(
                &format!("INSERT INTO {table} (id, version, doc) VALUES ($1, 1, $2)"),
                &[&record.id, &record.doc],
            )
            .await?
        }
        (None, _, version) => {
            tx.execute(
                &format!("UPDATE {table} SET version = $2, doc = $3 WHERE id = $1 AND version = $2::bigint - 1"),
                &[&record.id, &version, &record.doc],
            )
            .await?
        }
    };
    Ok(changed)
}

const PURCHASE_COLUMNS: &str = "id, showtime_id, customer_id, status, total_cents, currency, card_last4, \
     seat_map_version, held_until, created_at, updated_at, request_hash, card_token";

fn purchase_from_row(row: &Row) -> Purchase {
    let status: String = row.get(3);
    Purchase {
        purchase_id: row.get(0),
        showtime_id: row.get(1),
        customer_id: row.get(2),
        status: PurchaseStatus::parse(&status).unwrap_or(PurchaseStatus::Expired),
        seats: Vec::new(),
        tickets: Vec::new(),
        total_cents: row.get(4),
        currency: row.get(5),
        card_last4: row.get(6),
        seat_map_version: row.get(7),
        held_until: row.get(8),
        created_at: row.get(9),
        updated_at: row.get(10),
        request_hash: row.get(11),
        card_token: row.get(12),
    }
}

async fn load_purchase<C: GenericClient>(
    client: &C,
    id: Uuid,
) -> Result<Option<Purchase>, StoreError> {
    let sql = format!("SELECT {PURCHASE_COLUMNS} FROM purchases WHERE id = $1");
    let Some(row) = client.query_opt(&sql, &[&id]).await? else {
        return Ok(None);
    };
    let mut purchase = purchase_from_row(&row);
    let tickets = client
        .query(
            "SELECT id, seat, class, price_cents, code FROM tickets WHERE purchase_id = $1",
            &[&id],
        )
        .await?;
    purchase.tickets = tickets
        .iter()
        .map(|row| Ticket {
            ticket_id: row.get(0),
            seat: row.get(1),
            class: row.get(2),
            price_cents: row.get(3),
            code: row.get(4),
        })
        .collect();
    purchase.tickets.sort_by_key(|t| SeatLabel::parse(&t.seat));
    purchase.seats = if purchase.tickets.is_empty() {
        let rows = client
            .query("SELECT seat FROM seats WHERE purchase_id = $1", &[&id])
            .await?;
        in_seat_order(rows.iter().map(|r| r.get(0)).collect())
    } else {
        purchase.tickets.iter().map(|t| t.seat.clone()).collect()
    };
    Ok(Some(purchase))
}

async fn loaded<C: GenericClient>(client: &C, id: Uuid) -> Result<Purchase, StoreError> {
    load_purchase(client, id).await?.ok_or(StoreError::NotFound)
}

async fn taken<C: GenericClient>(
    client: &C,
    showtime: Uuid,
) -> Result<HashSet<SeatLabel>, StoreError> {
    let rows = client
        .query(
            "SELECT seat FROM seats WHERE showtime_id = $1",
            &[&showtime],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| SeatLabel::parse(r.get::<_, &str>(0)))
        .collect())
}

/// Insert holds in seat order: concurrent purchases then wait for each
/// other's seats in one global order and never deadlock.
async fn insert_seats(
    tx: &Transaction<'_>,
    purchase: &NewPurchase,
    seats: &[TicketPrice],
) -> Result<Vec<SeatLabel>, StoreError> {
    let mut ordered: Vec<&TicketPrice> = seats.iter().collect();
    ordered.sort_by_key(|p| p.seat);
    let statement = tx
        .prepare(
            "INSERT INTO seats (showtime_id, seat, purchase_id, state, class, price_cents) \
             VALUES ($1, $2, $3, 'held', $4, $5) ON CONFLICT DO NOTHING",
        )
        .await?;
    let mut inserted = Vec::new();
    for seat in ordered {
        let label = seat.seat.to_string();
        let class = seat.class;
        if tx
            .execute(
                &statement,
                &[
                    &purchase.showtime_id,
                    &label,
                    &purchase.purchase_id,
                    &class,
                    &seat.price_cents,
                ],
            )
            .await?
            > 0
        {
            inserted.push(seat.seat);
        }
    }
    Ok(inserted)
}

async fn venue(tx: &Transaction<'_>, showtime: Uuid) -> Result<Option<Venue>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT s.doc, r.doc FROM showtimes s JOIN rooms r ON r.id = s.room_id WHERE s.id = $1",
            &[&showtime],
        )
        .await?;
    row.map(|row| Venue::parse(row.get::<_, Value>(0), row.get::<_, Value>(1)))
        .transpose()
}

async fn existing<C: GenericClient>(
    client: &C,
    purchase: &NewPurchase,
) -> Result<Option<Held>, StoreError> {
    let row = client
        .query_opt(
            "SELECT id FROM purchases WHERE customer_id = $1 AND idempotency_key = $2",
            &[&purchase.customer_id, &purchase.idempotency_key],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let found = loaded(client, row.get(0)).await?;
    Ok(Some(Held::Existing {
        same_request: found.request_hash == purchase.request_hash,
        purchase: found,
    }))
}

async fn hold_in(tx: &Transaction<'_>, purchase: &NewPurchase) -> Result<Held, StoreError> {
    if let Some(found) = existing(tx, purchase).await? {
        return Ok(found);
    }
    let Some(venue) = venue(tx, purchase.showtime_id).await? else {
        return Ok(Held::Refused(Refusal::NoShowtime));
    };
    if let Some(refusal) = venue.closed(purchase.created_at) {
        return Ok(Held::Refused(refusal));
    }
    // First, so that a concurrent request with the same key stops here on
    // the unique constraint before it holds any seat.
    tx.execute(
        &format!("INSERT INTO purchases ({PURCHASE_COLUMNS}, idempotency_key) VALUES ($1, $2, $3, 'held', 0, $4, $5, NULL, $6, $7, $7, $8, $9, $10)"),
        &[
            &purchase.purchase_id, &purchase.showtime_id, &purchase.customer_id, &venue.showtime.currency,
            &purchase.card_last4, &purchase.held_until, &purchase.created_at, &purchase.request_hash,
            &purchase.card_token, &purchase.idempotency_key,
        ],
    )
    .await?;
    let mut planner = SeatPlanner::new(&venue, &purchase.seats);
    let held = loop {
        let taken = if planner.needs_taken() {
            taken(tx, purchase.showtime_id).await?
        } else {
            HashSet::new()
        };
        let tried = match planner.next(&taken) {
            Ok(tried) => tried,
            Err(refusal) => return Ok(Held::Refused(refusal)),
        };
        let inserted = insert_seats(tx, purchase, &tried).await?;
        if let Some(outcome) = planner.inserted(tried, &inserted) {
            break outcome;
        }
    };
    match held {
        Ok(seats) => {
            tx.execute(
                "UPDATE purchases SET total_cents = $2 WHERE id = $1",
                &[&purchase.purchase_id, &total(&seats)],
            )
            .await?;
            Ok(Held::New(loaded(tx, purchase.purchase_id).await?))
        }
        Err(refusal) => Ok(Held::Refused(refusal)),
    }
}

/// Bump the showtime's seat map version and read its sold seats. The
/// update takes the showtime's row lock first, so the read that follows
/// sees every purchase committed with a lower version.
async fn next_seat_map(tx: &Transaction<'_>, showtime: Uuid) -> Result<SeatMapState, StoreError> {
    let version: i64 = tx
        .query_one(
            "UPDATE showtimes SET seat_map_version = seat_map_version + 1 WHERE id = $1 RETURNING seat_map_version",
            &[&showtime],
        )
        .await?
        .get(0);
    Ok(SeatMapState {
        version,
        sold: sold(tx, showtime).await?,
    })
}

async fn sold<C: GenericClient>(client: &C, showtime: Uuid) -> Result<Vec<String>, StoreError> {
    let rows = client
        .query(
            "SELECT seat FROM seats WHERE showtime_id = $1 AND state = 'sold'",
            &[&showtime],
        )
        .await?;
    Ok(in_seat_order(rows.iter().map(|r| r.get(0)).collect()))
}

async fn issue_tickets(tx: &Transaction<'_>, id: Uuid) -> Result<(), StoreError> {
    let seats = tx
        .query(
            "SELECT seat, class, price_cents FROM seats WHERE purchase_id = $1",
            &[&id],
        )
        .await?;
    for seat in seats {
        let (label, class, price): (String, String, i64) = (seat.get(0), seat.get(1), seat.get(2));
        tx.execute(
            "INSERT INTO tickets (id, purchase_id, seat, class, price_cents, code) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&Uuid::now_v7(), &id, &label, &class, &price, &verification_code()],
        )
        .await?;
    }
    Ok(())
}

/// `from → to`; `Some(showtime)` when this call moved it.
async fn transition(
    tx: &Transaction<'_>,
    id: Uuid,
    from: &str,
    to: &str,
    now: DateTime<Utc>,
) -> Result<Option<Uuid>, StoreError> {
    let row = tx
        .query_opt(
            "UPDATE purchases SET status = $3, updated_at = $4 WHERE id = $1 AND status = $2 RETURNING showtime_id",
            &[&id, &from, &to, &now],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// After a purchase changed its seats: the showtime's next seat map version
/// on the purchase, and its event in the log (appended last, see
/// [`append`]).
async fn publish_seat_map(
    tx: &Transaction<'_>,
    id: Uuid,
    showtime: Uuid,
    event: SeatMapEvent,
    now: DateTime<Utc>,
) -> Result<Purchase, StoreError> {
    let seat_map = next_seat_map(tx, showtime).await?;
    tx.execute(
        "UPDATE purchases SET seat_map_version = $2 WHERE id = $1",
        &[&id, &seat_map.version],
    )
    .await?;
    let purchase = loaded(tx, id).await?;
    append(tx, vec![event(&purchase, seat_map, now)]).await?;
    Ok(purchase)
}

impl PostgresStore {
    async fn save_in(&self, record: &Record, events: Vec<Event>) -> Result<Saved, StoreError> {
        let mut client = self.pools.writer().await?;
        let tx = client.transaction().await?;
        if let Some(clash) = overlap(&*tx, record).await? {
            return Ok(Saved::Overlaps(clash));
        }
        if write_record(&tx, record).await? == 0 {
            return Ok(Saved::Stale);
        }
        append(&tx, events).await?;
        tx.commit().await?;
        Ok(Saved::Saved)
    }

    async fn hold_once(&self, purchase: &NewPurchase) -> Result<Held, StoreError> {
        let mut client = self.pools.writer().await?;
        let tx = client.transaction().await?;
        let held = hold_in(&tx, purchase).await?;
        // A refusal rolls back: nothing of the purchase remains.
        if matches!(held, Held::New(_)) {
            tx.commit().await?;
        }
        Ok(held)
    }
}

/// Map a refused reference (a missing parent, a child still there).
fn or_reference(result: Result<Saved, StoreError>) -> Result<Saved, StoreError> {
    match result {
        Err(error) if error.is_constraint("fkey") => Ok(Saved::Reference),
        other => other,
    }
}

#[async_trait]
impl CinemaStore for PostgresStore {
    async fn load(&self, kind: Kind, id: Uuid) -> Result<Option<Value>, StoreError> {
        // From the primary: a command reads what it is about to change.
        let client = self.pools.writer().await?;
        let sql = format!("SELECT doc FROM {} WHERE id = $1", kind.table());
        Ok(client.query_opt(&sql, &[&id]).await?.map(|r| r.get(0)))
    }

    async fn save(&self, record: Record, events: Vec<Event>) -> Result<Saved, StoreError> {
        match or_reference(self.save_in(&record, events).await) {
            // A concurrent insert won the exclusion constraint: name it.
            Err(error) if error.is_constraint("showtimes_no_overlap") => {
                let client = self.pools.writer().await?;
                match overlap(&**client, &record).await? {
                    Some(clash) => Ok(Saved::Overlaps(clash)),
                    None => Err(error),
                }
            }
            other => other,
        }
    }

    async fn delete(
        &self,
        kind: Kind,
        id: Uuid,
        version: i64,
        events: Vec<Event>,
    ) -> Result<Saved, StoreError> {
        let deleted = async {
            let mut client = self.pools.writer().await?;
            let tx = client.transaction().await?;
            let sql = format!(
                "DELETE FROM {} WHERE id = $1 AND version = $2",
                kind.table()
            );
            if tx.execute(&sql, &[&id, &version]).await? == 0 {
                return Ok(Saved::Stale);
            }
            append(&tx, events).await?;
            tx.commit().await?;
            Ok(Saved::Saved)
        }
        .await;
        or_reference(deleted)
    }

    async fn hold(&self, purchase: NewPurchase) -> Result<Held, StoreError> {
        match self.hold_once(&purchase).await {
            // The same key in a concurrent request: that one inserted first.
            Err(error) if error.is_constraint("purchases_idempotency") => {
                let client = self.pools.writer().await?;
                existing(&**client, &purchase).await?.ok_or(error)
            }
            other => other,
        }
    }

    async fn complete(&self, id: Uuid, now: DateTime<Utc>) -> Result<(bool, Purchase), StoreError> {
        let mut client = self.pools.writer().await?;
        let tx = client.transaction().await?;
        let Some(showtime) = transition(&tx, id, "held", "completed", now).await? else {
            return Ok((false, loaded(&*tx, id).await?));
        };
        tx.execute(
            "UPDATE seats SET state = 'sold' WHERE purchase_id = $1",
            &[&id],
        )
        .await?;
        issue_tickets(&tx, id).await?;
        let purchase = publish_seat_map(&tx, id, showtime, completed_event, now).await?;
        tx.commit().await?;
        Ok((true, purchase))
    }

    async fn release(&self, id: Uuid, to: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut client = self.pools.writer().await?;
        let tx = client.transaction().await?;
        if transition(&tx, id, "held", to, now).await?.is_none() {
            return Ok(false);
        }
        tx.execute("DELETE FROM seats WHERE purchase_id = $1", &[&id])
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn refund(&self, id: Uuid, now: DateTime<Utc>) -> Result<(bool, Purchase), StoreError> {
        let mut client = self.pools.writer().await?;
        let tx = client.transaction().await?;
        let Some(showtime) = transition(&tx, id, "completed", "refunded", now).await? else {
            return Ok((false, loaded(&*tx, id).await?));
        };
        tx.execute("DELETE FROM seats WHERE purchase_id = $1", &[&id])
            .await?;
        let purchase = publish_seat_map(&tx, id, showtime, refunded_event, now).await?;
        tx.commit().await?;
        Ok((true, purchase))
    }

    async fn purchase(&self, id: Uuid) -> Result<Option<Purchase>, StoreError> {
        let client = self.pools.writer().await?;
        load_purchase(&**client, id).await
    }

    async fn expired_holds(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Uuid>, StoreError> {
        let client = self.pools.writer().await?;
        let rows = client
            .query(
                "SELECT id FROM purchases WHERE status = 'held' AND held_until < $1 ORDER BY held_until LIMIT $2",
                &[&now, &i64::from(limit)],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn seat_map(&self, showtime: Uuid) -> Result<SeatMapState, StoreError> {
        let client = self.pools.writer().await?;
        let version: i64 = client
            .query_opt(
                "SELECT seat_map_version FROM showtimes WHERE id = $1",
                &[&showtime],
            )
            .await?
            .ok_or(StoreError::NotFound)?
            .get(0);
        Ok(SeatMapState {
            version,
            sold: sold(&**client, showtime).await?,
        })
    }

    async fn taken_seats(&self, showtime: Uuid) -> Result<Vec<String>, StoreError> {
        let client = self.pools.writer().await?;
        let rows = client
            .query(
                "SELECT seat FROM seats WHERE showtime_id = $1",
                &[&showtime],
            )
            .await?;
        Ok(in_seat_order(rows.iter().map(|r| r.get(0)).collect()))
    }

    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<LoggedEvent>, StoreError> {
        // Replays read the primary: a replica's log may end earlier, which
        // is harmless, but the primary is what the counter serialises.
        let client = self.pools.writer().await?;
        let rows = client
            .query(
                "SELECT seq, id, kind, payload, occurred_at FROM event_log WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &i64::from(limit)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| LoggedEvent {
                seq: row.get(0),
                id: row.get(1),
                kind: row.get(2),
                payload: row.get(3),
                occurred_at: row.get(4),
            })
            .collect())
    }

    fn ledger(&self) -> Arc<dyn ChargeLedger> {
        Arc::new(self.pools.clone())
    }

    fn outbox(&self) -> Source {
        Source::Postgres(self.pools.clone())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.pools.ping().await
    }
}
