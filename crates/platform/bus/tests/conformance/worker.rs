//! `run_worker` over each adapter: concurrency, exactly-once handling when
//! handlers succeed, the retry policy and graceful shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use zocalo_bus::{Job, JobError, JobHandler, JobOptions, JobQueue, WorkerOptions, run_worker};

use crate::support::{Kind, TestBus, eventually};

bus_tests!(
    worker_handles_every_job_exactly_once_concurrently,
    worker_retries_with_backoff_then_dead_letters,
    fatal_error_dead_letters_at_once,
    job_of_a_crashed_worker_is_finished_by_another,
    worker_finishes_the_job_in_hand_on_shutdown,
);

const LIMIT: Duration = Duration::from_secs(10);

fn options() -> WorkerOptions {
    WorkerOptions {
        concurrency: 4,
        visibility: Duration::from_secs(30),
        poll_interval: Duration::from_millis(20),
        ..WorkerOptions::default()
    }
}

fn handler<F>(f: F) -> JobHandler
where
    F: Fn(Job) -> Result<(), JobError> + Send + Sync + 'static,
{
    Arc::new(move |job| std::future::ready(f(job)).boxed())
}

fn spawn_worker(
    jobs: Arc<dyn JobQueue>,
    queue: &'static str,
    handler: JobHandler,
    options: WorkerOptions,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_worker(jobs, queue, handler, options, shutdown.clone()));
    (shutdown, task)
}

async fn stop(shutdown: CancellationToken, task: tokio::task::JoinHandle<()>) {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("worker stops promptly")
        .expect("worker does not panic");
}

async fn worker_handles_every_job_exactly_once_concurrently(kind: Kind) {
    let test = TestBus::new(kind).await;
    let jobs = test.bus.jobs.clone();
    let mut ids = Vec::new();
    for n in 0..40 {
        ids.push(
            jobs.enqueue("work", json!({"n": n}), JobOptions::default())
                .await
                .unwrap(),
        );
    }
    let seen: Arc<Mutex<HashMap<Uuid, u32>>> = Arc::default();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let work: JobHandler = {
        let (seen, running, peak) = (seen.clone(), running.clone(), peak.clone());
        Arc::new(move |job| {
            let (seen, running, peak) = (seen.clone(), running.clone(), peak.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                *seen.lock().unwrap().entry(job.id).or_default() += 1;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
            .boxed()
        })
    };
    let (shutdown, task) = spawn_worker(jobs.clone(), "work", work, options());
    eventually("all jobs handled and acked", LIMIT, async || {
        let done = seen.lock().unwrap().len() == ids.len();
        (done && jobs.depth("work").await.unwrap() == 0).then_some(())
    })
    .await;
    stop(shutdown, task).await;

    let seen = seen.lock().unwrap();
    assert!(
        ids.iter().all(|id| seen.get(id) == Some(&1)),
        "each job exactly once: {seen:?}"
    );
    assert!(peak.load(Ordering::SeqCst) > 1, "jobs ran concurrently");
}

async fn worker_retries_with_backoff_then_dead_letters(kind: Kind) {
    let test = TestBus::new(kind).await;
    let jobs = test.bus.jobs.clone();
    let options_3 = JobOptions {
        max_attempts: 3,
        ..JobOptions::default()
    };
    let id = jobs.enqueue("flaky", json!({}), options_3).await.unwrap();
    let calls: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let record = calls.clone();
    let failing = handler(move |job| {
        record.lock().unwrap().push((job.attempt, Instant::now()));
        Err(JobError::retry("payment provider timed out"))
    });
    let (shutdown, task) = spawn_worker(jobs.clone(), "flaky", failing, options());
    let dead = eventually("the dead letter", LIMIT, async || {
        Some(jobs.dead_letters("flaky").await.unwrap()).filter(|dead| !dead.is_empty())
    })
    .await;
    stop(shutdown, task).await;

    assert_eq!((dead.len(), dead[0].id, dead[0].attempt), (1, id, 3));
    assert_eq!(jobs.depth("flaky").await.unwrap(), 0);
    let calls = calls.lock().unwrap();
    let attempts: Vec<u32> = calls.iter().map(|(attempt, _)| *attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);
    // Backoff: 200 ms, then 400 ms, each at least half that with jitter.
    assert!(calls[1].1 - calls[0].1 >= Duration::from_millis(100));
    assert!(calls[2].1 - calls[1].1 >= Duration::from_millis(200));
}

async fn fatal_error_dead_letters_at_once(kind: Kind) {
    let test = TestBus::new(kind).await;
    let jobs = test.bus.jobs.clone();
    let id = jobs
        .enqueue("strict", json!({"bad": true}), JobOptions::default())
        .await
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let count = calls.clone();
    let fatal = handler(move |_| {
        count.fetch_add(1, Ordering::SeqCst);
        Err(JobError::fatal("malformed payload"))
    });
    let (shutdown, task) = spawn_worker(jobs.clone(), "strict", fatal, options());
    let dead = eventually("the dead letter", LIMIT, async || {
        Some(jobs.dead_letters("strict").await.unwrap()).filter(|dead| !dead.is_empty())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop(shutdown, task).await;

    assert_eq!((dead[0].id, dead[0].attempt), (id, 1));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no retry after a fatal error"
    );
    assert_eq!(jobs.depth("strict").await.unwrap(), 0);
}

async fn job_of_a_crashed_worker_is_finished_by_another(kind: Kind) {
    let test = TestBus::new(kind).await;
    let jobs = test.bus.jobs.clone();
    let visibility = Duration::from_millis(500);
    let id = jobs
        .enqueue("ship", json!({}), JobOptions::default())
        .await
        .unwrap();
    // The first worker dies mid-job: reserved, never settled.
    let lost = jobs
        .reserve("ship", visibility)
        .await
        .unwrap()
        .expect("the job");
    drop(lost);

    let handled: Arc<Mutex<Vec<(Uuid, u32)>>> = Arc::default();
    let record = handled.clone();
    let work = handler(move |job| {
        record.lock().unwrap().push((job.id, job.attempt));
        Ok(())
    });
    let (shutdown, task) = spawn_worker(
        jobs.clone(),
        "ship",
        work,
        WorkerOptions {
            visibility,
            ..options()
        },
    );
    eventually("the job finished", LIMIT, async || {
        (jobs.depth("ship").await.unwrap() == 0).then_some(())
    })
    .await;
    stop(shutdown, task).await;
    assert_eq!(*handled.lock().unwrap(), [(id, 2)]);
}

async fn worker_finishes_the_job_in_hand_on_shutdown(kind: Kind) {
    let test = TestBus::new(kind).await;
    let jobs = test.bus.jobs.clone();
    jobs.enqueue("slow", json!({}), JobOptions::default())
        .await
        .unwrap();
    let started = Arc::new(tokio::sync::Notify::new());
    let finished = Arc::new(AtomicBool::new(false));
    let work: JobHandler = {
        let (started, finished) = (started.clone(), finished.clone());
        Arc::new(move |_| {
            let (started, finished) = (started.clone(), finished.clone());
            async move {
                started.notify_one();
                tokio::time::sleep(Duration::from_millis(300)).await;
                finished.store(true, Ordering::SeqCst);
                Ok(())
            }
            .boxed()
        })
    };
    let (shutdown, task) = spawn_worker(jobs.clone(), "slow", work, options());
    started.notified().await;
    stop(shutdown, task).await;
    assert!(
        finished.load(Ordering::SeqCst),
        "the handler ran to the end"
    );
    assert_eq!(
        jobs.depth("slow").await.unwrap(),
        0,
        "and its job was acked"
    );
}
