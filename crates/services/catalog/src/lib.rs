//! The second-hand book store's catalog (requirements B1–B3): any signed-in
//! user lists books for sale; anyone browses, searches and reads listings
//! without an account (public reads are cacheable: `ETag`, `Cache-Control`,
//! 304). Stock changes only through reservations that the orders service
//! makes over the internal API (`/internal/…`, service tokens only, not
//! routed by the gateway): reserve with an expiry, then commit or release;
//! return a committed sale that was undone.
//!
//! It depends on the platform crates only; callers are authenticated by
//! verifying the auth service's access tokens against its JWKS.

mod app;
pub mod domain;
mod routes;
pub mod store;

pub use app::{Application, Settings};
