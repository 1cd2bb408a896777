//! The conformance suite every `CinemaStore` adapter passes: the read model
//! is what the events describe, whatever their order, repetition or number
//! of concurrent projectors, and a rebuild from the log gives the same.

use std::sync::Arc;

use axum::Json;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Deserialize;
use uuid::Uuid;
use zocalo_cinema_query::documents::{Doc, Kind};
use zocalo_cinema_query::projector::Projector;
use zocalo_cinema_query::rebuild::{EventLog, rebuild};
use zocalo_cinema_query::store::{self, CinemaStore};
use zocalo_contracts::cinema::{self as contract, Deleted, EventLogPage, LoggedEvent};
use zocalo_http::client::{ClientSettings, ServiceClient};
use zocalo_http::service_auth::ServiceAuth;
use zocalo_store::DatabaseSettings;
use zocalo_testkit::{Backend, TestDatabase, backend_tests};

use crate::world::{Told, World, apply_all, incoming};

backend_tests!(
    events_in_order_describe_the_world,
    duplicated_and_shuffled_events_give_the_same_read_model,
    a_deletion_arriving_before_the_creation_wins,
    concurrent_projectors_converge,
    rebuild_replays_the_log_into_the_same_read_model,
);

pub async fn open(backend: Backend) -> (Arc<dyn CinemaStore>, TestDatabase) {
    let db = zocalo_testkit::database(backend).await.unwrap();
    let settings = DatabaseSettings {
        url: db.url.clone(),
        max_connections: 8,
        ..DatabaseSettings::default()
    };
    (store::open(&settings).await.unwrap(), db)
}

/// The whole read model, comparable between stores of one engine.
pub async fn snapshot(store: &dyn CinemaStore) -> Vec<(Kind, Uuid, i64, bool, serde_json::Value)> {
    let mut docs: Vec<_> = store
        .dump()
        .await
        .unwrap()
        .into_iter()
        .map(|d: Doc| (d.kind, d.id, d.version, d.deleted, d.body))
        .collect();
    docs.sort_by_key(|d| (d.0, d.1));
    docs
}

/// Every event one to three times, in an order fixed by `seed`.
fn duplicated_and_shuffled(events: &[Told], seed: u64) -> Vec<Told> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out: Vec<Told> = events
        .iter()
        .enumerate()
        .flat_map(|(i, e)| std::iter::repeat_n(e.clone(), 1 + (i + seed as usize) % 3))
        .collect();
    out.shuffle(&mut rng);
    out
}

async fn events_in_order_describe_the_world(backend: Backend) {
    let (store, _db) = open(backend).await;
    let world = World::new();
    apply_all(&store, &world.events).await;
    world.assert_described_by(store.as_ref()).await;
    let checkpoint = store.checkpoint().await.unwrap();
    assert_eq!(
        checkpoint.applied + checkpoint.ignored,
        world.events.len() as i64
    );
    assert_eq!(checkpoint.last_event_id, world.events.last().map(|e| e.id));
}

async fn duplicated_and_shuffled_events_give_the_same_read_model(backend: Backend) {
    let world = World::new();
    let (reference, _db) = open(backend).await;
    apply_all(&reference, &world.events).await;
    let expected = snapshot(reference.as_ref()).await;
    for seed in [1, 2, 3] {
        let (store, _db) = open(backend).await;
        let deliveries = duplicated_and_shuffled(&world.events, seed);
        apply_all(&store, &deliveries).await;
        assert_eq!(
            snapshot(store.as_ref()).await,
            expected,
            "seed {seed}: the read model depends on the delivery order"
        );
        world.assert_described_by(store.as_ref()).await;
        let checkpoint = store.checkpoint().await.unwrap();
        assert!(
            checkpoint.ignored >= (deliveries.len() - world.events.len()) as i64,
            "every duplicate is ignored: {checkpoint:?}"
        );
    }
}

