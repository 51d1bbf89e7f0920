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
//! | `aksk` (default) | `aksk` (`palisade-aksk`) | replay-proof AWS SigV4-compatible access-key signing: verifier layer, client signer, encrypted credentials |
//! | `field-crypto` | `field_crypto` (`palisade-field-crypto`) | XChaCha20-Poly1305 field encryption with key rotation and blind indexes |
//! | `throttle` (default) | `throttle` (`palisade-throttle`) | per-org GCRA limits after authentication, tiers, standard rate-limit headers |
//! | `authz-cerbos` | `authz_cerbos` (`palisade-authz-cerbos`) | tenant-scoped Cerbos principals, a PDP client with verified TLS, an isolated decision cache, `AuthorizeLayer` |
//! | `audit` | `audit` (`palisade-audit`) | the tamper-evident audit log and `palisade-audit verify` |
//! | `impersonation` | `impersonation` (`palisade-impersonation`) | MFA-gated, audited admin impersonation |
//! | `redis`, `postgres` | `sessions`, `aksk`, `throttle`, `audit` | the Redis and PostgreSQL stores and sinks |
//!
//! [`Hardening`] builds a whole stack under one profile and reports every posture finding at
//! once; [`core::checks`] catalogues the findings' ids and fixes.
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

pub mod hardening;
pub use hardening::{Hardening, HardeningError, Report};

#[cfg(feature = "csp-headers")]
#[cfg_attr(docsrs, doc(cfg(feature = "csp-headers")))]
pub use palisade_csp_headers as csp_headers;

#[cfg(feature = "authn")]
#[cfg_attr(docsrs, doc(cfg(feature = "authn")))]
pub use palisade_authn as authn;

#[cfg(feature = "sessions")]
#[cfg_attr(docsrs, doc(cfg(feature = "sessions")))]
pub use palisade_sessions as sessions;

#[cfg(feature = "aksk")]
#[cfg_attr(docsrs, doc(cfg(feature = "aksk")))]
pub use palisade_aksk as aksk;

#[cfg(feature = "field-crypto")]
#[cfg_attr(docsrs, doc(cfg(feature = "field-crypto")))]
pub use palisade_field_crypto as field_crypto;

#[cfg(feature = "throttle")]
#[cfg_attr(docsrs, doc(cfg(feature = "throttle")))]
pub use palisade_throttle as throttle;

#[cfg(feature = "authz-cerbos")]
#[cfg_attr(docsrs, doc(cfg(feature = "authz-cerbos")))]
pub use palisade_authz_cerbos as authz_cerbos;

#[cfg(feature = "audit")]
#[cfg_attr(docsrs, doc(cfg(feature = "audit")))]
pub use palisade_audit as audit;

#[cfg(feature = "impersonation")]
#[cfg_attr(docsrs, doc(cfg(feature = "impersonation")))]
pub use palisade_impersonation as impersonation;
