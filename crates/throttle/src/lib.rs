//! Per-org rate limiting after authentication for Tower services.
//!
//! - [`ThrottleLayer`]: the Tower layer (see [`layer`]): the org from the verified identity,
//!   claimed orgs checked, tiers and flags per org, 429 with `Retry-After` and the IETF
//!   `RateLimit` fields, a failure policy per rule;
//! - [`gcra`]: the generic cell rate algorithm in integer nanoseconds, with exact burst and
//!   rate semantics ([`Quota`], [`gcra::decide`]);
//! - [`ThrottleStore`]: limiter state for many keys, checked all-or-nothing for the several
//!   limits one request may count against ([`Limit`], [`Verdict`]);
//! - [`MemoryStore`]: the in-process store (sharded, keyed 128-bit bucket hashes, bounded with
//!   per-shard sweeps of idle buckets);
//! - `RedisStore` (feature `redis`): one Lua script per decision with Redis `TIME` as the only
//!   clock.
//!
//! ```
//! use palisade_throttle::{BucketKey, Limit, MemoryStore, Quota};
//!
//! let store = MemoryStore::new();
//! let per_org = Limit {
//!     key: BucketKey::new("acme", "org", "acme"),
//!     quota: Quota::per_minute(100)?,
//!     cost: 1,
//! };
//! let per_user = Limit {
//!     key: BucketKey {
//!         tag: "acme",
//!         rule: "user",
//!         namespace: "https://idp.example.com/realms/acme",
//!         subject: "alice",
//!     },
//!     quota: Quota::per_minute(2)?,
//!     cost: 1,
//! };
//! assert!(store.check_sync(&[per_org, per_user])?.allowed());
//! assert!(store.check_sync(&[per_org, per_user])?.allowed());
//! // The user's third request is refused, and the org's bucket is not charged for it.
//! let verdict = store.check_sync(&[per_org, per_user])?;
//! assert!(!verdict.allowed());
//! assert_eq!(verdict.decisions()[0].remaining(), 98);
//! assert_eq!(verdict.binding().map(|(i, _)| i), Some(1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod events;
pub mod gcra;
mod hash;
pub mod headers;
pub mod layer;
pub mod memory;
pub mod org;
pub mod policy;
pub mod quotas;
#[cfg(feature = "redis")]
pub mod redis_store;
pub mod rule;
pub mod store;
mod time;

pub use events::{Limited, LogEvents, StoreFailed, ThrottleEvents};
pub use gcra::{Decision, Quota, QuotaError};
pub use layer::{ConfigError, Throttle, ThrottleBuilder, ThrottleError, ThrottleLayer};
pub use memory::{MemoryStats, MemoryStore};
pub use org::OrgSource;
pub use policy::{DEFAULT_TIER, OrgPolicies, OrgPolicy, StaticPolicies};
pub use quotas::{QuotaTable, Quotas};
#[cfg(feature = "redis")]
pub use redis_store::RedisStore;
pub use rule::{FailurePolicy, Rule, Scope};
pub use store::{BucketKey, Limit, MAX_LIMITS, StoreError, ThrottleStore, Verdict};
