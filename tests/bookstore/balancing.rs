//! The worker calls the catalog over two instances: orders keep completing
//! when one of them stops, and the stopped one is ejected.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use zocalo_http::balance::{BreakerSettings, BreakerState, Strategy};
use zocalo_http::client::{ClientSettings, ServiceClient};
use zocalo_testkit::{Backend, backend_tests};

use crate::harness::{BookStore, Options, id};

const CARD: &str = "4242424242424242";

backend_tests!(orders_complete_while_one_of_two_catalog_instances_is_down);

async fn orders_complete_while_one_of_two_catalog_instances_is_down(backend: Backend) {
    let store = BookStore::start(
        backend,
        Options {
            workers: 0,
            ..Options::default()
        },
    )
    .await;
    let stop_second = CancellationToken::new();
    let (second_url, second) = store.start_catalog_instance(stop_second.clone()).await;
    // Round robin, so that the stopped instance is certainly tried (and
    // ejected) within the few calls this test makes.
    let settings = ClientSettings {
        strategy: Strategy::RoundRobin,
        breaker: BreakerSettings {
            consecutive_failures: 2,
            open_ms: 60_000,
            ..BreakerSettings::default()
        },
        ..ClientSettings::default()
    };
    let catalog = ServiceClient::with_instances(
        "catalog",
        &[store.catalog_url.clone(), second_url.clone()],
        &settings,
    )
    .unwrap();
    store.start_worker_calling(catalog.clone()).await;
    let book = store.list_book("Pedro Páramo", 10).await;

    // Both instances up.
    let (_, buyer) = store.buyer();
    let first = store.place_order(0, &buyer, "first", book, 1, CARD).await;
    store.wait_for(&buyer, &id(&first), &["delivered"]).await;

    // One of them stopped: every step still completes on the other.
    stop_second.cancel();
    tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second catalog instance stops")
        .unwrap()
        .unwrap();
    let mut placed = Vec::new();
    for i in 0..5 {
        let (_, buyer) = store.buyer();
        let order = store
            .place_order(i, &buyer, &format!("k{i}"), book, 1, CARD)
            .await;
        placed.push((order, buyer));
    }
    for (order, buyer) in &placed {
        let delivered = store.wait_for(buyer, &id(order), &["delivered"]).await;
        assert_eq!(delivered["reservation"], "committed");
    }
    assert_eq!(store.stock(book).await, 4, "six copies sold, no more");

    let stopped = catalog
        .balancer()
        .endpoints()
        .iter()
        .find(|e| e.url() == second_url)
        .map(|e| e.breaker_state());
    assert_eq!(
        stopped,
        Some(BreakerState::Open),
        "the stopped instance is ejected"
    );
}
