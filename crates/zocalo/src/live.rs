//! The process's own live configuration, for `zocalo serve <service>` (all
//! but the gateway) and `zocalo worker`: the log level and feature flags,
//! changed without a restart from a watched file or a NATS KV key (see
//! `zocalo_config::live`). The gateway has its own, richer section
//! (`gateway.live`), which also owns the log level of its process; one
//! process never runs both.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use zocalo_config::live::{DEFAULT_POLL_INTERVAL, Live, Validate};
use zocalo_telemetry::LogLevelFollower;

use crate::settings::Settings;

/// The settings of a service process that reload without a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessLive {
    /// An `EnvFilter` directive (`info`, `warn,zocalo_reviews=debug`); when
    /// absent the filter the process started with applies.
    pub log_level: Option<String>,
    /// Named switches read with [`ProcessLive::flag`].
    pub feature_flags: BTreeMap<String, bool>,
}

impl ProcessLive {
    /// Whether feature `name` is on; unknown flags are off.
    #[allow(
        dead_code,
        reason = "no service reads a flag yet; see docs/design-process-live.md"
    )]
    pub fn flag(&self, name: &str) -> bool {
        self.feature_flags.get(name).copied().unwrap_or(false)
    }
}

impl Validate for ProcessLive {
    fn validate(&self) -> Result<(), String> {
        if let Some(level) = &self.log_level {
            zocalo_telemetry::validate_log_filter(level)?;
        }
        if self.feature_flags.keys().any(|name| name.trim().is_empty()) {
            return Err("feature flag names must not be empty".into());
        }
        Ok(())
    }
}

/// Read the live sources (a bad live file at startup is an error), put the
/// log level in force, and keep following both until `stop`. The returned
/// handle is where the feature flags in force are read.
pub fn start(
    settings: &Settings,
    stop: &CancellationToken,
) -> anyhow::Result<Arc<Live<ProcessLive>>> {
    settings
        .live
        .validate()
        .map_err(|reason| anyhow::anyhow!("key `live`: {reason}"))?;
    let live = Live::new(settings.live.clone());
    if let Some(path) = &settings.live_config_file {
        live.watch_file(path.clone(), DEFAULT_POLL_INTERVAL, stop.clone())?;
    }
    if let Some(source) = &settings.live_config_nats {
        live.watch_nats(source.clone(), stop.clone());
    }
    let mut log_level = LogLevelFollower::default();
    live.follow(stop.clone(), move |current| {
        log_level.apply(current.log_level.as_deref());
    });
    Ok(live)
}
