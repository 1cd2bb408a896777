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
use zocalo_http::balance::{BreakerSettings, RetrySettings, Strategy};
use zocalo_http::ratelimit::RateLimit;
pub use zocalo_http::tls::TlsSettings;

/// One routing rule: requests whose path starts with `prefix` (on a segment
/// boundary) go to one of the instances of `service`. Routes of the same
/// service share its instances (the union of their `upstreams`) and their
/// state.
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
    /// How long one try may take before another instance is tried; the
    /// gateway's `try_timeout_ms` when absent, never more than the timeout.
    #[serde(default)]
    pub try_timeout_ms: Option<u64>,
    /// Whether the gateway's response cache may serve this route: `false`
    /// opts out; `true` (the default) caches only what the service marks
    /// shared-cacheable (see [`CacheSettings`]).
    #[serde(default = "enabled")]
    pub cache: bool,
    /// The HTTP methods this route takes (`["GET", "HEAD"]`); empty takes
    /// every method. Routes with the same prefix split it by method, e.g.
    /// reads to a query service and writes to a command service.
    #[serde(default)]
    pub methods: Vec<String>,
    /// The largest request body of this route (uploads); the gateway's
    /// `max_body_bytes` when absent.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
}

fn enabled() -> bool {
    true
}

/// The response cache shared by all gateway instances (in Redis when
/// `redis_url` is set, else in this process; in this process too while Redis
/// is down). It keeps 200 answers to anonymous GETs that the service marks
/// `public` with a `max-age` (or gives an `s-maxage`), for that long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheSettings {
    /// `false` turns the cache off for every route.
    pub enabled: bool,
    /// Responses with a larger (or no) `Content-Length` stream through
    /// uncached.
    pub max_body_bytes: usize,
    /// An upper bound on any entry's lifetime, whatever the service says.
    pub max_ttl_secs: u64,
    /// Bytes (keys and entries) the in-process cache holds at most (no
    /// Redis, or Redis down); the least used entries go first.
    pub memory_max_bytes: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_body_bytes: 256 * 1024,
            max_ttl_secs: 300,
            memory_max_bytes: 64 * 1024 * 1024,
        }
    }
}

impl RouteSettings {
    pub fn new(prefix: &str, service: &str) -> Self {
        Self {
            prefix: prefix.into(),
            service: service.into(),
            upstreams: Vec::new(),
            timeout_ms: None,
            try_timeout_ms: None,
            cache: true,
            methods: Vec::new(),
            max_body_bytes: None,
        }
    }

    /// The same route, for `methods` only.
    pub fn with_methods(mut self, methods: &[&str]) -> Self {
        self.methods = methods.iter().map(|m| (*m).to_owned()).collect();
        self
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
    /// The shared response cache.
    pub cache: CacheSettings,
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
    /// The whole budget of a proxied request, retries included, when its
    /// route sets no `timeout_ms`.
    pub default_timeout_ms: u64,
    /// The budget of one try when its route sets no `try_timeout_ms`: an
    /// instance that hangs longer counts as failed and the request moves on.
    pub try_timeout_ms: u64,
    /// How instances are chosen: `"p2c"` (power of two choices on requests
    /// in flight) or `"round_robin"`.
    pub balancing: Strategy,
    /// When an instance is ejected, and for how long.
    pub breaker: BreakerSettings,
    /// Retries of idempotent requests and their budget.
    pub retry: RetrySettings,
    /// Requests in flight per service; beyond it the gateway answers 503.
    pub max_concurrent: usize,
    /// Send `Strict-Transport-Security`; only meaningful behind TLS.
    pub hsts: bool,
    /// Terminate TLS on `listen` with this certificate (re-read when its
    /// files change), optionally redirecting plain HTTP from another port.
    pub tls: Option<TlsSettings>,
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
            cache: CacheSettings::default(),
            live: LiveSettings::default(),
            live_config_file: None,
            live_config_nats: None,
            trusted_proxies: Vec::new(),
            cors_allowed_origins: Vec::new(),
            connect_timeout_ms: 1000,
            default_timeout_ms: 30_000,
            try_timeout_ms: 10_000,
            balancing: Strategy::default(),
            breaker: BreakerSettings::default(),
            retry: RetrySettings::default(),
            max_concurrent: 1024,
            hsts: false,
            tls: None,
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
        // The web pages catch every path no API claims (longest prefix wins).
        ("/", "web"),
    ]
    .into_iter()
    .map(|(prefix, service)| RouteSettings::new(prefix, service))
    // The cinema is split by CQRS: reads from the query side, every other
    // method to the command side. Ticket PDFs and webhooks are the command
    // side's own reads (documents in its object storage, secrets and
    // delivery logs in its database), so their prefixes go there whatever
    // the method.
    .chain([
        RouteSettings::new("/api/cinema", "cinema-query").with_methods(&["GET", "HEAD"]),
        RouteSettings::new("/api/cinema", "cinema-command"),
        RouteSettings::new("/api/cinema/tickets", "cinema-command"),
        RouteSettings::new("/api/cinema/webhooks", "cinema-command"),
    ])
    .chain([
        upload_route("/api/tasks", "media"),
        upload_route("/videos", "web"),
    ])
    .collect()
}

/// Video uploads (to the API, and through the web's upload page): bodies up
/// to the media service's own default limit (512 MiB, which it enforces
/// exactly), and time to send them.
fn upload_route(prefix: &str, service: &str) -> RouteSettings {
    RouteSettings {
        max_body_bytes: Some(512 * 1024 * 1024 + 64 * 1024),
        timeout_ms: Some(600_000),
        ..RouteSettings::new(prefix, service)
    }
}

