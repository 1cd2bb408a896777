//! The conformance suite every `CinemaStore` adapter passes.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use uuid::Uuid;
use zocalo_bus::Event;
use zocalo_cinema_command::store::{self, CinemaStore, Kind, Record, Saved};
use zocalo_contracts::cinema as contract;
use zocalo_store::DatabaseSettings;
use zocalo_testkit::{Backend, TestDatabase, backend_tests};

backend_tests!(
    the_event_log_pages_without_gaps_under_concurrent_writers,
    a_version_is_written_once,
    references_are_enforced_by_the_database,
    the_event_log_is_append_only,
    concurrent_overlapping_showtimes_are_refused_by_the_store,
);

async fn open(backend: Backend) -> (Arc<dyn CinemaStore>, TestDatabase) {
    let db = zocalo_testkit::database(backend).await.unwrap();
    let settings = DatabaseSettings {
        url: db.url.clone(),
        max_connections: 8,
        ..DatabaseSettings::default()
    };
    (store::open(&settings).await.unwrap(), db)
}

fn chain(id: Uuid, version: i64) -> Record {
    Record {
        kind: Kind::Chain,
        id,
        version,
        parent: None,
        doc: json!({"chain_id": id, "version": version, "name": "c", "description": ""}),
        slot: None,
    }
}

fn saved(record: &Record) -> Vec<Event> {
    vec![Event::new(
        contract::TOPIC,
        contract::CHAIN_SAVED,
        record.doc.clone(),
    )]
}

const WRITERS: usize = 8;
const WRITES_EACH: usize = 25;

/// Writers append while a reader pages with `after`: the reader must end up
/// with exactly the whole log, in order — an event committing late with a
/// lower number than one already read would be skipped for good.
async fn the_event_log_pages_without_gaps_under_concurrent_writers(backend: Backend) {
    let (store, _db) = open(backend).await;
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..WRITES_EACH {
                    let record = chain(Uuid::now_v7(), 1);
                    let events = saved(&record);
                    assert_eq!(store.save(record, events).await.unwrap(), Saved::Saved);
                }
            })
        })
        .collect();
    let total = WRITERS * WRITES_EACH;
    let mut seen = Vec::new();
    let mut after = 0;
    // Bounded: every pass either reads something or sleeps a little.
    for _ in 0..10_000 {
        let page = store.events_after(after, 7).await.unwrap();
        if let Some(last) = page.last() {
            after = last.seq;
        } else if seen.len() == total {
            break;
        } else {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        seen.extend(page);
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let whole = store.events_after(0, 10_000).await.unwrap();
    assert_eq!(whole.len(), total);
    assert_eq!(
        seen, whole,
        "the paging reader saw the whole log, once, in order"
    );
    let seqs: Vec<i64> = whole.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=total as i64).collect::<Vec<_>>(), "no gaps");
}

async fn a_version_is_written_once(backend: Backend) {
    let (store, _db) = open(backend).await;
    let id = Uuid::now_v7();
    let first = chain(id, 1);
    assert_eq!(
        store.save(first.clone(), saved(&first)).await.unwrap(),
        Saved::Saved
    );
    let attempts: Vec<_> = (0..10)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let next = chain(id, 2);
                let events = saved(&next);
                store.save(next, events).await.unwrap()
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for attempt in attempts {
        outcomes.push(attempt.await.unwrap());
    }
    assert_eq!(outcomes.iter().filter(|o| **o == Saved::Saved).count(), 1);
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Saved::Saved | Saved::Stale))
    );
    assert_eq!(
        store.events_after(0, 100).await.unwrap().len(),
        2,
        "a refused write appends nothing"
    );
    assert_eq!(
        store.delete(Kind::Chain, id, 1, vec![]).await.unwrap(),
        Saved::Stale
    );
}

async fn references_are_enforced_by_the_database(backend: Backend) {
    let (store, _db) = open(backend).await;
    let orphan = Record {
        kind: Kind::Cinema,
        id: Uuid::now_v7(),
        version: 1,
        parent: Some(Uuid::now_v7()),
        doc: json!({}),
        slot: None,
    };
    assert_eq!(store.save(orphan, vec![]).await.unwrap(), Saved::Reference);
    let parent = chain(Uuid::now_v7(), 1);
    store.save(parent.clone(), vec![]).await.unwrap();
    let child = Record {
        kind: Kind::Cinema,
        id: Uuid::now_v7(),
        version: 1,
        parent: Some(parent.id),
        doc: json!({}),
        slot: None,
    };
    assert_eq!(store.save(child, vec![]).await.unwrap(), Saved::Saved);
    let tombstone = Event::new(contract::TOPIC, contract::CHAIN_DELETED, json!({}));
    assert_eq!(
        store
            .delete(Kind::Chain, parent.id, 1, vec![tombstone])
            .await
            .unwrap(),
        Saved::Reference
    );
    assert!(
        store.events_after(0, 10).await.unwrap().is_empty(),
        "the refused delete appended nothing"
    );
    assert!(store.load(Kind::Chain, parent.id).await.unwrap().is_some());
}

