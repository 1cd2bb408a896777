//! The PostgreSQL adapter. Under READ COMMITTED a conditional
//! `UPDATE … WHERE stock >= $q` that waits on another buyer's row lock
//! re-checks its condition against the committed row, so concurrent
//! reservations serialise on the row and never overdraw. Transactions that
//! touch several listings lock them in book-id order, so they cannot
//! deadlock one another.
//!
//! Every statement goes through the connection's prepared-statement cache:
//! a reservation is then one round trip per statement, which matters most
//! while a listing's row lock is held.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};
use uuid::Uuid;
use zocalo_store::{DatabaseSettings, PgPools, StoreError};

use super::{CatalogStore, Dialect, EXPIRY_BATCH, EXPIRY_BATCHES_PER_CALL, SqlValue, listing_sql};
use crate::domain::{
    Book, BookChanges, BookQuery, BookStatus, Condition, NewBook, NewReservation, Price,
    Reservation, ReservationLine, ReservationStatus, ReserveOutcome, ReservedItem, Shortfall,
    ShortfallKind, Transitioned,
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

    async fn expire_one(&self, id: Uuid, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut client = self.pools.writer().await?;
        let tx = client.transaction().await?;
        let changed = settle_hold(&tx, id, ReservationStatus::Expired, now).await?;
        tx.commit().await?;
        Ok(changed)
    }
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

async fn rows<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query(&statement, params).await?)
}

async fn row_opt<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&statement, params).await?)
}

async fn run<C: GenericClient>(c: &C, sql: &str, params: Params<'_>) -> Result<u64, StoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.execute(&statement, params).await?)
}

const BOOK_COLUMNS: &str = "b.id, b.seller_id, b.title, b.author, b.isbn, b.description, \
     b.condition, b.price_cents, b.currency, b.stock, b.status, b.created_at, b.updated_at";

/// `Row::get` panics on a type mismatch; a request must never panic, so
/// columns are read with `try_get` and a mismatch is a store error.
fn col<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, StoreError> {
    row.try_get(index)
        .map_err(|e| StoreError::Other(format!("column {index}: {e}")))
}

fn price_at(row: &Row, cents: usize, currency: usize) -> Result<Price, StoreError> {
    Price::from_stored(col(row, cents)?, col(row, currency)?).map_err(StoreError::Other)
}

fn book_from_row(row: &Row) -> Result<Book, StoreError> {
    let condition: &str = col(row, 6)?;
    let status: &str = col(row, 10)?;
    Ok(Book {
        id: col(row, 0)?,
        seller_id: col(row, 1)?,
        title: col(row, 2)?,
        author: col(row, 3)?,
        isbn: col(row, 4)?,
        description: col(row, 5)?,
        condition: Condition::parse(condition)
            .ok_or_else(|| StoreError::Other(format!("unknown condition {condition}")))?,
        price: price_at(row, 7, 8)?,
        stock: col(row, 9)?,
        status: BookStatus::parse(status)
            .ok_or_else(|| StoreError::Other(format!("unknown status {status}")))?,
        created_at: col(row, 11)?,
        updated_at: col(row, 12)?,
    })
}

async fn load_book<C: GenericClient>(c: &C, id: Uuid) -> Result<Option<Book>, StoreError> {
    let sql = format!("SELECT {BOOK_COLUMNS} FROM books b WHERE b.id = $1");
    row_opt(c, &sql, &[&id])
        .await?
        .as_ref()
        .map(book_from_row)
        .transpose()
}

/// The reservation as a transition left it, and whether this call made the
/// change.
async fn transitioned<C: GenericClient>(
    c: &C,
    id: Uuid,
    changed: bool,
) -> Result<Option<Transitioned>, StoreError> {
    Ok(load_reservation(c, id)
        .await?
        .map(|reservation| Transitioned {
            reservation,
            changed,
        }))
}

