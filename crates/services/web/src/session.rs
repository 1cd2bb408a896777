//! Who is visiting: the signed-in user (from the token cookies) and the
//! CSRF cookie, loaded once per request by [`visit`].
//!
//! The access token (15 minutes) and the refresh token (30 days) live in
//! HttpOnly, SameSite=Lax cookies (and `Secure` unless turned off), so page
//! scripts never see them. When the access token has expired, or is about
//! to, the refresh token is exchanged for a new pair before the page is
//! rendered and both cookies are replaced on the response. The claims are
//! read only to show a name and to know when to refresh: every API checks
//! the token itself, so a forged cookie fools nobody but its author.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use zocalo_http::client_ip::forwarded_client;

use crate::app::AppState;
use crate::csrf::{self, Csrf};
use crate::error::WebError;
use crate::gateway::Gateway;

pub const ACCESS_COOKIE: &str = "zocalo_access";
pub const REFRESH_COOKIE: &str = "zocalo_refresh";
const REFRESH_TTL_SECS: i64 = 30 * 24 * 3600;
const CSRF_TTL_SECS: i64 = 365 * 24 * 3600;
/// Refresh a little before expiry, so a token does not die in flight.
const EXPIRY_MARGIN_SECS: i64 = 20;
/// How long the answer to one refresh token is remembered, so that
/// parallel requests of one browser share it instead of tripping the
/// reuse detection of the auth service (which would sign the user out).
const REFRESH_MEMORY: Duration = Duration::from_secs(60);

const CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The visitor of this request, for handlers and templates.
#[derive(Debug, Clone)]
pub struct Visitor {
    pub user: Option<SignedIn>,
    /// The token to put into forms.
    pub csrf_token: String,
    pub(crate) csrf_cookie: String,
    /// Whether the browser sent the CSRF cookie (a POST without it fails).
    pub(crate) had_csrf_cookie: bool,
    /// The browser's address, passed on to the token endpoint so that login
    /// limits count per person, not per web instance.
    pub(crate) client_ip: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SignedIn {
    pub access_token: String,
    pub id: String,
    pub name: String,
    pub roles: Vec<String>,
}

impl SignedIn {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

impl Visitor {
    /// The signed-in user, or a redirect to the sign-in page that comes
    /// back to `here` afterwards.
    pub fn require(&self, here: &str) -> Result<&SignedIn, WebError> {
        self.user
            .as_ref()
            .ok_or_else(|| WebError::SignIn(here.to_owned()))
    }

