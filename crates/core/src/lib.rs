//! Shared vocabulary of the Palisade middleware.
//!
//! `palisade-core` is small and dependency-light. Every other Palisade crate builds on it:
//!
//! | module | what it holds |
//! |---|---|
//! | [`identity`] | [`Identity`]: who the caller is, put in request extensions by authenticating layers |
//! | [`rejection`] | [`Rejection`]: one type for every refusal, answered as RFC 9457 `application/problem+json` |
//! | [`body`] | [`ResponseBody`] and [`ShortCircuitFuture`], so layers keep the `Body` type generic |
//! | [`clock`] | [`Clock`], [`SystemClock`] and [`ManualClock`]: no test sleeps |
//! | [`client_ip`] | [`ClientIpLayer`]: the client address and scheme, trusting only configured proxies |
//! | [`secret`] | redacting secret types and constant-time comparison |
//! | [`keyring`] | [`KeyRing`]: named, versioned keys with one active key and older ones for verification |
//! | [`posture`] | [`Profile`] and the posture report that makes production builders refuse insecure settings |
//! | [`revocation`] | [`SessionRevocation`]: is a session (refresh family) revoked? |
//!
//! # Example
//!
//! ```
//! use palisade_core::{Profile, Rejection, RejectionKind};
//!
//! let profile = Profile::Production;
//! assert!(profile.is_production());
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("the bearer token expired")]
//! struct Expired;
//!
//! let rejection = Rejection::new(RejectionKind::Unauthenticated, Expired);
//! let response = rejection.into_response::<http_body_util::Empty<bytes::Bytes>>();
//! assert_eq!(response.status(), 401);
//! // The reason travels in the response extensions, never in the body.
//! let stored = response.extensions().get::<Rejection>().unwrap();
//! assert!(stored.reason_as::<Expired>().is_some());
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod body;
pub mod checks;
pub mod client_ip;
pub mod clock;
pub mod gate;
pub mod identity;
pub mod keyring;
pub mod percent;
pub mod posture;
pub mod rejection;
pub mod revocation;
pub mod secret;
pub mod store;

pub use body::{ResponseBody, ShortCircuitFuture};
pub use client_ip::{
    ClientIp, ClientIpLayer, ConnectionInfo, ForwardedHeader, RequestScheme, TrustedProxies,
};
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use gate::{Gate, GateFuture};
pub use identity::{AuthMethod, Identity, Membership, MfaLevel, Surface};
pub use keyring::{Key, KeyId, KeyRing, KeyRingError};
pub use posture::{Finding, Posture, PostureError, Profile, Severity};
pub use rejection::{Rejection, RejectionKind};
pub use revocation::{RevocationError, SessionRevocation};
pub use secret::constant_time_eq;
pub use store::{StoreError, StoreHealth};

/// Re-exports for this crate's macros; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use tracing;
}
