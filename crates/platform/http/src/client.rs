//! The outgoing client for calls between services.
//!
//! A [`ServiceClient`] sends requests to one named service over its live
//! instances: each try goes where the service's [`Balancer`] says, gets a
//! per-try timeout inside a total one, and its outcome feeds the instance's
//! breaker (connect errors, timeouts and 502/503/504 are failures; any
//! other answer, 4xx and 500 included, is the instance working). A failed
//! try moves to another instance when repeating the request is harmless:
//!
//! - the method is idempotent (GET, HEAD, OPTIONS, PUT, DELETE), or the
//!   request carries an `Idempotency-Key`, or the caller marked it
//!   [`ServiceRequest::retryable`];
//! - or the try never reached the instance (connection refused), whatever
//!   the method;
//!
//! and only within `max_attempts` and the service's [`RetryBudget`], so an
//! outage cannot multiply the load. What cannot be answered is a
//! [`ClientError`]: `Unavailable` (no live instance: 503 with
//! `Retry-After`) or `Upstream` (the last instance tried failed: 502).
//!
//! The instances come from [`ServiceClient::set_instances`], from a static
//! list, or from a discovery watch ([`ServiceClient::follow`]).
//!
//! [`RetryBudget`]: crate::balance::RetryBudget

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zocalo_discovery::Instances;

use crate::Problem;
use crate::balance::{
    Balancer, BreakerSettings, EndpointId, InvalidEndpoint, Pick, RetrySettings, Strategy,
    report_answer, worth_another_instance,
};

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// How a [`ServiceClient`] balances, ejects, retries and times out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientSettings {
    pub strategy: Strategy,
    pub breaker: BreakerSettings,
    pub retry: RetrySettings,
    /// How long one try may take, connecting and reading the answer's
    /// headers and body included.
    pub try_timeout_ms: u64,
    /// How long a request may take over all its tries.
    pub timeout_ms: u64,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            strategy: Strategy::default(),
            breaker: BreakerSettings::default(),
            retry: RetrySettings::default(),
            try_timeout_ms: 3_000,
            timeout_ms: 10_000,
        }
    }
}

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No instance could be tried: none is known, or every one is ejected.
    #[error("{service} is unavailable: {reason}")]
    Unavailable {
        service: String,
        reason: &'static str,
        retry_after: Duration,
    },
    /// The last instance tried failed (connection error, timeout, or a
    /// 502/503/504 of its own) and no other try was allowed.
    #[error("{service} failed: {reason}")]
    Upstream {
        service: String,
        reason: String,
        /// The instance's status when it answered 502/503/504.
        status: Option<StatusCode>,
    },
    /// The request could not be built (a bad header value, a body that
    /// does not serialize): the caller's bug, not the callee's.
    #[error("invalid request to {service}: {reason}")]
    InvalidRequest { service: String, reason: String },
}

impl ClientError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

impl From<ClientError> for Problem {
    /// 503 with `Retry-After` when the callee has no live instance, 502 when
    /// it failed, 500 for a request we could not build.
    fn from(error: ClientError) -> Self {
        match &error {
            ClientError::Unavailable { retry_after, .. } => {
                tracing::warn!(%error, "service call unavailable");
                Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                    .with_detail("a dependency is unavailable, retry later")
                    .with_retry_after(retry_after.as_secs().max(1))
            }
            ClientError::Upstream { .. } => {
                tracing::warn!(%error, "service call failed");
                Problem::new(StatusCode::BAD_GATEWAY).with_detail("a dependency failed")
            }
            ClientError::InvalidRequest { .. } => Problem::internal(&error),
        }
    }
}

/// Calls one service over its live instances. Cheap to clone: clones share
/// the connection pool, the instances and their breakers.
#[derive(Debug, Clone)]
pub struct ServiceClient {
    http: reqwest::Client,
    balancer: Balancer,
    max_attempts: u32,
    try_timeout: Duration,
    timeout: Duration,
}

impl ServiceClient {
    /// A client for `service` with no instance yet (every request is
    /// `Unavailable` until [`Self::set_instances`] or [`Self::follow`]).
    pub fn new(service: &str, settings: &ClientSettings) -> Self {
        Self {
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .expect("a client without TLS options always builds"),
            balancer: Balancer::new(
                service,
                settings.strategy,
                settings.breaker,
                &settings.retry,
            ),
            max_attempts: settings.retry.max_attempts.max(1),
            try_timeout: Duration::from_millis(settings.try_timeout_ms.max(1)),
            timeout: Duration::from_millis(settings.timeout_ms.max(1)),
        }
    }

