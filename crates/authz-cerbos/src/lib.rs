//! Tenant-scoped authorization through a [Cerbos](https://cerbos.dev) policy decision point.
//!
//! - [`principal_for`] builds the Cerbos principal of an [`Identity`](palisade_core::Identity)
//!   for the tenant a request targets, with that tenant's memberships and roles only (no
//!   cross-tenant bleed), and attributes for MFA, the authentication method and
//!   impersonation.
//! - [`PdpClient`] asks a real PDP over gRPC (the `cerbos` crate's generated types, one shared
//!   HTTP/2 channel), with verified TLS by default, optional mutual TLS, a 200 ms timeout and
//!   one retry on `Unavailable`; every failure is an error, which callers treat as a deny.
//!
//! - [`Authorizer`] puts the client behind its own decision cache: exact SHA-256 keys,
//!   coalesced misses, separate allow and deny TTLs, sensitive actions never cached, targeted
//!   invalidation by tenant, principal, resource or policy epoch.
//! - [`AuthorizeLayer`] maps each request to a [`Target`] (tenant, resource, action) and
//!   answers 403 for a deny and 503 when no decision can be made, with no policy detail.

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cache;
mod client;
mod layer;
mod principal;
mod target;

pub use cache::{Authorizer, AuthorizerBuilder, CacheStats, LATENCY_BUCKETS_US};
pub use client::{Decisions, MAX_ACTIONS, PdpClient, PdpClientBuilder, Resource};
pub use layer::{Authorize, AuthorizeLayer, AuthorizeRejection, ResponseFuture};
pub use principal::{PrincipalOptions, Tenant, principal_for};
pub use target::{MapRequest, PathPattern, Target};

/// Why an authorization could not be decided. Every variant means "deny": callers answer 503
/// for [`AuthzError::Unavailable`] and 403 otherwise, with no policy detail.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthzError {
    /// The PDP did not answer in time or could not be reached (after one retry).
    #[error("the policy decision point is unavailable")]
    Unavailable,
    /// The PDP answered with another gRPC error.
    #[error("the policy decision point answered {0:?}")]
    Pdp(tonic::Code),
    /// The PDP's answer does not match the question.
    #[error("the policy decision point's answer does not match the request")]
    Malformed,
    /// No action, or more than [`MAX_ACTIONS`], in one check.
    #[error("a check asks about 1 to {MAX_ACTIONS} actions")]
    TooManyActions,
    /// The caller holds no role in the tenant: denied without asking the PDP.
    #[error("the caller has no role in the tenant")]
    NoRole,
    /// An empty org or team, or one that cannot be a Cerbos scope while scoping by tenant.
    #[error("the request's tenant is not usable")]
    InvalidTenant,
    /// The client settings are unsafe or invalid (refused at build time).
    #[error("PDP client settings: {0}")]
    Config(String),
    /// The client settings are insecure for production (refused at build time, every finding
    /// listed).
    #[error(transparent)]
    Posture(#[from] palisade_core::PostureError),
}
