//! The gateway's settings: where it listens, which path prefix goes to which
//! service, and the limits it enforces at the edge.
//!
//! Every field has a default so that `zocalo up` only has to fill in the
//! upstream addresses of the services it started, and a distributed
//! deployment only has to name the service URLs.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use zocalo_config::live::{NatsKvSource, Validate};
use zocalo_http::ratelimit::RateLimit;

/// One routing rule: requests whose path starts with `prefix` (on a segment
/// boundary) go to one of `upstreams`, round robin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSettings {
    /// A path prefix such as `/api/reviews`; the longest matching one wins.
    pub prefix: String,
    /// The service behind the prefix, used to fill `upstreams` by name.
    pub service: String,
    /// Base URLs such as `http://127.0.0.1:41234` or `http://auth:8080`.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// How long to wait for the upstream's response headers; the gateway's
    /// `default_timeout_ms` when absent.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl RouteSettings {
    pub fn new(prefix: &str, service: &str) -> Self {
        Self {
            prefix: prefix.into(),
            service: service.into(),
            upstreams: Vec::new(),
            timeout_ms: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub listen: SocketAddr,
    pub routes: Vec<RouteSettings>,
    /// Where the auth service publishes its keys; derived from the first
    /// `auth` upstream when absent.
    pub jwks_url: Option<String>,
    pub issuer: String,
    pub audience: String,
    pub max_body_bytes: usize,
    /// Budget for the request line and all headers (names plus values).
    pub max_header_bytes: usize,
    /// Per client IP. `None`, or `per_second = 0` (which a TOML file or an
    /// environment variable can say), disables rate limiting (benchmarks).
    /// `live.rate_limit`, when set, takes precedence.
    pub rate_limit: Option<RateLimit>,
    /// Count rate limits in this Redis (`redis://host:6379`) so that all
    /// gateway instances share one budget per client; without it each
    /// instance counts on its own. While Redis is down, each instance falls
    /// back to counting on its own.
    pub redis_url: Option<String>,
    /// Namespace of the gateway's Redis keys, for several deployments
    /// sharing one Redis.
    pub redis_key_prefix: String,
    /// What may change without a restart; replaced as a whole by the
    /// content of `live_config_file` or `live_config_nats` when set.
    pub live: LiveSettings,
    /// A TOML file holding [`LiveSettings`], re-read every second.
    pub live_config_file: Option<PathBuf>,
    /// A NATS KV key holding [`LiveSettings`] as TOML, followed.
    pub live_config_nats: Option<NatsKvSource>,
    /// Peers whose `X-Forwarded-*` headers are believed. Empty by default:
    /// the gateway is the edge and the TCP peer is the client.
    pub trusted_proxies: Vec<IpAddr>,
    /// Browser origins allowed to call the API; empty sends no CORS headers,
    /// `"*"` allows any origin.
    pub cors_allowed_origins: Vec<String>,
    pub connect_timeout_ms: u64,
    pub default_timeout_ms: u64,
    /// Send `Strict-Transport-Security`; only meaningful behind TLS.
    pub hsts: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            routes: default_routes(),
            jwks_url: None,
            issuer: "zocalo".into(),
            audience: "zocalo-api".into(),
            max_body_bytes: 10 * 1024 * 1024,
            max_header_bytes: 16 * 1024,
            rate_limit: Some(RateLimit {
                per_second: 500.0,
                burst: 1000,
            }),
            redis_url: None,
            redis_key_prefix: "zocalo:gateway:".into(),
            live: LiveSettings::default(),
            live_config_file: None,
            live_config_nats: None,
            trusted_proxies: Vec::new(),
            cors_allowed_origins: Vec::new(),
            connect_timeout_ms: 1000,
            default_timeout_ms: 30_000,
            hsts: false,
        }
    }
}

/// The public paths of DESIGN.md that have a service today.
fn default_routes() -> Vec<RouteSettings> {
    [
        ("/auth", "auth"),
        ("/.well-known", "auth"),
        ("/api/reviews", "reviews"),
        ("/api/content", "reviews"),
        ("/api/cameras", "reviews"),
        ("/api/lenses", "reviews"),
        ("/api/compare", "reviews"),
        ("/api/books", "catalog"),
        ("/api/orders", "orders"),
        ("/api/sales", "orders"),
    ]
    .into_iter()
    .map(|(prefix, service)| RouteSettings::new(prefix, service))
    .collect()
}

impl Settings {
    /// Point every route of `service` at `upstreams` (what `zocalo up` does
    /// once it knows the ports of the services it started).
    pub fn set_upstreams(&mut self, service: &str, upstreams: &[String]) {
        for route in self.routes.iter_mut().filter(|r| r.service == service) {
            route.upstreams = upstreams.to_vec();
        }
    }

    /// The rate limit in force, if any, with `live` as it is now.
    pub fn effective_rate_limit(&self, live: &LiveSettings) -> Option<RateLimit> {
        live.rate_limit
            .or(self.rate_limit)
            .filter(RateLimit::is_enabled)
    }

