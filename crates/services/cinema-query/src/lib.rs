//! The cinema's query side (requirements C1, C2, C7): read models built
//! from the events `cinema-command` publishes, served over `GET` under
//! `/api/cinema/…`.
//!
//! The read models are denormalised JSON documents (one per chain, cinema,
//! room, movie, showtime, seat map and purchase) in PostgreSQL or SQLite.
//! A projector consumes the `cinema` topic of the bus as group
//! `cinema-query` and applies each event in one transaction; every
//! document keeps the versions it was built from, so duplicate and
//! out-of-order deliveries change nothing. [`rebuild`](rebuild::rebuild)
//! wipes the read models and replays the command side's event log.
//!
//! It depends on the platform crates and `contracts` only; it reaches the
//! command side over HTTP (the event log) and the bus (live events).

mod app;
pub mod documents;
mod error;
pub mod projection;
pub mod projector;
pub mod rebuild;
mod routes;
pub mod store;

pub use app::{Application, Clients, Settings, rebuild};
pub use error::QueryError;
pub use routes::row_label;
