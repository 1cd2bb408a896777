//! Upstream failures become prompt 502/504 problems, and a shutdown lets
//! requests in flight finish.

use std::time::{Duration, Instant};

use zocalo_gateway::RouteSettings;
use zocalo_testkit::{TestTokens, expect_problem};

use crate::support::{dead_url, gateway_over_reviews, settings, spawn_gateway, spawn_upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_is_504_at_the_route_timeout() {
    let tokens = TestTokens::new();
    let upstream = spawn_upstream("reviews", &tokens).await;
    let mut settings = settings(&upstream.url);
    let compare = settings
        .routes
        .iter_mut()
        .find(|r| r.prefix == "/api/compare")
        .unwrap();
    compare.timeout_ms = Some(300);
    let gateway = spawn_gateway(settings).await;

    let start = Instant::now();
    let response = gateway
        .client
        .get("/api/compare/slow")
        .send()
        .await
        .unwrap();
    let elapsed = start.elapsed();
    expect_problem(response, 504).await;
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(upstream.hits(), 1, "the request did reach the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_502_at_once() {
    let tokens = TestTokens::new();
    let auth = spawn_upstream("auth", &tokens).await;
    let mut settings = settings(&auth.url);
    settings.set_upstreams("reviews", &[dead_url().await]);
    let gateway = spawn_gateway(settings).await;

    for _ in 0..3 {
        let start = Instant::now();
        let response = gateway.client.get("/api/reviews").send().await.unwrap();
        let elapsed = start.elapsed();
        let body = expect_problem(response, 502).await;
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
        let detail = body["detail"].as_str().unwrap();
        assert!(!detail.contains("127.0.0.1"), "no addresses leak: {detail}");
    }
    // An unreachable instance of one service does not affect the others.
    let response = gateway.client.get("/auth/me").send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_with_one_dead_instance_still_serves_from_the_others() {
    let tokens = TestTokens::new();
    let alive = spawn_upstream("alive", &tokens).await;
    let mut settings = settings(&alive.url);
    let mut route = RouteSettings::new("/api/things", "catalog");
    route.upstreams = vec![alive.url.clone(), dead_url().await];
    settings.routes.push(route);
    let gateway = spawn_gateway(settings).await;

    for _ in 0..8 {
        let response = gateway.client.get("/api/things").send().await.unwrap();
        // A GET that meets the dead instance is retried on the live one.
        assert_eq!(response.status(), 200);
    }
    assert_eq!(alive.hits(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_requests_in_flight() {
    let (gateway, upstream, _) = gateway_over_reviews().await;
    let client = gateway.client.clone();
    let port = gateway.port;

    let in_flight = tokio::spawn(async move {
        let response = client.get("/api/compare/pause").send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    });
    // Let the request reach the upstream, then stop the gateway under it.
    for _ in 0..50 {
        if upstream.hits() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(upstream.hits(), 1);
    tokio::time::timeout(Duration::from_secs(5), gateway.stop())
        .await
        .expect("drained in time")
        .unwrap();
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "finished");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "the listener is closed after shutdown"
    );
}
