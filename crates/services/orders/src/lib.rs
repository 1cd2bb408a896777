//! Book orders (requirements B4–B8): a buyer orders books from the catalog,
//! the order is paid with a simulated card processor and shipped with a
//! simulated carrier, as a saga of idempotent steps run by jobs.
//!
//! State changes and the messages they cause (events for other services,
//! jobs for our own workers) are written in one transaction to an outbox,
//! which a relay hands to the bus: a crash never loses one without the other.
//! It depends on the platform crates and `contracts` only; it reaches the
//! catalog over HTTP.

mod app;
pub mod catalog;
pub mod domain;
mod routes;
mod saga;
pub mod store;

/// The card processor and ledger, shared with every service that sells.
pub use zocalo_payments as payment;

pub use app::{Application, Clients, Settings, Worker};
pub use zocalo_http::service_auth::ServiceAuth;
