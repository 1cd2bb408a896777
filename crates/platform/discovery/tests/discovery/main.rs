//! Discovery sources against real servers: the NATS variants use the server
//! named by `ZOCALO_TEST_NATS_URL` (each test in its own bucket), and the
//! restart test runs a throwaway `nats-server` of its own.

mod nats;
mod restart;
mod sources;
mod support;
