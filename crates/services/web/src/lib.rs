//! The web front end (requirements P19, A1): server-rendered pages for every
//! application, served by the gateway at `/`.
//!
//! Pages are askama templates compiled into the binary and work without
//! JavaScript; a little plain JavaScript enhances them (live order status,
//! preview). The service owns no data: it calls the public APIs through the
//! gateway like any other client, with the signed-in user's bearer token,
//! which it keeps (with the refresh token) in HttpOnly cookies. Every form
//! carries a signed double-submit CSRF token. Assets are served with
//! content-hashed names and long cache lifetimes.
//!
//! It depends on the platform crates (`config`, `telemetry`, `http`) only.

mod app;
mod assets;
mod csrf;
mod download;
mod error;
mod gateway;
mod models;
mod nav;
mod routes;
mod session;
mod views;

pub use app::{Application, Settings};
pub use assets::ASSETS;
pub use csrf::Csrf;
