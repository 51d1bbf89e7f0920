//! The generic cell rate algorithm (GCRA), as in `governor` and redis-cell, in integer
//! nanoseconds.
//!
//! A [`Quota`] admits `burst` requests at once and then one request every `emission` interval.
//! The only state per key is its *theoretical arrival time* (TAT): the instant at which the key's
//! bucket would be empty again if no further request arrived. A request of cost `n` at `now`
//! moves the TAT to `max(TAT, now) + n × emission`; it is admitted when that new TAT is at most
//! `now + burst × emission` (the tolerance), and otherwise refused without moving the TAT.
//!
//! ```
//! use std::time::Duration;
//! use palisade_throttle::gcra::{Quota, decide};
//!
//! // 10 requests per minute, all 10 at once if the caller has been idle.
//! let quota = Quota::per_window(10, Duration::from_secs(60))?;
//! let mut tat = None;
//! let now = 1_000_000_000_000; // any monotonic nanosecond count
//! for n in 0..10 {
//!     let (decision, next) = decide(&quota, tat, now, 1);
//!     assert!(decision.allowed());
//!     assert_eq!(decision.remaining(), 9 - n);
//!     tat = next;
//! }
//! // The 11th is refused and told to come back when one request's worth has refilled (6 s).
//! let (decision, next) = decide(&quota, tat, now, 1);
//! assert!(!decision.allowed());
//! assert_eq!(decision.retry_after(), Duration::from_secs(6));
//! assert_eq!(next, tat); // a refusal changes nothing
//! // Six seconds later one request fits again.
//! let (decision, _) = decide(&quota, tat, now + 6_000_000_000, 1);
//! assert!(decision.allowed());
//! # Ok::<(), palisade_throttle::QuotaError>(())
//! ```

use std::time::Duration;

/// How many requests a key may make: `burst` at once, then one per `emission` interval (so
/// `burst` per `burst × emission` window when spread out).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quota {
    burst: u32,
    emission_ns: u64,
}

/// A [`Quota`] that cannot be enforced.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaError {
    /// A quota of zero requests, or a burst of zero.
    #[error("a quota admits at least one request")]
    Zero,
    /// The interval between requests is under a microsecond (more than 1,000,000 per second,
    /// the Redis store's resolution), or the window (`burst × interval`) is over a year.
    #[error("a quota's interval must be between 1 µs and a year")]
    Interval,
}

/// The longest window or emission interval a quota may use.
const MAX_INTERVAL_NS: u64 = 366 * 24 * 3600 * 1_000_000_000;

impl Quota {
    /// A placeholder for unused slots of fixed-size arrays; never decided.
    pub(crate) const FILLER: Quota = Quota {
        burst: 1,
        emission_ns: 1_000_000_000,
    };

    /// `limit` requests per `window`, all of them available at once: the burst is `limit` and
    /// one request's worth refills every `window / limit`.
    pub fn per_window(limit: u32, window: Duration) -> Result<Self, QuotaError> {
        if limit == 0 {
            return Err(QuotaError::Zero);
        }
        let window_ns = u64::try_from(window.as_nanos()).map_err(|_| QuotaError::Interval)?;
        if window_ns > MAX_INTERVAL_NS {
            return Err(QuotaError::Interval);
        }
        Self::new(limit, Duration::from_nanos(window_ns / u64::from(limit)))
    }

    /// `limit` requests per second.
    pub fn per_second(limit: u32) -> Result<Self, QuotaError> {
        Self::per_window(limit, Duration::from_secs(1))
    }

    /// `limit` requests per minute.
    pub fn per_minute(limit: u32) -> Result<Self, QuotaError> {
        Self::per_window(limit, Duration::from_secs(60))
    }

    /// `burst` requests at once, then one every `emission`.
    pub fn new(burst: u32, emission: Duration) -> Result<Self, QuotaError> {
        if burst == 0 {
            return Err(QuotaError::Zero);
        }
        let emission_ns = u64::try_from(emission.as_nanos()).map_err(|_| QuotaError::Interval)?;
        if !(1_000..=MAX_INTERVAL_NS).contains(&emission_ns)
            || emission_ns.saturating_mul(u64::from(burst)) > MAX_INTERVAL_NS
        {
            return Err(QuotaError::Interval);
        }
        Ok(Self { burst, emission_ns })
    }

