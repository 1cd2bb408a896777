//! What the store keeps for tickets and webhooks: the buyer's address, the
//! ticket documents in object storage (and whether they were emailed), the
//! webhooks of each cinema and the log of their deliveries.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;
use zocalo_bus::Event;
use zocalo_contracts::cinema::{self as contract, TicketsDocumentReady};
use zocalo_notify::webhook::Attempt;
use zocalo_store::StoreError;

/// Whether a purchase's tickets went out by email.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EmailStatus {
    Pending,
    Sent,
    /// No address to send to (the buyer's token had none).
    Skipped,
    /// The mail server refused it for good.
    Failed,
}

impl EmailStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Self {
        match text {
            "sent" => Self::Sent,
            "skipped" => Self::Skipped,
            "failed" => Self::Failed,
            _ => Self::Pending,
        }
    }
}

/// A purchase's PDF, stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketDocument {
    pub purchase_id: Uuid,
    pub object_key: String,
    pub email_status: EmailStatus,
}

/// A webhook a cinema's manager registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Webhook {
    pub webhook_id: Uuid,
    pub cinema_id: Uuid,
    pub url: String,
    /// Shown once, in the answer to its creation.
    #[serde(skip)]
    pub secret: String,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
}

/// What adding a webhook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookAdded {
    Added,
    /// The cinema already has a webhook for this URL.
    Duplicate,
    /// The cinema has `limit` webhooks already.
    TooMany,
    /// The cinema does not exist (any more).
    NoCinema,
}

/// One delivery attempt, as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DeliveryRecord {
    pub event_id: Uuid,
    pub event_kind: String,
    pub attempt: u32,
    pub max_attempts: u32,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
    /// `delivered`, `retrying` or `gave_up`.
    pub outcome: String,
    pub at: DateTime<Utc>,
}

#[async_trait]
pub trait NotifyStore: Send + Sync {
    /// Remember where to email a purchase's tickets (the first address
    /// given wins).
    async fn remember_contact(&self, purchase: Uuid, email: &str) -> Result<(), StoreError>;
    async fn contact(&self, purchase: Uuid) -> Result<Option<String>, StoreError>;

    async fn ticket_document(&self, purchase: Uuid) -> Result<Option<TicketDocument>, StoreError>;
    /// Record that the document is stored and append `tickets.document_ready`
    /// (log and outbox), in one transaction; `false` when it already was.
    async fn document_stored(
        &self,
        ready: &TicketsDocumentReady,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    async fn set_email_status(
        &self,
        purchase: Uuid,
        status: EmailStatus,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// The purchase a ticket belongs to.
    async fn purchase_of_ticket(&self, ticket: Uuid) -> Result<Option<Uuid>, StoreError>;

    /// Add `webhook` unless its cinema already has `limit` of them.
    async fn add_webhook(&self, webhook: &Webhook, limit: u32) -> Result<WebhookAdded, StoreError>;
    async fn webhooks_of(&self, cinema: Uuid) -> Result<Vec<Webhook>, StoreError>;
    async fn webhook(&self, id: Uuid) -> Result<Option<Webhook>, StoreError>;
    /// Remove a webhook and its delivery log; `false` if it was not there.
    async fn delete_webhook(&self, id: Uuid) -> Result<bool, StoreError>;
    /// Log an attempt; one of a webhook deleted meanwhile is dropped.
    async fn record_delivery(&self, attempt: &Attempt) -> Result<(), StoreError>;
    /// The newest `limit` attempts, newest first.
    async fn deliveries(
        &self,
        webhook: Uuid,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError>;
}

/// The most webhooks one cinema may have.
pub const MAX_WEBHOOKS_PER_CINEMA: u32 = 10;

/// `tickets.document_ready`, appended with the document's row.
pub(crate) fn document_ready_event(ready: &TicketsDocumentReady) -> Event {
    Event::new(
        contract::TOPIC,
        contract::TICKETS_DOCUMENT_READY,
        serde_json::to_value(ready).unwrap_or_default(),
    )
}
