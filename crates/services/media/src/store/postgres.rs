use async_trait::async_trait;
use chrono::Utc;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;
use zocalo_bus::outbox::{self, Message, Source};
use zocalo_store::{DatabaseSettings, PgPools, StoreError};

use super::{Deleted, TASK_COLUMNS, TasksStore, clip};
use crate::domain::{NewTask, Task, status};

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

    /// Run one conditional `UPDATE` on the primary and say whether it
    /// changed a row.
    async fn update(&self, sql: &str, values: &[&(dyn ToSql + Sync)]) -> Result<bool, StoreError> {
        let client = self.pools.writer().await?;
        Ok(client.execute(sql, values).await? > 0)
    }
}

fn task_from_row(row: &Row) -> Task {
    Task {
        id: row.get(0),
        owner_id: row.get(1),
        status: row.get(2),
        progress: row.get::<_, i32>(3).clamp(0, 100) as u8,
        file_name: row.get(4),
        content_type: row.get(5),
        original_size: row.get::<_, i64>(6) as u64,
        processed_size: row.get::<_, Option<i64>>(7).map(|size| size as u64),
        failure_reason: row.get(8),
        last_error: row.get(9),
        attempts: row.get::<_, i32>(10) as u32,
        version: row.get(11),
        created_at: row.get(12),
        updated_at: row.get(13),
    }
}

#[async_trait]
impl TasksStore for PostgresStore {
    async fn create_task(&self, task: NewTask, messages: Vec<Message>) -> Result<Task, StoreError> {
        let mut client = self.pools.writer().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO tasks (id, owner_id, file_name, content_type, original_size, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {TASK_COLUMNS}"
                ),
                &[&task.id, &task.owner_id, &task.file_name, &task.content_type, &(task.original_size as i64), &task.created_at],
            )
            .await?;
        for message in &messages {
            outbox::insert_postgres(&tx, message).await?;
        }
        tx.commit().await?;
        Ok(task_from_row(&row))
    }

    async fn task(&self, id: Uuid) -> Result<Option<Task>, StoreError> {
        // From the primary: a worker and a client polling right after an
        // upload must see the latest state, not a replica's lag.
        let client = self.pools.writer().await?;
        let row = client
            .query_opt(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"),
                &[&id],
            )
            .await?;
        Ok(row.as_ref().map(task_from_row))
    }

    async fn tasks_of(
        &self,
        owner: Uuid,
        limit: u32,
        newest_first: bool,
    ) -> Result<Vec<Task>, StoreError> {
        let order = if newest_first { "DESC" } else { "ASC" };
        let client = self.pools.reader().await?;
        let rows = client
            .query(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE owner_id = $1 ORDER BY id {order} LIMIT $2"),
                &[&owner, &i64::from(limit)],
            )
            .await?;
        Ok(rows.iter().map(task_from_row).collect())
    }

    async fn start_processing(&self, id: Uuid) -> Result<Option<Task>, StoreError> {
        let client = self.pools.writer().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE tasks SET status = 'processing', progress = 0, attempts = attempts + 1, \
                     version = version + 1, updated_at = $2 WHERE id = $1 AND status IN ('uploaded', 'processing') \
                     RETURNING {TASK_COLUMNS}"
                ),
                &[&id, &Utc::now()],
            )
            .await?;
        Ok(row.as_ref().map(task_from_row))
    }

    async fn set_progress(&self, id: Uuid, percent: u8) -> Result<(), StoreError> {
        self.update(
            "UPDATE tasks SET progress = $2, version = version + 1, updated_at = $3 \
             WHERE id = $1 AND status = 'processing' AND progress < $2",
            &[&id, &i32::from(percent.min(100)), &Utc::now()],
        )
        .await
        .map(|_| ())
    }

    async fn mark_processed(&self, id: Uuid, processed_size: u64) -> Result<bool, StoreError> {
        self.update(
            "UPDATE tasks SET status = 'processed', progress = 100, processed_size = $2, last_error = NULL, \
             version = version + 1, updated_at = $3 WHERE id = $1 AND status = 'processing'",
            &[&id, &(processed_size as i64), &Utc::now()],
        )
        .await
    }

    async fn mark_failed(&self, id: Uuid, reason: &str) -> Result<bool, StoreError> {
        self.update(
            "UPDATE tasks SET status = 'failed', failure_reason = $2, version = version + 1, updated_at = $3 \
             WHERE id = $1 AND status IN ('uploaded', 'processing')",
            &[&id, &clip(reason), &Utc::now()],
        )
        .await
    }

    async fn release(&self, id: Uuid, error: &str) -> Result<bool, StoreError> {
        self.update(
            "UPDATE tasks SET status = 'uploaded', progress = 0, last_error = $2, version = version + 1, \
             updated_at = $3 WHERE id = $1 AND status = 'processing'",
            &[&id, &clip(error), &Utc::now()],
        )
        .await
    }

    async fn delete_task(&self, owner: Uuid, id: Uuid) -> Result<Deleted, StoreError> {
        let client = self.pools.writer().await?;
        let removed = client
            .execute(
                "DELETE FROM tasks WHERE id = $1 AND owner_id = $2 AND status <> $3",
                &[&id, &owner, &status::PROCESSING],
            )
            .await?;
        if removed > 0 {
            return Ok(Deleted::Removed);
        }
        let held = client
            .query_opt(
                "SELECT 1 FROM tasks WHERE id = $1 AND owner_id = $2",
                &[&id, &owner],
            )
            .await?;
        Ok(if held.is_some() {
            Deleted::Processing
        } else {
            Deleted::NotFound
        })
    }

    async fn existing(&self, ids: Vec<Uuid>) -> Result<Vec<Uuid>, StoreError> {
        let client = self.pools.writer().await?;
        let rows = client
            .query("SELECT id FROM tasks WHERE id = ANY($1)", &[&ids])
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    fn outbox(&self) -> Source {
        Source::Postgres(self.pools.clone())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.pools.ping().await
    }
}