    /// The same rate with another burst.
    pub fn with_burst(self, burst: u32) -> Result<Self, QuotaError> {
        Self::new(burst, self.emission())
    }

    /// The quota scaled by `factor` (a tier or flag override raising a limit): the burst and
    /// the rate both grow.
    pub fn scaled(self, factor: u32) -> Result<Self, QuotaError> {
        let burst = self.burst.checked_mul(factor).ok_or(QuotaError::Interval)?;
        Self::new(
            burst,
            Duration::from_nanos(self.emission_ns / u64::from(factor.max(1))),
        )
    }

    /// Requests admitted at once.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The interval after which one more request fits.
    pub fn emission(&self) -> Duration {
        Duration::from_nanos(self.emission_ns)
    }

    /// The interval in nanoseconds.
    pub fn emission_ns(&self) -> u64 {
        self.emission_ns
    }

    /// The window the burst refills over (`burst × emission`): the `w` of `RateLimit-Policy`.
    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.tolerance_ns())
    }

    /// `burst × emission` in nanoseconds.
    pub fn tolerance_ns(&self) -> u64 {
        self.emission_ns.saturating_mul(u64::from(self.burst))
    }
}

/// The answer for one key, in 32 bytes (a request's decisions are moved whole). Its counts
/// are worked out when asked for (a division the allow path skips when no headers are sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    limit: u32,
    allowed: bool,
    /// Whether `per` holds the count of remaining requests (a store that counts on its own,
    /// such as Redis) rather than the quota's emission interval.
    explicit: bool,
    per: u64,
    reset_ns: u64,
    /// Admitted and counted here: the room left in the bucket (nanoseconds of emission),
    /// `remaining = min(room / per, limit)`; otherwise the time until a retry fits.
    aux: u64,
}

impl Decision {
    /// A decision from its parts (for stores that count on their own, such as Redis).
    pub fn new(
        allowed: bool,
        limit: u32,
        remaining: u32,
        reset_after: Duration,
        retry_after: Duration,
    ) -> Self {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Self {
            limit,
            allowed,
            explicit: true,
            per: u64::from(remaining),
            reset_ns: ns(reset_after),
            aux: if allowed { 0 } else { ns(retry_after) },
        }
    }

    /// Whether the request fits.
    pub fn allowed(&self) -> bool {
        self.allowed
    }

    /// The quota's burst.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Requests of cost 1 that would still fit now (after this one when it was admitted).
    pub fn remaining(&self) -> u32 {
        let count = if self.explicit {
            self.per
        } else {
            let room = if self.allowed {
                self.aux
            } else {
                // Refused: the room is what the tolerance leaves past the reset.
                (u64::from(self.limit).saturating_mul(self.per)).saturating_sub(self.reset_ns)
            };
            room / self.per.max(1)
        };
        u32::try_from(count).unwrap_or(u32::MAX).min(self.limit)
    }

    /// How long until the key's bucket is full again.
    pub fn reset_after(&self) -> Duration {
        Duration::from_nanos(self.reset_ns)
    }

    /// When refused: how long until the same request fits. Zero when admitted.
    pub fn retry_after(&self) -> Duration {
        if self.allowed {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.aux)
        }
    }
}