/// The log refuses updates and deletes (a trigger on both engines).
async fn the_event_log_is_append_only(backend: Backend) {
    let (store, db) = open(backend).await;
    let record = chain(Uuid::now_v7(), 1);
    store.save(record.clone(), saved(&record)).await.unwrap();
    let refused = match backend {
        Backend::Sqlite => {
            let path = db.url.trim_start_matches("sqlite://").to_owned();
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.execute("DELETE FROM event_log", []).is_err()
                && conn.execute("UPDATE event_log SET kind = 'x'", []).is_err()
        }
        Backend::Postgres => {
            let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            client.execute("DELETE FROM event_log", &[]).await.is_err()
                && client
                    .execute("UPDATE event_log SET kind = 'x'", &[])
                    .await
                    .is_err()
        }
    };
    assert!(refused);
    assert_eq!(store.events_after(0, 10).await.unwrap().len(), 1);
}

fn record(kind: Kind, id: Uuid, parent: Option<Uuid>) -> Record {
    Record {
        kind,
        id,
        version: 1,
        parent,
        doc: json!({}),
        slot: None,
    }
}

fn slot_at(room: Uuid, movie: Uuid, minutes: i64) -> Record {
    let starts_at = chrono::DateTime::parse_from_rfc3339("2030-01-01T18:00:00Z")
        .unwrap()
        .to_utc()
        + chrono::Duration::minutes(minutes);
    Record {
        kind: Kind::Showtime,
        id: Uuid::now_v7(),
        version: 1,
        parent: None,
        doc: json!({}),
        slot: Some(store::Slot {
            room_id: room,
            movie_id: movie,
            starts_at,
            ends_at: starts_at + chrono::Duration::minutes(120),
            scheduled: true,
        }),
    }
}

/// Showtimes written straight to the store, all at once, with slots that
/// all overlap: one is saved, every other is told which one it overlaps —
/// the exclusion constraint on PostgreSQL, the writer's check on SQLite.
async fn concurrent_overlapping_showtimes_are_refused_by_the_store(backend: Backend) {
    let (store, db) = open(backend).await;
    let (chain, cinema, room, movie) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    for r in [
        record(Kind::Chain, chain, None),
        record(Kind::Cinema, cinema, Some(chain)),
        record(Kind::Room, room, Some(cinema)),
        record(Kind::Movie, movie, None),
    ] {
        assert_eq!(store.save(r, vec![]).await.unwrap(), Saved::Saved);
    }
    let attempts: Vec<_> = (0..12)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let showtime = slot_at(room, movie, (i % 4) * 30);
                let id = showtime.id;
                (id, store.save(showtime, vec![]).await.unwrap())
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for attempt in attempts {
        outcomes.push(attempt.await.unwrap());
    }
    let saved: Vec<Uuid> = outcomes
        .iter()
        .filter(|(_, o)| *o == Saved::Saved)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(saved.len(), 1, "{outcomes:?}");
    for (_, outcome) in &outcomes {
        assert!(
            *outcome == Saved::Saved || *outcome == Saved::Overlaps(saved[0]),
            "{outcome:?}"
        );
    }
    // Back to back is no overlap; a cancelled showtime holds no slot.
    let next = slot_at(room, movie, 90 + 120);
    assert_eq!(store.save(next, vec![]).await.unwrap(), Saved::Saved);
    let mut cancelled = slot_at(room, movie, 30);
    cancelled.slot.as_mut().unwrap().scheduled = false;
    assert_eq!(store.save(cancelled, vec![]).await.unwrap(), Saved::Saved);
    if backend == Backend::Postgres {
        // The constraint itself, without the store's friendly pre-check.
        let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let refused = client
            .execute(
                "INSERT INTO showtimes (id, room_id, movie_id, version, starts_at, ends_at, status, doc) \
                 SELECT $1, room_id, movie_id, 1, starts_at + interval '1 minute', ends_at, 'scheduled', doc \
                 FROM showtimes WHERE id = $2",
                &[&Uuid::now_v7(), &saved[0]],
            )
            .await
            .unwrap_err();
        let db_error = refused.as_db_error().unwrap();
        assert_eq!(db_error.constraint(), Some("showtimes_no_overlap"));
    }
}
