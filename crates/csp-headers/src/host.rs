//! Strict parsing of the request's host, shared by the HTTPS and admin-host layers.

use http::Request;
use http::header::HOST;

/// A normalized host: lowercase, without a trailing dot, IPv6 in brackets, with its port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RequestHost {
    pub(crate) name: String,
    pub(crate) port: Option<u16>,
}

/// Why a request's host cannot be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HostError {
    /// No `Host` header and no URI authority.
    Missing,
    /// Several `Host` headers, or a `Host` header that disagrees with the URI authority.
    Ambiguous,
    /// Not a valid `host[:port]`.
    Malformed,
}

/// The host a request is for, from its `Host` header and URI authority (HTTP/2 `:authority`
/// or an absolute-form target), which must agree when both are present.
pub(crate) fn request_host<B>(req: &Request<B>) -> Result<RequestHost, HostError> {
    let mut headers = req.headers().get_all(HOST).iter();
    let header = headers.next();
    if headers.next().is_some() {
        return Err(HostError::Ambiguous);
    }
    let from_header = match header {
        Some(value) => Some(parse_host(value.as_bytes()).ok_or(HostError::Malformed)?),
        None => None,
    };
    let from_uri = match req.uri().authority() {
        Some(authority) => {
            if authority.as_str().contains('@') {
                return Err(HostError::Malformed);
            }
            Some(parse_host(authority.as_str().as_bytes()).ok_or(HostError::Malformed)?)
        }
        None => None,
    };
    match (from_header, from_uri) {
        (Some(h), Some(u)) if h != u => Err(HostError::Ambiguous),
        (Some(h), _) => Ok(h),
        (None, Some(u)) => Ok(u),
        (None, None) => Err(HostError::Missing),
    }
}

/// Parses `host[:port]` strictly.
pub(crate) fn parse_host(raw: &[u8]) -> Option<RequestHost> {
    let text = std::str::from_utf8(raw).ok()?;
    if text.is_empty() || text.len() > 260 {
        return None;
    }
    let (name, port) = if let Some(rest) = text.strip_prefix('[') {
        let end = rest.find(']')?;
        let ip: std::net::Ipv6Addr = rest[..end].parse().ok()?;
        let tail = &rest[end + 1..];
        let port = match tail {
            "" => None,
            _ => Some(parse_port(tail.strip_prefix(':')?)?),
        };
        (format!("[{ip}]"), port)
    } else {
        let (name, port) = match text.rsplit_once(':') {
            Some((name, port)) => (name, Some(parse_port(port)?)),
            None => (text, None),
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if !is_dns_name(name) {
            return None;
        }
        (name.to_ascii_lowercase(), port)
    };
    Some(RequestHost { name, port })
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Letters, digits, `-` and `.` in labels of 1 to 63 characters, 253 at most in all.
pub(crate) fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Normalizes a configured host name, or `None` when it is not a DNS name or IP literal.
pub(crate) fn normalize_config_host(host: &str) -> Option<String> {
    let parsed = parse_host(host.trim().as_bytes())?;
    if parsed.port.is_some() {
        return None;
    }
    Some(parsed.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host: Option<&str>, uri: &str) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(HOST, h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn host_table() {
        let ok = |h: &str, p: Option<u16>| {
            Ok(RequestHost {
                name: h.into(),
                port: p,
            })
        };
        let cases: Vec<(Option<&str>, &str, Result<RequestHost, HostError>)> = vec![
            (Some("Example.COM"), "/", ok("example.com", None)),
            (
                Some("example.com.:8443"),
                "/",
                ok("example.com", Some(8443)),
            ),
            (Some("[::1]:443"), "/", ok("[::1]", Some(443))),
            (Some("127.0.0.1"), "/", ok("127.0.0.1", None)),
            (
                None,
                "https://api.example.com/x",
                ok("api.example.com", None),
            ),
            (
                Some("a.example.com"),
                "https://b.example.com/x",
                Err(HostError::Ambiguous),
            ),
            (Some("evil.com/x"), "/", Err(HostError::Malformed)),
            (Some("evil.com:99999"), "/", Err(HostError::Malformed)),
            (Some("ev il.com"), "/", Err(HostError::Malformed)),
            (Some("-bad.com"), "/", Err(HostError::Malformed)),
            (Some(""), "/", Err(HostError::Malformed)),
            (None, "/", Err(HostError::Missing)),
        ];
        for (host, uri, want) in cases {
            assert_eq!(request_host(&req(host, uri)), want, "{host:?} {uri}");
        }
    }

    #[test]
    fn two_host_headers_are_ambiguous() {
        let mut r = req(Some("a.example.com"), "/");
        r.headers_mut()
            .append(HOST, "b.example.com".parse().unwrap());
        assert_eq!(request_host(&r), Err(HostError::Ambiguous));
    }
}