async fn load_reservation<C: GenericClient>(
    c: &C,
    id: Uuid,
) -> Result<Option<Reservation>, StoreError> {
    let Some(head) = row_opt(
        c,
        "SELECT status, expires_at, created_at, updated_at FROM reservations WHERE id = $1",
        &[&id],
    )
    .await?
    else {
        return Ok(None);
    };
    let status: &str = col(&head, 0)?;
    let status = ReservationStatus::parse(status)
        .ok_or_else(|| StoreError::Other(format!("unknown reservation status {status}")))?;
    let items = rows(
        c,
        "SELECT book_id, quantity, unit_price_cents, currency, title, seller_id \
         FROM reservation_items WHERE reservation_id = $1 ORDER BY position",
        &[&id],
    )
    .await?
    .iter()
    .map(|row| {
        Ok(ReservedItem {
            book_id: col(row, 0)?,
            quantity: col(row, 1)?,
            unit_price: price_at(row, 2, 3)?,
            title: col(row, 4)?,
            seller_id: col(row, 5)?,
        })
    })
    .collect::<Result<_, StoreError>>()?;
    Ok(Some(Reservation {
        reservation_id: id,
        status,
        expires_at: col(&head, 1)?,
        created_at: col(&head, 2)?,
        updated_at: col(&head, 3)?,
        items,
    }))
}

/// Take `line.quantity` copies if the listing is active and has them; the
/// `WHERE` is the whole check. Records the reserved line and returns it
/// (with its request index).
async fn take_stock<C: GenericClient>(
    tx: &C,
    reservation_id: Uuid,
    line: &ReservationLine,
) -> Result<Result<(usize, ReservedItem), Shortfall>, StoreError> {
    let taken = row_opt(
        tx,
        "UPDATE books SET stock = stock - $2 \
         WHERE id = $1 AND status = 'active' AND stock >= $2 \
         RETURNING price_cents, currency, title, seller_id",
        &[&line.book_id, &line.quantity],
    )
    .await?;
    let Some(row) = taken else {
        return shortfall(tx, line).await.map(Err);
    };
    let item = ReservedItem {
        book_id: line.book_id,
        quantity: line.quantity,
        unit_price: price_at(&row, 0, 1)?,
        title: col(&row, 2)?,
        seller_id: col(&row, 3)?,
    };
    let position = line.index as i32;
    run(
        tx,
        "INSERT INTO reservation_items \
         (reservation_id, book_id, quantity, unit_price_cents, currency, title, seller_id, position) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &reservation_id,
            &item.book_id,
            &item.quantity,
            &item.unit_price.cents(),
            &item.unit_price.currency(),
            &item.title,
            &item.seller_id,
            &position,
        ],
    )
    .await?;
    Ok(Ok((line.index, item)))
}

