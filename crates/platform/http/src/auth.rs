//! Who is calling: bearer-token verification and the extractors built on it.
//!
//! Access tokens are EdDSA JWTs signed by the `auth` service, which publishes
//! its public keys as a JWKS. [`TokenVerifier`] caches those keys and refetches
//! the set when it meets an unknown `kid` (key rotation), at most once per
//! [`REFETCH_INTERVAL`] so that garbage tokens cannot turn into a flood of
//! JWKS requests. The gateway verifies every bearer token before routing;
//! services verify again with the same code (defence in depth).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};

use crate::Problem;

/// How soon an unknown `kid` may trigger another JWKS fetch.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(5);

/// Role names known to the platform.
pub mod roles {
    pub const ADMIN: &str = "admin";
    pub const EDITOR: &str = "editor";
    pub const MANAGER: &str = "manager";
    pub const SELLER: &str = "seller";
    pub const SERVICE: &str = "service";
    pub const ALL: &[&str] = &[ADMIN, EDITOR, MANAGER, SELLER, SERVICE];
}

/// The claims of a Zócalo access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// A user id (UUID) or `client:<client_id>` for service clients.
    pub sub: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The user's email address (absent for service clients), so a
    /// service can write to its caller without asking the auth service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// Why a token was refused. The variants are for logs; clients only ever see
/// a 401 that does not say which check failed beyond a short reason.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("token rejected: {0}")]
    Rejected(String),
    #[error("cannot fetch signing keys: {0}")]
    KeysUnavailable(String),
}

impl From<TokenError> for Problem {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::KeysUnavailable(cause) => Problem::unavailable(cause),
            other => Problem::unauthorized(other.to_string()),
        }
    }
}

/// Where the verification keys come from.
#[derive(Clone)]
pub enum KeySource {
    /// Fetch `GET url` (the auth service's `/.well-known/jwks.json`).
    Url(String),
    /// A fixed set, for the auth service itself and for tests.
    Static(JwkSet),
}

impl From<JwkSet> for KeySource {
    fn from(keys: JwkSet) -> Self {
        KeySource::Static(keys)
    }
}

/// Verifies access tokens against a cached JWKS.
pub struct TokenVerifier {
    source: KeySource,
    validation: Validation,
    keys: RwLock<HashMap<String, DecodingKey>>,
    last_fetch: Mutex<Option<(Instant, Result<(), String>)>>,
    http: reqwest::Client,
}

impl TokenVerifier {
    pub fn new(source: KeySource, issuer: &str, audience: &str) -> Arc<Self> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.leeway = 5;
        let keys = match &source {
            KeySource::Static(set) => decoding_keys(set),
            KeySource::Url(_) => HashMap::new(),
        };
        Arc::new(Self {
            source,
            validation,
            keys: RwLock::new(keys),
            last_fetch: Mutex::new(None),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .expect("a client with a timeout always builds"),
        })
    }

    /// Replace a static key set (the auth service calls this after rotation).
    pub async fn set_keys(&self, set: &JwkSet) {
        *self.keys.write().await = decoding_keys(set);
    }

    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Rejected("unsupported algorithm".into()));
        }
        let kid = header.kid.ok_or(TokenError::Malformed)?;
        let key = match self.key(&kid).await {
            Some(key) => key,
            None => {
                self.refresh().await?;
                self.key(&kid).await.ok_or(TokenError::UnknownKey)?
            }
        };
        jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| TokenError::Rejected(e.kind_description()))
    }

    async fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().await.get(kid).cloned()
    }

    /// Refetch the key set, unless that was tried moments ago; then the
    /// outcome of that try stands. Failures are remembered too: while the
    /// auth service is down, requests fail fast with 503 instead of each one
    /// waiting on its own fetch.
    pub async fn refresh(&self) -> Result<(), TokenError> {
        let KeySource::Url(url) = &self.source else {
            return Ok(());
        };
        let mut last = self.last_fetch.lock().await;
        if let Some((at, outcome)) = last.as_ref()
            && at.elapsed() < REFETCH_INTERVAL
        {
            return outcome.clone().map_err(TokenError::KeysUnavailable);
        }
        let outcome = match self.fetch(url).await {
            Ok(set) => {
                *self.keys.write().await = decoding_keys(&set);
                Ok(())
            }
            Err(error) => Err(error),
        };
        *last = Some((Instant::now(), outcome.clone()));
        outcome.map_err(TokenError::KeysUnavailable)
    }

    async fn fetch(&self, url: &str) -> Result<JwkSet, String> {
        self.http
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())
    }
}

trait KindDescription {
    fn kind_description(&self) -> String;
}

impl KindDescription for jsonwebtoken::errors::Error {
    fn kind_description(&self) -> String {
        use jsonwebtoken::errors::ErrorKind;
        match self.kind() {
            ErrorKind::ExpiredSignature => "token expired".into(),
            ErrorKind::InvalidAudience => "wrong audience".into(),
            ErrorKind::InvalidIssuer => "wrong issuer".into(),
            ErrorKind::InvalidSignature => "bad signature".into(),
            ErrorKind::ImmatureSignature => "token not yet valid".into(),
            _ => "invalid token".into(),
        }
    }
}

fn decoding_keys(set: &JwkSet) -> HashMap<String, DecodingKey> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some((kid, key))
        })
        .collect()
}

