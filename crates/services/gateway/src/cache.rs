//! The response cache shared by every gateway instance.
//!
//! Only what a shared cache may keep by HTTP's rules is kept: the 200
//! answer to an anonymous GET (no `Authorization`, no `Cookie`) that the
//! service marks `public` with a `max-age`, or gives an `s-maxage`; never
//! `private`, `no-store`, `no-cache`, `Vary: *` or `Set-Cookie`. An entry
//! lives for the service's max-age (less the `Age` it came with), capped by
//! `cache.max_ttl_secs`. HEAD requests are answered from the GET entry.
//!
//! Entries are keyed by service, path and query; a response with `Vary`
//! leaves a small record under that key naming the headers, and the entry
//! itself under a key that adds the request's values of those headers. So
//! a response without `Vary` costs one lookup, one with `Vary` two.
//!
//! The miss path stays cheap: a response is read into memory only when its
//! headers make it storable and its `Content-Length` is within
//! `cache.max_body_bytes`; anything else streams as before. Routes whose
//! responses keep being unstorable stop being looked up (see
//! [`CacheRoute`]) until one is storable again.
//!
//! A successful unsafe request (POST, PUT, PATCH, DELETE) deletes the
//! entries of its own path and of the collection above it, so a client
//! reads its own write there; other keys (lists with a query string) keep
//! serving until their max-age runs out, which is why services send short
//! ones for public lists.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::header::{
    AGE, AUTHORIZATION, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, COOKIE,
    ETAG, IF_NONE_MATCH, LAST_MODIFIED, SET_COOKIE, VARY,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Incoming};
use metrics::Counter;
use zocalo_cache::{Cache, FallbackCache, MemoryCache, Redis, RedisCache};
use zocalo_http::balance::Pick;

use crate::bulkhead::Permit;
use crate::error::GatewayError;
use crate::proxy::{downstream, strip_hop_by_hop};
use crate::settings::CacheSettings;

pub(crate) const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// The response headers an entry keeps; everything else (dates, request
/// ids, connection details) belongs to one exchange.
const KEPT_HEADERS: [HeaderName; 6] = [
    CONTENT_TYPE,
    ETAG,
    CACHE_CONTROL,
    LAST_MODIFIED,
    CONTENT_ENCODING,
    VARY,
];

/// After this many unstorable responses in a row a route is no longer
/// looked up; one storable response turns lookups back on.
const UNSTORABLE_STREAK: u32 = 32;

const ENTRY: u8 = b'E';
const VARY_RECORD: u8 = b'V';

/// The gateway's cache: the store and its limits.
pub(crate) struct ResponseCache {
    store: Arc<dyn Cache>,
    max_body_bytes: u64,
    max_ttl: Duration,
}

impl ResponseCache {
    /// `None` when the cache is turned off. With `redis` the entries are
    /// shared (under `prefix`), with an in-process fallback while Redis
    /// fails.
    pub fn new(settings: &CacheSettings, redis: Option<Redis>, prefix: &str) -> Option<Self> {
        if !settings.enabled {
            return None;
        }
        let local = MemoryCache::with_max_bytes(settings.memory_max_bytes);
        let store: Arc<dyn Cache> = match redis {
            Some(redis) => Arc::new(FallbackCache::new(
                RedisCache::new(redis, format!("{prefix}cache:")),
                local,
            )),
            None => Arc::new(local),
        };
        Some(Self {
            store,
            max_body_bytes: settings.max_body_bytes as u64,
            max_ttl: Duration::from_secs(settings.max_ttl_secs),
        })
    }

    /// The lookup for this request, if it is one the cache may answer
    /// (counted as a bypass otherwise).
    pub fn lookup_for(&self, route: &CacheRoute, parts: &Parts) -> Option<Lookup> {
        let eligible = route.enabled
            && (parts.method == Method::GET || parts.method == Method::HEAD)
            && !parts.headers.contains_key(AUTHORIZATION)
            && !parts.headers.contains_key(COOKIE);
        if !eligible {
            route.bypass.increment(1);
            return None;
        }
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        Some(Lookup {
            key: base_key(&route.service, target),
            request_headers: parts.headers.clone(),
            is_get: parts.method == Method::GET,
            // Not worth a round trip; the response still tells whether
            // lookups should resume.
            skip: route.unstorable.load(Ordering::Relaxed) >= UNSTORABLE_STREAK,
        })
    }

