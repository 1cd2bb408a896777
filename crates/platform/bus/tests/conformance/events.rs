//! The `EventBus` contract and `run_subscriber`: groups, members,
//! redelivery.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use zocalo_bus::{Event, EventBus, EventHandler, JobError, run_subscriber};

use crate::support::{Kind, TestBus, eventually};

bus_tests!(
    every_group_gets_every_event,
    members_of_a_group_share_the_events,
    unacked_event_is_delivered_again,
    subscriber_redelivers_an_event_its_handler_failed,
);

const SHORT: Duration = Duration::from_millis(200);

fn event(topic: &str, n: u32) -> Event {
    Event::new(topic, "order.paid", json!({"n": n}))
}

/// Take and ack everything `group` has pending.
async fn drain(events: &dyn EventBus, topic: &str, group: &str) -> Vec<Event> {
    let mut got = Vec::new();
    for _ in 0..100 {
        let Some(event) = events.next(topic, group, SHORT).await.unwrap() else {
            break;
        };
        events.ack(topic, group, &event).await.unwrap();
        got.push(event);
    }
    got
}

async fn every_group_gets_every_event(kind: Kind) {
    let test = TestBus::new(kind).await;
    let events = test.bus.events.as_ref();
    let published: Vec<Event> = (0..5).map(|n| event("orders", n)).collect();
    for e in &published {
        events.publish(e).await.unwrap();
    }
    events.publish(&event("other", 9)).await.unwrap();

    for group in ["billing", "shipping"] {
        assert_eq!(
            drain(events, "orders", group).await,
            published,
            "{group} sees every event, in order"
        );
    }
    assert!(
        events
            .next("orders", "billing", SHORT)
            .await
            .unwrap()
            .is_none(),
        "acked events stay acked"
    );
    let later = event("orders", 5);
    events.publish(&later).await.unwrap();
    assert_eq!(drain(events, "orders", "billing").await, [later]);
}

async fn members_of_a_group_share_the_events(kind: Kind) {
    let test = TestBus::new(kind).await;
    // Each member has its own connection, as separate processes would.
    let members = [test.bus.events.clone(), test.connect_again().await.events];
    let published: Vec<Uuid> = {
        let mut ids = Vec::new();
        for n in 0..20 {
            let e = event("orders", n);
            test.bus.events.publish(&e).await.unwrap();
            ids.push(e.id);
        }
        ids
    };
    let handled: Arc<Mutex<Vec<(usize, Uuid)>>> = Arc::default();
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    for (member, events) in members.into_iter().enumerate() {
        let record = handled.clone();
        let handler: EventHandler = Arc::new(move |event| {
            let record = record.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                record.lock().unwrap().push((member, event.id));
                Ok(())
            }
            .boxed()
        });
        tasks.push(tokio::spawn(run_subscriber(
            events,
            "orders",
            "projector",
            handler,
            shutdown.clone(),
        )));
    }
    eventually("every event handled", Duration::from_secs(10), async || {
        (handled.lock().unwrap().len() >= published.len()).then_some(())
    })
    .await;
    // Time for a wrongful second delivery to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();
    for task in tasks {
        task.await.unwrap();
    }

    let handled = handled.lock().unwrap();
    let mut per_event: HashMap<Uuid, usize> = HashMap::new();
    for (_, id) in handled.iter() {
        *per_event.entry(*id).or_default() += 1;
    }
    assert!(
        published.iter().all(|id| per_event.get(id) == Some(&1)),
        "each event once in the group"
    );
    for member in 0..2 {
        assert!(
            handled.iter().any(|(m, _)| *m == member),
            "member {member} took a share"
        );
    }
}

async fn unacked_event_is_delivered_again(kind: Kind) {
    let test = TestBus::with(kind, "ack_wait_ms=600").await;
    let events = test.bus.events.as_ref();
    let published = event("orders", 1);
    events.publish(&published).await.unwrap();

    let delivered_at = Instant::now();
    let first = events
        .next("orders", "g", Duration::from_secs(2))
        .await
        .unwrap()
        .expect("the event");
    assert_eq!(first, published);
    // The member dies without acking: invisible to the group for a while...
    assert!(events.next("orders", "g", SHORT).await.unwrap().is_none());
    // ...then delivered again.
    let again = events
        .next("orders", "g", Duration::from_secs(3))
        .await
        .unwrap()
        .expect("redelivery");
    assert!(delivered_at.elapsed() >= Duration::from_millis(500));
    assert_eq!(again.id, published.id);
    events.ack("orders", "g", &again).await.unwrap();
    assert!(events.next("orders", "g", SHORT).await.unwrap().is_none());

    // A nack hands it back sooner than the ack deadline.
    let second = event("orders", 2);
    events.publish(&second).await.unwrap();
    let got = events
        .next("orders", "g", Duration::from_secs(2))
        .await
        .unwrap()
        .expect("event");
    events
        .nack("orders", "g", &got, Duration::from_millis(50))
        .await
        .unwrap();
    let back = events
        .next("orders", "g", Duration::from_millis(500))
        .await
        .unwrap()
        .expect("after nack");
    assert_eq!(back.id, second.id);
    events.ack("orders", "g", &back).await.unwrap();
}

async fn subscriber_redelivers_an_event_its_handler_failed(kind: Kind) {
    let test = TestBus::new(kind).await;
    let published = event("orders", 1);
    test.bus.events.publish(&published).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let count = calls.clone();
    let handler: EventHandler = Arc::new(move |_| {
        let call = count.fetch_add(1, Ordering::SeqCst);
        let outcome = if call == 0 {
            Err(JobError::retry("database busy"))
        } else {
            Ok(())
        };
        std::future::ready(outcome).boxed()
    });
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_subscriber(
        test.bus.events.clone(),
        "orders",
        "g",
        handler,
        shutdown.clone(),
    ));
    eventually("the second delivery", Duration::from_secs(5), async || {
        (calls.load(Ordering::SeqCst) >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();
    task.await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2, "acked after it succeeded");
    assert!(
        test.bus
            .events
            .next("orders", "g", SHORT)
            .await
            .unwrap()
            .is_none()
    );
}
