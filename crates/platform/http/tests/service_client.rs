//! `ServiceClient` against real HTTP servers on loopback: a healthy stub, a
//! stub answering 503, a hanging stub and a closed port. Calls succeed
//! while one instance is down, the breaker ejects the bad one, and a POST
//! that reached an instance is repeated only with an `Idempotency-Key`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use zocalo_discovery::{Instance, Instances};
use zocalo_http::Problem;
use zocalo_http::balance::{BreakerSettings, BreakerState, RetrySettings};
use zocalo_http::client::{ClientError, ClientSettings, ServiceClient};
use zocalo_testkit::serve::{Served, serve};

/// How a stub answers every request.
#[derive(Clone, Copy)]
enum Behaviour {
    Ok,
    Unavailable,
    /// 500: a bug, not a dead instance.
    Broken,
    Hang,
}

/// A stub instance counting the requests it received.
struct Stub {
    url: String,
    hits: Arc<AtomicUsize>,
    _served: Served,
}

impl Stub {
    async fn start(behaviour: Behaviour) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = Router::new().fallback(any(move |headers: HeaderMap| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                match behaviour {
                    Behaviour::Ok => (StatusCode::OK, format!("ok {key}")),
                    Behaviour::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, String::new()),
                    Behaviour::Broken => (StatusCode::INTERNAL_SERVER_ERROR, String::new()),
                    Behaviour::Hang => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        (StatusCode::OK, String::new())
                    }
                }
            }
        }));
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
}

/// The address of a port nothing listens on: bound, then released.
async fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

fn settings() -> ClientSettings {
    ClientSettings {
        breaker: BreakerSettings {
            consecutive_failures: 2,
            open_ms: 60_000,
            max_open_ms: 60_000,
            max_ejection_percent: 50,
        },
        retry: RetrySettings {
            max_attempts: 2,
            budget_ratio: 0.5,
            min_per_second: 100,
        },
        try_timeout_ms: 300,
        timeout_ms: 5_000,
        ..ClientSettings::default()
    }
}

fn client(urls: &[&String]) -> ServiceClient {
    let urls: Vec<String> = urls.iter().map(|u| (*u).clone()).collect();
    ServiceClient::with_instances("stub", &urls, &settings()).unwrap()
}

fn state_of(client: &ServiceClient, url: &str) -> BreakerState {
    client
        .balancer()
        .endpoints()
        .iter()
        .find(|e| e.url() == url)
        .expect("the endpoint is in the set")
        .breaker_state()
}

#[tokio::test]
async fn gets_succeed_while_an_instance_is_down_and_it_is_ejected() {
    let healthy = Stub::start(Behaviour::Ok).await;
    let dead = dead_url().await;
    let client = client(&[&healthy.url, &dead]);
    for _ in 0..20 {
        let response = client.get("/things").send().await.expect("another try");
        assert_eq!(response.status(), 200);
    }
    assert_eq!(healthy.hits(), 20);
    assert_eq!(state_of(&client, &dead), BreakerState::Open);
    assert_eq!(state_of(&client, &healthy.url), BreakerState::Closed);
}