/// Why `take_stock` refused a line.
async fn shortfall<C: GenericClient>(
    tx: &C,
    line: &ReservationLine,
) -> Result<Shortfall, StoreError> {
    let found = row_opt(
        tx,
        "SELECT status, stock FROM books WHERE id = $1",
        &[&line.book_id],
    )
    .await?;
    let kind = match found {
        Some(row) if col::<&str>(&row, 0)? == BookStatus::Active.as_str() => {
            ShortfallKind::Insufficient {
                available: col(&row, 1)?,
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
/// for expiry, on being due): of a release and an expiry racing for the
/// same reservation, the second waits on the row lock, then finds it no
/// longer held and changes nothing.
async fn settle_hold<C: GenericClient>(
    tx: &C,
    id: Uuid,
    to: ReservationStatus,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let sql = if to == ReservationStatus::Expired {
        "UPDATE reservations SET status = $2, updated_at = $3 \
         WHERE id = $1 AND status = 'held' AND expires_at <= $3"
    } else {
        "UPDATE reservations SET status = $2, updated_at = $3 WHERE id = $1 AND status = 'held'"
    };
    let changed = run(tx, sql, &[&id, &to.as_str(), &now]).await? == 1;
    if changed {
        restock(tx, id).await?;
    }
    Ok(changed)
}

/// Undo a committed sale: `committed → returned` and its copies back, in
/// the caller's transaction. Like `settle_hold`, the conditional status
/// update is what makes this happen once: a concurrent duplicate waits on
/// the row lock, then finds it no longer committed.
async fn return_sale<C: GenericClient>(
    tx: &C,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let changed = run(
        tx,
        "UPDATE reservations SET status = 'returned', updated_at = $2 \
         WHERE id = $1 AND status = 'committed'",
        &[&id, &now],
    )
    .await?
        == 1;
    if changed {
        restock(tx, id).await?;
    }
    Ok(changed)
}

/// Put every copy of reservation `id` back on its listing. Called only
/// right after the status update that allows it, in the same transaction;
/// listings are locked in book-id order like every other writer.
async fn restock<C: GenericClient>(tx: &C, id: Uuid) -> Result<(), StoreError> {
    let items = rows(
        tx,
        "SELECT book_id, quantity FROM reservation_items \
         WHERE reservation_id = $1 ORDER BY book_id",
        &[&id],
    )
    .await?;
    for item in &items {
        let (book_id, quantity): (Uuid, i32) = (col(item, 0)?, col(item, 1)?);
        run(
            tx,
            "UPDATE books SET stock = stock + $2 WHERE id = $1",
            &[&book_id, &quantity],
        )
        .await?;
    }
    Ok(())
}

/// The listing query's values as driver parameters.
fn sql_params(values: &[SqlValue]) -> Vec<Box<dyn ToSql + Sync + Send>> {
    values
        .iter()
        .map(|value| -> Box<dyn ToSql + Sync + Send> {
            match value {
                SqlValue::Text(text) => Box::new(text.clone()),
                SqlValue::Int(n) => Box::new(*n),
                SqlValue::Id(id) => Box::new(*id),
            }
        })
        .collect()
}

#[async_trait]
impl CatalogStore for PostgresStore {
    async fn create_book(&self, book: NewBook) -> Result<Book, StoreError> {
        let client = self.pools.writer().await?;
        let author_key = book.author.to_lowercase();
        // RETURNING reads the row back on the primary: the caller sees its
        // own write even when reads go to a lagging replica.
        let row = row_opt(
            &client,
            &format!(
                "INSERT INTO books AS b (id, seller_id, title, author, author_key, isbn, description, \
                 condition, price_cents, currency, stock, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'active', $12, $12) \
                 RETURNING {BOOK_COLUMNS}"
            ),
            &[
                &book.id,
                &book.seller_id,
                &book.title,
                &book.author,
                &author_key,
                &book.isbn.as_str(),
                &book.description,
                &book.condition.as_str(),
                &book.price.cents(),
                &book.price.currency(),
                &book.stock,
                &book.created_at,
            ],
        )
        .await?;
        row.as_ref()
            .map(book_from_row)
            .transpose()?
            .ok_or(StoreError::NotFound)
    }

    async fn book(&self, id: Uuid) -> Result<Option<Book>, StoreError> {
        let client = self.pools.reader().await?;
        load_book(&client, id).await
    }

    async fn update_book(
        &self,
        id: Uuid,
        seller_id: Uuid,
        changes: BookChanges,
    ) -> Result<Option<Book>, StoreError> {
        let client = self.pools.writer().await?;
        let author_key = changes.author.as_deref().map(str::to_lowercase);
        let row = row_opt(
            &client,
            &format!(
                "UPDATE books b SET title = COALESCE($3, title), author = COALESCE($4, author), \
                 author_key = COALESCE($5, author_key), description = COALESCE($6, description), \
                 condition = COALESCE($7, condition), price_cents = COALESCE($8, price_cents), \
                 currency = COALESCE($9, currency), stock = COALESCE($10, stock), updated_at = $11 \
                 WHERE id = $1 AND seller_id = $2 AND status = 'active' RETURNING {BOOK_COLUMNS}"
            ),
            &[
                &id,
                &seller_id,
                &changes.title,
                &changes.author,
                &author_key,
                &changes.description,
                &changes.condition.map(Condition::as_str),
                &changes.price.as_ref().map(Price::cents),
                &changes.price.as_ref().map(Price::currency),
                &changes.stock,
                &changes.updated_at,
            ],
        )
        .await?;
        row.as_ref().map(book_from_row).transpose()
    }

    async fn withdraw_book(
        &self,
        id: Uuid,
        seller_id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let client = self.pools.writer().await?;
        let matched = run(
            &client,
            "UPDATE books SET status = 'withdrawn', \
             updated_at = CASE WHEN status = 'active' THEN $3 ELSE updated_at END \
             WHERE id = $1 AND seller_id = $2",
            &[&id, &seller_id, &at],
        )
        .await?;
        Ok(matched > 0)
    }

    async fn books(&self, query: BookQuery) -> Result<Vec<Book>, StoreError> {
        let client = self.pools.reader().await?;
        let listing = listing_sql(&query, Dialect::Postgres);
        let sql = format!("SELECT {BOOK_COLUMNS} FROM books b {}", listing.tail);
        let boxed = sql_params(&listing.values);
        let params: Vec<&(dyn ToSql + Sync)> = boxed
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        rows(&client, &sql, &params)
            .await?
            .iter()
            .map(book_from_row)
            .collect()
    }

    async fn reserve(&self, new: NewReservation) -> Result<ReserveOutcome, StoreError> {
        let mut client = self.pools.writer().await?;
        let tx = client.transaction().await?;
        // A concurrent request with the same id waits here on the unique
        // index until the first one commits or rolls back.
        let inserted = run(
            &tx,
            "INSERT INTO reservations (id, status, expires_at, created_at, updated_at) \
             VALUES ($1, 'held', $2, $3, $3) ON CONFLICT (id) DO NOTHING",
            &[&new.id, &new.expires_at, &new.created_at],
        )
        .await?;
        if inserted == 0 {
            let existing = load_reservation(&tx, new.id)
                .await?
                .ok_or(StoreError::NotFound)?;
            tx.rollback().await?;
            return Ok(ReserveOutcome::Existing(existing));
        }
        let (mut items, mut shortfalls) = (Vec::new(), Vec::new());
        for line in new.lines_by_book() {
            match take_stock(&tx, new.id, &line).await? {
                Ok(item) => items.push(item),
                Err(shortfall) => shortfalls.push(shortfall),
            }
        }
        if !shortfalls.is_empty() {
            tx.rollback().await?;
            shortfalls.sort_by_key(|s| s.index);
            return Ok(ReserveOutcome::Rejected(shortfalls));
        }
        tx.commit().await?;
        Ok(ReserveOutcome::Created(new.held(items)))
    }

    async fn reservation(&self, id: Uuid) -> Result<Option<Reservation>, StoreError> {
        let client = self.pools.writer().await?;
        load_reservation(&client, id).await
    }

    async fn commit_reservation(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Transitioned>, StoreError> {
        let client = self.pools.writer().await?;
        let changed = run(
            &client,
            "UPDATE reservations SET status = 'committed', updated_at = $2 \
             WHERE id = $1 AND status = 'held' AND expires_at > $2",
            &[&id, &now],
        )
        .await?
            == 1;
        transitioned(&client, id, changed).await
    }

    async fn release_reservation(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Transitioned>, StoreError> {
        let mut client = self.pools.writer().await?;
        let tx = client.transaction().await?;
        let changed = settle_hold(&tx, id, ReservationStatus::Released, now).await?;
        tx.commit().await?;
        transitioned(&client, id, changed).await
    }

    async fn return_reservation(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Transitioned>, StoreError> {
        let mut client = self.pools.writer().await?;
        let tx = client.transaction().await?;
        let changed = return_sale(&tx, id, now).await?;
        tx.commit().await?;
        transitioned(&client, id, changed).await
    }

    async fn release_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut expired = 0;
        for _ in 0..EXPIRY_BATCHES_PER_CALL {
            let due: Vec<Uuid> = {
                let client = self.pools.writer().await?;
                rows(
                    &client,
                    "SELECT id FROM reservations WHERE status = 'held' AND expires_at <= $1 \
                     ORDER BY expires_at LIMIT $2",
                    &[&now, &EXPIRY_BATCH],
                )
                .await?
                .iter()
                .map(|row| col(row, 0))
                .collect::<Result<_, _>>()?
            };
            // One transaction per reservation keeps locks short and takes
            // its listings in book-id order, like every other writer. A
            // reservation released meanwhile is skipped by `settle_hold`.
            for id in &due {
                if self.expire_one(*id, now).await? {
                    expired += 1;
                }
            }
            if (due.len() as i64) < EXPIRY_BATCH {
                break;
            }
        }
        Ok(expired)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.pools.ping().await
    }
}
