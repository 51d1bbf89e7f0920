//! The Redis [`NonceStore`]: one `SET key 1 NX PX ttl` per verified request.
//!
//! Keys are `<prefix>nonce:{<key id>}:<nonce>`: the hash tag keeps one access key's nonces on
//! one cluster slot. `SET NX` is atomic in Redis, so of any number of concurrent copies of one
//! request exactly one is accepted, across every process sharing the server. Any Redis error
//! (down, timed out, refused) is a [`StoreError`]: the request is refused, never let through.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use palisade_sessions::RedisConnection;

use crate::StoreError;
use crate::nonce::NonceStore;

/// Nonces in Redis (see the module docs).
#[derive(Clone)]
pub struct RedisNonceStore {
    conn: RedisConnection,
    prefix: Arc<str>,
    profile: Option<palisade_core::Profile>,
}

impl std::fmt::Debug for RedisNonceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisNonceStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn err(message: &str, e: redis::RedisError) -> StoreError {
    StoreError::new(message, Some(Arc::new(e)))
}

impl RedisNonceStore {
    /// Connects to `url` (`redis://` or `rediss://`); keys start with `prefix`. Under
    /// Production a plaintext URL to another machine is refused.
    pub async fn connect(
        url: &str,
        prefix: &str,
        profile: palisade_core::Profile,
    ) -> Result<Self, StoreError> {
        // Reconnects after a disconnect: refused only while Redis is unreachable.
        let conn = RedisConnection::single(url, profile, "aksk-redis-nonce-store").await?;
        Ok(Self {
            conn,
            prefix: prefix.into(),
            profile: Some(profile),
        })
    }

    /// The profile its transport was checked under.
    pub fn profile(&self) -> Option<palisade_core::Profile> {
        self.profile
    }

    /// The key a (key id, nonce) pair is stored under.
    pub fn key(&self, key_id: &str, nonce: &str) -> String {
        format!("{}nonce:{{{key_id}}}:{nonce}", self.prefix)
    }
}

impl NonceStore for RedisNonceStore {
    async fn insert_once(
        &self,
        key_id: &str,
        nonce: &str,
        ttl: Duration,
        _now: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let answer: Option<String> = redis::cmd("SET")
            .arg(self.key(key_id, nonce))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut conn)
            .await
            .map_err(|e| err("nonce insert failed", e))?;
        Ok(answer.is_some())
    }
}
