//! [`CorsLayer`]: CORS with explicit origins only.
//!
//! - Only listed origins get CORS headers. There is no wildcard and no "mirror the request's
//!   origin" mode: both are configuration errors, reported by the builder (never a panic).
//! - Every response that depends on `Origin` carries `Vary: Origin`, preflights included
//!   (with `Access-Control-Request-Method` and `-Headers` too).
//! - A preflight from a disallowed origin, or asking for a method or header that is not
//!   allowed, gets `403` with no CORS headers.
//! - Preflights carry `Access-Control-Max-Age` (default 10 minutes).
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Method, Request, Response, header};
//! use palisade_csp_headers::CorsLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cors = CorsLayer::builder()
//!     .allow_origin("https://app.example.com")?
//!     .allow_methods([Method::GET, Method::POST])
//!     .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
//!     .allow_credentials(true)
//!     .build()?;
//! let svc = ServiceBuilder::new().layer(cors).service(service_fn(|_req: Request<()>| async {
//!     Ok::<_, Infallible>(Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
//! }));
//!
//! let preflight = Request::builder().method(Method::OPTIONS).uri("/api")
//!     .header(header::ORIGIN, "https://evil.example")
//!     .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
//!     .body(())?;
//! let res = svc.clone().oneshot(preflight).await?;
//! assert_eq!(res.status(), 403);
//! assert!(res.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
//!
//! let simple = Request::builder().uri("/api").header(header::ORIGIN, "https://app.example.com").body(())?;
//! let res = svc.oneshot(simple).await?;
//! assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
//! assert_eq!(res.headers()[header::VARY], "origin");
//! # Ok(()) }
//! ```
//!
//! # Deployment caveat
//!
//! CORS only governs what *browsers* let other origins read. It is not access control: a
//! non-browser client ignores it, so authenticate and authorize every request regardless.

mod service;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use palisade_core::{Finding, Posture, Profile, Severity};

use crate::error::{BuildError, ConfigError};
use crate::host::is_dns_name;

pub use service::{Cors, CorsRejection, ResponseFuture};

/// The longest `Access-Control-Max-Age` browsers honour (Chromium caps at two hours).
pub const MAX_PREFLIGHT_AGE: Duration = Duration::from_secs(7200);

/// Builds a [`CorsLayer`].
#[derive(Clone, Debug)]
#[must_use]
pub struct CorsBuilder {
    profile: Profile,
    origins: Vec<String>,
    methods: Vec<Method>,
    headers: Vec<HeaderName>,
    expose: Vec<HeaderName>,
    credentials: bool,
    max_age: Duration,
}

impl Default for CorsBuilder {
    fn default() -> Self {
        Self {
            profile: Profile::Production,
            origins: Vec::new(),
            methods: vec![Method::GET, Method::HEAD],
            headers: vec![http::header::CONTENT_TYPE],
            expose: Vec::new(),
            credentials: false,
            max_age: Duration::from_secs(600),
        }
    }
}

impl CorsBuilder {
    /// The profile the configuration is checked against (default: production).
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// Allows `origin` (`scheme://host[:port]`). A wildcard, `null`, a path, user info or a
    /// non-HTTP scheme is an error.
    ///
    /// ```
    /// use palisade_csp_headers::{ConfigError, CorsLayer};
    /// assert!(CorsLayer::builder().allow_origin("https://app.example.com").is_ok());
    /// assert_eq!(CorsLayer::builder().allow_origin("*").unwrap_err(), ConfigError::WildcardOrigin);
    /// assert!(CorsLayer::builder().allow_origin("https://app.example.com/path").is_err());
    /// assert!(CorsLayer::builder().allow_origin("null").is_err());
    /// ```
    pub fn allow_origin(mut self, origin: &str) -> Result<Self, ConfigError> {
        let origin = normalize_origin(origin)?;
        if !self.origins.contains(&origin) {
            self.origins.push(origin);
        }
        Ok(self)
    }

    /// Allows each of `origins`; stops at the first invalid one.
    pub fn allow_origins<I, S>(mut self, origins: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for origin in origins {
            self = self.allow_origin(origin.as_ref())?;
        }
        Ok(self)
    }

