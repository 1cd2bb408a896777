//! Route weights from the live file: traffic splits by weight, weight 0
//! drains an instance, and changes apply while the gateway runs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use zocalo_gateway::{RouteSettings, Strategy};
use zocalo_testkit::TestTokens;
use zocalo_testkit::serve::{Served, serve};

use crate::support::{TestGateway, metric, settings, spawn_gateway, spawn_upstream};

/// An instance that counts its requests (and says nothing about caching,
/// so every request reaches an instance).
struct Instance {
    url: String,
    hits: Arc<AtomicUsize>,
    _served: Served,
}

impl Instance {
    async fn spawn() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .fallback(|State(hits): State<Arc<AtomicUsize>>| async move {
                hits.fetch_add(1, Ordering::SeqCst);
                "ok"
            })
            .with_state(hits.clone());
        let served = serve(app).await;
        Self {
            url: served.url.clone(),
            _served: served,
            hits,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn authority(&self) -> &str {
        self.url.trim_start_matches("http://")
    }
}

fn weights_file(path: &Path, weights: &[(&Instance, u32)]) {
    let mut text = String::from("[route_weights.weighted]\n");
    for (instance, weight) in weights {
        text.push_str(&format!("\"{}\" = {weight}\n", instance.url));
    }
    std::fs::write(path, text).unwrap();
}

/// Wait (bounded) until the gateway reports `weight` for `instance`.
async fn until_weight(gateway: &TestGateway, instance: &Instance, weight: u32) {
    let label = format!("endpoint=\"{}\"", instance.authority());
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&gateway.client, "upstream_weight", &label).await != f64::from(weight) {
        assert!(
            Instant::now() < deadline,
            "weight {weight} not applied to {}",
            instance.url
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Send `n` GETs and return how many each instance received.
async fn split(gateway: &TestGateway, instances: &[&Instance], n: usize) -> Vec<usize> {
    let before: Vec<usize> = instances.iter().map(|i| i.hits()).collect();
    for _ in 0..n {
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            gateway.client.get("/api/weighted").send(),
        )
        .await
        .expect("answers within 10 s")
        .unwrap();
        assert_eq!(response.status(), 200);
    }
    instances
        .iter()
        .zip(before)
        .map(|(instance, before)| instance.hits() - before)
        .collect()
}

async fn weighted_gateway(
    instances: &[&Instance],
    strategy: Strategy,
    live_file: &Path,
) -> (TestGateway, crate::support::TestUpstream) {
    let tokens = TestTokens::new();
    let other = spawn_upstream("other", &tokens).await;
    let mut settings = settings(&other.url);
    let mut route = RouteSettings::new("/api/weighted", "weighted");
    route.upstreams = instances.iter().map(|i| i.url.clone()).collect();
    settings.routes.push(route);
    settings.balancing = strategy;
    settings.live_config_file = Some(live_file.to_owned());
    (spawn_gateway(settings).await, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_from_the_live_file_split_drain_and_change_live() {
    for strategy in [Strategy::PowerOfTwoChoices, Strategy::RoundRobin] {
        let (a, b, c) = (
            Instance::spawn().await,
            Instance::spawn().await,
            Instance::spawn().await,
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("live.toml");
        weights_file(&file, &[(&a, 3), (&b, 1), (&c, 0)]);
        let (gateway, _other) = weighted_gateway(&[&a, &b, &c], strategy, &file).await;
        assert_eq!(
            gateway.live.get().route_weights["weighted"][&a.url],
            3,
            "read at startup"
        );

        let counts = split(&gateway, &[&a, &b, &c], 400).await;
        assert_eq!(counts[2], 0, "{strategy:?}: weight 0 drains: {counts:?}");
        let ratio = counts[0] as f64 / counts[1].max(1) as f64;
        assert!(
            (2.0..4.5).contains(&ratio),
            "{strategy:?}: 3:1 expected, got {counts:?}"
        );

        // Live: drain `a`, bring `c` back.
        weights_file(&file, &[(&a, 0), (&b, 1), (&c, 1)]);
        until_weight(&gateway, &a, 0).await;
        until_weight(&gateway, &c, 1).await;
        let counts = split(&gateway, &[&a, &b, &c], 100).await;
        assert_eq!(counts[0], 0, "{strategy:?}: a drained live: {counts:?}");
        assert!(counts[1] > 20 && counts[2] > 20, "{strategy:?}: {counts:?}");

        // A file without weights gives every instance weight 1 again.
        std::fs::write(&file, "").unwrap();
        until_weight(&gateway, &a, 1).await;
        let counts = split(&gateway, &[&a, &b, &c], 90).await;
        assert!(counts.iter().all(|&n| n > 10), "{strategy:?}: {counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_weight_table_is_rejected_and_the_old_one_stays() {
    let (a, b) = (Instance::spawn().await, Instance::spawn().await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("live.toml");
    weights_file(&file, &[(&a, 1), (&b, 0)]);
    let (gateway, _other) = weighted_gateway(&[&a, &b], Strategy::PowerOfTwoChoices, &file).await;
    let before = metric(
        &gateway.client,
        "config_reloads_total",
        "result=\"rejected\"",
    )
    .await;
    std::fs::write(
        &file,
        format!(
            "[route_weights.weighted]\n\"{}\" = 1\n\"{}\" = 99999\n",
            a.url, b.url
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(
        &gateway.client,
        "config_reloads_total",
        "result=\"rejected\"",
    )
    .await
        <= before
    {
        assert!(Instant::now() < deadline, "the bad table is rejected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counts = split(&gateway, &[&a, &b], 50).await;
    assert_eq!(counts, [50, 0], "the old weights stay");
    let weights: HashMap<_, _> = gateway.live.get().route_weights["weighted"]
        .clone()
        .into_iter()
        .collect();
    assert_eq!(weights[&b.url], 0);
}
