//! The settings of the whole binary: one section per service plus what they
//! share. Loaded from defaults, then the `--config` file, then `ZOCALO_…`
//! environment variables (`ZOCALO_REVIEWS__DATABASE_URL`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zocalo_config::live::NatsKvSource;
use zocalo_config::{ConfigError, Secret};
use zocalo_telemetry::LogSettings;

use crate::live::ProcessLive;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where embedded-mode SQLite files live.
    pub data_dir: PathBuf,
    /// The URL clients use to reach the gateway; it is also the token
    /// issuer. Defaults to `http://127.0.0.1:<gateway port>`.
    pub public_url: Option<String>,
    /// Creates this admin account at start if the email is free.
    pub admin_email: Option<String>,
    pub admin_password: Option<Secret>,
    pub log: LogSettings,
    pub gateway: zocalo_gateway::Settings,
    pub auth: zocalo_auth::Settings,
    pub reviews: zocalo_reviews::Settings,
    pub catalog: zocalo_catalog::Settings,
    pub orders: zocalo_orders::Settings,
    pub cinema_command: zocalo_cinema_command::Settings,
    pub web: zocalo_web::Settings,
    pub cinema_query: zocalo_cinema_query::Settings,
    pub media: zocalo_media::Settings,
    /// How `zocalo serve` announces itself (`kind = "nats"`) and how
    /// instances are found.
    pub discovery: zocalo_discovery::DiscoverySettings,
    /// The log level and feature flags of a `zocalo serve <service>` (not
    /// the gateway: see `gateway.live`) or `zocalo worker` process; replaced
    /// by the content of `live_config_file` or `live_config_nats` when set.
    pub live: ProcessLive,
    /// A TOML file holding [`ProcessLive`], re-read every second.
    pub live_config_file: Option<PathBuf>,
    /// A NATS KV key holding [`ProcessLive`] as TOML, followed.
    pub live_config_nats: Option<NatsKvSource>,
    /// Where `zocalo worker` serves `/live`, `/ready` and `/metrics`
    /// (probes and scraping); none when absent.
    pub worker_listen: Option<std::net::SocketAddr>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            public_url: None,
            admin_email: None,
            admin_password: None,
            log: LogSettings::default(),
            gateway: zocalo_gateway::Settings::default(),
            auth: zocalo_auth::Settings::default(),
            reviews: zocalo_reviews::Settings::default(),
            catalog: zocalo_catalog::Settings::default(),
            orders: zocalo_orders::Settings::default(),
            cinema_command: zocalo_cinema_command::Settings::default(),
            web: zocalo_web::Settings::default(),
            cinema_query: zocalo_cinema_query::Settings::default(),
            media: zocalo_media::Settings::default(),
            discovery: zocalo_discovery::DiscoverySettings::default(),
            live: ProcessLive::default(),
            live_config_file: None,
            live_config_nats: None,
            worker_listen: None,
        }
    }
}

pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
    let settings: Settings = zocalo_config::load(file)?;
    if settings.admin_email.is_some() != settings.admin_password.is_some() {
        return Err(ConfigError::new(
            "key `admin_email`: ZOCALO_ADMIN_EMAIL and ZOCALO_ADMIN_PASSWORD go together",
        ));
    }
    Ok(settings)
}

impl Settings {
    pub fn apply_up_flags(&mut self, port: Option<u16>, data_dir: Option<PathBuf>) {
        if let Some(port) = port {
            self.gateway.listen.set_port(port);
        }
        if let Some(dir) = data_dir {
            self.data_dir = dir;
        }
    }

