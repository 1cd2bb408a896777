//! The media service's tests: its HTTP API and its workers in this process,
//! against real SQLite/PostgreSQL, object storage on disk, and the system
//! ffmpeg.

mod api;
mod concurrency;
mod processing;
mod support;
