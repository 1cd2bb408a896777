//! The transactional outbox: a service writes the events and jobs caused by
//! a state change into its own `outbox` table in the same transaction as the
//! change, and a relay hands committed rows to the bus. A crash after commit
//! loses nothing (the row waits for the relay) and a rolled-back change
//! sends nothing. Delivery is at-least-once: a crash between publishing and
//! marking the row re-sends it with the same id, and consumers drop the
//! duplicate with [`crate::inbox`].
//!
//! A message remembers the trace it was created in (its `traceparent` is
//! part of the stored JSON, so the tables need no column of their own): the
//! relay hands it on in that trace, not in its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::params;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::{Bus, BusError, Event, JobOptions, millis, now_ms};

/// An event or a job to hand to the bus once the transaction that wrote it
/// commits.
#[derive(Debug, Clone)]
pub enum Message {
    Event(Event),
    Job {
        id: Uuid,
        queue: String,
        payload: Value,
        options: JobOptions,
        /// The trace the job was created in.
        traceparent: Option<String>,
    },
}

impl Message {
    /// A job message with a fresh id.
    pub fn job(queue: impl Into<String>, payload: Value, options: JobOptions) -> Self {
        Message::Job {
            id: Uuid::now_v7(),
            queue: queue.into(),
            payload,
            options,
            traceparent: zocalo_telemetry::trace::current_traceparent(),
        }
    }

    pub fn id(&self) -> Uuid {
        match self {
            Message::Event(event) => event.id,
            Message::Job { id, .. } => *id,
        }
    }

    /// The stored form. A job's delay becomes an absolute time, so the time
    /// a row waits for the relay counts towards it. Built by hand because
    /// every field is already JSON, which makes encoding infallible.
    fn encode(&self) -> Value {
        let mut object = Map::new();
        match self {
            Message::Event(event) => {
                object.insert("type".into(), "event".into());
                object.insert("id".into(), event.id.to_string().into());
                object.insert("topic".into(), event.topic.clone().into());
                object.insert("kind".into(), event.kind.clone().into());
                object.insert("payload".into(), event.payload.clone());
                object.insert("occurred_at".into(), event.occurred_at.to_rfc3339().into());
                insert_traceparent(&mut object, event.traceparent.as_deref());
            }
            Message::Job {
                id,
                queue,
                payload,
                options,
                traceparent,
            } => {
                let not_before = chrono::Duration::from_std(options.delay)
                    .ok()
                    .and_then(|delay| Utc::now().checked_add_signed(delay))
                    .unwrap_or_else(Utc::now);
                object.insert("type".into(), "job".into());
                object.insert("id".into(), id.to_string().into());
                object.insert("queue".into(), queue.clone().into());
                object.insert("payload".into(), payload.clone());
                object.insert("max_attempts".into(), options.max_attempts.into());
                object.insert("not_before".into(), not_before.to_rfc3339().into());
                insert_traceparent(&mut object, traceparent.as_deref());
            }
        }
        Value::Object(object)
    }
}

fn insert_traceparent(object: &mut Map<String, Value>, traceparent: Option<&str>) {
    if let Some(traceparent) = traceparent {
        object.insert("traceparent".into(), traceparent.into());
    }
}

/// What the relay reads back.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Stored {
    Event {
        id: Uuid,
        topic: String,
        kind: String,
        payload: Value,
        occurred_at: DateTime<Utc>,
        #[serde(default)]
        traceparent: Option<String>,
    },
    Job {
        id: Uuid,
        queue: String,
        payload: Value,
        max_attempts: u32,
        not_before: DateTime<Utc>,
        #[serde(default)]
        traceparent: Option<String>,
    },
}

/// `CREATE TABLE outbox` for a service's SQLite migration. Times are unix
/// milliseconds; `claimed_until` keeps concurrent relays off the same rows.
pub const SQLITE_TABLE: &str = "CREATE TABLE IF NOT EXISTS outbox (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    message       TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    claimed_until INTEGER,
    sent_at       INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;
";

/// `CREATE TABLE outbox` for a service's PostgreSQL migration.
pub const POSTGRES_TABLE: &str = "CREATE TABLE IF NOT EXISTS outbox (
    seq        BIGSERIAL PRIMARY KEY,
    id         UUID NOT NULL UNIQUE,
    message    JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at    TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;
";

/// Add `message` to the outbox inside the caller's transaction.
pub fn insert_sqlite(tx: &rusqlite::Transaction<'_>, message: &Message) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO outbox (id, message, created_at) VALUES (?1, ?2, ?3)",
        params![
            message.id().to_string(),
            message.encode().to_string(),
            now_ms()
        ],
    )?;
    Ok(())
}

