//! Per-org tiers and feature-flag overrides, looked up through a trait and cached.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use crate::hash::{KeyedHash, PassThrough, copy_small};
use crate::store::StoreError;

/// What applies to one org: its tier (which selects the quotas) and its overrides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgPolicy {
    tier: Arc<str>,
    unlimited: bool,
    raise: Arc<[(Arc<str>, u32)]>,
    shadow: Arc<[Arc<str>]>,
}

impl Default for OrgPolicy {
    fn default() -> Self {
        Self::tier(DEFAULT_TIER)
    }
}

/// The tier of orgs without one, and of requests without an org.
pub const DEFAULT_TIER: &str = "default";

impl OrgPolicy {
    /// An org of `tier`, without overrides.
    pub fn tier(tier: &str) -> Self {
        Self {
            tier: tier.into(),
            unlimited: false,
            raise: Arc::from([]),
            shadow: Arc::from([]),
        }
    }

    /// The org is not limited at all (a flag for an incident, a migration, an internal org).
    pub fn unlimited(mut self) -> Self {
        self.unlimited = true;
        self
    }

    /// Multiplies `rule`'s quota (burst and rate) by `factor` for this org.
    pub fn raise(mut self, rule: &str, factor: u32) -> Self {
        let mut raise: Vec<_> = self.raise.iter().cloned().collect();
        raise.retain(|(r, _)| &**r != rule);
        raise.push((rule.into(), factor.max(1)));
        self.raise = raise.into();
        self
    }

    /// Puts `rule` in shadow mode for this org: counted and reported, never refusing.
    pub fn shadow(mut self, rule: &str) -> Self {
        let mut shadow: Vec<_> = self.shadow.iter().cloned().collect();
        if !shadow.iter().any(|r| &**r == rule) {
            shadow.push(rule.into());
        }
        self.shadow = shadow.into();
        self
    }

    /// The tier's name.
    pub fn tier_name(&self) -> &str {
        &self.tier
    }

    /// Whether the org is unlimited.
    pub fn is_unlimited(&self) -> bool {
        self.unlimited
    }

    /// The factor `rule`'s quota is raised by (1 when not raised).
    pub fn factor(&self, rule: &str) -> u32 {
        self.raise
            .iter()
            .find(|(r, _)| &**r == rule)
            .map_or(1, |(_, f)| *f)
    }

    /// Whether `rule` only reports for this org.
    pub fn is_shadow(&self, rule: &str) -> bool {
        self.shadow.iter().any(|r| &**r == rule)
    }
}

/// Where org policies come from (a database, a feature-flag service). The layer caches the
/// answers for a configurable time.
pub trait OrgPolicies: Send + Sync + 'static {
    /// The policy of `org`. An error refuses the request with 503 (the tier decides the
    /// quota: without it nothing can be decided safely).
    fn policy(&self, org: &str) -> impl Future<Output = Result<OrgPolicy, StoreError>> + Send;
}

/// The object-safe form the layer holds.
pub(crate) trait DynPolicies: Send + Sync + 'static {
    fn policy_boxed<'a>(
        &'a self,
        org: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<OrgPolicy, StoreError>> + Send + 'a>>;
}

impl<P: OrgPolicies> DynPolicies for P {
    fn policy_boxed<'a>(
        &'a self,
        org: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<OrgPolicy, StoreError>> + Send + 'a>> {
        Box::pin(self.policy(org))
    }
}

/// Policies kept in memory and changed at runtime; orgs not listed get the default policy.
#[derive(Clone, Debug, Default)]
pub struct StaticPolicies {
    inner: Arc<RwLock<HashMap<String, OrgPolicy>>>,
}

impl StaticPolicies {
    /// No org listed: every org gets the default tier.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `org`'s policy (seen by layers once their cached copy expires).
    pub fn set(&self, org: &str, policy: OrgPolicy) {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(org.to_owned(), policy);
    }

    /// Sets `org`'s policy, builder style.
    pub fn with(self, org: &str, policy: OrgPolicy) -> Self {
        self.set(org, policy);
        self
    }
}

impl OrgPolicies for StaticPolicies {
    async fn policy(&self, org: &str) -> Result<OrgPolicy, StoreError> {
        Ok(self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(org)
            .cloned()
            .unwrap_or_default())
    }
}

/// Cached values and when each expires.
type Entries<V> = HashMap<CacheKey, (V, u64), std::hash::BuildHasherDefault<PassThrough>>;

/// A cache key kept inside the table (no pointer to follow on a lookup): keys of up to 47
/// bytes as they are, longer ones as 128 bits of keyed hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CacheKey {
    /// A keyed hash of the key text: the table's hash (written once, not the six words).
    hash: u64,
    words: [u64; 6],
}

