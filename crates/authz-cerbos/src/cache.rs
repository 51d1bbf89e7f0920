//! The decision cache and [`Authorizer`], the PDP client behind it.
//!
//! - **Isolated:** each [`Authorizer`] owns its own `moka` cache; nothing else shares it.
//! - **Near table:** the hottest decisions are also kept in a small sharded table in front of
//!   `moka`, so a hit never pays `moka`'s inline housekeeping.
//! - **Exact keys:** a decision is keyed by SHA-256 over a canonical, length-prefixed encoding
//!   of a version tag, the epochs (below), the tenant (the principal's `org` and `team`
//!   attributes and its scope), the principal's issuer and id, its sorted roles and all its
//!   attributes, the resource's kind, id and attributes (sorted), and the action. Two requests
//!   share an entry only if the PDP would see the same question.
//! - **Coalesced:** concurrent misses of one key make one PDP call; errors are never cached.
//! - **Allow and deny age apart:** separate TTLs (default 30 s and 5 s).
//! - **Sensitive actions are never cached** (MFA-gated or destructive ones, configured).
//! - **Targeted invalidation:** by tenant, by principal, by resource, or everything (a policy
//!   deploy). Invalidation bumps an epoch that is part of every key, so an answer still in
//!   flight when it happens lands under a key no lookup will form again.
//! - **Measured:** [`Authorizer::stats`] reports hits, misses, PDP calls and a PDP latency
//!   histogram.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use cerbos::genpb::cerbos::engine::v1::Principal;
use cerbos::genpb::google::protobuf::{Value, value::Kind};
use sha2::{Digest, Sha256};

use crate::AuthzError;
use crate::client::{Decisions, MAX_ACTIONS, PdpClient, Resource};

/// Upper bounds (microseconds) of the PDP latency histogram's buckets; the last bucket counts
/// everything slower.
pub const LATENCY_BUCKETS_US: [u64; 10] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 250_000,
];

/// What the cache and the PDP did so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Decisions answered from the cache.
    pub hits: u64,
    /// Cacheable decisions the cache did not hold.
    pub misses: u64,
    /// Calls made to the PDP (coalesced misses count once; sensitive actions count).
    pub pdp_calls: u64,
    /// PDP calls that failed (timeouts, unavailable, malformed answers).
    pub pdp_errors: u64,
    /// PDP call latencies, per bucket of [`LATENCY_BUCKETS_US`] (one more for the rest).
    pub latency_us: Vec<u64>,
}

