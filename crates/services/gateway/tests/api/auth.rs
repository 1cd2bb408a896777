//! Bearer tokens are verified at the gateway before anything is proxied; a
//! bad token never reaches a service, a missing one is the service's call.

use zocalo_testkit::{AUDIENCE, TestTokens, expect_problem};

use crate::support::{
    dead_url, gateway_over_reviews, header, settings, spawn_gateway, spawn_upstream,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_is_forwarded_untouched() {
    let (gateway, upstream, tokens) = gateway_over_reviews().await;

    let token = tokens.token("user-1", &["editor"]);
    let response = gateway
        .client
        .get("/api/reviews")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let expected = format!("Bearer {token}");
    assert_eq!(
        header(&response, "x-echo-authorization"),
        Some(expected.as_str())
    );
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_401_and_never_reach_the_upstream() {
    let tokens = TestTokens::new();
    let stranger = TestTokens::new();
    let upstream = spawn_upstream("reviews", &tokens).await;
    let gateway = spawn_gateway(settings(&upstream.url)).await;

    let good = tokens.token("user-1", &[]);
    let mut tampered = good.clone();
    tampered.insert(good.len() - 4, 'x');
    let cases = [
        (
            "expired",
            format!("Bearer {}", tokens.token_with("u", &[], AUDIENCE, -120)),
        ),
        (
            "wrong audience",
            format!("Bearer {}", tokens.token_with("u", &[], "elsewhere", 900)),
        ),
        (
            "unknown key",
            format!("Bearer {}", stranger.token("u", &[])),
        ),
        ("tampered", format!("Bearer {tampered}")),
        ("garbage", "Bearer not-a-jwt".to_owned()),
        ("empty", "Bearer".to_owned()),
    ];
    for (what, authorization) in cases {
        let response = gateway
            .client
            .post("/api/reviews")
            .header("authorization", authorization)
            .body("payload")
            .send()
            .await
            .unwrap();
        assert_eq!(
            header(&response, "www-authenticate"),
            Some("Bearer"),
            "{what}"
        );
        expect_problem(response, 401).await;
    }
    assert_eq!(
        upstream.hits(),
        0,
        "no refused request may reach the service"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_bearer_tokens_pass_through() {
    let tokens = TestTokens::new();
    let upstream = spawn_upstream("auth", &tokens).await;
    let gateway = spawn_gateway(settings(&upstream.url)).await;

    let anonymous = gateway.client.get("/api/reviews").send().await.unwrap();
    assert_eq!(anonymous.status(), 200);
    // OAuth2 clients authenticate with HTTP Basic at the token endpoint.
    let basic = gateway
        .client
        .post("/auth/token")
        .basic_auth("client", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 200);
    assert!(
        header(&basic, "x-echo-authorization")
            .unwrap()
            .starts_with("Basic ")
    );
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_keys_are_503_not_401() {
    let tokens = TestTokens::new();
    let upstream = spawn_upstream("reviews", &tokens).await;
    let mut settings = settings(&upstream.url);
    settings.jwks_url = Some(format!("{}/.well-known/jwks.json", dead_url().await));
    let gateway = spawn_gateway(settings).await;

    let response = gateway
        .client
        .get("/api/reviews")
        .bearer_auth(tokens.token("u", &[]))
        .send()
        .await
        .unwrap();
    expect_problem(response, 503).await;
    assert_eq!(upstream.hits(), 0);

    let ready = gateway.client.get("/ready").send().await.unwrap();
    assert_eq!(
        ready.status(),
        503,
        "not ready while keys cannot be fetched"
    );
}
