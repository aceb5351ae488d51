//! Who the client is (API.md "Conventions", `server.trusted_proxies`): the TCP peer, or —
//! only when the peer is a trusted proxy — the address that proxy saw, from
//! `X-Forwarded-For`. Pure functions, so every rule is tested here.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The client address of a request from `peer`. When `peer` is in `trusted`, it is the
/// rightmost `X-Forwarded-For` address that is not itself trusted (the leftmost when all
/// are): addresses left of it were written by the client and prove nothing. A header that
/// cannot be read up to that address counts as absent, and the peer is the client.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    if !is_trusted(peer, trusted) {
        return Some(peer);
    }
    Some(forwarded_client(headers, trusted).unwrap_or(peer))
}

/// Whether `ip` (canonical: see [`IpAddr::to_canonical`]) is in one of the `trusted` networks.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// Walks `X-Forwarded-For` (all its lines, in order) from the right.
fn forwarded_client(headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let mut lines = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
        lines.push(value.to_str().ok()?);
    }
    if lines.is_empty() {
        return None;
    }
    let mut leftmost = None;
    for hop in lines.iter().rev().flat_map(|line| line.rsplit(',')) {
        let ip = parse_hop(hop)?;
        if !is_trusted(ip, trusted) {
            return Some(ip);
        }
        leftmost = Some(ip);
    }
    leftmost
}

/// One hop: an address, optionally with a port as some proxies write it
/// (`192.0.2.1:1234`, `[2001:db8::1]:1234`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|addr| addr.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http::HeaderValue;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_str(line).unwrap());
        }
        headers
    }

    fn client(peer: &str, lines: &[&str], trusted: &[&str]) -> Option<IpAddr> {
        client_ip(Some(ip(peer)), &xff(lines), &nets(trusted))
    }

    #[test]
    fn the_peer_is_the_client_without_trusted_proxies() {
        assert_eq!(
            client("192.0.2.1", &["203.0.113.9"], &[]),
            Some(ip("192.0.2.1"))
        );
        assert_eq!(
            client("192.0.2.1", &["203.0.113.9"], &["10.0.0.0/8"]),
            Some(ip("192.0.2.1"))
        );
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_the_client() {
        assert_eq!(
            client("10.0.0.1", &[], &["10.0.0.0/8"]),
            Some(ip("10.0.0.1"))
        );
    }

    #[test]
    fn the_rightmost_untrusted_address_is_the_client() {
        let trusted = ["10.0.0.0/8", "127.0.0.1/32"];
        assert_eq!(
            client("127.0.0.1", &["203.0.113.9"], &trusted),
            Some(ip("203.0.113.9"))
        );
        // The client prepended a lie; the proxies appended the truth.
        assert_eq!(
            client(
                "127.0.0.1",
                &["198.51.100.1, 203.0.113.9, 10.1.2.3"],
                &trusted
            ),
            Some(ip("203.0.113.9"))
        );
        // Several header lines read as one list, in order.
        assert_eq!(
            client(
                "127.0.0.1",
                &["198.51.100.1", "203.0.113.9 ,10.1.2.3"],
                &trusted
            ),
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn when_every_hop_is_trusted_the_leftmost_is_the_client() {
        assert_eq!(
            client(
                "127.0.0.1",
                &["10.0.0.5, 10.0.0.6"],
                &["10.0.0.0/8", "127.0.0.1/32"]
            ),
            Some(ip("10.0.0.5"))
        );
    }

    #[test]
    fn a_malformed_header_falls_back_to_the_peer() {
        let trusted = ["127.0.0.1/32"];
        for lines in [
            &["not-an-ip"][..],
            &[""],
            &["203.0.113.9,"],
            &["203.0.113.9, , 127.0.0.1"],
            &["unknown"],
            &["203.0.113.9", "garbage"],
        ] {
            assert_eq!(
                client("127.0.0.1", lines, &trusted),
                Some(ip("127.0.0.1")),
                "{lines:?}"
            );
        }
        // Garbage left of the client's address was written by the client: it is ignored.
        assert_eq!(
            client("127.0.0.1", &["garbage, 203.0.113.9"], &trusted),
            Some(ip("203.0.113.9"))
        );
        let mut binary = HeaderMap::new();
        binary.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"203.0.113.9\xff").unwrap(),
        );
        assert_eq!(
            client_ip(Some(ip("127.0.0.1")), &binary, &nets(&trusted)),
            Some(ip("127.0.0.1"))
        );
    }

    #[test]
    fn ports_and_ipv6_are_understood() {
        let trusted = ["127.0.0.1/32", "::1/128"];
        assert_eq!(
            client("::1", &["2001:db8::7"], &trusted),
            Some(ip("2001:db8::7"))
        );
        assert_eq!(
            client("127.0.0.1", &["[2001:db8::7]:4711"], &trusted),
            Some(ip("2001:db8::7"))
        );
        assert_eq!(
            client("127.0.0.1", &["203.0.113.9:4711"], &trusted),
            Some(ip("203.0.113.9"))
        );
        // A dual-stack listener sees IPv4 peers as mapped addresses.
        assert_eq!(
            client("::ffff:127.0.0.1", &["::ffff:203.0.113.9"], &trusted),
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn without_a_peer_there_is_no_client() {
        assert_eq!(
            client_ip(None, &xff(&["203.0.113.9"]), &nets(&["0.0.0.0/0"])),
            None
        );
    }
}