impl CacheStats {
    /// Hits over lookups (0 when there was none).
    pub fn hit_ratio(&self) -> f64 {
        let lookups = self.hits + self.misses;
        if lookups == 0 {
            0.0
        } else {
            self.hits as f64 / lookups as f64
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    pdp_calls: AtomicU64,
    pdp_errors: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
}

/// Epochs that invalidate: one global, and one per invalidated tenant, principal or resource.
/// The global epoch is read and bumped under the same lock as the targeted ones, so a key is
/// never formed from a global epoch older than the targeted epochs it is read with.
#[derive(Debug, Default)]
struct Epochs {
    global: AtomicU64,
    targeted: RwLock<HashMap<(u8, String), u64>>,
}

/// Invalidated targets remembered at most; past it, everything is invalidated at once.
const MAX_TARGETED: usize = 10_000;

const TENANT: u8 = 1;
const PRINCIPAL: u8 = 2;
const RESOURCE: u8 = 3;

impl Epochs {
    fn bump(&self, kind: u8, target: String) {
        let mut map = self
            .targeted
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_TARGETED && !map.contains_key(&(kind, target.clone())) {
            map.clear();
            self.global.fetch_add(1, Ordering::AcqRel);
        }
        *map.entry((kind, target)).or_insert(0) += 1;
    }

    /// The epochs a key includes: global, tenant, principal, resource (whose names are only
    /// made when some target was invalidated).
    fn read(
        &self,
        tenant: &str,
        principal: impl FnOnce() -> String,
        resource: impl FnOnce() -> String,
    ) -> [u64; 4] {
        let map = self.targeted.read().unwrap_or_else(PoisonError::into_inner);
        let global = self.global.load(Ordering::Acquire);
        if map.is_empty() {
            return [global, 0, 0, 0];
        }
        let get = |kind: u8, target: &str| map.get(&(kind, target.to_owned())).copied();
        [
            global,
            get(TENANT, tenant).unwrap_or(0),
            get(PRINCIPAL, &principal()).unwrap_or(0),
            get(RESOURCE, &resource()).unwrap_or(0),
        ]
    }
}

/// Builds an [`Authorizer`].
#[derive(Debug)]
pub struct AuthorizerBuilder {
    pdp: PdpClient,
    allow_ttl: Duration,
    deny_ttl: Duration,
    capacity: u64,
    sensitive: HashSet<String>,
    version_tag: String,
}

/// The PDP client behind its own decision cache (see the module docs). Cloning shares both.
#[derive(Clone, Debug)]
pub struct Authorizer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pdp: PdpClient,
    cache: moka::future::Cache<[u8; 32], Cached>,
    near: Near,
    base: Instant,
    allow_ttl: Duration,
    deny_ttl: Duration,
    sensitive: HashSet<String>,
    version_tag: String,
    epochs: Epochs,
    counters: Counters,
}

/// Expiry per entry: allow and deny age apart.
struct ByEffect {
    allow: Duration,
    deny: Duration,
}

impl moka::Expiry<[u8; 32], Cached> for ByEffect {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        cached: &Cached,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(if cached.allowed {
            self.allow
        } else {
            self.deny
        })
    }

    /// An entry written again (two askers racing) ages by its new effect, from now.
    fn expire_after_update(
        &self,
        key: &[u8; 32],
        cached: &Cached,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, cached, updated_at)
    }
}

/// A cached decision and when it expires (nanoseconds on the authorizer's clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cached {
    allowed: bool,
    expires: u64,
}

/// Shards of the near table.
const NEAR_SHARDS: usize = 16;

/// A small table in front of the `moka` cache for the hottest decisions: a hit takes one
/// uncontended lock and no cache housekeeping (`moka` settles its read log inline every 64
/// reads, which would put every 64th hit at several microseconds). Entries carry the expiry
/// of their `moka` entry; keys already hold the epochs, so invalidation needs nothing here
/// except on [`Authorizer::invalidate_all`]. Bounded: a full shard drops its expired
/// entries, or else all of them (they are refilled from `moka`).
#[derive(Debug)]
struct Near {
    shards: Box<[Mutex<NearShard>]>,
    per_shard: usize,
}

/// One shard of the near table.
type NearShard = HashMap<[u8; 32], Cached, BuildHasherDefault<KeyHasher>>;

/// Keys are SHA-256 digests: their first word is already a good hash.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
}

impl Near {
    fn new(capacity: u64) -> Self {
        // As large as the cache (none for a cache of none), at most 16,384.
        let total = usize::try_from(capacity).unwrap_or(usize::MAX).min(16_384);
        Self {
            shards: (0..NEAR_SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: total / NEAR_SHARDS,
        }
    }

    fn shard(&self, key: &[u8; 32]) -> &Mutex<NearShard> {
        &self.shards[usize::from(key[31]) % NEAR_SHARDS]
    }

    fn get(&self, key: &[u8; 32], now: u64) -> Option<bool> {
        let shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shard
            .get(key)
            .filter(|c| now < c.expires)
            .map(|c| c.allowed)
    }

    fn put(&self, key: [u8; 32], cached: Cached, now: u64) {
        if self.per_shard == 0 {
            // A cache of no decisions keeps none here either.
            return;
        }
        let mut shard = self
            .shard(&key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, c| now < c.expires);
            if shard.len() >= self.per_shard {
                shard.clear();
            }
        }
        shard.insert(key, cached);
    }

