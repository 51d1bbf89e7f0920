//! The Redis [`ThrottleStore`]: one Lua script call per decision.
//!
//! - **One round trip:** all of a request's limits are decided (all-or-nothing) by one
//!   `EVALSHA`; the script is loaded again when Redis answers `NOSCRIPT` (after a restart or
//!   `SCRIPT FLUSH`).
//! - **One clock:** the script reads Redis `TIME`, so every replica sharing the server agrees
//!   on time whatever its own clock says.
//! - **Exact arithmetic:** Lua numbers are doubles. Times are microseconds (about 1.8 × 10¹⁵
//!   today, well under 2⁵³, so sums and products of the values used are exact), the count of
//!   requests that fit is divided in Rust, in integers, and numbers reach Redis as command
//!   arguments, which Redis
//!   writes with every digit (Lua's own `tostring` would keep only 14 significant digits: the
//!   script never uses it). A test reads a stored value back to the microsecond.
//! - **Bounded:** every key is written with a TTL of the time until its bucket is full again
//!   (plus a millisecond), after which it holds no information.
//! - **Redis Cluster:** key names are built in Rust, never in the script, as
//!   `<prefix>{<tag>}:<rule>:<namespace>:<subject>`; the `{tag}` (the org, or the client for anonymous
//!   requests) puts all of a request's keys on one slot. Components are escaped (`%`, `{`,
//!   `}`, `:` and control bytes as `%XX`) so no two buckets share a name.
//! - **Over-limit callers answered locally** (optional, [`RedisStore::with_blocked_cache`]):
//!   a refused bucket's "blocked until" is remembered, so a caller hammering past its limit
//!   costs no round trip until it may succeed again.
//! - **Fail explicitly:** any Redis error (down, timed out, refused) is a [`StoreError`]; the
//!   rule's failure policy decides what happens to the request.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use palisade_sessions::RedisConnection;

use crate::gcra::Decision;
use crate::store::{BucketKey, Limit, MAX_LIMITS, StoreError, ThrottleStore, Verdict};
use crate::time::Time;

/// The decision script. `KEYS`: the buckets. `ARGV[1]`: empty (use `TIME`) or, for tests
/// only, the caller's clock in microseconds; then per key: emission interval (µs), burst, cost.
/// Answers `{all, allowed_1, room_1, reset_1, retry_1, ...}` (times in µs; the room is what the
/// tolerance leaves, which the caller divides by the interval: integer division in Rust, not
/// floating point in Lua).
pub const SCRIPT: &str = r#"
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
else
  now = tonumber(ARGV[1])
end
local n = #KEYS
if n == 1 then
  -- One bucket (the common case): no bookkeeping tables.
  local e = tonumber(ARGV[2])
  local burst = tonumber(ARGV[3])
  local cost = tonumber(ARGV[4])
  local tol = e * burst
  local tat = tonumber(redis.call('GET', KEYS[1])) or now
  if tat < now then tat = now end
  local new_tat = tat + e * cost
  if new_tat - tol <= now and cost <= burst then
    if cost > 0 then
      redis.call('SET', KEYS[1], new_tat, 'PX', math.floor((new_tat - now) / 1000) + 1)
    end
    return {1, 1, now + tol - new_tat, new_tat - now, 0}
  end
  local retry = tat - now
  if cost <= burst then retry = new_tat - tol - now end
  return {0, 0, now + tol - tat, tat - now, retry}
end
local out = {1}
-- Per key: the stored TAT (at least now), and the new TAT to write (false: nothing to write).
local stored = {}
local news = {}
local all = true
for i = 1, n do
  local key = KEYS[i]
  local e = tonumber(ARGV[3 * i - 1])
  local burst = tonumber(ARGV[3 * i])
  local cost = tonumber(ARGV[3 * i + 1])
  local tol = e * burst
  local old = tonumber(redis.call('GET', key)) or now
  if old < now then old = now end
  stored[i] = old
  local tat = old
  -- A bucket named twice in one call sees its earlier charge.
  for j = 1, i - 1 do
    if news[j] and KEYS[j] == key then tat = news[j] end
  end
  local new_tat = tat + e * cost
  local b = 4 * i - 2
  if new_tat - tol <= now and cost <= burst then
    news[i] = cost > 0 and new_tat
    out[b] = 1
    out[b + 1] = now + tol - new_tat
    out[b + 2] = new_tat - now
    out[b + 3] = 0
  else
    all = false
    news[i] = false
    out[b] = 0
    out[b + 1] = now + tol - tat
    out[b + 2] = tat - now
    if cost <= burst then out[b + 3] = new_tat - tol - now else out[b + 3] = tat - now end
  end
end
if all then
  for i = 1, n do
    local tat = news[i]
    -- The last charge of a bucket named twice is its total.
    local last = true
    for j = i + 1, n do
      if news[j] and KEYS[j] == KEYS[i] then last = false end
    end
    if tat and last then
      redis.call('SET', KEYS[i], tat, 'PX', math.floor((tat - now) / 1000) + 1)
    end
  end