    /// A client over a fixed list of base URLs (`http://host:port`).
    pub fn with_instances(
        service: &str,
        urls: &[String],
        settings: &ClientSettings,
    ) -> Result<Self, InvalidEndpoint> {
        let client = Self::new(service, settings);
        client.set_instances(urls)?;
        Ok(client)
    }

    pub fn service(&self) -> &str {
        self.balancer.service()
    }

    /// The balancer, for its breaker states and in-flight counts.
    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// Replace the instances; the ones that stay keep their breaker state.
    /// Nothing changes if any URL is invalid.
    pub fn set_instances(&self, urls: &[String]) -> Result<(), InvalidEndpoint> {
        self.balancer.set_endpoints(urls)
    }

    /// Keep the instances in step with a discovery watch until `shutdown`
    /// or until the source goes away.
    pub fn follow(
        &self,
        instances: watch::Receiver<Instances>,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        let client = self.clone();
        follow_instances(instances, shutdown, move |urls| {
            if let Err(error) = client.set_instances(urls) {
                tracing::warn!(service = client.service(), %error, "ignoring discovered instances");
            }
        })
    }

    /// Start a request to `path` (with its query, if any) on some instance.
    pub fn request(&self, method: Method, path: &str) -> ServiceRequest<'_> {
        ServiceRequest {
            client: self,
            method,
            path: path.to_owned(),
            headers: HeaderMap::new(),
            body: None,
            retryable: false,
            invalid: None,
        }
    }

    pub fn get(&self, path: &str) -> ServiceRequest<'_> {
        self.request(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> ServiceRequest<'_> {
        self.request(Method::POST, path)
    }

    /// Another try goes to another instance: with one there is none.
    fn attempts(&self) -> u32 {
        if self.balancer.len() > 1 {
            self.max_attempts
        } else {
            1
        }
    }

    fn unavailable(&self, reason: &'static str) -> ClientError {
        ClientError::Unavailable {
            service: self.service().to_owned(),
            reason,
            retry_after: self.balancer.retry_after(),
        }
    }
}

/// Split `http://host:port/some/path` into the instance's base URL and the
/// path a [`ServiceClient`] sends to (`/` when there is none).
pub fn split_url(url: &str) -> Result<(String, String), InvalidEndpoint> {
    let invalid = |reason| InvalidEndpoint {
        url: url.to_owned(),
        reason,
    };
    let uri: http::Uri = url.parse().map_err(|_| invalid("is not a URL"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
        return Err(invalid("is not an absolute URL"));
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Ok((format!("{scheme}://{authority}"), path.to_owned()))
}

/// Call `apply` with the URLs of the instances now and after every change,
/// until `shutdown` or until the source goes away. Shared by every holder of
/// a balancer (the gateway's routes, [`ServiceClient::follow`]).
pub fn follow_instances(
    mut instances: watch::Receiver<Instances>,
    shutdown: CancellationToken,
    mut apply: impl FnMut(&[String]) + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let urls: Vec<String> = instances
                .borrow_and_update()
                .iter()
                .map(|instance| instance.url.clone())
                .collect();
            apply(&urls);
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = instances.changed() => if changed.is_err() { return },
            }
        }
    })
}

/// A request being built; [`Self::send`] runs it.
#[must_use = "a request does nothing until sent"]
pub struct ServiceRequest<'a> {
    client: &'a ServiceClient,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Option<Bytes>,
    retryable: bool,
    /// The first building error, reported by `send`.
    invalid: Option<String>,
}

/// How one try ended, when it did not end with a usable answer.
enum Failure {
    /// The instance was never reached: safe to send elsewhere whatever the
    /// method.
    Connect(reqwest::Error),
    Transport(reqwest::Error),
    Timeout,
    Status(StatusCode),
}

