//! The reviews service's API and store suites: one test binary, the real app
//! on port 0, a fresh database per test, tokens minted by the test kit.

mod api;
mod helpers;
mod idempotency;
mod replica;
mod store;