    /// The cached answer to `lookup`, if there is one (a hit or a miss).
    pub async fn answer(&self, route: &CacheRoute, lookup: &Lookup) -> Option<Response> {
        let found = if lookup.skip {
            None
        } else {
            self.find(lookup).await
        };
        match found {
            Some(entry) => {
                route.hit.increment(1);
                Some(entry.into_response(lookup.request_headers.get(IF_NONE_MATCH)))
            }
            None => {
                route.miss.increment(1);
                None
            }
        }
    }

    async fn find(&self, lookup: &Lookup) -> Option<Entry> {
        match self.get(&lookup.key).await? {
            Stored::Entry(entry) => Some(entry),
            Stored::Vary(names) => {
                let key = variant_key(&lookup.key, &names, &lookup.request_headers);
                match self.get(&key).await? {
                    Stored::Entry(entry) => Some(entry),
                    Stored::Vary(_) => None,
                }
            }
        }
    }

    async fn get(&self, key: &str) -> Option<Stored> {
        match self.store.get(key).await {
            Ok(value) => value.and_then(Stored::decode),
            Err(error) => {
                tracing::debug!(%error, "cache lookup failed");
                None
            }
        }
    }

    /// Relay a missed response, keeping a copy when it is storable. The
    /// body is read whole only then, within `read_timeout`; the request's
    /// instance and service slots (`pick`, `permit`) are held until it has
    /// been read, or until the streamed body is done.
    pub async fn relay_miss(
        &self,
        route: &CacheRoute,
        lookup: Lookup,
        response: http::Response<Incoming>,
        pick: Pick,
        permit: Permit,
        read_timeout: Duration,
    ) -> Result<Response, GatewayError> {
        let ttl = if lookup.is_get {
            self.storable_ttl(&response)
        } else {
            // A HEAD answer has no body to keep.
            None
        };
        let Some(ttl) = ttl else {
            if lookup.is_get {
                route.saw_unstorable();
            }
            let mut response = downstream(response, pick, permit);
            mark(&mut response, "miss");
            return Ok(response);
        };
        route.unstorable.store(0, Ordering::Relaxed);
        let (mut parts, body) = response.into_parts();
        let bytes = tokio::time::timeout(read_timeout, body.collect())
            .await
            .map_err(|_| GatewayError::Timeout {
                service: route.service.clone(),
                timeout: read_timeout,
            })?
            .map_err(|source| GatewayError::ResponseBody {
                service: route.service.clone(),
                source,
            })?
            .to_bytes();
        drop((pick, permit));
        self.store(route, &lookup, &parts.headers, &bytes, ttl)
            .await;
        strip_hop_by_hop(&mut parts.headers);
        let mut response = Response::from_parts(parts, Body::from(bytes));
        mark(&mut response, "miss");
        Ok(response)
    }

    /// How long `response` may be kept, or `None` if it may not be.
    fn storable_ttl(&self, response: &http::Response<Incoming>) -> Option<Duration> {
        if response.status() != StatusCode::OK {
            return None;
        }
        let headers = response.headers();
        if headers.contains_key(SET_COOKIE) || vary_names(headers).is_none() {
            return None;
        }
        let length = response.body().size_hint().exact()?;
        if length > self.max_body_bytes {
            return None;
        }
        let freshness = shared_freshness(headers)?;
        let age = headers
            .get(AGE)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let ttl = Duration::from_secs(freshness.saturating_sub(age)).min(self.max_ttl);
        (!ttl.is_zero()).then_some(ttl)
    }

    async fn store(
        &self,
        route: &CacheRoute,
        lookup: &Lookup,
        headers: &HeaderMap,
        body: &Bytes,
        ttl: Duration,
    ) {
        let age = headers
            .get(AGE)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let entry = Entry::encode(headers, body, now_ms().saturating_sub(age * 1000));
        let key = lookup.key.as_str();
        let names = vary_names(headers).unwrap_or_default();
        let result = if names.is_empty() {
            self.store.set(key, entry, ttl).await
        } else {
            let record = Stored::encode_vary(&names);
            let variant = variant_key(key, &names, &lookup.request_headers);
            match self.store.set(key, record, ttl).await {
                Ok(()) => self.store.set(&variant, entry, ttl).await,
                Err(error) => Err(error),
            }
        };
        if let Err(error) = result {
            tracing::debug!(%error, "response not cached");
            route.store_error.increment(1);
        }
    }

