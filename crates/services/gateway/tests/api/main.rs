//! The gateway's integration suite: a real gateway in front of real upstream
//! servers on loopback, driven over HTTP (see `support`).

mod admin;
mod auth;
mod balancing;
mod cache;
mod failures;
mod headers;
mod limits;
mod live;
mod request_id;
mod routing;
mod streaming;
mod support;
mod trace_context;
mod weights;
