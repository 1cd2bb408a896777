//! Outbound webhooks: signing, one delivery, and the job handler that
//! retries deliveries through `zocalo-bus`.
//!
//! **Signature.** Each request carries
//! `Zocalo-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`.
//! A receiver recomputes the HMAC over the timestamp and the raw body with
//! the secret it was shown once, compares in constant time, and refuses
//! timestamps older than a few minutes, so a captured request cannot be
//! replayed later ([`verify`] does all of it). The timestamp is that of the
//! attempt, not of the event: a retry an hour later still verifies.
//!
//! **Body.** `{"id", "type", "created_at", "data"}` ([`Envelope`]); `id` is
//! the event's id and stays the same on every retry, so receivers drop
//! duplicates by it. Headers also name the event (`Zocalo-Event-Id`,
//! `Zocalo-Event-Type`) and the attempt (`Zocalo-Delivery-Attempt`).
//!
//! **Delivery.** A 2xx answer within the timeout is success; anything else
//! (another status, a timeout, a refused connection, a redirect, which is
//! not followed) is a failure that [`job_handler`] retries with the bus's
//! exponential backoff ([`WebhookSettings::worker_options`]) until the job's
//! last attempt, after which the bus dead-letters it. Every attempt is
//! recorded through [`WebhookRegistry::record`], which is where a service
//! keeps its delivery log.
//!
//! **Targets.** Only public addresses receive webhooks unless
//! [`WebhookSettings::allow_private_targets`] says otherwise (see
//! [`crate::egress`]): a URL naming a private address is refused when it is
//! registered, and a name that resolves only to private addresses fails
//! each delivery.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;
use zocalo_bus::{Backoff, Job, JobError, JobHandler, JobOptions, WorkerOptions};

use crate::egress;

pub const SIGNATURE_HEADER: &str = "Zocalo-Signature";
pub const EVENT_ID_HEADER: &str = "Zocalo-Event-Id";
pub const EVENT_TYPE_HEADER: &str = "Zocalo-Event-Type";
pub const ATTEMPT_HEADER: &str = "Zocalo-Delivery-Attempt";
const USER_AGENT: &str = "Zocalo-Webhooks/1";

/// What a webhook receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The event's id: the same on every retry.
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub created_at: DateTime<Utc>,
    pub data: serde_json::Value,
}

/// The payload of a webhook job: which subscription gets which event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookJob {
    pub webhook_id: Uuid,
    pub event: Envelope,
}

/// Where a subscription delivers, as the registry knows it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub secret: String,
}

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Delivered,
    /// Failed; another attempt follows.
    Retrying,
    /// Failed on the last attempt; the job goes to the dead letters.
    GaveUp,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retrying => "retrying",
            Outcome::GaveUp => "gave_up",
        }
    }
}

/// One attempt, as recorded in a delivery log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub webhook_id: Uuid,
    pub event_id: Uuid,
    pub event_kind: String,
    /// 1 for the first delivery.
    pub attempt: u32,
    pub max_attempts: u32,
    /// The receiver's status, when it answered.
    pub status: Option<u16>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    pub duration_ms: u64,
    pub outcome: Outcome,
    pub at: DateTime<Utc>,
}

pub type RegistryError = Box<dyn std::error::Error + Send + Sync>;

/// The service's side of deliveries: where a subscription points now, and
/// the log of attempts. Implemented on the service's own store.
#[async_trait]
pub trait WebhookRegistry: Send + Sync + 'static {
    /// `None` when the subscription was deleted: pending deliveries stop.
    async fn target(&self, webhook_id: Uuid) -> Result<Option<Target>, RegistryError>;

    async fn record(&self, attempt: &Attempt) -> Result<(), RegistryError>;
}

/// Delivery settings; by default ten attempts 5 s doubling apart, whose
/// waits add up to 21–43 minutes (equal jitter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Limit for one request, connection included.
    pub timeout_ms: u64,
    /// Attempts before a delivery is dead-lettered.
    pub max_attempts: u32,
    /// Delay after the first failure; doubles with every further one.
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    /// Deliveries in flight at once per worker process.
    pub concurrency: usize,
    /// Let webhooks reach loopback, private and link-local addresses. Off
    /// by default: a subscriber's URL must not make the platform call its
    /// own internal network. For receivers on the same machine or network
    /// (development, tests, an internal integration).
    pub allow_private_targets: bool,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            timeout_ms: 10_000,
            max_attempts: 10,
            backoff_base_ms: 5_000,
            backoff_cap_ms: 3_600_000,
            concurrency: 8,
            allow_private_targets: false,
        }
    }
}

impl WebhookSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }

    /// Options for the job of one delivery.
    pub fn job_options(&self) -> JobOptions {
        JobOptions {
            max_attempts: self.max_attempts.max(1),
            ..JobOptions::default()
        }
    }

    /// Options for `run_worker` on the webhook queue: a job stays invisible
    /// long enough for the slowest request.
    pub fn worker_options(&self) -> WorkerOptions {
        WorkerOptions {
            concurrency: self.concurrency.max(1),
            visibility: self.timeout() * 3 + Duration::from_secs(5),
            backoff: Backoff {
                base: Duration::from_millis(self.backoff_base_ms.max(1)),
                cap: Duration::from_millis(self.backoff_cap_ms.max(self.backoff_base_ms).max(1)),
            },
            ..WorkerOptions::default()
        }
    }
}

