use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use uuid::Uuid;
use zocalo_bus::inbox;
use zocalo_bus::outbox::{self, Message, Source};
use zocalo_contracts::orders::OrderPaid;
use zocalo_payments::ChargeLedger;
use zocalo_store::{SqlitePool, StoreError};

use super::{Created, NextMessages, OrdersStore, next_shipment_step};
use crate::domain::{Line, NewOrder, Order, Sale, Shipment};

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

const ORDER_COLUMNS: &str = "id, buyer_id, status, reservation, failure_reason, shipping_address, provider, \
     card_token, card_last4, total_cents, currency, created_at, updated_at";

fn order_from_row(row: &Row<'_>) -> rusqlite::Result<Order> {
    Ok(Order {
        id: row.get(0)?,
        buyer_id: row.get(1)?,
        status: row.get(2)?,
        reservation: row.get(3)?,
        failure_reason: row.get(4)?,
        shipping_address: row.get(5)?,
        provider: row.get(6)?,
        card_token: row.get(7)?,
        card_last4: row.get(8)?,
        total_cents: row.get(9)?,
        currency: row.get(10)?,
        created_at: row.get(11)?,
        updated_at: row.get(12)?,
        items: Vec::new(),
        shipment: None,
    })
}

fn with_details(conn: &Connection, mut order: Order) -> Result<Order, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT book_id, quantity, seller_id, title, unit_price_cents, currency FROM order_items WHERE order_id = ?1 ORDER BY rowid",
    )?;
    order.items = statement
        .query_map([order.id], |row| {
            Ok(Line {
                book_id: row.get(0)?,
                quantity: row.get(1)?,
                seller_id: row.get(2)?,
                title: row.get(3)?,
                unit_price_cents: row.get(4)?,
                currency: row.get(5)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    order.shipment = conn
        .query_row(
            "SELECT provider, tracking_number, status, updated_at FROM shipments WHERE order_id = ?1",
            [order.id],
            |row| {
                Ok(Shipment {
                    provider: row.get(0)?,
                    tracking_number: row.get(1)?,
                    status: row.get(2)?,
                    updated_at: row.get(3)?,
                })
            },
        )
        .optional()?;
    Ok(order)
}

fn load_order(conn: &Connection, id: Uuid) -> Result<Option<Order>, StoreError> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1");
    match conn.query_row(&sql, [id], order_from_row).optional()? {
        Some(order) => Ok(Some(with_details(conn, order)?)),
        None => Ok(None),
    }
}

fn write_messages(tx: &Transaction<'_>, messages: &[Message]) -> Result<(), StoreError> {
    for message in messages {
        outbox::insert_sqlite(tx, message)?;
    }
    Ok(())
}

#[async_trait]
impl OrdersStore for SqliteStore {
    async fn create_order(
        &self,
        order: NewOrder,
        idempotency_key: &str,
        messages: Vec<Message>,
    ) -> Result<Created, StoreError> {
        let key = idempotency_key.to_owned();
        self.pool
            .write(move |conn| {
                let tx = conn.transaction()?;
                let existing: Option<(Uuid, String)> = tx
                    .query_row(
                        "SELECT order_id, request_hash FROM idempotency_keys WHERE buyer_id = ?1 AND key = ?2",
                        params![order.buyer_id, key],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .optional()?;
                if let Some((id, hash)) = existing {
                    let found = load_order(&tx, id)?.ok_or(StoreError::NotFound)?;
                    return Ok(Created::Existing { order: found, same_request: hash == order.request_hash });
                }
                tx.execute(
                    &format!("INSERT INTO orders ({ORDER_COLUMNS}) VALUES (?1, ?2, 'pending', 'none', NULL, ?3, ?4, ?5, ?6, NULL, NULL, ?7, ?7)"),
                    params![order.id, order.buyer_id, order.shipping_address, order.provider.as_str(), order.card_token, order.card_last4, order.created_at],
                )?;
                for line in &order.lines {
                    tx.execute(
                        "INSERT INTO order_items (order_id, book_id, quantity) VALUES (?1, ?2, ?3)",
                        params![order.id, line.book_id, line.quantity],
                    )?;
                }
                tx.execute(
                    "INSERT INTO idempotency_keys (buyer_id, key, request_hash, order_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![order.buyer_id, key, order.request_hash, order.id, order.created_at],
                )?;
                write_messages(&tx, &messages)?;
                let created = load_order(&tx, order.id)?.ok_or(StoreError::NotFound)?;
                tx.commit()?;
                Ok(Created::New(created))
            })
            .await
    }

    async fn order(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        self.pool.read(move |conn| load_order(conn, id)).await
    }

    async fn orders_of(
        &self,
        buyer: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        self.pool
            .read(move |conn| {
                let sql = format!(
                    "SELECT {ORDER_COLUMNS} FROM orders WHERE buyer_id = ?1 AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3"
                );
                let mut statement = conn.prepare_cached(&sql)?;
                let orders: Vec<Order> = statement
                    .query_map(params![buyer, before, limit], order_from_row)?
                    .collect::<Result<_, _>>()?;
                orders.into_iter().map(|o| with_details(conn, o)).collect()
            })
            .await
    }

    async fn mark_reserved(
        &self,
        id: Uuid,
        lines: Vec<Line>,
        total_cents: i64,
        currency: &str,
    ) -> Result<bool, StoreError> {
        let currency = currency.to_owned();
        self.pool
            .write(move |conn| {
                let tx = conn.transaction()?;
                let changed = tx.execute(
                    "UPDATE orders SET status = 'reserved', reservation = 'held', total_cents = ?2, currency = ?3, updated_at = ?4 \
                     WHERE id = ?1 AND status = 'pending'",
                    params![id, total_cents, currency, Utc::now()],
                )?;
                if changed == 0 {
                    return Ok(false);
                }
                for line in &lines {
                    tx.execute(
                        "UPDATE order_items SET seller_id = ?3, title = ?4, unit_price_cents = ?5, currency = ?6 WHERE order_id = ?1 AND book_id = ?2",
                        params![id, line.book_id, line.seller_id, line.title, line.unit_price_cents, line.currency],
                    )?;
                }
                tx.commit()?;
                Ok(true)
            })
            .await
    }

    async fn transition(
        &self,
        id: Uuid,
        from: &[&str],
        to: &str,
        reason: Option<String>,
        messages: Vec<Message>,
    ) -> Result<bool, StoreError> {
        let from: Vec<String> = from.iter().map(|s| s.to_string()).collect();
        let to = to.to_owned();
        self.pool
            .write(move |conn| {
                let tx = conn.transaction()?;
                let current: Option<String> = tx
                    .query_row("SELECT status FROM orders WHERE id = ?1", [id], |row| row.get(0))
                    .optional()?;
                if !current.is_some_and(|status| from.contains(&status)) {
                    return Ok(false);
                }
                tx.execute(
                    "UPDATE orders SET status = ?2, failure_reason = COALESCE(?3, failure_reason), updated_at = ?4 WHERE id = ?1",
                    params![id, to, reason, Utc::now()],
                )?;
                write_messages(&tx, &messages)?;
                tx.commit()?;
                Ok(true)
            })
            .await
    }

    async fn set_reservation(&self, id: Uuid, from: &str, to: &str) -> Result<bool, StoreError> {
        let (from, to) = (from.to_owned(), to.to_owned());
        self.pool
            .write(move |conn| {
                Ok(conn.execute(
                    "UPDATE orders SET reservation = ?3, updated_at = ?4 WHERE id = ?1 AND reservation = ?2",
                    params![id, from, to, Utc::now()],
                )? > 0)
            })
            .await
    }

    async fn create_shipment(
        &self,
        id: Uuid,
        provider: &str,
        tracking: &str,
        messages: Vec<Message>,
    ) -> Result<bool, StoreError> {
        let (provider, tracking) = (provider.to_owned(), tracking.to_owned());
        self.pool
            .write(move |conn| {
                let tx = conn.transaction()?;
                let created = tx.execute(
                    "INSERT INTO shipments (order_id, provider, tracking_number, status, updated_at) VALUES (?1, ?2, ?3, 'label_created', ?4) \
                     ON CONFLICT (order_id) DO NOTHING",
                    params![id, provider, tracking, Utc::now()],
                )? > 0;
                if created {
                    write_messages(&tx, &messages)?;
                }
                tx.commit()?;
                Ok(created)
            })
            .await
    }

    async fn advance_shipment(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        messages: NextMessages,
    ) -> Result<Option<String>, StoreError> {
        self.pool
            .write(move |conn| {
                let tx = conn.transaction()?;
                let current: Option<(String, String)> = tx
                    .query_row(
                        "SELECT s.status, o.status FROM shipments s JOIN orders o ON o.id = s.order_id WHERE s.order_id = ?1",
                        [id],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .optional()?;
                let Some((shipment, order_status)) = current else { return Ok(None) };
                // A cancelled order's parcel never leaves.
                if !matches!(order_status.as_str(), "paid" | "shipped") {
                    return Ok(None);
                }
                let Some((next, order_next)) = next_shipment_step(&shipment) else { return Ok(None) };
                tx.execute("UPDATE shipments SET status = ?2, updated_at = ?3 WHERE order_id = ?1", params![id, next, now])?;
                tx.execute("UPDATE orders SET status = ?2, updated_at = ?3 WHERE id = ?1", params![id, order_next, now])?;
                write_messages(&tx, &messages(next))?;
                tx.commit()?;
                Ok(Some(next.to_owned()))
            })
            .await
    }

    async fn record_sale(&self, event_id: Uuid, paid: &OrderPaid) -> Result<bool, StoreError> {
        let paid = paid.clone();
        self.pool
            .write(move |conn| {
                let tx = conn.transaction()?;
                if !inbox::record_sqlite(&tx, event_id)? {
                    return Ok(false);
                }
                for item in &paid.items {
                    tx.execute(
                        "INSERT INTO sales (order_id, book_id, seller_id, buyer_id, title, quantity, unit_price_cents, currency, paid_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
                        params![paid.order_id, item.book_id, item.seller_id, paid.buyer_id, item.title, item.quantity, item.unit_price_cents, item.currency, paid.paid_at],
                    )?;
                }
                tx.commit()?;
                Ok(true)
            })
            .await
    }

    async fn sales_of(&self, seller: Uuid, limit: u32) -> Result<Vec<Sale>, StoreError> {
        self.pool
            .read(move |conn| {
                let mut statement = conn.prepare_cached(
                    "SELECT order_id, book_id, buyer_id, title, quantity, unit_price_cents, currency, paid_at FROM sales \
                     WHERE seller_id = ?1 ORDER BY paid_at DESC LIMIT ?2",
                )?;
                let rows = statement.query_map(params![seller, limit], |row| {
                    Ok(Sale {
                        order_id: row.get(0)?,
                        book_id: row.get(1)?,
                        buyer_id: row.get(2)?,
                        title: row.get(3)?,
                        quantity: row.get(4)?,
                        unit_price_cents: row.get(5)?,
                        currency: row.get(6)?,
                        paid_at: row.get(7)?,
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