async fn a_deletion_arriving_before_the_creation_wins(backend: Backend) {
    let (store, _db) = open(backend).await;
    let world = World::new();
    let gone = world.movie_gone;
    let (deletion, rest): (Vec<Told>, Vec<Told>) = world
        .events
        .iter()
        .cloned()
        .partition(|e| e.kind == contract::MOVIE_DELETED);
    apply_all(&store, &deletion).await;
    apply_all(&store, &rest).await;
    assert!(store.document(Kind::Movie, gone).await.unwrap().is_none());
    let tombstone = snapshot(store.as_ref())
        .await
        .into_iter()
        .find(|d| d.0 == Kind::Movie && d.1 == gone)
        .expect("the deletion is remembered");
    assert_eq!((tombstone.2, tombstone.3), (2, true));
    world.assert_described_by(store.as_ref()).await;

    // A deletion of something never created, then its creation: gone.
    let projector = Projector::new(store.clone());
    let never = Uuid::now_v7();
    let deleted = Told {
        id: Uuid::now_v7(),
        kind: contract::CHAIN_DELETED,
        payload: serde_json::to_value(Deleted {
            id: never,
            version: 2,
        })
        .unwrap(),
        occurred_at: chrono::Utc::now(),
    };
    let created = Told {
        id: Uuid::now_v7(),
        kind: contract::CHAIN_SAVED,
        payload: serde_json::json!({"chain_id": never, "version": 1, "name": "Late", "description": ""}),
        occurred_at: chrono::Utc::now(),
    };
    projector.apply(incoming(&deleted)).await.unwrap();
    let outcome = projector.apply(incoming(&created)).await.unwrap();
    assert_eq!(outcome, zocalo_cinema_query::projector::Outcome::Ignored);
    assert!(store.document(Kind::Chain, never).await.unwrap().is_none());
}

async fn concurrent_projectors_converge(backend: Backend) {
    let world = World::new();
    let (reference, _db) = open(backend).await;
    apply_all(&reference, &world.events).await;
    let expected = snapshot(reference.as_ref()).await;

    let (store, _db) = open(backend).await;
    let projectors: Vec<_> = (0..4)
        .map(|seed| {
            let store = store.clone();
            let deliveries = duplicated_and_shuffled(&world.events, 10 + seed);
            tokio::spawn(async move { apply_all(&store, &deliveries).await })
        })
        .collect();
    for projector in projectors {
        projector.await.unwrap();
    }
    assert_eq!(snapshot(store.as_ref()).await, expected);
}

#[derive(Deserialize)]
struct LogQuery {
    after: i64,
    limit: usize,
}

/// The command side's log endpoint over `events`, for a service token.
fn log_router(events: Vec<LoggedEvent>) -> axum::Router {
    let events = Arc::new(events);
    axum::Router::new().route(
        "/internal/events",
        get(move |headers: HeaderMap, Query(q): Query<LogQuery>| {
            let events = events.clone();
            async move {
                if headers.get("authorization").and_then(|v| v.to_str().ok())
                    != Some("Bearer service-token")
                {
                    return Err(StatusCode::UNAUTHORIZED);
                }
                let page: Vec<LoggedEvent> = events
                    .iter()
                    .filter(|e| e.seq > q.after)
                    .take(q.limit)
                    .cloned()
                    .collect();
                let last = events.last().map_or(0, |e| e.seq);
                let next_after = page.last().map(|e| e.seq).filter(|seq| *seq < last);
                Ok(Json(EventLogPage {
                    events: page,
                    next_after,
                }))
            }
        }),
    )
}

pub fn logged(events: &[Told]) -> Vec<LoggedEvent> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| LoggedEvent {
            seq: i as i64 + 1,
            id: e.id,
            kind: e.kind.into(),
            payload: e.payload.clone(),
            occurred_at: e.occurred_at,
        })
        .collect()
}

async fn rebuild_replays_the_log_into_the_same_read_model(backend: Backend) {
    let world = World::new();
    let (reference, _db) = open(backend).await;
    apply_all(&reference, &world.events).await;
    let expected = snapshot(reference.as_ref()).await;

    // A read model that drifted: part of the story, and a chain the log
    // never mentions.
    let (store, _db) = open(backend).await;
    apply_all(&store, &world.events[..10]).await;
    apply_all(&store, &World::new().events[..2]).await;
    assert_ne!(snapshot(store.as_ref()).await, expected);

    let log = zocalo_testkit::serve::serve(log_router(logged(&world.events))).await;
    let command = ServiceClient::with_instances(
        "cinema-command",
        std::slice::from_ref(&log.url),
        &ClientSettings::default(),
    )
    .unwrap();
    let log = EventLog::new(command, ServiceAuth::Static("service-token".into()), 7);
    let report = rebuild(store.clone(), &log).await.unwrap();
    assert_eq!(report.events, world.events.len() as u64);
    assert!(report.pages >= 4, "read page by page: {report:?}");
    assert_eq!(snapshot(store.as_ref()).await, expected);
    let checkpoint = store.checkpoint().await.unwrap();
    assert_eq!(checkpoint.log_seq, world.events.len() as i64);

    // Without a token the log refuses, and the rebuild says so.
    let refused = EventLog::new(
        ServiceClient::with_instances("cinema-command", &[], &ClientSettings::default()).unwrap(),
        ServiceAuth::Static("wrong".into()),
        7,
    );
    assert!(rebuild(store.clone(), &refused).await.is_err());
    assert_eq!(
        snapshot(store.as_ref()).await,
        expected,
        "a log that cannot be read leaves the read model alone"
    );
}
