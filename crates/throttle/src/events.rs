//! Hooks for every limited request and every store failure (metrics, alerts, audit).

use std::time::Duration;

use crate::store::StoreError;

/// A request a rule limited (or, in shadow mode, would have limited).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Limited<'a> {
    /// The rule's name.
    pub rule: &'a str,
    /// The verified org, if any.
    pub org: Option<&'a str>,
    /// The org's tier (the default tier without an org).
    pub tier: &'a str,
    /// Whether the rule is in shadow mode (the request went through).
    pub shadow: bool,
    /// When the same request would fit.
    pub retry_after: Duration,
}

/// The store could not answer.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct StoreFailed<'a> {
    /// What failed.
    pub error: &'a StoreError,
    /// Whether the request was let through (every applicable rule fails open).
    pub failed_open: bool,
    /// The verified org, if any.
    pub org: Option<&'a str>,
}

/// Receives the layer's events. The default methods log through `tracing`; no event carries a
/// token, a secret or a header value.
pub trait ThrottleEvents: Send + Sync + 'static {
    /// A rule limited a request.
    fn limited(&self, event: &Limited<'_>) {
        tracing::info!(
            target: "palisade::throttle",
            rule = event.rule,
            org = event.org,
            tier = event.tier,
            shadow = event.shadow,
            retry_after_ms = u64::try_from(event.retry_after.as_millis()).unwrap_or(u64::MAX),
            "rate limit reached"
        );
    }

    /// The store failed.
    fn store_failed(&self, event: &StoreFailed<'_>) {
        if event.failed_open {
            tracing::warn!(target: "palisade::throttle", error = %event.error, org = event.org, "throttle store failed: request let through (fail open)");
        } else {
            tracing::error!(target: "palisade::throttle", error = %event.error, org = event.org, "throttle store failed: request refused (fail closed)");
        }
    }
}

/// The default events: logs only.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogEvents;

impl ThrottleEvents for LogEvents {}