else
  out[1] = 0
  -- Nothing is charged: the admitting limits report their buckets as they stay.
  for i = 1, n do
    local b = 4 * i - 2
    if out[b] == 1 then
      local e = tonumber(ARGV[3 * i - 1])
      local burst = tonumber(ARGV[3 * i])
      out[b + 1] = now + e * burst - stored[i]
      out[b + 2] = stored[i] - now
    end
  end
end
return out
"#;

/// Limiter state in Redis (see the module docs). Cloning shares the connection.
#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConnection,
    prefix: Arc<str>,
    script: Arc<redis::Script>,
    test_clock: Option<palisade_core::SharedClock>,
    /// The local clock of the blocked-until cache (the test clock under tests).
    local_time: Time,
    blocked: Option<Arc<Blocked>>,
    /// The profile its transport (and test clock) was checked under.
    profile: palisade_core::Profile,
}

/// Buckets known to refuse until a moment, answered without a round trip.
#[derive(Debug)]
struct Blocked {
    until: Mutex<HashMap<String, u64>>,
    capacity: usize,
}

impl Blocked {
    /// A refusal, if one of `keys` is blocked at `now`: the blocked limit refuses with the
    /// time left, the others are reported admitted but uncharged (nothing was charged).
    fn answer(&self, keys: &[String], limits: &[Limit<'_>], now: u64) -> Option<Verdict> {
        let until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        if !keys.iter().any(|k| until.get(k).is_some_and(|&t| t > now)) {
            return None;
        }
        let mut decisions = [Decision::new(true, 0, 0, Duration::ZERO, Duration::ZERO); MAX_LIMITS];
        for ((key, limit), decision) in keys.iter().zip(limits).zip(&mut decisions) {
            *decision = match until.get(key) {
                Some(&t) if t > now => {
                    let left = Duration::from_nanos(t - now);
                    Decision::new(false, limit.quota.burst(), 0, left, left)
                }
                _ => Decision::new(true, limit.quota.burst(), 0, Duration::ZERO, Duration::ZERO),
            };
        }
        Verdict::new(&decisions[..limits.len()])
            .ok()
            .map(Verdict::answered_locally)
    }

    fn block(&self, key: &str, until_ns: u64, now: u64) {
        let mut until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        if until.len() >= self.capacity && !until.contains_key(key) {
            until.retain(|_, t| *t > now);
            if until.len() >= self.capacity {
                until.clear();
            }
        }
        until.insert(key.to_owned(), until_ns);
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("test_clock", &self.test_clock.is_some())
            .field("blocked_cache", &self.blocked.is_some())
            .finish_non_exhaustive()
    }
}

/// The emission interval the script counts with: whole microseconds, rounded up (never laxer
/// than the quota), at least 1 (quotas are at least a microsecond apart).
fn emission_us(quota: &crate::gcra::Quota) -> u64 {
    quota.emission_ns().div_ceil(1_000).max(1)
}

fn err(message: &str, e: redis::RedisError) -> StoreError {
    StoreError::new(message, Some(Arc::new(e)))
}

impl RedisStore {
    /// Connects to `url` (`redis://` or `rediss://`); keys start with `prefix`. Under
    /// Production a plaintext URL to another machine is refused.
    pub async fn connect(
        url: &str,
        prefix: &str,
        profile: palisade_core::Profile,
    ) -> Result<Self, StoreError> {
        let conn = RedisConnection::single(url, profile, "throttle-redis-store").await?;
        Ok(Self::with_conn(conn, prefix, profile))
    }

    /// Connects to a Redis Cluster through any of `nodes` (`redis://` or `rediss://` URLs);
    /// keys start with `prefix`. All of a request's buckets share its `{tag}`, so they live on
    /// one slot and one script call decides them. Each URL passes the transport check under
    /// `profile`, and in production only `rediss://` seeds are accepted (the cluster hands out
    /// the addresses of its other nodes).
    #[cfg(feature = "redis-cluster")]
    pub async fn connect_cluster(
        nodes: &[&str],
        prefix: &str,
        profile: palisade_core::Profile,
    ) -> Result<Self, StoreError> {
        let conn = RedisConnection::cluster(nodes, profile, "throttle-redis-store").await?;
        Ok(Self::with_conn(conn, prefix, profile))
    }

    fn with_conn(conn: RedisConnection, prefix: &str, profile: palisade_core::Profile) -> Self {
        Self {
            profile,
            conn,
            prefix: prefix.into(),
            script: Arc::new(redis::Script::new(SCRIPT)),
            test_clock: None,
            local_time: Time::monotonic(),
            blocked: None,
        }
    }

