//! The conformance suite every `AuthStore` adapter passes.

use std::sync::Arc;

use chrono::{Duration, Utc};
use uuid::Uuid;
use zocalo_auth::domain::{DisplayName, Email, NewUser, NextRefresh, RefreshOutcome, Role};
use zocalo_auth::store::{self, AuthStore};
use zocalo_store::{DatabaseSettings, StoreError};
use zocalo_testkit::{Backend, TestDatabase, backend_tests};

backend_tests!(
    emails_are_unique,
    roles_need_an_existing_user,
    a_refresh_token_rotates_once,
    concurrent_rotations_of_one_token_yield_one_winner,
    expired_and_revoked_tokens_are_invalid,
);

async fn open(backend: Backend) -> (Arc<dyn AuthStore>, TestDatabase) {
    let db = zocalo_testkit::database(backend).await.unwrap();
    let settings = DatabaseSettings {
        url: db.url.clone(),
        read_url: None,
        max_connections: 4,
        ..DatabaseSettings::default()
    };
    (store::open(&settings).await.unwrap(), db)
}

fn new_user(email: &str) -> NewUser {
    NewUser {
        id: Uuid::now_v7(),
        email: Email::parse(email).unwrap(),
        name: DisplayName::parse("Ana").unwrap(),
        password_hash: "hash".into(),
        created_at: Utc::now(),
    }
}

async fn emails_are_unique(backend: Backend) {
    let (store, _db) = open(backend).await;
    let user = store
        .create_user(new_user("ana@example.com"))
        .await
        .unwrap();
    assert_eq!(
        store.user(user.id).await.unwrap().unwrap().email,
        "ana@example.com"
    );
    let duplicate = store.create_user(new_user("ana@example.com")).await;
    assert!(
        matches!(duplicate, Err(StoreError::Conflict(_))),
        "{duplicate:?}"
    );
    assert!(
        store
            .credentials("ana@example.com")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .credentials("bob@example.com")
            .await
            .unwrap()
            .is_none()
    );
}

async fn roles_need_an_existing_user(backend: Backend) {
    let (store, _db) = open(backend).await;
    let user = store
        .create_user(new_user("ana@example.com"))
        .await
        .unwrap();
    assert!(store.grant_role(user.id, Role::Editor).await.unwrap());
    assert!(store.grant_role(user.id, Role::Admin).await.unwrap());
    assert_eq!(
        store.user(user.id).await.unwrap().unwrap().roles,
        ["admin", "editor"]
    );
    assert!(store.revoke_role(user.id, Role::Admin).await.unwrap());
    assert_eq!(
        store.user(user.id).await.unwrap().unwrap().roles,
        ["editor"]
    );
    assert!(
        !store
            .grant_role(Uuid::new_v4(), Role::Editor)
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_role(Uuid::new_v4(), Role::Editor)
            .await
            .unwrap()
    );
}

fn next(hash: &str) -> NextRefresh {
    NextRefresh {
        hash: hash.into(),
        expires_at: Utc::now() + Duration::hours(1),
    }
}

async fn a_refresh_token_rotates_once(backend: Backend) {
    let (store, _db) = open(backend).await;
    let family = Uuid::new_v4();
    let now = Utc::now();
    store
        .insert_refresh("t1", family, "sub", now + Duration::hours(1), now)
        .await
        .unwrap();
    let rotated = store
        .rotate_refresh("t1", next("t2"), Utc::now())
        .await
        .unwrap();
    assert_eq!(
        rotated,
        RefreshOutcome::Rotated {
            subject: "sub".into(),
            family
        }
    );
    let reused = store
        .rotate_refresh("t1", next("t3"), Utc::now())
        .await
        .unwrap();
    assert_eq!(reused, RefreshOutcome::Reused { family });
    let successor = store
        .rotate_refresh("t2", next("t4"), Utc::now())
        .await
        .unwrap();
    assert_eq!(
        successor,
        RefreshOutcome::Invalid,
        "reuse revoked the successor"
    );
    assert_eq!(
        store
            .rotate_refresh("nope", next("t5"), Utc::now())
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
}

async fn concurrent_rotations_of_one_token_yield_one_winner(backend: Backend) {
    let (store, _db) = open(backend).await;
    let family = Uuid::new_v4();
    let now = Utc::now();
    store
        .insert_refresh("t", family, "sub", now + Duration::hours(1), now)
        .await
        .unwrap();
    let attempts: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .rotate_refresh("t", next(&format!("n{i}")), Utc::now())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for attempt in attempts {
        outcomes.push(attempt.await.unwrap());
    }
    let winners: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o, RefreshOutcome::Rotated { .. }))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .filter(|o| **o == RefreshOutcome::Reused { family })
            .count()
            == 9
    );
    // The winner's successor was revoked by the reuse that followed it.
    let successor = format!("n{}", winners[0]);
    assert_eq!(
        store
            .rotate_refresh(&successor, next("z"), Utc::now())
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
}

async fn expired_and_revoked_tokens_are_invalid(backend: Backend) {
    let (store, _db) = open(backend).await;
    let now = Utc::now();
    store
        .insert_refresh(
            "old",
            Uuid::new_v4(),
            "sub",
            now - Duration::seconds(1),
            now - Duration::hours(1),
        )
        .await
        .unwrap();
    assert_eq!(
        store.rotate_refresh("old", next("x"), now).await.unwrap(),
        RefreshOutcome::Invalid
    );
    let family = Uuid::new_v4();
    store
        .insert_refresh("live", family, "sub", now + Duration::hours(1), now)
        .await
        .unwrap();
    store.revoke_subject("sub", now).await.unwrap();
    assert_eq!(
        store.rotate_refresh("live", next("y"), now).await.unwrap(),
        RefreshOutcome::Invalid
    );
    assert_eq!(
        store.refresh_owner("live").await.unwrap(),
        Some((family, "sub".into()))
    );
}