    fn clear(&self) {
        for shard in self.shards.iter() {
            shard.lock().unwrap_or_else(PoisonError::into_inner).clear();
        }
    }
}

impl Authorizer {
    /// An authorizer asking `pdp`, with a cache of 100,000 decisions, allow TTL 30 s and deny
    /// TTL 5 s.
    pub fn builder(pdp: PdpClient) -> AuthorizerBuilder {
        AuthorizerBuilder {
            pdp,
            allow_ttl: Duration::from_secs(30),
            deny_ttl: Duration::from_secs(5),
            capacity: 100_000,
            sensitive: HashSet::new(),
            version_tag: "v1".to_owned(),
        }
    }
}

impl AuthorizerBuilder {
    /// How long an allow stays cached.
    pub fn allow_ttl(mut self, ttl: Duration) -> Self {
        self.allow_ttl = ttl;
        self
    }

    /// How long a deny stays cached.
    pub fn deny_ttl(mut self, ttl: Duration) -> Self {
        self.deny_ttl = ttl;
        self
    }

    /// The most decisions held.
    pub fn capacity(mut self, decisions: u64) -> Self {
        self.capacity = decisions;
        self
    }

    /// Actions never cached (MFA-gated or destructive): every check asks the PDP.
    pub fn sensitive<I, A>(mut self, actions: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<String>,
    {
        self.sensitive.extend(actions.into_iter().map(Into::into));
        self
    }

    /// A tag in every key (change it with the shape of principals or resources).
    pub fn version_tag(mut self, tag: impl Into<String>) -> Self {
        self.version_tag = tag.into();
        self
    }

    /// The authorizer.
    pub fn build(self) -> Authorizer {
        let near = Near::new(self.capacity);
        let cache = moka::future::Cache::builder()
            .max_capacity(self.capacity)
            .expire_after(ByEffect {
                allow: self.allow_ttl,
                deny: self.deny_ttl,
            })
            .build();
        Authorizer {
            inner: Arc::new(Inner {
                pdp: self.pdp,
                cache,
                near,
                base: Instant::now(),
                allow_ttl: self.allow_ttl,
                deny_ttl: self.deny_ttl,
                sensitive: self.sensitive,
                version_tag: self.version_tag,
                epochs: Epochs::default(),
                counters: Counters::default(),
            }),
        }
    }
}

/// Canonical, length-prefixed encoding into a hash, through a stack buffer (one hash update
/// per 512 bytes rather than one per field).
struct Canon {
    hash: Sha256,
    buf: [u8; 512],
    len: usize,
}

/// Up to this many attributes (or roles) are sorted on the stack.
const SORT_ON_STACK: usize = 32;

impl Canon {
    fn new() -> Self {
        Self {
            hash: Sha256::new(),
            buf: [0; 512],
            len: 0,
        }
    }

    fn raw(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            if self.len == self.buf.len() {
                self.hash.update(self.buf);
                self.len = 0;
            }
            let n = b.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
            self.len += n;
            b = &b[n..];
        }
    }

    fn finish(mut self) -> [u8; 32] {
        self.hash.update(&self.buf[..self.len]);
        self.hash.finalize().into()
    }

    fn count(&mut self, n: usize) {
        self.raw(&(n as u64).to_be_bytes());
    }

    fn text(&mut self, s: &str) {
        self.count(s.len());
        self.raw(s.as_bytes());
    }

    fn tag(&mut self, t: u8) {
        self.raw(&[t]);
    }

