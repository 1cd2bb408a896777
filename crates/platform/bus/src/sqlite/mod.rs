//! The embedded bus: jobs and events in one SQLite file (WAL), so `zocalo
//! up` needs no broker and every service in it shares one queue. Several
//! processes may open the same file (`zocalo worker` beside `zocalo up`):
//! every state change is a single statement or an IMMEDIATE transaction,
//! and the busy timeout covers the hand-over of the write lock.
//!
//! Waiting is polling (the only signal that crosses processes) plus an
//! in-process [`Notify`] per queue and topic, so work enqueued in the same
//! process is picked up at once.

mod events;
mod jobs;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::Notify;

use crate::{Bus, BusError, BusOptions};

/// Both traits on one SQLite file; cheap to clone.
#[derive(Clone)]
pub struct SqliteBus {
    db: Arc<Db>,
    /// Identifies the file in the process-wide wake-up registry, so two
    /// `SqliteBus` values on one file (two services in `zocalo up`) wake
    /// each other.
    key: Arc<str>,
    ack_wait: Duration,
}

impl SqliteBus {
    /// Open (creating if needed) the bus database at `path`. Blocking: call
    /// it from `spawn_blocking` inside a runtime ([`crate::connect`] does).
    pub fn open(path: &Path, options: BusOptions) -> Result<Self, BusError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| BusError::Other(format!("cannot create {}: {e}", parent.display())))?;
        }
        let mut writer = open_connection(path)?;
        create_schema(&mut writer)?;
        let reader = open_connection(path)?;
        let key = std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string();
        Ok(Self {
            db: Arc::new(Db {
                writer: Mutex::new(writer),
                reader: Mutex::new(reader),
            }),
            key: key.into(),
            ack_wait: options.ack_wait,
        })
    }

    pub fn bus(self) -> Bus {
        let this = Arc::new(self);
        Bus {
            jobs: this.clone(),
            events: this,
        }
    }

    fn wakeup(&self, kind: &str, name: &str) -> Arc<Notify> {
        static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<Notify>>>> = OnceLock::new();
        let registry = REGISTRY.get_or_init(Default::default);
        let mut map = registry.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(format!("{}\n{kind}\n{name}", self.key))
            .or_default()
            .clone()
    }
}

/// A writer and a reader connection; rusqlite is synchronous, so each call
/// runs on tokio's blocking pool.
struct Db {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

impl Db {
    async fn write<T, F>(self: &Arc<Self>, f: F) -> Result<T, BusError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, BusError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = db.writer.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await?
    }

    async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, BusError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, BusError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = db.reader.lock().unwrap_or_else(|p| p.into_inner());
            f(&conn)
        })
        .await?
    }
}

fn open_connection(path: &Path) -> Result<Connection, BusError> {
    let conn = Connection::open(path)?;
    // WAL: readers beside the writer; NORMAL sync survives process crashes;
    // the busy timeout lets processes sharing the file take turns writing.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA busy_timeout = 5000;",
    )?;
    Ok(conn)
}

/// Idempotent, so processes opening the file at the same time all succeed.
fn create_schema(conn: &mut Connection) -> Result<(), BusError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)?;
    // Files created before messages carried trace context lack the column.
    for table in ["jobs", "events"] {
        add_column_if_missing(&tx, table, "traceparent", "TEXT")?;
    }
    tx.commit()?;
    Ok(())
}

fn add_column_if_missing(
    conn: &Connection,
    table: &str,
    column: &str,
    definition: &str,
) -> Result<(), BusError> {
    let present: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
        [table, column],
        |r| r.get(0),
    )?;
    if !present {
        conn.execute_batch(&format!(
            "ALTER TABLE {table} ADD COLUMN {column} {definition}"
        ))?;
    }
    Ok(())
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id           TEXT PRIMARY KEY,
    queue        TEXT NOT NULL,
    payload      TEXT NOT NULL,
    attempt      INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    enqueued_at  TEXT NOT NULL,
    visible_at   INTEGER NOT NULL,
    last_error   TEXT,
    traceparent  TEXT
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (queue, visible_at);
CREATE TABLE IF NOT EXISTS dead_jobs (
    id           TEXT PRIMARY KEY,
    queue        TEXT NOT NULL,
    payload      TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    enqueued_at  TEXT NOT NULL,
    reason       TEXT NOT NULL,
    failed_at    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_jobs_queue ON dead_jobs (queue, failed_at);
CREATE TABLE IF NOT EXISTS events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    topic        TEXT NOT NULL,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    occurred_at  TEXT NOT NULL,
    published_at INTEGER NOT NULL,
    traceparent  TEXT
);
CREATE INDEX IF NOT EXISTS events_topic ON events (topic, seq);
CREATE TABLE IF NOT EXISTS event_cursors (
    topic    TEXT NOT NULL,
    grp      TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (topic, grp)
);
CREATE TABLE IF NOT EXISTS event_deliveries (
    topic      TEXT NOT NULL,
    grp        TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    event_id   TEXT NOT NULL,
    visible_at INTEGER NOT NULL,
    deliveries INTEGER NOT NULL,
    PRIMARY KEY (topic, grp, seq)
);
";

/// Ids are stored as text so the file stays readable with the sqlite3 shell.
fn parse_uuid(text: &str) -> Result<uuid::Uuid, BusError> {
    uuid::Uuid::parse_str(text)
        .map_err(|e| BusError::Serialization(format!("bad id `{text}`: {e}")))
}
