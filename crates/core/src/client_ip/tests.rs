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

fn maybe_ip(s: &str) -> Option<IpAddr> {
    (s != "unknown").then(|| ip(s))
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
        // A malformed entry where a trusted hop's should be leaves the client unknown.
        (
            "10.0.0.1:1",
            &[("x-forwarded-for", "6.6.6.6, garbage, 10.1.1.1")],
            "unknown",
            RequestScheme::Http,
        ),
        (
            "10.0.0.1:1",
            &[("x-forwarded-for", "6.6.6.6,,")],
            "unknown",
            RequestScheme::Http,
        ),
        // Garbage left of the first untrusted entry does not matter.
        (
            "10.0.0.1:1",
            &[("x-forwarded-for", "garbage, 198.51.100.2")],
            "198.51.100.2",
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
        assert_eq!(got_ip.map(|c| c.0), maybe_ip(want_ip), "{peer} {hdrs:?}");
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
            "unknown",
            RequestScheme::Http,
        ),
        (
            &[("forwarded", "for=_hidden, for=10.3.3.3")],
            "unknown",
            RequestScheme::Http,
        ),
        (
            &[("forwarded", "for=198.51.100.2;for=6.6.6.6")],
            "unknown",
            RequestScheme::Http,
        ),
        (
            &[("forwarded", r#"for="198.51.100.2;by=x""#)],
            "unknown",
            RequestScheme::Http,
        ),
        (
            &[("forwarded", "for=2001:db8::1")],
            "unknown",
            RequestScheme::Http,
        ),
        // An unbalanced quote from the client cannot swallow the proxy's element.
        (
            &[("forwarded", r#"for="6.6.6.6, for=198.51.100.2;proto=https"#)],
            "198.51.100.2",
            RequestScheme::Https,
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
        assert_eq!(got_ip.map(|c| c.0), maybe_ip(want_ip), "{hdrs:?}");
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
    assert_eq!(got, None);
    // Within the bound, the chain is walked.
    let short = format!(
        "6.6.6.6,{}",
        vec!["10.1.1.1"; MAX_FORWARDED_ENTRIES - 1].join(",")
    );
    let (got, _) = proxies.resolve(
        &conn("10.0.0.1:1", false),
        &headers(&[("x-forwarded-for", &short)]),
    );
    assert_eq!(got.map(|c| c.0), Some(ip("6.6.6.6")));
}

#[test]
fn hostile_bytes_left_of_the_proxy_entry_do_not_hide_it() {
    let proxies = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
    // Non-UTF-8 bytes and huge padding on the same line as the proxy's appended entry.
    let mut raw = b"\xff\xfe, ".to_vec();
    raw.extend(std::iter::repeat_n(b'a', 100_000));
    raw.extend_from_slice(b", 198.51.100.2");
    let mut map = HeaderMap::new();
    map.insert(
        "x-forwarded-for",
        http::HeaderValue::from_bytes(&raw).unwrap(),
    );
    let (got, _) = proxies.resolve(&conn("10.0.0.1:1", false), &map);
    assert_eq!(got.map(|c| c.0), Some(ip("198.51.100.2")));
}

#[test]
fn posture_of_proxy_lists() {
    use crate::posture::{Posture, Profile};
    let mut p = Posture::new(Profile::Production, "t");
    TrustedProxies::new(["0.0.0.0/0", "::/0", "10.0.0.0/8", "2000::/3"])
        .unwrap()
        .check(&mut p);
    let codes: Vec<_> = p.findings().iter().map(|f| f.code()).collect();
    assert_eq!(
        codes,
        [
            "proxy-trusts-everyone",
            "proxy-trusts-everyone",
            "proxy-block-wide"
        ]
    );
}

#[test]
fn a_checked_layer_keeps_its_warnings_and_profile() {
    use crate::ClientIpLayer;
    use crate::posture::Profile;
    let wide = TrustedProxies::new(["10.0.0.0/4"]).unwrap();
    let layer = ClientIpLayer::checked(wide.clone(), Profile::Production).unwrap();
    let codes: Vec<_> = layer.findings().iter().map(|f| f.code()).collect();
    assert_eq!(codes, ["proxy-block-wide"]);
    assert_eq!(layer.profile(), Some(Profile::Production));
    let unchecked = ClientIpLayer::new(wide);
    assert!(unchecked.findings().is_empty());
    assert_eq!(unchecked.profile(), None);
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
        prop_assert_eq!(got.map(|c| c.0), Some(IpAddr::V4(real)));
    }

    /// Arbitrary header bytes (non-UTF-8 included) never panic, and with every address
    /// trusted the result is the peer, an address that appears in the header, or unknown.
    #[test]
    fn arbitrary_header_bytes(xff in prop::collection::vec(any::<u8>(), 0..300), fwd in prop::collection::vec(any::<u8>(), 0..300), proto in prop::collection::vec(any::<u8>(), 0..20)) {
        for mode in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded] {
            let proxies = TrustedProxies::new(["0.0.0.0/0", "::/0"]).unwrap().with_header(mode);
            let mut map = HeaderMap::new();
            for (name, value) in [("x-forwarded-for", &xff), ("forwarded", &fwd), ("x-forwarded-proto", &proto)] {
                if let Ok(v) = http::HeaderValue::from_bytes(value) { map.insert(name, v); }
            }
            let (got, _) = proxies.resolve(&conn("10.0.0.1:1", false), &map);
            if let Some(ClientIp(found)) = got {
                let text = String::from_utf8_lossy(if mode == ForwardedHeader::Forwarded { &fwd } else { &xff }).to_string();
                let shown = found.to_string();
                prop_assert!(found == ip("10.0.0.1") || text.contains(&shown) || text.contains(&format!("{found:?}")), "{} not in {:?}", shown, text);
            }
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
        prop_assert_eq!(got.map(|c| c.0), Some(IpAddr::V4(peer)));
    }
}