    /// Services left on their default SQLite files, bus, object storage
    /// and scratch directory keep them under `data_dir`.
    pub fn use_data_dir(&mut self) {
        let dir = self.data_dir.clone();
        let sqlite = |name: &str| format!("sqlite://{}", dir.join(name).display());
        let objects = || dir.join("objects").display().to_string();
        let bus = || sqlite("bus.db");

        let auth = zocalo_auth::Settings::default();
        or_default(&mut self.auth.database_url, &auth.database_url, || {
            sqlite("auth.db")
        });
        let reviews = zocalo_reviews::Settings::default();
        or_default(
            &mut self.reviews.database_url,
            &reviews.database_url,
            || sqlite("reviews.db"),
        );
        let catalog = zocalo_catalog::Settings::default();
        or_default(
            &mut self.catalog.database_url,
            &catalog.database_url,
            || sqlite("catalog.db"),
        );
        let orders = zocalo_orders::Settings::default();
        or_default(&mut self.orders.database_url, &orders.database_url, || {
            sqlite("orders.db")
        });
        or_default(&mut self.orders.bus_url, &orders.bus_url, bus);
        let command = zocalo_cinema_command::Settings::default();
        let own = &mut self.cinema_command;
        or_default(&mut own.database_url, &command.database_url, || {
            sqlite("cinema-command.db")
        });
        or_default(&mut own.bus_url, &command.bus_url, bus);
        or_default(&mut own.objects.url, &command.objects.url, objects);
        let query = zocalo_cinema_query::Settings::default();
        let own = &mut self.cinema_query;
        or_default(&mut own.database_url, &query.database_url, || {
            sqlite("cinema-query.db")
        });
        or_default(&mut own.bus_url, &query.bus_url, bus);
        let media = zocalo_media::Settings::default();
        let own = &mut self.media;
        or_default(&mut own.database_url, &media.database_url, || {
            sqlite("media.db")
        });
        or_default(&mut own.bus_url, &media.bus_url, bus);
        or_default(&mut own.objects.url, &media.objects.url, objects);
        or_default(&mut own.scratch_dir, &media.scratch_dir, || {
            dir.join("scratch")
        });
    }

    /// The gateway's own URL on this machine: `https` when it terminates
    /// TLS.
    pub fn local_gateway_url(&self, gateway_port: u16) -> String {
        let scheme = if self.gateway.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{gateway_port}")
    }

    /// One issuer for every service: the public URL of the gateway.
    pub fn share_issuer(&mut self, gateway_port: u16) {
        let public = self
            .public_url
            .clone()
            .unwrap_or_else(|| self.local_gateway_url(gateway_port));
        self.auth.issuer = public.clone();
        self.auth.public_url = public.clone();
        self.reviews.issuer = public.clone();
        self.catalog.issuer = public.clone();
        self.orders.issuer = public.clone();
        self.cinema_command.issuer = public.clone();
        self.cinema_query.issuer = public.clone();
        self.media.issuer = public.clone();
        self.gateway.issuer = public;
        let audience = self.auth.audience.clone();
        self.reviews.audience = audience.clone();
        self.catalog.audience = audience.clone();
        self.orders.audience = audience.clone();
        self.cinema_command.audience = audience.clone();
        self.cinema_query.audience = audience.clone();
        self.media.audience = audience.clone();
        self.gateway.audience = audience;
    }

    /// In `zocalo up` the orders service gets its client credentials from
    /// the process itself: a fresh secret, declared to auth at start.
    pub fn embedded_orders_client(&mut self) {
        if !self.orders.client_secret.expose().is_empty() {
            return;
        }
        let secret: [u8; 24] = rand::random();
        let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        self.orders.client_secret = Secret::new(secret.clone());
        self.auth.clients.push(zocalo_auth::ClientSeed {
            client_id: self.orders.client_id.clone(),
            client_secret: Secret::new(secret),
            name: "orders (embedded)".into(),
            roles: vec!["service".into()],
        });
    }

    pub fn admin(&self) -> Option<zocalo_auth::AdminBootstrap> {
        Some(zocalo_auth::AdminBootstrap {
            email: self.admin_email.clone()?,
            password: self.admin_password.as_ref()?.expose().to_owned(),
        })
    }
}

/// Replace `field` with `value()` when it still holds `default`: settings
/// the operator chose are kept.
fn or_default<T: PartialEq>(field: &mut T, default: &T, value: impl FnOnce() -> T) {
    if field == default {
        *field = value();
    }
}
