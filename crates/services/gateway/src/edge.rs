//! The outermost layer of the gateway, in one piece: the request id, the
//! request's span (joined to the client's trace), the log line that closes
//! it, and the security headers.
//!
//! These used to be separate layers (`from_fn(request_id)`, tower-http's
//! `TraceLayer`, one `SetResponseHeaderLayer` per header). Each layer costs
//! a clone of the service below it, a boxed future and its own pass over the
//! response headers on every request; on the proxy path, where the service
//! behind answers from memory in a few tens of microseconds, that overhead
//! was a visible share of the gateway's CPU. One layer does the same work
//! once.
//!
//! The log lines keep tower-http's target, message and fields (`finished
//! processing request` at debug with `latency` and `status`; `response
//! failed` at error with `classification` for 5xx answers), so that log
//! filters such as `tower_http=debug` and searches written for them keep
//! working.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use tower::{Layer, Service};
use tracing::{Instrument as _, Span};
use zocalo_http::server::{REQUEST_ID, request_id_of};

use crate::layers::{BoxedResponse, Routed, SERVICE, take_ready};

/// Where the request's closing lines are logged (tower-http's targets).
const ON_RESPONSE: &str = "tower_http::trace::on_response";
const ON_FAILURE: &str = "tower_http::trace::on_failure";

/// Request ids, spans, closing log lines and security headers around
/// everything the gateway serves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EdgeLayer {
    /// Whether responses get `Strict-Transport-Security`.
    pub hsts: bool,
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            hsts: self.hsts,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Edge<S> {
    inner: S,
    hsts: bool,
}

impl<S: Routed> Service<Request> for Edge<S> {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxedResponse;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let start = Instant::now();
        let id = request_id_of(request.headers_mut());
        let span = request_span(&request, &id);
        let mut inner = take_ready(&mut self.inner);
        let future = {
            let _entered = span.enter();
            inner.call(request)
        };
        let hsts = self.hsts;
        Box::pin(
            async move {
                let Ok(mut response) = future.await;
                log_outcome(&response, start.elapsed());
                let headers = response.headers_mut();
                add_security_headers(headers, hsts);
                headers.insert(REQUEST_ID, id);
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// The request's span; a client's `traceparent` makes it part of the
/// client's trace, otherwise the request starts a trace.
fn request_span(request: &Request, id: &HeaderValue) -> Span {
    let span = tracing::info_span!(
        "request",
        service = SERVICE,
        request_id = id.to_str().unwrap_or("-"),
        method = %request.method(),
        path = request.uri().path(),
    );
    zocalo_telemetry::trace::set_parent_from_headers(&span, request.headers());
    span
}

/// The closing line of a request at debug, and for 5xx answers (the
/// gateway's own failures and relayed upstream ones) a line at error, in
/// tower-http's order.
fn log_outcome(response: &Response, latency: Duration) {
    let status = response.status();
    let latency = Millis(latency);
    tracing::debug!(
        target: ON_RESPONSE,
        %latency,
        status = status.as_u16(),
        "finished processing request"
    );
    if status.is_server_error() {
        tracing::error!(
            target: ON_FAILURE,
            classification = %format_args!("Status code: {status}"),
            %latency,
            "response failed"
        );
    }
}

/// A latency as tower-http writes it (`12 ms`).
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ms", self.0.as_millis())
    }
}

/// A response body that fails after its head was sent: logged like a 5xx,
/// in the request's span (kept open until the body is done).
pub(crate) fn log_body_failure(span: &Span, error: &dyn std::fmt::Display) {
    let _entered = span.enter();
    tracing::error!(
        target: ON_FAILURE,
        classification = %format_args!("Error: {error}"),
        "response failed"
    );
}

/// The security headers every response gets unless the upstream chose its
/// own (a service may allow framing of one page, for instance).
fn add_security_headers(headers: &mut HeaderMap, hsts: bool) {
    const ALWAYS: [(header::HeaderName, &str); 3] = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in ALWAYS {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    if hsts {
        headers
            .entry(header::STRICT_TRANSPORT_SECURITY)
            .or_insert(HeaderValue::from_static(
                "max-age=31536000; includeSubDomains",
            ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_headers::headers;

    #[test]
    fn security_headers_are_added_unless_present_and_hsts_is_opt_in() {
        let mut map = headers(&[("x-frame-options", "SAMEORIGIN")]);
        add_security_headers(&mut map, false);
        assert_eq!(
            map["x-frame-options"], "SAMEORIGIN",
            "the upstream's choice"
        );
        assert_eq!(map["x-content-type-options"], "nosniff");
        assert_eq!(map["referrer-policy"], "no-referrer");
        assert!(!map.contains_key("strict-transport-security"));

        add_security_headers(&mut map, true);
        assert_eq!(
            map["strict-transport-security"],
            "max-age=31536000; includeSubDomains"
        );
        assert_eq!(map.len(), 4);
    }
}
