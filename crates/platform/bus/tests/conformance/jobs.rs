//! The `JobQueue` contract, through its methods alone.

use std::time::{Duration, Instant};

use serde_json::json;
use zocalo_bus::JobOptions;

use crate::support::{Kind, TestBus, eventually};

const VISIBILITY: Duration = Duration::from_secs(30);
const SOON: Duration = Duration::from_secs(5);

bus_tests!(
    enqueued_job_is_reserved_once_and_gone_after_ack,
    unacked_job_is_delivered_again_after_its_visibility_timeout,
    delayed_job_is_not_reservable_before_its_delay,
    retried_job_comes_back_after_its_delay_then_dead_letters,
    job_never_acked_is_dead_lettered_after_max_attempts,
    depth_counts_ready_delayed_and_in_flight_but_not_dead,
);

async fn enqueued_job_is_reserved_once_and_gone_after_ack(kind: Kind) {
    let test = TestBus::new(kind).await;
    let jobs = &test.bus.jobs;
    let payload = json!({"to": "ana@example.com"});
    let id = jobs
        .enqueue("mail", payload.clone(), JobOptions::default())
        .await
        .unwrap();

    let job = jobs
        .reserve("mail", VISIBILITY)
        .await
        .unwrap()
        .expect("the job");
    assert_eq!(
        (job.id, job.queue.as_str(), &job.payload),
        (id, "mail", &payload)
    );
    assert_eq!((job.attempt, job.max_attempts), (1, 5));
    assert!(
        jobs.reserve("mail", VISIBILITY).await.unwrap().is_none(),
        "a reserved job is invisible"
    );
    assert!(
        jobs.reserve("other", VISIBILITY).await.unwrap().is_none(),
        "queues are separate"
    );
    assert_eq!(jobs.depth("mail").await.unwrap(), 1, "in flight counts");

    jobs.ack(&job).await.unwrap();
    assert_eq!(jobs.depth("mail").await.unwrap(), 0);
    assert!(jobs.reserve("mail", VISIBILITY).await.unwrap().is_none());
}

async fn unacked_job_is_delivered_again_after_its_visibility_timeout(kind: Kind) {
    let test = TestBus::new(kind).await;
    let jobs = &test.bus.jobs;
    let visibility = Duration::from_millis(700);
    let id = jobs
        .enqueue("q", json!(1), JobOptions::default())
        .await
        .unwrap();

    // A worker takes the job and dies without acking.
    let reserved_at = Instant::now();
    let first = jobs
        .reserve("q", visibility)
        .await
        .unwrap()
        .expect("the job");
    drop(first);
    assert!(jobs.reserve("q", visibility).await.unwrap().is_none());

    let again = eventually("redelivery", SOON, async || {
        jobs.reserve("q", visibility).await.unwrap()
    })
    .await;
    assert!(
        reserved_at.elapsed() >= Duration::from_millis(600),
        "not before the timeout"
    );
    assert_eq!((again.id, again.attempt), (id, 2));
    jobs.ack(&again).await.unwrap();
    assert_eq!(jobs.depth("q").await.unwrap(), 0);
}

async fn delayed_job_is_not_reservable_before_its_delay(kind: Kind) {
    let test = TestBus::new(kind).await;
    let jobs = &test.bus.jobs;
    let enqueued_at = Instant::now();
    let id = jobs
        .enqueue(
            "later",
            json!({}),
            JobOptions::delayed(Duration::from_millis(800)),
        )
        .await
        .unwrap();

    assert!(jobs.reserve("later", VISIBILITY).await.unwrap().is_none());
    assert_eq!(jobs.depth("later").await.unwrap(), 1, "delayed jobs count");
    let job = eventually("the delayed job", SOON, async || {
        jobs.reserve("later", VISIBILITY).await.unwrap()
    })
    .await;
    assert!(
        enqueued_at.elapsed() >= Duration::from_millis(750),
        "reserved too early"
    );
    assert_eq!((job.id, job.attempt), (id, 1), "waiting is not an attempt");
    jobs.ack(&job).await.unwrap();
}

