//! Relaying one request to its upstream and the answer back.
//!
//! The order of the checks is deliberate: the cheap ones that need nothing
//! but the request head come first (header budget, rate limit, route, body
//! length), token verification next (it may fetch keys), and only then is an
//! upstream contacted. A refused request never reaches a service.
//!
//! Bodies are streamed both ways: the request body is wrapped in a
//! [`Limited`] so that a chunked body over the limit fails mid-stream, and
//! the upstream's response body is handed to the server as is.
//!
//! Each try goes to the instance the service's balancer picks. A request is
//! retried on another instance only when sending it twice is safe and
//! possible: an idempotent method or an `Idempotency-Key`, a body small
//! enough to have been buffered ([`MAX_RETRIED_BODY`]), a failure of the
//! upstream (no answer, no connection, a timeout of the try, or a
//! 502/503/504), time left, and room in the retry budget. Everything else
//! streams once, as before.

use std::io::Write as _;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{
    AUTHORIZATION, CONNECTION, CONTENT_LENGTH, EXPECT, HOST, TE, TRAILER, TRANSFER_ENCODING,
    UPGRADE,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::uri::PathAndQuery;
use http_body_util::{BodyExt as _, Either, Full, Limited};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;
use tracing::Span;
use zocalo_cache::Redis;
use zocalo_http::auth::{KeySource, TokenError, TokenVerifier};
use zocalo_http::balance::{Endpoint, EndpointId, Pick, report_answer, worth_another_instance};
use zocalo_http::client_ip::{client_ip, peer_ip};
use zocalo_http::ratelimit::RateLimiter;
use zocalo_http::server::REQUEST_ID;

use crate::bulkhead::Permit;
use crate::cache::ResponseCache;
use crate::error::GatewayError;
use crate::routes::{Route, RouteTable, has_dot_segment};
use crate::settings::Settings;

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The largest request body kept in memory so that the request can be sent
/// again; larger or unknown-length bodies stream once and are not retried.
const MAX_RETRIED_BODY: u64 = 64 * 1024;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1);
/// `proxy-*` ones are removed by prefix.
const HOP_BY_HOP: [HeaderName; 6] = [
    CONNECTION,
    KEEP_ALIVE,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Idle upstream connections are closed before a service would close them
/// (hyper servers keep them forever, other stacks often after 60 s), so a
/// pooled connection is rarely found dead.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Enough idle connections per upstream to absorb a burst from many clients
/// without reconnecting, bounded so a spike cannot pin thousands of sockets.
const POOL_MAX_IDLE_PER_HOST: usize = 512;

/// The metrics label of a proxied response: the prefix of its route.
#[derive(Debug, Clone)]
pub(crate) struct RouteLabel(pub Arc<str>);

/// A request body on its way up: streamed (sent once) or buffered (can be
/// sent again). `Full` of a shared `Bytes` makes a re-send a reference count,
/// not a copy.
type UpstreamBody = Either<Limited<Body>, Full<Bytes>>;
type UpstreamClient = Client<HttpConnector, UpstreamBody>;

/// The request body as received, before the first try.
enum Payload {
    Stream(Body),
    Buffered(Bytes),
}

/// Why one try failed.
enum Failure {
    /// The upstream answered 502, 503 or 504.
    Status(http::Response<Incoming>),
    /// No answer within the try's budget.
    Timeout,
    /// No connection, or it broke before the response head.
    Transport(hyper_util::client::legacy::Error),
}

/// Everything a request needs, built once at startup and shared.
pub(crate) struct Gateway {
    pub routes: RouteTable,
    pub verifier: Option<Arc<TokenVerifier>>,
    client: UpstreamClient,
    pub(crate) limiter: RateLimiter<IpAddr>,
    cache: Option<ResponseCache>,
    trusted_proxies: Box<[IpAddr]>,
    max_header_bytes: usize,
    max_attempts: u32,
}

impl Gateway {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        settings.check_resilience()?;
        let routes = RouteTable::new(settings)?;
        let verifier = settings.effective_jwks_url().map(|url| {
            TokenVerifier::new(KeySource::Url(url), &settings.issuer, &settings.audience)
        });
        // One Redis handle (one connection) for the limiter and the cache.
        let redis = settings
            .redis_url
            .as_deref()
            .map(Redis::new)
            .transpose()
            .context("redis_url")?;
        Ok(Self {
            routes,
            verifier,
            client: upstream_client(Duration::from_millis(settings.connect_timeout_ms)),
            limiter: crate::live::rate_limiter(settings, redis.clone()),
            cache: ResponseCache::new(&settings.cache, redis, &settings.redis_key_prefix),
            trusted_proxies: settings.trusted_proxies.clone().into_boxed_slice(),
            max_header_bytes: settings.max_header_bytes,
            max_attempts: settings.retry.max_attempts.max(1),
        })
    }

    /// Check the request, then relay it to the route's next upstream.
    async fn forward(
        &self,
        route: Option<&Route>,
        mut parts: Parts,
        body: Body,
    ) -> Result<Response, GatewayError> {
        check_header_size(&parts, self.max_header_bytes)?;
        self.check_rate(&parts).await?;
        let route = route.ok_or(GatewayError::NoRoute)?;
        if has_dot_segment(parts.uri.path()) {
            return Err(GatewayError::DotSegments);
        }
        check_content_length(&parts.headers, route.max_body_bytes)?;
        let lookup = self
            .cache
            .as_ref()
            .and_then(|cache| cache.lookup_for(&route.cache, &parts));
        if let (Some(cache), Some(lookup)) = (&self.cache, &lookup)
            && let Some(hit) = cache.answer(&route.cache, lookup).await
        {
            return Ok(hit);
        }
        let purge =
            (self.cache.is_some() && is_unsafe(&parts.method)).then(|| parts.uri.path().to_owned());
        if !route.has_upstreams() {
            return Err(GatewayError::NoUpstream(route.service.clone()));
        }
        if let Some(token) = bearer_token(&parts.headers) {
            self.verify(token).await?;
        }

        let peer = peer_ip(&parts);
        let peer_trusted = peer.is_some_and(|ip| self.trusted_proxies.contains(&ip));
        strip_hop_by_hop(&mut parts.headers);
        // The gateway's server already answered any `100-continue` when the
        // body was first read; the upstream must not answer it again.
        parts.headers.remove(EXPECT);
        set_forwarded_headers(&mut parts.headers, &parts.uri, peer, peer_trusted);
        let payload = if may_resend(&parts.method, &parts.headers) {
            // A client trickling its body must not hold anything for long;
            // it holds no service slot yet either.
            tokio::time::timeout(route.timeout, Self::payload(body, route.max_body_bytes))
                .await
                .map_err(|_| GatewayError::BodyTimeout)??
        } else {
            Payload::Stream(body)
        };
        let permit = route
            .bulkhead
            .enter()
            .ok_or_else(|| GatewayError::Overloaded(route.service.clone()))?;
        route.balancer.budget().deposit();
        let (response, pick) = self.relay(route, parts, payload).await?;
        let Some(cache) = &self.cache else {
            return Ok(downstream(response, pick, permit));
        };
        if let Some(path) = purge
            && response.status().is_success()
        {
            cache.purge(&route.cache, &path).await;
        }
        match lookup {
            Some(lookup) => {
                cache
                    .relay_miss(&route.cache, lookup, response, pick, permit, route.timeout)
                    .await
            }
            None => Ok(downstream(response, pick, permit)),
        }
    }

    /// Buffer a small body of known length so that it can be sent again;
    /// stream anything else.
    async fn payload(body: Body, limit: usize) -> Result<Payload, GatewayError> {
        match body.size_hint().exact() {
            Some(0) => Ok(Payload::Buffered(Bytes::new())),
            Some(length) if length <= MAX_RETRIED_BODY => {
                let collected = Limited::new(body, limit).collect().await.map_err(|error| {
                    if error.is::<http_body_util::LengthLimitError>() {
                        GatewayError::BodyTooLarge { limit }
                    } else {
                        GatewayError::BadBody
                    }
                })?;
                Ok(Payload::Buffered(collected.to_bytes()))
            }
            _ => Ok(Payload::Stream(body)),
        }
    }

    /// Try instances until one answers, the request may not be retried, or
    /// its time, tries or retry budget run out. The pick comes back with the
    /// response: it counts as in flight until the body has been sent.
    async fn relay(
        &self,
        route: &Route,
        parts: Parts,
        payload: Payload,
    ) -> Result<(http::Response<Incoming>, Pick), GatewayError> {
        let deadline = Instant::now() + route.timeout;
        let Parts {
            method,
            uri,
            mut headers,
            ..
        } = parts;
        let path = uri.path_and_query().cloned();
        // Every try carries the request span as its parent: the upstream's
        // spans join the client's trace (or the one this request started).
        zocalo_telemetry::trace::inject_current(&mut headers);
        let (mut stream, buffered) = match payload {
            Payload::Stream(body) => (Some(body), None),
            Payload::Buffered(bytes) => (None, Some(bytes)),
        };
        // Only a buffered body can be sent again, and only to another
        // instance: with one instance there is a single try (and no copy of
        // the headers to keep for a second one).
        let max_attempts = if buffered.is_some() && route.balancer.len() > 1 {
            self.max_attempts
        } else {
            1
        };
        // A streamed body is never retried, so its one try may use the
        // whole budget (a large upload must not be cut at the try timeout);
        // a resendable request gives up on a hanging instance early.
        let try_timeout = if buffered.is_some() {
            route.try_timeout
        } else {
            route.timeout
        };
        let mut pick = route
            .balancer
            .pick(&[])
            .ok_or_else(|| self.unavailable(route))?;
        let mut tried: Vec<EndpointId> = Vec::new();
        let mut attempt = 1;
        loop {
            let body = match (&buffered, stream.take()) {
                (Some(bytes), _) => Either::Right(Full::new(bytes.clone())),
                (None, Some(body)) => Either::Left(Limited::new(body, route.max_body_bytes)),
                // A streamed body allows one try only (max_attempts = 1).
                (None, None) => unreachable!("a streamed body is sent once"),
            };
            // Headers are copied only while another try may follow.
            let try_headers = if attempt < max_attempts {
                headers.clone()
            } else {
                std::mem::take(&mut headers)
            };
            let request =
                upstream_request(&method, path.clone(), try_headers, pick.endpoint(), body)?;
            let budget = try_timeout.min(deadline.saturating_duration_since(Instant::now()));
            let failure = match tokio::time::timeout(budget, self.client.request(request)).await {
                Ok(Ok(response)) if !worth_another_instance(response.status()) => {
                    report_answer(&mut pick, response.status());
                    return Ok((response, pick));
                }
                Ok(Ok(response)) => Failure::Status(response),
                Ok(Err(error)) => Failure::Transport(error),
                Err(_) => Failure::Timeout,
            };
            let upstream_at_fault = match &failure {
                Failure::Transport(error) => GatewayError::blames_upstream(error),
                Failure::Status(_) | Failure::Timeout => true,
            };
            if upstream_at_fault {
                pick.failure();
            }
            let next = if upstream_at_fault && attempt < max_attempts && Instant::now() < deadline {
                tried.push(pick.id());
                self.next_try(route, &tried)
            } else {
                None
            };
            match next {
                Some(next) => {
                    tracing::debug!(
                        service = %route.service,
                        from = pick.endpoint().url(),
                        to = next.endpoint().url(),
                        "retrying on another instance"
                    );
                    pick = next;
                    attempt += 1;
                }
                None => return self.give_up(route, failure, pick),
            }
        }
    }

    /// Another instance than those tried, if there is one and the retry
    /// budget allows.
    fn next_try(&self, route: &Route, tried: &[EndpointId]) -> Option<Pick> {
        let next = route.balancer.pick(tried)?;
        if tried.contains(&next.id()) {
            // No other instance: the same one again would most likely fail
            // the same way, and only add load.
            return None;
        }
        route.balancer.budget().try_withdraw().then_some(next)
    }

    /// The last try's failure, as the client sees it: the upstream's own
    /// 502/503/504 relayed, or our 504/502.
    fn give_up(
        &self,
        route: &Route,
        failure: Failure,
        pick: Pick,
    ) -> Result<(http::Response<Incoming>, Pick), GatewayError> {
        match failure {
            Failure::Status(response) => Ok((response, pick)),
            Failure::Timeout => Err(GatewayError::Timeout {
                service: route.service.clone(),
                timeout: route.timeout,
            }),
            Failure::Transport(error) => Err(GatewayError::from_client(
                &route.service,
                error,
                route.max_body_bytes,
            )),
        }
    }

    /// No instance to send to: none at all, or every one ejected.
    fn unavailable(&self, route: &Route) -> GatewayError {
        if route.has_upstreams() {
            GatewayError::AllEjected {
                service: route.service.clone(),
                retry_after_secs: route.balancer.retry_after().as_secs_f64().ceil() as u64,
            }
        } else {
            GatewayError::NoUpstream(route.service.clone())
        }
    }

    /// One token per client address; with trusted proxies in front, the
    /// address they report rather than theirs.
    async fn check_rate(&self, parts: &Parts) -> Result<(), GatewayError> {
        let Some(ip) = client_ip(parts, false, &self.trusted_proxies) else {
            return Ok(());
        };
        self.limiter
            .check(&ip)
            .await
            .map_err(|refusal| GatewayError::RateLimited {
                retry_after_secs: refusal.retry_after_secs.unwrap_or(1),
            })
    }

    async fn verify(&self, token: &[u8]) -> Result<(), GatewayError> {
        let verifier = self.verifier.as_ref().ok_or(GatewayError::NoKeySource)?;
        let token = std::str::from_utf8(token).map_err(|_| TokenError::Malformed)?;
        verifier.verify(token).await?;
        Ok(())
    }
}

