//! Durable jobs: work a service hands to itself for later (expire a
//! reservation, advance a shipment, transcode a video). Delivery is
//! at-least-once, so handlers must be idempotent (see [`crate::inbox`]).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::BusError;

/// A job as handed to a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: Uuid,
    pub queue: String,
    pub payload: serde_json::Value,
    /// Which delivery this is, starting at 1.
    pub attempt: u32,
    pub max_attempts: u32,
    pub enqueued_at: DateTime<Utc>,
    /// The W3C `traceparent` of the span that enqueued the job, captured by
    /// the queue at enqueue time; the worker handles the job in its trace.
    /// Carried by the transport (a column, a header), not in the payload.
    #[serde(skip)]
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct JobOptions {
    /// Not reservable before this much time has passed.
    pub delay: Duration,
    /// Deliveries before the job is dead-lettered (at least 1).
    pub max_attempts: u32,
}

impl Default for JobOptions {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            max_attempts: 5,
        }
    }
}

impl JobOptions {
    /// Default options with a delay.
    pub fn delayed(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::default()
        }
    }
}

/// How a handler failed, which decides what happens to the job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Transient: back off and try again, dead-letter after `max_attempts`.
    #[error("retryable: {0}")]
    Retry(String),
    /// Retrying cannot help (bad payload, a bug): dead-letter now.
    #[error("fatal: {0}")]
    Fatal(String),
}

impl JobError {
    pub fn retry(cause: impl std::fmt::Display) -> Self {
        JobError::Retry(cause.to_string())
    }

    pub fn fatal(cause: impl std::fmt::Display) -> Self {
        JobError::Fatal(cause.to_string())
    }
}

#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    async fn enqueue(
        &self,
        queue: &str,
        payload: serde_json::Value,
        options: JobOptions,
    ) -> Result<Uuid, BusError>;

    /// Enqueue with an id chosen by the caller, so that handing the same job
    /// over twice (the outbox relay after a crash) keeps one identity that
    /// consumers can de-duplicate on. Adapters de-duplicate where they can.
    /// The default, for test doubles, ignores the id.
    async fn enqueue_with_id(
        &self,
        id: Uuid,
        queue: &str,
        payload: serde_json::Value,
        options: JobOptions,
    ) -> Result<(), BusError> {
        let _ = id;
        self.enqueue(queue, payload, options).await.map(|_| ())
    }

    /// Take the next due job, invisible to others for `visibility`
    /// (at-least-once: if not acked in time it is delivered again).
    async fn reserve(&self, queue: &str, visibility: Duration) -> Result<Option<Job>, BusError>;

    async fn ack(&self, job: &Job) -> Result<(), BusError>;

    /// Make it visible again after `delay` (attempt counter increments on
    /// the next reserve).
    async fn retry(&self, job: &Job, delay: Duration, reason: &str) -> Result<(), BusError>;

    async fn dead_letter(&self, job: &Job, reason: &str) -> Result<(), BusError>;

    /// Ready + delayed + in flight, not dead.
    async fn depth(&self, queue: &str) -> Result<u64, BusError>;

    async fn dead_letters(&self, queue: &str) -> Result<Vec<Job>, BusError>;

    /// Wait until `queue` may have work, at most `max`. Workers call it after
    /// an empty [`JobQueue::reserve`]; adapters that know when work arrives
    /// in-process return early, the rest simply sleep.
    async fn wait_for_work(&self, queue: &str, max: Duration) {
        let _ = queue;
        tokio::time::sleep(max).await;
    }
}

/// How long a failed job waits before its next delivery: `base` doubling
/// per attempt, capped at `cap`, with "equal jitter" (half fixed, half
/// random) so jobs that failed together do not come back together.
///
/// The default (200 ms doubling to 60 s) suits work inside our own system;
/// a queue that calls other people's servers (webhooks) waits longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(200),
            cap: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay after a failed `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        use rand::Rng;
        let exponent = attempt.saturating_sub(1).min(16);
        let full = self.base.saturating_mul(1u32 << exponent).min(self.cap);
        let half = full / 2;
        let jitter = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter)
    }
}

/// The default [`Backoff`] delay, for loops that retry the bus itself.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Backoff::default().delay(attempt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        for _ in 0..100 {
            let first = backoff(1);
            assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(200));
            let third = backoff(3);
            assert!(third >= Duration::from_millis(400) && third <= Duration::from_millis(800));
            let late = backoff(40);
            assert!(late >= Duration::from_secs(30) && late <= Duration::from_secs(60));
        }
        assert!(backoff(0) <= Duration::from_millis(200));
    }

    #[test]
    fn a_longer_backoff_scales_the_same_way() {
        let slow = Backoff {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(3600),
        };
        for _ in 0..100 {
            let second = slow.delay(2);
            assert!(second >= Duration::from_secs(5) && second <= Duration::from_secs(10));
            let late = slow.delay(30);
            assert!(late >= Duration::from_secs(1800) && late <= Duration::from_secs(3600));
        }
    }
}
