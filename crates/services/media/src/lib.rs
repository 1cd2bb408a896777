//! Video tasks (requirements V1–V4, P13): a signed-in user uploads a video,
//! a worker converts it with the system ffmpeg (16:9, at most 20 s, a logo
//! card at each end, H.264/AAC MP4), and the user follows its status and
//! downloads the original or the result. Each user sees only their own
//! tasks.
//!
//! Files live in object storage (`zocalo-objects`: a local directory or
//! S3), rows in the service's own database (SQLite or PostgreSQL), and the
//! processing job goes through the outbox to the bus (`zocalo-bus`), so an
//! accepted upload is processed even if the process that accepted it dies.
//! It depends on the platform crates and `contracts` only.

mod app;
mod changes;
pub mod domain;
mod error;
pub mod ffmpeg;
pub mod gc;
mod processing;
mod routes;
pub mod store;
mod upload;

pub use app::{Application, Settings, Worker};
pub use error::MediaError;
