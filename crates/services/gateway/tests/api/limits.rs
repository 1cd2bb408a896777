//! Limits enforced at the edge: body size, header size, request rate. Each
//! refusal is a problem and (where the limit is known up front) reaches no
//! upstream.

use zocalo_http::ratelimit::RateLimit;
use zocalo_testkit::{TestTokens, expect_problem};

use crate::support::{
    gateway_over_reviews, header, raw_exchange, raw_status, settings, spawn_gateway, spawn_upstream,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_over_the_limit_is_413_before_any_upstream() {
    let tokens = TestTokens::new();
    let upstream = spawn_upstream("reviews", &tokens).await;
    let mut settings = settings(&upstream.url);
    settings.max_body_bytes = 1024;
    let gateway = spawn_gateway(settings).await;

    let response = gateway
        .client
        .post("/api/reviews")
        .body(vec![b'x'; 2048])
        .send()
        .await
        .unwrap();
    expect_problem(response, 413).await;
    assert_eq!(upstream.hits(), 0);

    let at_limit = gateway
        .client
        .post("/api/reviews")
        .body(vec![b'x'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(at_limit.status(), 200);
    assert_eq!(at_limit.bytes().await.unwrap().len(), 1024);
}

/// A route with a limit of its own (uploads) takes bodies the gateway's
/// default would refuse, and still refuses what passes its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_limit_overrides_the_gateway_limit() {
    let tokens = TestTokens::new();
    let upstream = spawn_upstream("reviews", &tokens).await;
    let mut settings = settings(&upstream.url);
    settings.max_body_bytes = 1024;
    for route in settings
        .routes
        .iter_mut()
        .filter(|r| r.prefix == "/api/content")
    {
        route.max_body_bytes = Some(4096);
    }
    let gateway = spawn_gateway(settings).await;

    let upload =
        |path: &'static str, size: usize| gateway.client.post(path).body(vec![b'x'; size]).send();
    let within_route_limit = upload("/api/content/count", 3000).await.unwrap();
    assert_eq!(within_route_limit.status(), 200);
    assert_eq!(within_route_limit.text().await.unwrap(), "3000");
    expect_problem(upload("/api/content/count", 5000).await.unwrap(), 413).await;
    expect_problem(upload("/api/reviews", 3000).await.unwrap(), 413).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_the_limit_is_cut_off() {
    let tokens = TestTokens::new();
    let upstream = spawn_upstream("reviews", &tokens).await;
    let mut settings = settings(&upstream.url);
    settings.max_body_bytes = 1024;
    let gateway = spawn_gateway(settings).await;

    let mut request = b"POST /api/content/count HTTP/1.1\r\nHost: gw\r\n\
        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        .to_vec();
    for _ in 0..4 {
        request.extend_from_slice(b"1f4\r\n");
        request.extend_from_slice(&[b'y'; 500]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let response = raw_exchange(gateway.port, &request).await;
    assert_eq!(raw_status(&response), 413, "{response}");
    assert!(response.contains("application/problem+json"), "{response}");

    // Under the limit, the same upload goes through and arrives whole.
    let mut small = b"POST /api/content/count HTTP/1.1\r\nHost: gw\r\n\
        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        .to_vec();
    small.extend_from_slice(b"1f4\r\n");
    small.extend_from_slice(&[b'y'; 500]);
    small.extend_from_slice(b"\r\n0\r\n\r\n");
    let response = raw_exchange(gateway.port, &small).await;
    assert_eq!(raw_status(&response), 200, "{response}");
    assert!(
        response.ends_with("500") || response.contains("\r\n500\r\n"),
        "{response}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_over_the_limit_are_431() {
    let (gateway, upstream, _) = gateway_over_reviews().await;

    let response = gateway
        .client
        .get("/api/reviews")
        .header("x-padding", "p".repeat(17 * 1024))
        .send()
        .await
        .unwrap();
    expect_problem(response, 431).await;

    // Many headers that are each small add up too, and so does the URI.
    let mut request = gateway.client.get("/api/reviews");
    for i in 0..40 {
        request = request.header(format!("x-part-{i}"), "q".repeat(500));
    }
    expect_problem(request.send().await.unwrap(), 431).await;
    let long_query = format!("/api/reviews?q={}", "z".repeat(17 * 1024));
    expect_problem(gateway.client.get(&long_query).send().await.unwrap(), 431).await;
    assert_eq!(upstream.hits(), 0);

    let normal = gateway
        .client
        .get("/api/reviews")
        .header("x-padding", "p".repeat(8 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(normal.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_over_their_rate_get_429_with_retry_after() {
    let tokens = TestTokens::new();
    let upstream = spawn_upstream("reviews", &tokens).await;
    let mut settings = settings(&upstream.url);
    settings.rate_limit = Some(RateLimit {
        per_second: 0.05,
        burst: 2,
    });
    let gateway = spawn_gateway(settings).await;

    for _ in 0..2 {
        let response = gateway.client.get("/api/reviews").send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let refused = gateway.client.get("/api/reviews").send().await.unwrap();
    let retry_after: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry_after), "retry after {retry_after}");
    expect_problem(refused, 429).await;
    assert_eq!(upstream.hits(), 2);

    let live = gateway.client.get("/live").send().await.unwrap();
    assert_eq!(live.status(), 200, "probes are not rate limited");
}
