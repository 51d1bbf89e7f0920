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
//! spoofed leftmost entry never wins. A malformed or unknown entry where a trusted hop's entry
//! should be leaves the client address unknown (no [`ClientIp`] is inserted), never a proxy's.
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
//! assert_eq!(ip.unwrap().to_string(), "203.0.113.9"); // not the spoofed 6.6.6.6
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

use crate::posture::{Posture, Severity};

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
    /// [`ClientIpLayer`] ran, else [`ConnectionInfo`]. `None` when neither is there; callers
    /// must then treat the request as plain HTTP. The request URI's own scheme is never
    /// believed: the client chooses it.
    pub fn of(extensions: &http::Extensions) -> Option<Self> {
        if let Some(scheme) = extensions.get::<RequestScheme>() {
            return Some(*scheme);
        }
        extensions.get::<ConnectionInfo>().map(|conn| {
            if conn.is_tls() {
                Self::Https
            } else {
                Self::Http
            }
        })
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

/// Most forwarded entries walked for one request; a longer chain of trusted hops leaves the
/// client unknown (fail closed).
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
            let entry = entry.as_ref();
            nets.push(parse_ip_net(entry).ok_or_else(|| InvalidProxy {
                entry: entry.trim().to_owned(),
            })?);
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
    ///
    /// The address is `None` when a trusted hop's header is malformed or names no address
    /// (`unknown`, an obfuscated identifier), or when more than [`MAX_FORWARDED_ENTRIES`]
    /// trusted hops are listed: the client is then unknown, never a trusted proxy's address.
    pub fn resolve(
        &self,
        conn: &ConnectionInfo,
        headers: &HeaderMap,
    ) -> (Option<ClientIp>, RequestScheme) {
        let peer = canonical(conn.peer().ip());
        let socket_scheme = if conn.is_tls() {
            RequestScheme::Https
        } else {
            RequestScheme::Http
        };
        if !self.is_trusted(peer) {
            return (Some(ClientIp(peer)), socket_scheme);
        }
        match self.header {
            ForwardedHeader::XForwardedFor => {
                let ip = self.walk(peer, parse::x_forwarded_for_rev(headers));
                let scheme = parse::x_forwarded_proto(headers).unwrap_or(Ok(socket_scheme));
                (ip, scheme.unwrap_or(RequestScheme::Http))
            }
            ForwardedHeader::Forwarded => {
                let scheme = match parse::forwarded_rev(headers).next() {
                    Some(Ok(last)) => last.proto.unwrap_or(Ok(socket_scheme)),
                    Some(Err(())) => Err(()),
                    None => Ok(socket_scheme),
                };
                let ip = self.walk(
                    peer,
                    parse::forwarded_rev(headers).map(|e| e.and_then(|e| e.for_ip)),
                );
                (ip, scheme.unwrap_or(RequestScheme::Http))
            }
        }
    }

    /// Walks hops from the trusted `peer` leftwards; `entries` come rightmost first.
    fn walk<I>(&self, peer: IpAddr, entries: I) -> Option<ClientIp>
    where
        I: Iterator<Item = Result<IpAddr, ()>>,
    {
        let mut current = peer;
        for (index, entry) in entries.enumerate() {
            if index == MAX_FORWARDED_ENTRIES {
                return None;
            }
            current = canonical(entry.ok()?);
            if !self.is_trusted(current) {
                return Some(ClientIp(current));
            }
        }
        Some(ClientIp(current))
    }

    /// Records what is risky about this proxy list: trusting every address lets any client
    /// choose its own address (denied in production); very wide blocks are a warning.
    pub fn check(&self, posture: &mut Posture) {
        for net in self.nets.iter() {
            let wide = match net {
                IpNet::V4(n) => n.prefix_len() < 8,
                IpNet::V6(n) => n.prefix_len() < 32,
            };
            if net.prefix_len() == 0 {
                posture.record(
                    Severity::Deny,
                    "proxy-trusts-everyone",
                    format!("trusted proxy block {net} contains every address: any client can forge its address and scheme"),
                );
            } else if wide {
                posture.record(
                    Severity::Warn,
                    "proxy-block-wide",
                    format!("trusted proxy block {net} is very wide"),
                );
            }
        }
    }
}

/// Parses an address (`192.0.2.7`, `::1`) or CIDR block (`10.0.0.0/8`) into a block, with
/// host bits cleared (`10.0.0.1/8` is `10.0.0.0/8`).
pub fn parse_ip_net(entry: &str) -> Option<IpNet> {
    let entry = entry.trim();
    entry
        .parse::<IpNet>()
        .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
        .ok()
        .map(|net| net.trunc())
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
