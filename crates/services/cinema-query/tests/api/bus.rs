//! The projector inside the service, fed through the real bus (SQLite, and
//! NATS JetStream when `ZOCALO_TEST_NATS_URL` is set): a burst of events,
//! duplicated and shuffled, ends in the read model the events describe, and
//! the lag metric is exported.

use std::time::{Duration, Instant};

use zocalo_bus::Event;
use zocalo_contracts::cinema::TOPIC;
use zocalo_testkit::{Backend, backend_tests};

use crate::api::{TestApp, spawn};
use crate::projection::{open, snapshot};
use crate::world::{Told, World, apply_all};

backend_tests!(a_burst_through_the_bus_converges_and_reports_its_lag);

/// SQLite bus with SQLite stores; NATS (when configured) with PostgreSQL.
fn bus_url(backend: Backend, dir: &std::path::Path) -> String {
    match (backend, zocalo_testkit::nats::nats_url()) {
        (Backend::Postgres, Some(nats)) => {
            format!("{nats}?prefix=cq{}", uuid::Uuid::new_v4().simple())
        }
        _ => format!("sqlite://{}", dir.join("bus.db").display()),
    }
}

async fn a_burst_through_the_bus_converges_and_reports_its_lag(backend: Backend) {
    let world = World::new();
    let (reference, _db) = open(backend).await;
    apply_all(&reference, &world.events).await;
    let expected = snapshot(reference.as_ref()).await;

    let dir = tempfile::tempdir().unwrap();
    let bus_url = bus_url(backend, dir.path());
    let app: TestApp = spawn(backend, |s| {
        s.bus_url = bus_url.clone();
        s.projector = true;
    })
    .await;
    let bus = zocalo_bus::connect(&bus_url).await.unwrap();
    // Every event twice, the second copies in reverse order. The copies get
    // ids of their own: the buses drop a message whose id they have seen,
    // and the point is to make the projector see the same change again.
    let mut deliveries = world.events.clone();
    deliveries.extend(world.events.iter().rev().map(|told| Told {
        id: uuid::Uuid::now_v7(),
        ..told.clone()
    }));
    for told in &deliveries {
        let event = Event {
            id: told.id,
            topic: TOPIC.into(),
            kind: told.kind.into(),
            payload: told.payload.clone(),
            occurred_at: told.occurred_at,
            traceparent: None,
        };
        bus.events.publish(&event).await.unwrap();
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let checkpoint = app.store.checkpoint().await.unwrap();
        if checkpoint.applied + checkpoint.ignored >= deliveries.len() as i64 {
            assert!(
                checkpoint.ignored >= world.events.len() as i64,
                "{checkpoint:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the projector applied {checkpoint:?} of {} deliveries",
            deliveries.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(snapshot(app.store.as_ref()).await, expected);
    world.assert_described_by(app.store.as_ref()).await;

    let metrics = app
        .api
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("cinema_projection_lag_seconds"),
        "lag exported: {metrics}"
    );
    assert!(metrics.contains("cinema_projection_events_total"));
}
