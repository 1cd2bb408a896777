//! CSRF protection: a signed double-submit token.
//!
//! Each browser gets a random value in the `zocalo_csrf` cookie (HttpOnly,
//! SameSite=Lax). Every form carries, in a hidden `csrf` field, the HMAC of
//! that value under the service's secret. A POST is accepted only if the
//! field is the HMAC of the cookie that came with it: another site can make
//! the browser send the cookie but cannot read it, nor sign a value of its
//! own without the secret (so planting a cookie from a sibling domain does
//! not help either).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use sha2::Sha256;

use crate::app::AppState;
use crate::error::WebError;
use crate::session::Visitor;

pub const COOKIE: &str = "zocalo_csrf";
pub const FIELD: &str = "csrf";

/// Signs and checks CSRF tokens with the service's secret.
pub struct Csrf {
    key: Vec<u8>,
}

impl Csrf {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: secret.to_vec(),
        }
    }

    /// A secret of this process only: right for one instance.
    pub fn random() -> Self {
        let key: [u8; 32] = rand::random();
        Self { key: key.to_vec() }
    }

    /// A fresh cookie value: 256 random bits.
    pub fn new_cookie() -> String {
        let value: [u8; 32] = rand::random();
        URL_SAFE_NO_PAD.encode(value)
    }

    /// Whether a cookie value has the shape we mint (anything else is
    /// replaced, so a planted cookie cannot carry odd characters).
    pub fn is_cookie(value: &str) -> bool {
        value.len() == 43
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length")
    }

    /// The form token that goes with `cookie`.
    pub fn token(&self, cookie: &str) -> String {
        let mut mac = self.mac();
        mac.update(b"zocalo-csrf:");
        mac.update(cookie.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Whether `token` was signed for `cookie` (constant time).
    pub fn verify(&self, cookie: &str, token: &str) -> bool {
        let Ok(signature) = URL_SAFE_NO_PAD.decode(token) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(b"zocalo-csrf:");
        mac.update(cookie.as_bytes());
        mac.verify_slice(&signature).is_ok()
    }
}

/// A form body whose CSRF token has been checked, decoded into `T`
/// (which ignores the `csrf` field).
pub struct CsrfForm<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = WebError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, WebError> {
        let visitor = req
            .extensions()
            .get::<Visitor>()
            .cloned()
            .ok_or_else(|| WebError::Internal("no visitor on the request".into()))?;
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|_| WebError::BadRequest("the form could not be read".into()))?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
            .map_err(|_| WebError::BadRequest("the form is malformed".into()))?;
        let token = pairs
            .iter()
            .find(|(name, _)| name == FIELD)
            .map(|(_, value)| value.as_str())
            .unwrap_or_default();
        if !visitor.had_csrf_cookie || !state.csrf.verify(&visitor.csrf_cookie, token) {
            return Err(WebError::Csrf);
        }
        serde_urlencoded::from_bytes(&body)
            .map(CsrfForm)
            .map_err(|e| WebError::BadRequest(format!("the form is incomplete: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_only_for_its_cookie_and_secret() {
        let csrf = Csrf::new(b"one secret");
        let cookie = Csrf::new_cookie();
        assert!(Csrf::is_cookie(&cookie));
        let token = csrf.token(&cookie);
        assert!(csrf.verify(&cookie, &token));
        assert!(!csrf.verify(&Csrf::new_cookie(), &token));
        assert!(!Csrf::new(b"another secret").verify(&cookie, &token));
        assert!(!csrf.verify(&cookie, ""));
        assert!(!csrf.verify(&cookie, "not base64!"));
        assert!(!Csrf::is_cookie("short"));
    }
}
