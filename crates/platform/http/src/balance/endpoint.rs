//! One instance of a service: its address, parsed once into what a request
//! needs, and its live state (requests in flight, breaker).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use http::HeaderValue;
use http::uri::{Authority, Scheme, Uri};
use metrics::{Counter, Gauge};

use super::breaker::{Breaker, BreakerState};

/// The weight of an endpoint no one gave a weight.
pub const DEFAULT_WEIGHT: u32 = 1;

/// Identifies an endpoint for as long as it stays in its balancer's set
/// (a URL removed and added again is a new endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointId(u64);

impl EndpointId {
    fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// A base URL that cannot be an endpoint.
#[derive(Debug, thiserror::Error)]
#[error("endpoint `{url}` {reason}")]
pub struct InvalidEndpoint {
    pub url: String,
    pub reason: &'static str,
}

#[derive(Debug)]
pub struct Endpoint {
    id: EndpointId,
    url: String,
    authority: Authority,
    /// The `Host` header for this endpoint: its own authority.
    host: HeaderValue,
    pub(crate) in_flight: AtomicUsize,
    /// Share of new requests relative to the other endpoints (default 1);
    /// 0 drains the endpoint: it gets new requests only when no endpoint
    /// with a weight can take them.
    weight: AtomicU32,
    pub(crate) breaker: Breaker,
    pub(crate) metrics: EndpointMetrics,
}

impl Endpoint {
    /// Parse `http://host:port` (a trailing `/` is fine; a path, query or
    /// another scheme is refused: paths are forwarded unchanged, and TLS to
    /// services is the mesh's job).
    pub fn new(service: &str, url: &str) -> Result<Self, InvalidEndpoint> {
        let invalid = |reason| InvalidEndpoint {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| invalid("is not a URL"))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(invalid("must be an http:// URL"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| invalid("has no host"))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid("must not have a path or query"));
        }
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| invalid("has an invalid host"))?;
        Ok(Self {
            id: EndpointId::next(),
            url: url.trim_end_matches('/').to_owned(),
            metrics: EndpointMetrics::new(service, authority.as_str()),
            authority,
            host,
            in_flight: AtomicUsize::new(0),
            weight: AtomicU32::new(DEFAULT_WEIGHT),
            breaker: Breaker::default(),
        })
    }

    pub fn id(&self) -> EndpointId {
        self.id
    }

    /// The base URL, without a trailing `/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn scheme(&self) -> Scheme {
        Scheme::HTTP
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    pub fn host_header(&self) -> &HeaderValue {
        &self.host
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub(crate) fn set_weight(&self, weight: u32) {
        if self.weight.swap(weight, Ordering::Relaxed) != weight {
            self.metrics.weight.set(f64::from(weight));
            tracing::info!(endpoint = %self.url, weight, "endpoint weight changed");
        }
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    pub(crate) fn report_state(&self, state: BreakerState) {
        self.metrics.breaker_state.set(f64::from(state as u8));
        match state {
            BreakerState::Open => {
                tracing::warn!(endpoint = %self.url, "endpoint ejected: breaker open");
            }
            BreakerState::HalfOpen => {
                tracing::info!(endpoint = %self.url, "endpoint half-open: probing");
            }
            BreakerState::Closed => {
                tracing::info!(endpoint = %self.url, "endpoint re-admitted: breaker closed");
            }
        }
    }
}

/// Handles registered once per endpoint, so that the per-request updates
/// are atomic operations rather than label lookups.
#[derive(Debug)]
pub(crate) struct EndpointMetrics {
    pub in_flight: Gauge,
    pub breaker_state: Gauge,
    pub ejections: Counter,
    pub weight: Gauge,
}

impl EndpointMetrics {
    fn new(service: &str, endpoint: &str) -> Self {
        super::install_recorder();
        let labels = [
            ("service", service.to_owned()),
            ("endpoint", endpoint.to_owned()),
        ];
        let breaker_state = metrics::gauge!("upstream_breaker_state", &labels);
        breaker_state.set(0.0);
        let weight = metrics::gauge!("upstream_weight", &labels);
        weight.set(f64::from(DEFAULT_WEIGHT));
        Self {
            in_flight: metrics::gauge!("upstream_requests_in_flight", &labels),
            breaker_state,
            ejections: metrics::counter!("upstream_ejections_total", &labels),
            weight,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_base_urls_are_endpoints() {
        let endpoint = Endpoint::new("svc", "http://127.0.0.1:8080/").unwrap();
        assert_eq!(endpoint.url(), "http://127.0.0.1:8080");
        assert_eq!(endpoint.host_header(), "127.0.0.1:8080");
        for url in [
            "https://x:1",
            "http://x:1/base",
            "x:1",
            "http://x:1/?q",
            "not a url",
        ] {
            assert!(
                Endpoint::new("svc", url).is_err(),
                "{url} should be refused"
            );
        }
    }
}
