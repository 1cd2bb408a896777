//! The conformance suite every `CatalogStore` adapter passes: the schema,
//! not only the handlers, refuses invalid data, and stock moves exactly as
//! the reservation rules say on both engines.

use std::sync::Arc;

use chrono::{Duration, Utc};
use serde_json::json;
use uuid::Uuid;
use zocalo_catalog::domain::{
    BookChanges, BookInput, BookQuery, NewBook, NewReservation, ReservationInput,
    ReservationStatus, ReserveOutcome, ShortfallKind, Sort,
};
use zocalo_catalog::store::{self, CatalogStore};
use zocalo_store::{DatabaseSettings, StoreError};
use zocalo_testkit::{Backend, TestDatabase, backend_tests};

backend_tests!(
    the_database_refuses_negative_stock,
    reservations_hold_every_line_or_none,
    commit_refuses_expired_holds_and_the_sweep_returns_them_once,
    racing_release_and_sweep_return_stock_once,
    racing_returns_restock_once,
    search_filters_and_sorts_agree,
);

async fn open(backend: Backend) -> (Arc<dyn CatalogStore>, TestDatabase) {
    let db = zocalo_testkit::database(backend).await.unwrap();
    let settings = DatabaseSettings {
        url: db.url.clone(),
        read_url: None,
        max_connections: 4,
        ..DatabaseSettings::default()
    };
    (store::open(&settings).await.unwrap(), db)
}

fn new_book(title: &str, author: &str, amount: &str, stock: i64) -> NewBook {
    serde_json::from_value::<BookInput>(json!({
        "title": title, "author": author, "isbn": "0306406152", "condition": "good",
        "description": "plain", "price": {"amount": amount, "currency": "USD"}, "stock": stock
    }))
    .unwrap()
    .validate(Uuid::now_v7())
    .unwrap()
}

fn reservation(lines: &[(Uuid, i64)], ttl_secs: i64) -> NewReservation {
    let items: Vec<_> = lines
        .iter()
        .map(|(book, quantity)| json!({"book_id": book, "quantity": quantity}))
        .collect();
    serde_json::from_value::<ReservationInput>(json!({
        "reservation_id": Uuid::now_v7(), "items": items, "ttl_secs": ttl_secs
    }))
    .unwrap()
    .validate(900)
    .unwrap()
}

async fn stock(store: &Arc<dyn CatalogStore>, id: Uuid) -> i32 {
    store.book(id).await.unwrap().unwrap().stock
}

