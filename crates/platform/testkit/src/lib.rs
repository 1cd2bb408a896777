//! Test harness shared by every service's `tests/api` suite and the
//! whole-stack tests.
//!
//! - [`database`] gives each test its own database: a SQLite file in a fresh
//!   temporary directory, or a PostgreSQL database created for the test when
//!   `ZOCALO_TEST_POSTGRES_URL` names a server;
//! - [`backend_tests!`] runs one async test function against every backend;
//! - [`TestTokens`] mints access tokens for a service under test, so a
//!   service's suite needs no auth service;
//! - [`Client`] is a reqwest client with the base URL of the app under test;
//! - [`nats`] names the test NATS server and makes KV buckets on it;
//! - [`redis`] names the test Redis and runs throwaway `redis-server`s;
//! - [`replica`]: the shared streaming replica and throwaway ones a test may
//!   stop, restart or pause;
//! - [`logs`] captures the JSON log lines an app writes;
//! - [`serve`] runs a throwaway router on a loopback port.

pub mod logs;
pub mod nats;
pub mod redis;
pub mod serve;

use std::sync::Arc;

use jsonwebtoken::jwk::JwkSet;
use zocalo_http::auth::{Claims, KeySource, TokenSigner, TokenVerifier};

pub mod replica;

pub const ISSUER: &str = "zocalo-test";
pub const AUDIENCE: &str = "zocalo-api";

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that lives as long as the test holds it: the SQLite directory
/// is removed, the PostgreSQL database dropped.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.postgres.take() {
            drop_postgres_database(&admin_url, &name);
        }
    }
}

/// Drop database `name` on the server at `admin_url`, from a `Drop` impl;
/// best effort.
pub fn drop_postgres_database(admin_url: &str, name: &str) {
    let (admin_url, name) = (admin_url.to_owned(), name.to_owned());
    clean_up_in_drop(async move {
        let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .ok()?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .ok()
    });
}

/// Run `cleanup` to completion from a `Drop` impl. The test's runtime
/// cannot be blocked on there, so a short-lived thread with a runtime of
/// its own runs it; failures are ignored, as cleanup is best effort.
pub fn clean_up_in_drop<T: Send + 'static>(
    cleanup: impl Future<Output = Option<T>> + Send + 'static,
) {
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(cleanup)
    });
    let _ = thread.join();
}

/// Send `request` and read the body of its answer as text, whatever the
/// status: for tests that judge the body.
pub async fn text_of(request: reqwest::RequestBuilder) -> String {
    request.send().await.unwrap().text().await.unwrap()
}

/// `ZOCALO_TEST_POSTGRES_URL`, e.g. `postgres://postgres@127.0.0.1:5432/postgres`.
pub fn postgres_url() -> Option<String> {
    std::env::var("ZOCALO_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A fresh, empty database for `backend`; `None` when PostgreSQL is asked
/// for but not configured.
pub async fn database(backend: Backend) -> Option<TestDatabase> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temporary directory");
            let url = format!("sqlite://{}", dir.path().join("test.db").display());
            Some(TestDatabase {
                url,
                _dir: Some(dir),
                postgres: None,
            })
        }
        Backend::Postgres => {
            let admin_url = postgres_url()?;
            let name = format!("zt_{}", uuid::Uuid::new_v4().simple());
            let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
                .await
                .expect("ZOCALO_TEST_POSTGRES_URL must name a reachable server");
            tokio::spawn(connection);
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create test database");
            Some(TestDatabase {
                url: with_database(&admin_url, &name),
                _dir: None,
                postgres: Some((admin_url, name)),
            })
        }
    }
}

impl TestDatabase {
    /// This test's PostgreSQL database on another server of the same
    /// cluster (a replica: `postgres://…@host:port/any`); `None` for SQLite.
    pub fn on(&self, server: &str) -> Option<String> {
        let (_, name) = self.postgres.as_ref()?;
        Some(with_database(server, name))
    }
}

/// Replace the database name in a `postgres://…/db?params` URL.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|i| start + i))
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if !query.is_empty() {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Run each listed `async fn name(backend: Backend)` once per backend, as
/// `sqlite::name` and `postgres::name`. The PostgreSQL variants report and
/// return when `ZOCALO_TEST_POSTGRES_URL` is unset (CI always sets it).
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::postgres_url().is_none() {
                        eprintln!("ZOCALO_TEST_POSTGRES_URL is unset: PostgreSQL variant not run");
                        return;
                    }
                    super::$name($crate::Backend::Postgres).await
                }
            )*
        }
    };
}

/// Mints access tokens the way the auth service does, with a key of its own.
pub struct TestTokens {
    signer: TokenSigner,
}

impl Default for TestTokens {
    fn default() -> Self {
        Self::new()
    }
}

impl TestTokens {
    pub fn new() -> Self {
        Self {
            signer: TokenSigner::generate("test-key").0,
        }
    }

    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.signer.jwk().clone()],
        }
    }

    /// A verifier that trusts exactly these tokens.
    pub fn verifier(&self) -> Arc<TokenVerifier> {
        TokenVerifier::new(KeySource::Static(self.jwks()), ISSUER, AUDIENCE)
    }

    /// A token for `subject` with `roles`, valid for 15 minutes.
    pub fn token(&self, subject: &str, roles: &[&str]) -> String {
        self.token_with(subject, roles, AUDIENCE, 900)
    }

    pub fn token_with(&self, subject: &str, roles: &[&str], audience: &str, ttl: i64) -> String {
        self.sign(subject, roles, None, audience, ttl)
    }

    /// A token for `subject` whose `email` claim is `email`, as the auth
    /// service issues to users.
    pub fn token_with_email(&self, subject: &str, roles: &[&str], email: &str) -> String {
        self.sign(subject, roles, Some(email), AUDIENCE, 900)
    }

    fn sign(
        &self,
        subject: &str,
        roles: &[&str],
        email: Option<&str>,
        audience: &str,
        ttl: i64,
    ) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: subject.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            name: Some(format!("Test {subject}")),
            email: email.map(str::to_owned),
            iss: ISSUER.into(),
            aud: audience.into(),
            iat: now,
            exp: now + ttl,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        self.signer.sign(&claims).expect("signing a test token")
    }
}

/// A client for one app under test.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

impl Client {
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path))
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path))
    }

    pub fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.put(self.url(path))
    }

    pub fn patch(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.patch(self.url(path))
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.delete(self.url(path))
    }
}

/// Assert that a response is a problem with `status`; returns its body.
pub async fn expect_problem(response: reqwest::Response, status: u16) -> serde_json::Value {
    let got = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    assert_eq!(got, status, "unexpected status, body: {body}");
    assert_eq!(
        content_type, "application/problem+json",
        "errors must be problem+json, body: {body}"
    );
    assert_eq!(body["status"], status, "problem body names its status");
    body
}

/// A POST with malformed JSON gets 400 and one whose body is not declared
/// as JSON gets 415, both as problem+json.
pub async fn assert_rejects_malformed_json(client: &Client, path: &str, token: Option<&str>) {
    let authorized = |request: reqwest::RequestBuilder| match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let malformed = authorized(client.post(path))
        .header("content-type", "application/json")
        .body("{\"title\": \"x\",")
        .send()
        .await
        .expect("request");
    expect_problem(malformed, 400).await;
    let undeclared = authorized(client.post(path))
        .body("title=x")
        .send()
        .await
        .expect("request");
    expect_problem(undeclared, 415).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://postgres@localhost", "x"),
            "postgres://postgres@localhost/x"
        );
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
