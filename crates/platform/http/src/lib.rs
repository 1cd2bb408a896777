//! The HTTP layer every Zócalo service stands on.
//!
//! - [`problem`]: RFC 9457 `application/problem+json` errors, the only error
//!   body any service writes;
//! - [`extract`]: JSON, form, query and path extractors whose rejections are
//!   problems rather than plain-text 400s;
//! - [`auth`]: the verified caller (`AuthUser`, `MaybeAuthUser`), role guards
//!   and the JWKS-backed [`auth::TokenVerifier`];
//! - [`server`]: binding, the common middleware stack, graceful shutdown;
//! - [`conditional`]: `ETag` / `If-None-Match` for cacheable reads;
//! - [`ratelimit`]: keyed rate limiting answering 429 with `Retry-After`,
//!   per process or shared through Redis with an in-process fallback;
//! - [`client_ip`]: who the caller is, honouring trusted proxies;
//! - [`balance`]: client-side balancing over a service's instances, with
//!   circuit breakers (outlier ejection) and a retry budget;
//! - [`session`]: the caller's subject as a routing hint for read-your-writes;
//! - [`client`]: the outgoing client for calls between services, balanced
//!   over the callee's live instances, with retries and timeouts;
//! - [`tls`]: TLS termination (rustls with ring) with certificates re-read
//!   from their files, and the plain-HTTP redirect.
//!
//! It depends on `zocalo-telemetry`, `zocalo-cache` and `zocalo-discovery`
//! only, never on a service.

pub mod auth;
pub mod balance;
pub mod client;
pub mod client_ip;
pub mod conditional;
pub mod extract;
pub mod problem;
pub mod ratelimit;
pub mod server;
pub mod session;
pub mod tls;

pub use problem::{FieldError, Problem};

/// Add the current span's trace context (`traceparent`) to an outgoing
/// service-to-service request, so that the callee's spans join our trace.
pub fn traced(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    let mut headers = http::HeaderMap::new();
    zocalo_telemetry::trace::inject_current(&mut headers);
    request.headers(headers)
}
pub mod service_auth;
