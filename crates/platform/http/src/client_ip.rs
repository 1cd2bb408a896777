//! The caller's IP address.
//!
//! Behind the gateway every request comes from the gateway's address, which
//! appends the real client to `X-Forwarded-For`. A service believes that
//! header only from a trusted peer: loopback (the embedded stack) or an
//! address listed in its settings. The gateway itself trusts nobody by
//! default, so a client cannot choose its own rate-limit key.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use axum::http::request::Parts;

pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The peer address of the connection.
pub fn peer_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}

/// The client address: the last `X-Forwarded-For` hop when the peer is
/// trusted, else the peer itself.
pub fn client_ip(parts: &Parts, trust_loopback: bool, trusted: &[IpAddr]) -> Option<IpAddr> {
    let peer = peer_ip(parts)?;
    Some(forwarded_client(
        &parts.headers,
        peer,
        trust_loopback,
        trusted,
    ))
}

/// [`client_ip`] for a caller that has the headers and the peer apart
/// (middleware holding the whole request).
pub fn forwarded_client(
    headers: &HeaderMap,
    peer: IpAddr,
    trust_loopback: bool,
    trusted: &[IpAddr],
) -> IpAddr {
    let peer_trusted = (trust_loopback && peer.is_loopback()) || trusted.contains(&peer);
    if !peer_trusted {
        return peer;
    }
    let forwarded = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
        .next_back();
    forwarded.unwrap_or(peer)
}
