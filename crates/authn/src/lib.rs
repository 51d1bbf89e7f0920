//! Keycloak/OIDC access-token authentication for Tower services.
//!
//! An [`Authenticator`] trusts one or more issuers (Keycloak realms) and keeps their signing
//! keys; [`Authenticator::layer`] makes an [`AuthnLayer`] for one API surface (`api`,
//! `global-admin`, `org-admin`, or your own), which accepts exactly the tokens meant for that
//! surface and puts the caller's [`palisade_core::Identity`] in the request extensions.
//!
//! # Pipeline
//!
//! Each step has its own [`AuthnError`] reason (logged, kept in the response extensions); the
//! client sees a generic 401 (503 when keys are unavailable):
//!
//! 1. Token from exactly one `Authorization: Bearer` header, or (opt-in, for browser sessions)
//!    a `__Host-` cookie with a CSRF check (see [`cookie`]); tokens in the query string are
//!    refused.
//! 2. Size cap (default 8 KiB); strict compact JWS: three non-empty base64url parts, no padding.
//! 3. Header: `jku`, `x5u`, `jwk`, `x5c`, `crit` and nested `cty: JWT` refused; `alg: none`
//!    and HMAC never accepted; `typ` checked for the issuer's token-type mode; `kid` required.
//! 4. Key by exact `kid` in the issuer's key set (only `use=sig` keys whose type fits, RSA of
//!    at least 2048 bits, never `oct`); the key decides the algorithm.
//! 5. Signature (jsonwebtoken 12 with aws-lc-rs, installed explicitly).
//! 6. Claims: exact `iss`; `exp` required; `nbf`/`iat` with bounded leeway; maximum token age;
//!    the surface's `aud` and `azp` lists; Keycloak `typ: "Bearer"` (or RFC 9068), so ID and
//!    refresh tokens are refused; no duplicate keys anywhere in the JSON.
//! 7. Identity: roles from `realm_access` / `resource_access`, org and team from configured
//!    claims, MFA from `acr` / `amr`; surfaces may require MFA (`MFA_REQUIRED_FOR_ADMIN`).
//!
//! # Example
//!
//! ```no_run
//! use palisade_authn::{Authenticator, IssuerConfig, SurfacePolicy};
//! use palisade_core::Surface;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let auth = Authenticator::builder()
//!     .issuer(IssuerConfig::new("https://sso.example.com/realms/acme")?)
//!     .build()
//!     .await?;
//! let api = auth.layer(SurfacePolicy::new(Surface::API).audiences(["api"]).authorized_parties(["web-app"]))?;
//! let admin = auth.layer(
//!     SurfacePolicy::new(Surface::GLOBAL_ADMIN)
//!         .audiences(["global-admin"])
//!         .authorized_parties(["admin-console"])
//!         .require_mfa(true),
//! )?;
//! # let _ = (api, admin);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod claims;
pub mod cookie;
mod error;
pub mod jwks;
mod layer;
pub mod local;
mod strict_json;
mod surface;
mod token;
mod verifier;
pub mod websocket;

pub use error::{AuthnError, BuildError, ConfigError};
pub use jwks::{CachePolicy, KeySet, KeySource};
pub use layer::{Authn, AuthnLayer, ResponseFuture};
pub use surface::SurfacePolicy;
pub use token::{DEFAULT_MAX_TOKEN_BYTES, TokenTypeMode};
pub use verifier::{Authenticator, AuthenticatorBuilder, IssuerConfig, install_crypto_providers};
