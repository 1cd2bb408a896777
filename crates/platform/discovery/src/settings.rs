//! The `discovery` section of the configuration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryKind {
    /// Upstream URLs from configuration.
    #[default]
    Static,
    /// Instances register in a NATS KV bucket.
    Nats,
    /// `host:port` names resolved periodically.
    Dns,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DiscoverySettings {
    pub kind: DiscoveryKind,
    pub nats_url: String,
    /// The KV bucket holding one key `<service>.<id>` per instance.
    pub bucket: String,
    /// An instance whose last heartbeat is older than this is gone.
    pub ttl_ms: u64,
    /// How often a registered instance refreshes its key; below `ttl_ms`.
    pub heartbeat_ms: u64,
    /// service → `host:port`, for `kind = "dns"`.
    pub dns: BTreeMap<String, String>,
    pub dns_interval_ms: u64,
    /// The zone this process runs in, advertised with its registration.
    pub zone: Option<String>,
    /// The host others reach this process on; `127.0.0.1` when unset.
    pub advertise_host: Option<String>,
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        Self {
            kind: DiscoveryKind::Static,
            nats_url: "nats://127.0.0.1:4222".into(),
            bucket: "zocalo_instances".into(),
            ttl_ms: 5000,
            heartbeat_ms: 1000,
            dns: BTreeMap::new(),
            dns_interval_ms: 5000,
            zone: None,
            advertise_host: None,
        }
    }
}
