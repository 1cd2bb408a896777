//! How Zócalo services tell the outside world that something happened.
//!
//! - [`mail`]: a pluggable email sender ([`Mailer`]) chosen by a URL —
//!   `log:` writes a log line, `file:///dir` drops each message as an `.eml`
//!   file, `smtp://host:port` / `smtps://host:port` hand it to an SMTP
//!   server — with attachments (a ticket PDF);
//! - [`webhook`]: outbound webhooks signed with HMAC-SHA256 over a timestamp
//!   and the body (`Zocalo-Signature: t=…,v1=…`, so receivers can refuse
//!   forgeries and replays), delivered with a timeout by a `zocalo-bus` job
//!   handler that retries with exponential backoff and dead-letters after
//!   the last attempt, recording every attempt through a
//!   [`webhook::WebhookRegistry`] that the service implements on its store;
//! - [`egress`]: which addresses webhooks may reach (public ones, unless the
//!   operator allows private ones), against server-side request forgery.
//!
//! Webhooks live here rather than in `zocalo-http` because they ride on the
//! job queue: `zocalo-bus` depends (through `zocalo-store`) on `zocalo-http`,
//! so the HTTP crate cannot depend on the bus.
//!
//! Of our crates it depends on `zocalo-bus` only.

pub mod egress;
pub mod mail;
pub mod webhook;

pub use mail::{Attachment, Email, MailError, Mailer, mailer};
pub use webhook::{WebhookRegistry, WebhookSender, WebhookSettings};
