use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use tokio_postgres::{GenericClient, Row, Transaction};
use uuid::Uuid;
use zocalo_bus::inbox;
use zocalo_bus::outbox::{self, Message, Source};
use zocalo_contracts::orders::OrderPaid;
use zocalo_payments::ChargeLedger;
use zocalo_store::{DatabaseSettings, PgPools, StoreError};

use super::{Created, NextMessages, OrdersStore, next_shipment_step};
use crate::domain::{Line, NewOrder, Order, Sale, Shipment};

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

const ORDER_COLUMNS: &str = "id, buyer_id, status, reservation, failure_reason, shipping_address, provider, \
     card_token, card_last4, total_cents, currency, created_at, updated_at";

fn order_from_row(row: &Row) -> Order {
    Order {
        id: row.get(0),
        buyer_id: row.get(1),
        status: row.get(2),
        reservation: row.get(3),
        failure_reason: row.get(4),
        shipping_address: row.get(5),
        provider: row.get(6),
        card_token: row.get(7),
        card_last4: row.get(8),
        total_cents: row.get(9),
        currency: row.get(10),
        created_at: row.get(11),
        updated_at: row.get(12),
        items: Vec::new(),
        shipment: None,
    }
}

/// Attach lines and shipments to `orders` with two queries in all, however
/// many orders there are (a buyer's list must not cost a round trip each).
async fn with_details<C: GenericClient>(
    client: &C,
    mut orders: Vec<Order>,
) -> Result<Vec<Order>, StoreError> {
    let ids: Vec<Uuid> = orders.iter().map(|o| o.id).collect();
    let items = client
        .query(
            "SELECT order_id, book_id, quantity, seller_id, title, unit_price_cents, currency \
             FROM order_items WHERE order_id = ANY($1) ORDER BY ctid",
            &[&ids],
        )
        .await?;
    let shipments = client
        .query(
            "SELECT order_id, provider, tracking_number, status, updated_at FROM shipments WHERE order_id = ANY($1)",
            &[&ids],
        )
        .await?;
    for order in &mut orders {
        order.items = items
            .iter()
            .filter(|row| row.get::<_, Uuid>(0) == order.id)
            .map(|row| Line {
                book_id: row.get(1),
                quantity: row.get::<_, i32>(2) as u32,
                seller_id: row.get(3),
                title: row.get(4),
                unit_price_cents: row.get(5),
                currency: row.get(6),
            })
            .collect();
        order.shipment = shipments
            .iter()
            .find(|row| row.get::<_, Uuid>(0) == order.id)
            .map(|row| Shipment {
                provider: row.get(1),
                tracking_number: row.get(2),
                status: row.get(3),
                updated_at: row.get(4),
            });
    }
    Ok(orders)
}

async fn load_order<C: GenericClient>(client: &C, id: Uuid) -> Result<Option<Order>, StoreError> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1");
    match client.query_opt(&sql, &[&id]).await? {
        Some(row) => Ok(with_details(client, vec![order_from_row(&row)])
            .await?
            .pop()),
        None => Ok(None),
    }
}

async fn write_messages(tx: &Transaction<'_>, messages: &[Message]) -> Result<(), StoreError> {
    for message in messages {
        outbox::insert_postgres(tx, message).await?;
    }
    Ok(())
}

#[async_trait]
impl OrdersStore for PostgresStore {
    async fn create_order(
        &self,
        order: NewOrder,
        idempotency_key: &str,
        messages: Vec<Message>,
    ) -> Result<Created, StoreError> {
        let mut client = self.pools.writer().await?;
        let tx = client.transaction().await?;
        // Claim the key first: a concurrent request with the same key waits
        // on this row and then sees it, instead of creating a second order.
        tx.execute(
                "INSERT INTO orders (id, buyer_id, status, reservation, shipping_address, provider, card_token, card_last4, created_at, updated_at) \
                 VALUES ($1, $2, 'pending', 'none', $3, $4, $5, $6, $7, $7)",
                &[&order.id, &order.buyer_id, &order.shipping_address, &order.provider.as_str(), &order.card_token, &order.card_last4, &order.created_at],
            )
            .await?;
        let inserted = tx
            .execute(
                "INSERT INTO idempotency_keys (buyer_id, key, request_hash, order_id, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (buyer_id, key) DO NOTHING",
                &[&order.buyer_id, &idempotency_key, &order.request_hash, &order.id, &order.created_at],
            )
            .await?;
        if inserted == 0 {
            tx.rollback().await?;
            // Reuse this connection: asking the pool for a second one while
            // holding the first can starve it under a burst of retries.
            let row = client
                .query_one(
                    "SELECT order_id, request_hash FROM idempotency_keys WHERE buyer_id = $1 AND key = $2",
                    &[&order.buyer_id, &idempotency_key],
                )
                .await?;
            let (id, hash): (Uuid, String) = (row.get(0), row.get(1));
            let found = load_order(&**client, id)
                .await?
                .ok_or(StoreError::NotFound)?;
            return Ok(Created::Existing {
                order: found,
                same_request: hash == order.request_hash,
            });
        }
        for line in &order.lines {
            tx.execute(
                "INSERT INTO order_items (order_id, book_id, quantity) VALUES ($1, $2, $3)",
                &[&order.id, &line.book_id, &(line.quantity as i32)],
            )
            .await?;
        }
        write_messages(&tx, &messages).await?;
        let created = load_order(&*tx, order.id)
            .await?
            .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(Created::New(created))
    }

    async fn order(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        // The saga reads its own writes: primary.
        let client = self.pools.writer().await?;
        load_order(&**client, id).await
    }