/// Add `message` to the outbox inside the caller's transaction.
pub async fn insert_postgres(
    tx: &tokio_postgres::Transaction<'_>,
    message: &Message,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO outbox (id, message) VALUES ($1, $2)",
        &[&message.id(), &message.encode()],
    )
    .await?;
    Ok(())
}

/// The database whose outbox a relay drains.
#[derive(Clone)]
pub enum Source {
    Sqlite(zocalo_store::SqlitePool),
    Postgres(zocalo_store::PgPools),
}

/// Rows handed to the bus per transaction.
const BATCH: usize = 100;
/// How long a SQLite relay owns the rows it claimed; a relay that dies
/// mid-batch delays them this long.
const CLAIM: Duration = Duration::from_secs(60);
/// Sent rows are kept this long (for inspection), then deleted.
const KEEP_SENT: Duration = Duration::from_secs(24 * 3600);
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// The last pass on shutdown gives up after this long.
const FINAL_PASS: Duration = Duration::from_secs(5);

/// Move committed, unsent outbox rows to the bus (oldest first, in
/// batches) and mark them sent, polling every `interval` until `shutdown`;
/// a last pass runs on shutdown.
pub async fn run_relay(source: Source, bus: Bus, interval: Duration, shutdown: CancellationToken) {
    run_relay_with_wake(source, bus, interval, Arc::new(Notify::new()), shutdown).await
}