/// The bearer token of a request, if it has one.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A caller with a valid access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    pub subject: String,
    pub roles: Vec<String>,
    pub name: Option<String>,
    pub email: Option<String>,
}

impl AuthUser {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    pub fn is_admin(&self) -> bool {
        self.has_role(roles::ADMIN)
    }

    /// `Ok` when the caller has `role` (admins have every role), else 403.
    pub fn require_role(&self, role: &str) -> Result<(), Problem> {
        if self.has_role(role) || self.is_admin() {
            Ok(())
        } else {
            Err(Problem::forbidden(format!("this needs the `{role}` role")))
        }
    }

    /// The user id, for callers that are users rather than service clients.
    pub fn user_id(&self) -> Result<uuid::Uuid, Problem> {
        self.subject
            .parse()
            .map_err(|_| Problem::forbidden("this needs a user, not a service client"))
    }
}

impl From<Claims> for AuthUser {
    fn from(claims: Claims) -> Self {
        Self {
            subject: claims.sub,
            roles: claims.roles,
            name: claims.name,
            email: claims.email,
        }
    }
}

impl<S> FromRequestParts<S> for AuthUser
where
    Arc<TokenVerifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts).ok_or_else(|| {
            Problem::unauthorized("this needs a bearer token in the Authorization header")
        })?;
        let verifier = Arc::<TokenVerifier>::from_ref(state);
        Ok(verifier.verify(token).await?.into())
    }
}

/// `Option<AuthUser>`: absent when there is no token, 401 when there is a bad one.
impl<S> OptionalFromRequestParts<S> for AuthUser
where
    Arc<TokenVerifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        if parts.headers.get(AUTHORIZATION).is_none() {
            return Ok(None);
        }
        <AuthUser as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}

/// The caller if it sent a token, for routes that are public but richer when
/// signed in.
pub type MaybeAuthUser = Option<AuthUser>;

/// Signs access tokens with one Ed25519 key. The auth service holds the
/// current signer; tests build their own to mint tokens for a service under
/// test without running the auth service.
pub struct TokenSigner {
    kid: String,
    key: jsonwebtoken::EncodingKey,
    jwk: jsonwebtoken::jwk::Jwk,
}

impl TokenSigner {
    /// A signer from a stored 32-byte Ed25519 seed.
    pub fn from_seed(kid: impl Into<String>, seed: &[u8; 32]) -> Self {
        use base64::Engine;
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        use jsonwebtoken::jwk::{
            AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, KeyAlgorithm,
            OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse,
        };

        let kid = kid.into();
        let signing = ed25519_dalek::SigningKey::from_bytes(seed);
        let der = signing
            .to_pkcs8_der()
            .expect("an Ed25519 key always encodes as PKCS#8");
        let public = signing.verifying_key().to_bytes();
        let jwk = Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(KeyAlgorithm::EdDSA),
                key_id: Some(kid.clone()),
                ..Default::default()
            },
            algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public),
            }),
        };
        Self {
            kid,
            key: jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
            jwk,
        }
    }

    /// A fresh random key; returns the seed so the caller can persist it.
    pub fn generate(kid: impl Into<String>) -> (Self, [u8; 32]) {
        use rand::RngCore;
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        (Self::from_seed(kid, &seed), seed)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn jwk(&self) -> &jsonwebtoken::jwk::Jwk {
        &self.jwk
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, Problem> {
        let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).map_err(Problem::internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(aud: &str, exp_in: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            sub: uuid::Uuid::new_v4().to_string(),
            roles: vec!["editor".into()],
            name: None,
            email: None,
            iss: "zocalo".into(),
            aud: aud.into(),
            iat: now,
            exp: now + exp_in,
            jti: "j".into(),
        }
    }

    #[tokio::test]
    async fn signed_tokens_verify_and_bad_ones_do_not() {
        let (signer, _) = TokenSigner::generate("k1");
        let set = JwkSet {
            keys: vec![signer.jwk().clone()],
        };
        let verifier = TokenVerifier::new(KeySource::Static(set), "zocalo", "zocalo-api");
        let good = signer.sign(&claims("zocalo-api", 60)).unwrap();
        assert_eq!(verifier.verify(&good).await.unwrap().roles, vec!["editor"]);

        let wrong_audience = signer.sign(&claims("elsewhere", 60)).unwrap();
        assert!(verifier.verify(&wrong_audience).await.is_err());
        let expired = signer.sign(&claims("zocalo-api", -60)).unwrap();
        assert!(verifier.verify(&expired).await.is_err());
        let (stranger, _) = TokenSigner::generate("k2");
        let unknown = stranger.sign(&claims("zocalo-api", 60)).unwrap();
        assert!(matches!(
            verifier.verify(&unknown).await,
            Err(TokenError::UnknownKey)
        ));
        let mut tampered = good.clone();
        tampered.insert(good.len() - 3, 'x');
        assert!(verifier.verify(&tampered).await.is_err());
        assert!(verifier.verify("not.a.token").await.is_err());
    }

    #[test]
    fn the_same_seed_gives_the_same_public_key() {
        let (a, seed) = TokenSigner::generate("k");
        let b = TokenSigner::from_seed("k", &seed);
        assert_eq!(a.jwk(), b.jwk());
    }
}
