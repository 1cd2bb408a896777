//! The transactional outbox and the simulated card processor's ledger.
pub fn migration() -> String {
    format!(
        "{}\n{}",
        zocalo_bus::outbox::POSTGRES_TABLE,
        zocalo_payments::ledger::POSTGRES_TABLE
    )
}