    async fn orders_of(
        &self,
        buyer: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        let client = self.pools.reader().await?;
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE buyer_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
        );
        let rows = client
            .query(&sql, &[&buyer, &before, &i64::from(limit)])
            .await?;
        with_details(&**client, rows.iter().map(order_from_row).collect()).await
    }

    async fn mark_reserved(
        &self,
        id: Uuid,
        lines: Vec<Line>,
        total_cents: i64,
        currency: &str,
    ) -> Result<bool, StoreError> {
        let mut client = self.pools.writer().await?;
        let tx = client.transaction().await?;
        let changed = tx
            .execute(
                "UPDATE orders SET status = 'reserved', reservation = 'held', total_cents = $2, currency = $3, updated_at = $4 \
                 WHERE id = $1 AND status = 'pending'",
                &[&id, &total_cents, &currency, &Utc::now()],
            )
            .await?;
        if changed == 0 {
            return Ok(false);
        }
        for line in &lines {
            tx.execute(
                "UPDATE order_items SET seller_id = $3, title = $4, unit_price_cents = $5, currency = $6 WHERE order_id = $1 AND book_id = $2",
                &[&id, &line.book_id, &line.seller_id, &line.title, &line.unit_price_cents, &line.currency],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn transition(
        &self,
        id: Uuid,
        from: &[&str],
        to: &str,
        reason: Option<String>,
        messages: Vec<Message>,
    ) -> Result<bool, StoreError> {
        let mut client = self.pools.writer().await?;
        let tx = client.transaction().await?;
        let changed = tx
            .execute(
                "UPDATE orders SET status = $2, failure_reason = COALESCE($3, failure_reason), updated_at = $4 \
                 WHERE id = $1 AND status = ANY($5)",
                &[&id, &to, &reason, &Utc::now(), &from],
            )
            .await?;
        if changed == 0 {
            return Ok(false);
        }
        write_messages(&tx, &messages).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn set_reservation(&self, id: Uuid, from: &str, to: &str) -> Result<bool, StoreError> {
        let client = self.pools.writer().await?;
        Ok(client
            .execute(
                "UPDATE orders SET reservation = $3, updated_at = $4 WHERE id = $1 AND reservation = $2",
                &[&id, &from, &to, &Utc::now()],
            )
            .await?
            > 0)
    }

    async fn create_shipment(
        &self,
        id: Uuid,
        provider: &str,
        tracking: &str,
        messages: Vec<Message>,
    ) -> Result<bool, StoreError> {
        let mut client = self.pools.writer().await?;
        let tx = client.transaction().await?;
        let created = tx
            .execute(
                "INSERT INTO shipments (order_id, provider, tracking_number, status, updated_at) VALUES ($1, $2, $3, 'label_created', $4) \
                 ON CONFLICT (order_id) DO NOTHING",
                &[&id, &provider, &tracking, &Utc::now()],
            )
            .await?
            > 0;
        if created {
            write_messages(&tx, &messages).await?;
        }
        tx.commit().await?;
        Ok(created)
    }

    async fn advance_shipment(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        messages: NextMessages,
    ) -> Result<Option<String>, StoreError> {
        let mut client = self.pools.writer().await?;
        let tx = client.transaction().await?;
        let current = tx
            .query_opt(
                "SELECT s.status, o.status FROM shipments s JOIN orders o ON o.id = s.order_id WHERE s.order_id = $1 FOR UPDATE",
                &[&id],
            )
            .await?;
        let Some(row) = current else { return Ok(None) };
        let (shipment, order_status): (String, String) = (row.get(0), row.get(1));
        if !matches!(order_status.as_str(), "paid" | "shipped") {
            return Ok(None);
        }
        let Some((next, order_next)) = next_shipment_step(&shipment) else {
            return Ok(None);
        };
        tx.execute(
            "UPDATE shipments SET status = $2, updated_at = $3 WHERE order_id = $1",
            &[&id, &next, &now],
        )
        .await?;
        tx.execute(
            "UPDATE orders SET status = $2, updated_at = $3 WHERE id = $1",
            &[&id, &order_next, &now],
        )
        .await?;
        write_messages(&tx, &messages(next)).await?;
        tx.commit().await?;
        Ok(Some(next.to_owned()))
    }

    async fn record_sale(&self, event_id: Uuid, paid: &OrderPaid) -> Result<bool, StoreError> {
        let mut client = self.pools.writer().await?;
        let tx = client.transaction().await?;
        if !inbox::record_postgres(&tx, event_id).await? {
            return Ok(false);
        }
        for item in &paid.items {
            tx.execute(
                "INSERT INTO sales (order_id, book_id, seller_id, buyer_id, title, quantity, unit_price_cents, currency, paid_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                &[&paid.order_id, &item.book_id, &item.seller_id, &paid.buyer_id, &item.title, &(item.quantity as i32), &item.unit_price_cents, &item.currency, &paid.paid_at],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn sales_of(&self, seller: Uuid, limit: u32) -> Result<Vec<Sale>, StoreError> {
        let client = self.pools.reader().await?;
        let rows = client
            .query(
                "SELECT order_id, book_id, buyer_id, title, quantity, unit_price_cents, currency, paid_at FROM sales \
                 WHERE seller_id = $1 ORDER BY paid_at DESC LIMIT $2",
                &[&seller, &i64::from(limit)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| Sale {
                order_id: row.get(0),
                book_id: row.get(1),
                buyer_id: row.get(2),
                title: row.get(3),
                quantity: row.get::<_, i32>(4) as u32,
                unit_price_cents: row.get(5),
                currency: row.get(6),
                paid_at: row.get(7),
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