    /// After a successful unsafe request to `path`: forget the entries of
    /// the path and of the collection it is in.
    pub async fn purge(&self, route: &CacheRoute, path: &str) {
        if !route.enabled {
            return;
        }
        let path = path.trim_end_matches('/');
        let mut keys = vec![base_key(&route.service, path)];
        if let Some((parent, _)) = path.rsplit_once('/')
            && !parent.is_empty()
        {
            keys.push(base_key(&route.service, parent));
        }
        for key in keys {
            if let Err(error) = self.store.delete(&key).await {
                tracing::debug!(%error, "cache entry not purged");
            }
        }
    }
}

/// What the cache knows of one route: whether it may cache at all, how
/// its responses have been lately, and its metric handles.
#[derive(Debug)]
pub(crate) struct CacheRoute {
    service: Arc<str>,
    enabled: bool,
    /// Unstorable responses to cacheable requests in a row.
    unstorable: AtomicU32,
    hit: Counter,
    miss: Counter,
    bypass: Counter,
    store_error: Counter,
}

impl CacheRoute {
    pub fn new(service: &Arc<str>, enabled: bool) -> Self {
        let counter = |result: &'static str| {
            metrics::counter!(
                "gateway_cache_requests_total",
                "service" => service.to_string(),
                "result" => result,
            )
        };
        Self {
            service: service.clone(),
            enabled,
            unstorable: AtomicU32::new(0),
            hit: counter("hit"),
            miss: counter("miss"),
            bypass: counter("bypass"),
            store_error: counter("store_error"),
        }
    }

    fn saw_unstorable(&self) {
        let _ = self
            .unstorable
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < UNSTORABLE_STREAK).then_some(n + 1)
            });
    }
}

/// A request the cache may answer, as it was received.
pub(crate) struct Lookup {
    key: String,
    /// The client's headers, for `Vary` and `If-None-Match`.
    request_headers: HeaderMap,
    is_get: bool,
    /// The route's responses have not been storable lately: do not look.
    skip: bool,
}

/// What a key holds: a response, or the names of the headers its
/// responses vary on.
enum Stored {
    Entry(Entry),
    Vary(Vec<HeaderName>),
}

impl Stored {
    fn decode(bytes: Bytes) -> Option<Self> {
        match *bytes.first()? {
            ENTRY => Entry::decode(bytes).map(Self::Entry),
            VARY_RECORD => {
                let names = std::str::from_utf8(&bytes[1..]).ok()?;
                let names = names
                    .split(',')
                    .filter(|n| !n.is_empty())
                    .map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                    .collect::<Option<Vec<_>>>()?;
                Some(Self::Vary(names))
            }
            _ => None,
        }
    }

    fn encode_vary(names: &[HeaderName]) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u8(VARY_RECORD);
        let list: Vec<&str> = names.iter().map(HeaderName::as_str).collect();
        out.put_slice(list.join(",").as_bytes());
        out.freeze()
    }
}

/// A stored response: when it was fetched, its kept headers and its body.
///
/// Layout: `E`, stored-at (Unix ms, u64), header count (u8), then per
/// header name length (u8), name, value length (u16), value; the rest is
/// the body. Binary rather than JSON: no escaping, and the body is one
/// slice of the value read from the store.
struct Entry {
    stored_at_ms: u64,
    headers: HeaderMap,
    body: Bytes,
}

impl Entry {
    fn encode(headers: &HeaderMap, body: &Bytes, stored_at_ms: u64) -> Bytes {
        let kept: Vec<(&HeaderName, &HeaderValue)> = KEPT_HEADERS
            .iter()
            .flat_map(|name| headers.get_all(name).iter().map(move |value| (name, value)))
            .filter(|(_, value)| value.len() <= usize::from(u16::MAX))
            .take(usize::from(u8::MAX))
            .collect();
        let mut out = BytesMut::with_capacity(body.len() + 256);
        out.put_u8(ENTRY);
        out.put_u64(stored_at_ms);
        out.put_u8(kept.len() as u8);
        for (name, value) in kept {
            // Header names are short; the kept ones are all standard.
            out.put_u8(name.as_str().len() as u8);
            out.put_slice(name.as_str().as_bytes());
            out.put_u16(value.len() as u16);
            out.put_slice(value.as_bytes());
        }
        out.put_slice(body);
        out.freeze()
    }

