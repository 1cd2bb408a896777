//! The outbox against both service stores: only committed rows are sent,
//! a crash between publishing and marking loses nothing, and concurrent
//! relays send each row once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use zocalo_bus::outbox::{self, Message, Source};
use zocalo_bus::{Bus, BusError, Event, EventBus, JobOptions, inbox};
use zocalo_testkit::{Backend, backend_tests};

use crate::support::{Kind, TestBus, bounded, eventually, service_store};

backend_tests!(
    committed_rows_are_relayed_and_rolled_back_rows_are_not,
    relay_crash_after_publishing_loses_nothing_and_duplicates_are_dropped,
    concurrent_relays_send_each_row_once,
    background_relay_sends_on_wake,
);

const VISIBILITY: Duration = Duration::from_secs(30);
const SHORT: Duration = Duration::from_millis(200);

/// Write `messages` in one transaction, as a service does beside its own
/// state change, and commit or roll back.
async fn write(source: &Source, messages: Vec<Message>, commit: bool) {
    match source {
        Source::Sqlite(pool) => pool
            .write(move |conn| {
                let tx = conn.transaction()?;
                for message in &messages {
                    outbox::insert_sqlite(&tx, message)?;
                }
                if commit {
                    tx.commit()?
                } else {
                    tx.rollback()?
                }
                Ok(())
            })
            .await
            .unwrap(),
        Source::Postgres(pools) => {
            let mut client = pools.writer().await.unwrap();
            let tx = client.transaction().await.unwrap();
            for message in &messages {
                outbox::insert_postgres(&tx, message).await.unwrap();
            }
            if commit {
                tx.commit().await.unwrap()
            } else {
                tx.rollback().await.unwrap()
            }
        }
    }
}

/// What a consumer does with a delivery: record its id with the effect, in
/// one committed transaction; true when the effect happened.
async fn apply_once(source: &Source, id: Uuid) -> bool {
    match source {
        Source::Sqlite(pool) => pool
            .write(move |conn| {
                let tx = conn.transaction()?;
                let first = inbox::record_sqlite(&tx, id)?;
                tx.commit()?;
                Ok(first)
            })
            .await
            .unwrap(),
        Source::Postgres(pools) => {
            let mut client = pools.writer().await.unwrap();
            let tx = client.transaction().await.unwrap();
            let first = inbox::record_postgres(&tx, id).await.unwrap();
            tx.commit().await.unwrap();
            first
        }
    }
}

async fn committed_rows_are_relayed_and_rolled_back_rows_are_not(backend: Backend) {
    bounded(async {
        let (source, _db) = service_store(backend).await;
        let test = TestBus::new(Kind::Sqlite).await;
        let paid = Event::new("orders", "order.paid", json!({"order": 1}));
        let ship = Message::job("shipping", json!({"order": 1}), JobOptions::default());
        write(
            &source,
            vec![Message::Event(paid.clone()), ship.clone()],
            true,
        )
        .await;
        let ghost = Event::new("orders", "order.ghost", json!({}));
        write(&source, vec![Message::Event(ghost)], false).await;

        assert_eq!(outbox::relay_once(&source, &test.bus).await.unwrap(), 2);
        assert_eq!(
            outbox::relay_once(&source, &test.bus).await.unwrap(),
            0,
            "sent rows are marked"
        );

        let events = test.bus.events.as_ref();
        let got = events
            .next("orders", "g", SHORT)
            .await
            .unwrap()
            .expect("the committed event");
        assert_eq!(got, paid);
        events.ack("orders", "g", &got).await.unwrap();
        assert!(
            events.next("orders", "g", SHORT).await.unwrap().is_none(),
            "no rolled-back event"
        );
        let job = test
            .bus
            .jobs
            .reserve("shipping", VISIBILITY)
            .await
            .unwrap()
            .expect("the job");
        assert_eq!((job.id, job.payload), (ship.id(), json!({"order": 1})));
    })
    .await
}

/// Publishes, then fails as if the relay died before marking the row.
struct PublishThenCrash(Arc<dyn EventBus>);

#[async_trait]
impl EventBus for PublishThenCrash {
    async fn publish(&self, event: &Event) -> Result<(), BusError> {
        self.0.publish(event).await?;
        Err(BusError::Unavailable("relay died after publishing".into()))
    }
    async fn next(
        &self,
        topic: &str,
        group: &str,
        wait: Duration,
    ) -> Result<Option<Event>, BusError> {
        self.0.next(topic, group, wait).await
    }
    async fn ack(&self, topic: &str, group: &str, event: &Event) -> Result<(), BusError> {
        self.0.ack(topic, group, event).await
    }
}