    pub fn token(&self) -> Option<&str> {
        self.user.as_ref().map(|u| u.access_token.as_str())
    }
}

/// The answer of the token endpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    roles: Vec<String>,
    exp: i64,
}

/// The claims of a JWT, unverified (see the module documentation).
fn claims(token: &str) -> Option<Claims> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn signed_in(access_token: &str) -> Option<SignedIn> {
    let claims = claims(access_token)?;
    if claims.exp <= chrono::Utc::now().timestamp() + EXPIRY_MARGIN_SECS {
        return None;
    }
    Some(SignedIn {
        access_token: access_token.to_owned(),
        id: claims.sub,
        name: claims.name,
        roles: claims.roles,
    })
}

/// Cookies of a request, by name.
pub struct Jar(HashMap<String, String>);

impl Jar {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let pairs = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .map(|(name, value)| (name.to_owned(), value.to_owned()));
        Self(pairs.collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// A `Set-Cookie` value: HttpOnly and SameSite=Lax always, `Secure` when
/// configured; `max_age` 0 deletes the cookie.
pub fn cookie(name: &str, value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// The cookies that hold a fresh token pair.
pub fn token_cookies(tokens: &Tokens, secure: bool) -> Vec<HeaderValue> {
    let mut cookies = vec![cookie(
        ACCESS_COOKIE,
        &tokens.access_token,
        tokens.expires_in.max(1),
        secure,
    )];
    if let Some(refresh) = &tokens.refresh_token {
        cookies.push(cookie(REFRESH_COOKIE, refresh, REFRESH_TTL_SECS, secure));
    }
    cookies
}

/// The cookies that end a session.
pub fn cleared_cookies(secure: bool) -> Vec<HeaderValue> {
    vec![
        cookie(ACCESS_COOKIE, "", 0, secure),
        cookie(REFRESH_COOKIE, "", 0, secure),
    ]
}

/// Exchanges refresh tokens, once per token (see [`REFRESH_MEMORY`]).
#[derive(Default)]
pub struct Refresher {
    recent: Mutex<HashMap<[u8; 32], (Instant, Shared)>>,
}

/// The answer to one refresh token, computed once, awaited by all.
type Shared = Arc<OnceCell<Option<Tokens>>>;

impl Refresher {
    pub async fn refresh(
        &self,
        gateway: &Gateway,
        refresh_token: &str,
        client_ip: Option<&str>,
    ) -> Option<Tokens> {
        let key: [u8; 32] = Sha256::digest(refresh_token.as_bytes()).into();
        let cell = {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent.retain(|_, (at, _)| at.elapsed() < REFRESH_MEMORY);
            recent
                .entry(key)
                .or_insert_with(|| (Instant::now(), Arc::new(OnceCell::new())))
                .1
                .clone()
        };
        cell.get_or_init(|| async {
            let form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ];
            match gateway.token::<Tokens>(&form, client_ip).await {
                Ok(tokens) => Some(tokens),
                Err(error) => {
                    tracing::info!(?error, "refresh refused: the visitor is signed out");
                    None
                }
            }
        })
        .await
        .clone()
    }
}

/// The browser's address: the last hop a gateway added to
/// `X-Forwarded-For` when the peer is one (loopback, or listed in
/// `web.trusted_proxies`), else the peer itself, so that nobody else can
/// choose it.
fn client_ip(req: &Request, trusted: &[IpAddr]) -> Option<String> {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>()?.0.ip();
    Some(forwarded_client(req.headers(), peer, true, trusted).to_string())
}

/// Middleware: load the [`Visitor`], refreshing tokens when needed, and add
/// the cookies that changed to the response (unless the handler set its
/// own, e.g. on sign-in or sign-out). HTML answers are never stored by
/// shared caches: they depend on who asks.
pub async fn visit(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let jar = Jar::from_headers(req.headers());
    let mut set_cookies = Vec::new();
    let (csrf_cookie, had_csrf_cookie) = match jar.get(csrf::COOKIE).filter(|v| Csrf::is_cookie(v))
    {
        Some(value) => (value.to_owned(), true),
        None => {
            let value = Csrf::new_cookie();
            set_cookies.push(cookie(
                csrf::COOKIE,
                &value,
                CSRF_TTL_SECS,
                state.secure_cookies,
            ));
            (value, false)
        }
    };
    let ip = client_ip(&req, &state.trusted_proxies);
    let mut user = jar.get(ACCESS_COOKIE).and_then(signed_in);
    if user.is_none()
        && let Some(refresh) = jar.get(REFRESH_COOKIE)
    {
        match state
            .refresher
            .refresh(&state.gateway, refresh, ip.as_deref())
            .await
        {
            Some(tokens) => {
                user = signed_in(&tokens.access_token);
                set_cookies.extend(token_cookies(&tokens, state.secure_cookies));
            }
            None => set_cookies.extend(cleared_cookies(state.secure_cookies)),
        }
    }
    let visitor = Visitor {
        user,
        csrf_token: state.csrf.token(&csrf_cookie),
        csrf_cookie,
        had_csrf_cookie,
        client_ip: ip,
    };
    req.extensions_mut().insert(visitor);
    let mut response = next.run(req).await;
    add_cookies(response.headers_mut(), set_cookies);
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_html {
        let headers = response.headers_mut();
        if !headers.contains_key(header::CACHE_CONTROL) {
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            );
        }
        // Only our own scripts, styles and form targets: an injected
        // <script> or a form posting elsewhere does not run.
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    response
}

/// Append `cookies` unless the response already sets a cookie of that name.
fn add_cookies(headers: &mut HeaderMap, cookies: Vec<HeaderValue>) {
    let name_of = |v: &HeaderValue| {
        v.to_str()
            .ok()
            .and_then(|s| s.split('=').next())
            .map(str::to_owned)
    };
    let already: Vec<String> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(name_of)
        .collect();
    for cookie in cookies {
        if name_of(&cookie).is_some_and(|name| !already.contains(&name)) {
            headers.append(header::SET_COOKIE, cookie);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        let part = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.sig",
            part(&serde_json::json!({"alg": "EdDSA"})),
            part(&claims)
        )
    }

    #[test]
    fn a_live_token_signs_in_and_a_nearly_expired_one_does_not() {
        let now = chrono::Utc::now().timestamp();
        let live = jwt(
            serde_json::json!({"sub": "u1", "name": "Ana", "roles": ["editor"], "exp": now + 600}),
        );
        let user = signed_in(&live).unwrap();
        assert_eq!((user.id.as_str(), user.name.as_str()), ("u1", "Ana"));
        assert!(user.has_role("editor") && !user.has_role("admin"));
        let dying = jwt(serde_json::json!({"sub": "u1", "exp": now + 5}));
        assert!(signed_in(&dying).is_none());
        assert!(signed_in("garbage").is_none());
    }

    #[test]
    fn cookies_are_http_only_lax_and_secure_when_asked() {
        let secure = cookie("a", "b", 60, true);
        assert_eq!(
            secure.to_str().unwrap(),
            "a=b; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
        assert!(
            !cookie("a", "b", 60, false)
                .to_str()
                .unwrap()
                .contains("Secure")
        );
    }

    #[test]
    fn the_jar_reads_every_cookie_header() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        headers.append(header::COOKIE, HeaderValue::from_static("c=3"));
        let jar = Jar::from_headers(&headers);
        assert_eq!(
            (jar.get("a"), jar.get("b"), jar.get("c")),
            (Some("1"), Some("2"), Some("3"))
        );
        assert_eq!(jar.get("d"), None);
    }

    #[test]
    fn handler_cookies_win_over_the_middleware_s() {
        let mut headers = HeaderMap::new();
        headers.append(header::SET_COOKIE, cookie(ACCESS_COOKIE, "new", 60, true));
        add_cookies(
            &mut headers,
            vec![
                cookie(ACCESS_COOKIE, "old", 60, true),
                cookie("other", "x", 60, true),
            ],
        );
        let set: Vec<_> = headers.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(set.len(), 2);
        assert!(set[0].to_str().unwrap().starts_with("zocalo_access=new"));
    }
}