async fn the_database_refuses_negative_stock(backend: Backend) {
    let (store, _db) = open(backend).await;
    let mut negative = new_book("Minus", "A", "1.00", 0);
    negative.stock = -1;
    let refused = store.create_book(negative).await;
    assert!(
        matches!(refused, Err(StoreError::Constraint(_))),
        "{refused:?}"
    );

    let book = store
        .create_book(new_book("Zero", "A", "1.00", 1))
        .await
        .unwrap();
    let changes = BookChanges {
        stock: Some(-5),
        ..BookChanges::none()
    };
    let refused = store.update_book(book.id, book.seller_id, changes).await;
    assert!(
        matches!(refused, Err(StoreError::Constraint(_))),
        "{refused:?}"
    );
    assert_eq!(stock(&store, book.id).await, 1);

    let someone_else = BookChanges {
        stock: Some(7),
        ..BookChanges::none()
    };
    assert!(
        store
            .update_book(book.id, Uuid::now_v7(), someone_else)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(stock(&store, book.id).await, 1, "only the seller edits");
}

async fn reservations_hold_every_line_or_none(backend: Backend) {
    let (store, _db) = open(backend).await;
    let a = store
        .create_book(new_book("A", "x", "2.00", 3))
        .await
        .unwrap();
    let b = store
        .create_book(new_book("B", "x", "4.00", 1))
        .await
        .unwrap();

    let too_many = reservation(&[(a.id, 2), (b.id, 2)], 60);
    match store.reserve(too_many).await.unwrap() {
        ReserveOutcome::Rejected(shortfalls) => {
            assert_eq!(shortfalls.len(), 1);
            assert_eq!(shortfalls[0].index, 1);
            assert_eq!(
                shortfalls[0].kind,
                ShortfallKind::Insufficient {
                    available: 1,
                    requested: 2
                }
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        (stock(&store, a.id).await, stock(&store, b.id).await),
        (3, 1)
    );

    let fits = reservation(&[(b.id, 1), (a.id, 3)], 60);
    let id = fits.id;
    let ReserveOutcome::Created(held) = store.reserve(fits.clone()).await.unwrap() else {
        panic!("expected a hold");
    };
    assert_eq!(held.status, ReservationStatus::Held);
    assert_eq!(held.items[0].book_id, b.id, "request order kept");
    assert_eq!(held.items[1].unit_price.cents(), 200);
    assert_eq!(
        (stock(&store, a.id).await, stock(&store, b.id).await),
        (0, 0)
    );
    assert_eq!(
        store.reserve(fits).await.unwrap(),
        ReserveOutcome::Existing(held.clone())
    );
    assert_eq!(store.reservation(id).await.unwrap(), Some(held));
    assert_eq!(
        (stock(&store, a.id).await, stock(&store, b.id).await),
        (0, 0)
    );

    assert!(
        store
            .withdraw_book(a.id, a.seller_id, Utc::now())
            .await
            .unwrap()
    );
    let released = store
        .release_reservation(id, Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert!(released.changed);
    assert_eq!(
        stock(&store, a.id).await,
        3,
        "stock returns even to a withdrawn listing"
    );
    let withdrawn = reservation(&[(a.id, 1)], 60);
    let ReserveOutcome::Rejected(shortfalls) = store.reserve(withdrawn).await.unwrap() else {
        panic!("withdrawn listings cannot be reserved");
    };
    assert_eq!(shortfalls[0].kind, ShortfallKind::Unavailable);
}

async fn commit_refuses_expired_holds_and_the_sweep_returns_them_once(backend: Backend) {
    let (store, _db) = open(backend).await;
    let book = store
        .create_book(new_book("Due", "x", "1.00", 4))
        .await
        .unwrap();
    let hold = reservation(&[(book.id, 3)], 60);
    let (id, expires_at) = (hold.id, hold.expires_at);
    assert!(matches!(
        store.reserve(hold).await.unwrap(),
        ReserveOutcome::Created(_)
    ));
    assert_eq!(stock(&store, book.id).await, 1);

    assert_eq!(
        store
            .release_expired(expires_at - Duration::seconds(1))
            .await
            .unwrap(),
        0
    );
    let late = store
        .commit_reservation(id, expires_at + Duration::seconds(1))
        .await
        .unwrap()
        .unwrap();
    assert!(!late.changed, "an expired hold cannot be committed");
    assert_eq!(late.reservation.status, ReservationStatus::Held);

    assert_eq!(
        store.release_expired(expires_at).await.unwrap(),
        1,
        "due at expires_at"
    );
    assert_eq!(store.release_expired(expires_at).await.unwrap(), 0);
    assert_eq!(stock(&store, book.id).await, 4);
    let release = store
        .release_reservation(id, Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert!(!release.changed);
    assert_eq!(release.reservation.status, ReservationStatus::Expired);
    assert_eq!(stock(&store, book.id).await, 4);

    let sold = reservation(&[(book.id, 4)], 60);
    let sold_id = sold.id;
    store.reserve(sold).await.unwrap();
    let committed = store
        .commit_reservation(sold_id, Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert!(committed.changed);
    assert_eq!(
        store
            .release_expired(Utc::now() + Duration::days(2))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        stock(&store, book.id).await,
        0,
        "committed holds never expire"
    );
    assert!(
        store
            .commit_reservation(Uuid::now_v7(), Utc::now())
            .await
            .unwrap()
            .is_none()
    );
}

async fn racing_release_and_sweep_return_stock_once(backend: Backend) {
    let (store, _db) = open(backend).await;
    let book = store
        .create_book(new_book("Race", "x", "1.00", 2))
        .await
        .unwrap();
    for round in 0..20 {
        let hold = reservation(&[(book.id, 2)], 1);
        let id = hold.id;
        let due = hold.expires_at + Duration::seconds(1);
        assert!(matches!(
            store.reserve(hold).await.unwrap(),
            ReserveOutcome::Created(_)
        ));
        let releaser = {
            let store = store.clone();
            tokio::spawn(async move { store.release_reservation(id, due).await })
        };
        let sweeper = {
            let store = store.clone();
            tokio::spawn(async move { store.release_expired(due).await })
        };
        let released = releaser.await.unwrap().unwrap().unwrap();
        let swept = sweeper.await.unwrap().unwrap();
        assert_eq!(
            u64::from(released.changed) + swept,
            1,
            "round {round}: exactly one of them settled the hold"
        );
        assert_eq!(stock(&store, book.id).await, 2, "round {round}");
    }
}

async fn racing_returns_restock_once(backend: Backend) {
    let (store, _db) = open(backend).await;
    let book = store
        .create_book(new_book("Return race", "x", "1.00", 3))
        .await
        .unwrap();
    for round in 0..10 {
        let sale = reservation(&[(book.id, 3)], 60);
        let id = sale.id;
        store.reserve(sale).await.unwrap();
        let early = store.return_reservation(id, Utc::now()).await.unwrap();
        assert!(!early.unwrap().changed, "a hold is not a sale");
        assert!(
            store
                .commit_reservation(id, Utc::now())
                .await
                .unwrap()
                .unwrap()
                .changed
        );
        assert_eq!(stock(&store, book.id).await, 0, "round {round}");
        let returners: Vec<_> = (0..3)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.return_reservation(id, Utc::now()).await })
            })
            .collect();
        let mut changed = 0;
        for returner in returners {
            let returned = returner.await.unwrap().unwrap().unwrap();
            assert_eq!(returned.reservation.status, ReservationStatus::Returned);
            changed += u32::from(returned.changed);
        }
        assert_eq!(changed, 1, "round {round}: exactly one return counted");
        assert_eq!(stock(&store, book.id).await, 3, "round {round}");
    }
    assert!(
        store
            .return_reservation(Uuid::now_v7(), Utc::now())
            .await
            .unwrap()
            .is_none()
    );
}

/// A database made before `returned` existed keeps its reservations, and
/// a sale committed then can be returned after the upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_upgrade_keeps_reservations_and_allows_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.db");
    let (book_id, sale_id, at) = (Uuid::now_v7(), Uuid::now_v7(), Utc::now());
    {
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON;").unwrap();
        let v1 = refinery::Migration::unapplied(
            "V1__init",
            include_str!("../../migrations/sqlite/V1__init.sql"),
        )
        .unwrap();
        refinery::Runner::new(&[v1]).run(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO books (id, seller_id, title, author, author_key, isbn, description, \
             condition, price_cents, currency, stock, status, created_at, updated_at) \
             VALUES (?1, ?2, 'Old', 'A', 'a', '0306406152', 'd', 'good', 500, 'USD', 1, 'active', ?3, ?3)",
            rusqlite::params![book_id, Uuid::now_v7(), at],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO reservations (id, status, expires_at, created_at, updated_at) \
             VALUES (?1, 'committed', ?2, ?2, ?2)",
            rusqlite::params![sale_id, at],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO reservation_items (reservation_id, book_id, quantity, unit_price_cents, \
             currency, title, seller_id, position) VALUES (?1, ?2, 2, 500, 'USD', 'Old', ?3, 0)",
            rusqlite::params![sale_id, book_id, Uuid::now_v7()],
        )
        .unwrap();
    }
    let store: Arc<dyn CatalogStore> = Arc::new(store::SqliteStore::open(&path, 2).unwrap());
    let kept = store.reservation(sale_id).await.unwrap().unwrap();
    assert_eq!(kept.status, ReservationStatus::Committed);
    assert_eq!(kept.items.len(), 1);
    assert_eq!(kept.items[0].quantity, 2);
    let returned = store
        .return_reservation(sale_id, Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert!(returned.changed);
    assert_eq!(stock(&store, book_id).await, 3);
}

async fn search_filters_and_sorts_agree(backend: Backend) {
    let (store, _db) = open(backend).await;
    let cheap = store
        .create_book(new_book("Cheap thrills", "Ann Lee", "1.00", 1))
        .await
        .unwrap();
    let dear = store
        .create_book(new_book("Dear diary", "Bo Lee", "9.00", 1))
        .await
        .unwrap();
    let mid = store
        .create_book(new_book("Middle road", "Cy Day", "5.00", 1))
        .await
        .unwrap();
    let query = |sort, text: Option<&str>, author: Option<&str>| BookQuery {
        text: text.map(str::to_owned),
        author: author.map(str::to_owned),
        sort,
        limit: 10,
        ..BookQuery::default()
    };
    let ids = |books: Vec<zocalo_catalog::domain::Book>| {
        books.into_iter().map(|b| b.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.books(query(Sort::Newest, None, None)).await.unwrap()),
        [mid.id, dear.id, cheap.id]
    );
    assert_eq!(
        ids(store
            .books(query(Sort::PriceAsc, None, None))
            .await
            .unwrap()),
        [cheap.id, mid.id, dear.id]
    );
    assert_eq!(
        ids(store
            .books(query(Sort::PriceDesc, None, Some("lee")))
            .await
            .unwrap()),
        [dear.id, cheap.id]
    );
    assert_eq!(
        ids(store
            .books(query(Sort::Newest, Some("diaries"), None))
            .await
            .unwrap()),
        [dear.id]
    );
    assert!(
        store
            .books(query(Sort::Newest, Some("\"unbalanced"), None))
            .await
            .unwrap()
            .is_empty()
    );
}
