//! The loops that turn the queue and bus traits into running consumers:
//! [`run_worker`] for jobs, [`run_subscriber`] for events. They own the
//! policy the adapters leave open (backoff, when to dead-letter, metrics,
//! graceful shutdown), so every adapter behaves the same under load. Each
//! job or event is handled in a span of the trace it was created in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, Span};
use uuid::Uuid;

use crate::job::{Backoff, backoff};
use crate::{Event, EventBus, Job, JobError, JobQueue};

pub type JobHandler = Arc<dyn Fn(Job) -> BoxFuture<'static, Result<(), JobError>> + Send + Sync>;
pub type EventHandler =
    Arc<dyn Fn(Event) -> BoxFuture<'static, Result<(), JobError>> + Send + Sync>;

#[derive(Debug, Clone, Copy)]
pub struct WorkerOptions {
    /// Jobs handled at once.
    pub concurrency: usize,
    /// How long a reserved job stays invisible to other workers; longer than
    /// the slowest handler, or the job runs twice.
    pub visibility: Duration,
    /// Sleep between polls of an empty queue.
    pub poll_interval: Duration,
    /// Delay before a failed job's next attempt.
    pub backoff: Backoff,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            concurrency: 4,
            visibility: Duration::from_secs(30),
            poll_interval: Duration::from_millis(100),
            backoff: Backoff::default(),
        }
    }
}

/// How often the queue depth gauge is refreshed.
const DEPTH_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// How long a subscriber waits for an event before checking for shutdown.
const SUBSCRIBER_WAIT: Duration = Duration::from_secs(1);

/// Run `concurrency` consumers of `queue` until `shutdown`; finish the job
/// in hand on shutdown.
pub async fn run_worker(
    jobs: Arc<dyn JobQueue>,
    queue: &str,
    handler: JobHandler,
    options: WorkerOptions,
    shutdown: CancellationToken,
) {
    let queue: Arc<str> = Arc::from(queue);
    let mut tasks = JoinSet::new();
    tasks.spawn(sample_depth(jobs.clone(), queue.clone(), shutdown.clone()));
    for _ in 0..options.concurrency.max(1) {
        tasks.spawn(consume(
            jobs.clone(),
            queue.clone(),
            handler.clone(),
            options,
            shutdown.clone(),
        ));
    }
    while let Some(result) = tasks.join_next().await {
        if let Err(error) = result {
            tracing::error!(%queue, %error, "job consumer task failed");
        }
    }
}

/// One consumer: reserve, handle, settle, until shutdown.
async fn consume(
    jobs: Arc<dyn JobQueue>,
    queue: Arc<str>,
    handler: JobHandler,
    options: WorkerOptions,
    shutdown: CancellationToken,
) {
    let mut errors = 0u32;
    while !shutdown.is_cancelled() {
        match jobs.reserve(&queue, options.visibility).await {
            Ok(Some(job)) => {
                errors = 0;
                let span = job_span(&queue, &job);
                process(jobs.as_ref(), &queue, &handler, options.backoff, job)
                    .instrument(span)
                    .await;
            }
            Ok(None) => {
                errors = 0;
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = jobs.wait_for_work(&queue, options.poll_interval) => {}
                }
            }
            Err(error) => {
                // The bus is down or busy: back off so a broken broker is
                // not hammered by every worker at poll rate.
                errors = errors.saturating_add(1);
                tracing::warn!(%queue, %error, "cannot reserve a job");
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(backoff(errors)) => {}
                }
            }
        }
    }
}

/// The span a job is handled in: a child of the span that enqueued it.
fn job_span(queue: &str, job: &Job) -> Span {
    let span = tracing::info_span!("job", queue, job = %job.id, attempt = job.attempt);
    if let Some(traceparent) = &job.traceparent {
        zocalo_telemetry::trace::set_parent_from_traceparent(&span, traceparent);
    }
    span
}

/// The span an event is handled in: a child of the span that published it.
fn event_span(topic: &str, group: &str, event: &Event) -> Span {
    let span = tracing::info_span!("event", topic, group, event = %event.id, kind = %event.kind);
    if let Some(traceparent) = &event.traceparent {
        zocalo_telemetry::trace::set_parent_from_traceparent(&span, traceparent);
    }
    span
}

