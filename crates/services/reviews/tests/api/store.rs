//! The conformance suite every `ReviewsStore` adapter passes: the schema,
//! not only the handlers, refuses invalid data.

use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;
use zocalo_reviews::domain::{Camera, CameraInput, ContentQuery, NewReview, Target};
use zocalo_reviews::store::{self, Created, IdempotencyClaim, ReviewsStore};
use zocalo_store::{DatabaseSettings, Engine, StoreError};
use zocalo_testkit::{Backend, TestDatabase, backend_tests};

backend_tests!(
    brand_and_model_are_unique_ignoring_case,
    ratings_and_targets_are_enforced_by_the_database,
    search_and_filters_agree,
    a_key_creates_once_and_keeps_the_first_answer,
    a_failed_create_leaves_its_key_free,
    keys_older_than_a_day_are_forgotten,
);

async fn open(backend: Backend) -> (Arc<dyn ReviewsStore>, TestDatabase) {
    let db = zocalo_testkit::database(backend).await.unwrap();
    let settings = DatabaseSettings {
        url: db.url.clone(),
        read_url: None,
        max_connections: 4,
        ..DatabaseSettings::default()
    };
    (store::open(&settings).await.unwrap(), db)
}

/// The resource a creating call made now.
fn new<T: std::fmt::Debug>(result: Result<Created<T>, StoreError>) -> T {
    match result.unwrap() {
        Created::New(resource) => resource,
        other => panic!("expected a new resource, got {other:?}"),
    }
}

fn camera(brand: &str, model: &str) -> zocalo_reviews::domain::Camera {
    CameraInput {
        brand: brand.into(),
        model: model.into(),
        sensor: "aps-c".into(),
        megapixels: 26.0,
        released: Some(2022),
    }
    .validate()
    .unwrap()
}

fn review(target: Target, rating: i16, title: &str) -> NewReview {
    NewReview {
        id: Uuid::now_v7(),
        title: title.into(),
        content: format!("{title} content"),
        rating,
        target,
        editor_id: Uuid::now_v7(),
        editor_name: "Ed".into(),
        created_at: Utc::now(),
    }
}

async fn brand_and_model_are_unique_ignoring_case(backend: Backend) {
    let (store, _db) = open(backend).await;
    new(store.create_camera(camera("Fujifilm", "X-S20"), None).await);
    let duplicate = store.create_camera(camera("FUJIFILM", "x-s20"), None).await;
    assert!(
        matches!(duplicate, Err(StoreError::Conflict(_))),
        "{duplicate:?}"
    );
}

async fn ratings_and_targets_are_enforced_by_the_database(backend: Backend) {
    let (store, _db) = open(backend).await;
    let cam = new(store.create_camera(camera("Pentax", "K-3"), None).await);
    let out_of_range = store
        .create_review(review(Target::Camera(cam.id), 9, "bad"), None)
        .await;
    assert!(
        matches!(out_of_range, Err(StoreError::Constraint(_))),
        "{out_of_range:?}"
    );
    let dangling = store
        .create_review(review(Target::Lens(Uuid::now_v7()), 3, "dangling"), None)
        .await;
    assert!(
        matches!(dangling, Err(StoreError::Constraint(_))),
        "{dangling:?}"
    );
    let ok = new(store
        .create_review(review(Target::Camera(cam.id), 3, "fine"), None)
        .await);
    assert_eq!(ok.camera_id, Some(cam.id));
    assert_eq!(ok.lens_id, None);
}

async fn search_and_filters_agree(backend: Backend) {
    let (store, _db) = open(backend).await;
    let cam = new(store.create_camera(camera("Panasonic", "S5"), None).await);
    for (rating, title) in [(4, "stabilised video"), (2, "noisy shutter")] {
        new(store
            .create_review(review(Target::Camera(cam.id), rating, title), None)
            .await);
    }
    let query = |text: &str| ContentQuery {
        text: Some(text.into()),
        limit: 10,
        ..ContentQuery::default()
    };
    let found = store.reviews(query("video")).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].title, "stabilised video");
    assert_eq!(store.reviews(query("shutter")).await.unwrap()[0].rating, 2);
    let stats = store.camera_stats(&[cam.id]).await.unwrap();
    assert_eq!(stats[0].1.review_count, 2);
    assert_eq!(stats[0].1.average_rating, Some(3.0));
}

