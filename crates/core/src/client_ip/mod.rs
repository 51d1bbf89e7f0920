//! The client address and request scheme, trusting forwarded headers only from configured
//! proxies.
//!
//! The server (or a small connection wrapper) inserts a [`ConnectionInfo`] into each request's
//! extensions: the socket peer and whether the connection is TLS. [`ClientIpLayer`] then
//! resolves [`ClientIp`] and [`RequestScheme`] and inserts them for later layers.
//!
//! Forwarded headers are walked **right to left**: each hop is trusted only while it is a
//! configured proxy, and the first untrusted address is the client. A client can prepend any
//! address it likes to `X-Forwarded-For`; it can never get past the proxies' own entries, so a
//! spoofed leftmost entry never wins. A malformed or unknown entry stops the walk at the last
//! trusted hop.
//!
//! ```
//! use std::net::SocketAddr;
//! use http::HeaderMap;
//! use palisade_core::{ConnectionInfo, RequestScheme, TrustedProxies};
//!
//! let proxies = TrustedProxies::new(["10.0.0.0/8"])?;
//! let conn = ConnectionInfo::new("10.0.0.5:4000".parse::<SocketAddr>()?, false);
//! let mut headers = HeaderMap::new();
//! headers.insert("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.7".parse()?);
//! headers.insert("x-forwarded-proto", "https".parse()?);
//! let (ip, scheme) = proxies.resolve(&conn, &headers);
//! assert_eq!(ip.to_string(), "203.0.113.9"); // not the spoofed 6.6.6.6
//! assert_eq!(scheme, RequestScheme::Https);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```

mod layer;
mod parse;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::HeaderMap;
use ipnet::IpNet;

pub use layer::{ClientIpLayer, ClientIpService};

/// Facts about the transport connection, inserted into request extensions by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    peer: SocketAddr,
    tls: bool,
}

impl ConnectionInfo {
    /// A connection from `peer`; `tls` tells whether it is encrypted with TLS.
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        Self { peer, tls }
    }

    /// The socket peer.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the connection uses TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }
}

/// The resolved client address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

impl fmt::Display for ClientIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The scheme the client used to reach the first trusted hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestScheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl RequestScheme {
    /// Whether the scheme is HTTPS.
    pub fn is_https(self) -> bool {
        self == Self::Https
    }

    /// The scheme of a request as far as its extensions tell: [`RequestScheme`] if a
    /// [`ClientIpLayer`] ran, else [`ConnectionInfo`], else the URI scheme. `None` when
    /// nothing tells; callers must then treat the request as plain HTTP.
    pub fn of(extensions: &http::Extensions, uri: &http::Uri) -> Option<Self> {
        if let Some(scheme) = extensions.get::<RequestScheme>() {
            return Some(*scheme);
        }
        if let Some(conn) = extensions.get::<ConnectionInfo>() {
            return Some(if conn.is_tls() {
                Self::Https
            } else {
                Self::Http
            });
        }
        match uri.scheme_str() {
            Some("https") => Some(Self::Https),
            Some("http") => Some(Self::Http),
            _ => None,
        }
    }
}

/// Which forwarded header the trusted proxies set. Only one is read, never both, so an
/// attacker cannot pick whichever the proxy does not overwrite.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` and `X-Forwarded-Proto`.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded` (`for=` and `proto=`).
    Forwarded,
}

/// Most forwarded entries read from one request; beyond this the walk stops (fail closed).
pub const MAX_FORWARDED_ENTRIES: usize = 32;

/// The proxies whose forwarded headers are believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    nets: Arc<[IpNet]>,
    header: ForwardedHeader,
}

/// A trusted-proxy entry that is not an IP address or CIDR block.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("trusted proxy {entry:?} is not an IP address or CIDR block")]
pub struct InvalidProxy {
    entry: String,
}

impl TrustedProxies {
    /// No trusted proxies: the socket peer is the client and forwarded headers are ignored.
    pub fn none() -> Self {
        Self::default()
    }

    /// Trusts the given addresses or CIDR blocks (`10.0.0.0/8`, `::1`, `192.0.2.7`).
    pub fn new<I, S>(entries: I) -> Result<Self, InvalidProxy>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut nets = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| InvalidProxy {
                    entry: entry.to_owned(),
                })?;
            nets.push(net.trunc());
        }
        Ok(Self {
            nets: nets.into(),
            header: ForwardedHeader::default(),
        })
    }

    /// Reads `header` instead of the default `X-Forwarded-For`.
    #[must_use]
    pub fn with_header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// Resolves the client address and scheme of a request that arrived over `conn`.
    pub fn resolve(&self, conn: &ConnectionInfo, headers: &HeaderMap) -> (ClientIp, RequestScheme) {
        let peer = canonical(conn.peer().ip());
        let socket_scheme = if conn.is_tls() {
            RequestScheme::Https
        } else {
            RequestScheme::Http
        };
        if !self.is_trusted(peer) {
            return (ClientIp(peer), socket_scheme);
        }
        match self.header {
            ForwardedHeader::XForwardedFor => {
                let ip = self.walk(peer, parse::x_forwarded_for(headers));
                let scheme = parse::x_forwarded_proto(headers).unwrap_or(Ok(socket_scheme));
                (ip, scheme.unwrap_or(RequestScheme::Http))
            }
            ForwardedHeader::Forwarded => {
                let elements = parse::forwarded(headers);
                let scheme = match elements.last() {
                    Some(Ok(last)) => match last.proto {
                        Some(proto) => proto,
                        None => Ok(socket_scheme),
                    },
                    Some(Err(())) => Err(()),
                    None => Ok(socket_scheme),
                };
                let ip = self.walk(peer, elements.into_iter().map(|e| e.and_then(|e| e.for_ip)));
                (ip, scheme.unwrap_or(RequestScheme::Http))
            }
        }
    }

    /// Walks hops right to left from the trusted `peer`; `entries` are in header order.
    fn walk<I>(&self, peer: IpAddr, entries: I) -> ClientIp
    where
        I: IntoIterator<Item = Result<IpAddr, ()>>,
        I::IntoIter: DoubleEndedIterator,
    {
        let mut current = peer;
        for entry in entries.into_iter().rev() {
            match entry {
                Ok(ip) => {
                    current = canonical(ip);
                    if !self.is_trusted(current) {
                        return ClientIp(current);
                    }
                }
                Err(()) => return ClientIp(current),
            }
        }
        ClientIp(current)
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are compared as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

#[cfg(test)]
mod tests;