    fn value(&mut self, v: &Value) {
        match &v.kind {
            None | Some(Kind::NullValue(_)) => self.tag(0),
            Some(Kind::NumberValue(n)) => {
                self.tag(1);
                self.raw(&n.to_bits().to_be_bytes());
            }
            Some(Kind::StringValue(s)) => {
                self.tag(2);
                self.text(s);
            }
            Some(Kind::BoolValue(b)) => {
                self.tag(3);
                self.raw(&[u8::from(*b)]);
            }
            Some(Kind::StructValue(s)) => {
                self.tag(4);
                self.map(&s.fields);
            }
            Some(Kind::ListValue(l)) => {
                self.tag(5);
                self.count(l.values.len());
                l.values.iter().for_each(|v| self.value(v));
            }
        }
    }

    /// A set of texts, sorted (order-free), duplicates counted once.
    fn set<'a>(&mut self, items: impl ExactSizeIterator<Item = &'a str> + Clone) {
        if items.len() <= SORT_ON_STACK {
            let mut sorted = [""; SORT_ON_STACK];
            let n = items.len();
            for (slot, item) in sorted.iter_mut().zip(items) {
                *slot = item;
            }
            let sorted = &mut sorted[..n];
            sorted.sort_unstable();
            let unique = sorted
                .iter()
                .enumerate()
                .filter(|(i, s)| *i == 0 || sorted[i - 1] != **s);
            self.count(unique.clone().count());
            unique.for_each(|(_, s)| self.text(s));
        } else {
            let sorted: BTreeSet<&str> = items.collect();
            self.count(sorted.len());
            sorted.iter().for_each(|s| self.text(s));
        }
    }

    fn map(&mut self, m: &HashMap<String, Value>) {
        self.count(m.len());
        if m.len() <= SORT_ON_STACK {
            let mut sorted: [Option<(&String, &Value)>; SORT_ON_STACK] = [None; SORT_ON_STACK];
            for (slot, entry) in sorted.iter_mut().zip(m) {
                *slot = Some(entry);
            }
            let sorted = &mut sorted[..m.len()];
            sorted.sort_unstable_by(|a, b| a.map(|e| e.0).cmp(&b.map(|e| e.0)));
            for (k, v) in sorted.iter().flatten() {
                self.text(k);
                self.value(v);
            }
        } else {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for k in keys {
                self.text(k);
                self.value(&m[k]);
            }
        }
    }
}

fn text_attr<'a>(p: &'a Principal, name: &str) -> &'a str {
    match p.attr.get(name).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(s)) => s,
        _ => "",
    }
}

impl Authorizer {
    fn key(&self, p: &Principal, r: &Resource, action: &str, epochs: [u64; 4]) -> [u8; 32] {
        let mut c = Canon::new();
        c.text("palisade-authz-cerbos decision");
        c.text(&self.inner.version_tag);
        epochs.iter().for_each(|e| c.raw(&e.to_be_bytes()));
        c.text(text_attr(p, "org"));
        c.text(text_attr(p, "team"));
        c.text(&p.scope);
        c.text(&p.policy_version);
        c.text(text_attr(p, "issuer"));
        c.text(&p.id);
        c.set(p.roles.iter().map(String::as_str));
        c.map(&p.attr);
        c.text(r.kind());
        c.text(r.id());
        c.map(r.attributes());
        c.text(action);
        c.finish()
    }

    /// Nanoseconds since the authorizer was built (monotonic).
    fn now(&self) -> u64 {
        u64::try_from(self.inner.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A decision to cache now, with the expiry of its effect.
    fn cached(&self, allowed: bool) -> Cached {
        let ttl = if allowed {
            self.inner.allow_ttl
        } else {
            self.inner.deny_ttl
        };
        Cached {
            allowed,
            expires: self
                .now()
                .saturating_add(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX)),
        }
    }

    fn epochs(&self, p: &Principal, r: &Resource) -> [u64; 4] {
        self.inner.epochs.read(
            text_attr(p, "org"),
            || principal_target(text_attr(p, "issuer"), &p.id),
            || resource_target(r.kind(), r.id()),
        )
    }

    async fn ask(
        &self,
        principal: Principal,
        resource: Resource,
        actions: &[&str],
        request_id: &str,
    ) -> Result<Decisions, AuthzError> {
        let counters = &self.inner.counters;
        counters.pdp_calls.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let answer = self
            .inner
            .pdp
            .check(principal, resource, actions, request_id)
            .await;
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|&limit| us <= limit)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        counters.latency[bucket].fetch_add(1, Ordering::Relaxed);
        metrics::histogram!("palisade_authz_pdp_seconds").record(started.elapsed().as_secs_f64());
        if answer.is_err() {
            counters.pdp_errors.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("palisade_authz_pdp_errors_total").increment(1);
        }
        answer
    }

