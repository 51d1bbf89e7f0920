//! The replay guard: a (key id, nonce) pair is accepted once.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::StoreError;

/// Where seen nonces live until their window closes.
pub trait NonceStore: Send + Sync + 'static {
    /// Records (`key_id`, `nonce`) for `ttl` if it was not recorded: `true` the first time,
    /// `false` for a replay. Atomic: of any number of concurrent calls with one pair, exactly
    /// one answers `true`. `now` is the verifier's clock.
    fn insert_once(
        &self,
        key_id: &str,
        nonce: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

impl<N: NonceStore> NonceStore for Arc<N> {
    fn insert_once(
        &self,
        key_id: &str,
        nonce: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).insert_once(key_id, nonce, ttl, now)
    }
}

/// An in-memory [`NonceStore`] for a single process.
///
/// It holds at most `capacity` live nonces (default 1,000,000); when full after dropping
/// expired ones it refuses new nonces with an error, so the request is refused (fail closed)
/// rather than the guard forgetting nonces still inside their window. Only requests whose
/// signature verified reach the store, so filling it takes valid credentials.
#[derive(Clone)]
pub struct MemoryNonceStore {
    inner: Arc<Mutex<Seen>>,
    capacity: usize,
}

struct Seen {
    /// SHA-256 of (key id, nonce): a fixed 32 bytes per entry whatever the lengths.
    expiry: HashMap<[u8; 32], SystemTime>,
    next_sweep: Option<SystemTime>,
}

impl fmt::Debug for MemoryNonceStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryNonceStore")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryNonceStore {
    fn default() -> Self {
        Self::with_capacity(1_000_000)
    }
}

impl MemoryNonceStore {
    /// A store holding up to 1,000,000 live nonces.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding up to `capacity` live nonces.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Seen {
                expiry: HashMap::new(),
                next_sweep: None,
            })),
            capacity,
        }
    }

    /// How many nonces are held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |s| s.expiry.len())
    }

    /// Whether no nonce is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert_now(
        &self,
        key_id: &str,
        nonce: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut seen = self
            .inner
            .lock()
            .map_err(|_| StoreError::new("nonce store lock poisoned", None))?;
        let key: [u8; 32] = {
            use sha2::Digest as _;
            let mut hasher = sha2::Sha256::new();
            hasher.update((key_id.len() as u64).to_be_bytes());
            hasher.update(key_id.as_bytes());
            hasher.update(nonce.as_bytes());
            hasher.finalize().into()
        };
        if seen.expiry.get(&key).is_some_and(|&until| until > now) {
            return Ok(false);
        }
        if seen.expiry.len() >= self.capacity || seen.next_sweep.is_some_and(|t| t <= now) {
            seen.expiry.retain(|_, until| *until > now);
            seen.next_sweep = Some(now + ttl);
            if seen.expiry.len() >= self.capacity {
                return Err(StoreError::new("nonce store is full", None));
            }
        }
        if seen.next_sweep.is_none() {
            seen.next_sweep = Some(now + ttl);
        }
        seen.expiry.insert(key, now + ttl);
        Ok(true)
    }
}

impl NonceStore for MemoryNonceStore {
    fn insert_once(
        &self,
        key_id: &str,
        nonce: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        std::future::ready(self.insert_now(key_id, nonce, ttl, now))
    }
}
