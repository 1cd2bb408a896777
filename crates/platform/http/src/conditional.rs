//! Conditional GETs for public reads: a strong `ETag` from the body's hash,
//! `Cache-Control`, and `304 Not Modified` for a matching `If-None-Match`.
//!
//! Hashing the rendered body costs one pass over bytes already in memory and
//! needs no cooperation from handlers, so every public read route gets it by
//! adding one layer. A CDN or proxy in front can then cache and revalidate.
//!
//! With a [`ReadCache`], anonymous reads are also answered from memory: the
//! rendered body and its `ETag` are kept per URL until the service changes
//! something (it calls [`ReadCache::invalidate`]) or the entry's time to live
//! runs out. The time to live bounds how stale another instance's cache can
//! be, since an invalidation only reaches the instance that wrote.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use crate::Problem;

/// Bodies larger than this are passed through without an `ETag`.
const MAX_HASHED_BODY: usize = 4 * 1024 * 1024;

/// Rendered public reads, per URL, tagged with the generation of the data
/// they were rendered from.
pub struct ReadCache {
    entries: moka::sync::Cache<String, Cached>,
    generation: AtomicU64,
}

#[derive(Clone)]
struct Cached {
    generation: u64,
    etag: HeaderValue,
    cache_control: HeaderValue,
    content_type: Option<HeaderValue>,
    body: Bytes,
}

impl ReadCache {
    pub fn new(capacity: u64, time_to_live: Duration) -> Arc<Self> {
        Arc::new(Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(time_to_live)
                .build(),
            generation: AtomicU64::new(0),
        })
    }

    /// Forget everything rendered so far: call after every write.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate_all();
    }

    fn get(&self, key: &str) -> Option<Cached> {
        let generation = self.generation.load(Ordering::SeqCst);
        self.entries
            .get(key)
            .filter(|entry| entry.generation == generation)
    }
}

/// Middleware: see the module docs. `max_age` is the `Cache-Control` max-age
/// in seconds; `cache`, when given, serves repeated anonymous reads.
pub async fn conditional_get(
    max_age: u32,
    cache: Option<Arc<ReadCache>>,
    req: Request,
    next: Next,
) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return next.run(req).await;
    }
    let if_none_match = req.headers().get(header::IF_NONE_MATCH).cloned();
    // Only anonymous reads are shared: a signed-in caller may see more.
    let cache = cache.filter(|_| !req.headers().contains_key(header::AUTHORIZATION));
    let key = req.uri().path_and_query().map(|pq| pq.as_str().to_owned());
    if let (Some(cache), Some(key)) = (&cache, &key)
        && let Some(hit) = cache.get(key)
    {
        return cached_response(hit, if_none_match.as_ref());
    }
    // Read before rendering: a write during rendering makes this entry stale
    // on arrival, and the generation check then refuses it.
    let generation = cache.as_ref().map(|c| c.generation.load(Ordering::SeqCst));
    let response = next.run(req).await;
    if response.status() != StatusCode::OK {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Only bodies of known, bounded size are hashed; a stream is passed on
    // untouched rather than buffered.
    let bounded = http_body::Body::size_hint(&body)
        .upper()
        .is_some_and(|upper| upper <= MAX_HASHED_BODY as u64);
    if !bounded {
        return Response::from_parts(parts, body);
    }
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => return Problem::internal(error).into_response(),
    };
    let etag = etag_of(&bytes);
    parts.headers.insert(header::ETAG, etag.clone());
    let cache_control = parts
        .headers
        .entry(header::CACHE_CONTROL)
        .or_insert(
            HeaderValue::from_str(&format!("public, max-age={max_age}"))
                .expect("digits are a valid header value"),
        )
        .clone();
    if let (Some(cache), Some(key), Some(generation)) = (&cache, key, generation)
        && cache_control
            .to_str()
            .is_ok_and(|v| v.starts_with("public"))
    {
        let entry = Cached {
            generation,
            etag: etag.clone(),
            cache_control,
            content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
            body: bytes.clone(),
        };
        cache.entries.insert(key, entry);
    }
    if if_none_match.is_some_and(|v| matches_etag(&v, &etag)) {
        parts.status = StatusCode::NOT_MODIFIED;
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::empty());
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn cached_response(hit: Cached, if_none_match: Option<&HeaderValue>) -> Response {
    let not_modified = if_none_match.is_some_and(|v| matches_etag(v, &hit.etag));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Body::from(hit.body).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, hit.etag);
    headers.insert(header::CACHE_CONTROL, hit.cache_control);
    if let Some(content_type) = hit.content_type.filter(|_| !not_modified) {
        headers.insert(header::CONTENT_TYPE, content_type);
    }
    response
}

fn etag_of(bytes: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(bytes);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header value")
}

/// RFC 9110 §13.1.2: `*` or a list of (possibly weak) tags, compared weakly.
fn matches_etag(if_none_match: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(list) = if_none_match.to_str() else {
        return false;
    };
    let ours = etag.to_str().unwrap_or_default();
    list.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_matching_is_weak_and_handles_lists() {
        let etag = etag_of(b"hello");
        let tag = etag.to_str().unwrap().to_string();
        assert!(matches_etag(&HeaderValue::from_str(&tag).unwrap(), &etag));
        assert!(matches_etag(
            &HeaderValue::from_str(&format!("\"x\", W/{tag}")).unwrap(),
            &etag
        ));
        assert!(matches_etag(&HeaderValue::from_static("*"), &etag));
        assert!(!matches_etag(&HeaderValue::from_static("\"other\""), &etag));
        assert_ne!(etag, etag_of(b"hello!"));
    }

    use std::sync::atomic::AtomicUsize;

    use axum::Router;
    use axum::routing::get;
    use tower::ServiceExt;

    fn app(cache: Arc<ReadCache>, renders: Arc<AtomicUsize>) -> Router {
        Router::new()
            .route(
                "/things",
                get(move || {
                    let renders = renders.clone();
                    async move {
                        let n = renders.fetch_add(1, Ordering::SeqCst);
                        format!("render {n}")
                    }
                }),
            )
            .layer(axum::middleware::from_fn(move |req, next| {
                conditional_get(30, Some(cache.clone()), req, next)
            }))
    }

    async fn get_with(app: &Router, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::builder().uri("/things?page=1");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        app.clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn anonymous_reads_are_served_from_memory_until_invalidated() {
        let cache = ReadCache::new(100, Duration::from_secs(60));
        let renders = Arc::new(AtomicUsize::new(0));
        let app = app(cache.clone(), renders.clone());

        let first = get_with(&app, &[]).await;
        let etag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
        let second = get_with(&app, &[]).await;
        assert_eq!(second.headers()[header::ETAG], etag.as_str());
        assert_eq!(
            renders.load(Ordering::SeqCst),
            1,
            "the second read came from memory"
        );
        let body = second.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"render 0");

        let revalidated = get_with(&app, &[("if-none-match", &etag)]).await;
        assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(renders.load(Ordering::SeqCst), 1);

        get_with(&app, &[("authorization", "Bearer x")]).await;
        assert_eq!(
            renders.load(Ordering::SeqCst),
            2,
            "signed-in reads are not shared"
        );

        cache.invalidate();
        let after = get_with(&app, &[]).await;
        assert_ne!(after.headers()[header::ETAG], etag.as_str());
        assert_eq!(renders.load(Ordering::SeqCst), 3);
    }
}
