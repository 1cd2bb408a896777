//! The authorization server: accounts, roles, the OAuth2 token endpoint
//! (password, refresh_token and client_credentials grants), rotating refresh
//! tokens with reuse detection, revocation, and the signing keys published as
//! a JWKS for everyone else to verify access tokens offline.
//!
//! It depends on the platform crates only; nobody depends on it — other
//! services meet it through HTTP (`/.well-known/jwks.json`, `/auth/token`).

mod app;
pub mod domain;
mod keys;
mod passwords;
mod routes;
pub mod store;

pub use app::{AdminBootstrap, Application, ClientSeed, Settings};
