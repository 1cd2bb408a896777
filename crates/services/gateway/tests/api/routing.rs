//! Which upstream a path reaches: prefixes on segment boundaries, the
//! longest one first, round robin across instances.

use zocalo_gateway::{RouteSettings, Strategy};
use zocalo_testkit::{TestTokens, expect_problem};

use crate::support::{gateway_over_reviews, header, settings, spawn_gateway, spawn_upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_go_to_the_service_owning_their_prefix() {
    let tokens = TestTokens::new();
    let auth = spawn_upstream("auth", &tokens).await;
    let reviews = spawn_upstream("reviews", &tokens).await;
    let other = spawn_upstream("other", &tokens).await;
    let mut settings = settings(&reviews.url);
    settings.set_upstreams("auth", std::slice::from_ref(&auth.url));
    let mut api = RouteSettings::new("/api", "other");
    api.upstreams = vec![other.url.clone()];
    settings.routes.push(api);
    let gateway = spawn_gateway(settings).await;

    let cases = [
        ("/auth/login", "auth", "/auth/login", None),
        (
            "/.well-known/openid-configuration",
            "auth",
            "/.well-known/openid-configuration",
            None,
        ),
        ("/api/reviews", "reviews", "/api/reviews", None),
        (
            "/api/reviews/42?sort=new&q=a%20b",
            "reviews",
            "/api/reviews/42",
            Some("sort=new&q=a%20b"),
        ),
        (
            "/api/reviews?page=2",
            "reviews",
            "/api/reviews",
            Some("page=2"),
        ),
        ("/api/cameras/x-100", "reviews", "/api/cameras/x-100", None),
        // Not `/api/reviews`: the segment differs, so the shorter `/api` wins.
        ("/api/reviewsx", "other", "/api/reviewsx", None),
        ("/api/things/1", "other", "/api/things/1", None),
    ];
    for (path, upstream, forwarded_path, query) in cases {
        let response = gateway.client.get(path).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            header(&response, "x-echo-upstream"),
            Some(upstream),
            "{path}"
        );
        assert_eq!(
            header(&response, "x-echo-path"),
            Some(forwarded_path),
            "{path}"
        );
        assert_eq!(header(&response, "x-echo-query"), query, "{path}");
    }
    assert_eq!(auth.hits(), 2);
    assert_eq!(reviews.hits(), 4);
    assert_eq!(other.hits(), 2);
}

/// The default cinema routes: reads to the query side, writes to the
/// command side; a side with no instance answers 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cinema_reads_and_writes_go_to_their_own_sides() {
    let tokens = TestTokens::new();
    let reviews = spawn_upstream("reviews", &tokens).await;
    let query = spawn_upstream("cinema-query", &tokens).await;
    let command = spawn_upstream("cinema-command", &tokens).await;
    let mut settings = settings(&reviews.url);
    settings.set_upstreams("cinema-query", std::slice::from_ref(&query.url));
    settings.set_upstreams("cinema-command", std::slice::from_ref(&command.url));
    let gateway = spawn_gateway(settings).await;
    let path = "/api/cinema/showtimes/1";
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}{path}", gateway.port);
    for (method, side) in [
        (reqwest::Method::GET, "cinema-query"),
        (reqwest::Method::HEAD, "cinema-query"),
        (reqwest::Method::POST, "cinema-command"),
        (reqwest::Method::PATCH, "cinema-command"),
        (reqwest::Method::PUT, "cinema-command"),
        (reqwest::Method::DELETE, "cinema-command"),
    ] {
        let response = client.request(method.clone(), &url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{method}");
        assert_eq!(header(&response, "x-echo-upstream"), Some(side), "{method}");
    }
    assert_eq!((query.hits(), command.hits(), reviews.hits()), (2, 4, 0));

    gateway.upstreams.set("cinema-query", &[]).unwrap();
    let read = gateway.client.get(path).send().await.unwrap();
    expect_problem(read, 503).await;
    assert_eq!(
        command.hits(),
        4,
        "a read never falls through to the command side"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_problems_that_reach_nobody() {
    let (gateway, upstream, _) = gateway_over_reviews().await;

    for path in ["/api/reviewsx", "/nothing", "/", "/apix/reviews", "/authx"] {
        let response = gateway.client.get(path).send().await.unwrap();
        let body = expect_problem(response, 404).await;
        assert_eq!(body["detail"], "no route for this path", "{path}");
    }
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_of_a_service_take_turns_with_round_robin() {
    let tokens = TestTokens::new();
    let first = spawn_upstream("first", &tokens).await;
    let second = spawn_upstream("second", &tokens).await;
    let mut settings = settings(&first.url);
    settings.balancing = Strategy::RoundRobin;
    settings.set_upstreams("reviews", &[first.url.clone(), second.url.clone()]);
    let gateway = spawn_gateway(settings).await;

    let mut seen = Vec::new();
    for _ in 0..6 {
        let response = gateway.client.get("/api/reviews").send().await.unwrap();
        seen.push(header(&response, "x-echo-upstream").unwrap().to_owned());
    }
    assert!(
        seen.windows(2).all(|pair| pair[0] != pair[1]),
        "instances must alternate: {seen:?}"
    );
    assert_eq!(first.hits(), 3);
    assert_eq!(second.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_of_two_choices_spreads_requests_over_every_instance() {
    let tokens = TestTokens::new();
    let first = spawn_upstream("first", &tokens).await;
    let second = spawn_upstream("second", &tokens).await;
    let mut settings = settings(&first.url);
    settings.set_upstreams("reviews", &[first.url.clone(), second.url.clone()]);
    let gateway = spawn_gateway(settings).await;

    for _ in 0..40 {
        let response = gateway.client.get("/api/reviews").send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    // With nothing in flight the two choices are a coin toss: both serve
    // (all 40 on one side has a chance of 2^-39).
    assert!(first.hits() > 0 && second.hits() > 0);
    assert_eq!(first.hits() + second.hits(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_instances_is_503() {
    let tokens = TestTokens::new();
    let upstream = spawn_upstream("auth", &tokens).await;
    let mut settings = settings(&upstream.url);
    settings.set_upstreams("reviews", &[]);
    let gateway = spawn_gateway(settings).await;

    let response = gateway.client.get("/api/reviews/1").send().await.unwrap();
    assert_eq!(header(&response, "retry-after"), Some("1"));
    expect_problem(response, 503).await;
    let response = gateway.client.get("/auth/login").send().await.unwrap();
    assert_eq!(response.status(), 200, "other services are unaffected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_are_refused_before_routing_upstream() {
    let (gateway, upstream, _) = gateway_over_reviews().await;

    for path in ["/api/reviews/../../auth/admin", "/api/reviews/%2e%2E/x"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
        let response = crate::support::raw_exchange(gateway.port, request.as_bytes()).await;
        assert_eq!(
            crate::support::raw_status(&response),
            400,
            "{path}: {response}"
        );
        assert!(response.contains("application/problem+json"), "{response}");
    }
    assert_eq!(upstream.hits(), 0);
}
