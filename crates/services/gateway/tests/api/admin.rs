//! The gateway's own endpoints: probes, metrics, its OpenAPI document.

use zocalo_testkit::{TestTokens, expect_problem};

use crate::support::{gateway_over_reviews, settings, spawn_gateway, spawn_upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_and_ready_means_keys_are_reachable() {
    let tokens = TestTokens::new();
    let upstream = spawn_upstream("auth", &tokens).await;
    let gateway = spawn_gateway(settings(&upstream.url)).await;

    let live = gateway.client.get("/live").send().await.unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(live.text().await.unwrap(), "ok");
    let ready = gateway.client.get("/ready").send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        upstream.hits(),
        0,
        "probes are answered by the gateway itself"
    );

    let wrong_method = gateway.client.post("/live").send().await.unwrap();
    expect_problem(wrong_method, 405).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_auth_service_the_gateway_is_ready_but_refuses_tokens() {
    let tokens = TestTokens::new();
    let upstream = spawn_upstream("reviews", &tokens).await;
    let mut settings = settings(&upstream.url);
    settings.set_upstreams("auth", &[]);
    let gateway = spawn_gateway(settings).await;

    let ready = gateway.client.get("/ready").send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let with_token = gateway
        .client
        .get("/api/reviews")
        .bearer_auth(tokens.token("u", &[]))
        .send()
        .await
        .unwrap();
    expect_problem(with_token, 503).await;
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_requests_are_counted_by_route_prefix() {
    let (gateway, _upstream, _) = gateway_over_reviews().await;

    let proxied = gateway.client.get("/api/lenses/12").send().await.unwrap();
    assert_eq!(proxied.status(), 200);
    let missing = gateway.client.get("/unrouted").send().await.unwrap();
    assert_eq!(missing.status(), 404);

    let metrics = gateway.client.get("/metrics").send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    let counted = |route: &str, status: &str| {
        text.lines().any(|line| {
            line.starts_with("http_requests_total{")
                && line.contains(r#"service="gateway""#)
                && line.contains(&format!(r#"route="{route}""#))
                && line.contains(&format!(r#"status="{status}""#))
        })
    };
    assert!(counted("/api/lenses", "200"), "{text}");
    assert!(counted("unmatched", "404"), "{text}");
    assert!(text.contains("http_request_duration_seconds"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_endpoints_and_routes() {
    let (gateway, _upstream, _) = gateway_over_reviews().await;

    let response = gateway.client.get("/openapi.json").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let doc: serde_json::Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/live", "/ready", "/metrics", "/openapi.json"] {
        assert!(
            doc["paths"][path]["get"].is_object(),
            "{path} missing: {doc}"
        );
    }
    let routes = doc["x-zocalo-routes"].as_array().unwrap();
    assert!(
        routes
            .iter()
            .any(|r| r["prefix"] == "/api/reviews" && r["service"] == "reviews")
    );
}