/// A fresh signing secret, shown to the subscriber once: `whsec_` and 32
/// random bytes in base64url.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `Zocalo-Signature` value for `body` sent at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex(&digest))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("malformed signature header")]
    Malformed,
    #[error("signature timestamp outside the tolerance")]
    Stale,
    #[error("signature does not match")]
    Mismatch,
}

/// What a receiver does with a request: `Ok` when `header` signs `body`
/// with `secret` and its timestamp is within `tolerance` of `now`. Any of
/// several `v1` values may match (a sender rotating secrets sends one per
/// secret).
pub fn verify(
    secret: &str,
    header: &str,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signatures.push(unhex(value).ok_or(SignatureError::Malformed)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let age = now.timestamp().abs_diff(timestamp);
    if age > tolerance.as_secs() {
        return Err(SignatureError::Stale);
    }
    let matches = signatures
        .iter()
        .any(|candidate| mac(secret, timestamp, body).verify_slice(candidate).is_ok());
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Why a URL cannot be a webhook target; private addresses written in it
/// are refused unless `allow_private`.
pub fn check_url(url: &str, allow_private: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("only http and https URLs can receive webhooks".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the URL needs a host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("put no credentials in the URL; verify the signature instead".into());
    }
    if url.len() > 2048 {
        return Err("the URL is longer than 2048 characters".into());
    }
    if !allow_private && egress::refused_literal(&parsed) {
        return Err(egress::PRIVATE_TARGET.into());
    }
    Ok(())
}

/// The result of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration: Duration,
}

impl Response {
    pub fn delivered(&self) -> bool {
        self.error.is_none()
    }
}

/// Sends signed requests; cheap to clone (one connection pool).
#[derive(Clone)]
pub struct WebhookSender {
    http: reqwest::Client,
    allow_private: bool,
}

impl WebhookSender {
    /// A sender with the settings' timeout and target policy.
    pub fn new(settings: &WebhookSettings) -> Result<Self, reqwest::Error> {
        let timeout = settings.timeout();
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT);
        if !settings.allow_private_targets {
            builder = builder.dns_resolver(Arc::new(egress::PublicOnly));
        }
        Ok(Self {
            http: builder.build()?,
            allow_private: settings.allow_private_targets,
        })
    }

    /// POST `event` to `target`, signed now.
    pub async fn deliver(&self, target: &Target, event: &Envelope, attempt: u32) -> Response {
        let started = Instant::now();
        // Registered before the policy changed, or stored by other means.
        let literal_refused = reqwest::Url::parse(&target.url)
            .is_ok_and(|url| !self.allow_private && egress::refused_literal(&url));
        if literal_refused {
            return Response {
                status: None,
                error: Some(egress::PRIVATE_TARGET.to_owned()),
                duration: started.elapsed(),
            };
        }
        let body = serde_json::to_vec(event).unwrap_or_default();
        let signature = sign(&target.secret, Utc::now().timestamp(), &body);
        let sent = self
            .http
            .post(&target.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(EVENT_ID_HEADER, event.id.to_string())
            .header(EVENT_TYPE_HEADER, &event.kind)
            .header(ATTEMPT_HEADER, attempt.to_string())
            .body(body)
            .send()
            .await;
        let (status, error) = match sent {
            Ok(response) if response.status().is_success() => (Some(response.status()), None),
            Ok(response) => (
                Some(response.status()),
                Some(format!("the receiver answered {}", response.status())),
            ),
            Err(error) if error.is_timeout() => (None, Some("timed out".to_owned())),
            Err(error) if error.is_connect() => (
                None,
                Some(format!("cannot connect: {}", with_causes(&error))),
            ),
            Err(error) => (None, Some(with_causes(&error))),
        };
        Response {
            status: status.map(|s| s.as_u16()),
            error,
            duration: started.elapsed(),
        }
    }
}

/// An error and what caused it (reqwest's own text names only the URL; the
/// reason — refused, reset, a private address — is in its sources).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// The job for delivering `event` to subscription `webhook_id`.
pub fn job_payload(webhook_id: Uuid, event: Envelope) -> serde_json::Value {
    serde_json::to_value(WebhookJob { webhook_id, event }).unwrap_or_default()
}

/// The handler for the webhook queue: look the subscription up, deliver,
/// record the attempt, and leave retries and dead letters to the bus.
pub fn job_handler(sender: WebhookSender, registry: Arc<dyn WebhookRegistry>) -> JobHandler {
    Arc::new(move |job| {
        let (sender, registry) = (sender.clone(), registry.clone());
        async move { handle(&sender, registry.as_ref(), job).await }.boxed()
    })
}

async fn handle(
    sender: &WebhookSender,
    registry: &dyn WebhookRegistry,
    job: Job,
) -> Result<(), JobError> {
    let payload: WebhookJob = serde_json::from_value(job.payload.clone())
        .map_err(|e| JobError::fatal(format!("unreadable webhook job: {e}")))?;
    let Some(target) = registry
        .target(payload.webhook_id)
        .await
        .map_err(JobError::retry)?
    else {
        tracing::info!(webhook = %payload.webhook_id, event = %payload.event.id,
            "webhook deleted, delivery dropped");
        return Ok(());
    };
    let response = sender.deliver(&target, &payload.event, job.attempt).await;
    let outcome = if response.delivered() {
        Outcome::Delivered
    } else if job.attempt >= job.max_attempts {
        Outcome::GaveUp
    } else {
        Outcome::Retrying
    };
    metrics::counter!("webhook_attempts_total", "outcome" => outcome.as_str()).increment(1);
    let attempt = Attempt {
        webhook_id: payload.webhook_id,
        event_id: payload.event.id,
        event_kind: payload.event.kind.clone(),
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        status: response.status,
        error: response.error.clone(),
        duration_ms: u64::try_from(response.duration.as_millis()).unwrap_or(u64::MAX),
        outcome,
        at: Utc::now(),
    };
    // A delivery that happened but could not be logged is still a delivery:
    // retrying it would send it twice, so a logging failure only warns.
    if let Err(error) = registry.record(&attempt).await {
        tracing::warn!(webhook = %payload.webhook_id, %error, "cannot record a webhook attempt");
    }
    match response.error {
        None => Ok(()),
        Some(error) => Err(JobError::Retry(format!(
            "webhook {} to {}: {error}",
            payload.webhook_id, target.url
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test";

    #[test]
    fn a_signature_verifies_and_anything_changed_does_not() {
        let now = Utc::now();
        let header = sign(SECRET, now.timestamp(), b"{\"a\":1}");
        let minute = Duration::from_secs(60);
        assert_eq!(verify(SECRET, &header, b"{\"a\":1}", now, minute), Ok(()));
        assert_eq!(
            verify(SECRET, &header, b"{\"a\":2}", now, minute),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("whsec_other", &header, b"{\"a\":1}", now, minute),
            Err(SignatureError::Mismatch)
        );
        let later = now + chrono::Duration::minutes(10);
        assert_eq!(
            verify(SECRET, &header, b"{\"a\":1}", later, minute),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(SECRET, "v1=zz", b"", now, minute),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(SECRET, "t=1", b"", now, minute),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn the_timestamp_is_part_of_what_is_signed() {
        let header = sign(SECRET, 1_700_000_000, b"body");
        let v1 = header.split_once(",v1=").unwrap().1;
        let moved = format!("t=1700000100,v1={v1}");
        let at = DateTime::from_timestamp(1_700_000_100, 0).unwrap();
        assert_eq!(
            verify(SECRET, &moved, b"body", at, Duration::from_secs(300)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_known_vector() {
        // HMAC-SHA256(key = "whsec_test", "1700000000.body"), computed with
        // Python's hmac module.
        assert_eq!(
            sign(SECRET, 1_700_000_000, b"body"),
            "t=1700000000,v1=8beb633e6b331942f859b4ae89697edc9cd0d0a2f665d890b362aac2fd0c1c84"
        );
    }

    #[test]
    fn secrets_are_long_and_distinct() {
        let (a, b) = (generate_secret(), generate_secret());
        assert!(a.starts_with("whsec_") && a.len() == 6 + 43);
        assert_ne!(a, b);
    }

    #[test]
    fn only_plain_http_urls_are_targets() {
        for allow_private in [false, true] {
            let check = |url: &str| check_url(url, allow_private);
            assert!(check("https://hooks.example.com/zocalo").is_ok());
            assert!(check("ftp://example.com/").is_err());
            assert!(check("https://user:pw@example.com/").is_err());
            assert!(check("not a url").is_err());
            assert!(check(&format!("https://example.com/{}", "a".repeat(3000))).is_err());
        }
    }

    #[test]
    fn private_addresses_are_targets_only_when_allowed() {
        let error = check_url("http://127.0.0.1:9000/in", false).unwrap_err();
        assert!(error.contains("private"), "{error}");
        assert!(check_url("http://127.0.0.1:9000/in", true).is_ok());
        // Names are checked when they are resolved, at each delivery.
        assert!(check_url("http://localhost:9000/in", false).is_ok());
    }

    #[test]
    fn settings_become_worker_and_job_options() {
        let settings = WebhookSettings {
            max_attempts: 3,
            backoff_base_ms: 50,
            backoff_cap_ms: 400,
            ..WebhookSettings::default()
        };
        assert_eq!(settings.job_options().max_attempts, 3);
        let options = settings.worker_options();
        assert_eq!(options.backoff.base, Duration::from_millis(50));
        assert_eq!(options.backoff.cap, Duration::from_millis(400));
        assert!(options.visibility > settings.timeout());
    }
}
