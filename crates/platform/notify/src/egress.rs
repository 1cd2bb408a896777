//! Where outbound webhooks may connect: public addresses only, unless the
//! operator allows private ones.
//!
//! A webhook URL is chosen by a user (a cinema manager), and the request is
//! sent from inside the platform's network. Without a check, a URL such as
//! `http://169.254.169.254/…` (a cloud's instance metadata), `http://10.…`
//! or `http://localhost:8081/…` would make the platform call its own
//! internal services on that user's behalf (server-side request forgery).
//!
//! Two places enforce it, because either alone can be bypassed:
//! - an address written in the URL is checked when the webhook is
//!   registered and again before each delivery ([`refused_literal`]);
//! - a host name is resolved by [`PublicOnly`], the sender's DNS resolver,
//!   which drops every non-public address it gets back. The connection is
//!   made to the addresses it returns, so a name that resolves to a public
//!   address when registered and to a private one later (DNS rebinding)
//!   still cannot reach the private one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a target is refused, in the words the subscriber sees.
pub const PRIVATE_TARGET: &str = "the URL points at a private, loopback or link-local address; \
     webhooks go to public addresses only";

/// Whether `ip` is an address on the public internet: not loopback,
/// private, shared (carrier-grade NAT), link-local, unique-local,
/// multicast, documentation, benchmarking or unspecified.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    let shared = a == 100 && (64..128).contains(&b); // 100.64.0.0/10
    let benchmarking = a == 198 && (b == 18 || b == 19); // 198.18.0.0/15
    let this_network = a == 0; // 0.0.0.0/8
    let reserved = a >= 240; // 240.0.0.0/4 and broadcast
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_documentation()
        || shared
        || benchmarking
        || this_network
        || reserved)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let documentation = ip.segments()[0] == 0x2001 && ip.segments()[1] == 0x0db8;
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || ip.is_multicast()
        || documentation)
}

/// The address written in `url` itself, when it is refused: such URLs are
/// never resolved, so the resolver cannot catch them.
pub fn refused_literal(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    // IPv6 hosts come in brackets.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| !is_public(ip))
}

/// A DNS resolver that keeps public addresses only; a name with none left
/// fails to resolve, and the delivery fails with [`PRIVATE_TARGET`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public: Vec<SocketAddr> = resolved.filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{host}: {PRIVATE_TARGET}").into());
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(
                !is_public(private.parse().unwrap()),
                "{private} is not public"
            );
        }
        for public in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public} is public");
        }
    }

    #[test]
    fn addresses_written_in_the_url_are_checked_names_are_not() {
        let refused = |url: &str| refused_literal(&reqwest::Url::parse(url).unwrap());
        assert!(refused("http://127.0.0.1:8081/hook"));
        assert!(refused("http://[::1]/hook"));
        assert!(refused("https://169.254.169.254/latest/meta-data"));
        assert!(!refused("https://1.1.1.1/hook"));
        // A name is the resolver's business (it may change meanwhile).
        assert!(!refused("http://localhost/hook"));
    }

    #[tokio::test]
    async fn the_resolver_drops_private_answers() {
        let name: Name = "localhost".parse().unwrap();
        let error = match PublicOnly.resolve(name).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("private"), "{error}");
    }
}
