//! The auth service's API and store suites: one test binary, real servers on
//! port 0, a fresh database per test, SQLite always and PostgreSQL when
//! `ZOCALO_TEST_POSTGRES_URL` is set.

mod api;
mod helpers;
mod shared_limits;
mod store;
