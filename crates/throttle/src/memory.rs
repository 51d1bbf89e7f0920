//! The in-process [`ThrottleStore`]: sharded maps from a keyed 128-bit bucket hash to the
//! bucket's theoretical arrival time.
//!
//! - **Fast:** a bucket key is hashed once, to 128 bits of keyed `foldhash` (two hashers seeded
//!   from the operating system's generator per store; the 128 bits are the map key, so no key string is stored or compared), one shard is
//!   locked for the common single-limit request, and the allow path does not allocate once the
//!   bucket exists.
//! - **Bounded:** at most `capacity` buckets. A bucket whose theoretical arrival time has passed
//!   is full again and holds no information, so it is dropped; each shard sweeps its own idle
//!   buckets when it fills and at most once a second, so a sweep touches one shard
//!   (`capacity / SHARDS` entries), never the whole store. When a shard is full of live
//!   buckets (a flood of new callers), the eighth of it nearest to full again is forgotten, so
//!   new callers are still counted; the forgotten callers lose at most the little debt they
//!   had left.
//! - **Exact:** distinct bucket keys could only share state on a 128-bit collision of a keyed
//!   hash. `foldhash` is not a cryptographic hash, but its seeds are random per store and never
//!   leave it, and a collision needs both 64-bit halves to agree.

use std::collections::HashMap;
use std::fmt;
use std::future::{Future, Ready, ready};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use palisade_core::SharedClock;

use crate::hash::{KeyedHash, PassThrough};
use crate::time::Time;

use crate::gcra::{self, Decision};
use crate::store::{BucketKey, Limit, MAX_LIMITS, StoreError, ThrottleStore, Verdict};

/// Shards of the in-process store (a power of two).
pub const SHARDS: usize = 32;

/// A bucket's identity: 128 bits of keyed hash.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Id(u64, u64);

impl std::hash::Hash for Id {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already a keyed hash: the first word is the table's hash.
        state.write_u64(self.0);
    }
}

struct Shard {
    tats: HashMap<Id, u64, BuildHasherDefault<PassThrough>>,
    /// When this shard next sweeps idle buckets (nanoseconds).
    next_sweep: u64,
}

/// The in-process store (see the module docs). Cloning shares the state.
#[derive(Clone)]
pub struct MemoryStore {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    time: Time,
    hash: KeyedHash,
    per_shard: usize,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("capacity", &(self.inner.per_shard * SHARDS))
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_capacity(1_000_000)
    }
}

/// How many buckets a store holds and the memory they use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryStats {
    /// Live buckets (idle ones not yet swept included).
    pub buckets: usize,
    /// Bytes held by the maps' tables (slots and control bytes, allocated capacity).
    pub table_bytes: usize,
}

impl MemoryStats {
    /// Table bytes per bucket (0 when empty).
    pub fn bytes_per_bucket(&self) -> f64 {
        if self.buckets == 0 {
            0.0
        } else {
            self.table_bytes as f64 / self.buckets as f64
        }
    }
}

const SWEEP_EVERY_NS: u64 = 1_000_000_000;

