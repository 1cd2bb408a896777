//! The conformance suite every `ReviewsStore` adapter passes: the schema,
//! not only the handlers, refuses invalid data.

use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;
use zocalo_reviews::domain::{CameraInput, ContentQuery, NewReview, Target};
use zocalo_reviews::store::{self, ReviewsStore};
use zocalo_store::{DatabaseSettings, StoreError};
use zocalo_testkit::{Backend, TestDatabase, backend_tests};

backend_tests!(
    brand_and_model_are_unique_ignoring_case,
    ratings_and_targets_are_enforced_by_the_database,
    search_and_filters_agree,
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
    store
        .create_camera(camera("Fujifilm", "X-S20"))
        .await
        .unwrap();
    let duplicate = store.create_camera(camera("FUJIFILM", "x-s20")).await;
    assert!(
        matches!(duplicate, Err(StoreError::Conflict(_))),
        "{duplicate:?}"
    );
}

async fn ratings_and_targets_are_enforced_by_the_database(backend: Backend) {
    let (store, _db) = open(backend).await;
    let cam = store.create_camera(camera("Pentax", "K-3")).await.unwrap();
    let out_of_range = store
        .create_review(review(Target::Camera(cam.id), 9, "bad"))
        .await;
    assert!(
        matches!(out_of_range, Err(StoreError::Constraint(_))),
        "{out_of_range:?}"
    );
    let dangling = store
        .create_review(review(Target::Lens(Uuid::now_v7()), 3, "dangling"))
        .await;
    assert!(
        matches!(dangling, Err(StoreError::Constraint(_))),
        "{dangling:?}"
    );
    let ok = store
        .create_review(review(Target::Camera(cam.id), 3, "fine"))
        .await
        .unwrap();
    assert_eq!(ok.camera_id, Some(cam.id));
    assert_eq!(ok.lens_id, None);
}

async fn search_and_filters_agree(backend: Backend) {
    let (store, _db) = open(backend).await;
    let cam = store
        .create_camera(camera("Panasonic", "S5"))
        .await
        .unwrap();
    store
        .create_review(review(Target::Camera(cam.id), 4, "stabilised video"))
        .await
        .unwrap();
    store
        .create_review(review(Target::Camera(cam.id), 2, "noisy shutter"))
        .await
        .unwrap();
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
