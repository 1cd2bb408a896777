use std::path::Path;

use async_trait::async_trait;
use chrono::Utc;
use rusqlite::{OptionalExtension, Row, params};
use uuid::Uuid;
use zocalo_bus::outbox::{self, Message, Source};
use zocalo_store::{SqlitePool, StoreError};

use super::{Deleted, TASK_COLUMNS, TasksStore, clip};
use crate::domain::{NewTask, Task, status};

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

    /// Run one conditional `UPDATE` and say whether it changed a row.
    async fn update(
        &self,
        sql: &'static str,
        values: Vec<rusqlite::types::Value>,
    ) -> Result<bool, StoreError> {
        self.pool
            .write(move |conn| Ok(conn.execute(sql, rusqlite::params_from_iter(values))? > 0))
            .await
    }
}

fn task_from_row(row: &Row<'_>) -> rusqlite::Result<Task> {
    Ok(Task {
        id: row.get(0)?,
        owner_id: row.get(1)?,
        status: row.get(2)?,
        progress: row.get(3)?,
        file_name: row.get(4)?,
        content_type: row.get(5)?,
        original_size: row.get::<_, i64>(6)? as u64,
        processed_size: row.get::<_, Option<i64>>(7)?.map(|size| size as u64),
        failure_reason: row.get(8)?,
        last_error: row.get(9)?,
        attempts: row.get(10)?,
        version: row.get(11)?,
        created_at: row.get(12)?,
        updated_at: row.get(13)?,
    })
}

fn load(conn: &rusqlite::Connection, id: Uuid) -> Result<Option<Task>, StoreError> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1");
    Ok(conn.query_row(&sql, [id], task_from_row).optional()?)
}

fn now() -> rusqlite::types::Value {
    // The form rusqlite gives a `DateTime<Utc>`, so every row reads back alike.
    rusqlite::types::Value::Text(Utc::now().format("%F %T%.f%:z").to_string())
}

fn blob(id: Uuid) -> rusqlite::types::Value {
    rusqlite::types::Value::Blob(id.as_bytes().to_vec())
}

fn text(value: &str) -> rusqlite::types::Value {
    rusqlite::types::Value::Text(value.to_owned())
}

#[async_trait]
impl TasksStore for SqliteStore {
    async fn create_task(&self, task: NewTask, messages: Vec<Message>) -> Result<Task, StoreError> {
        self.pool
            .write(move |conn| {
                let tx = conn.transaction()?;
                tx.execute(
                    "INSERT INTO tasks (id, owner_id, file_name, content_type, original_size, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                    params![task.id, task.owner_id, task.file_name, task.content_type, task.original_size as i64, task.created_at],
                )?;
                for message in &messages {
                    outbox::insert_sqlite(&tx, message)?;
                }
                let created = load(&tx, task.id)?.ok_or(StoreError::NotFound)?;
                tx.commit()?;
                Ok(created)
            })
            .await
    }

    async fn task(&self, id: Uuid) -> Result<Option<Task>, StoreError> {
        self.pool.read(move |conn| load(conn, id)).await
    }

    async fn tasks_of(
        &self,
        owner: Uuid,
        limit: u32,
        newest_first: bool,
    ) -> Result<Vec<Task>, StoreError> {
        let order = if newest_first { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE owner_id = ?1 ORDER BY id {order} LIMIT ?2"
        );
        self.pool
            .read(move |conn| {
                let mut statement = conn.prepare_cached(&sql)?;
                let tasks = statement
                    .query_map(params![owner, limit], task_from_row)?
                    .collect::<Result<_, _>>()?;
                Ok(tasks)
            })
            .await
    }

    async fn start_processing(&self, id: Uuid) -> Result<Option<Task>, StoreError> {
        self.pool
            .write(move |conn| {
                let tx = conn.transaction()?;
                let changed = tx.execute(
                    "UPDATE tasks SET status = 'processing', progress = 0, attempts = attempts + 1, \
                     version = version + 1, updated_at = ?2 WHERE id = ?1 AND status IN ('uploaded', 'processing')",
                    params![id, now()],
                )?;
                let task = if changed > 0 { load(&tx, id)? } else { None };
                tx.commit()?;
                Ok(task)
            })
            .await
    }

    async fn set_progress(&self, id: Uuid, percent: u8) -> Result<(), StoreError> {
        self.update(
            "UPDATE tasks SET progress = ?2, version = version + 1, updated_at = ?3 \
             WHERE id = ?1 AND status = 'processing' AND progress < ?2",
            vec![
                blob(id),
                rusqlite::types::Value::Integer(percent.min(100).into()),
                now(),
            ],
        )
        .await
        .map(|_| ())
    }

    async fn mark_processed(&self, id: Uuid, processed_size: u64) -> Result<bool, StoreError> {
        self.update(
            "UPDATE tasks SET status = 'processed', progress = 100, processed_size = ?2, last_error = NULL, \
             version = version + 1, updated_at = ?3 WHERE id = ?1 AND status = 'processing'",
            vec![blob(id), rusqlite::types::Value::Integer(processed_size as i64), now()],
        )
        .await
    }

    async fn mark_failed(&self, id: Uuid, reason: &str) -> Result<bool, StoreError> {
        self.update(
            "UPDATE tasks SET status = 'failed', failure_reason = ?2, version = version + 1, updated_at = ?3 \
             WHERE id = ?1 AND status IN ('uploaded', 'processing')",
            vec![blob(id), text(&clip(reason)), now()],
        )
        .await
    }

    async fn release(&self, id: Uuid, error: &str) -> Result<bool, StoreError> {
        self.update(
            "UPDATE tasks SET status = 'uploaded', progress = 0, last_error = ?2, version = version + 1, \
             updated_at = ?3 WHERE id = ?1 AND status = 'processing'",
            vec![blob(id), text(&clip(error)), now()],
        )
        .await
    }

    async fn delete_task(&self, owner: Uuid, id: Uuid) -> Result<Deleted, StoreError> {
        self.pool
            .write(move |conn| {
                let removed = conn.execute(
                    "DELETE FROM tasks WHERE id = ?1 AND owner_id = ?2 AND status <> ?3",
                    params![id, owner, status::PROCESSING],
                )?;
                if removed > 0 {
                    return Ok(Deleted::Removed);
                }
                let held: Option<String> = conn
                    .query_row(
                        "SELECT status FROM tasks WHERE id = ?1 AND owner_id = ?2",
                        params![id, owner],
                        |row| row.get(0),
                    )
                    .optional()?;
                Ok(if held.is_some() {
                    Deleted::Processing
                } else {
                    Deleted::NotFound
                })
            })
            .await
    }

    async fn existing(&self, ids: Vec<Uuid>) -> Result<Vec<Uuid>, StoreError> {
        self.pool
            .read(move |conn| {
                let mut statement = conn.prepare_cached("SELECT 1 FROM tasks WHERE id = ?1")?;
                let mut found = Vec::new();
                for id in ids {
                    if statement.exists([id])? {
                        found.push(id);
                    }
                }
                Ok(found)
            })
            .await
    }

    fn outbox(&self) -> Source {
        Source::Sqlite(self.pool.clone())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.pool.ping().await
    }
}