    /// Whether `principal` may take `action` on `resource`: from the cache, or from one PDP
    /// call shared by concurrent askers. Sensitive actions always ask the PDP. Any error is an
    /// error (a deny), never cached.
    pub async fn check(
        &self,
        principal: &Principal,
        resource: &Resource,
        action: &str,
        request_id: &str,
    ) -> Result<bool, AuthzError> {
        if self.inner.sensitive.contains(action) {
            let answer = self
                .ask(principal.clone(), resource.clone(), &[action], request_id)
                .await?;
            return Ok(answer.allowed(action));
        }
        let key = self.key(
            principal,
            resource,
            action,
            self.epochs(principal, resource),
        );
        let counters = &self.inner.counters;
        let now = self.now();
        if let Some(allowed) = self.inner.near.get(&key, now) {
            counters.hits.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("palisade_authz_cache_total", "result" => "hit").increment(1);
            return Ok(allowed);
        }
        // Not near: from `moka`, or one PDP call shared by concurrent askers.
        let cached = match self.inner.cache.get(&key).await {
            Some(cached) => {
                counters.hits.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("palisade_authz_cache_total", "result" => "hit").increment(1);
                cached
            }
            None => {
                counters.misses.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("palisade_authz_cache_total", "result" => "miss").increment(1);
                self.inner
                    .cache
                    .try_get_with(key, async {
                        let allowed = self
                            .ask(principal.clone(), resource.clone(), &[action], request_id)
                            .await?
                            .allowed(action);
                        Ok::<_, AuthzError>(self.cached(allowed))
                    })
                    .await
                    .map_err(|e| (*e).clone())?
            }
        };
        self.inner.near.put(key, cached, now);
        Ok(cached.allowed)
    }

    /// Which of `actions` (up to [`MAX_ACTIONS`]) `principal` may take on `resource`: cached
    /// answers, and one PDP call for the rest (a front end gating its routes on the policy
    /// the backend enforces).
    pub async fn permitted(
        &self,
        principal: &Principal,
        resource: &Resource,
        actions: &[&str],
        request_id: &str,
    ) -> Result<Decisions, AuthzError> {
        if actions.is_empty() || actions.len() > MAX_ACTIONS {
            return Err(AuthzError::TooManyActions);
        }
        let epochs = self.epochs(principal, resource);
        let mut known = Vec::new();
        let mut unknown = Vec::new();
        for &action in actions {
            let key = self.key(principal, resource, action, epochs);
            let cached = if self.inner.sensitive.contains(action) {
                None
            } else {
                match self.inner.near.get(&key, self.now()) {
                    Some(allowed) => Some(allowed),
                    None => self.inner.cache.get(&key).await.map(|c| c.allowed),
                }
            };
            match cached {
                Some(allowed) => {
                    self.inner.counters.hits.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("palisade_authz_cache_total", "result" => "hit").increment(1);
                    known.push((action, allowed));
                }
                None => {
                    if !self.inner.sensitive.contains(action) {
                        self.inner.counters.misses.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("palisade_authz_cache_total", "result" => "miss")
                            .increment(1);
                    }
                    unknown.push((action, key));
                }
            }
        }
        if !unknown.is_empty() {
            let asked: Vec<&str> = unknown.iter().map(|(a, _)| *a).collect();
            let answer = self
                .ask(principal.clone(), resource.clone(), &asked, request_id)
                .await?;
            for (action, key) in unknown {
                let allowed = answer.allowed(action);
                if !self.inner.sensitive.contains(action) {
                    let cached = self.cached(allowed);
                    self.inner.cache.insert(key, cached).await;
                    self.inner.near.put(key, cached, self.now());
                }
                known.push((action, allowed));
            }
        }
        let allowed = actions
            .iter()
            .filter(|a| known.iter().any(|(k, ok)| k == *a && *ok))
            .copied();
        Ok(Decisions::from_allowed(allowed))
    }

