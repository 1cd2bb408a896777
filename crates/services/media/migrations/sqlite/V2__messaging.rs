//! The transactional outbox and the inbox of processed messages.
pub fn migration() -> String {
    format!(
        "{}\n{}",
        zocalo_bus::outbox::SQLITE_TABLE,
        zocalo_bus::inbox::SQLITE_TABLE
    )
}