    fn decode(bytes: Bytes) -> Option<Self> {
        let mut at = 1;
        let take = |at: &mut usize, n: usize| -> Option<Bytes> {
            let end = at.checked_add(n).filter(|end| *end <= bytes.len())?;
            let slice = bytes.slice(*at..end);
            *at = end;
            Some(slice)
        };
        let stored_at_ms = u64::from_be_bytes(take(&mut at, 8)?.as_ref().try_into().ok()?);
        let count = take(&mut at, 1)?[0];
        let mut headers = HeaderMap::with_capacity(usize::from(count));
        for _ in 0..count {
            let name_len = take(&mut at, 1)?[0];
            let name = HeaderName::from_bytes(&take(&mut at, usize::from(name_len))?).ok()?;
            let value_len = u16::from_be_bytes(take(&mut at, 2)?.as_ref().try_into().ok()?);
            let value =
                HeaderValue::from_maybe_shared(take(&mut at, usize::from(value_len))?).ok()?;
            headers.append(name, value);
        }
        let body = bytes.slice(at..);
        Some(Self {
            stored_at_ms,
            headers,
            body,
        })
    }

    /// The cached answer: the kept headers with its `Age`, or a 304 when
    /// the client already holds this version.
    fn into_response(self, if_none_match: Option<&HeaderValue>) -> Response {
        let age = now_ms().saturating_sub(self.stored_at_ms) / 1000;
        let not_modified = match (if_none_match, self.headers.get(ETAG)) {
            (Some(condition), Some(etag)) => matches_etag(condition, etag),
            _ => false,
        };
        let mut response = if not_modified {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            let headers = response.headers_mut();
            // RFC 9110 §15.4.5: what a 200 would have said about caching.
            for name in [ETAG, CACHE_CONTROL, VARY, LAST_MODIFIED] {
                for value in self.headers.get_all(&name) {
                    headers.append(name.clone(), value.clone());
                }
            }
            response
        } else {
            let length = HeaderValue::from(self.body.len());
            let mut response = Response::new(Body::from(self.body));
            *response.headers_mut() = self.headers;
            response.headers_mut().insert(CONTENT_LENGTH, length);
            response
        };
        response.headers_mut().insert(AGE, HeaderValue::from(age));
        mark(&mut response, "hit");
        response
    }
}

fn mark(response: &mut Response, result: &'static str) {
    response
        .headers_mut()
        .insert(X_CACHE, HeaderValue::from_static(result));
}

fn base_key(service: &str, target: &str) -> String {
    format!("GET:{service}:{target}")
}

/// The key of the variant of `base` that `request` selects: the values of
/// the listed headers, in the record's order.
fn variant_key(base: &str, names: &[HeaderName], request: &HeaderMap) -> String {
    let mut key = String::with_capacity(base.len() + 64);
    key.push_str(base);
    for name in names {
        key.push('\n');
        key.push_str(name.as_str());
        key.push('=');
        for (i, value) in request.get_all(name).iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            key.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
    }
    key
}

/// The header names of `Vary` (lower-case, sorted, deduplicated); `None`
/// for `Vary: *` or a value that cannot be read, which may not be cached.
fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in headers.get_all(VARY) {
        for name in value.to_str().ok()?.split(',') {
            let name = name.trim();
            if name == "*" {
                return None;
            }
            if !name.is_empty() {
                names.push(HeaderName::from_bytes(name.as_bytes()).ok()?);
            }
        }
    }
    names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Some(names)
}

/// Seconds a shared cache may keep the response by its `Cache-Control`:
/// `s-maxage`, else `max-age` with `public`; `None` when it says `private`,
/// `no-store` or `no-cache`, or gives no lifetime.
fn shared_freshness(headers: &HeaderMap) -> Option<u64> {
    let mut public = false;
    let mut max_age = None;
    let mut s_maxage = None;
    for value in headers.get_all(CACHE_CONTROL) {
        for directive in value.to_str().ok()?.split(',') {
            let directive = directive.trim();
            let (name, argument) = match directive.split_once('=') {
                Some((name, argument)) => (name.trim(), Some(argument.trim().trim_matches('"'))),
                None => (directive, None),
            };
            let seconds = || argument.and_then(|a| a.parse::<u64>().ok());
            match name.to_ascii_lowercase().as_str() {
                "private" | "no-store" | "no-cache" => return None,
                "public" => public = true,
                "max-age" => max_age = seconds(),
                "s-maxage" => s_maxage = seconds(),
                _ => {}
            }
        }
    }
    s_maxage.or(max_age.filter(|_| public))
}

