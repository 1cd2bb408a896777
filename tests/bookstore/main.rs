//! The book store end to end, in one process: the real catalog, two orders
//! instances and two workers sharing one database and one bus, driven over
//! HTTP. These prove the invariants of the purchase saga: no oversold stock,
//! one charge per paid order, compensation on decline, expiry and
//! cancellation of a paid order (refund and restock), and
//! recovery from crashed workers and relays, and orders completing while
//! one of two catalog instances is down.

mod balancing;
mod harness;
mod saga;