impl ServiceRequest<'_> {
    pub fn header(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        let name = name.as_ref();
        match (
            HeaderName::try_from(name),
            HeaderValue::try_from(value.as_ref()),
        ) {
            (Ok(name), Ok(value)) => {
                self.headers.insert(name, value);
            }
            _ => self.fail(format!("header `{name}` is not valid")),
        }
        self
    }

    pub fn bearer_auth(self, token: impl std::fmt::Display) -> Self {
        self.header(AUTHORIZATION, format!("Bearer {token}"))
    }

    /// Make the request safe to repeat: the callee answers a repeated key
    /// with the first outcome, so it may be retried on another instance.
    pub fn idempotency_key(self, key: impl AsRef<str>) -> Self {
        self.header(IDEMPOTENCY_KEY, key)
    }

    /// The caller vouches that sending this request twice is harmless (a
    /// token request, say), so it may be retried like an idempotent one.
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    pub fn json(mut self, body: &impl Serialize) -> Self {
        match serde_json::to_vec(body) {
            Ok(bytes) => {
                self.body = Some(bytes.into());
                self.headers
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            Err(error) => self.fail(format!("the body does not serialize: {error}")),
        }
        self
    }

    pub fn form(mut self, body: &impl Serialize) -> Self {
        match serde_urlencoded::to_string(body) {
            Ok(encoded) => {
                self.body = Some(encoded.into());
                self.headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                );
            }
            Err(error) => self.fail(format!("the form does not serialize: {error}")),
        }
        self
    }

    fn fail(&mut self, reason: String) {
        self.invalid.get_or_insert(reason);
    }

    /// Whether a try that reached an instance may be repeated elsewhere.
    fn may_repeat(&self) -> bool {
        self.retryable
            || self.headers.contains_key(IDEMPOTENCY_KEY)
            || matches!(
                self.method,
                Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
            )
    }

    /// Send, trying other instances as the module docs describe. Any answer
    /// other than 502/503/504 is `Ok`, 4xx and 500 included: what they mean
    /// is the caller's business.
    pub async fn send(mut self) -> Result<reqwest::Response, ClientError> {
        let client = self.client;
        let service = client.service().to_owned();
        if let Some(reason) = self.invalid.clone() {
            return Err(ClientError::InvalidRequest { service, reason });
        }
        // Every try carries the caller's trace, so the callee's spans join it.
        zocalo_telemetry::trace::inject_current(&mut self.headers);
        let balancer = &client.balancer;
        balancer.budget().deposit();
        let deadline = Instant::now() + client.timeout;
        let max_attempts = client.attempts();
        let mut pick = balancer.pick(&[]).ok_or_else(|| {
            client.unavailable(if balancer.is_empty() {
                "no instance is known"
            } else {
                "every instance is ejected"
            })
        })?;
        let mut tried: Vec<EndpointId> = Vec::new();
        let mut attempt = 1;
        loop {
            let failure = match self.try_once(&mut pick, deadline).await {
                Ok(response) => return Ok(response),
                Err(failure) => failure,
            };
            let repeatable = matches!(failure, Failure::Connect(_)) || self.may_repeat();
            let next = if repeatable && attempt < max_attempts && Instant::now() < deadline {
                tried.push(pick.id());
                next_try(balancer, &tried)
            } else {
                None
            };
            match next {
                Some(next) => {
                    tracing::debug!(
                        %service,
                        from = pick.endpoint().url(),
                        to = next.endpoint().url(),
                        "retrying on another instance"
                    );
                    pick = next;
                    attempt += 1;
                }
                None => return Err(give_up(service, failure)),
            }
        }
    }

    /// One try on `pick`'s instance, its outcome reported to the breaker.
    async fn try_once(
        &self,
        pick: &mut Pick,
        deadline: Instant,
    ) -> Result<reqwest::Response, Failure> {
        let client = self.client;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut request = client
            .http
            .request(
                self.method.clone(),
                format!("{}{}", pick.endpoint().url(), self.path),
            )
            .headers(self.headers.clone())
            .timeout(client.try_timeout.min(remaining));
        if let Some(body) = &self.body {
            request = request.body(body.clone());
        }
        let outcome = match request.send().await {
            Ok(response) if !worth_another_instance(response.status()) => {
                report_answer(pick, response.status());
                return Ok(response);
            }
            Ok(response) => Failure::Status(response.status()),
            Err(error) if error.is_timeout() => Failure::Timeout,
            Err(error) if error.is_connect() => Failure::Connect(error),
            Err(error) => Failure::Transport(error),
        };
        pick.failure();
        Err(outcome)
    }
}

/// Another instance than those tried, if there is one and the retry budget
/// allows.
fn next_try(balancer: &Balancer, tried: &[EndpointId]) -> Option<Pick> {
    let next = balancer.pick(tried)?;
    if tried.contains(&next.id()) {
        // Only tried instances are left: the same one again would most
        // likely fail the same way, and only add load.
        return None;
    }
    balancer.budget().try_withdraw().then_some(next)
}

fn give_up(service: String, failure: Failure) -> ClientError {
    let (reason, status) = match failure {
        Failure::Connect(error) => (format!("cannot connect: {error}"), None),
        Failure::Transport(error) => (format!("request failed: {error}"), None),
        Failure::Timeout => ("no answer in time".to_owned(), None),
        Failure::Status(status) => (format!("answered {status}"), Some(status)),
    };
    ClientError::Upstream {
        service,
        reason,
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn a_url_splits_into_instance_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/auth/token").unwrap(),
            ("http://127.0.0.1:8080".to_owned(), "/auth/token".to_owned())
        );
        assert_eq!(
            split_url("http://auth:80").unwrap(),
            ("http://auth:80".to_owned(), "/".to_owned())
        );
        assert!(split_url("/auth/token").is_err());
        assert!(split_url("not a url").is_err());
    }
}
