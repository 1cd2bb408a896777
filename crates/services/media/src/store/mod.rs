//! The media service's storage: one table of tasks plus the outbox. Every
//! state change is one conditional `UPDATE` (`… WHERE status IN (…)`), so
//! two workers, or a worker and a `DELETE`, can never both win: the
//! database decides, and the loser sees `false` / `None`.

mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;
use zocalo_bus::outbox::{Message, Source};
use zocalo_store::{DatabaseSettings, Engine, StoreError};

use crate::domain::{NewTask, Task};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// What `delete_task` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Deleted {
    Removed,
    /// A worker holds the task; it cannot be removed now.
    Processing,
    NotFound,
}

#[async_trait]
pub trait TasksStore: Send + Sync + 'static {
    /// Insert the task (`uploaded`) and `messages` (its job) atomically.
    async fn create_task(&self, task: NewTask, messages: Vec<Message>) -> Result<Task, StoreError>;
    async fn task(&self, id: Uuid) -> Result<Option<Task>, StoreError>;
    /// An owner's tasks by creation time (ids are time-ordered).
    async fn tasks_of(
        &self,
        owner: Uuid,
        limit: u32,
        newest_first: bool,
    ) -> Result<Vec<Task>, StoreError>;
    /// `uploaded | processing → processing`, one more attempt. `processing`
    /// is accepted because a redelivered job finds the task as the worker
    /// that died left it. `None`: the task is gone or settled.
    async fn start_processing(&self, id: Uuid) -> Result<Option<Task>, StoreError>;
    /// Record progress while processing; never moves it backwards.
    async fn set_progress(&self, id: Uuid, percent: u8) -> Result<(), StoreError>;
    /// `processing → processed`.
    async fn mark_processed(&self, id: Uuid, processed_size: u64) -> Result<bool, StoreError>;
    /// `uploaded | processing → failed` with the reason.
    async fn mark_failed(&self, id: Uuid, reason: &str) -> Result<bool, StoreError>;
    /// `processing → uploaded` after an attempt that will be retried.
    async fn release(&self, id: Uuid, error: &str) -> Result<bool, StoreError>;
    /// Remove the owner's task unless a worker holds it.
    async fn delete_task(&self, owner: Uuid, id: Uuid) -> Result<Deleted, StoreError>;
    /// Which of `ids` have a task (for garbage collection of objects).
    async fn existing(&self, ids: Vec<Uuid>) -> Result<Vec<Uuid>, StoreError>;

    /// Where the outbox relay reads.
    fn outbox(&self) -> Source;
    async fn ping(&self) -> Result<(), StoreError>;
}

pub async fn open(settings: &DatabaseSettings) -> Result<Arc<dyn TasksStore>, StoreError> {
    Ok(match Engine::from_url(&settings.url)? {
        Engine::Sqlite(path) => Arc::new(SqliteStore::open(&path, settings.max_connections)?),
        Engine::Postgres(_) => Arc::new(PostgresStore::connect(settings).await?),
    })
}

/// Columns of a task, in the order both adapters read them.
pub(crate) const TASK_COLUMNS: &str = "id, owner_id, status, progress, file_name, content_type, \
     original_size, processed_size, failure_reason, last_error, attempts, version, created_at, updated_at";

/// Errors stored on a task are cut to this many characters.
pub(crate) const MAX_REASON: usize = 500;

pub(crate) fn clip(reason: &str) -> String {
    reason.chars().take(MAX_REASON).collect()
}
