//! NATS outage (placeholder).
