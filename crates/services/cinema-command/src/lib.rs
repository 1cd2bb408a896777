//! The cinema chain's command side (requirements C1, C2, C4, C5): every
//! write under `/api/cinema` — chains, cinemas and their managers, rooms
//! with their seat maps, movies, showtimes, seat purchases and refunds.
//!
//! Each state change is saved with its domain events in one transaction:
//! the events go to an append-only event log (served page by page on
//! `/internal/events` for the query side's replays) and to the outbox (for
//! the bus). Seats are held, charged through `zocalo-payments` and sold
//! under database constraints, so a seat is never sold twice. Reads are the
//! query side's. It depends on the platform crates and `contracts` only.

mod app;
pub mod domain;
mod error;
mod routes;
pub mod store;

pub use app::{Application, Settings, Worker, sweep_once};
pub use error::CinemaError;
