//! Printable documents rendered to PDF bytes, as pure functions: no I/O, no
//! clock, the same input gives the same bytes.
//!
//! [`render_tickets`] lays out admission tickets, one A6 page each: a
//! heading, a grid of labelled values, the verification code in large
//! monospaced type and the same code as a QR code. What the labels say is
//! the caller's business (the cinema fills in movie, room, seat and price),
//! so this crate knows nothing about any service.
//!
//! Text is set in the standard PDF fonts (Helvetica, Courier), which every
//! reader provides, so no font is embedded and a ticket is a few kilobytes;
//! the price is that only WinAnsi characters (Western European scripts)
//! print, others show as `?`.
//!
//! It depends on no crate of ours.

mod text;
mod tickets;

pub use tickets::{Field, RenderError, Ticket, TicketBook, render_tickets};