    /// Remembers, for up to `capacity` buckets, until when a refused bucket stays refused, and
    /// answers callers over their limit from memory until then, without a round trip (a flood
    /// from one over-limit caller costs Redis nothing). Safe: the time is counted from before
    /// the refusing call, and other replicas can only push a bucket's time later, so a caller
    /// answered from memory would have been refused by Redis too. A quota raised meanwhile
    /// reaches a blocked caller when its block ends.
    pub fn with_blocked_cache(mut self, capacity: usize) -> Self {
        self.blocked = Some(Arc::new(Blocked {
            until: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }));
        self
    }

    /// Decides with `clock` instead of Redis `TIME`: only so that tests can drive the script on
    /// a manual clock. Refused under Production.
    pub fn with_test_clock(
        mut self,
        clock: palisade_core::SharedClock,
        profile: palisade_core::Profile,
    ) -> Result<Self, StoreError> {
        if profile == palisade_core::Profile::Production {
            return Err(StoreError::new(
                "the caller's clock is for tests only: Production uses Redis TIME",
                None,
            ));
        }
        self.local_time = Time::Clock(clock.clone());
        self.test_clock = Some(clock);
        // A development switch: the store is as lax as development now.
        self.profile = profile;
        Ok(self)
    }

    /// The profile its transport (and any test clock) was checked under.
    pub fn profile(&self) -> palisade_core::Profile {
        self.profile
    }

    /// The Redis key of a bucket.
    pub fn key(&self, key: &BucketKey<'_>) -> String {
        let mut out = String::with_capacity(
            self.prefix.len()
                + key.tag.len()
                + key.rule.len()
                + key.namespace.len()
                + key.subject.len()
                + 6,
        );
        out.push_str(&self.prefix);
        out.push('{');
        escape(&mut out, key.tag);
        out.push_str("}:");
        escape(&mut out, key.rule);
        out.push(':');
        escape(&mut out, key.namespace);
        out.push(':');
        escape(&mut out, key.subject);
        out
    }
}

/// Writes `text` with `%`, `{`, `}`, `:` and control characters as `%XX`.
fn escape(out: &mut String, text: &str) {
    if !text
        .bytes()
        .any(|b| matches!(b, b'%' | b'{' | b'}' | b':') || b.is_ascii_control())
    {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        if matches!(c, '%' | '{' | '}' | ':') || c.is_ascii_control() {
            let _ = write!(out, "%{:02X}", c as u32);
        } else {
            out.push(c);
        }
    }
}

fn micros(d: u64) -> Duration {
    Duration::from_micros(d)
}

impl ThrottleStore for RedisStore {
    async fn check(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        if limits.is_empty() {
            return Verdict::new(&[]);
        }
        if limits.len() > MAX_LIMITS {
            return Err(StoreError::new("too many limits for one request", None));
        }
        let start = self.local_time.nanos();
        let keys: Vec<String> = limits.iter().map(|l| self.key(&l.key)).collect();
        if let Some(verdict) = self
            .blocked
            .as_ref()
            .and_then(|b| b.answer(&keys, limits, start))
        {
            return Ok(verdict);
        }
        let mut invocation = self.script.prepare_invoke();
        let clock = match &self.test_clock {
            Some(clock) => {
                let now = clock.now();
                let us = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
                us.to_string()
            }
            None => String::new(),
        };
        invocation.arg(clock);
        for (limit, key) in limits.iter().zip(&keys) {
            invocation
                .key(key)
                .arg(emission_us(&limit.quota))
                .arg(limit.quota.burst())
                .arg(limit.cost);
        }
        let mut conn = self.conn.clone();
        let answer: Vec<i64> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| err("throttle script failed", e))?;
        if answer.len() != 1 + 4 * limits.len() {
            return Err(StoreError::new(
                "throttle script answered an unexpected shape",
                None,
            ));
        }
        let none = Decision::new(false, 0, 0, Duration::ZERO, Duration::ZERO);
        let mut decisions = [none; MAX_LIMITS];
        for ((limit, fields), decision) in limits
            .iter()
            .zip(answer[1..].chunks_exact(4))
            .zip(&mut decisions)
        {
            let non_negative = |v: i64| u64::try_from(v).unwrap_or(0);
            // Requests of cost 1 that fit in the room, exactly, at most the burst.
            let remaining = non_negative(fields[1]) / emission_us(&limit.quota);
            *decision = Decision::new(
                fields[0] == 1,
                limit.quota.burst(),
                u32::try_from(remaining).unwrap_or(u32::MAX),
                micros(non_negative(fields[2])),
                micros(non_negative(fields[3])),
            );
        }
        if let Some(blocked) = &self.blocked {
            for (key, decision) in keys.iter().zip(&decisions[..limits.len()]) {
                if !decision.allowed() {
                    let retry =
                        u64::try_from(decision.retry_after().as_nanos()).unwrap_or(u64::MAX);
                    blocked.block(key, start.saturating_add(retry), start);
                }
            }
        }
        Verdict::new(&decisions[..limits.len()])
    }
}