/// Decides a request of `cost` at `now` (nanoseconds on any monotonic scale) for a key whose
/// stored TAT is `tat` (`None`: never seen, or expired). Answers the decision and the TAT to
/// store (unchanged when refused, or when `cost` is 0: a peek).
///
/// A cost above the burst is never admitted; its `retry_after` is the time until the bucket is
/// full.
#[inline]
pub fn decide(quota: &Quota, tat: Option<u64>, now: u64, cost: u32) -> (Decision, Option<u64>) {
    let emission = quota.emission_ns;
    let tolerance = quota.tolerance_ns();
    let tat_or_now = tat.map_or(now, |t| t.max(now));
    let new_tat = tat_or_now.saturating_add(emission.saturating_mul(u64::from(cost)));
    // The earliest instant at which the new TAT fits within the tolerance.
    let allow_at = new_tat.saturating_sub(tolerance);
    if allow_at <= now && cost <= quota.burst {
        let next = if cost == 0 { tat } else { Some(new_tat) };
        let decision = Decision {
            limit: quota.burst,
            allowed: true,
            explicit: false,
            per: emission,
            reset_ns: new_tat - now,
            aux: now.saturating_add(tolerance).saturating_sub(new_tat),
        };
        (decision, next)
    } else {
        let retry = if cost <= quota.burst {
            allow_at - now
        } else {
            tat_or_now - now
        };
        let decision = Decision {
            limit: quota.burst,
            allowed: false,
            explicit: false,
            per: emission,
            reset_ns: tat_or_now - now,
            aux: retry,
        };
        (decision, tat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a reference token bucket in exact rational arithmetic (capacity `burst`,
        /// refilling one token per `emission`): every decision, admitted or refused, and every
        /// count of what is left, agree, whatever the arrival times and costs.
        #[test]
        fn gcra_is_an_exact_token_bucket(
            burst in 1u32..20,
            emission_ms in 1u64..5_000,
            steps in proptest::collection::vec((0u64..10_000, 0u32..6), 1..60),
        ) {
            let e = emission_ms * 1_000_000;
            let quota = Quota::new(burst, Duration::from_nanos(e)).expect("quota");
            // Reference: tokens scaled by `e` (an integer count of nanosecond-tokens).
            let capacity = u128::from(burst) * u128::from(e);
            let mut level = capacity;
            let mut last = 0u64;
            let mut now = 1_000_000_000_000u64;
            let mut tat = None;
            for (dt_ms, cost) in steps {
                now += dt_ms * 1_000_000;
                // Time only moves forward here: the refill since the last step.
                level = (level + u128::from(now - last)).min(capacity);
                last = now;
                let need = u128::from(cost) * u128::from(e);
                let (decision, next) = decide(&quota, tat, now, cost);
                let admit = need <= level;
                prop_assert_eq!(decision.allowed(), admit);
                if admit {
                    level -= need;
                    if cost > 0 {
                        tat = next;
                    }
                }
                let left = u32::try_from(level / u128::from(e)).unwrap_or(u32::MAX);
                prop_assert_eq!(decision.remaining(), left.min(burst));
            }
        }
    }

    const S: u64 = 1_000_000_000;

    fn quota(burst: u32, per_secs: u64) -> Quota {
        Quota::per_window(burst, Duration::from_secs(per_secs)).expect("quota")
    }

    #[test]
    fn quotas_refuse_what_cannot_be_enforced() {
        assert_eq!(Quota::per_second(0), Err(QuotaError::Zero));
        assert_eq!(
            Quota::per_second(2_000_000).map(|q| q.emission_ns()),
            Err(QuotaError::Interval)
        );
        assert_eq!(
            Quota::per_window(1, Duration::from_secs(400 * 86_400)),
            Err(QuotaError::Interval)
        );
        assert_eq!(quota(10, 60).with_burst(0), Err(QuotaError::Zero));
        let q = quota(10, 60);
        assert_eq!(q.window(), Duration::from_secs(60));
        assert_eq!(q.scaled(3).expect("scaled").burst(), 30);
        assert_eq!(
            q.scaled(3).expect("scaled").window(),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn a_decision_is_four_words() {
        assert_eq!(std::mem::size_of::<Decision>(), 32);
    }

    #[test]
    fn a_peek_changes_nothing() {
        let q = quota(3, 3);
        let (d, tat) = decide(&q, None, 10 * S, 0);
        assert!(d.allowed());
        assert_eq!((d.remaining(), tat), (3, None));
        let (_, tat) = decide(&q, None, 10 * S, 2);
        let (d, after) = decide(&q, tat, 10 * S, 0);
        assert_eq!((d.allowed(), d.remaining(), after), (true, 1, tat));
    }

    #[test]
    fn a_cost_over_the_burst_never_fits() {
        let q = quota(3, 3);
        let (d, tat) = decide(&q, None, 10 * S, 4);
        assert!(!d.allowed());
        assert_eq!((tat, d.remaining()), (None, 3));
    }

    #[test]
    fn extreme_clocks_and_states_do_not_panic() {
        let q = Quota::new(1_000, Duration::from_secs(31_536)).expect("quota");
        for (tat, now, cost) in [
            (Some(u64::MAX), u64::MAX - 1, 1_000),
            (None, u64::MAX, 1),
            (Some(0), u64::MAX, u32::MAX),
            (Some(u64::MAX), 0, 0),
        ] {
            let (d, _) = decide(&q, tat, now, cost);
            assert!(d.remaining() <= q.burst());
        }
    }
}
