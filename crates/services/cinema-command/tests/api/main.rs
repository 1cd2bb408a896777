//! The cinema command side's suites: its API (roles, overlaps, problems),
//! seat purchases under concurrency, and the conformance suite of its store
//! adapters — each on SQLite, and on PostgreSQL when
//! `ZOCALO_TEST_POSTGRES_URL` is set.

mod api;
mod helpers;
mod purchases;
mod store;
