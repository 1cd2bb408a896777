//! The catalog service's API and store suites: one test binary, the real app
//! on port 0, a fresh database per test, tokens minted by the test kit.
//! Every test runs on SQLite, and on PostgreSQL when
//! `ZOCALO_TEST_POSTGRES_URL` is set.

mod api;
mod helpers;
mod reservations;
mod store;
