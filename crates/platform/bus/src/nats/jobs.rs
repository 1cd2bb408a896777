//! Jobs on JetStream. The attempt number is the ready consumer's delivery
//! count, which a redelivery after the ack wait (a crashed worker) and a
//! nak-with-delay (a retry) both increment.

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{AckKind, Message};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{FETCH_GRACE, NatsBus};
use crate::{BusError, Job, JobOptions, JobQueue, sanitize};

/// Delayed jobs looked at per promotion.
const PROMOTE_BATCH: usize = 64;
/// How often one process looks for due delayed jobs of a queue: a delayed
/// job becomes reservable up to this much after it is due.
const PROMOTE_EVERY: Duration = Duration::from_millis(200);
/// How long a promotion waits for delayed jobs to arrive.
const PROMOTE_WAIT: Duration = Duration::from_millis(20);
/// How long an empty reserve waits for a job to arrive.
const RESERVE_WAIT: Duration = Duration::from_millis(50);
const MAX_EXPIRED_PER_RESERVE: usize = 100;
const EXPIRED_REASON: &str = "not acknowledged within the visibility timeout on any attempt";

/// A job as stored in the stream; the attempt comes from delivery metadata.
#[derive(Serialize, Deserialize)]
struct WireJob {
    id: Uuid,
    queue: String,
    payload: serde_json::Value,
    max_attempts: u32,
    enqueued_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_before: Option<DateTime<Utc>>,
}

/// A dead job as stored in `dead.<queue>`.
#[derive(Serialize, Deserialize)]
struct DeadJob {
    job: Job,
    reason: String,
    failed_at: DateTime<Utc>,
}

impl NatsBus {
    fn ready_subject(&self, queue: &str) -> String {
        self.inner
            .names
            .subject(&format!("jobs.{}", sanitize(queue)))
    }

    fn delayed_subject(&self, queue: &str) -> String {
        self.inner
            .names
            .subject(&format!("delayed.{}", sanitize(queue)))
    }

    fn dead_subject(&self, queue: &str) -> String {
        self.inner
            .names
            .subject(&format!("dead.{}", sanitize(queue)))
    }

