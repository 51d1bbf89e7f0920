//! Configuration and build errors.

use palisade_core::PostureError;

/// A configuration value that can never be valid, found when it is set.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A CSP source expression that is not a valid host, scheme or hash source.
    #[error("invalid CSP source {source_expr:?}: {reason}")]
    InvalidSource {
        /// The rejected expression.
        source_expr: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A CORS origin that is not `scheme://host[:port]`.
    #[error("invalid CORS origin {origin:?}: {reason}")]
    InvalidOrigin {
        /// The rejected origin.
        origin: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A wildcard CORS origin: only explicit origins are supported (a wildcard with credentials
    /// would let any site read authenticated responses).
    #[error("wildcard CORS origins are not supported: list the allowed origins explicitly")]
    WildcardOrigin,
    /// A host name that is not a valid DNS name.
    #[error("invalid host name {host:?}")]
    InvalidHost {
        /// The rejected host.
        host: String,
    },
    /// A path prefix that does not start with `/` or has empty, dot or encoded segments.
    #[error("invalid path prefix {prefix:?}")]
    InvalidPathPrefix {
        /// The rejected prefix.
        prefix: String,
    },
    /// A reporting endpoint name or URL that is malformed.
    #[error("invalid reporting endpoint {name:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A header value that cannot be sent in HTTP.
    #[error("invalid header value for {header}")]
    InvalidHeaderValue {
        /// The header name.
        header: &'static str,
    },
    /// An IP allowlist entry that is not an address or CIDR block.
    #[error("invalid IP allowlist entry {entry:?}")]
    InvalidIpNet {
        /// The rejected entry.
        entry: String,
    },
    /// A setting that the layer needs was not given.
    #[error("missing required setting: {0}")]
    Missing(&'static str),
}

/// Why a builder did not produce a layer.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The configuration is insecure and the profile is production; lists every finding.
    #[error(transparent)]
    Posture(#[from] PostureError),
}
