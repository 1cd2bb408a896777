//! Jobs are rows; reserving one is a single UPDATE … RETURNING that bumps
//! the attempt and pushes `visible_at` past the visibility timeout, so a
//! worker that dies simply lets the row become due again.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use uuid::Uuid;

use super::{SqliteBus, parse_uuid};
use crate::{BusError, Job, JobOptions, JobQueue, millis, now_ms};

/// Jobs whose deliveries all timed out are dead-lettered by `reserve`; this
/// bounds how many one call clears before giving up for now.
const MAX_EXPIRED_PER_RESERVE: usize = 100;
const EXPIRED_REASON: &str = "not acknowledged within the visibility timeout on any attempt";

const RESERVE: &str = "
UPDATE jobs SET attempt = attempt + 1, visible_at = ?3
WHERE id = (SELECT id FROM jobs WHERE queue = ?1 AND visible_at <= ?2
            ORDER BY visible_at, rowid LIMIT 1)
RETURNING id, queue, payload, attempt, max_attempts, enqueued_at, traceparent";

/// A row before its text columns are parsed.
struct Row {
    id: String,
    queue: String,
    payload: String,
    attempt: i64,
    max_attempts: i64,
    enqueued_at: DateTime<Utc>,
    traceparent: Option<String>,
}

impl Row {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            queue: row.get(1)?,
            payload: row.get(2)?,
            attempt: row.get(3)?,
            max_attempts: row.get(4)?,
            enqueued_at: row.get(5)?,
            traceparent: row.get(6)?,
        })
    }

    fn into_job(self) -> Result<Job, BusError> {
        Ok(Job {
            id: parse_uuid(&self.id)?,
            queue: self.queue,
            payload: serde_json::from_str(&self.payload)?,
            attempt: u32::try_from(self.attempt).unwrap_or(u32::MAX),
            max_attempts: u32::try_from(self.max_attempts).unwrap_or(u32::MAX),
            enqueued_at: self.enqueued_at,
            traceparent: self.traceparent,
        })
    }
}

#[async_trait]
impl JobQueue for SqliteBus {
    async fn enqueue(
        &self,
        queue: &str,
        payload: serde_json::Value,
        options: JobOptions,
    ) -> Result<Uuid, BusError> {
        let id = Uuid::now_v7();
        self.enqueue_with_id(id, queue, payload, options).await?;
        Ok(id)
    }

    async fn enqueue_with_id(
        &self,
        id: Uuid,
        queue: &str,
        payload: serde_json::Value,
        options: JobOptions,
    ) -> Result<(), BusError> {
        let (queue_name, payload) = (queue.to_owned(), serde_json::to_string(&payload)?);
        let max_attempts = i64::from(options.max_attempts.max(1));
        let delay = millis(options.delay);
        let traceparent = zocalo_telemetry::trace::current_traceparent();
        self.db
            .write(move |conn| {
                let now = now_ms();
                // A repeated id (the relay re-sending after a crash) keeps
                // the job that is already queued.
                conn.execute(
                    "INSERT INTO jobs (id, queue, payload, max_attempts, enqueued_at, visible_at,
                                       traceparent)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
                    params![
                        id.to_string(),
                        queue_name,
                        payload,
                        max_attempts,
                        Utc::now(),
                        now.saturating_add(delay),
                        traceparent
                    ],
                )?;
                Ok(())
            })
            .await?;
        if options.delay.is_zero() {
            self.wakeup("job", queue).notify_one();
        }
        Ok(())
    }

    async fn reserve(&self, queue: &str, visibility: Duration) -> Result<Option<Job>, BusError> {
        for _ in 0..MAX_EXPIRED_PER_RESERVE {
            let queue_name = queue.to_owned();
            let visibility = millis(visibility);
            let row = self
                .db
                .write(move |conn| {
                    let now = now_ms();
                    let row = conn
                        .query_row(
                            RESERVE,
                            params![queue_name, now, now.saturating_add(visibility)],
                            Row::read,
                        )
                        .optional()?;
                    Ok(row)
                })
                .await?;
            let Some(row) = row else { return Ok(None) };
            let job = row.into_job()?;
            // Every delivery so far timed out (a handler that crashes the
            // process, say): stop here instead of crashing forever.
            if job.attempt > job.max_attempts {
                tracing::error!(queue, job = %job.id, attempts = job.max_attempts, EXPIRED_REASON);
                self.dead_letter(&job, EXPIRED_REASON).await?;
                continue;
            }
            return Ok(Some(job));
        }
        Ok(None)
    }

    async fn ack(&self, job: &Job) -> Result<(), BusError> {
        let id = job.id.to_string();
        self.db
            .write(move |conn| {
                conn.execute("DELETE FROM jobs WHERE id = ?1", [id])?;
                Ok(())
            })
            .await
    }

    async fn retry(&self, job: &Job, delay: Duration, reason: &str) -> Result<(), BusError> {
        let (id, attempt, reason) = (job.id.to_string(), job.attempt, reason.to_owned());
        let delay_ms = millis(delay);
        // Matching the attempt ignores a worker whose reservation expired
        // and was taken over: the new holder decides.
        self.db
            .write(move |conn| {
                conn.execute(
                    "UPDATE jobs SET visible_at = ?1, last_error = ?2 WHERE id = ?3 AND attempt = ?4",
                    params![now_ms().saturating_add(delay_ms), reason, id, attempt],
                )?;
                Ok(())
            })
            .await?;
        if delay.is_zero() {
            self.wakeup("job", &job.queue).notify_one();
        }
        Ok(())
    }

    async fn dead_letter(&self, job: &Job, reason: &str) -> Result<(), BusError> {
        let job = job.clone();
        let (reason, payload) = (reason.to_owned(), serde_json::to_string(&job.payload)?);
        self.db
            .write(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let removed = tx.execute(
                    "DELETE FROM jobs WHERE id = ?1 AND attempt = ?2",
                    params![job.id.to_string(), job.attempt],
                )?;
                if removed == 1 {
                    tx.execute(
                        "INSERT OR REPLACE INTO dead_jobs
                         (id, queue, payload, attempt, max_attempts, enqueued_at, reason, failed_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        params![
                            job.id.to_string(),
                            job.queue,
                            payload,
                            job.attempt,
                            job.max_attempts,
                            job.enqueued_at,
                            reason,
                            now_ms()
                        ],
                    )?;
                }
                tx.commit()?;
                Ok(())
            })
            .await
    }

    async fn depth(&self, queue: &str) -> Result<u64, BusError> {
        let queue = queue.to_owned();
        self.db
            .read(move |conn| {
                let count: i64 =
                    conn.query_row("SELECT COUNT(*) FROM jobs WHERE queue = ?1", [queue], |r| {
                        r.get(0)
                    })?;
                Ok(u64::try_from(count).unwrap_or(0))
            })
            .await
    }

    async fn dead_letters(&self, queue: &str) -> Result<Vec<Job>, BusError> {
        let queue = queue.to_owned();
        let rows = self
            .db
            .read(move |conn| {
                let mut statement = conn.prepare(
                    "SELECT id, queue, payload, attempt, max_attempts, enqueued_at, NULL
                     FROM dead_jobs
                     WHERE queue = ?1 ORDER BY failed_at, rowid",
                )?;
                let rows = statement
                    .query_map([queue], Row::read)?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await?;
        rows.into_iter().map(Row::into_job).collect()
    }

    async fn wait_for_work(&self, queue: &str, max: Duration) {
        let _ = tokio::time::timeout(max, self.wakeup("job", queue).notified()).await;
    }
}
