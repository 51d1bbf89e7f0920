//! Refresh-token rotation with reuse detection and family revocation (RFC 9700 §4.14).
//!
//! - Refresh tokens are opaque: `rt1.<family>.<secret>`, with 256 bits from the operating
//!   system's CSPRNG. Stores keep only an HMAC-SHA256 of the token under a [`KeyRing`] key.
//! - A *family* is one login on one device. Refreshing consumes the presented token
//!   atomically and issues its successor; the family is bound to a device id and a fingerprint
//!   of client metadata, and a refresh from other metadata is refused.
//! - Presenting a consumed token revokes the whole family (the newest token stops working
//!   too) and is refused: a thief and the victim cannot both keep refreshing.
//! - Families have an absolute lifetime and an idle timeout; logout revokes a family, "log out
//!   everywhere" all of a user's families.
//! - N concurrent refreshes of one token yield at most one valid successor, on every store.
//!
//! Stores implement [`RefreshStore`]: [`MemoryStore`] (one process); with the `redis`
//! feature, `RedisStore` (one Lua script per refresh, TTLs on every key, Redis 7+; with the
//! `redis-cluster` feature also on a Redis Cluster, every command within one slot); with the `postgres` feature, `PostgresStore` (one transaction per refresh, embedded
//! migrations applied by `migrate()`). A store that cannot be reached is an error ([`SessionError::Unavailable`]), never a
//! successful refresh.
//!
//! ```
//! use palisade_core::KeyRing;
//! use palisade_sessions::{DeviceBinding, MemoryStore, RefreshSessions, SessionError};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ring = KeyRing::parse("k1 1 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=")?;
//! let sessions = RefreshSessions::new(MemoryStore::new(), ring);
//! let phone = DeviceBinding::new("device-1", b"ua=app/1.0;os=ios");
//! let (_family, first) = sessions.start("user-1", &phone).await?;
//! let second = sessions.refresh(first.expose(), &phone).await?.token;
//! // Replaying the first token is reuse: the family is revoked, the newest token too.
//! assert_eq!(sessions.refresh(first.expose(), &phone).await.unwrap_err(), SessionError::Reused);
//! assert_eq!(sessions.refresh(second.expose(), &phone).await.unwrap_err(), SessionError::Revoked);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "local-login")]
#[cfg_attr(docsrs, doc(cfg(feature = "local-login")))]
pub mod local_login;
mod memory;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
mod postgres_store;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
mod redis_store;
mod service;
pub mod single_use;
mod store;
mod token;

pub use memory::{MemorySingleUseStore, MemoryStore};
#[cfg(feature = "postgres")]
pub use postgres_store::PostgresStore;
#[cfg(all(feature = "redis", feature = "local-login"))]
pub use redis_store::RedisAccounts;
#[cfg(feature = "redis")]
pub use redis_store::{RedisConnection, RedisSingleUseStore, RedisStore};
pub use service::{RefreshSessions, Refreshed, ReuseEvent, ReuseHook, SessionError, SessionPolicy};
#[cfg(feature = "redis")]
pub use store::redis_manager_config;
pub use store::{
    DeviceBinding, Family, FamilyId, Grace, RefreshStore, Rotation, StoreError, TokenHash,
};
#[cfg(any(feature = "redis", feature = "postgres"))]
pub use store::{check_transport, require_transport};
pub use token::RefreshToken;
