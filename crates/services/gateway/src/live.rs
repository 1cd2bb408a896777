//! The gateway's live configuration: which rate limit is in force, the log
//! level and feature flags, changed without a restart from a watched file
//! or a NATS KV key (see `zocalo_config::live`), and the rate limiter that
//! enforces the limit, shared through Redis when one is configured.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use zocalo_cache::{Redis, SharedLimiter};
use zocalo_config::live::{DEFAULT_POLL_INTERVAL, Live};
use zocalo_http::ratelimit::RateLimiter;
use zocalo_telemetry::LogLevelFollower;

use crate::proxy::Gateway;
use crate::settings::{LiveSettings, Settings};

/// The limiter for `settings`: counting in `redis` when one is configured
/// (falling back to this process while Redis fails), else in this process.
pub(crate) fn rate_limiter(settings: &Settings, redis: Option<Redis>) -> RateLimiter<IpAddr> {
    let shared = redis.map(|redis| {
        let prefix = format!("{}ratelimit:", settings.redis_key_prefix);
        SharedLimiter::new(redis, prefix)
    });
    RateLimiter::new(settings.effective_rate_limit(&settings.live), shared)
}

/// Read the live sources (a bad live file at startup is an error), put
/// their value in force, and keep applying new values until `stop`.
pub(crate) fn start(
    gateway: Arc<Gateway>,
    settings: &Settings,
    stop: &CancellationToken,
) -> anyhow::Result<Arc<Live<LiveSettings>>> {
    let live = Live::new(settings.live.clone());
    if let Some(path) = &settings.live_config_file {
        live.watch_file(path.clone(), DEFAULT_POLL_INTERVAL, stop.clone())?;
    }
    if let Some(source) = &settings.live_config_nats {
        live.watch_nats(source.clone(), stop.clone());
    }
    let mut applier = Applier {
        gateway,
        settings: settings.clone(),
        log_level: LogLevelFollower::default(),
        route_weights: None,
    };
    live.follow(stop.clone(), move |current| applier.apply(current));
    Ok(live)
}

/// Puts accepted live settings in force.
struct Applier {
    gateway: Arc<Gateway>,
    /// The static settings, under the live ones.
    settings: Settings,
    /// In `zocalo up` all services share one process, hence one filter:
    /// the gateway's live level is the process's.
    log_level: LogLevelFollower,
    /// The weights last applied (`None` before the first application).
    route_weights: Option<RouteWeights>,
}

type RouteWeights = BTreeMap<String, BTreeMap<String, u32>>;

impl Applier {
    fn apply(&mut self, live: &LiveSettings) {
        let limit = self.settings.effective_rate_limit(live);
        if self.gateway.limiter.limit() != limit {
            tracing::info!(?limit, "rate limit changed");
            self.gateway.limiter.set_limit(limit);
        }
        self.log_level.apply(live.log_level.as_deref());
        if self.route_weights.as_ref() != Some(&live.route_weights) {
            self.apply_weights(&live.route_weights);
            self.route_weights = Some(live.route_weights.clone());
        }
    }

    /// Every routed service gets its weights, or none (all 1) when the new
    /// settings list none for it: removing a service's table undoes it.
    fn apply_weights(&self, weights: &RouteWeights) {
        let upstreams = self.gateway.routes.upstreams();
        for service in weights.keys() {
            if upstreams.get(service).is_none() {
                tracing::warn!(service, "route_weights names a service no route goes to");
            }
        }
        let none = BTreeMap::new();
        for service in upstreams.services() {
            let table = weights.get(service).unwrap_or(&none);
            if let Err(error) = upstreams.set_weights(service, table) {
                tracing::warn!(service, %error, "route weights not applied");
            }
        }
        if !weights.is_empty() {
            tracing::info!(?weights, "route weights applied");
        }
    }
}
