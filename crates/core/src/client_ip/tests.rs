#![allow(clippy::type_complexity)]

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use proptest::prelude::*;

use super::*;

fn conn(peer: &str, tls: bool) -> ConnectionInfo {
    ConnectionInfo::new(peer.parse::<SocketAddr>().unwrap(), tls)
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    map
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn x_forwarded_for_table() {
    let proxies = TrustedProxies::new(["10.0.0.0/8", "::1"]).unwrap();
    // (peer, headers, expected client, expected scheme)
    let cases: &[(&str, &[(&str, &str)], &str, RequestScheme)] = &[
        // Untrusted peer: headers ignored.
        (
            "203.0.113.1:1",
            &[
                ("x-forwarded-for", "1.1.1.1"),
                ("x-forwarded-proto", "https"),
            ],
            "203.0.113.1",
            RequestScheme::Http,
        ),
        // Trusted peer, one hop.
        (
            "10.0.0.1:1",
            &[
                ("x-forwarded-for", "198.51.100.2"),
                ("x-forwarded-proto", "https"),
            ],
            "198.51.100.2",
            RequestScheme::Https,
        ),
        // Spoofed leftmost entry never wins.
        (
            "10.0.0.1:1",
            &[("x-forwarded-for", "6.6.6.6, 198.51.100.2")],
            "198.51.100.2",
            RequestScheme::Http,
        ),
        // Chains of trusted proxies are skipped.
        (
            "10.0.0.1:1",
            &[(
                "x-forwarded-for",
                "6.6.6.6, 198.51.100.2, 10.1.1.1, 10.2.2.2",
            )],
            "198.51.100.2",
            RequestScheme::Http,
        ),
        // Several header lines are one list.
        (
            "10.0.0.1:1",
            &[
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-for", "198.51.100.2"),
            ],
            "198.51.100.2",
            RequestScheme::Http,
        ),
        // Malformed entry stops the walk at the last trusted hop.
        (
            "10.0.0.1:1",
            &[("x-forwarded-for", "6.6.6.6, garbage, 10.1.1.1")],
            "10.1.1.1",
            RequestScheme::Http,
        ),
        (
            "10.0.0.1:1",
            &[("x-forwarded-for", "6.6.6.6,,")],
            "10.0.0.1",
            RequestScheme::Http,
        ),
        // All trusted: the leftmost trusted address.
        (
            "10.0.0.1:1",
            &[("x-forwarded-for", "10.9.9.9, 10.1.1.1")],
            "10.9.9.9",
            RequestScheme::Http,
        ),
        // Ports and IPv6.
        (
            "10.0.0.1:1",
            &[("x-forwarded-for", "198.51.100.2:5555")],
            "198.51.100.2",
            RequestScheme::Http,
        ),
        (
            "[::1]:1",
            &[("x-forwarded-for", "2001:db8::1")],
            "2001:db8::1",
            RequestScheme::Http,
        ),
        (
            "[::1]:1",
            &[("x-forwarded-for", "[2001:db8::1]:443")],
            "2001:db8::1",
            RequestScheme::Http,
        ),
        // IPv4-mapped peer is compared as IPv4.
        (
            "[::ffff:10.0.0.1]:1",
            &[("x-forwarded-for", "198.51.100.2")],
            "198.51.100.2",
            RequestScheme::Http,
        ),
        // Rightmost proto wins; garbage proto is plain HTTP (fail closed).
        (
            "10.0.0.1:1",
            &[("x-forwarded-proto", "https, http")],
            "10.0.0.1",
            RequestScheme::Http,
        ),
        (
            "10.0.0.1:1",
            &[
                ("x-forwarded-proto", "http"),
                ("x-forwarded-proto", "https"),
            ],
            "10.0.0.1",
            RequestScheme::Https,
        ),
        (
            "10.0.0.1:1",
            &[("x-forwarded-proto", "ftp")],
            "10.0.0.1",
            RequestScheme::Http,
        ),
    ];
    for (peer, hdrs, want_ip, want_scheme) in cases {
        let (got_ip, got_scheme) = proxies.resolve(&conn(peer, false), &headers(hdrs));
        assert_eq!(got_ip.0, ip(want_ip), "{peer} {hdrs:?}");
        assert_eq!(got_scheme, *want_scheme, "{peer} {hdrs:?}");
    }
}

#[test]
fn tls_socket_without_forwarded_proto_is_https() {
    let proxies = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
    let (_, scheme) = proxies.resolve(&conn("10.0.0.1:1", true), &HeaderMap::new());
    assert_eq!(scheme, RequestScheme::Https);
    let (_, scheme) = TrustedProxies::none().resolve(&conn("10.0.0.1:1", true), &HeaderMap::new());
    assert_eq!(scheme, RequestScheme::Https);
}

#[test]
fn forwarded_table() {
    let proxies = TrustedProxies::new(["10.0.0.0/8"])
        .unwrap()
        .with_header(ForwardedHeader::Forwarded);
    let cases: &[(&[(&str, &str)], &str, RequestScheme)] = &[
        (
            &[("forwarded", "for=198.51.100.2;proto=https")],
            "198.51.100.2",
            RequestScheme::Https,
        ),
        (
            &[("forwarded", "for=6.6.6.6, for=198.51.100.2;proto=http")],
            "198.51.100.2",
            RequestScheme::Http,
        ),
        (
            &[("forwarded", r#"for="[2001:db8::7]:4711";proto=https"#)],
            "2001:db8::7",
            RequestScheme::Https,
        ),
        (
            &[("forwarded", "for=unknown")],
            "10.0.0.1",
            RequestScheme::Http,
        ),
        (
            &[("forwarded", "for=_hidden, for=10.3.3.3")],
            "10.3.3.3",
            RequestScheme::Http,
        ),
        (
            &[("forwarded", "for=198.51.100.2;for=6.6.6.6")],
            "10.0.0.1",
            RequestScheme::Http,
        ),
        (
            &[("forwarded", r#"for="198.51.100.2;by=x""#)],
            "10.0.0.1",
            RequestScheme::Http,
        ),
        (
            &[("forwarded", "for=2001:db8::1")],
            "10.0.0.1",
            RequestScheme::Http,
        ),
        // X-Forwarded-For is not read in Forwarded mode.
        (
            &[("x-forwarded-for", "198.51.100.2")],
            "10.0.0.1",
            RequestScheme::Http,
        ),
    ];
    for (hdrs, want_ip, want_scheme) in cases {
        let (got_ip, got_scheme) = proxies.resolve(&conn("10.0.0.1:1", false), &headers(hdrs));
        assert_eq!(got_ip.0, ip(want_ip), "{hdrs:?}");
        assert_eq!(got_scheme, *want_scheme, "{hdrs:?}");
    }
}

#[test]
fn overlong_chains_stop_at_the_bound() {
    let proxies = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
    let chain = std::iter::repeat_n("10.1.1.1", 100)
        .collect::<Vec<_>>()
        .join(",");
    let value = format!("6.6.6.6,{chain}");
    let (got, _) = proxies.resolve(
        &conn("10.0.0.1:1", false),
        &headers(&[("x-forwarded-for", &value)]),
    );
    assert_eq!(got.0, ip("10.1.1.1"));
}

#[test]
fn invalid_proxy_entries_are_errors() {
    assert!(TrustedProxies::new(["10.0.0.0/33"]).is_err());
    assert!(TrustedProxies::new(["proxy.local"]).is_err());
    assert!(
        TrustedProxies::new(["10.0.0.1/8"])
            .unwrap()
            .is_trusted(ip("10.200.0.1"))
    );
}

proptest! {
    /// Whatever a client prepends, the resolved address is the entry the trusted proxy
    /// appended (or the proxy itself), never a client-chosen one further left.
    #[test]
    fn spoofed_prefix_never_wins(prefix in proptest::collection::vec("[0-9a-f:., \\[\\]_a-z]{0,24}", 0..8), real in any::<[u8; 4]>()) {
        let proxies = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
        let real = std::net::Ipv4Addr::from(real);
        prop_assume!(!proxies.is_trusted(IpAddr::V4(real)));
        let mut value = prefix.join(",");
        if !value.is_empty() { value.push(','); }
        value.push_str(&real.to_string());
        let mut map = HeaderMap::new();
        if let Ok(v) = value.parse() { map.insert("x-forwarded-for", v); } else { return Ok(()); }
        let (got, _) = proxies.resolve(&conn("10.0.0.1:1", false), &map);
        prop_assert_eq!(got.0, IpAddr::V4(real));
    }

    /// Arbitrary header bytes never panic, and the result is the peer or a parsed entry.
    #[test]
    fn arbitrary_headers_never_panic(xff in "\\PC{0,200}", fwd in "\\PC{0,200}", proto in "\\PC{0,20}") {
        for mode in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded] {
            let proxies = TrustedProxies::new(["0.0.0.0/0", "::/0"]).unwrap().with_header(mode);
            let mut map = HeaderMap::new();
            for (name, value) in [("x-forwarded-for", &xff), ("forwarded", &fwd), ("x-forwarded-proto", &proto)] {
                if let Ok(v) = http::HeaderValue::from_str(value) { map.insert(name, v); }
            }
            let _ = proxies.resolve(&conn("10.0.0.1:1", false), &map);
        }
    }

    /// An untrusted peer is always the client.
    #[test]
    fn untrusted_peer_is_the_client(a in any::<[u8; 4]>(), xff in "[0-9., ]{0,60}") {
        let proxies = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
        let peer = std::net::Ipv4Addr::from(a);
        prop_assume!(!proxies.is_trusted(IpAddr::V4(peer)));
        let mut map = HeaderMap::new();
        if let Ok(v) = xff.parse() { map.insert("x-forwarded-for", v); }
        let (got, _) = proxies.resolve(&ConnectionInfo::new(SocketAddr::new(IpAddr::V4(peer), 1), false), &map);
        prop_assert_eq!(got.0, IpAddr::V4(peer));
    }
}
