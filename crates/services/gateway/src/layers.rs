//! The middleware wrapped around both the proxy and the gateway's own
//! endpoints: request metrics, CORS and security headers.
//!
//! `zocalo_http::server::finish` cannot be used as is because it installs
//! its own fallback, where the proxy lives, and labels metrics with axum's
//! matched path, which a fallback does not have. These are the same pieces
//! arranged for a proxy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Label, SharedString};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::proxy::RouteLabel;
use zocalo_http::server::REQUEST_ID;

pub(crate) const SERVICE: &str = "gateway";

/// Count and time every response, labelled with the route prefix for
/// proxied requests and the matched path for the gateway's own endpoints.
pub(crate) async fn record_metrics(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| SharedString::from_owned(path.as_str().to_owned()));
    let method = method_label(request.method());
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map(|label| SharedString::from(Arc::clone(&label.0)))
        .or(matched)
        .unwrap_or(SharedString::const_str("unmatched"));
    let labels = vec![
        Label::from_static_parts("service", SERVICE),
        Label::new("method", method),
        Label::new("route", route),
        Label::new("status", response.status().as_u16().to_string()),
    ];
    metrics::histogram!("http_request_duration_seconds", labels.clone())
        .record(start.elapsed().as_secs_f64());
    metrics::counter!("http_requests_total", labels).increment(1);
    response
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

/// The security headers every response gets unless the upstream chose its
/// own (a service may allow framing of one page, for instance).
pub(crate) fn security_headers(hsts: bool) -> Vec<SetResponseHeaderLayer<HeaderValue>> {
    let mut layers = vec![
        SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ),
        SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    if hsts {
        layers.push(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        ));
    }
    layers
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

    #[test]
    fn hsts_is_opt_in() {
        assert_eq!(security_headers(false).len(), 3);
        assert_eq!(security_headers(true).len(), 4);
    }

    #[test]
    fn unusual_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "OTHER");
    }
}
