//! Quotas per rule and tier, replaceable while the layer runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use crate::gcra::Quota;
use crate::layer::ConfigError;

/// The quotas of every rule: a default, and optionally one per tier.
///
/// ```
/// use palisade_throttle::{Quota, QuotaTable};
///
/// let table = QuotaTable::new()
///     .rule("org", Quota::per_minute(600)?)
///     .tier("org", "enterprise", Quota::per_minute(6_000)?)
///     .rule("user", Quota::per_minute(120)?);
/// assert_eq!(table.quota("org", "enterprise"), Some(Quota::per_minute(6_000)?));
/// assert_eq!(table.quota("org", "free"), Some(Quota::per_minute(600)?));
/// assert_eq!(table.quota("anon", "free"), None);
/// # Ok::<(), palisade_throttle::QuotaError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct QuotaTable {
    rules: HashMap<Box<str>, RuleQuotas, foldhash::fast::RandomState>,
}

#[derive(Clone, Debug)]
struct RuleQuotas {
    default: Quota,
    tiers: HashMap<Box<str>, Quota, foldhash::fast::RandomState>,
}

impl QuotaTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `rule`'s default quota.
    pub fn rule(mut self, rule: &str, quota: Quota) -> Self {
        match self.rules.get_mut(rule) {
            Some(entry) => entry.default = quota,
            None => {
                self.rules.insert(
                    rule.into(),
                    RuleQuotas {
                        default: quota,
                        tiers: HashMap::default(),
                    },
                );
            }
        }
        self
    }

    /// Sets `rule`'s quota for orgs of `tier` (the rule needs a default too).
    pub fn tier(mut self, rule: &str, tier: &str, quota: Quota) -> Self {
        let entry = self.rules.entry(rule.into()).or_insert(RuleQuotas {
            default: quota,
            tiers: HashMap::default(),
        });
        entry.tiers.insert(tier.into(), quota);
        self
    }

    /// The quota of `rule` for `tier`: the tier's, else the rule's default.
    pub fn quota(&self, rule: &str, tier: &str) -> Option<Quota> {
        let entry = self.rules.get(rule)?;
        Some(entry.tiers.get(tier).copied().unwrap_or(entry.default))
    }

    /// `tier` as a metric label for `rule`: the default tier or a tier with its own quota for
    /// the rule; any other name (from the application's policy source, so unbounded) is
    /// `other`, so labels stay as few as the table's tiers.
    pub(crate) fn tier_label<'a>(&self, rule: &str, tier: &'a str) -> &'a str {
        let known = tier == crate::policy::DEFAULT_TIER
            || self
                .rules
                .get(rule)
                .is_some_and(|entry| entry.tiers.contains_key(tier));
        if known { tier } else { "other" }
    }

    /// Checks that every rule of `requirements` (name, cost) has a quota, and that the cost
    /// fits every burst the rule can get.
    fn check(&self, requirements: &[(Arc<str>, u32)]) -> Result<(), ConfigError> {
        for (name, cost) in requirements {
            let entry = self
                .rules
                .get(&**name)
                .ok_or_else(|| ConfigError::MissingQuota(name.to_string()))?;
            let smallest = entry
                .tiers
                .values()
                .chain(std::iter::once(&entry.default))
                .map(Quota::burst)
                .min()
                .unwrap_or(0);
            if *cost > smallest || *cost == 0 {
                return Err(ConfigError::Cost(name.to_string()));
            }
        }
        Ok(())
    }
}

/// A handle on the quotas a layer enforces: clone it, keep it, and [`Quotas::replace`] the
/// table at runtime (a new tier price list, an incident) without rebuilding the layer.
#[derive(Clone, Debug)]
pub struct Quotas {
    inner: Arc<QuotasInner>,
}

#[derive(Debug)]
struct QuotasInner {
    table: ArcSwap<QuotaTable>,
    /// Bumped on every replacement: layers cache quotas resolved per org and tag them with it.
    version: AtomicU64,
    /// (rule, cost) of every layer built with this handle.
    requirements: Mutex<Vec<(Arc<str>, u32)>>,
}

impl Quotas {
    /// A handle on `table`.
    pub fn new(table: QuotaTable) -> Self {
        Self {
            inner: Arc::new(QuotasInner {
                table: ArcSwap::from_pointee(table),
                version: AtomicU64::new(0),
                requirements: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Replaces the table. Refused (and the old table kept) when a rule of a layer built with
    /// this handle would have no quota or a cost above a burst.
    pub fn replace(&self, table: QuotaTable) -> Result<(), ConfigError> {
        let requirements = self
            .inner
            .requirements
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        table.check(&requirements)?;
        self.inner.table.store(Arc::new(table));
        self.inner.version.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// The table's version: it changes on every replacement.
    #[inline]
    pub(crate) fn version(&self) -> u64 {
        self.inner.version.load(Ordering::Acquire)
    }

    /// The current table.
    pub fn current(&self) -> arc_swap::Guard<Arc<QuotaTable>> {
        self.inner.table.load()
    }

    /// Registers a layer's rules: checked against the current table, and against every
    /// later replacement.
    pub(crate) fn register(&self, rules: &[(Arc<str>, u32)]) -> Result<(), ConfigError> {
        let mut requirements = self
            .inner
            .requirements
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.inner.table.load().check(rules)?;
        requirements.extend(rules.iter().cloned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Quota;

    #[test]
    fn tier_labels_are_bounded_by_the_table() {
        let q = Quota::per_minute(60).expect("quota");
        let table = QuotaTable::new()
            .rule("org", q)
            .tier("org", "enterprise", q);
        assert_eq!(table.tier_label("org", "enterprise"), "enterprise");
        assert_eq!(table.tier_label("org", "default"), "default");
        // Names from the policy source without a quota of their own, or of another rule.
        assert_eq!(table.tier_label("org", "x-attacker-chosen-9f3a"), "other");
        assert_eq!(table.tier_label("user", "enterprise"), "other");
    }
}