    /// Methods a preflight may ask for (default `GET`, `HEAD`).
    pub fn allow_methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }

    /// Request headers a preflight may ask for (default `content-type`).
    pub fn allow_headers(mut self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        self.headers = headers.into_iter().collect();
        self
    }

    /// Response headers the browser exposes to scripts.
    pub fn expose_headers(mut self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        self.expose = headers.into_iter().collect();
        self
    }

    /// Whether to send `Access-Control-Allow-Credentials: true` (default no).
    pub fn allow_credentials(mut self, on: bool) -> Self {
        self.credentials = on;
        self
    }

    /// `Access-Control-Max-Age` (default 600 s).
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    /// The findings this configuration produces, without building.
    pub fn posture(&self) -> Posture {
        let mut posture = Posture::new(self.profile, "cors");
        for origin in &self.origins {
            let local = is_local_origin(origin);
            if local {
                posture.record(
                    Severity::Deny,
                    "cors-localhost-origin",
                    format!("origin {origin} is a local development origin"),
                );
            } else if origin.starts_with("http://") {
                posture.record(
                    Severity::Deny,
                    "cors-http-origin",
                    format!("origin {origin} is plain HTTP: a network attacker can act as it"),
                );
            }
        }
        if self.origins.is_empty() {
            posture.record(
                Severity::Info,
                "cors-no-origins",
                "no origin is allowed: cross-origin browser requests are refused",
            );
        }
        if self.max_age > MAX_PREFLIGHT_AGE {
            posture.record(
                Severity::Info,
                "cors-max-age-capped",
                "browsers cap Access-Control-Max-Age at 7200 s",
            );
        }
        posture
    }

    /// Builds the layer, or explains why the configuration is refused.
    pub fn build(self) -> Result<CorsLayer, BuildError> {
        let findings = self.posture().finish()?;
        let join = |items: &mut dyn Iterator<Item = &str>, header| {
            let value = items.collect::<Vec<_>>().join(", ");
            HeaderValue::try_from(value).map_err(|_| ConfigError::InvalidHeaderValue { header })
        };
        let methods_value = join(
            &mut self.methods.iter().map(Method::as_str),
            "access-control-allow-methods",
        )?;
        let headers_value = join(
            &mut self.headers.iter().map(HeaderName::as_str),
            "access-control-allow-headers",
        )?;
        let expose_value = if self.expose.is_empty() {
            None
        } else {
            Some(join(
                &mut self.expose.iter().map(HeaderName::as_str),
                "access-control-expose-headers",
            )?)
        };
        let origins = self
            .origins
            .iter()
            .map(|o| {
                HeaderValue::try_from(o.as_str()).map_err(|_| ConfigError::InvalidOrigin {
                    origin: o.clone(),
                    reason: "not a header value",
                })
            })
            .collect::<Result<HashSet<_>, _>>()?;
        Ok(CorsLayer {
            config: Arc::new(Config {
                origins,
                methods: self.methods,
                methods_value,
                headers: self.headers,
                headers_value,
                expose_value,
                credentials: self.credentials,
                max_age_value: HeaderValue::from(self.max_age.as_secs()),
                profile: self.profile,
                findings,
            }),
        })
    }
}

#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) origins: HashSet<HeaderValue>,
    pub(crate) methods: Vec<Method>,
    pub(crate) methods_value: HeaderValue,
    pub(crate) headers: Vec<HeaderName>,
    pub(crate) headers_value: HeaderValue,
    pub(crate) expose_value: Option<HeaderValue>,
    pub(crate) credentials: bool,
    pub(crate) max_age_value: HeaderValue,
    pub(crate) profile: Profile,
    pub(crate) findings: Vec<Finding>,
}

/// CORS for an explicit list of origins.
#[derive(Clone, Debug)]
#[must_use]
pub struct CorsLayer {
    pub(crate) config: Arc<Config>,
}

impl CorsLayer {
    /// A builder: no origin allowed, `GET`/`HEAD`, `content-type`, no credentials.
    pub fn builder() -> CorsBuilder {
        CorsBuilder::default()
    }

    /// The non-blocking findings recorded when the layer was built.
    pub fn findings(&self) -> &[Finding] {
        &self.config.findings
    }

    /// The profile the layer was checked under when it was built.
    pub fn profile(&self) -> Profile {
        self.config.profile
    }
}

/// Whether a normalized origin names this machine (`localhost`, `*.localhost`, loopback or
/// unspecified addresses).
fn is_local_origin(origin: &str) -> bool {
    let authority = origin.split_once("://").map_or(origin, |(_, a)| a);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// Checks and normalizes a configured origin to the form browsers send.
pub(crate) fn normalize_origin(origin: &str) -> Result<String, ConfigError> {
    let invalid = |reason| ConfigError::InvalidOrigin {
        origin: origin.to_owned(),
        reason,
    };
    let trimmed = origin.trim();
    if trimmed == "*" || trimmed.contains('*') {
        return Err(ConfigError::WildcardOrigin);
    }
    if trimmed.eq_ignore_ascii_case("null") {
        return Err(invalid(
            "the null origin is shared by sandboxed and file pages",
        ));
    }
    let (scheme, rest) = trimmed
        .split_once("://")
        .ok_or(invalid("expected scheme://host"))?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return Err(invalid("only http and https origins exist for CORS")),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@', '\\']) || rest.is_empty() {
        return Err(invalid(
            "an origin has no path, query, fragment or user info",
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (addr, tail) = v6.split_once(']').ok_or(invalid("unclosed IPv6 literal"))?;
        addr.parse::<std::net::Ipv6Addr>()
            .map_err(|_| invalid("bad IPv6 literal"))?;
        let port = match tail {
            "" => None,
            t => Some(
                t.strip_prefix(':')
                    .ok_or(invalid("junk after IPv6 literal"))?,
            ),
        };
        (format!("[{}]", addr.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        if !is_dns_name(host) {
            return Err(invalid("host is not a DNS name or IP address"));
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) => {
            let n: u16 = p
                .parse()
                .ok()
                .filter(|_| p.bytes().all(|b| b.is_ascii_digit()))
                .ok_or(invalid("bad port"))?;
            (n != default_port).then_some(n)
        }
    };
    Ok(match port {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests;
