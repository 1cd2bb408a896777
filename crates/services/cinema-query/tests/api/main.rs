//! The cinema query service's tests: the projection conformance suite run
//! on SQLite and PostgreSQL, the projector on the real bus, the rebuild
//! from an event log over HTTP, and the HTTP API.

mod api;
mod bus;
mod projection;
mod world;
