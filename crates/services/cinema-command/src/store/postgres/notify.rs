//! [`NotifyStore`] on PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;
use zocalo_contracts::cinema::TicketsDocumentReady;
use zocalo_notify::webhook::Attempt;
use zocalo_store::StoreError;

use super::{PostgresStore, append};
use crate::store::notify::{
    DeliveryRecord, EmailStatus, NotifyStore, TicketDocument, Webhook, WebhookAdded,
    document_ready_event,
};

const WEBHOOK_COLUMNS: &str = "id, cinema_id, url, secret, created_by, created_at";

fn webhook_from_row(row: &Row) -> Webhook {
    Webhook {
        webhook_id: row.get(0),
        cinema_id: row.get(1),
        url: row.get(2),
        secret: row.get(3),
        created_by: row.get(4),
        created_at: row.get(5),
    }
}

#[async_trait]
impl NotifyStore for PostgresStore {
    async fn remember_contact(&self, purchase: Uuid, email: &str) -> Result<(), StoreError> {
        let client = self.pools.writer().await?;
        client
            .execute(
                "INSERT INTO purchase_contacts (purchase_id, email) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
                &[&purchase, &email],
            )
            .await?;
        Ok(())
    }

    async fn contact(&self, purchase: Uuid) -> Result<Option<String>, StoreError> {
        let client = self.pools.writer().await?;
        let row = client
            .query_opt(
                "SELECT email FROM purchase_contacts WHERE purchase_id = $1",
                &[&purchase],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn ticket_document(&self, purchase: Uuid) -> Result<Option<TicketDocument>, StoreError> {
        let client = self.pools.writer().await?;
        let row = client
            .query_opt(
                "SELECT object_key, email_status FROM ticket_documents WHERE purchase_id = $1",
                &[&purchase],
            )
            .await?;
        Ok(row.map(|r| TicketDocument {
            purchase_id: purchase,
            object_key: r.get(0),
            email_status: EmailStatus::parse(r.get(1)),
        }))
    }

    async fn document_stored(
        &self,
        ready: &TicketsDocumentReady,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut client = self.pools.writer().await?;
        let tx = client.transaction().await?;
        let inserted = tx
            .execute(
                "INSERT INTO ticket_documents (purchase_id, object_key, stored_at) \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&ready.purchase_id, &ready.object_key, &now],
            )
            .await?;
        if inserted == 0 {
            return Ok(false);
        }
        append(&tx, vec![document_ready_event(ready)]).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn set_email_status(
        &self,
        purchase: Uuid,
        status: EmailStatus,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let client = self.pools.writer().await?;
        client
            .execute(
                "UPDATE ticket_documents SET email_status = $2, emailed_at = $3 \
                 WHERE purchase_id = $1",
                &[&purchase, &status.as_str(), &now],
            )
            .await?;
        Ok(())
    }

    async fn purchase_of_ticket(&self, ticket: Uuid) -> Result<Option<Uuid>, StoreError> {
        let client = self.pools.writer().await?;
        let row = client
            .query_opt("SELECT purchase_id FROM tickets WHERE id = $1", &[&ticket])
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn add_webhook(&self, webhook: &Webhook, limit: u32) -> Result<WebhookAdded, StoreError> {
        let mut client = self.pools.writer().await?;
        let tx = client.transaction().await?;
        // Locking the cinema's row serialises additions to one cinema, so
        // two concurrent ones cannot both pass the count.
        let cinema = tx
            .query_opt(
                "SELECT 1 FROM cinemas WHERE id = $1 FOR UPDATE",
                &[&webhook.cinema_id],
            )
            .await?;
        if cinema.is_none() {
            return Ok(WebhookAdded::NoCinema);
        }
        let count: i64 = tx
            .query_one(
                "SELECT count(*) FROM webhooks WHERE cinema_id = $1",
                &[&webhook.cinema_id],
            )
            .await?
            .get(0);
        if count >= i64::from(limit) {
            return Ok(WebhookAdded::TooMany);
        }
        let inserted = tx
            .execute(
                &format!(
                    "INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (cinema_id, url) DO NOTHING"
                ),
                &[
                    &webhook.webhook_id,
                    &webhook.cinema_id,
                    &webhook.url,
                    &webhook.secret,
                    &webhook.created_by,
                    &webhook.created_at,
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(if inserted == 1 {
            WebhookAdded::Added
        } else {
            WebhookAdded::Duplicate
        })
    }

    async fn webhooks_of(&self, cinema: Uuid) -> Result<Vec<Webhook>, StoreError> {
        let client = self.pools.writer().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE cinema_id = $1 ORDER BY created_at, id"
                ),
                &[&cinema],
            )
            .await?;
        Ok(rows.iter().map(webhook_from_row).collect())
    }

    async fn webhook(&self, id: Uuid) -> Result<Option<Webhook>, StoreError> {
        let client = self.pools.writer().await?;
        let row = client
            .query_opt(
                &format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1"),
                &[&id],
            )
            .await?;
        Ok(row.as_ref().map(webhook_from_row))
    }

    async fn delete_webhook(&self, id: Uuid) -> Result<bool, StoreError> {
        let client = self.pools.writer().await?;
        Ok(client
            .execute("DELETE FROM webhooks WHERE id = $1", &[&id])
            .await?
            == 1)
    }

    async fn record_delivery(&self, attempt: &Attempt) -> Result<(), StoreError> {
        let client = self.pools.writer().await?;
        let status = attempt.status.map(i32::from);
        let duration = i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX);
        // INSERT … SELECT: nothing is logged for a deleted webhook; one
        // deleted between the check and the insert fails the foreign key,
        // which is the same answer.
        let result = client
            .execute(
                "INSERT INTO webhook_deliveries (webhook_id, event_id, event_kind, attempt, \
                 max_attempts, status, error, duration_ms, outcome, at) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 \
                 WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = $1) \
                 ON CONFLICT DO NOTHING",
                &[
                    &attempt.webhook_id,
                    &attempt.event_id,
                    &attempt.event_kind,
                    &(attempt.attempt as i32),
                    &(attempt.max_attempts as i32),
                    &status,
                    &attempt.error,
                    &duration,
                    &attempt.outcome.as_str(),
                    &attempt.at,
                ],
            )
            .await;
        match result.map_err(StoreError::from) {
            Ok(_) => Ok(()),
            Err(error) if error.is_constraint("webhook_deliveries_webhook_id_fkey") => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn deliveries(
        &self,
        webhook: Uuid,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let client = self.pools.writer().await?;
        let rows = client
            .query(
                "SELECT event_id, event_kind, attempt, max_attempts, status, error, duration_ms, \
                 outcome, at FROM webhook_deliveries WHERE webhook_id = $1 \
                 ORDER BY seq DESC LIMIT $2",
                &[&webhook, &i64::from(limit)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| DeliveryRecord {
                event_id: r.get(0),
                event_kind: r.get(1),
                attempt: r.get::<_, i32>(2).max(0) as u32,
                max_attempts: r.get::<_, i32>(3).max(0) as u32,
                status: r.get::<_, Option<i32>>(4).map(|s| s.clamp(0, 999) as u16),
                error: r.get(5),
                duration_ms: r.get::<_, i64>(6).max(0) as u64,
                outcome: r.get(7),
                at: r.get(8),
            })
            .collect())
    }
}