async fn relay_crash_after_publishing_loses_nothing_and_duplicates_are_dropped(backend: Backend) {
    bounded(async {
        let (source, _db) = service_store(backend).await;
        let test = TestBus::new(Kind::Sqlite).await;
        let crashing = Bus {
            jobs: test.bus.jobs.clone(),
            events: Arc::new(PublishThenCrash(test.bus.events.clone())),
        };
        let paid = Event::new("orders", "order.paid", json!({"order": 2}));
        write(&source, vec![Message::Event(paid.clone())], true).await;

        assert!(outbox::relay_once(&source, &crashing).await.is_err());
        // After the restart the row is still unsent and goes out again.
        assert_eq!(outbox::relay_once(&source, &test.bus).await.unwrap(), 1);
        assert_eq!(outbox::relay_once(&source, &test.bus).await.unwrap(), 0);

        // Whatever reaches the consumer carries the original id, so the
        // consumer's inbox turns the re-send into a no-op.
        let events = test.bus.events.as_ref();
        let mut effects = 0;
        for _ in 0..10 {
            let Some(got) = events.next("orders", "g", SHORT).await.unwrap() else {
                break;
            };
            assert_eq!(got.id, paid.id);
            effects += usize::from(apply_once(&source, got.id).await);
            events.ack("orders", "g", &got).await.unwrap();
        }
        assert!(
            !apply_once(&source, paid.id).await,
            "a redelivery changes nothing"
        );
        assert_eq!(effects, 1);
    })
    .await
}

/// Counts what reaches the bus, slowly enough for two relays to overlap.
struct Counting {
    inner: Arc<dyn EventBus>,
    published: Mutex<HashMap<Uuid, u32>>,
}

#[async_trait]
impl EventBus for Counting {
    async fn publish(&self, event: &Event) -> Result<(), BusError> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        *self.published.lock().unwrap().entry(event.id).or_default() += 1;
        self.inner.publish(event).await
    }
    async fn next(
        &self,
        topic: &str,
        group: &str,
        wait: Duration,
    ) -> Result<Option<Event>, BusError> {
        self.inner.next(topic, group, wait).await
    }
    async fn ack(&self, topic: &str, group: &str, event: &Event) -> Result<(), BusError> {
        self.inner.ack(topic, group, event).await
    }
}

async fn concurrent_relays_send_each_row_once(backend: Backend) {
    bounded(async {
        let (source, _db) = service_store(backend).await;
        let test = TestBus::new(Kind::Sqlite).await;
        let messages: Vec<Message> = (0..250)
            .map(|n| Message::Event(Event::new("orders", "order.paid", json!({"n": n}))))
            .collect();
        let ids: Vec<Uuid> = messages.iter().map(Message::id).collect();
        write(&source, messages, true).await;
        let counting = Arc::new(Counting {
            inner: test.bus.events.clone(),
            published: Mutex::default(),
        });
        let bus = Bus {
            jobs: test.bus.jobs.clone(),
            events: counting.clone(),
        };

        let relay = || async {
            let mut total = 0;
            loop {
                match outbox::relay_once(&source, &bus).await.unwrap() {
                    0 => return total,
                    n => total += n,
                }
            }
        };
        let (first, second) = tokio::join!(relay(), relay());
        assert_eq!(first + second, ids.len());
        let published = counting.published.lock().unwrap();
        assert_eq!(published.len(), ids.len());
        assert!(
            ids.iter().all(|id| published.get(id) == Some(&1)),
            "no row published twice"
        );
    })
    .await
}

async fn background_relay_sends_on_wake(backend: Backend) {
    bounded(async {
        let (source, _db) = service_store(backend).await;
        let test = TestBus::new(Kind::Sqlite).await;
        let wake = Arc::new(tokio::sync::Notify::new());
        let shutdown = CancellationToken::new();
        // The poll interval is far beyond the test: only the wake-up can
        // explain a prompt delivery.
        let relay = tokio::spawn(outbox::run_relay_with_wake(
            source.clone(),
            test.bus.clone(),
            Duration::from_secs(3600),
            wake.clone(),
            shutdown.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let paid = Event::new("orders", "order.paid", json!({}));
        write(&source, vec![Message::Event(paid.clone())], true).await;
        wake.notify_one();
        let events = test.bus.events.as_ref();
        let got = eventually("the relayed event", Duration::from_secs(3), async || {
            events.next("orders", "g", SHORT).await.unwrap()
        })
        .await;
        assert_eq!(got.id, paid.id);
        shutdown.cancel();
        relay.await.unwrap();
    })
    .await
}
