//! The orders service's own suites: its API (without a catalog, orders stay
//! pending — the saga is proven in the whole book-store tests) and the
//! conformance suite of its store adapters.

mod api;
mod store;
