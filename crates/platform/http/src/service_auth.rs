//! Tokens for calls between services.
//!
//! A service calling another's internal API authenticates as itself with the
//! OAuth2 `client_credentials` grant and caches the token until shortly
//! before it expires, so a busy caller asks the auth service about once per
//! token lifetime, not once per call.

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::Problem;

/// Renew this long before the token expires.
const EARLY_RENEWAL: Duration = Duration::from_secs(30);

pub enum ServiceAuth {
    /// A fixed token (tests mint one with the `service` role).
    Static(String),
    ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: String,
        http: reqwest::Client,
        cached: Mutex<Option<(String, Instant)>>,
    },
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

impl ServiceAuth {
    pub fn client_credentials(token_url: String, client_id: String, client_secret: String) -> Self {
        ServiceAuth::ClientCredentials {
            token_url,
            client_id,
            client_secret,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("a client with a timeout always builds"),
            cached: Mutex::new(None),
        }
    }

    /// A valid bearer token; 503 when the auth service cannot issue one.
    pub async fn bearer(&self) -> Result<String, Problem> {
        match self {
            ServiceAuth::Static(token) => Ok(token.clone()),
            ServiceAuth::ClientCredentials {
                token_url,
                client_id,
                client_secret,
                http,
                cached,
            } => {
                let mut cached = cached.lock().await;
                if let Some((token, renew_at)) = cached.as_ref()
                    && Instant::now() < *renew_at
                {
                    return Ok(token.clone());
                }
                let response: TokenResponse = crate::traced(http.post(token_url))
                    .form(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", client_id),
                        ("client_secret", client_secret),
                    ])
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
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
    }
}
