//! What the gateway adds to and removes from messages: forwarding headers,
//! hop-by-hop headers, security headers, CORS.

use zocalo_testkit::TestTokens;

use crate::support::{gateway_over_reviews, header, settings, spawn_gateway, spawn_upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_learn_who_called_and_how() {
    let (gateway, upstream, _) = gateway_over_reviews().await;

    let response = gateway.client.get("/api/reviews").send().await.unwrap();
    assert_eq!(
        header(&response, "x-echo-x-forwarded-for"),
        Some("127.0.0.1")
    );
    assert_eq!(header(&response, "x-echo-x-forwarded-proto"), Some("http"));
    let gateway_host = format!("127.0.0.1:{}", gateway.port);
    assert_eq!(
        header(&response, "x-echo-x-forwarded-host"),
        Some(gateway_host.as_str())
    );
    let upstream_host = upstream.url.trim_start_matches("http://");
    assert_eq!(
        header(&response, "x-echo-host"),
        Some(upstream_host),
        "Host is the upstream's"
    );

    // A client cannot hide behind a forged chain: the peer is appended last,
    // and an untrusted client cannot claim https.
    let response = gateway
        .client
        .get("/api/reviews")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&response, "x-echo-x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(header(&response, "x-echo-x-forwarded-proto"), Some("http"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_in_front_is_believed() {
    let tokens = TestTokens::new();
    let upstream = spawn_upstream("reviews", &tokens).await;
    let mut settings = settings(&upstream.url);
    settings.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    let gateway = spawn_gateway(settings).await;

    let response = gateway
        .client
        .get("/api/reviews")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "zocalo.example")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "x-echo-x-forwarded-proto"), Some("https"));
    assert_eq!(
        header(&response, "x-echo-x-forwarded-host"),
        Some("zocalo.example")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_stop_at_the_gateway() {
    let (gateway, _upstream, _) = gateway_over_reviews().await;

    let response = gateway
        .client
        .post("/api/reviews")
        .header("expect", "100-continue")
        .body("the body")
        .header("connection", "keep-alive, x-private")
        .header("x-private", "connection-scoped")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic cHJveHk6c2VjcmV0")
        .header("x-kept", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let names = header(&response, "x-echo-header-names").unwrap();
    let names: Vec<_> = names.split(',').collect();
    assert!(names.contains(&"x-kept"), "{names:?}");
    for dropped in ["x-private", "keep-alive", "proxy-authorization", "expect"] {
        assert!(
            !names.contains(&dropped),
            "{dropped} was forwarded: {names:?}"
        );
    }
    assert_eq!(response.text().await.unwrap(), "the body");

    let response = gateway
        .client
        .get("/api/content/own-headers")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("keep-alive").is_none());
    assert!(response.headers().get("proxy-authenticate").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_has_security_headers_unless_the_service_chose() {
    let (gateway, upstream, _) = gateway_over_reviews().await;

    for path in ["/api/reviews", "/nowhere", "/live"] {
        let response = gateway.client.get(path).send().await.unwrap();
        assert_eq!(
            header(&response, "x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(header(&response, "x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            header(&response, "referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
        assert!(
            header(&response, "strict-transport-security").is_none(),
            "{path}"
        );
    }
    let own = gateway
        .client
        .get("/api/content/own-headers")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&own, "x-frame-options"), Some("SAMEORIGIN"));

    let mut with_hsts = settings(&upstream.url);
    with_hsts.hsts = true;
    let gateway = spawn_gateway(with_hsts).await;
    let response = gateway.client.get("/api/reviews").send().await.unwrap();
    assert!(
        header(&response, "strict-transport-security")
            .unwrap()
            .starts_with("max-age=")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_by_the_gateway_for_allowed_origins() {
    let tokens = TestTokens::new();
    let upstream = spawn_upstream("reviews", &tokens).await;
    let mut settings = settings(&upstream.url);
    settings.cors_allowed_origins = vec!["https://app.example".into()];
    let gateway = spawn_gateway(settings).await;

    let preflight = gateway
        .client
        .http
        .request(reqwest::Method::OPTIONS, gateway.client.url("/api/reviews"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(
        header(&preflight, "access-control-allow-origin"),
        Some("https://app.example")
    );
    let methods = header(&preflight, "access-control-allow-methods").unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let allowed = header(&preflight, "access-control-allow-headers").unwrap();
    assert!(allowed.contains("authorization"), "{allowed}");
    assert_eq!(upstream.hits(), 0, "preflights stop at the gateway");

    let simple = gateway
        .client
        .get("/api/reviews")
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&simple, "access-control-allow-origin"),
        Some("https://app.example")
    );
    let exposed = header(&simple, "access-control-expose-headers").unwrap();
    assert!(exposed.contains("x-request-id"), "{exposed}");

    let stranger = gateway
        .client
        .get("/api/reviews")
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(header(&stranger, "access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cors_headers_without_configured_origins() {
    let (gateway, _upstream, _) = gateway_over_reviews().await;

    let response = gateway
        .client
        .get("/api/reviews")
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(header(&response, "access-control-allow-origin").is_none());
}