fn claim(caller: &str, key: &str, request_hash: &str) -> Option<IdempotencyClaim> {
    Some(IdempotencyClaim {
        caller: caller.into(),
        key: key.into(),
        request_hash: request_hash.into(),
    })
}

async fn review_count(store: &dyn ReviewsStore) -> usize {
    let all = ContentQuery {
        limit: 100,
        ..ContentQuery::default()
    };
    store.reviews(all).await.unwrap().len()
}

async fn a_key_creates_once_and_keeps_the_first_answer(backend: Backend) {
    let (store, _db) = open(backend).await;
    let first = new(store
        .create_camera(camera("Leica", "Q3"), claim("ed", "k1", "h1"))
        .await);
    // The same brand and model again: the key is checked before the unique
    // index, so a retry is a replay, not a 409.
    let again = store
        .create_camera(camera("Leica", "Q3"), claim("ed", "k1", "h1"))
        .await
        .unwrap();
    let Created::Existing(record) = again else {
        panic!("expected the first request's record, got {again:?}");
    };
    assert_eq!(record.resource_id, first.id);
    assert_eq!(record.request_hash, "h1");
    let answered: Camera = serde_json::from_str(&record.response_body).unwrap();
    assert_eq!(answered, first);

    // A different kind of request with the key creates nothing; the hash
    // tells the caller it is not a retry.
    let other = store
        .create_review(
            review(Target::Camera(first.id), 4, "sharp"),
            claim("ed", "k1", "h2"),
        )
        .await
        .unwrap();
    assert!(
        matches!(&other, Created::Existing(r) if r.request_hash == "h1" && r.resource_id == first.id),
        "{other:?}"
    );
    assert_eq!(review_count(&*store).await, 0);

    // Keys are per caller.
    let theirs = new(store
        .create_review(
            review(Target::Camera(first.id), 4, "sharp"),
            claim("someone else", "k1", "h2"),
        )
        .await);
    assert_eq!(review_count(&*store).await, 1);
    let replayed = store
        .create_review(
            review(Target::Camera(first.id), 4, "sharp"),
            claim("someone else", "k1", "h2"),
        )
        .await
        .unwrap();
    let Created::Existing(record) = replayed else {
        panic!("expected a replay, got {replayed:?}");
    };
    assert_eq!(record.resource_id, theirs.id);
    let body: serde_json::Value = serde_json::from_str(&record.response_body).unwrap();
    assert_eq!(body["target_model"], "Q3");
    assert_eq!(review_count(&*store).await, 1);
}

async fn a_failed_create_leaves_its_key_free(backend: Backend) {
    let (store, _db) = open(backend).await;
    let dangling = store
        .create_review(
            review(Target::Lens(Uuid::now_v7()), 3, "dangling"),
            claim("ed", "k", "h"),
        )
        .await;
    assert!(
        matches!(dangling, Err(StoreError::Constraint(_))),
        "{dangling:?}"
    );
    let cam = new(store.create_camera(camera("Ricoh", "GR III"), None).await);
    let review = new(store
        .create_review(
            review(Target::Camera(cam.id), 5, "pocket"),
            claim("ed", "k", "h"),
        )
        .await);
    assert_eq!(review.camera_id, Some(cam.id));
}

/// Make every recorded key look `hours` old, straight in the database.
async fn age_keys(db: &TestDatabase, hours: i64) {
    let then = Utc::now() - chrono::TimeDelta::hours(hours);
    match Engine::from_url(&db.url).unwrap() {
        Engine::Sqlite(path) => {
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.execute("UPDATE idempotency_keys SET created_at = ?1", [then])
                .unwrap();
        }
        Engine::Postgres(url) => {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            client
                .execute("UPDATE idempotency_keys SET created_at = $1", &[&then])
                .await
                .unwrap();
        }
    }
}

async fn keys_older_than_a_day_are_forgotten(backend: Backend) {
    let (store, db) = open(backend).await;
    let first = new(store
        .create_camera(camera("Sigma", "fp"), claim("ed", "old", "h"))
        .await);
    age_keys(&db, 23).await;
    let kept = store
        .create_camera(camera("Sigma", "fp L"), claim("ed", "old", "h"))
        .await
        .unwrap();
    assert!(
        matches!(&kept, Created::Existing(r) if r.resource_id == first.id),
        "{kept:?}"
    );
    age_keys(&db, 25).await;
    let second = new(store
        .create_camera(camera("Sigma", "fp L"), claim("ed", "old", "h"))
        .await);
    assert_ne!(second.id, first.id);
}