    /// The JWKS location: the configured one, else the first `auth` upstream's
    /// well-known path, else none (bearer tokens then cannot be verified).
    pub fn effective_jwks_url(&self) -> Option<String> {
        if let Some(url) = &self.jwks_url {
            return Some(url.clone());
        }
        let auth = self
            .routes
            .iter()
            .filter(|r| r.service == "auth")
            .find_map(|r| r.upstreams.first())?;
        Some(format!(
            "{}/.well-known/jwks.json",
            auth.trim_end_matches('/')
        ))
    }
}

/// The gateway settings that reload without a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveSettings {
    /// Overrides the static `rate_limit` while set.
    pub rate_limit: Option<RateLimit>,
    /// Named switches that code reads with [`LiveSettings::flag`].
    pub feature_flags: BTreeMap<String, bool>,
    /// An `EnvFilter` directive (`info`, `warn,zocalo_gateway=debug`); when
    /// absent the filter the process started with applies.
    pub log_level: Option<String>,
}

impl LiveSettings {
    /// Whether feature `name` is on; unknown flags are off.
    pub fn flag(&self, name: &str) -> bool {
        self.feature_flags.get(name).copied().unwrap_or(false)
    }
}

impl Validate for LiveSettings {
    fn validate(&self) -> Result<(), String> {
        if let Some(limit) = &self.rate_limit {
            limit.validate()?;
        }
        if let Some(level) = &self.log_level {
            zocalo_telemetry::validate_log_filter(level)?;
        }
        if self.feature_flags.keys().any(|name| name.trim().is_empty()) {
            return Err("feature flag names must not be empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_url_is_derived_from_the_auth_upstream() {
        let mut settings = Settings::default();
        assert_eq!(settings.effective_jwks_url(), None);
        settings.set_upstreams("auth", &["http://auth:8080/".into()]);
        assert_eq!(
            settings.effective_jwks_url().as_deref(),
            Some("http://auth:8080/.well-known/jwks.json")
        );
        settings.jwks_url = Some("http://keys/jwks".into());
        assert_eq!(
            settings.effective_jwks_url().as_deref(),
            Some("http://keys/jwks")
        );
    }

    #[test]
    fn defaults_route_every_reviews_prefix() {
        let mut settings = Settings::default();
        settings.set_upstreams("reviews", &["http://r:1".into()]);
        let reviews: Vec<_> = settings
            .routes
            .iter()
            .filter(|r| r.upstreams == ["http://r:1"])
            .map(|r| r.prefix.as_str())
            .collect();
        assert_eq!(
            reviews,
            [
                "/api/reviews",
                "/api/content",
                "/api/cameras",
                "/api/lenses",
                "/api/compare"
            ]
        );
    }

    #[test]
    fn a_config_file_sets_routes_and_can_turn_rate_limiting_off() {
        let path = std::env::temp_dir().join(format!("gateway-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(
            &path,
            r#"
listen = "0.0.0.0:9000"
trusted_proxies = ["10.0.0.1"]
rate_limit = { per_second = 0, burst = 1 }

[[routes]]
prefix = "/api/books"
service = "catalog"
upstreams = ["http://catalog:8080"]
timeout_ms = 5000
"#,
        )
        .unwrap();
        let loaded = zocalo_config::load::<Settings>(Some(&path));
        std::fs::remove_file(&path).unwrap();
        let settings = loaded.unwrap();
        assert_eq!(settings.listen.port(), 9000);
        assert_eq!(
            settings.routes.len(),
            1,
            "a configured table replaces the default"
        );
        assert_eq!(settings.routes[0].upstreams, ["http://catalog:8080"]);
        assert_eq!(settings.routes[0].timeout_ms, Some(5000));
        assert_eq!(
            settings.trusted_proxies,
            ["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        let live = LiveSettings::default();
        assert_eq!(settings.effective_rate_limit(&live), None);
        assert!(Settings::default().effective_rate_limit(&live).is_some());
    }

    #[test]
    fn partial_config_keeps_defaults() {
        let settings: Settings = serde_json::from_str(r#"{"hsts": true}"#).unwrap();
        assert!(settings.hsts);
        assert_eq!(settings.routes.len(), 10);
        assert_eq!(settings.max_header_bytes, 16 * 1024);
    }

    #[test]
    fn live_settings_override_the_static_limit_and_are_validated() {
        let settings = Settings::default();
        let tight = RateLimit {
            per_second: 1.0,
            burst: 2,
        };
        let live = LiveSettings {
            rate_limit: Some(tight),
            ..LiveSettings::default()
        };
        assert_eq!(settings.effective_rate_limit(&live), Some(tight));
        let off = LiveSettings {
            rate_limit: Some(RateLimit {
                per_second: 0.0,
                burst: 1,
            }),
            ..LiveSettings::default()
        };
        assert_eq!(settings.effective_rate_limit(&off), None);

        assert!(live.validate().is_ok());
        let bad_level = LiveSettings {
            log_level: Some("info,[[".into()),
            ..LiveSettings::default()
        };
        assert!(bad_level.validate().is_err());
        let bad_limit = LiveSettings {
            rate_limit: Some(RateLimit {
                per_second: -3.0,
                burst: 1,
            }),
            ..LiveSettings::default()
        };
        assert!(bad_limit.validate().is_err());
        let mut flags = LiveSettings::default();
        flags.feature_flags.insert("beta".into(), true);
        assert!(flags.flag("beta") && !flags.flag("other"));
    }
}