async fn retried_job_comes_back_after_its_delay_then_dead_letters(kind: Kind) {
    let test = TestBus::new(kind).await;
    let jobs = &test.bus.jobs;
    let options = JobOptions {
        max_attempts: 3,
        ..JobOptions::default()
    };
    let id = jobs
        .enqueue("flaky", json!({"n": 7}), options)
        .await
        .unwrap();
    let delay = Duration::from_millis(300);

    let mut retried_at: Option<Instant> = None;
    for attempt in 1..=3 {
        let job = eventually("the job", SOON, async || {
            jobs.reserve("flaky", VISIBILITY).await.unwrap()
        })
        .await;
        if let Some(at) = retried_at {
            assert!(
                at.elapsed() >= Duration::from_millis(250),
                "came back before its delay"
            );
        }
        assert_eq!((job.id, job.attempt), (id, attempt));
        if attempt < 3 {
            jobs.retry(&job, delay, "upstream timed out").await.unwrap();
            retried_at = Some(Instant::now());
            assert!(jobs.reserve("flaky", VISIBILITY).await.unwrap().is_none());
        } else {
            jobs.dead_letter(&job, "gave up").await.unwrap();
        }
    }

    assert_eq!(
        jobs.depth("flaky").await.unwrap(),
        0,
        "dead jobs are not queued"
    );
    assert!(jobs.reserve("flaky", VISIBILITY).await.unwrap().is_none());
    let dead = jobs.dead_letters("flaky").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].id, dead[0].attempt, &dead[0].payload),
        (id, 3, &json!({"n": 7}))
    );
    assert!(jobs.dead_letters("elsewhere").await.unwrap().is_empty());
}

async fn job_never_acked_is_dead_lettered_after_max_attempts(kind: Kind) {
    let test = TestBus::new(kind).await;
    let jobs = &test.bus.jobs;
    let visibility = Duration::from_millis(400);
    let options = JobOptions {
        max_attempts: 2,
        ..JobOptions::default()
    };
    let id = jobs.enqueue("poison", json!({}), options).await.unwrap();

    // Every handler crashes the process: nobody ever acks.
    for attempt in 1..=2 {
        let job = eventually("a delivery", SOON, async || {
            jobs.reserve("poison", visibility).await.unwrap()
        })
        .await;
        assert_eq!(job.attempt, attempt);
    }
    let dead = eventually("the dead letter", SOON, async || {
        assert!(
            jobs.reserve("poison", visibility).await.unwrap().is_none(),
            "no third delivery"
        );
        Some(jobs.dead_letters("poison").await.unwrap()).filter(|dead| !dead.is_empty())
    })
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    assert_eq!(jobs.depth("poison").await.unwrap(), 0);
}

async fn depth_counts_ready_delayed_and_in_flight_but_not_dead(kind: Kind) {
    let test = TestBus::new(kind).await;
    let jobs = &test.bus.jobs;
    for n in 0..2 {
        jobs.enqueue("d", json!(n), JobOptions::default())
            .await
            .unwrap();
    }
    jobs.enqueue(
        "d",
        json!("later"),
        JobOptions::delayed(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    assert_eq!(jobs.depth("d").await.unwrap(), 3);

    let first = jobs.reserve("d", VISIBILITY).await.unwrap().expect("a job");
    assert_eq!(jobs.depth("d").await.unwrap(), 3, "in flight still counts");
    jobs.dead_letter(&first, "bad").await.unwrap();
    assert_eq!(jobs.depth("d").await.unwrap(), 2, "dead does not count");

    let second = jobs.reserve("d", VISIBILITY).await.unwrap().expect("a job");
    jobs.ack(&second).await.unwrap();
    assert_eq!(jobs.depth("d").await.unwrap(), 1, "the delayed job is left");
    assert!(jobs.reserve("d", VISIBILITY).await.unwrap().is_none());
    assert_eq!(jobs.depth("empty").await.unwrap(), 0);
}
