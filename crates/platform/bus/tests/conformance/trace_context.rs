//! Jobs and events carry the trace they were created in: a job enqueued, an
//! event published or an outbox row written inside a span is handled in a
//! span of the same trace, and its handler's log lines name that trace.
//!
//! One thread per test: the capturing subscriber set for the test then
//! covers the worker and subscriber tasks too.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use zocalo_bus::outbox::{self, Message, Source};
use zocalo_bus::{
    Bus, Event, EventHandler, JobHandler, JobOptions, WorkerOptions, run_subscriber, run_worker,
};
use zocalo_telemetry::trace::current_trace_id;
use zocalo_testkit::Backend;
use zocalo_testkit::logs::CapturedLogs;

use crate::support::{Kind, TestBus, bounded, nats_url, service_store};

const QUEUE: &str = "traced";
const TOPIC: &str = "traced";
const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "current_thread")]
async fn sqlite_jobs_and_events_continue_the_producers_trace() {
    bounded(jobs_and_events_continue_the_producers_trace(Kind::Sqlite)).await
}

#[tokio::test(flavor = "current_thread")]
async fn nats_jobs_and_events_continue_the_producers_trace() {
    if nats_url().is_none() {
        eprintln!("ZOCALO_TEST_NATS_URL is unset: NATS variant not run");
        return;
    }
    bounded(jobs_and_events_continue_the_producers_trace(Kind::Nats)).await
}

#[tokio::test(flavor = "current_thread")]
async fn outbox_messages_keep_the_trace_they_were_written_in() {
    bounded(async {
        let (logs, dispatch) = CapturedLogs::dispatch("info");
        let _subscriber = tracing::dispatcher::set_default(&dispatch);
        let test = TestBus::new(Kind::Sqlite).await;
        let (source, _db) = service_store(Backend::Sqlite).await;

        // The messages are built in the request; the row is written on a
        // blocking thread outside any span, as services do.
        let (messages, trace_id) = async {
            let messages = vec![
                Message::job(QUEUE, json!({"via": "outbox"}), JobOptions::default()),
                Message::Event(Event::new(TOPIC, "via-outbox", json!({}))),
            ];
            (messages, current_trace_id().unwrap())
        }
        .instrument(tracing::info_span!("request"))
        .await;
        let Source::Sqlite(pool) = &source else {
            unreachable!("a SQLite store")
        };
        pool.write(move |conn| {
            let tx = conn.transaction()?;
            for message in &messages {
                outbox::insert_sqlite(&tx, message)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(outbox::relay_once(&source, &test.bus).await.unwrap(), 2);

        let (seen, stop) = consume(&test.bus);
        let handled = receive(seen, 2).await;
        stop.cancel();
        for (what, trace) in &handled {
            assert_eq!(trace.as_deref(), Some(trace_id.as_str()), "{what}");
        }
        let lines = logs.with_message("handled");
        assert_eq!(lines.len(), 2, "{:?}", logs.lines());
        assert!(
            lines
                .iter()
                .all(|line| line["trace_id"] == trace_id.as_str())
        );
    })
    .await
}

async fn jobs_and_events_continue_the_producers_trace(kind: Kind) {
    let (logs, dispatch) = CapturedLogs::dispatch("info");
    let _subscriber = tracing::dispatcher::set_default(&dispatch);
    let test = TestBus::new(kind).await;

    let trace_id = async {
        test.bus
            .jobs
            .enqueue(QUEUE, json!({"traced": true}), JobOptions::default())
            .await
            .unwrap();
        let event = Event::new(TOPIC, "happened", json!({}));
        test.bus.events.publish(&event).await.unwrap();
        current_trace_id().unwrap()
    }
    .instrument(tracing::info_span!("request"))
    .await;
    // Outside any span: handled in a trace of its own.
    test.bus
        .jobs
        .enqueue(QUEUE, json!({"traced": false}), JobOptions::default())
        .await
        .unwrap();

    let (seen, stop) = consume(&test.bus);
    let mut handled = receive(seen, 3).await;
    stop.cancel();
    handled.sort();
    let traces: Vec<Option<&str>> = handled.iter().map(|(_, t)| t.as_deref()).collect();
    assert_eq!(handled[0].0, "event happened");
    assert_eq!(
        traces[0],
        Some(trace_id.as_str()),
        "the event continues the trace"
    );
    assert_eq!(handled[1].0, "job {\"traced\":false}");
    let fresh = traces[1].expect("an untraced job still gets a trace");
    assert_ne!(fresh, trace_id);
    assert_eq!(handled[2].0, "job {\"traced\":true}");
    assert_eq!(
        traces[2],
        Some(trace_id.as_str()),
        "the job continues the trace"
    );

    let lines = logs.with_message("handled");
    assert_eq!(lines.len(), 3, "{:?}", logs.lines());
    let in_trace = lines
        .iter()
        .filter(|line| line["trace_id"] == trace_id.as_str())
        .count();
    assert_eq!(in_trace, 2, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|line| line["span"]["name"] == "job" || line["span"]["name"] == "event")
    );
}

/// Run a worker and a subscriber that report what they handled and in which
/// trace; cancel the token to stop them.
fn consume(
    bus: &Bus,
) -> (
    mpsc::UnboundedReceiver<(String, Option<String>)>,
    CancellationToken,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let jobs: JobHandler = {
        let tx = tx.clone();
        Arc::new(move |job| {
            let tx = tx.clone();
            async move {
                tracing::info!("handled");
                let _ = tx.send((format!("job {}", job.payload), current_trace_id()));
                Ok(())
            }
            .boxed()
        })
    };
    let events: EventHandler = Arc::new(move |event| {
        let tx = tx.clone();
        async move {
            tracing::info!("handled");
            let _ = tx.send((format!("event {}", event.kind), current_trace_id()));
            Ok(())
        }
        .boxed()
    });
    let options = WorkerOptions {
        concurrency: 1,
        poll_interval: Duration::from_millis(20),
        ..WorkerOptions::default()
    };
    tokio::spawn(run_worker(
        bus.jobs.clone(),
        QUEUE,
        jobs,
        options,
        stop.clone(),
    ));
    let subscriber = run_subscriber(bus.events.clone(), TOPIC, "audit", events, stop.clone());
    tokio::spawn(subscriber);
    (rx, stop)
}

async fn receive(
    mut seen: mpsc::UnboundedReceiver<(String, Option<String>)>,
    count: usize,
) -> Vec<(String, Option<String>)> {
    let mut handled = Vec::new();
    while handled.len() < count {
        let next = tokio::time::timeout(WAIT, seen.recv())
            .await
            .expect("messages are handled in time")
            .expect("consumers are running");
        handled.push(next);
    }
    handled
}