/// [`run_relay`] that also runs a pass as soon as `wake` is notified, so a
/// service can call `wake.notify_one()` after committing instead of waiting
/// for the next poll.
pub async fn run_relay_with_wake(
    source: Source,
    bus: Bus,
    interval: Duration,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut last_prune: Option<Instant> = None;
    loop {
        if let Err(error) = relay_once(&source, &bus).await {
            metrics::counter!("outbox_relay_errors_total").increment(1);
            tracing::warn!(%error, "outbox relay pass failed; rows stay queued");
        }
        if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(Instant::now());
            if let Err(error) = prune(&source).await {
                tracing::warn!(%error, "cannot prune sent outbox rows");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
    match tokio::time::timeout(FINAL_PASS, relay_once(&source, &bus)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!(%error, "last outbox relay pass failed"),
        Err(_) => tracing::warn!("last outbox relay pass timed out"),
    }
}

/// One pass: relay batches until the outbox has no unsent rows left (that
/// another relay does not hold); returns how many rows were relayed.
pub async fn relay_once(source: &Source, bus: &Bus) -> Result<usize, BusError> {
    let mut total = 0;
    loop {
        let (relayed, claimed) = match source {
            Source::Sqlite(pool) => relay_sqlite_batch(pool, bus).await?,
            Source::Postgres(pools) => relay_postgres_batch(pools, bus).await?,
        };
        total += relayed;
        metrics::counter!("outbox_relayed_total").increment(relayed as u64);
        if claimed < BATCH {
            return Ok(total);
        }
    }
}

/// Claim a batch in one statement (so a second relay skips it), publish,
/// then mark what was published and release the rest. Returns (relayed,
/// claimed).
async fn relay_sqlite_batch(
    pool: &zocalo_store::SqlitePool,
    bus: &Bus,
) -> Result<(usize, usize), BusError> {
    let claim_ms = millis(CLAIM);
    let mut rows: Vec<(i64, String)> = pool
        .write(move |conn| {
            let now = now_ms();
            let mut statement = conn.prepare(
                "UPDATE outbox SET claimed_until = ?2
                 WHERE seq IN (SELECT seq FROM outbox WHERE sent_at IS NULL
                               AND (claimed_until IS NULL OR claimed_until < ?1)
                               ORDER BY seq LIMIT ?3)
                 RETURNING seq, message",
            )?;
            let rows = statement
                .query_map(
                    params![now, now.saturating_add(claim_ms), BATCH as i64],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await?;
    rows.sort_by_key(|(seq, _)| *seq);
    let claimed = rows.len();
    let mut sent = Vec::with_capacity(claimed);
    let mut unsent = Vec::new();
    let mut failure = None;
    for (seq, text) in rows {
        if failure.is_some() {
            unsent.push(seq);
            continue;
        }
        let stored = serde_json::from_str::<Value>(&text).map_err(BusError::from);
        match publish_row(bus, seq, stored).await {
            Ok(true) => sent.push(seq),
            Ok(false) => unsent.push(seq),
            Err(error) => {
                unsent.push(seq);
                failure = Some(error);
            }
        }
    }
    let relayed = sent.len();
    pool.write(move |conn| {
        let tx = conn.transaction()?;
        let now = now_ms();
        for seq in &sent {
            tx.execute(
                "UPDATE outbox SET sent_at = ?1 WHERE seq = ?2",
                params![now, seq],
            )?;
        }
        // Our rows left over after a failure go back now rather than when
        // the claim expires.
        for seq in &unsent {
            tx.execute(
                "UPDATE outbox SET claimed_until = NULL WHERE seq = ?1",
                [seq],
            )?;
        }
        tx.commit()?;
        Ok(())
    })
    .await?;
    failure.map_or(Ok((relayed, claimed)), Err)
}

/// Lock a batch with `FOR UPDATE SKIP LOCKED` (a second relay takes the
/// next batch instead of the same rows), publish, mark, commit.
async fn relay_postgres_batch(
    pools: &zocalo_store::PgPools,
    bus: &Bus,
) -> Result<(usize, usize), BusError> {
    let mut client = pools.writer().await?;
    let tx = client.transaction().await?;
    let rows = tx
        .query(
            "SELECT seq, message FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT $1
             FOR UPDATE SKIP LOCKED",
            &[&(BATCH as i64)],
        )
        .await?;
    let claimed = rows.len();
    let mut sent: Vec<i64> = Vec::with_capacity(claimed);
    let mut failure = None;
    for row in rows {
        let seq: i64 = row.try_get(0)?;
        let stored = row.try_get::<_, Value>(1).map_err(BusError::from);
        match publish_row(bus, seq, stored).await {
            Ok(true) => sent.push(seq),
            Ok(false) => {}
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    tx.execute(
        "UPDATE outbox SET sent_at = now() WHERE seq = ANY($1)",
        &[&sent],
    )
    .await?;
    tx.commit().await?;
    failure.map_or(Ok((sent.len(), claimed)), Err)
}

/// Publish one row; false when the row cannot be decoded (logged and left
/// unsent for someone to look at: it cannot have come from `insert_*`).
async fn publish_row(
    bus: &Bus,
    seq: i64,
    stored: Result<Value, BusError>,
) -> Result<bool, BusError> {
    let stored = stored.and_then(|value| Ok(serde_json::from_value::<Stored>(value)?));
    let stored = match stored {
        Ok(stored) => stored,
        Err(error) => {
            metrics::counter!("outbox_undecodable_total").increment(1);
            tracing::error!(seq, %error, "undecodable outbox row skipped");
            return Ok(false);
        }
    };
    match stored {
        Stored::Event {
            id,
            topic,
            kind,
            payload,
            occurred_at,
            traceparent,
        } => {
            let event = Event {
                id,
                topic,
                kind,
                payload,
                occurred_at,
                traceparent,
            };
            bus.events.publish(&event).await?;
        }
        Stored::Job {
            id,
            queue,
            payload,
            max_attempts,
            not_before,
            traceparent,
        } => {
            let delay = (not_before - Utc::now()).to_std().unwrap_or_default();
            let options = JobOptions {
                delay,
                max_attempts,
            };
            // The queue takes the trace from the current span: enqueue in a
            // span of the job's own trace.
            let span = tracing::info_span!("outbox_relay", job = %id, %queue);
            if let Some(traceparent) = &traceparent {
                zocalo_telemetry::trace::set_parent_from_traceparent(&span, traceparent);
            }
            bus.jobs
                .enqueue_with_id(id, &queue, payload, options)
                .instrument(span)
                .await?;
        }
    }
    Ok(true)
}

/// Delete rows sent more than [`KEEP_SENT`] ago.
async fn prune(source: &Source) -> Result<(), BusError> {
    match source {
        Source::Sqlite(pool) => {
            let cutoff = now_ms().saturating_sub(millis(KEEP_SENT));
            pool.write(move |conn| {
                conn.execute("DELETE FROM outbox WHERE sent_at < ?1", [cutoff])?;
                Ok(())
            })
            .await?;
        }
        Source::Postgres(pools) => {
            let keep = chrono::Duration::from_std(KEEP_SENT).unwrap_or_default();
            let cutoff = Utc::now() - keep;
            pools
                .writer()
                .await?
                .execute("DELETE FROM outbox WHERE sent_at < $1", &[&cutoff])
                .await?;
        }
    }
    Ok(())
}
