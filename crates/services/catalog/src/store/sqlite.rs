//! The embedded adapter. One writer connection serialises every write, so
//! a conditional update here never races another; transactions are
//! `IMMEDIATE` so that a second process sharing the file waits for the
//! write lock up front instead of failing half-way.

use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::{ToSqlOutput, Type};
use rusqlite::{Connection, OptionalExtension, Row, ToSql, TransactionBehavior, params};
use uuid::Uuid;
use zocalo_store::{SqlitePool, StoreError};

use super::{CatalogStore, Dialect, EXPIRY_BATCH, EXPIRY_BATCHES_PER_CALL, SqlValue, listing_sql};
use crate::domain::{
    Book, BookChanges, BookQuery, BookStatus, Condition, NewBook, NewReservation, Price,
    Reservation, ReservationLine, ReservationStatus, ReserveOutcome, ReservedItem, Shortfall,
    ShortfallKind, Transitioned,
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

impl ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        match self {
            SqlValue::Text(text) => text.to_sql(),
            SqlValue::Int(n) => n.to_sql(),
            SqlValue::Id(id) => id.to_sql(),
        }
    }
}

const BOOK_COLUMNS: &str = "b.id, b.seller_id, b.title, b.author, b.isbn, b.description, \
     b.condition, b.price_cents, b.currency, b.stock, b.status, b.created_at, b.updated_at";

/// A stored value that the schema should have made impossible.
fn corrupt(column: usize, message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, Type::Text, message.into())
}

fn price_at(row: &Row<'_>, cents: usize, currency: usize) -> rusqlite::Result<Price> {
    let currency_text: String = row.get(currency)?;
    Price::from_stored(row.get(cents)?, &currency_text).map_err(|e| corrupt(cents, e))
}

fn book_from_row(row: &Row<'_>) -> rusqlite::Result<Book> {
    let condition: String = row.get(6)?;
    let status: String = row.get(10)?;
    Ok(Book {
        id: row.get(0)?,
        seller_id: row.get(1)?,
        title: row.get(2)?,
        author: row.get(3)?,
        isbn: row.get(4)?,
        description: row.get(5)?,
        condition: Condition::parse(&condition)
            .ok_or_else(|| corrupt(6, format!("unknown condition {condition}")))?,
        price: price_at(row, 7, 8)?,
        stock: row.get(9)?,
        status: BookStatus::parse(&status)
            .ok_or_else(|| corrupt(10, format!("unknown status {status}")))?,
        created_at: row.get(11)?,
        updated_at: row.get(12)?,
    })
}

fn load_book(conn: &Connection, id: Uuid) -> Result<Option<Book>, StoreError> {
    let sql = format!("SELECT {BOOK_COLUMNS} FROM books b WHERE b.id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], book_from_row)
        .optional()?)
}