/// The axum handler behind every path the gateway does not serve itself.
pub(crate) async fn handle(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let route = gateway.routes.find(&parts.method, parts.uri.path());
    let mut response = match gateway.forward(route, parts, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    if let Some(route) = route {
        response
            .extensions_mut()
            .insert(RouteLabel(route.prefix.clone()));
    }
    response
}

fn upstream_client(connect_timeout: Duration) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    // Small proxied writes must not wait for Nagle's algorithm.
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .build(connector)
}

/// The request line and every header count against the budget, so that a
/// client cannot make every service parse megabytes of headers.
fn check_header_size(parts: &Parts, limit: usize) -> Result<(), GatewayError> {
    let uri = &parts.uri;
    let target = uri.scheme_str().map_or(0, str::len)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    let total = parts.headers.iter().fold(target, |sum, (name, value)| {
        sum + name.as_str().len() + value.len()
    });
    if total > limit {
        return Err(GatewayError::HeadersTooLarge { limit });
    }
    Ok(())
}

/// A declared length over the limit is refused before any upstream is
/// contacted; chunked bodies are bounded by [`Limited`] as they stream.
fn check_content_length(headers: &HeaderMap, limit: usize) -> Result<(), GatewayError> {
    let Some(value) = headers.get(CONTENT_LENGTH) else {
        return Ok(());
    };
    let length: u64 = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or(GatewayError::BadContentLength)?;
    if length > limit as u64 {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    Ok(())
}

/// The token to verify, if the request carries a bearer token. Other schemes
/// (HTTP Basic client credentials at the token endpoint) are the upstream's
/// business; an empty bearer token is still verified, and fails.
fn bearer_token(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, token) = match value.iter().position(|b| *b == b' ') {
        Some(space) => (&value[..space], &value[space + 1..]),
        None => (value, &[][..]),
    };
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii())
}

