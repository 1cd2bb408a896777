//! The embedded store: a SQLite file in WAL mode with one writer connection
//! and a few readers. rusqlite is synchronous, so every call runs on tokio's
//! blocking pool; a semaphore bounds concurrent readers to the connections we
//! have, and the writer mutex serialises writes the way SQLite would anyway.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::StoreError;

#[derive(Clone)]
pub struct SqlitePool {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    reader_permits: Arc<Semaphore>,
}

impl SqlitePool {
    /// Open (creating if needed) the database at `path` and apply `migrations`.
    pub fn open(
        path: &Path,
        readers: usize,
        migrations: refinery::Runner,
    ) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Config(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let mut writer = connect(path)?;
        // Writers take the lock when their transaction begins, waiting on
        // busy_timeout; a deferred transaction that read first and then
        // wants to write fails at once with SQLITE_BUSY when another
        // connection (another instance on the same file) wrote in between.
        writer.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        migrations
            .run(&mut writer)
            .map_err(|e| StoreError::Other(format!("migrations failed: {e}")))?;
        let readers = readers.max(1);
        let connections = (0..readers)
            .map(|_| connect(path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                readers: Mutex::new(connections),
                reader_permits: Arc::new(Semaphore::new(readers)),
            }),
        })
    }

    /// Run `f` on the writer connection (open a transaction inside if needed).
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await?
    }

    /// Run `f` on a reader connection.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        // The permit moves into the blocking task: if the caller is dropped
        // (a client went away), the task still runs to the end and only then
        // frees its reader, so a permit always matches a free connection.
        let permit = self
            .inner
            .reader_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("pool closed".into()))?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = inner
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop()
                .expect("a permit guarantees a free reader");
            let result = f(&conn);
            inner
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
            result
        })
        .await?
    }

    /// A cheap query, for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    // WAL lets readers run beside the writer; NORMAL sync is durable across
    // process crashes (the case we test) and fast; busy_timeout covers the
    // rare lock hand-over between processes sharing a file.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 5000;",
    )?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_migrations() -> refinery::Runner {
        refinery::Runner::new(&[])
    }

    /// Callers that give up mid-read (clients that disconnect) must not
    /// leave the pool with more permits than free connections.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_reads_do_not_break_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let pool = SqlitePool::open(&dir.path().join("t.db"), 2, no_migrations()).unwrap();
        // Both readers are busy for 200 ms with reads nobody waits for.
        for _ in 0..2 {
            let slow = pool.read(|conn| {
                std::thread::sleep(std::time::Duration::from_millis(200));
                Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?)
            });
            let _ = tokio::time::timeout(std::time::Duration::from_millis(5), slow).await;
        }
        // New reads wait for a connection instead of finding none.
        for _ in 0..4 {
            pool.ping().await.unwrap();
        }
    }
}
