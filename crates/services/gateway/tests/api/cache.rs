//! The shared response cache: a real gateway in front of an upstream that
//! marks its answers cacheable or not, counting what reaches it; gateways
//! sharing the test Redis, and one whose private Redis this suite kills.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::body::Frame;
use zocalo_gateway::{RouteSettings, Settings};
use zocalo_testkit::TestTokens;
use zocalo_testkit::redis::{RedisProcess, redis_url, unique_prefix};
use zocalo_testkit::serve::{Served, serve};

use crate::support::{TestGateway, header, metric, settings, spawn_gateway, spawn_upstream};

/// Requests the upstream received, per path and query.
#[derive(Clone, Default)]
struct Hits(Arc<Mutex<HashMap<String, usize>>>);

impl Hits {
    fn count(&self, target: &str) -> usize {
        self.0.lock().unwrap().get(target).copied().unwrap_or(0)
    }

    fn record(&self, target: &str) -> usize {
        let mut hits = self.0.lock().unwrap();
        let n = hits.entry(target.to_owned()).or_default();
        *n += 1;
        *n
    }
}

/// An upstream whose paths say how cacheable their answers are; bodies
/// carry the hit number, so a body from the cache is recognisable.
struct CachingUpstream {
    url: String,
    hits: Hits,
    _served: Served,
}

async fn spawn_caching_upstream() -> CachingUpstream {
    let hits = Hits::default();
    let app = Router::new().fallback(answer).with_state(hits.clone());
    let served = serve(app).await;
    CachingUpstream {
        url: served.url.clone(),
        _served: served,
        hits,
    }
}

async fn answer(State(hits): State<Hits>, request: Request) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_default();
    let n = hits.record(&format!("{} {target}", request.method()));
    if request.method() != "GET" && request.method() != "HEAD" {
        return StatusCode::NO_CONTENT.into_response();
    }
    let body = format!("{target} #{n}");
    let cache_control = match request.uri().path() {
        "/api/things/private" => "private, max-age=60",
        "/api/things/no-store" => "public, no-store",
        "/api/things/unmarked" => "max-age=60",
        "/api/things/short" => "public, max-age=1",
        _ => "public, max-age=60",
    };
    let mut response = match request.uri().path() {
        "/api/things/big" => vec![b'x'; 300 * 1024].into_response(),
        "/api/things/chunked" => Body::new(Unsized(Some(Bytes::from(body)))).into_response(),
        "/api/things/vary" => {
            let accept = header_value(request.headers(), "accept");
            let mut response = format!("{body} for {accept}").into_response();
            response
                .headers_mut()
                .insert("vary", "Accept".parse().unwrap());
            response
        }
        "/api/things/vary-star" => ([("vary", "*")], body).into_response(),
        _ => body.into_response(),
    };
    let headers = response.headers_mut();
    headers.insert("cache-control", cache_control.parse().unwrap());
    headers.insert("etag", "\"v1\"".parse().unwrap());
    headers.insert("x-upstream-only", "kept on misses".parse().unwrap());
    response
}

/// A body of unknown length (sent chunked): one chunk, no size hint.
struct Unsized(Option<Bytes>);

impl hyper::body::Body for Unsized {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.take().map(|chunk| Ok(Frame::data(chunk))))
    }
}

