//! Service discovery: a live, sorted list of the instances of each service,
//! for the gateway and service-to-service clients to balance over.
//!
//! Three sources sit behind the one [`Discovery`] trait:
//! - [`StaticDiscovery`]: fixed URLs from configuration (embedded mode, tests);
//! - [`DnsDiscovery`]: a `host:port` re-resolved periodically, every address
//!   one instance (Kubernetes headless services);
//! - [`NatsDiscovery`]: instances register themselves in a NATS KV bucket and
//!   keep their entry alive with heartbeats ([`Registration`]); an instance
//!   that stops heartbeating disappears after the TTL.
//!
//! This is a platform crate: it depends only on external crates, never on a
//! service or another platform crate.

mod dns;
mod loops;
mod nats;
mod settings;
mod static_source;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use dns::DnsDiscovery;
pub use nats::{NatsDiscovery, Registration};
pub use settings::{DiscoveryKind, DiscoverySettings};
pub use static_source::StaticDiscovery;

/// One running instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Unique among the instances of the service.
    pub id: String,
    pub service: String,
    /// Base URL without a path, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    pub version: String,
    pub zone: Option<String>,
}

/// A snapshot of a service's instances, always sorted by id so that two
/// snapshots with the same members compare equal.
pub type Instances = Arc<[Instance]>;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The backing store (NATS) cannot be reached or refused the request.
    #[error("discovery backend unavailable: {0}")]
    Unavailable(String),
    /// The source knows nothing about this service (static and DNS sources
    /// only know the services they were configured with).
    #[error("no discovery configured for service `{0}`")]
    UnknownService(String),
    /// A service name, id or setting that cannot be used.
    #[error("invalid discovery input: {0}")]
    Invalid(String),
}

impl DiscoveryError {
    fn unavailable(error: impl std::fmt::Display) -> Self {
        Self::Unavailable(error.to_string())
    }
}

/// A source of instances.
#[async_trait::async_trait]
pub trait Discovery: Send + Sync + 'static {
    /// A live view of `service`'s instances; the receiver sees every change.
    async fn watch(&self, service: &str) -> Result<watch::Receiver<Instances>, DiscoveryError>;
}

/// Build the configured source; the static one serves `statics`
/// (service → base URLs).
pub async fn from_settings(
    settings: &DiscoverySettings,
    statics: BTreeMap<String, Vec<String>>,
) -> Result<Arc<dyn Discovery>, DiscoveryError> {
    Ok(match settings.kind {
        DiscoveryKind::Static => Arc::new(StaticDiscovery::new(statics)),
        DiscoveryKind::Dns => Arc::new(DnsDiscovery::new(
            settings.dns.clone(),
            Duration::from_millis(settings.dns_interval_ms.max(1)),
        )?),
        DiscoveryKind::Nats => Arc::new(
            NatsDiscovery::connect(
                &settings.nats_url,
                &settings.bucket,
                Duration::from_millis(settings.ttl_ms),
            )
            .await?,
        ),
    })
}

/// Sort, publish if different from what receivers already have, and keep
/// the `discovery_instances` gauge in step.
fn publish(sender: &watch::Sender<Instances>, service: &str, mut instances: Vec<Instance>) {
    instances.sort_by(|a, b| a.id.cmp(&b.id));
    instances.dedup_by(|a, b| a.id == b.id);
    let count = instances.len();
    sender.send_if_modified(|current| {
        if current[..] == instances[..] {
            return false;
        }
        *current = instances.into();
        true
    });
    metrics::gauge!("discovery_instances", "service" => service.to_owned()).set(count as f64);
}

/// Service names become NATS subject tokens and metric labels: keep them
/// to letters, digits, `-` and `_`.
fn check_name(kind: &str, name: &str) -> Result<(), DiscoveryError> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(DiscoveryError::Invalid(format!(
            "{kind} `{name}`: use letters, digits, `-` and `_`"
        )))
    }
}