fn load_reservation(conn: &Connection, id: Uuid) -> Result<Option<Reservation>, StoreError> {
    let head = conn
        .prepare_cached(
            "SELECT status, expires_at, created_at, updated_at FROM reservations WHERE id = ?1",
        )?
        .query_row([id], |row| {
            let status: String = row.get(0)?;
            let status = ReservationStatus::parse(&status)
                .ok_or_else(|| corrupt(0, format!("unknown status {status}")))?;
            Ok((status, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .optional()?;
    let Some((status, expires_at, created_at, updated_at)) = head else {
        return Ok(None);
    };
    let mut statement = conn.prepare_cached(
        "SELECT book_id, quantity, unit_price_cents, currency, title, seller_id \
         FROM reservation_items WHERE reservation_id = ?1 ORDER BY position",
    )?;
    let items = statement
        .query_map([id], |row| {
            Ok(ReservedItem {
                book_id: row.get(0)?,
                quantity: row.get(1)?,
                unit_price: price_at(row, 2, 3)?,
                title: row.get(4)?,
                seller_id: row.get(5)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(Reservation {
        reservation_id: id,
        status,
        expires_at,
        created_at,
        updated_at,
        items,
    }))
}

/// Take `line.quantity` copies if the listing is active and has them; the
/// `WHERE` is the whole check, so nothing can slip in between a read and a
/// write. Records the reserved line and returns it (with its request index).
fn take_stock(
    conn: &Connection,
    reservation_id: Uuid,
    line: &ReservationLine,
) -> Result<Result<(usize, ReservedItem), Shortfall>, StoreError> {
    let taken = conn
        .prepare_cached(
            "UPDATE books SET stock = stock - ?2 \
             WHERE id = ?1 AND status = 'active' AND stock >= ?2 \
             RETURNING price_cents, currency, title, seller_id",
        )?
        .query_row(params![line.book_id, line.quantity], |row| {
            Ok(ReservedItem {
                book_id: line.book_id,
                quantity: line.quantity,
                unit_price: price_at(row, 0, 1)?,
                title: row.get(2)?,
                seller_id: row.get(3)?,
            })
        })
        .optional()?;
    let Some(item) = taken else {
        return shortfall(conn, line).map(Err);
    };
    conn.prepare_cached(
        "INSERT INTO reservation_items \
         (reservation_id, book_id, quantity, unit_price_cents, currency, title, seller_id, position) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        reservation_id,
        item.book_id,
        item.quantity,
        item.unit_price.cents(),
        item.unit_price.currency(),
        item.title,
        item.seller_id,
        line.index as i64
    ])?;
    Ok(Ok((line.index, item)))
}

/// Why `take_stock` refused a line.
fn shortfall(conn: &Connection, line: &ReservationLine) -> Result<Shortfall, StoreError> {
    let found: Option<(String, i32)> = conn
        .prepare_cached("SELECT status, stock FROM books WHERE id = ?1")?
        .query_row([line.book_id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let kind = match found {
        Some((status, available)) if status == BookStatus::Active.as_str() => {
            ShortfallKind::Insufficient {
                available,
                requested: line.quantity,
            }
        }
        _ => ShortfallKind::Unavailable,
    };
    Ok(Shortfall {
        index: line.index,
        book_id: line.book_id,
        kind,
    })
}

/// Move a held reservation to `to` and give its copies back, in the
/// caller's transaction. The status update is conditional on `held` (and,
/// for expiry, on being due), so of a release and an expiry racing for the
/// same reservation exactly one changes it and returns the stock.
fn settle_hold(
    conn: &Connection,
    id: Uuid,
    to: ReservationStatus,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let sql = if to == ReservationStatus::Expired {
        "UPDATE reservations SET status = ?2, updated_at = ?3 \
         WHERE id = ?1 AND status = 'held' AND expires_at <= ?3"
    } else {
        "UPDATE reservations SET status = ?2, updated_at = ?3 WHERE id = ?1 AND status = 'held'"
    };
    let changed = conn
        .prepare_cached(sql)?
        .execute(params![id, to.as_str(), now])?
        == 1;
    if changed {
        restock(conn, id)?;
    }
    Ok(changed)
}

/// Undo a committed sale: `committed → returned` and its copies back, in
/// the caller's transaction. The status update is conditional on
/// `committed`, so of two returns of the same reservation exactly one
/// changes it and returns the stock.
fn return_sale(conn: &Connection, id: Uuid, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached(
            "UPDATE reservations SET status = 'returned', updated_at = ?2 \
             WHERE id = ?1 AND status = 'committed'",
        )?
        .execute(params![id, now])?
        == 1;
    if changed {
        restock(conn, id)?;
    }
    Ok(changed)
}

/// Put every copy of reservation `id` back on its listing. Called only
/// right after the status update that allows it, in the same transaction.
fn restock(conn: &Connection, id: Uuid) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE books SET stock = stock + \
         (SELECT quantity FROM reservation_items WHERE reservation_id = ?1 AND book_id = books.id) \
         WHERE id IN (SELECT book_id FROM reservation_items WHERE reservation_id = ?1)",
    )?
    .execute([id])?;
    Ok(())
}

fn transitioned(
    conn: &Connection,
    id: Uuid,
    changed: bool,
) -> Result<Option<Transitioned>, StoreError> {
    Ok(load_reservation(conn, id)?.map(|reservation| Transitioned {
        reservation,
        changed,
    }))
}

#[async_trait]
impl CatalogStore for SqliteStore {
    async fn create_book(&self, book: NewBook) -> Result<Book, StoreError> {
        self.pool
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO books (id, seller_id, title, author, author_key, isbn, description, \
                     condition, price_cents, currency, stock, status, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'active', ?12, ?12)",
                )?
                .execute(params![
                    book.id,
                    book.seller_id,
                    book.title,
                    book.author,
                    book.author.to_lowercase(),
                    book.isbn.as_str(),
                    book.description,
                    book.condition.as_str(),
                    book.price.cents(),
                    book.price.currency(),
                    book.stock,
                    book.created_at
                ])?;
                load_book(conn, book.id)?.ok_or(StoreError::NotFound)
            })
            .await
    }

    async fn book(&self, id: Uuid) -> Result<Option<Book>, StoreError> {
        self.pool.read(move |conn| load_book(conn, id)).await
    }

    async fn update_book(
        &self,
        id: Uuid,
        seller_id: Uuid,
        changes: BookChanges,
    ) -> Result<Option<Book>, StoreError> {
        self.pool
            .write(move |conn| {
                let updated = conn
                    .prepare_cached(
                        "UPDATE books SET title = COALESCE(?3, title), author = COALESCE(?4, author), \
                         author_key = COALESCE(?5, author_key), description = COALESCE(?6, description), \
                         condition = COALESCE(?7, condition), price_cents = COALESCE(?8, price_cents), \
                         currency = COALESCE(?9, currency), stock = COALESCE(?10, stock), updated_at = ?11 \
                         WHERE id = ?1 AND seller_id = ?2 AND status = 'active'",
                    )?
                    .execute(params![
                        id,
                        seller_id,
                        changes.title,
                        changes.author,
                        changes.author.as_deref().map(str::to_lowercase),
                        changes.description,
                        changes.condition.map(Condition::as_str),
                        changes.price.as_ref().map(Price::cents),
                        changes.price.as_ref().map(Price::currency),
                        changes.stock,
                        changes.updated_at
                    ])?;
                if updated == 0 {
                    return Ok(None);
                }
                load_book(conn, id)
            })
            .await
    }

    async fn withdraw_book(
        &self,
        id: Uuid,
        seller_id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.pool
            .write(move |conn| {
                let matched = conn
                    .prepare_cached(
                        "UPDATE books SET status = 'withdrawn', \
                         updated_at = CASE WHEN status = 'active' THEN ?3 ELSE updated_at END \
                         WHERE id = ?1 AND seller_id = ?2",
                    )?
                    .execute(params![id, seller_id, at])?;
                Ok(matched > 0)
            })
            .await
    }

    async fn books(&self, query: BookQuery) -> Result<Vec<Book>, StoreError> {
        self.pool
            .read(move |conn| {
                let listing = listing_sql(&query, Dialect::Sqlite);
                let sql = format!("SELECT {BOOK_COLUMNS} FROM books b {}", listing.tail);
                let mut statement = conn.prepare_cached(&sql)?;
                let rows = statement.query_map(
                    rusqlite::params_from_iter(listing.values.iter()),
                    book_from_row,
                )?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn reserve(&self, new: NewReservation) -> Result<ReserveOutcome, StoreError> {
        self.pool
            .write(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let inserted = tx
                    .prepare_cached(
                        "INSERT INTO reservations (id, status, expires_at, created_at, updated_at) \
                         VALUES (?1, 'held', ?2, ?3, ?3) ON CONFLICT (id) DO NOTHING",
                    )?
                    .execute(params![new.id, new.expires_at, new.created_at])?;
                if inserted == 0 {
                    let existing = load_reservation(&tx, new.id)?.ok_or(StoreError::NotFound)?;
                    return Ok(ReserveOutcome::Existing(existing));
                }
                let (mut items, mut shortfalls) = (Vec::new(), Vec::new());
                for line in new.lines_by_book() {
                    match take_stock(&tx, new.id, &line)? {
                        Ok(item) => items.push(item),
                        Err(shortfall) => shortfalls.push(shortfall),
                    }
                }
                if !shortfalls.is_empty() {
                    // Dropping the transaction rolls back every line taken.
                    shortfalls.sort_by_key(|s| s.index);
                    return Ok(ReserveOutcome::Rejected(shortfalls));
                }
                tx.commit()?;
                Ok(ReserveOutcome::Created(new.held(items)))
            })
            .await
    }

    async fn reservation(&self, id: Uuid) -> Result<Option<Reservation>, StoreError> {
        self.pool.read(move |conn| load_reservation(conn, id)).await
    }

    async fn commit_reservation(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Transitioned>, StoreError> {
        self.pool
            .write(move |conn| {
                let changed = conn
                    .prepare_cached(
                        "UPDATE reservations SET status = 'committed', updated_at = ?2 \
                         WHERE id = ?1 AND status = 'held' AND expires_at > ?2",
                    )?
                    .execute(params![id, now])?
                    == 1;
                transitioned(conn, id, changed)
            })
            .await
    }

    async fn release_reservation(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Transitioned>, StoreError> {
        self.pool
            .write(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let changed = settle_hold(&tx, id, ReservationStatus::Released, now)?;
                tx.commit()?;
                transitioned(conn, id, changed)
            })
            .await
    }

    async fn return_reservation(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Transitioned>, StoreError> {
        self.pool
            .write(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let changed = return_sale(&tx, id, now)?;
                tx.commit()?;
                transitioned(conn, id, changed)
            })
            .await
    }

    async fn release_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut expired = 0;
        for _ in 0..EXPIRY_BATCHES_PER_CALL {
            // One batch per write: requests waiting for the writer get a
            // turn between batches.
            let (settled, found) = self
                .pool
                .write(move |conn| {
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    let due: Vec<Uuid> = tx
                        .prepare_cached(
                            "SELECT id FROM reservations WHERE status = 'held' AND expires_at <= ?1 \
                             ORDER BY expires_at LIMIT ?2",
                        )?
                        .query_map(params![now, EXPIRY_BATCH], |row| row.get(0))?
                        .collect::<Result<_, _>>()?;
                    let mut settled = 0u64;
                    for id in &due {
                        if settle_hold(&tx, *id, ReservationStatus::Expired, now)? {
                            settled += 1;
                        }
                    }
                    tx.commit()?;
                    Ok((settled, due.len()))
                })
                .await?;
            expired += settled;
            if (found as i64) < EXPIRY_BATCH {
                break;
            }
        }
        Ok(expired)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.pool.ping().await
    }
}