/// RFC 9110 §13.1.2: `*` or a list of (possibly weak) tags, compared weakly.
fn matches_etag(if_none_match: &HeaderValue, etag: &HeaderValue) -> bool {
    let (Ok(list), Ok(ours)) = (if_none_match.to_str(), etag.to_str()) else {
        return false;
    };
    let ours = ours.trim_start_matches("W/");
    list.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == ours)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_headers::headers;

    #[test]
    fn only_shared_cacheable_responses_have_a_lifetime() {
        let freshness = |value| shared_freshness(&headers(&[("cache-control", value)]));
        assert_eq!(freshness("public, max-age=30"), Some(30));
        assert_eq!(freshness("Public, Max-Age=\"30\""), Some(30));
        assert_eq!(
            freshness("s-maxage=10, max-age=60"),
            Some(10),
            "s-maxage wins"
        );
        assert_eq!(freshness("max-age=30"), None, "not said to be shared");
        assert_eq!(freshness("public"), None, "no lifetime");
        assert_eq!(freshness("public, max-age=30, private"), None);
        assert_eq!(freshness("public, no-store, max-age=30"), None);
        assert_eq!(freshness("public, no-cache, max-age=30"), None);
        assert_eq!(shared_freshness(&HeaderMap::new()), None);
        let split = headers(&[("cache-control", "public"), ("cache-control", "max-age=5")]);
        assert_eq!(shared_freshness(&split), Some(5), "several header lines");
    }

    #[test]
    fn vary_lists_are_normalised_and_star_refuses() {
        let names = vary_names(&headers(&[
            ("vary", "Accept-Encoding, accept"),
            ("vary", "Accept"),
        ]))
        .unwrap();
        let names: Vec<_> = names.iter().map(HeaderName::as_str).collect();
        assert_eq!(names, ["accept", "accept-encoding"]);
        assert!(vary_names(&headers(&[("vary", "accept, *")])).is_none());
        assert_eq!(vary_names(&HeaderMap::new()), Some(Vec::new()));

        let names = [HeaderName::from_static("accept")];
        let json = variant_key("k", &names, &headers(&[("accept", "application/json")]));
        let none = variant_key("k", &names, &HeaderMap::new());
        assert_ne!(json, none);
        assert!(json.starts_with('k'));
    }

    #[test]
    fn entries_round_trip_with_their_kept_headers_only() {
        let upstream = headers(&[
            ("content-type", "application/json"),
            ("etag", "\"abc\""),
            ("cache-control", "public, max-age=30"),
            ("vary", "accept"),
            ("x-request-id", "not kept"),
            ("date", "not kept"),
        ]);
        let body = Bytes::from_static(b"{\"a\":1}");
        let encoded = Entry::encode(&upstream, &body, 1234);
        let Some(Stored::Entry(entry)) = Stored::decode(encoded.clone()) else {
            panic!("an entry");
        };
        assert_eq!(entry.stored_at_ms, 1234);
        assert_eq!(entry.body, body);
        assert_eq!(entry.headers.len(), 4);
        assert_eq!(entry.headers["etag"], "\"abc\"");
        assert!(!entry.headers.contains_key("x-request-id"));
        for cut in [1, 5, 12, 20] {
            // A truncated value (a foreign key, a partial write) is a miss.
            if let Some(Stored::Entry(entry)) = Stored::decode(encoded.slice(..cut)) {
                panic!("decoded {} headers from {cut} bytes", entry.headers.len());
            }
        }
        assert!(Stored::decode(Bytes::from_static(b"xyz")).is_none());
        let record = Stored::encode_vary(&[HeaderName::from_static("accept")]);
        assert!(matches!(Stored::decode(record), Some(Stored::Vary(names)) if names.len() == 1));
    }

    #[test]
    fn etags_match_weakly_and_in_lists() {
        let etag = HeaderValue::from_static("\"v1\"");
        let matches = |value| matches_etag(&HeaderValue::from_static(value), &etag);
        assert!(matches("\"v1\""));
        assert!(matches("\"x\", W/\"v1\""));
        assert!(matches("*"));
        assert!(!matches("\"v2\""));
    }
}
