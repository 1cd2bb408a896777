//! Tokens for calls between services.
//!
//! A service calling another's internal API authenticates as itself with the
//! OAuth2 `client_credentials` grant and caches the token until shortly
//! before it expires, so a busy caller asks the auth service about once per
//! token lifetime, not once per call. The token requests go through a
//! [`ServiceClient`], so they are balanced over the live auth instances.

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::Problem;
use crate::balance::InvalidEndpoint;
use crate::client::{ClientSettings, ServiceClient, split_url};

/// Renew this long before the token expires.
const EARLY_RENEWAL: Duration = Duration::from_secs(30);

pub enum ServiceAuth {
    /// A fixed token (tests mint one with the `service` role).
    Static(String),
    ClientCredentials(ClientCredentials),
}

/// A token from the auth service's token endpoint, cached.
pub struct ClientCredentials {
    auth: ServiceClient,
    token_path: String,
    client_id: String,
    client_secret: String,
    cached: Mutex<Option<(String, Instant)>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

/// A client for the auth service whose token endpoint is `token_url`
/// (`http://auth:8081/auth/token`): its base URL as the one instance, until
/// discovery replaces the instances.
pub fn auth_client(
    token_url: &str,
    settings: &ClientSettings,
) -> Result<ServiceClient, InvalidEndpoint> {
    let (base, _) = split_url(token_url)?;
    ServiceClient::with_instances("auth", &[base], settings)
}

impl ServiceAuth {
    /// Tokens from the endpoint at `token_url`, one fixed instance.
    pub fn client_credentials(
        token_url: &str,
        client_id: String,
        client_secret: String,
    ) -> Result<Self, InvalidEndpoint> {
        let auth = auth_client(token_url, &ClientSettings::default())?;
        Self::client_credentials_at(auth, token_url, client_id, client_secret)
    }

    /// Tokens from the path of `token_url`, asked of `auth` (from
    /// [`auth_client`], perhaps following discovery since).
    pub fn client_credentials_at(
        auth: ServiceClient,
        token_url: &str,
        client_id: String,
        client_secret: String,
    ) -> Result<Self, InvalidEndpoint> {
        let (_, path) = split_url(token_url)?;
        Ok(Self::client_credentials_via(
            auth,
            &path,
            client_id,
            client_secret,
        ))
    }

    /// Tokens from `token_path` on whichever instance of the auth service
    /// `auth` picks.
    pub fn client_credentials_via(
        auth: ServiceClient,
        token_path: &str,
        client_id: String,
        client_secret: String,
    ) -> Self {
        ServiceAuth::ClientCredentials(ClientCredentials {
            auth,
            token_path: token_path.to_owned(),
            client_id,
            client_secret,
            cached: Mutex::new(None),
        })
    }

    /// A valid bearer token; 503 when the auth service cannot issue one.
    pub async fn bearer(&self) -> Result<String, Problem> {
        match self {
            ServiceAuth::Static(token) => Ok(token.clone()),
            ServiceAuth::ClientCredentials(credentials) => credentials.bearer().await,
        }
    }
}

impl ClientCredentials {
    async fn bearer(&self) -> Result<String, Problem> {
        let mut cached = self.cached.lock().await;
        if let Some((token, renew_at)) = cached.as_ref()
            && Instant::now() < *renew_at
        {
            return Ok(token.clone());
        }
        let response: TokenResponse = self
            .auth
            .post(&self.token_path)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &self.client_id),
                ("client_secret", &self.client_secret),
            ])
            // Asking twice only issues a second token.
            .retryable()
            .send()
            .await
            .map_err(Problem::from)?
            .error_for_status()
            .map_err(Problem::unavailable)?
            .json()
            .await
            .map_err(Problem::unavailable)?;
        let lifetime = Duration::from_secs(response.expires_in);
        let renew_at = Instant::now() + lifetime.saturating_sub(EARLY_RENEWAL);
        *cached = Some((response.access_token.clone(), renew_at));
        Ok(response.access_token)
    }
}
