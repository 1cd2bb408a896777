//! Every reason the gateway answers a request itself instead of relaying the
//! upstream's answer, and the problem+json each one becomes.
//!
//! The split matters to callers: 4xx means the request itself is at fault
//! and must not be retried as is; 502/503/504 mean an upstream failed and a
//! retry may succeed. Causes (socket errors, key fetch failures) are logged,
//! never sent.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_body_util::LengthLimitError;
use hyper_util::client::legacy;
use zocalo_http::Problem;
use zocalo_http::auth::TokenError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum GatewayError {
    #[error("request line and headers exceed {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("rate limit exceeded")]
    RateLimited { retry_after_secs: u64 },
    #[error("no route for this path")]
    NoRoute,
    #[error("`.` and `..` path segments are not allowed")]
    DotSegments,
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("invalid Content-Length header")]
    BadContentLength,
    #[error("invalid request target")]
    BadTarget,
    #[error("request body could not be read")]
    BadBody,
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    #[error("service `{0}` has no instances")]
    NoUpstream(Arc<str>),
    #[error("service `{0}` is at its concurrency limit")]
    Overloaded(Arc<str>),
    #[error("every instance of service `{service}` is ejected")]
    AllEjected {
        service: Arc<str>,
        retry_after_secs: u64,
    },
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("bearer tokens cannot be verified: no JWKS source is configured")]
    NoKeySource,
    #[error("service `{service}` did not answer within {timeout:?}")]
    Timeout {
        service: Arc<str>,
        timeout: Duration,
    },
    #[error("service `{service}` is unreachable: {source:?}")]
    Unreachable {
        service: Arc<str>,
        source: legacy::Error,
    },
    #[error("service `{service}` failed: {source:?}")]
    Upstream {
        service: Arc<str>,
        source: legacy::Error,
    },
    /// A response being read whole (to be cached) broke off.
    #[error("service `{service}` broke off its response: {source:?}")]
    ResponseBody {
        service: Arc<str>,
        source: hyper::Error,
    },
}

impl GatewayError {
    /// Sort a client error: our body limit tripping mid-stream is the
    /// caller's fault (413), a refused connection is a 502 like any other
    /// upstream failure but worth telling apart in logs.
    pub fn from_client(service: &Arc<str>, error: legacy::Error, body_limit: usize) -> Self {
        let service = service.clone();
        if caused_by::<LengthLimitError>(&error) {
            Self::BodyTooLarge { limit: body_limit }
        } else if error.is_connect() {
            Self::Unreachable {
                service,
                source: error,
            }
        } else {
            Self::Upstream {
                service,
                source: error,
            }
        }
    }

    /// Whether a failed try says something about the upstream. A request
    /// body that broke (over our limit, or the client went away while
    /// uploading) is the client's doing and must not eject an instance.
    pub fn blames_upstream(error: &legacy::Error) -> bool {
        !caused_by::<LengthLimitError>(error) && !caused_by_request_body(error)
    }

    pub fn into_problem(self) -> Problem {
        match self {
            Self::HeadersTooLarge { .. } => {
                Problem::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
                    .with_detail(self.to_string())
            }
            Self::RateLimited { retry_after_secs } => Problem::too_many_requests(retry_after_secs),
            Self::NoRoute => Problem::not_found().with_detail(self.to_string()),
            Self::DotSegments | Self::BadContentLength | Self::BadTarget | Self::BadBody => {
                Problem::bad_request(self.to_string())
            }
            Self::BodyTimeout => {
                Problem::new(StatusCode::REQUEST_TIMEOUT).with_detail(self.to_string())
            }
            Self::BodyTooLarge { .. } => {
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE).with_detail(self.to_string())
            }
            Self::Token(error) => error.into(),
            Self::NoUpstream(_) | Self::NoKeySource => Problem::unavailable(self),
            // Expected under overload or an outage, once per request: not
            // worth a log line each (the metrics count them).
            Self::Overloaded(_) => Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                .with_detail("the service is at capacity, retry later")
                .with_retry_after(1),
            Self::AllEjected {
                retry_after_secs, ..
            } => Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                .with_detail("the service is failing, retry later")
                .with_retry_after(retry_after_secs),
            Self::Timeout { .. } => {
                tracing::warn!(error = %self, "upstream timed out");
                Problem::new(StatusCode::GATEWAY_TIMEOUT)
                    .with_detail("the service did not answer in time")
            }
            Self::Unreachable { .. } | Self::Upstream { .. } | Self::ResponseBody { .. } => {
                tracing::warn!(error = %self, "upstream failed");
                Problem::new(StatusCode::BAD_GATEWAY)
                    .with_detail("the service could not be reached or failed to answer")
            }
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        self.into_problem().into_response()
    }
}

/// Whether `E` is anywhere in the error's source chain (hyper wraps a body
/// error twice before it reaches us).
fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    // Chains are a few links long; the bound only guards against cycles.
    for _ in 0..16 {
        match current {
            Some(e) if e.is::<E>() => return true,
            Some(e) => current = e.source(),
            None => return false,
        }
    }
    false
}

/// A hyper "user" error: the request body we were streaming failed.
fn caused_by_request_body(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    for _ in 0..16 {
        match current {
            Some(e) => {
                if e.downcast_ref::<hyper::Error>()
                    .is_some_and(hyper::Error::is_user)
                {
                    return true;
                }
                current = e.source();
            }
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_tell_caller_faults_from_upstream_faults() {
        let service: Arc<str> = "reviews".into();
        let cases = [
            (
                GatewayError::HeadersTooLarge { limit: 1 },
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ),
            (GatewayError::NoRoute, StatusCode::NOT_FOUND),
            (GatewayError::DotSegments, StatusCode::BAD_REQUEST),
            (
                GatewayError::BodyTooLarge { limit: 1 },
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (
                GatewayError::NoUpstream(service.clone()),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                GatewayError::Overloaded(service.clone()),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                GatewayError::AllEjected {
                    service: service.clone(),
                    retry_after_secs: 3,
                },
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (GatewayError::BadBody, StatusCode::BAD_REQUEST),
            (GatewayError::BodyTimeout, StatusCode::REQUEST_TIMEOUT),
            (
                GatewayError::Token(TokenError::Malformed),
                StatusCode::UNAUTHORIZED,
            ),
            (
                GatewayError::Token(TokenError::KeysUnavailable("down".into())),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                GatewayError::Timeout {
                    service,
                    timeout: Duration::from_secs(1),
                },
                StatusCode::GATEWAY_TIMEOUT,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(error.into_problem().status(), status);
        }
    }

    #[tokio::test]
    async fn causes_are_found_down_the_chain() {
        use http_body_util::{BodyExt, Full, Limited};

        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] Box<dyn std::error::Error + Send + Sync>);
        let cut = Limited::new(Full::new(bytes::Bytes::from_static(b"abc")), 1)
            .collect()
            .await
            .unwrap_err();
        let error = Outer(cut);
        assert!(caused_by::<LengthLimitError>(&error));
        assert!(!caused_by::<std::io::Error>(&error));
    }
}
