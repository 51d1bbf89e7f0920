//! Bounded parsers for `X-Forwarded-For`, `X-Forwarded-Proto` and `Forwarded`.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

use super::{MAX_FORWARDED_ENTRIES, RequestScheme};

/// Longest header value read; longer values count as malformed.
const MAX_HEADER_LEN: usize = 4096;

/// Entries of every `X-Forwarded-For` line, in order. Overlong input yields a leading error so a
/// right-to-left walk stops after at most [`MAX_FORWARDED_ENTRIES`] entries.
pub(super) fn x_forwarded_for(headers: &HeaderMap) -> Vec<Result<IpAddr, ()>> {
    let mut out = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Some(text) = value.to_str().ok().filter(|t| t.len() <= MAX_HEADER_LEN) else {
            out.push(Err(()));
            continue;
        };
        for entry in text.split(',') {
            out.push(parse_node(entry.trim(), false));
        }
    }
    bound(out)
}

/// The scheme from the rightmost `X-Forwarded-Proto` value: `None` when absent, `Some(Err)`
/// when malformed.
pub(super) fn x_forwarded_proto(headers: &HeaderMap) -> Option<Result<RequestScheme, ()>> {
    let last = headers.get_all("x-forwarded-proto").iter().next_back()?;
    let text = match last.to_str() {
        Ok(t) if t.len() <= MAX_HEADER_LEN => t,
        _ => return Some(Err(())),
    };
    let value = text.rsplit(',').next().unwrap_or("").trim();
    Some(parse_scheme(value))
}

/// One `Forwarded` element.
#[derive(Debug)]
pub(super) struct Element {
    pub(super) for_ip: Result<IpAddr, ()>,
    pub(super) proto: Option<Result<RequestScheme, ()>>,
}

impl Default for Element {
    fn default() -> Self {
        Self {
            for_ip: Err(()),
            proto: None,
        }
    }
}

/// Elements of every `Forwarded` line, in order.
pub(super) fn forwarded(headers: &HeaderMap) -> Vec<Result<Element, ()>> {
    let mut out = Vec::new();
    for value in headers.get_all("forwarded") {
        let Some(text) = value.to_str().ok().filter(|t| t.len() <= MAX_HEADER_LEN) else {
            out.push(Err(()));
            continue;
        };
        for element in split_outside_quotes(text, b',') {
            out.push(parse_element(element));
        }
    }
    bound(out)
}

fn bound<T>(mut entries: Vec<Result<T, ()>>) -> Vec<Result<T, ()>> {
    if entries.len() > MAX_FORWARDED_ENTRIES {
        let keep = entries.split_off(entries.len() - MAX_FORWARDED_ENTRIES);
        entries = Vec::with_capacity(keep.len() + 1);
        entries.push(Err(()));
        entries.extend(keep);
    }
    entries
}

fn parse_element(element: &str) -> Result<Element, ()> {
    let mut out = Element::default();
    let mut seen_for = false;
    for pair in split_outside_quotes(element, b';') {
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
                out.for_ip = parse_node(&value, true);
            }
            "proto" => {
                if out.proto.is_some() {
                    return Err(());
                }
                out.proto = Some(parse_scheme(&value));
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
    if node.is_empty() {
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

fn unquote(value: &str) -> Result<String, ()> {
    let Some(inner) = value.strip_prefix('"') else {
        if value.bytes().any(|b| b == b'"' || b == b'\\') {
            return Err(());
        }
        return Ok(value.to_owned());
    };
    let inner = inner.strip_suffix('"').ok_or(())?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().ok_or(())?),
            '"' => return Err(()),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Splits on `sep` outside double-quoted strings (which may contain backslash escapes).
fn split_outside_quotes(text: &str, sep: u8) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut parts = Vec::new();
    let (mut start, mut in_quotes, mut escaped) = (0, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if in_quotes && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            in_quotes = !in_quotes;
        } else if b == sep && !in_quotes {
            parts.push(&text[start..i]);
            start = i + 1;
        }
    }
    parts.push(&text[start..]);
    parts.into_iter()
}
