//! The middleware wrapped around both the proxy and the gateway's own
//! endpoints besides the edge (`edge.rs`): request metrics with panic
//! catching, and CORS.
//!
//! `zocalo_http::server::finish` cannot be used as is because it installs
//! its own fallback, where the proxy lives, and labels metrics with axum's
//! matched path, which a fallback does not have. These are the same pieces
//! arranged for a proxy.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use futures_util::FutureExt as _;
use metrics::{Counter, Histogram, Label};
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, CorsLayer};
use zocalo_http::Problem;

use crate::proxy::RouteLabel;
use zocalo_http::server::REQUEST_ID;

pub(crate) const SERVICE: &str = "gateway";

/// What the gateway's layers wrap: axum's routes, which answer every
/// request with a response.
pub(crate) trait Routed:
    Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S> Routed for S where
    S: Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

/// The future of a layer's answer.
pub(crate) type BoxedResponse = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// The service that was polled ready handles this request; a clone takes
/// its place for the next one (tower's usual hand-over).
pub(crate) fn take_ready<S: Clone>(slot: &mut S) -> S {
    let clone = slot.clone();
    std::mem::replace(slot, clone)
}

/// The route label of requests that matched neither a route nor an
/// endpoint of the gateway.
static UNMATCHED: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("unmatched"));

/// Counts and times every response, labelled with the route prefix for
/// proxied requests and the matched path for the gateway's own endpoints,
/// and turns a panicking handler into a 500 problem (counted too). Catching
/// panics here rather than with tower-http's `CatchPanicLayer` spares every
/// response body two more boxes.
#[derive(Debug, Clone, Default)]
pub(crate) struct OutcomeLayer {
    handles: Arc<MetricHandles>,
}

impl<S> Layer<S> for OutcomeLayer {
    type Service = Outcome<S>;

    fn layer(&self, inner: S) -> Outcome<S> {
        Outcome {
            inner,
            handles: self.handles.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Outcome<S> {
    inner: S,
    handles: Arc<MetricHandles>,
}

impl<S: Routed> Service<Request> for Outcome<S> {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxedResponse;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let start = Instant::now();
        let matched = request.extensions().get::<MatchedPath>().cloned();
        let method = method_label(request.method());
        let mut inner = take_ready(&mut self.inner);
        let handles = self.handles.clone();
        Box::pin(async move {
            let handled = AssertUnwindSafe(async move { inner.call(request).await })
                .catch_unwind()
                .await;
            let response = match handled {
                Ok(Ok(response)) => response,
                Err(_) => Problem::internal("handler panicked").into_response(),
            };
            let route = match response.extensions().get::<RouteLabel>() {
                Some(label) => label.0.clone(),
                None => matched.map_or_else(|| UNMATCHED.clone(), |path| Arc::from(path.as_str())),
            };
            handles.record(route, method, response.status(), start.elapsed());
            Ok(response)
        })
    }
}

/// The counter and histogram of one (route, method, status), registered
/// once and then only looked up: building and hashing a label vector in the
/// metrics registry on every request was a measurable share of the
/// gateway's CPU. The set is bounded by the routes and endpoints, eight
/// method labels and the status codes.
#[derive(Debug, Default)]
struct MetricHandles {
    by_key: RwLock<HashMap<MetricKey, (Counter, Histogram)>>,
}

/// Route label, method label, status code.
type MetricKey = (Arc<str>, &'static str, u16);

impl MetricHandles {
    fn record(&self, route: Arc<str>, method: &'static str, status: StatusCode, took: Duration) {
        let key = (route, method, status.as_u16());
        {
            let known = self.by_key.read().unwrap_or_else(|p| p.into_inner());
            if let Some((count, duration)) = known.get(&key) {
                count.increment(1);
                duration.record(took.as_secs_f64());
                return;
            }
        }
        let (count, duration) = self.register(key);
        count.increment(1);
        duration.record(took.as_secs_f64());
    }

    fn register(&self, key: MetricKey) -> (Counter, Histogram) {
        let (route, method, status) = &key;
        let labels = vec![
            Label::from_static_parts("service", SERVICE),
            Label::from_static_parts("method", method),
            Label::new("route", route.to_string()),
            Label::new("status", status.to_string()),
        ];
        let handles = (
            metrics::counter!("http_requests_total", labels.clone()),
            metrics::histogram!("http_request_duration_seconds", labels),
        );
        self.by_key
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(key)
            .or_insert(handles)
            .clone()
    }
}

/// Standard methods need no allocation; anything else is lumped together so
/// that clients cannot mint label values.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// CORS for the configured browser origins; `None` when there are none, so
/// that no CORS header is ever sent. Preflights are answered here and never
/// reach a service.
pub(crate) fn cors(origins: &[String]) -> anyhow::Result<Option<CorsLayer>> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .map(|o| {
                HeaderValue::from_str(o.trim_end_matches('/'))
                    .with_context(|| format!("CORS origin `{o}` is not a valid header value"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        AllowOrigin::list(list)
    };
    // Tokens travel in the Authorization header, not cookies, so credentials
    // stay disallowed (which also keeps `*` legal).
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::ACCEPT,
                header::CONTENT_TYPE,
                header::IF_MATCH,
                header::IF_NONE_MATCH,
                REQUEST_ID,
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([
                REQUEST_ID,
                header::ETAG,
                header::LOCATION,
                header::RETRY_AFTER,
            ])
            .max_age(Duration::from_secs(600)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_is_off_without_origins_and_refuses_bad_ones() {
        assert!(cors(&[]).unwrap().is_none());
        assert!(cors(&["*".into()]).unwrap().is_some());
        assert!(cors(&["https://app.example/".into()]).unwrap().is_some());
        assert!(cors(&["bad\norigin".into()]).is_err());
    }

    #[tokio::test]
    async fn a_panicking_handler_becomes_a_500_problem() {
        use tower::ServiceExt as _;
        let handler = tower::service_fn(|_: Request| async move {
            if true {
                panic!("handler bug");
            }
            Ok::<Response, Infallible>(Response::default())
        });
        let response = OutcomeLayer::default()
            .layer(handler)
            .oneshot(Request::default())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }

    #[test]
    fn unusual_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "OTHER");
    }
}