/// Run the handler for one job and settle the job by its outcome.
async fn process(
    jobs: &dyn JobQueue,
    queue: &str,
    handler: &JobHandler,
    backoff: Backoff,
    job: Job,
) {
    let started = Instant::now();
    // A task of its own turns a panicking handler into a retry instead of a
    // dead consumer.
    let outcome = match tokio::spawn(handler(job.clone()).instrument(Span::current())).await {
        Ok(outcome) => outcome,
        Err(error) => Err(JobError::Retry(format!("handler panicked: {error}"))),
    };
    metrics::histogram!("job_duration_seconds", "queue" => queue.to_owned())
        .record(started.elapsed().as_secs_f64());
    let (label, settled) = match outcome {
        Ok(()) => ("ok", jobs.ack(&job).await),
        Err(JobError::Retry(reason)) if job.attempt < job.max_attempts => {
            let delay = backoff.delay(job.attempt);
            tracing::warn!(
                %queue, job = %job.id, attempt = job.attempt, max_attempts = job.max_attempts,
                ?delay, %reason, "job failed, will retry"
            );
            metrics::counter!("job_retries_total", "queue" => queue.to_owned()).increment(1);
            ("retry", jobs.retry(&job, delay, &reason).await)
        }
        Err(error) => {
            let reason = match error {
                JobError::Retry(reason) => {
                    format!("gave up after {} attempts: {reason}", job.attempt)
                }
                JobError::Fatal(reason) => reason,
            };
            tracing::error!(
                %queue, job = %job.id, attempt = job.attempt, %reason, "job dead-lettered"
            );
            metrics::counter!("job_dead_letters_total", "queue" => queue.to_owned()).increment(1);
            ("dead", jobs.dead_letter(&job, &reason).await)
        }
    };
    metrics::counter!("jobs_processed_total", "queue" => queue.to_owned(), "outcome" => label)
        .increment(1);
    if let Err(error) = settled {
        // Not fatal: the job becomes visible again after its visibility
        // timeout and is handled (or dead-lettered) then.
        tracing::error!(%queue, job = %job.id, %error, "cannot settle job");
    }
}

async fn sample_depth(jobs: Arc<dyn JobQueue>, queue: Arc<str>, shutdown: CancellationToken) {
    loop {
        match jobs.depth(&queue).await {
            Ok(depth) => {
                metrics::gauge!("job_queue_depth", "queue" => queue.to_string()).set(depth as f64)
            }
            Err(error) => tracing::debug!(%queue, %error, "cannot sample queue depth"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(DEPTH_SAMPLE_INTERVAL) => {}
        }
    }
}

/// Deliver events of `topic` to `handler` as group `group` until
/// `shutdown`; ack on Ok, redeliver on [`JobError::Retry`] (with backoff).
/// A [`JobError::Fatal`] event is logged and acked: redelivering an event
/// the handler can never accept would only repeat the error forever.
pub async fn run_subscriber(
    events: Arc<dyn EventBus>,
    topic: &str,
    group: &str,
    handler: EventHandler,
    shutdown: CancellationToken,
) {
    // Failed deliveries per event, for the backoff; events that another
    // member finished linger, so the map is cleared when it grows.
    let mut failures: HashMap<Uuid, u32> = HashMap::new();
    let mut errors = 0u32;
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = events.next(topic, group, SUBSCRIBER_WAIT) => next,
        };
        match next {
            Ok(Some(event)) => {
                errors = 0;
                if failures.len() > 10_000 {
                    failures.clear();
                }
                let span = event_span(topic, group, &event);
                handle_event(
                    events.as_ref(),
                    topic,
                    group,
                    &handler,
                    event,
                    &mut failures,
                )
                .instrument(span)
                .await;
            }
            Ok(None) => errors = 0,
            Err(error) => {
                errors = errors.saturating_add(1);
                tracing::warn!(%topic, %group, %error, "cannot receive events");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff(errors)) => {}
                }
            }
        }
    }
}

async fn handle_event(
    events: &dyn EventBus,
    topic: &str,
    group: &str,
    handler: &EventHandler,
    event: Event,
    failures: &mut HashMap<Uuid, u32>,
) {
    let outcome = match tokio::spawn(handler(event.clone()).instrument(Span::current())).await {
        Ok(outcome) => outcome,
        Err(error) => Err(JobError::Retry(format!("handler panicked: {error}"))),
    };
    let (label, settled) = match outcome {
        Ok(()) => {
            failures.remove(&event.id);
            ("ok", events.ack(topic, group, &event).await)
        }
        Err(JobError::Retry(reason)) => {
            let count = failures.entry(event.id).or_default();
            *count = count.saturating_add(1);
            let delay = backoff(*count);
            tracing::warn!(%topic, %group, event = %event.id, kind = %event.kind, failures = *count,
                ?delay, %reason, "event handler failed, will redeliver");
            ("retry", events.nack(topic, group, &event, delay).await)
        }
        Err(JobError::Fatal(reason)) => {
            failures.remove(&event.id);
            tracing::error!(%topic, %group, event = %event.id, kind = %event.kind, %reason,
                "event handler failed fatally, event dropped");
            ("dropped", events.ack(topic, group, &event).await)
        }
    };
    metrics::counter!("events_processed_total", "topic" => topic.to_owned(),
        "group" => group.to_owned(), "outcome" => label)
    .increment(1);
    if let Err(error) = settled {
        tracing::error!(%topic, %group, event = %event.id, %error, "cannot settle event");
    }
}
