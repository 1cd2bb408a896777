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

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, value.parse().unwrap());
        headers
    }

    #[test]
    fn the_header_is_believed_only_from_a_trusted_peer() {
        let headers = forwarded("6.6.6.6, 203.0.113.9");
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        // The last hop, added by the trusted proxy, is the client.
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(forwarded_client(&headers, loopback, true, &[]), client);
        assert_eq!(
            forwarded_client(&headers, stranger, false, &[stranger]),
            client
        );
        // Anyone else is who they are, whatever they claim.
        assert_eq!(forwarded_client(&headers, stranger, true, &[]), stranger);
        assert_eq!(forwarded_client(&headers, loopback, false, &[]), loopback);
        // A trusted peer without the header is the client itself.
        assert_eq!(
            forwarded_client(&HeaderMap::new(), loopback, true, &[]),
            loopback
        );
    }
}
