//! Parsers for `X-Forwarded-For`, `X-Forwarded-Proto` and `Forwarded`, read **right to left**
//! and lazily: the entries a trusted proxy appended come first, and whatever a client put to
//! their left (non-UTF-8 bytes, unbalanced quotes, megabytes of padding) cannot swallow them.
//! Each header line is split on its own, at byte level.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

use super::RequestScheme;

/// `X-Forwarded-For` entries, rightmost first.
pub(super) fn x_forwarded_for_rev(
    headers: &HeaderMap,
) -> impl Iterator<Item = Result<IpAddr, ()>> + '_ {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|line| line.as_bytes().rsplit(|b| *b == b','))
        .map(|entry| text(entry).and_then(|t| parse_node(t, false)))
}

/// The scheme from the rightmost `X-Forwarded-Proto` value: `None` when absent, `Some(Err)`
/// when malformed.
pub(super) fn x_forwarded_proto(headers: &HeaderMap) -> Option<Result<RequestScheme, ()>> {
    let last = headers.get_all("x-forwarded-proto").iter().next_back()?;
    let value = last.as_bytes().rsplit(|b| *b == b',').next().unwrap_or(b"");
    Some(text(value).and_then(parse_scheme))
}

/// One `Forwarded` element.
#[derive(Debug)]
pub(super) struct Element {
    pub(super) for_ip: Result<IpAddr, ()>,
    pub(super) proto: Option<Result<RequestScheme, ()>>,
}

/// `Forwarded` elements, rightmost first. Values are IP literals, `unknown`, obfuscated
/// identifiers or schemes, none of which contains `,` or `;`, so splitting without quote
/// awareness loses nothing legitimate, and an unbalanced quote spoils only its own element.
pub(super) fn forwarded_rev(headers: &HeaderMap) -> impl Iterator<Item = Result<Element, ()>> + '_ {
    headers
        .get_all("forwarded")
        .iter()
        .rev()
        .flat_map(|line| line.as_bytes().rsplit(|b| *b == b','))
        .map(|element| text(element).and_then(parse_element))
}

fn text(bytes: &[u8]) -> Result<&str, ()> {
    std::str::from_utf8(bytes).map(str::trim).map_err(|_| ())
}

fn parse_element(element: &str) -> Result<Element, ()> {
    let mut out = Element {
        for_ip: Err(()),
        proto: None,
    };
    let mut seen_for = false;
    for pair in element.split(';') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=').ok_or(())?;
        let value = unquote(value.trim())?;
        match name.trim().to_ascii_lowercase().as_str() {
            "for" => {
                if seen_for {
                    return Err(());
                }
                seen_for = true;
                out.for_ip = parse_node(value, true);
            }
            "proto" => {
                if out.proto.is_some() {
                    return Err(());
                }
                out.proto = Some(parse_scheme(value));
            }
            _ => {}
        }
    }
    Ok(out)
}

fn parse_scheme(value: &str) -> Result<RequestScheme, ()> {
    if value.eq_ignore_ascii_case("https") {
        Ok(RequestScheme::Https)
    } else if value.eq_ignore_ascii_case("http") {
        Ok(RequestScheme::Http)
    } else {
        Err(())
    }
}

/// An address with an optional port: `1.2.3.4`, `1.2.3.4:80`, `::1` (X-Forwarded-For only),
/// `[::1]`, `[::1]:80`. `unknown` and obfuscated identifiers are errors: they cannot be checked
/// against the trusted list.
fn parse_node(node: &str, rfc7239: bool) -> Result<IpAddr, ()> {
    if node.is_empty() || node.len() > 64 {
        return Err(());
    }
    if let Some(rest) = node.strip_prefix('[') {
        let end = rest.find(']').ok_or(())?;
        let ip: std::net::Ipv6Addr = rest[..end].parse().map_err(|_| ())?;
        let tail = &rest[end + 1..];
        if !(tail.is_empty() || tail.strip_prefix(':').is_some_and(is_port)) {
            return Err(());
        }
        return Ok(IpAddr::V6(ip));
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        if rfc7239 && ip.is_ipv6() {
            // RFC 7239 requires brackets around IPv6 addresses.
            return Err(());
        }
        return Ok(ip);
    }
    node.parse::<SocketAddr>()
        .ok()
        .filter(SocketAddr::is_ipv4)
        .map(|s| s.ip())
        .ok_or(())
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A token, or a quoted string without escapes or inner quotes (no legitimate value needs
/// them).
fn unquote(value: &str) -> Result<&str, ()> {
    let inner = match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"').ok_or(())?,
        None => value,
    };
    if inner.bytes().any(|b| b == b'"' || b == b'\\') {
        return Err(());
    }
    Ok(inner)
}