impl std::hash::Hash for CacheKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl CacheKey {
    #[inline]
    fn of(key: Option<&str>, keyed: &KeyedHash) -> Self {
        let Some(key) = key else {
            // No key (a request without an org) has an entry of its own: a first byte of 0xfe
            // is neither a length (at most 47) nor the long-key mark.
            return Self {
                hash: 0xfe,
                words: [0xfe, 0, 0, 0, 0, 0],
            };
        };
        let raw = key.as_bytes();
        let hash = keyed.hash64(key);
        let mut bytes = [0u8; 48];
        if let Some(slot) = bytes.get_mut(1..=raw.len()).filter(|_| raw.len() <= 47) {
            copy_small(slot, raw);
            bytes[0] = raw.len() as u8;
        } else {
            bytes[0] = 0xff;
            bytes[1..17].copy_from_slice(&keyed.hash128([key]).to_le_bytes());
        }
        let mut words = [0u64; 6];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            *word = u64::from_le_bytes(w);
        }
        Self { hash, words }
    }
}

/// The layer's cache of resolved org policies: bounded, entries expire after a TTL. Readers
/// use an entry in place under the read lock (no reference count to touch).
#[derive(Debug)]
pub(crate) struct PolicyCache<V> {
    map: RwLock<Entries<V>>,
    keyed: KeyedHash,
    ttl_ns: u64,
    capacity: usize,
}

impl<V> PolicyCache<V> {
    pub(crate) fn new(ttl_ns: u64, capacity: usize) -> Self {
        Self {
            map: RwLock::new(HashMap::default()),
            keyed: KeyedHash::default(),
            ttl_ns,
            capacity: capacity.max(1),
        }
    }

    /// `f` of the entry of `key`, if there is one fresh at `now` (and `f` answers).
    #[inline]
    pub(crate) fn with<R>(
        &self,
        key: Option<&str>,
        now: u64,
        f: impl FnOnce(&V) -> Option<R>,
    ) -> Option<R> {
        let key = CacheKey::of(key, &self.keyed);
        let map = self
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get(&key) {
            Some((value, expires)) if now < *expires => f(value),
            _ => None,
        }
    }

    pub(crate) fn put(&self, key: Option<&str>, value: V, now: u64) {
        let mut map = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = CacheKey::of(key, &self.keyed);
        if map.len() >= self.capacity && !map.contains_key(&key) {
            map.retain(|_, (_, expires)| now < *expires);
            if map.len() >= self.capacity {
                // Still full of fresh entries: start over rather than grow (a refill costs one
                // lookup per org).
                map.clear();
            }
        }
        map.insert(key, (value, now.saturating_add(self.ttl_ns)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_compose() {
        let p = OrgPolicy::tier("gold")
            .raise("org", 10)
            .raise("org", 3)
            .shadow("user")
            .shadow("user");
        assert_eq!(p.tier_name(), "gold");
        assert_eq!((p.factor("org"), p.factor("user")), (3, 1));
        assert!(p.is_shadow("user") && !p.is_shadow("org"));
        assert!(!p.is_unlimited() && p.clone().unlimited().is_unlimited());
        assert_eq!(OrgPolicy::default().tier_name(), DEFAULT_TIER);
    }

    #[test]
    fn cache_keys_are_exact_for_short_keys_and_hashed_for_long_ones() {
        let keyed = KeyedHash::default();
        let of = |k: &str| CacheKey::of(Some(k), &keyed);
        let a = of("acme");
        assert_eq!(a, of("acme"));
        assert_ne!(a, of("acm"));
        assert_ne!(a, of("acme\0"));
        // No org is not any org, not even an empty or NUL one.
        for k in ["", "\0", "\u{fe}"] {
            assert_ne!(CacheKey::of(None, &keyed), of(k));
        }
        let long = "x".repeat(47);
        assert_ne!(of(&long), of(&"x".repeat(48)));
        let longer = "y".repeat(100);
        assert_eq!(of(&longer), of(&longer));
        assert_ne!(of(&longer), of(&"y".repeat(101)));
    }

    #[test]
    fn the_cache_expires_and_stays_bounded() {
        let cache = PolicyCache::new(10, 2);
        let p = OrgPolicy::tier("gold");
        cache.put(Some("a"), p.clone(), 0);
        assert!(
            cache
                .with(Some("a"), 9, |p| Some(p.tier_name().to_owned()))
                .is_some()
        );
        assert!(cache.with(Some("a"), 10, |_| Some(())).is_none());
        cache.put(Some("b"), p.clone(), 0);
        cache.put(Some("c"), p.clone(), 5);
        cache.put(Some("d"), p, 5);
        assert!(cache.map.read().map(|m| m.len() <= 2).unwrap_or(false));
    }
}
