//! [`NotifyStore`] on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row, params};
use uuid::Uuid;
use zocalo_contracts::cinema::TicketsDocumentReady;
use zocalo_notify::webhook::Attempt;
use zocalo_store::StoreError;

use super::{SqliteStore, append};
use crate::store::notify::{
    DeliveryRecord, EmailStatus, NotifyStore, TicketDocument, Webhook, WebhookAdded,
    document_ready_event,
};

const WEBHOOK_COLUMNS: &str = "id, cinema_id, url, secret, created_by, created_at";

fn webhook_from_row(row: &Row<'_>) -> rusqlite::Result<Webhook> {
    Ok(Webhook {
        webhook_id: row.get(0)?,
        cinema_id: row.get(1)?,
        url: row.get(2)?,
        secret: row.get(3)?,
        created_by: row.get(4)?,
        created_at: row.get(5)?,
    })
}

#[async_trait]
impl NotifyStore for SqliteStore {
    async fn remember_contact(&self, purchase: Uuid, email: &str) -> Result<(), StoreError> {
        let email = email.to_owned();
        self.pool
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO purchase_contacts (purchase_id, email) VALUES (?1, ?2) \
                     ON CONFLICT DO NOTHING",
                    params![purchase, email],
                )?;
                Ok(())
            })
            .await
    }

    async fn contact(&self, purchase: Uuid) -> Result<Option<String>, StoreError> {
        self.pool
            .read(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT email FROM purchase_contacts WHERE purchase_id = ?1",
                        [purchase],
                        |row| row.get(0),
                    )
                    .optional()?)
            })
            .await
    }

    async fn ticket_document(&self, purchase: Uuid) -> Result<Option<TicketDocument>, StoreError> {
        self.pool
            .read(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT object_key, email_status FROM ticket_documents WHERE purchase_id = ?1",
                        [purchase],
                        |row| {
                            Ok(TicketDocument {
                                purchase_id: purchase,
                                object_key: row.get(0)?,
                                email_status: EmailStatus::parse(&row.get::<_, String>(1)?),
                            })
                        },
                    )
                    .optional()?)
            })
            .await
    }

    async fn document_stored(
        &self,
        ready: &TicketsDocumentReady,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let ready = ready.clone();
        self.pool
            .write(move |conn| {
                let tx = conn.transaction()?;
                let inserted = tx.execute(
                    "INSERT INTO ticket_documents (purchase_id, object_key, stored_at) \
                     VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    params![ready.purchase_id, ready.object_key, now],
                )?;
                if inserted == 0 {
                    return Ok(false);
                }
                append(&tx, vec![document_ready_event(&ready)])?;
                tx.commit()?;
                Ok(true)
            })
            .await
    }

    async fn set_email_status(
        &self,
        purchase: Uuid,
        status: EmailStatus,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.pool
            .write(move |conn| {
                conn.execute(
                    "UPDATE ticket_documents SET email_status = ?2, emailed_at = ?3 \
                     WHERE purchase_id = ?1",
                    params![purchase, status.as_str(), now],
                )?;
                Ok(())
            })
            .await
    }

    async fn purchase_of_ticket(&self, ticket: Uuid) -> Result<Option<Uuid>, StoreError> {
        self.pool
            .read(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT purchase_id FROM tickets WHERE id = ?1",
                        [ticket],
                        |row| row.get(0),
                    )
                    .optional()?)
            })
            .await
    }

    async fn add_webhook(&self, webhook: &Webhook, limit: u32) -> Result<WebhookAdded, StoreError> {
        let webhook = webhook.clone();
        self.pool
            .write(move |conn| {
                // One writer: the count and the insert see the same state.
                let tx = conn.transaction()?;
                let cinema: Option<i64> = tx
                    .query_row(
                        "SELECT 1 FROM cinemas WHERE id = ?1",
                        [webhook.cinema_id],
                        |r| r.get(0),
                    )
                    .optional()?;
                if cinema.is_none() {
                    return Ok(WebhookAdded::NoCinema);
                }
                let count: u32 = tx.query_row(
                    "SELECT count(*) FROM webhooks WHERE cinema_id = ?1",
                    [webhook.cinema_id],
                    |r| r.get(0),
                )?;
                if count >= limit {
                    return Ok(WebhookAdded::TooMany);
                }
                let inserted = tx.execute(
                    &format!(
                        "INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                         ON CONFLICT (cinema_id, url) DO NOTHING"
                    ),
                    params![
                        webhook.webhook_id,
                        webhook.cinema_id,
                        webhook.url,
                        webhook.secret,
                        webhook.created_by,
                        webhook.created_at
                    ],
                )?;
                tx.commit()?;
                Ok(if inserted == 1 {
                    WebhookAdded::Added
                } else {
                    WebhookAdded::Duplicate
                })
            })
            .await
    }

    async fn webhooks_of(&self, cinema: Uuid) -> Result<Vec<Webhook>, StoreError> {
        self.pool
            .read(move |conn| {
                let mut statement = conn.prepare_cached(&format!(
                    "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE cinema_id = ?1 ORDER BY created_at, id"
                ))?;
                let rows = statement.query_map([cinema], webhook_from_row)?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn webhook(&self, id: Uuid) -> Result<Option<Webhook>, StoreError> {
        self.pool
            .read(move |conn| {
                Ok(conn
                    .query_row(
                        &format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = ?1"),
                        [id],
                        webhook_from_row,
                    )
                    .optional()?)
            })
            .await
    }

    async fn delete_webhook(&self, id: Uuid) -> Result<bool, StoreError> {
        self.pool
            .write(move |conn| Ok(conn.execute("DELETE FROM webhooks WHERE id = ?1", [id])? == 1))
            .await
    }

    async fn record_delivery(&self, attempt: &Attempt) -> Result<(), StoreError> {
        let attempt = attempt.clone();
        self.pool
            .write(move |conn| {
                // INSERT … SELECT: nothing is logged for a deleted webhook.
                conn.execute(
                    "INSERT INTO webhook_deliveries (webhook_id, event_id, event_kind, attempt, \
                     max_attempts, status, error, duration_ms, outcome, at) \
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10 \
                     WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = ?1) \
                     ON CONFLICT DO NOTHING",
                    params![
                        attempt.webhook_id,
                        attempt.event_id,
                        attempt.event_kind,
                        attempt.attempt,
                        attempt.max_attempts,
                        attempt.status,
                        attempt.error,
                        i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX),
                        attempt.outcome.as_str(),
                        attempt.at
                    ],
                )?;
                Ok(())
            })
            .await
    }

    async fn deliveries(
        &self,
        webhook: Uuid,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.pool
            .read(move |conn| {
                let mut statement = conn.prepare_cached(
                    "SELECT event_id, event_kind, attempt, max_attempts, status, error, duration_ms, \
                     outcome, at FROM webhook_deliveries WHERE webhook_id = ?1 \
                     ORDER BY seq DESC LIMIT ?2",
                )?;
                let rows = statement.query_map(params![webhook, limit], |row| {
                    Ok(DeliveryRecord {
                        event_id: row.get(0)?,
                        event_kind: row.get(1)?,
                        attempt: row.get(2)?,
                        max_attempts: row.get(3)?,
                        status: row.get(4)?,
                        error: row.get(5)?,
                        duration_ms: row.get::<_, i64>(6)?.max(0) as u64,
                        outcome: row.get(7)?,
                        at: row.get(8)?,
                    })
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
    }
}
