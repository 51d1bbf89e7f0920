//! Palisade: Tower middleware for hardened multi-tenant HTTP APIs.
//!
//! This facade re-exports the component crates behind cargo features:
//!
//! | feature | crate | what it brings |
//! |---|---|---|
//! | (always) | [`core`] (`palisade-core`) | identity, rejections, clock, client IP, secrets, key rings, posture |
//! | `csp-headers` (default) | [`csp_headers`] (`palisade-csp-headers`) | strict CSP with nonces, HSTS, explicit CORS, HTTPS enforcement, admin-host guard |
//! | `authn` (default) | [`authn`] (`palisade-authn`) | Keycloak/OIDC access tokens: strict parsing, JWKS cache with rotation, per-surface audiences, roles, MFA |
//! | `sessions` | `sessions` (`palisade-sessions`) | refresh-token families: rotation, reuse detection, family revocation |
//! | `redis`, `postgres` | `sessions` | the Redis and PostgreSQL session stores |
//!
//! Later releases add `aksk`, `authz-cerbos`, `throttle` and `impersonation` as their crates
//! land.
//!
//! ```
//! # #[cfg(feature = "csp-headers")] {
//! use palisade::core::Profile;
//! use palisade::csp_headers::SecurityHeadersLayer;
//! let layer = SecurityHeadersLayer::builder().profile(Profile::Production).build().unwrap();
//! # let _ = layer; }
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use palisade_core as core;

#[cfg(feature = "csp-headers")]
#[cfg_attr(docsrs, doc(cfg(feature = "csp-headers")))]
pub use palisade_csp_headers as csp_headers;

#[cfg(feature = "authn")]
#[cfg_attr(docsrs, doc(cfg(feature = "authn")))]
pub use palisade_authn as authn;

#[cfg(feature = "sessions")]
#[cfg_attr(docsrs, doc(cfg(feature = "sessions")))]
pub use palisade_sessions as sessions;
