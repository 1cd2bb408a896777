//! The conformance suite every `OrdersStore` adapter passes.

use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;
use zocalo_contracts::orders::{OrderPaid, SoldItem};
use zocalo_orders::domain::{ItemInput, OrderInput};
use zocalo_orders::payment::Charge;
use zocalo_orders::store::{self, Created, OrdersStore};
use zocalo_store::DatabaseSettings;
use zocalo_testkit::{Backend, TestDatabase, backend_tests};

backend_tests!(
    one_charge_per_order_whatever_the_retries,
    transitions_are_conditional,
    a_sale_is_recorded_once_per_event,
    an_idempotency_key_creates_one_order,
);

async fn open(backend: Backend) -> (Arc<dyn OrdersStore>, TestDatabase) {
    let db = zocalo_testkit::database(backend).await.unwrap();
    let settings = DatabaseSettings {
        url: db.url.clone(),
        read_url: None,
        max_connections: 8,
        ..DatabaseSettings::default()
    };
    (store::open(&settings).await.unwrap(), db)
}

fn new_order(buyer: Uuid) -> zocalo_orders::domain::NewOrder {
    OrderInput {
        items: vec![ItemInput {
            book_id: Uuid::now_v7(),
            quantity: 1,
        }],
        shipping_address: "Av. Siempre Viva 742".into(),
        provider: "dhl".into(),
        card: "4242424242424242".into(),
    }
    .validate(buyer)
    .unwrap()
}

async fn one_charge_per_order_whatever_the_retries(backend: Backend) {
    let (store, _db) = open(backend).await;
    let key = Uuid::now_v7();
    let attempts: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            let wanted = if i % 2 == 0 { "captured" } else { "declined" };
            tokio::spawn(async move {
                store
                    .ledger()
                    .record_charge(
                        &Charge {
                            key,
                            amount_cents: 1250,
                            currency: "USD",
                            card_token: "tok_1",
                            card_last4: "4242",
                        },
                        wanted,
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for attempt in attempts {
        outcomes.push(attempt.await.unwrap());
    }
    assert!(
        outcomes.iter().all(|o| *o == outcomes[0]),
        "every retry sees the first outcome: {outcomes:?}"
    );
    assert_eq!(store.ledger().charges(key).await.unwrap().len(), 1);
    if outcomes[0] == "captured" {
        assert!(store.ledger().refund_charge(key).await.unwrap());
        assert!(
            !store.ledger().refund_charge(key).await.unwrap(),
            "refunded once"
        );
    }
}

async fn transitions_are_conditional(backend: Backend) {
    let (store, _db) = open(backend).await;
    let order = match store
        .create_order(new_order(Uuid::now_v7()), "k", vec![])
        .await
        .unwrap()
    {
        Created::New(order) => order,
        other => panic!("{other:?}"),
    };
    assert!(
        !store
            .transition(order.id, &["reserved"], "paid", None, vec![])
            .await
            .unwrap()
    );
    assert!(
        store
            .transition(
                order.id,
                &["pending"],
                "failed",
                Some("no stock".into()),
                vec![]
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .transition(order.id, &["pending"], "cancelled", None, vec![])
            .await
            .unwrap()
    );
    let failed = store.order(order.id).await.unwrap().unwrap();
    assert_eq!(
        (failed.status.as_str(), failed.failure_reason.as_deref()),
        ("failed", Some("no stock"))
    );
    assert!(
        !store
            .set_reservation(order.id, "held", "released")
            .await
            .unwrap()
    );
}

async fn a_sale_is_recorded_once_per_event(backend: Backend) {
    let (store, _db) = open(backend).await;
    let seller = Uuid::now_v7();
    let paid = OrderPaid {
        order_id: Uuid::now_v7(),
        buyer_id: Uuid::now_v7(),
        items: vec![SoldItem {
            book_id: Uuid::now_v7(),
            seller_id: seller,
            title: "Rayuela".into(),
            quantity: 2,
            unit_price_cents: 1500,
            currency: "USD".into(),
        }],
        total_cents: 3000,
        currency: "USD".into(),
        paid_at: Utc::now(),
    };
    let event = Uuid::now_v7();
    assert!(store.record_sale(event, &paid).await.unwrap());
    assert!(
        !store.record_sale(event, &paid).await.unwrap(),
        "a redelivered event changes nothing"
    );
    let sales = store.sales_of(seller, 10).await.unwrap();
    assert_eq!(sales.len(), 1);
    assert_eq!(sales[0].quantity, 2);
}

async fn an_idempotency_key_creates_one_order(backend: Backend) {
    let (store, _db) = open(backend).await;
    let buyer = Uuid::now_v7();
    let template = new_order(buyer);
    let attempts: Vec<_> = (0..10)
        .map(|_| {
            let store = store.clone();
            let mut order = template.clone();
            order.id = Uuid::now_v7();
            tokio::spawn(async move { store.create_order(order, "same", vec![]).await.unwrap() })
        })
        .collect();
    let mut ids = Vec::new();
    let mut created = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Created::New(order) => {
                created += 1;
                ids.push(order.id);
            }
            Created::Existing {
                order,
                same_request,
            } => {
                assert!(same_request);
                ids.push(order.id);
            }
        }
    }
    assert_eq!(created, 1);
    assert!(ids.iter().all(|id| *id == ids[0]));
    assert_eq!(store.orders_of(buyer, None, 10).await.unwrap().len(), 1);
}
