//! Forwarded headers from anyone: never panic, and with no trusted proxy the peer always wins.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use palisade_core::{ConnectionInfo, ForwardedHeader, TrustedProxies};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let mut headers = HeaderMap::new();
    for name in ["x-forwarded-for", "forwarded", "x-forwarded-proto"] {
        if let Some(v) = parts.next().and_then(|p| HeaderValue::from_bytes(p).ok()) {
            headers.insert(name, v);
        }
    }
    let conn = ConnectionInfo::new("10.0.0.1:1".parse().expect("addr"), false);
    for mode in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded] {
        let trusted = TrustedProxies::new(["10.0.0.0/8"]).expect("cidr").with_header(mode);
        let _ = trusted.resolve(&conn, &headers);
        let (ip, _) = TrustedProxies::none().with_header(mode).resolve(&conn, &headers);
        assert_eq!(ip.map(|c| c.0), Some(conn.peer().ip()));
    }
});