impl Settings {
    /// Point every route of `service` at `upstreams` (what `zocalo up` does
    /// once it knows the ports of the services it started).
    pub fn set_upstreams(&mut self, service: &str, upstreams: &[String]) {
        for route in self.routes.iter_mut().filter(|r| r.service == service) {
            route.upstreams = upstreams.to_vec();
        }
    }

    /// Refuse values that would turn the resilience layer against the
    /// traffic: no slots at all, tries that time out at once, a budget that
    /// is not a number.
    pub fn check_resilience(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.max_concurrent > 0, "max_concurrent must be at least 1");
        anyhow::ensure!(
            self.try_timeout_ms > 0 && self.routes.iter().all(|r| r.try_timeout_ms != Some(0)),
            "try_timeout_ms must be at least 1"
        );
        anyhow::ensure!(
            self.breaker.open_ms > 0,
            "breaker.open_ms must be at least 1"
        );
        anyhow::ensure!(
            self.retry.budget_ratio.is_finite() && self.retry.budget_ratio >= 0.0,
            "retry.budget_ratio must be a number of at least 0"
        );
        Ok(())
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
    /// Per service, the weight of instances by base URL
    /// (`[route_weights.reviews] "http://10.0.0.7:8080" = 3`): the share of
    /// new requests each gets relative to the others; unlisted instances
    /// weigh 1, and 0 drains one (canaries, planned shutdowns).
    pub route_weights: BTreeMap<String, BTreeMap<String, u32>>,
}

/// A weight beyond which a typo is more likely than intent.
pub const MAX_ROUTE_WEIGHT: u32 = 10_000;

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
        validate_route_weights(&self.route_weights)
    }
}

fn validate_route_weights(weights: &BTreeMap<String, BTreeMap<String, u32>>) -> Result<(), String> {
    for (service, instances) in weights {
        for (url, weight) in instances {
            let base = url.strip_prefix("http://").unwrap_or_default();
            if base.is_empty() || base.trim_end_matches('/').contains(['/', '?']) {
                return Err(format!(
                    "route_weights.{service}: `{url}` is not an instance base URL (http://host:port)"
                ));
            }
            if *weight > MAX_ROUTE_WEIGHT {
                return Err(format!(
                    "route_weights.{service}.\"{url}\": {weight} is over {MAX_ROUTE_WEIGHT}"
                ));
            }
        }
    }
    Ok(())
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
    fn resilience_settings_are_read_from_a_file() {
        let settings: Settings = serde_json::from_str(
            r#"{"balancing": "round_robin", "breaker": {"open_ms": 100},
                "retry": {"max_attempts": 2}, "max_concurrent": 8, "try_timeout_ms": 50,
                "routes": [{"prefix": "/a", "service": "a", "try_timeout_ms": 20}]}"#,
        )
        .unwrap();
        assert_eq!(settings.balancing, Strategy::RoundRobin);
        assert_eq!(settings.breaker.open_ms, 100);
        assert_eq!(settings.breaker.consecutive_failures, 5, "defaults fill in");
        assert_eq!(settings.retry.max_attempts, 2);
        assert!((settings.retry.budget_ratio - 0.2).abs() < f64::EPSILON);
        assert_eq!(settings.max_concurrent, 8);
        assert_eq!(settings.try_timeout_ms, 50);
        assert_eq!(settings.routes[0].try_timeout_ms, Some(20));
        assert!(settings.check_resilience().is_ok());
        for bad in [
            r#"{"max_concurrent": 0}"#,
            r#"{"try_timeout_ms": 0}"#,
            r#"{"breaker": {"open_ms": 0}}"#,
            r#"{"retry": {"budget_ratio": -1}}"#,
            r#"{"routes": [{"prefix": "/a", "service": "a", "try_timeout_ms": 0}]}"#,
        ] {
            let settings: Settings = serde_json::from_str(bad).unwrap();
            assert!(settings.check_resilience().is_err(), "{bad}");
        }
        let default: Settings = serde_json::from_str("{}").unwrap();
        assert_eq!(default.balancing, Strategy::PowerOfTwoChoices);
        assert!(serde_json::from_str::<Settings>(r#"{"balancing": "random"}"#).is_err());
    }

    #[test]
    fn partial_config_keeps_defaults() {
        let settings: Settings = serde_json::from_str(r#"{"hsts": true}"#).unwrap();
        assert!(settings.hsts);
        assert_eq!(settings.routes, Settings::default().routes);
        assert_eq!(settings.max_header_bytes, 16 * 1024);
    }

    /// `text` parsed and validated as the live file would be.
    fn toml_live(text: &str) -> Result<LiveSettings, String> {
        let live = zocalo_config::live::Live::new(LiveSettings::default());
        live.apply_toml(text, "test").map_err(|e| e.to_string())?;
        Ok((*live.get()).clone())
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
        let weights = toml_live(
            "[route_weights.reviews]\n\"http://10.0.0.1:8080\" = 3\n\"http://10.0.0.2:8080/\" = 0\n",
        );
        let weights = weights.unwrap();
        assert_eq!(weights.route_weights["reviews"]["http://10.0.0.1:8080"], 3);
        for bad in [
            "[route_weights.reviews]\n\"10.0.0.1:8080\" = 1\n",
            "[route_weights.reviews]\n\"http://10.0.0.1:8080/api\" = 1\n",
            "[route_weights.reviews]\n\"http://10.0.0.1:8080\" = 10001\n",
        ] {
            assert!(toml_live(bad).is_err(), "{bad}");
        }

        let mut flags = LiveSettings::default();
        flags.feature_flags.insert("beta".into(), true);
        assert!(flags.flag("beta") && !flags.flag("other"));
    }
}
