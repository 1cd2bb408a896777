//! Camera and lens reviews (requirements R1–R9): editors publish reviews of
//! cameras and lenses; anyone reads, searches and compares them without an
//! account. Public reads are cacheable (`ETag`, `Cache-Control`, 304).
//!
//! It depends on the platform crates only; callers are authenticated by
//! verifying the auth service's access tokens against its JWKS.

mod app;
pub mod domain;
mod idempotency;
mod routes;
pub mod store;

pub use app::{Application, Settings};