    /// The ack wait of a durable consumer is fixed at creation, so the
    /// visibility of the first reserve after creation applies to all.
    async fn ready_consumer(
        &self,
        queue: &str,
        visibility: Duration,
    ) -> Result<PullConsumer, BusError> {
        let filter_subject = self.ready_subject(queue);
        let name = format!("jobs_{}", sanitize(queue));
        let stream = self.inner.jobs.clone();
        self.consumer(&stream, &name.clone(), || pull::Config {
            durable_name: Some(name),
            filter_subject,
            ack_policy: AckPolicy::Explicit,
            ack_wait: visibility,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
    }

    async fn delayed_consumer(&self, queue: &str) -> Result<PullConsumer, BusError> {
        let filter_subject = self.delayed_subject(queue);
        let name = format!("delayed_{}", sanitize(queue));
        let stream = self.inner.jobs.clone();
        self.consumer(&stream, &name.clone(), || pull::Config {
            durable_name: Some(name),
            filter_subject,
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
    }

    /// Move delayed jobs that are due to the ready subject; hold back the
    /// rest with a nak delayed until they are due. Throttled per queue: every
    /// look costs a pull request that waits when nothing is there.
    async fn promote_due(&self, queue: &str) -> Result<(), BusError> {
        {
            let mut promoted = super::lock(&self.inner.promoted);
            let last = promoted.get(queue).copied();
            if last.is_some_and(|at| at.elapsed() < PROMOTE_EVERY) {
                return Ok(());
            }
            promoted.insert(queue.to_owned(), Instant::now());
        }
        let consumer = self.delayed_consumer(queue).await?;
        let mut batch = consumer
            .batch()
            .max_messages(PROMOTE_BATCH)
            .expires(PROMOTE_WAIT)
            .messages()
            .await
            .map_err(BusError::unavailable)?;
        let promote_all = async {
            while let Some(message) = batch.next().await {
                self.promote(queue, message.map_err(BusError::unavailable)?)
                    .await?;
            }
            Ok(())
        };
        tokio::time::timeout(PROMOTE_WAIT + FETCH_GRACE, promote_all)
            .await
            .map_err(|_| BusError::Unavailable("JetStream pull request got no answer".into()))?
    }

    async fn promote(&self, queue: &str, message: Message) -> Result<(), BusError> {
        let wire: WireJob = match serde_json::from_slice(&message.payload) {
            Ok(wire) => wire,
            Err(error) => return discard(message, queue, error).await,
        };
        let now = Utc::now();
        let remaining = wire.not_before.and_then(|t| (t - now).to_std().ok());
        if let Some(remaining) = remaining.filter(|r| !r.is_zero()) {
            return message
                .double_ack_with(AckKind::Nak(Some(remaining)))
                .await
                .map_err(BusError::unavailable);
        }
        // A distinct message id: the delayed copy already used the job id
        // within the duplicate window.
        let id = format!("{}:ready", wire.id);
        let traceparent = super::traceparent(&message);
        self.store(
            self.ready_subject(queue),
            &id,
            message.payload.to_vec(),
            traceparent.as_deref(),
        )
        .await?;
        message.double_ack().await.map_err(BusError::unavailable)
    }

    /// Store `job` as dead, then remove it from the work queue.
    async fn bury(&self, message: Message, job: &Job, reason: &str) -> Result<(), BusError> {
        let dead = DeadJob {
            job: job.clone(),
            reason: reason.to_owned(),
            failed_at: Utc::now(),
        };
        let id = format!("{}:dead", job.id);
        self.store(
            self.dead_subject(&job.queue),
            &id,
            serde_json::to_vec(&dead)?,
            job.traceparent.as_deref(),
        )
        .await?;
        message.double_ack().await.map_err(BusError::unavailable)
    }

    fn held_job(&self, job: &Job) -> Result<Message, BusError> {
        self.inner.reserved.take(&job.id).ok_or_else(|| {
            BusError::Other(format!(
                "job {} is not reserved by this process (already settled, or its reservation was lost)",
                job.id
            ))
        })
    }

    async fn count(&self, subject: String) -> Result<u64, BusError> {
        let mut subjects = self
            .inner
            .jobs
            .info_with_subjects(subject)
            .await
            .map_err(BusError::unavailable)?;
        let mut total = 0u64;
        while let Some(entry) = subjects.next().await {
            let (_, count) = entry.map_err(BusError::unavailable)?;
            total += count as u64;
        }
        Ok(total)
    }
}

/// A message we cannot decode is a bug upstream; it would fail forever, so
/// it is terminated rather than redelivered.
async fn discard(message: Message, queue: &str, error: serde_json::Error) -> Result<(), BusError> {
    tracing::error!(queue, %error, "undecodable job message terminated");
    message
        .double_ack_with(AckKind::Term)
        .await
        .map_err(BusError::unavailable)
}

#[async_trait]
impl JobQueue for NatsBus {
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
        let now = Utc::now();
        let delayed = !options.delay.is_zero();
        let not_before = delayed
            .then(|| {
                chrono::Duration::from_std(options.delay)
                    .ok()
                    .map(|d| now + d)
            })
            .flatten();
        let wire = WireJob {
            id,
            queue: queue.to_owned(),
            payload,
            max_attempts: options.max_attempts.max(1),
            enqueued_at: now,
            not_before,
        };
        let subject = if delayed {
            self.delayed_subject(queue)
        } else {
            self.ready_subject(queue)
        };
        let traceparent = zocalo_telemetry::trace::current_traceparent();
        self.store(
            subject,
            &id.to_string(),
            serde_json::to_vec(&wire)?,
            traceparent.as_deref(),
        )
        .await
    }

    async fn reserve(&self, queue: &str, visibility: Duration) -> Result<Option<Job>, BusError> {
        self.promote_due(queue).await?;
        let consumer = self.ready_consumer(queue, visibility).await?;
        for _ in 0..MAX_EXPIRED_PER_RESERVE {
            let Some(message) = self.fetch(&consumer, RESERVE_WAIT).await? else {
                return Ok(None);
            };
            let delivered = message.info().map_err(BusError::unavailable)?.delivered;
            let wire: WireJob = match serde_json::from_slice(&message.payload) {
                Ok(wire) => wire,
                Err(error) => {
                    discard(message, queue, error).await?;
                    continue;
                }
            };
            let job = Job {
                id: wire.id,
                queue: wire.queue,
                payload: wire.payload,
                attempt: u32::try_from(delivered).unwrap_or(u32::MAX),
                max_attempts: wire.max_attempts,
                enqueued_at: wire.enqueued_at,
                traceparent: super::traceparent(&message),
            };
            if job.attempt > job.max_attempts {
                tracing::error!(queue, job = %job.id, attempts = job.max_attempts, EXPIRED_REASON);
                self.bury(message, &job, EXPIRED_REASON).await?;
                continue;
            }
            self.inner.reserved.insert(job.id, message);
            return Ok(Some(job));
        }
        Ok(None)
    }

    async fn ack(&self, job: &Job) -> Result<(), BusError> {
        let message = self.held_job(job)?;
        message.double_ack().await.map_err(BusError::unavailable)
    }

    async fn retry(&self, job: &Job, delay: Duration, reason: &str) -> Result<(), BusError> {
        let message = self.held_job(job)?;
        tracing::debug!(job = %job.id, ?delay, reason, "job handed back for retry");
        let delay = (!delay.is_zero()).then_some(delay);
        message
            .double_ack_with(AckKind::Nak(delay))
            .await
            .map_err(BusError::unavailable)
    }

    async fn dead_letter(&self, job: &Job, reason: &str) -> Result<(), BusError> {
        let message = self.held_job(job)?;
        self.bury(message, job, reason).await
    }

    async fn depth(&self, queue: &str) -> Result<u64, BusError> {
        // Work-queue retention keeps a message until it is acked, so the
        // stored count is ready + in flight (+ delayed on its own subject).
        let ready = self.count(self.ready_subject(queue)).await?;
        let delayed = self.count(self.delayed_subject(queue)).await?;
        Ok(ready + delayed)
    }

    async fn dead_letters(&self, queue: &str) -> Result<Vec<Job>, BusError> {
        // A short-lived reader of the dead subject, from the start.
        let consumer: PullConsumer = self
            .inner
            .dead
            .create_consumer(pull::Config {
                filter_subject: self.dead_subject(queue),
                ack_policy: AckPolicy::None,
                deliver_policy: DeliverPolicy::All,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(BusError::unavailable)?;
        let pending = consumer.cached_info().num_pending;
        let read = tokio::time::timeout(FETCH_GRACE, read_dead(&consumer, pending)).await;
        let name = consumer.cached_info().name.clone();
        if let Err(error) = self.inner.dead.delete_consumer(&name).await {
            tracing::debug!(%error, "could not delete dead-letter reader; it expires");
        }
        read.map_err(|_| BusError::Unavailable("reading dead letters timed out".into()))?
    }
}

/// Read the `pending` dead jobs a fresh reader of a dead subject has.
/// `no_wait` pulls are safe here: this reader has no other puller to race.
async fn read_dead(consumer: &PullConsumer, pending: u64) -> Result<Vec<Job>, BusError> {
    let mut jobs = Vec::new();
    while (jobs.len() as u64) < pending {
        let mut batch = consumer
            .fetch()
            .max_messages(256)
            .messages()
            .await
            .map_err(BusError::unavailable)?;
        let before = jobs.len();
        while let Some(message) = batch.next().await {
            let message = message.map_err(BusError::unavailable)?;
            let dead: DeadJob = serde_json::from_slice(&message.payload)?;
            jobs.push(dead.job);
        }
        if jobs.len() == before {
            break;
        }
    }
    Ok(jobs)
}
