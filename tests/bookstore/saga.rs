use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use uuid::Uuid;
use zocalo_bus::Event;
use zocalo_contracts::orders::{self as contract, OrderPaid, SoldItem};
use zocalo_orders::payment::DECLINING_CARD;
use zocalo_testkit::{Backend, backend_tests};

use crate::harness::{BookStore, Options, id, wait_for_at};

const CARD: &str = "4242424242424242";

backend_tests!(
    two_hundred_buyers_share_ten_books,
    a_paid_order_ships_and_is_delivered,
    a_declined_payment_releases_the_stock,
    an_expired_reservation_refunds_the_payment,
    a_paid_order_cancelled_is_refunded_and_restocked,
    a_crashed_worker_leaves_a_job_that_another_finishes,
    an_order_written_before_a_relay_crash_is_still_processed,
    a_repeated_event_is_counted_once,
);

/// The same saga with NATS JetStream as the bus (stores on SQLite).
mod nats {
    use super::*;

    fn configured() -> bool {
        let set = std::env::var("ZOCALO_TEST_NATS_URL").is_ok();
        if !set {
            eprintln!("ZOCALO_TEST_NATS_URL is unset: NATS variant not run");
        }
        set
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fifty_buyers_share_five_books_over_jetstream() {
        if !configured() {
            return;
        }
        let store = BookStore::start(
            Backend::Sqlite,
            Options {
                nats: true,
                ..Options::default()
            },
        )
        .await;
        let book = store.list_book("Rayuela", 5).await;
        let buyers: Vec<_> = (0..50).map(|_| store.buyer()).collect();
        let mut orders = Vec::new();
        for (i, (_, token)) in buyers.iter().enumerate() {
            orders.push((
                store.place_order(i, token, "buy", book, 1, CARD).await,
                token.clone(),
            ));
        }
        let mut delivered = 0;
        for (order, token) in &orders {
            let settled = store
                .wait_for(token, &id(order), &["delivered", "failed"])
                .await;
            if settled["status"] == "delivered" {
                delivered += 1;
            }
        }
        assert_eq!(delivered, 5);
        assert_eq!(store.stock(book).await, 0);
    }
}

async fn two_hundred_buyers_share_ten_books(backend: Backend) {
    let store = BookStore::start(backend, Options::slow_shipping()).await;
    let book = store.list_book("Rayuela", 10).await;
    let buyers: Vec<_> = (0..200).map(|_| store.buyer()).collect();
    let store = std::sync::Arc::new(store);
    let placed: Vec<_> = buyers
        .iter()
        .enumerate()
        .map(|(i, (_, token))| {
            let (store, token) = (store.clone(), token.clone());
            tokio::spawn(async move { store.place_order(i, &token, "buy", book, 1, CARD).await })
        })
        .collect();
    let mut orders = Vec::new();
    for (order, (_, token)) in placed.into_iter().zip(&buyers) {
        orders.push((order.await.unwrap(), token.clone()));
    }
    let mut paid = Vec::new();
    let mut failed = 0;
    for (order, token) in &orders {
        let settled = store
            .wait_for(
                token,
                &id(order),
                &["paid", "shipped", "delivered", "failed"],
            )
            .await;
        if settled["status"] == "failed" {
            failed += 1;
            assert!(
                settled["failure_reason"]
                    .as_str()
                    .unwrap()
                    .contains("stock"),
                "{settled}"
            );
            assert!(
                store.charges(id(order).parse().unwrap()).await.is_empty(),
                "no charge without stock"
            );
        } else {
            paid.push(id(order).parse::<Uuid>().unwrap());
        }
    }
    assert_eq!((paid.len(), failed), (10, 190));
    assert_eq!(store.stock(book).await, 0);
    for order in paid {
        assert_eq!(
            store.charges(order).await,
            ["captured"],
            "exactly one charge for {order}"
        );
    }
}

async fn a_paid_order_ships_and_is_delivered(backend: Backend) {
    let store = BookStore::start(backend, Options::default()).await;
    let book = store.list_book("Ficciones", 3).await;
    let (_, buyer) = store.buyer();
    let order = store.place_order(0, &buyer, "k1", book, 2, CARD).await;
    let delivered = store.wait_for(&buyer, &id(&order), &["delivered"]).await;
    assert_eq!(delivered["total_cents"], 1998);
    assert_eq!(delivered["reservation"], "committed");
    assert_eq!(delivered["shipment"]["status"], "delivered");
    assert!(
        delivered["shipment"]["tracking_number"]
            .as_str()
            .unwrap()
            .starts_with("EN")
    );
    assert_eq!(store.stock(book).await, 1);

    // The same request again: the same order, still one charge.
    let again = store.place_order(1, &buyer, "k1", book, 2, CARD).await;
    assert_eq!(id(&again), id(&order));
    assert_eq!(
        store.charges(id(&order).parse().unwrap()).await,
        ["captured"]
    );

    // The seller sees the sale (projected from the order.paid event).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let sales: Value = store.orders[0]
            .get("/api/sales")
            .bearer_auth(&store.seller.1)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(sale) = sales.as_array().unwrap().first() {
            assert_eq!(sale["quantity"], 2);
            assert_eq!(sale["title"], "Ficciones");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sale never appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancel = store.orders[0]
        .post(&format!("/api/orders/{}/cancel", id(&order)))
        .bearer_auth(&buyer)
        .send()
        .await
        .unwrap();
    assert_eq!(
        cancel.status(),
        409,
        "a delivered order cannot be cancelled"
    );
}

async fn a_declined_payment_releases_the_stock(backend: Backend) {
    let store = BookStore::start(backend, Options::default()).await;
    let book = store.list_book("El Aleph", 4).await;
    let (_, buyer) = store.buyer();
    let order = store
        .place_order(0, &buyer, "k", book, 3, DECLINING_CARD)
        .await;
    let failed = store.wait_for(&buyer, &id(&order), &["failed"]).await;
    assert_eq!(failed["failure_reason"], "payment declined");
    let released = wait_reservation(&store, &buyer, &id(&order), "released").await;
    assert_eq!(released["reservation"], "released");
    assert_eq!(store.stock(book).await, 4, "the held copies are back");
    assert_eq!(
        store.charges(id(&order).parse().unwrap()).await,
        ["declined"]
    );
}

async fn wait_reservation(store: &BookStore, token: &str, order: &str, state: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let current = store.order(token, order).await;
        if current["reservation"] == state {
            return current;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reservation never {state}: {current}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn an_expired_reservation_refunds_the_payment(backend: Backend) {
    // The hold lasts 1 s; the card takes 2.5 s: the catalog's sweep returns
    // the copies before the saga can commit them.
    let store = BookStore::start(
        backend,
        Options {
            tweak: |s| {
                s.reservation_ttl_secs = 1;
                s.payment_latency_ms = 2_500;
            },
            ..Options::default()
        },
    )
    .await;
    let book = store.list_book("Pedro Páramo", 2).await;
    let (_, buyer) = store.buyer();
    let order = store.place_order(0, &buyer, "k", book, 1, CARD).await;
    let failed = store.wait_for(&buyer, &id(&order), &["failed"]).await;
    assert!(
        failed["failure_reason"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{failed}"
    );
    assert_eq!(
        store.charges(id(&order).parse().unwrap()).await,
        ["refunded"]
    );
    assert_eq!(store.stock(book).await, 2);
}

async fn a_paid_order_cancelled_is_refunded_and_restocked(backend: Backend) {
    // The order stays `paid` while the buyer cancels.
    let store = BookStore::start(backend, Options::slow_shipping()).await;
    let book = store.list_book("Rayuela", 2).await;
    let (_, buyer) = store.buyer();
    let order = store.place_order(0, &buyer, "k", book, 1, CARD).await;
    let order_id: Uuid = id(&order).parse().unwrap();
    store.wait_for(&buyer, &id(&order), &["paid"]).await;
    wait_reservation(&store, &buyer, &id(&order), "committed").await;
    assert_eq!(store.stock(book).await, 1, "one copy sold");

    let cancel = store.orders[1]
        .post(&format!("/api/orders/{order_id}/cancel"))
        .bearer_auth(&buyer)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    let restocked = wait_reservation(&store, &buyer, &id(&order), "released").await;
    assert_eq!(restocked["status"], "cancelled");
    assert_eq!(store.stock(book).await, 2, "the sold copy is back");
    assert_eq!(
        store.charges(order_id).await,
        ["refunded"],
        "the one charge was refunded"
    );
    let reservation: Value = store
        .catalog
        .get(&format!("/internal/reservations/{order_id}"))
        .bearer_auth(store.service_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reservation["status"], "returned");

    // Retries of the return (a worker that died before recording it, a
    // client retrying on another instance) change nothing more.
    let mut repeats = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (catalog, token) = (store.catalog.clone(), store.service_token());
        repeats.spawn(async move {
            catalog
                .post(&format!("/internal/reservations/{order_id}/return"))
                .bearer_auth(token)
                .header("idempotency-key", format!("{order_id}:return"))
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    while let Some(status) = repeats.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    assert_eq!(store.stock(book).await, 2, "returned exactly once");
    assert_eq!(store.charges(order_id).await, ["refunded"]);
}

async fn a_crashed_worker_leaves_a_job_that_another_finishes(backend: Backend) {
    let store = BookStore::start(
        backend,
        Options {
            workers: 0,
            ..Options::slow_shipping()
        },
    )
    .await;
    let book = store.list_book("La casa verde", 5).await;
    let (_, buyer) = store.buyer();
    let order = store.place_order(0, &buyer, "k", book, 2, CARD).await;
    let order_id: Uuid = id(&order).parse().unwrap();

    // A worker takes the job, reserves the copies in the catalog, and dies
    // before recording anything or acknowledging the job.
    let bus = zocalo_bus::connect(&store.orders_settings.bus_url)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let job = loop {
        if let Some(job) = bus
            .jobs
            .reserve(contract::PROCESS_QUEUE, Duration::from_secs(1))
            .await
            .unwrap()
        {
            break job;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job never reached the queue"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let reserved = store
        .catalog
        .post("/internal/reservations")
        .bearer_auth(store.service_token())
        .json(&serde_json::json!({"reservation_id": order_id, "items": [{"book_id": book, "quantity": 2}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(reserved.status(), 201);
    drop(job);

    // After the visibility timeout a healthy worker gets the job again.
    store.start_worker().await;
    store
        .wait_for(&buyer, &id(&order), &["paid", "shipped"])
        .await;
    wait_reservation(&store, &buyer, &id(&order), "committed").await;
    assert_eq!(
        store.stock(book).await,
        3,
        "reserved once, whatever the retries"
    );
    assert_eq!(store.charges(order_id).await, ["captured"]);
}

async fn an_order_written_before_a_relay_crash_is_still_processed(backend: Backend) {
    // The APIs are built but never run: the order and its job are committed
    // to the outbox, and nothing relays them — as if the process died right
    // after the commit.
    let store = BookStore::start(
        backend,
        Options {
            start_apis: false,
            ..Options::default()
        },
    )
    .await;
    let book = store.list_book("Cien años de soledad", 1).await;
    let (buyer_id, buyer) = store.buyer();
    let orders = zocalo_orders::store::open(&store.orders_settings.database())
        .await
        .unwrap();
    let new_order = zocalo_orders::domain::OrderInput {
        items: vec![zocalo_orders::domain::ItemInput {
            book_id: book,
            quantity: 1,
        }],
        shipping_address: "Aracataca, Magdalena".into(),
        provider: "dhl".into(),
        card: CARD.into(),
    }
    .validate(buyer_id)
    .unwrap();
    let order_id = new_order.id;
    let job = zocalo_bus::outbox::Message::Job {
        id: Uuid::now_v7(),
        queue: contract::PROCESS_QUEUE.into(),
        payload: serde_json::json!({"order_id": order_id}),
        options: zocalo_bus::JobOptions::default(),
        traceparent: None,
    };
    orders
        .create_order(new_order, "k", vec![job])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.stock(book).await,
        1,
        "nothing happened while the relay was down"
    );

    // The restarted service relays what was left and the saga runs.
    let api = store.start_orders_api().await;
    let done = wait_for_at(
        &api,
        &buyer,
        &order_id.to_string(),
        &["paid", "shipped", "delivered"],
    )
    .await;
    assert_eq!(done["id"], order_id.to_string());
    assert_eq!(store.stock(book).await, 0);
}

async fn a_repeated_event_is_counted_once(backend: Backend) {
    let store = BookStore::start(backend, Options::default()).await;
    let seller = store.seller.0;
    let paid = OrderPaid {
        order_id: Uuid::now_v7(),
        buyer_id: Uuid::now_v7(),
        items: vec![SoldItem {
            book_id: Uuid::now_v7(),
            seller_id: seller,
            title: "Los detectives salvajes".into(),
            quantity: 1,
            unit_price_cents: 1200,
            currency: "USD".into(),
        }],
        total_cents: 1200,
        currency: "USD".into(),
        paid_at: Utc::now(),
    };
    let event = Event {
        id: Uuid::now_v7(),
        topic: contract::TOPIC.into(),
        kind: contract::ORDER_PAID.into(),
        payload: serde_json::to_value(&paid).unwrap(),
        occurred_at: Utc::now(),
        traceparent: None,
    };
    let bus = zocalo_bus::connect(&store.orders_settings.bus_url)
        .await
        .unwrap();
    for _ in 0..3 {
        bus.events.publish(&event).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let sales: Value = store.orders[0]
            .get("/api/sales")
            .bearer_auth(&store.seller.1)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !sales.as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sale never appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sales: Value = store.orders[0]
        .get("/api/sales")
        .bearer_auth(&store.seller.1)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sales.as_array().unwrap().len(), 1, "{sales}");
}
