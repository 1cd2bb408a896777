//! The static and DNS sources, and building a source from settings.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::net::TcpListener;
use zocalo_discovery::{
    Discovery, DiscoveryError, DiscoveryKind, DiscoverySettings, DnsDiscovery, StaticDiscovery,
    from_settings,
};

use crate::support::{bounded, ids};

#[tokio::test]
async fn static_source_lists_configured_urls_sorted_by_id() {
    bounded(async {
        let discovery = StaticDiscovery::new(BTreeMap::from([(
            "reviews".to_owned(),
            vec![
                "http://127.0.0.1:9002/".to_owned(),
                "http://127.0.0.1:9001".to_owned(),
            ],
        )]));
        let receiver = discovery.watch("reviews").await.expect("watch reviews");
        let instances = receiver.borrow().clone();
        assert_eq!(
            ids(&instances),
            ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]
        );
        assert!(instances.iter().all(|i| i.service == "reviews"));
        assert_eq!(
            instances[1].url, "http://127.0.0.1:9002",
            "trailing slash dropped"
        );

        let unknown = discovery.watch("catalog").await;
        assert!(matches!(unknown, Err(DiscoveryError::UnknownService(s)) if s == "catalog"));
    })
    .await;
}

#[tokio::test]
async fn from_settings_builds_the_static_source_by_default() {
    bounded(async {
        let settings = DiscoverySettings::default();
        assert_eq!(settings.kind, DiscoveryKind::Static);
        let discovery = from_settings(
            &settings,
            BTreeMap::from([("auth".to_owned(), vec!["http://127.0.0.1:7000".to_owned()])]),
        )
        .await
        .expect("static source");
        let receiver = discovery.watch("auth").await.expect("watch auth");
        assert_eq!(ids(&receiver.borrow()), ["http://127.0.0.1:7000"]);
    })
    .await;
}

#[tokio::test]
async fn dns_source_resolves_every_address_of_the_name() {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let discovery = DnsDiscovery::new(
            BTreeMap::from([("reviews".to_owned(), format!("localhost:{port}"))]),
            Duration::from_millis(200),
        )
        .expect("dns source");

        let mut receiver = discovery.watch("reviews").await.expect("watch reviews");
        let instances = receiver.borrow_and_update().clone();
        let expected = format!("http://127.0.0.1:{port}");
        assert!(
            instances.iter().any(|i| i.url == expected),
            "{expected} among {instances:?}"
        );
        assert!(instances.iter().all(|i| i.service == "reviews"));
        assert!(
            instances.windows(2).all(|w| w[0].id < w[1].id),
            "sorted by id"
        );

        // A second watcher shares the same live view.
        let second = discovery.watch("reviews").await.expect("second watch");
        assert_eq!(*second.borrow(), instances);

        // Re-resolving the same answer is not a change.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!receiver.has_changed().expect("sender alive"));

        let unknown = discovery.watch("catalog").await;
        assert!(matches!(unknown, Err(DiscoveryError::UnknownService(_))));
    })
    .await;
}

#[tokio::test]
async fn dns_source_starts_empty_for_a_name_that_does_not_resolve() {
    bounded(async {
        let discovery = DnsDiscovery::new(
            BTreeMap::from([("ghost".to_owned(), "no-such-host.invalid:80".to_owned())]),
            Duration::from_millis(100),
        )
        .expect("dns source");
        let receiver = discovery.watch("ghost").await.expect("watch ghost");
        assert!(receiver.borrow().is_empty());
        assert!(DnsDiscovery::new(BTreeMap::new(), Duration::ZERO).is_err());
    })
    .await;
}