#[tokio::test]
async fn a_post_that_reached_an_instance_is_not_repeated() {
    let healthy = Stub::start(Behaviour::Ok).await;
    let failing = Stub::start(Behaviour::Unavailable).await;
    let client = client(&[&healthy.url, &failing.url]);
    let mut failed = 0;
    for _ in 0..20 {
        match client.post("/orders").json(&"one").send().await {
            Ok(response) => assert_eq!(response.status(), 200),
            Err(ClientError::Upstream { status, .. }) => {
                assert_eq!(status, Some(StatusCode::SERVICE_UNAVAILABLE));
                failed += 1;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    // Every request the failing stub saw came back as an error: none was
    // sent on to the healthy one.
    assert!(
        failed >= 1,
        "the failing stub was tried before its ejection"
    );
    assert_eq!(failed, failing.hits());
    assert_eq!(healthy.hits() + failing.hits(), 20);
    assert_eq!(state_of(&client, &failing.url), BreakerState::Open);
}

#[tokio::test]
async fn a_post_with_an_idempotency_key_moves_to_another_instance() {
    let healthy = Stub::start(Behaviour::Ok).await;
    let failing = Stub::start(Behaviour::Unavailable).await;
    let client = client(&[&healthy.url, &failing.url]);
    for i in 0..20 {
        let response = client
            .post("/orders")
            .idempotency_key(format!("order-{i}"))
            .json(&"one")
            .send()
            .await
            .expect("retried on the healthy instance");
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), format!("ok order-{i}"));
    }
    assert_eq!(healthy.hits(), 20);
    assert_eq!(state_of(&client, &failing.url), BreakerState::Open);
}

#[tokio::test]
async fn a_post_that_could_not_connect_goes_elsewhere() {
    let healthy = Stub::start(Behaviour::Ok).await;
    let dead = dead_url().await;
    let client = client(&[&healthy.url, &dead]);
    for _ in 0..10 {
        let response = client.post("/orders").send().await.expect("retried");
        assert_eq!(response.status(), 200);
    }
    assert_eq!(healthy.hits(), 10);
}

#[tokio::test]
async fn a_hanging_instance_costs_one_try_timeout_not_the_request() {
    let healthy = Stub::start(Behaviour::Ok).await;
    let hanging = Stub::start(Behaviour::Hang).await;
    let client = client(&[&healthy.url, &hanging.url]);
    let calls = async {
        for _ in 0..10 {
            let response = client.get("/slow").send().await.expect("retried");
            assert_eq!(response.status(), 200);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), calls)
        .await
        .expect("the calls answer instead of hanging");
    assert_eq!(healthy.hits(), 10);
    assert_eq!(state_of(&client, &hanging.url), BreakerState::Open);
}

#[tokio::test]
async fn no_live_instance_is_unavailable_with_retry_after() {
    let (first, second) = (dead_url().await, dead_url().await);
    let client = client(&[&first, &second]);
    let mut errors = Vec::new();
    for _ in 0..5 {
        errors.push(client.get("/x").send().await.unwrap_err());
    }
    // Connection refused everywhere trips both breakers; then the client
    // answers at once without sending anything.
    let last = errors.pop().unwrap();
    assert!(last.is_unavailable(), "{last}");
    let problem = Problem::from(last);
    assert_eq!(problem.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(problem.retry_after_secs.is_some_and(|s| s >= 1));

    let empty = ServiceClient::new("nobody", &settings());
    let error = empty.get("/x").send().await.unwrap_err();
    assert!(error.is_unavailable(), "{error}");
}

#[tokio::test]
async fn the_last_failure_is_a_bad_gateway() {
    let failing = Stub::start(Behaviour::Unavailable).await;
    let client = client(&[&failing.url]);
    let error = client.get("/x").send().await.unwrap_err();
    assert!(matches!(error, ClientError::Upstream { .. }), "{error}");
    assert_eq!(Problem::from(error).status(), StatusCode::BAD_GATEWAY);
    assert_eq!(failing.hits(), 1, "one instance: one try");
}

/// A 500 may be about the request: it reaches the caller, never retried.
/// But an instance answering only 500s is broken, and its breaker opens.
#[tokio::test]
async fn a_500_reaches_the_caller_and_an_instance_giving_only_500s_is_ejected() {
    let broken = Stub::start(Behaviour::Broken).await;
    let healthy = Stub::start(Behaviour::Ok).await;
    let client = client(&[&broken.url, &healthy.url]);
    let mut errors = 0;
    for _ in 0..40 {
        let response = client.get("/bug").send().await.expect("an answer");
        if response.status() == 500 {
            errors += 1;
        }
    }
    // Not retried: every 500 the broken instance gave reached the caller.
    assert_eq!(errors, broken.hits());
    assert_eq!(broken.hits() + healthy.hits(), 40);
    assert_eq!(
        broken.hits(),
        settings().breaker.consecutive_failures as usize,
        "ejected after its streak of 500s"
    );
    assert_eq!(state_of(&client, &broken.url), BreakerState::Open);
}

fn instances(urls: &[&String]) -> Instances {
    urls.iter()
        .enumerate()
        .map(|(i, url)| Instance {
            id: format!("stub-{i}"),
            service: "stub".into(),
            url: (*url).clone(),
            version: "test".into(),
            zone: None,
        })
        .collect()
}

#[tokio::test]
async fn following_discovery_moves_calls_to_the_new_instances() {
    let (old, new) = (
        Stub::start(Behaviour::Ok).await,
        Stub::start(Behaviour::Ok).await,
    );
    let (sender, receiver) = watch::channel(instances(&[&old.url]));
    let client = ServiceClient::new("stub", &settings());
    let shutdown = CancellationToken::new();
    let follower = client.follow(receiver, shutdown.clone());

    wait_until(|| client.balancer().len() == 1).await;
    client.get("/a").send().await.unwrap();
    assert_eq!(old.hits(), 1);

    sender.send(instances(&[&new.url])).unwrap();
    wait_until(|| client.balancer().endpoints()[0].url() == new.url).await;
    client.get("/b").send().await.unwrap();
    assert_eq!((old.hits(), new.hits()), (1, 1));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), follower)
        .await
        .expect("the follower stops on shutdown")
        .unwrap();
}

/// Poll `done` for at most five seconds.
async fn wait_until(done: impl Fn() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached in five seconds");
}