impl MemoryStore {
    /// A store of up to 1,000,000 buckets.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store of up to `capacity` buckets (rounded up to a multiple of [`SHARDS`]), on a
    /// monotonic clock.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::build(capacity, Time::monotonic())
    }

    /// A store of up to `capacity` buckets reading the time from `clock` (a manual clock in
    /// tests).
    pub fn with_clock(capacity: usize, clock: SharedClock) -> Self {
        Self::build(capacity, Time::Clock(clock))
    }

    fn build(capacity: usize, time: Time) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    tats: HashMap::default(),
                    next_sweep: 0,
                })
            })
            .collect();
        Self {
            inner: std::sync::Arc::new(Inner {
                shards,
                time,
                hash: KeyedHash::default(),
                per_shard,
            }),
        }
    }

    /// The buckets held and their memory.
    pub fn stats(&self) -> MemoryStats {
        let slot = std::mem::size_of::<(Id, u64)>() + 1;
        self.inner
            .shards
            .iter()
            .map(|s| {
                let shard = s.lock().unwrap_or_else(PoisonError::into_inner);
                (shard.tats.len(), shard.tats.capacity() * slot)
            })
            .fold(
                MemoryStats {
                    buckets: 0,
                    table_bytes: 0,
                },
                |acc, (n, bytes)| MemoryStats {
                    buckets: acc.buckets + n,
                    table_bytes: acc.table_bytes + bytes,
                },
            )
    }

    /// Drops every idle bucket (one shard at a time); answers how many were dropped.
    pub fn sweep(&self) -> usize {
        let now = self.inner.time.nanos();
        self.inner
            .shards
            .iter()
            .map(|s| {
                let mut shard = s.lock().unwrap_or_else(PoisonError::into_inner);
                let before = shard.tats.len();
                shard.tats.retain(|_, tat| *tat > now);
                before - shard.tats.len()
            })
            .sum()
    }

    #[inline]
    fn id(&self, key: &BucketKey<'_>) -> Id {
        let hash = self
            .inner
            .hash
            .hash128([key.tag, key.rule, key.namespace, key.subject]);
        Id((hash >> 64) as u64, hash as u64)
    }

    fn shard_of(id: &Id) -> usize {
        // The table hashes by the first word (its low bits place an entry, its top seven tag
        // it); the shard comes from the second, so every bit of the first still tells
        // entries of one shard apart.
        (id.1 >> 59) as usize & (SHARDS - 1)
    }

    /// [`ThrottleStore::check`] without the future: decides `limits` all-or-nothing now.
    pub fn check_sync(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        self.check_at(limits, self.inner.time.nanos())
    }

    #[inline]
    fn check_at(&self, limits: &[Limit<'_>], now: u64) -> Result<Verdict, StoreError> {
        match limits {
            [] => Verdict::new(&[]),
            [limit] => {
                let id = self.id(&limit.key);
                let mut shard = self.lock(Self::shard_of(&id));
                // One probe for a known bucket: decided and updated in place.
                if let Some(slot) = shard.tats.get_mut(&id) {
                    let (decision, next) = gcra::decide(&limit.quota, Some(*slot), now, limit.cost);
                    if let (true, Some(tat)) = (decision.allowed(), next) {
                        *slot = tat;
                    }
                    return Ok(Verdict::single(decision));
                }
                let (decision, next) = gcra::decide(&limit.quota, None, now, limit.cost);
                if let (true, Some(tat)) = (decision.allowed(), next) {
                    self.make_room(&mut shard, 1, now)?;
                    shard.tats.insert(id, tat);
                }
                Ok(Verdict::single(decision))
            }
            _ => self.check_many(limits, now),
        }
    }

    fn check_many(&self, limits: &[Limit<'_>], now: u64) -> Result<Verdict, StoreError> {
        if limits.len() > MAX_LIMITS {
            return Err(StoreError::new("too many limits for one request", None));
        }
        let mut ids = [Id::default(); MAX_LIMITS];
        let mut order = [(0usize, 0usize); MAX_LIMITS];
        for (i, limit) in limits.iter().enumerate() {
            ids[i] = self.id(&limit.key);
            order[i] = (Self::shard_of(&ids[i]), i);
        }
        let order = &mut order[..limits.len()];
        order.sort_unstable();
        // Lock each distinct shard once, in ascending order (no deadlock between requests).
        let mut guards: [Option<MutexGuard<'_, Shard>>; MAX_LIMITS] = Default::default();
        let mut guard_of = [0usize; MAX_LIMITS];
        let mut locked = 0;
        for (n, &(shard, i)) in order.iter().enumerate() {
            if n == 0 || order[n - 1].0 != shard {
                guards[locked] = Some(self.lock(shard));
                locked += 1;
            }
            guard_of[i] = locked - 1;
        }
        // Decide in order; a bucket named twice sees its earlier tentative charge.
        let none = Decision::new(true, 0, 0, Duration::ZERO, Duration::ZERO);
        let mut decisions = [none; MAX_LIMITS];
        let mut pending: [(Id, Option<u64>); MAX_LIMITS] = [(Id::default(), None); MAX_LIMITS];
        for (i, limit) in limits.iter().enumerate() {
            let id = ids[i];
            let earlier = pending[..i].iter().rev().find(|(p, _)| *p == id);
            let tat = match earlier {
                Some((_, tat)) => *tat,
                None => guards[guard_of[i]]
                    .as_ref()
                    .and_then(|g| g.tats.get(&id).copied()),
            };
            let (decision, next) = gcra::decide(&limit.quota, tat, now, limit.cost);
            decisions[i] = decision;
            pending[i] = (id, next);
        }
        let decisions = &mut decisions[..limits.len()];
        if !decisions.iter().all(Decision::allowed) {
            // Nothing is charged: the admitting limits report their state as it stays.
            for (i, limit) in limits.iter().enumerate() {
                if decisions[i].allowed() {
                    let tat = guards[guard_of[i]]
                        .as_ref()
                        .and_then(|g| g.tats.get(&ids[i]).copied());
                    decisions[i] = gcra::decide(&limit.quota, tat, now, 0).0;
                }
            }
        } else {
            let pending = &pending[..limits.len()];
            // Room for every new bucket first, so a full shard charges nothing.
            let mut needed = [0usize; MAX_LIMITS];
            for (i, (id, tat)) in pending.iter().enumerate() {
                let first = !pending[..i].iter().any(|(p, _)| p == id);
                let exists = guards[guard_of[i]]
                    .as_ref()
                    .is_some_and(|g| g.tats.contains_key(id));
                if tat.is_some() && first && !exists {
                    needed[guard_of[i]] += 1;
                }
            }
            for (guard, &needed) in guards.iter_mut().zip(&needed) {
                if let Some(guard) = guard.as_mut()
                    && needed > 0
                {
                    self.make_room(guard, needed, now)?;
                }
            }
            for (i, (id, tat)) in pending.iter().enumerate() {
                if let (Some(tat), Some(guard)) = (tat, guards[guard_of[i]].as_mut()) {
                    guard.tats.insert(*id, *tat);
                }
            }
        }
        Verdict::new(decisions)
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // The state is plain integers: a panic elsewhere cannot leave it half-written.
        self.inner.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes room for `needed` new buckets in a shard: sweeps its idle buckets when it would
    /// overflow or a sweep is due. When live buckets still fill it (a flood of new callers,
    /// say one bucket per IPv6 /64), the eighth of the shard nearest to full again is forgotten:
    /// those callers lose at most the little debt they had left, while new callers are still
    /// counted (refusing them would let a flood lock everyone else out, or, under a fail-open
    /// rule, stop limiting them).
    fn make_room(&self, shard: &mut Shard, needed: usize, now: u64) -> Result<(), StoreError> {
        let per_shard = self.inner.per_shard;
        let fits = |shard: &Shard| shard.tats.len() + needed <= per_shard;
        if !fits(shard) || now >= shard.next_sweep {
            shard.tats.retain(|_, t| *t > now);
            shard.next_sweep = now.saturating_add(SWEEP_EVERY_NS);
        }
        if !fits(shard) {
            let mut tats: Vec<u64> = shard.tats.values().copied().collect();
            let evict = (per_shard / 8).max(needed).min(tats.len());
            if evict > 0 {
                let (_, cutoff, _) = tats.select_nth_unstable(evict - 1);
                let cutoff = *cutoff;
                let mut left = evict;
                shard.tats.retain(|_, t| {
                    if *t <= cutoff && left > 0 {
                        left -= 1;
                        false
                    } else {
                        true
                    }
                });
            }
            if !fits(shard) {
                return Err(StoreError::new("in-process throttle store is full", None));
            }
        }
        Ok(())
    }
}

impl ThrottleStore for MemoryStore {
    fn check(
        &self,
        limits: &[Limit<'_>],
    ) -> impl Future<Output = Result<Verdict, StoreError>> + Send {
        let answer: Ready<_> = ready(self.check_sync(limits));
        answer
    }

    #[inline]
    fn try_check_now(&self, limits: &[Limit<'_>]) -> Option<Result<Verdict, StoreError>> {
        Some(self.check_sync(limits))
    }

    #[inline]
    fn try_check_at(
        &self,
        limits: &[Limit<'_>],
        monotonic_now: u64,
    ) -> Option<Result<Verdict, StoreError>> {
        // The caller's reading is on this store's scale only when both use the process's
        // monotonic clock.
        let now = if self.inner.time.is_monotonic() {
            monotonic_now
        } else {
            self.inner.time.nanos()
        };
        Some(self.check_at(limits, now))
    }
}
