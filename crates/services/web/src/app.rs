//! Building and running the web service.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use zocalo_config::Secret;
use zocalo_http::server::Server;

use crate::csrf::Csrf;
use crate::gateway::Gateway;
use crate::session::Refresher;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Where the pages call the APIs: the gateway's base URL. `zocalo up`
    /// sets it to the gateway's own address.
    pub gateway_url: String,
    /// Send cookies with `Secure` (browsers then send them over HTTPS
    /// only, and to `http://localhost`). Turn off only to serve plain HTTP
    /// to another host, e.g. on a private network for tests.
    pub secure_cookies: bool,
    /// Signs the CSRF tokens of forms. Every instance of a deployment needs
    /// the same value; when empty a random one is drawn at start, which is
    /// right for a single process (`zocalo up`).
    pub csrf_secret: Secret,
    /// How long one call to the gateway may take before the page says the
    /// service is unavailable.
    pub gateway_timeout_ms: u64,
    /// Peers besides loopback whose `X-Forwarded-For` is believed: the
    /// gateways, when they reach the web over the network. Without them
    /// a sign-in counts against the gateway's address, not the person's.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            gateway_url: "http://127.0.0.1:8080".into(),
            secure_cookies: true,
            csrf_secret: Secret::new(""),
            gateway_timeout_ms: 10_000,
            trusted_proxies: Vec::new(),
        }
    }
}

/// What every handler reaches: the gateway client, the CSRF signer and the
/// cookie policy.
#[derive(Clone)]
pub struct AppState {
    pub gateway: Gateway,
    pub csrf: Arc<Csrf>,
    pub refresher: Arc<Refresher>,
    pub secure_cookies: bool,
    pub trusted_proxies: Arc<[IpAddr]>,
}

pub struct Application {
    server: Server,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let gateway = Gateway::new(
            &settings.gateway_url,
            Duration::from_millis(settings.gateway_timeout_ms),
        )?;
        let csrf = match settings.csrf_secret.expose() {
            "" => Csrf::random(),
            secret => Csrf::new(secret.as_bytes()),
        };
        let state = AppState {
            gateway,
            csrf: Arc::new(csrf),
            refresher: Arc::new(Refresher::default()),
            secure_cookies: settings.secure_cookies,
            trusted_proxies: settings.trusted_proxies.into(),
        };
        Ok(Self {
            server: Server::bind(settings.listen, crate::routes::router(state)).await?,
        })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        self.server.run_until_stopped(shutdown).await
    }
}
