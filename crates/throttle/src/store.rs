//! Where limiter state lives: the [`ThrottleStore`] trait and what it answers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::gcra::{Decision, Quota};

/// The most limits one request may be checked against (per-user, per-org, per-route, ...).
///
/// Verdicts are fixed-size arrays moved on every request: four keep them small.
pub const MAX_LIMITS: usize = 4;

/// Which bucket a limit counts in.
///
/// `tag` groups the buckets of one request so that a shared store can check them together:
/// the org for authenticated requests, the client for anonymous ones (the Redis store puts it in
/// a `{hash tag}` so every key of a request lives on one Redis Cluster slot). `rule` names the
/// rule; `namespace` and `subject` say who is counted (a token's issuer and subject; an empty
/// namespace and an org id, a client network or a key id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BucketKey<'a> {
    /// The request's grouping tag.
    pub tag: &'a str,
    /// The rule's name.
    pub rule: &'a str,
    /// Where the subject's name comes from (a token issuer), or empty.
    pub namespace: &'a str,
    /// Who is counted.
    pub subject: &'a str,
}

impl<'a> BucketKey<'a> {
    /// A key with an empty namespace.
    pub fn new(tag: &'a str, rule: &'a str, subject: &'a str) -> Self {
        Self {
            tag,
            rule,
            namespace: "",
            subject,
        }
    }
}

/// One limit to check for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit<'a> {
    /// The bucket.
    pub key: BucketKey<'a>,
    /// Its quota.
    pub quota: Quota,
    /// What this request costs (0: peek without cost).
    pub cost: u32,
}

/// The store's answer for all of a request's limits, checked all-or-nothing: either every
/// limit admitted the request and every bucket was charged, or none was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    allowed: bool,
    len: u8,
    decisions: [Decision; MAX_LIMITS],
    local: bool,
}

impl Verdict {
    /// A verdict from per-limit decisions, in the order of the limits (at most [`MAX_LIMITS`]).
    pub fn new(decisions: &[Decision]) -> Result<Self, StoreError> {
        let mut out = [Decision::new(true, 0, 0, Duration::ZERO, Duration::ZERO); MAX_LIMITS];
        let target = out
            .get_mut(..decisions.len())
            .ok_or_else(|| StoreError::new("too many limits for one request", None))?;
        target.copy_from_slice(decisions);
        Ok(Self {
            allowed: decisions.iter().all(Decision::allowed),
            len: decisions.len() as u8,
            decisions: out,
            local: false,
        })
    }

    /// Marks the verdict as answered without a round trip to the backend (a caller known to
    /// be over its limit, refused from memory), so that it says nothing of the store's
    /// health (`palisade_store_up`).
    pub fn answered_locally(mut self) -> Self {
        self.local = true;
        self
    }

    /// Whether the verdict was answered without a round trip to the backend.
    pub fn is_local(&self) -> bool {
        self.local
    }

    /// The verdict of a single limit.
    #[inline]
    pub fn single(decision: Decision) -> Self {
        let mut decisions = [decision; MAX_LIMITS];
        decisions[0] = decision;
        Self {
            allowed: decision.allowed(),
            len: 1,
            decisions,
            local: false,
        }
    }

    /// Whether every limit admitted the request.
    #[inline]
    pub fn allowed(&self) -> bool {
        self.allowed
    }

    /// Each limit's decision, in the order of the limits.
    pub fn decisions(&self) -> &[Decision] {
        &self.decisions[..usize::from(self.len)]
    }

    /// The decision to report in headers: when refused, the refusing limit that frees up last;
    /// when admitted, the limit with the fewest requests left.
    pub fn binding(&self) -> Option<(usize, &Decision)> {
        let decisions = self.decisions().iter().enumerate();
        if self.allowed() {
            decisions.min_by_key(|(_, d)| (d.remaining(), std::cmp::Reverse(d.reset_after())))
        } else {
            decisions
                .filter(|(_, d)| !d.allowed())
                .max_by_key(|(_, d)| d.retry_after())
        }
    }
}

/// Limiter state for many keys.
pub trait ThrottleStore: Send + Sync + 'static {
    /// Checks `limits` all-or-nothing, now by the store's own clock (Redis `TIME` for the Redis
    /// store, so replicas agree). Errors when the store cannot answer; the layer then applies
    /// each rule's failure policy.
    fn check(
        &self,
        limits: &[Limit<'_>],
    ) -> impl Future<Output = Result<Verdict, StoreError>> + Send;

    /// Answers at once when the store can (the in-process store does): the layer then needs
    /// no future of its own. `None` (the default) when the caller must wait on
    /// [`ThrottleStore::check`].
    fn try_check_now(&self, limits: &[Limit<'_>]) -> Option<Result<Verdict, StoreError>> {
        let _ = limits;
        None
    }

    /// [`ThrottleStore::try_check_now`] with the caller's reading of the process's monotonic
    /// clock, which a store on that same clock may use instead of reading it again. Stores
    /// with any other clock ignore it (the default).
    #[doc(hidden)]
    fn try_check_at(
        &self,
        limits: &[Limit<'_>],
        monotonic_now: u64,
    ) -> Option<Result<Verdict, StoreError>> {
        let _ = monotonic_now;
        self.try_check_now(limits)
    }
}

impl<S: ThrottleStore> ThrottleStore for Arc<S> {
    fn check(
        &self,
        limits: &[Limit<'_>],
    ) -> impl Future<Output = Result<Verdict, StoreError>> + Send {
        (**self).check(limits)
    }

    fn try_check_now(&self, limits: &[Limit<'_>]) -> Option<Result<Verdict, StoreError>> {
        (**self).try_check_now(limits)
    }

    fn try_check_at(
        &self,
        limits: &[Limit<'_>],
        monotonic_now: u64,
    ) -> Option<Result<Verdict, StoreError>> {
        (**self).try_check_at(limits, monotonic_now)
    }
}

pub use palisade_core::StoreError;