/// Remove hop-by-hop headers, including those the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none (`Connection` is one of them, so nothing is
    // listed either): one pass over the names costs less than looking up
    // each hop-by-hop name, on every request and every response.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        // The request id is ours to forward, whatever the client says.
        .filter(|name| *name != REQUEST_ID)
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name.as_str().starts_with("proxy-")
}

/// Tell the upstream who the client is and how it reached us. A client's own
/// `X-Forwarded-Proto`/`-Host` are believed only from a trusted proxy;
/// `X-Forwarded-For` is appended to, so its last hop is always the address
/// we saw, which is the one services trust.
///
/// The `Host` header itself is set to the upstream's authority (by the
/// caller): virtual-hosted upstreams and ingresses route on it, and the
/// client's host travels in `X-Forwarded-Host` for services that build
/// absolute URLs.
fn set_forwarded_headers(
    headers: &mut HeaderMap,
    uri: &Uri,
    peer: Option<IpAddr>,
    peer_trusted: bool,
) {
    if let Some(ip) = peer {
        append_forwarded_for(headers, ip);
    }
    if !(peer_trusted && headers.contains_key(X_FORWARDED_PROTO)) {
        // The gateway listens on plain HTTP; TLS ends in front of it.
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !(peer_trusted && headers.contains_key(X_FORWARDED_HOST)) {
        // HTTP/2 clients send the host as the URI authority, not a header.
        let host = headers.get(HOST).cloned().or_else(|| {
            uri.authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        match host {
            Some(host) => headers.insert(X_FORWARDED_HOST, host),
            None => headers.remove(X_FORWARDED_HOST),
        };
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, ip: IpAddr) {
    let mut value = Vec::with_capacity(48);
    for existing in headers.get_all(X_FORWARDED_FOR) {
        value.extend_from_slice(existing.as_bytes());
        value.extend_from_slice(b", ");
    }
    // Writing to a Vec cannot fail.
    let _ = write!(value, "{ip}");
    match HeaderValue::from_maybe_shared(Bytes::from(value)) {
        Ok(value) => headers.insert(X_FORWARDED_FOR, value),
        // Unreachable (header bytes plus an address are valid), but a broken
        // chain must not keep the real peer out.
        Err(_) => headers.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_maybe_shared(Bytes::from(ip.to_string()))
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
        ),
    };
}

/// Methods that change what later reads see (RFC 9110 §9.2.1).
fn is_unsafe(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Whether sending the request twice is harmless: an idempotent method
/// (RFC 9110 §9.2.2), or a client that made it so with an `Idempotency-Key`.
fn may_resend(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    ) || headers.contains_key(IDEMPOTENCY_KEY)
}

/// One try's request: the client's method, path and headers, addressed to
/// `endpoint` (its authority is the `Host`, HTTP/1.1 whatever the client
/// spoke).
fn upstream_request(
    method: &Method,
    path: Option<PathAndQuery>,
    mut headers: HeaderMap,
    endpoint: &Endpoint,
    body: UpstreamBody,
) -> Result<http::Request<UpstreamBody>, GatewayError> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(endpoint.scheme());
    parts.authority = Some(endpoint.authority().clone());
    parts.path_and_query = path;
    let uri = Uri::from_parts(parts).map_err(|_| GatewayError::BadTarget)?;
    headers.insert(HOST, endpoint.host_header().clone());
    let mut request = http::Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Ok(request)
}

/// The upstream's response, minus what described its connection to us. The
/// instance's in-flight count and the service's bulkhead slot are released
/// when the body has been sent (or dropped), not at the response head, so
/// that long downloads count as load; the request's span stays open as long,
/// so that its duration covers the body.
pub(crate) fn downstream(
    response: http::Response<Incoming>,
    pick: Pick,
    permit: Permit,
) -> Response {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(
        parts,
        Body::new(Tracked {
            body,
            span: Span::current(),
            _pick: pick,
            _permit: permit,
        }),
    )
}

/// A response body that holds its request's slots and span until it is
/// done.
struct Tracked {
    body: Incoming,
    span: Span,
    _pick: Pick,
    _permit: Permit,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Err(error))) = &frame {
            crate::edge::log_body_failure(&this.span, error);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use zocalo_http::balance::counts_against_instance;

    use super::*;
    use crate::test_headers::headers;

    #[test]
    fn hop_by_hop_headers_are_removed_with_those_connection_names() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-secret, x-request-id"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("x-request-id", "abc"),
            ("proxy-authorization", "Basic x"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut map);
        let mut left: Vec<_> = map.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "x-request-id"]);
    }

    #[test]
    fn a_message_without_hop_by_hop_headers_is_left_as_it_is() {
        let pairs = [
            ("host", "example.com"),
            ("accept", "*/*"),
            ("x-request-id", "abc"),
            ("cookie", "a=1"),
        ];
        let mut map = headers(&pairs);
        strip_hop_by_hop(&mut map);
        assert_eq!(map, headers(&pairs));
    }

    #[test]
    fn forwarded_for_is_appended_and_host_is_recorded() {
        let mut map = headers(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("host", "example.org"),
        ]);
        let uri: Uri = "/a".parse().unwrap();
        set_forwarded_headers(&mut map, &uri, Some([192, 0, 2, 7].into()), false);
        assert_eq!(map["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(
            map["x-forwarded-proto"], "http",
            "untrusted peers cannot claim https"
        );
        assert_eq!(map["x-forwarded-host"], "example.org");

        let mut map = headers(&[("x-forwarded-proto", "https")]);
        let uri: Uri = "https://h2.example/a".parse().unwrap();
        set_forwarded_headers(&mut map, &uri, Some([192, 0, 2, 7].into()), true);
        assert_eq!(map["x-forwarded-proto"], "https");
        assert_eq!(map["x-forwarded-host"], "h2.example");
    }

    #[test]
    fn only_bearer_tokens_are_checked() {
        let token = |value| bearer_token(&headers(&[("authorization", value)])).map(<[u8]>::to_vec);
        assert_eq!(token("Bearer abc"), Some(b"abc".to_vec()));
        assert_eq!(token("bearer  abc "), Some(b"abc".to_vec()));
        assert_eq!(token("Bearer"), Some(Vec::new()));
        assert_eq!(token("Basic YTpi"), None);
        assert!(bearer_token(&HeaderMap::new()).is_none());
    }

    #[test]
    fn only_idempotent_or_keyed_requests_may_be_resent() {
        for method in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(may_resend(&method, &HeaderMap::new()), "{method}");
        }
        for method in [Method::POST, Method::PATCH] {
            assert!(!may_resend(&method, &HeaderMap::new()), "{method}");
            let keyed = headers(&[("idempotency-key", "k1")]);
            assert!(may_resend(&method, &keyed), "{method} with a key");
        }
    }

    #[test]
    fn gateway_statuses_are_retried_and_500_counts_against_the_instance() {
        let status = |code| StatusCode::from_u16(code).unwrap();
        for code in [502, 503, 504] {
            assert!(worth_another_instance(status(code)));
            assert!(counts_against_instance(status(code)));
        }
        assert!(!worth_another_instance(status(500)));
        assert!(counts_against_instance(status(500)));
        for code in [200, 404, 429, 501] {
            assert!(!worth_another_instance(status(code)));
            assert!(!counts_against_instance(status(code)));
        }
    }

    #[test]
    fn content_length_is_checked_against_the_limit() {
        assert!(check_content_length(&headers(&[("content-length", "10")]), 10).is_ok());
        assert!(matches!(
            check_content_length(&headers(&[("content-length", "11")]), 10),
            Err(GatewayError::BodyTooLarge { .. })
        ));
        assert!(matches!(
            check_content_length(&headers(&[("content-length", "x")]), 10),
            Err(GatewayError::BadContentLength)
        ));
        assert!(check_content_length(&HeaderMap::new(), 0).is_ok());
    }
}
