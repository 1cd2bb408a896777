//! The orders service's storage. Every state change that others must hear
//! about is written together with its outbox messages (events and follow-up
//! jobs) in one transaction, so a crash can never separate the two. The
//! schema holds the invariants: one charge per order in the payment ledger,
//! one shipment per order, one order per idempotency key.

mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;
use zocalo_bus::outbox::{Message, Source};
use zocalo_contracts::orders::OrderPaid;
use zocalo_payments::ChargeLedger;
use zocalo_store::{DatabaseSettings, Engine, StoreError};

use crate::domain::{Line, NewOrder, Order, Sale};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Given a shipment's new status, the messages to write with it.
pub type NextMessages = Box<dyn for<'a> FnOnce(&'a str) -> Vec<Message> + Send>;

/// What `create_order` did with an idempotency key.
#[derive(Debug)]
pub enum Created {
    New(Order),
    /// The key was used before: the order it created, and whether this
    /// request is the same as that one.
    Existing {
        order: Order,
        same_request: bool,
    },
}

#[async_trait]
pub trait OrdersStore: Send + Sync + 'static {
    /// Insert the order, its idempotency key and `messages`, atomically.
    async fn create_order(
        &self,
        order: NewOrder,
        idempotency_key: &str,
        messages: Vec<Message>,
    ) -> Result<Created, StoreError>;
    async fn order(&self, id: Uuid) -> Result<Option<Order>, StoreError>;
    /// A buyer's orders, newest first, before `before`.
    async fn orders_of(
        &self,
        buyer: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError>;

    /// `pending → reserved` with the catalog's prices; `false` if the order
    /// was no longer pending.
    async fn mark_reserved(
        &self,
        id: Uuid,
        lines: Vec<Line>,
        total_cents: i64,
        currency: &str,
    ) -> Result<bool, StoreError>;
    /// Move the order from one of `from` to `to` and write `messages`.
    async fn transition(
        &self,
        id: Uuid,
        from: &[&str],
        to: &str,
        reason: Option<String>,
        messages: Vec<Message>,
    ) -> Result<bool, StoreError>;
    /// What the order holds in the catalog: `from → to`.
    async fn set_reservation(&self, id: Uuid, from: &str, to: &str) -> Result<bool, StoreError>;

    /// Create the shipment (once) and write `messages`.
    async fn create_shipment(
        &self,
        id: Uuid,
        provider: &str,
        tracking: &str,
        messages: Vec<Message>,
    ) -> Result<bool, StoreError>;
    /// Move the shipment one step on (`label_created → in_transit →
    /// delivered`) with the order (`paid → shipped → delivered`); returns the
    /// new shipment status, `None` when there is nothing to advance.
    /// `messages` gets the new status and returns what to write with it.
    async fn advance_shipment(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        messages: NextMessages,
    ) -> Result<Option<String>, StoreError>;

    /// Project an `order.paid` event into the sales table once per event id.
    async fn record_sale(&self, event_id: Uuid, paid: &OrderPaid) -> Result<bool, StoreError>;
    async fn sales_of(&self, seller: Uuid, limit: u32) -> Result<Vec<Sale>, StoreError>;

    /// The card processor's ledger (`payment_charges`), in this database.
    fn ledger(&self) -> Arc<dyn ChargeLedger>;
    /// Where the outbox relay reads.
    fn outbox(&self) -> Source;
    async fn ping(&self) -> Result<(), StoreError>;
}

pub async fn open(settings: &DatabaseSettings) -> Result<Arc<dyn OrdersStore>, StoreError> {
    Ok(match Engine::from_url(&settings.url)? {
        Engine::Sqlite(path) => Arc::new(SqliteStore::open(&path, settings.max_connections)?),
        Engine::Postgres(_) => Arc::new(PostgresStore::connect(settings).await?),
    })
}

/// The next status of a shipment and of its order.
pub(crate) fn next_shipment_step(shipment: &str) -> Option<(&'static str, &'static str)> {
    match shipment {
        "label_created" => Some(("in_transit", "shipped")),
        "in_transit" => Some(("delivered", "delivered")),
        _ => None,
    }
}