    /// Forgets every decision about `org` (its roles or memberships changed).
    pub fn invalidate_tenant(&self, org: &str) {
        self.inner.epochs.bump(TENANT, org.to_owned());
    }

    /// Forgets every decision about the principal `issuer` + `id`.
    pub fn invalidate_principal(&self, issuer: &str, id: &str) {
        self.inner
            .epochs
            .bump(PRINCIPAL, principal_target(issuer, id));
    }

    /// Forgets every decision about resource `kind` / `id`.
    pub fn invalidate_resource(&self, kind: &str, id: &str) {
        self.inner.epochs.bump(RESOURCE, resource_target(kind, id));
    }

    /// Forgets every decision (after a policy deploy).
    pub fn invalidate_all(&self) {
        {
            let _map = self
                .inner
                .epochs
                .targeted
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            self.inner.epochs.global.fetch_add(1, Ordering::AcqRel);
        }
        self.inner.cache.invalidate_all();
        self.inner.near.clear();
    }

    /// Counts so far.
    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            pdp_calls: c.pdp_calls.load(Ordering::Relaxed),
            pdp_errors: c.pdp_errors.load(Ordering::Relaxed),
            latency_us: c
                .latency
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// An unambiguous name for a principal (issuer and id, length-prefixed).
fn principal_target(issuer: &str, id: &str) -> String {
    format!("{}:{issuer}{id}", issuer.len())
}

/// An unambiguous name for a resource (kind and id, length-prefixed).
fn resource_target(kind: &str, id: &str) -> String {
    format!("{}:{kind}{id}", kind.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::{string, strings};

    fn authorizer() -> Authorizer {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        let pdp = PdpClient::builder("http://127.0.0.1:9")
            .insecure_plaintext_loopback()
            .profile(palisade_core::Profile::Development)
            .build()
            .expect("client");
        Authorizer::builder(pdp).build()
    }

    fn principal() -> Principal {
        Principal {
            id: "alice".into(),
            roles: vec!["member".into(), "editor".into()],
            attr: [
                ("org".to_owned(), string("org-1")),
                ("amr".to_owned(), strings(["otp"])),
            ]
            .into_iter()
            .collect(),
            ..Principal::default()
        }
    }

    #[test]
    fn keys_cover_every_part_of_the_question() {
        let a = authorizer();
        let p = principal();
        let r = Resource::new("document", "doc-1").attr("org", "org-1");
        let base = a.key(&p, &r, "read", [0; 4]);
        assert_eq!(base, a.key(&p, &r, "read", [0; 4]));
        // Role order does not matter; everything else does.
        let mut reordered = p.clone();
        reordered.roles.reverse();
        assert_eq!(base, a.key(&reordered, &r, "read", [0; 4]));
        let mut changes: Vec<[u8; 32]> = Vec::new();
        let mut q = p.clone();
        q.id = "bob".into();
        changes.push(a.key(&q, &r, "read", [0; 4]));
        let mut q = p.clone();
        q.roles.push("admin".into());
        changes.push(a.key(&q, &r, "read", [0; 4]));
        let mut q = p.clone();
        q.attr.insert("org".into(), string("org-2"));
        changes.push(a.key(&q, &r, "read", [0; 4]));
        let mut q = p.clone();
        q.attr.insert("mfa".into(), crate::principal::boolean(true));
        changes.push(a.key(&q, &r, "read", [0; 4]));
        let mut q = p.clone();
        q.scope = "org-1".into();
        changes.push(a.key(&q, &r, "read", [0; 4]));
        changes.push(a.key(&p, &r.clone().attr("org", "org-2"), "read", [0; 4]));
        changes.push(a.key(
            &p,
            &Resource::new("document", "doc-2").attr("org", "org-1"),
            "read",
            [0; 4],
        ));
        changes.push(a.key(
            &p,
            &Resource::new("invoice", "doc-1").attr("org", "org-1"),
            "read",
            [0; 4],
        ));
        changes.push(a.key(&p, &r, "update", [0; 4]));
        changes.push(a.key(&p, &r, "read", [1, 0, 0, 0]));
        changes.push(a.key(&p, &r, "read", [0, 0, 1, 0]));
        // Moving bytes between neighbouring fields changes the key (length prefixes).
        changes.push(a.key(
            &p,
            &Resource::new("documentd", "oc-1").attr("org", "org-1"),
            "read",
            [0; 4],
        ));
        for (i, k) in changes.iter().enumerate() {
            assert_ne!(*k, base, "change {i} kept the key");
        }
        let distinct: HashSet<_> = changes.iter().collect();
        assert_eq!(distinct.len(), changes.len());
    }

    #[test]
    fn the_near_table_expires_and_stays_bounded() {
        let near = Near::new(32);
        let key = |i: u8| {
            let mut k = [0u8; 32];
            k[0] = i;
            k
        };
        let c = |allowed, expires| Cached { allowed, expires };
        near.put(key(1), c(true, 10), 0);
        assert_eq!(near.get(&key(1), 9), Some(true));
        assert_eq!(near.get(&key(1), 10), None);
        // Every key lands in shard 0 here (last byte 0): two per shard at most.
        for i in 0..50 {
            near.put(key(i), c(false, 100), 0);
        }
        let held = near.shards[0].lock().map(|s| s.len()).unwrap_or(usize::MAX);
        assert!(held <= near.per_shard, "{held}");
        near.clear();
        assert_eq!(near.get(&key(49), 0), None);
    }

    #[test]
    fn allows_and_denies_age_apart() {
        use moka::Expiry as _;
        let e = ByEffect {
            allow: Duration::from_secs(30),
            deny: Duration::from_secs(5),
        };
        let now = Instant::now();
        let c = |allowed| Cached {
            allowed,
            expires: 0,
        };
        assert_eq!(
            e.expire_after_create(&[0; 32], &c(true), now),
            Some(e.allow)
        );
        assert_eq!(
            e.expire_after_create(&[0; 32], &c(false), now),
            Some(e.deny)
        );
    }

    #[test]
    fn invalidation_moves_only_its_target() {
        let a = authorizer();
        let p = principal();
        let r = Resource::new("document", "doc-1").attr("org", "org-1");
        let before = a.epochs(&p, &r);
        a.invalidate_tenant("org-2");
        a.invalidate_resource("document", "doc-2");
        a.invalidate_principal("other-issuer", "alice");
        assert_eq!(a.epochs(&p, &r), before);
        a.invalidate_tenant("org-1");
        let after_tenant = a.epochs(&p, &r);
        assert_ne!(after_tenant, before);
        a.invalidate_principal("", "alice");
        assert_ne!(a.epochs(&p, &r), after_tenant);
        let e = a.epochs(&p, &r);
        a.invalidate_resource("document", "doc-1");
        assert_ne!(a.epochs(&p, &r), e);
        let e = a.epochs(&p, &r);
        a.invalidate_all();
        assert_ne!(a.epochs(&p, &r), e);
    }
}