fn header_value(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

/// Gateway settings with `things` behind `/api/things` on `upstream` and
/// every other route on an unrelated upstream.
fn things(other: &str, upstream: &str) -> Settings {
    let mut settings = settings(other);
    let mut route = RouteSettings::new("/api/things", "things");
    route.upstreams = vec![upstream.to_owned()];
    settings.routes.push(route);
    let mut opted_out = RouteSettings::new("/api/uncached", "things");
    opted_out.upstreams = vec![upstream.to_owned()];
    opted_out.cache = false;
    settings.routes.push(opted_out);
    settings
}

struct Fixture {
    upstream: CachingUpstream,
    gateway: TestGateway,
    _other: crate::support::TestUpstream,
}

async fn fixture() -> Fixture {
    let tokens = TestTokens::new();
    let other = spawn_upstream("other", &tokens).await;
    let upstream = spawn_caching_upstream().await;
    let gateway = spawn_gateway(things(&other.url, &upstream.url)).await;
    Fixture {
        upstream,
        gateway,
        _other: other,
    }
}

/// GET `path` with `headers`; the status, `X-Cache` and body.
async fn get(
    gateway: &TestGateway,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, reqwest::Response) {
    let mut request = gateway.client.get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(Duration::from_secs(10), request.send())
        .await
        .expect("the gateway answers within 10 s")
        .unwrap();
    let status = response.status().as_u16();
    let x_cache = header(&response, "x-cache").map(str::to_owned);
    (status, x_cache, response)
}

async fn body(path: &str, gateway: &TestGateway, headers: &[(&str, &str)]) -> (String, String) {
    let (status, x_cache, response) = get(gateway, path, headers).await;
    assert_eq!(status, 200, "{path}");
    let x_cache = x_cache.unwrap_or_else(|| "none".into());
    (x_cache, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_gets_are_answered_from_the_cache_with_age_and_304() {
    let f = fixture().await;
    let path = "/api/things/public?page=1";

    let (_, x_cache, first) = get(&f.gateway, path, &[]).await;
    assert_eq!(x_cache.as_deref(), Some("miss"));
    assert_eq!(
        header(&first, "x-upstream-only"),
        Some("kept on misses"),
        "a miss relays every upstream header"
    );
    assert_eq!(first.text().await.unwrap(), format!("{path} #1"));

    let (_, x_cache, second) = get(&f.gateway, path, &[]).await;
    assert_eq!(x_cache.as_deref(), Some("hit"));
    assert_eq!(header(&second, "etag"), Some("\"v1\""));
    assert_eq!(header(&second, "cache-control"), Some("public, max-age=60"));
    assert_eq!(
        header(&second, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(
        header(&second, "x-upstream-only"),
        None,
        "hits keep selected headers"
    );
    assert!(
        header(&second, "x-request-id").is_some(),
        "the gateway's own headers"
    );
    let age: u64 = header(&second, "age").unwrap().parse().unwrap();
    assert!(age <= 1, "age {age}");
    assert_eq!(second.text().await.unwrap(), format!("{path} #1"));
    assert_eq!(f.upstream.hits.count(&format!("GET {path}")), 1);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, x_cache, later) = get(&f.gateway, path, &[]).await;
    assert_eq!(x_cache.as_deref(), Some("hit"));
    let later_age: u64 = header(&later, "age").unwrap().parse().unwrap();
    assert!(
        later_age >= 2 && later_age > age,
        "age grows: {age} then {later_age}"
    );

    let (status, x_cache, revalidated) = get(
        &f.gateway,
        path,
        &[("if-none-match", "\"other\", W/\"v1\"")],
    )
    .await;
    assert_eq!(status, 304);
    assert_eq!(x_cache.as_deref(), Some("hit"));
    assert_eq!(header(&revalidated, "etag"), Some("\"v1\""));
    assert!(header(&revalidated, "age").is_some());
    assert!(revalidated.bytes().await.unwrap().is_empty());
    let (status, _, _) = get(&f.gateway, path, &[("if-none-match", "\"v0\"")]).await;
    assert_eq!(status, 200, "another version: the full answer");

    let head = reqwest::Client::new()
        .head(f.gateway.client.url(path))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        header(&head, "x-cache"),
        Some("hit"),
        "HEAD from the GET entry"
    );
    assert_eq!(
        header(&head, "content-length").map(str::to_owned),
        Some(format!("{path} #1").len().to_string())
    );
    assert_eq!(f.upstream.hits.count(&format!("GET {path}")), 1);
    assert_eq!(f.upstream.hits.count(&format!("HEAD {path}")), 0);

    let (x_cache, text) = body("/api/things/public?page=2", &f.gateway, &[]).await;
    assert_eq!(
        (x_cache.as_str(), text.as_str()),
        ("miss", "/api/things/public?page=2 #1")
    );
    assert!(
        metric(
            &f.gateway.client,
            "gateway_cache_requests_total",
            "result=\"hit\""
        )
        .await
            >= 5.0,
        "hits are counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_personal_and_unsuitable_answers_are_never_cached() {
    let f = fixture().await;
    let cases: [(&str, &[(&str, &str)]); 9] = [
        ("/api/things/private", &[]),
        ("/api/things/no-store", &[]),
        ("/api/things/unmarked", &[]),
        ("/api/things/vary-star", &[]),
        ("/api/things/big", &[]),
        ("/api/things/chunked", &[]),
        (
            "/api/things/public?who=basic",
            &[("authorization", "Basic dTpw")],
        ),
        ("/api/things/public?who=cookie", &[("cookie", "session=1")]),
        ("/api/uncached/public", &[]),
    ];
    for (path, headers) in cases {
        for round in 1..=2 {
            let (status, x_cache, response) = get(&f.gateway, path, headers).await;
            assert_eq!(status, 200, "{path}");
            assert_ne!(x_cache.as_deref(), Some("hit"), "{path}");
            let text = response.text().await.unwrap();
            if !path.ends_with("big") {
                assert!(text.ends_with(&format!("#{round}")), "{path}: {text}");
            }
        }
        assert_eq!(f.upstream.hits.count(&format!("GET {path}")), 2, "{path}");
    }
    let (_, x_cache, _) = get(&f.gateway, "/api/uncached/public", &[]).await;
    assert_eq!(x_cache, None, "an opted-out route is not even looked up");
    assert!(
        metric(
            &f.gateway.client,
            "gateway_cache_requests_total",
            "result=\"bypass\""
        )
        .await
            >= 6.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_keeps_one_entry_per_listed_request_header() {
    let f = fixture().await;
    let path = "/api/things/vary";
    let json = [("accept", "application/json")];
    let text = [("accept", "text/plain")];
    assert_eq!(body(path, &f.gateway, &json).await.0, "miss");
    assert_eq!(body(path, &f.gateway, &text).await.0, "miss");
    let (x_cache, cached) = body(path, &f.gateway, &json).await;
    assert_eq!(x_cache, "hit");
    assert!(cached.ends_with("#1 for application/json"), "{cached}");
    let (x_cache, cached) = body(path, &f.gateway, &text).await;
    assert_eq!(x_cache, "hit");
    assert!(cached.ends_with("#2 for text/plain"), "{cached}");
    assert_eq!(f.upstream.hits.count(&format!("GET {path}")), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_and_successful_writes_purge_their_path() {
    let f = fixture().await;
    let short = "/api/things/short";
    assert_eq!(body(short, &f.gateway, &[]).await.0, "miss");
    assert_eq!(body(short, &f.gateway, &[]).await.0, "hit");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        body(short, &f.gateway, &[]).await.0,
        "miss",
        "max-age=1 ran out"
    );

    let item = "/api/things/public/7";
    let list = "/api/things/public";
    for path in [item, list] {
        assert_eq!(body(path, &f.gateway, &[]).await.0, "miss");
        assert_eq!(body(path, &f.gateway, &[]).await.0, "hit");
    }
    let written = f.gateway.client.put(item).body("x").send().await.unwrap();
    assert_eq!(written.status(), 204);
    for path in [item, list] {
        let (x_cache, text) = body(path, &f.gateway, &[]).await;
        assert_eq!(
            (x_cache.as_str(), text.ends_with("#2")),
            ("miss", true),
            "{path}"
        );
    }
}

fn shared(other: &str, upstream: &str, redis: &str, prefix: &str) -> Settings {
    let mut settings = things(other, upstream);
    settings.redis_url = Some(redis.to_owned());
    settings.redis_key_prefix = prefix.to_owned();
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_sharing_redis_share_entries() {
    let Some(url) = redis_url() else {
        eprintln!("skipping: ZOCALO_TEST_REDIS_URL is not set");
        return;
    };
    let tokens = TestTokens::new();
    let other = spawn_upstream("other", &tokens).await;
    let upstream = spawn_caching_upstream().await;
    let prefix = unique_prefix("gateway-cache");
    let a = spawn_gateway(shared(&other.url, &upstream.url, &url, &prefix)).await;
    let b = spawn_gateway(shared(&other.url, &upstream.url, &url, &prefix)).await;
    let path = "/api/things/public/shared";
    assert_eq!(
        body(path, &a, &[]).await,
        ("miss".into(), format!("{path} #1"))
    );
    assert_eq!(
        body(path, &b, &[]).await,
        ("hit".into(), format!("{path} #1"))
    );
    let vary = "/api/things/vary";
    assert_eq!(body(vary, &b, &[("accept", "a/b")]).await.0, "miss");
    assert_eq!(body(vary, &a, &[("accept", "a/b")]).await.0, "hit");
    assert_eq!(body(vary, &a, &[("accept", "c/d")]).await.0, "miss");
    assert_eq!(upstream.hits.count(&format!("GET {path}")), 1);

    let written = b.client.post(path).body("x").send().await.unwrap();
    assert_eq!(written.status(), 204);
    assert_eq!(
        body(path, &a, &[]).await.0,
        "miss",
        "a write through one gateway purges for all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_falls_back_to_the_in_process_cache() {
    let Some(mut redis) = RedisProcess::start() else {
        return;
    };
    let tokens = TestTokens::new();
    let other = spawn_upstream("other", &tokens).await;
    let upstream = spawn_caching_upstream().await;
    let prefix = unique_prefix("gateway-cache-outage");
    let gateway = spawn_gateway(shared(&other.url, &upstream.url, &redis.url(), &prefix)).await;
    let path = "/api/things/public?outage=1";
    assert_eq!(body(path, &gateway, &[]).await.0, "miss");
    assert_eq!(body(path, &gateway, &[]).await.0, "hit", "from Redis");

    redis.kill();
    let started = Instant::now();
    let mut results = Vec::new();
    for _ in 0..5 {
        // `body` asserts a 200 each time: the outage fails no request.
        results.push(body(path, &gateway, &[]).await.0);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "no request hangs on Redis"
    );
    assert_eq!(results[0], "miss", "Redis' entries are out of reach");
    assert!(
        results[1..].iter().all(|r| r == "hit"),
        "then served in-process: {results:?}"
    );
    assert_eq!(upstream.hits.count(&format!("GET {path}")), 2);
    assert!(
        metric(
            &gateway.client,
            "cache_backend_fallbacks_total",
            "backend=\"redis\""
        )
        .await
            >= 5.0,
        "the fallback is counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_stopped_being_looked_up_resumes_on_a_storable_answer() {
    let f = fixture().await;
    // Enough unstorable answers for the route to stop being looked up.
    for _ in 0..40 {
        let (status, x_cache, _) = get(&f.gateway, "/api/things/private", &[]).await;
        assert_eq!((status, x_cache.as_deref()), (200, Some("miss")));
    }
    let path = "/api/things/public/relearned";
    assert_eq!(body(path, &f.gateway, &[]).await.0, "miss");
    assert_eq!(
        body(path, &f.gateway, &[]).await,
        ("hit".into(), format!("{path} #1")),
        "one storable answer turns lookups back on"
    );
}
