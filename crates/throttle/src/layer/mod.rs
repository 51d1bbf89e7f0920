//! The throttle layer: after authentication, counts each request against the rules that apply
//! to it and answers 429 (with `Retry-After` and the IETF `RateLimit` fields) when one is spent.
//!
//! Per request, in order:
//!
//! 1. The verified org comes from the [`Identity`] an authentication layer put in the request
//!    extensions. Every org the request *claims* ([`OrgSource`]: a path segment, a header, a
//!    query parameter) must be that org, else 403, before any limiter state is touched.
//! 2. The org's [`OrgPolicy`] (tier and flags) comes from the cache or the [`OrgPolicies`]
//!    source. An unlimited org is let through.
//! 3. Each applicable [`Rule`] becomes a limit under the quota of its tier (raised by the org's
//!    flags). The enforced limits are checked all-or-nothing in one store call; shadow-mode rules
//!    in a second call whose refusals are only reported.
//! 4. Refused: 429 with `Retry-After`, `RateLimit-Policy` and `RateLimit` for the refusing rule
//!    that frees up last. Admitted: the request goes on (with the fields of the tightest rule
//!    when [`ThrottleBuilder::headers_on_success`] is on). Store failure: each rule's
//!    [`FailurePolicy`]; a request is let through only if every applicable rule fails open.
//!
//! With the in-process store, a cached policy and the fields off, the allow path does not
//! allocate; with a store that has to wait (Redis) or a policy to fetch, one boxed future
//! carries the check.
//!
//! ```
//! use palisade_throttle::{MemoryStore, OrgSource, Quota, QuotaTable, Quotas, Rule, Scope, ThrottleLayer};
//!
//! let quotas = Quotas::new(
//!     QuotaTable::new()
//!         .rule("anon", Quota::per_minute(30)?)
//!         .rule("user", Quota::per_minute(300)?)
//!         .rule("org", Quota::per_minute(3_000)?)
//!         .tier("org", "enterprise", Quota::per_minute(30_000)?),
//! );
//! let layer = ThrottleLayer::builder(MemoryStore::new())
//!     .rule(Rule::new("anon", Scope::Anonymous))
//!     .rule(Rule::new("user", Scope::User))
//!     .rule(Rule::new("org", Scope::Org))
//!     .quotas(quotas.clone())
//!     .org_from(OrgSource::path_segment_after("/api/orgs/"))
//!     .build()?;
//! // Later, without rebuilding the layer:
//! quotas.replace(
//!     QuotaTable::new()
//!         .rule("anon", Quota::per_minute(10)?)
//!         .rule("user", Quota::per_minute(300)?)
//!         .rule("org", Quota::per_minute(3_000)?),
//! )?;
//! # let _ = layer;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod future;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use palisade_core::{
    AuthMethod, ClientIp, Finding, Identity, Posture, Profile, Rejection, RejectionKind, Severity,
    SharedClock,
};
use tower_layer::Layer;
use tower_service::Service;

/// The health of the throttle's store (`palisade_store_up{store="throttle"}`).
static STORE_HEALTH: palisade_core::StoreHealth = palisade_core::StoreHealth::new("throttle");

pub use self::future::ResponseFuture;
use crate::events::{Limited, LogEvents, StoreFailed, ThrottleEvents};
use crate::gcra::Quota;
use crate::headers::RateHeaders;
use crate::org::OrgSource;
use crate::policy::{DynPolicies, OrgPolicies, OrgPolicy, PolicyCache, StaticPolicies};
use crate::quotas::Quotas;
use crate::rule::{FailurePolicy, Rule, Scope, valid_name};
use crate::store::{BucketKey, Limit, MAX_LIMITS, StoreError, ThrottleStore, Verdict};
use crate::time::Time;

/// The most rules one layer may have.
pub const MAX_RULES: usize = 8;

/// A layer that cannot be built as configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No rule: the layer would limit nothing.
    #[error("a throttle layer needs at least one rule")]
    NoRules,
    /// More than [`MAX_RULES`] rules, or more than one store call can check could apply to one
    /// request.
    #[error("at most {MAX_RULES} rules per layer, and at most {MAX_LIMITS} per request")]
    TooManyRules,
    /// A rule name outside `a-z 0-9 - _ .` or over 64 characters.
    #[error("rule name {0:?} must be 1-64 characters of a-z, 0-9, '-', '_' and '.'")]
    RuleName(String),
    /// Two rules share a name.
    #[error("two rules are named {0:?}")]
    DuplicateRule(String),
    /// A route rule without paths.
    #[error("route rule {0:?} needs paths")]
    RouteWithoutPaths(String),
    /// A rule without a quota in the table.
    #[error("rule {0:?} has no quota")]
    MissingQuota(String),
    /// A rule whose cost is 0 or above one of its bursts.
    #[error("rule {0:?} costs 0 or more than one of its bursts")]
    Cost(String),
    /// No quota table was given.
    #[error("a throttle layer needs quotas")]
    NoQuotas,
}

/// A response the layer answers on its own, before the body type is known.
pub(crate) struct Refusal {
    rejection: Rejection,
    headers: Option<Box<RateHeaders>>,
}

impl Refusal {
    fn new(rejection: Rejection) -> Box<Self> {
        Box::new(Self {
            rejection,
            headers: None,
        })
    }

    pub(crate) fn into_response<B>(self) -> Response<palisade_core::ResponseBody<B>> {
        let mut response = self.rejection.into_response();
        if let Some(headers) = self.headers {
            headers.apply(response.headers_mut());
        }
        response
    }
}

/// Why a request was refused (server side; the client sees a generic problem document).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ThrottleError {
    /// The request named an org that is not its verified org.
    #[error("the request names an org other than its verified org")]
    OrgMismatch,
    /// A rule's quota is spent.
    #[error("rate limit {rule:?} reached")]
    Limited {
        /// The refusing rule.
        rule: String,
    },
    /// The store failed and a rule fails closed.
    #[error("throttle store unavailable")]
    Store(#[source] StoreError),
    /// The org's policy could not be read.
    #[error("org policy unavailable")]
    Policy(#[source] StoreError),
    /// An anonymous request without a resolved client address (no `ClientIpLayer` before).
    #[error("anonymous request without a client address")]
    NoClientIp,
    /// A rule has no quota in the current table.
    #[error("rule {0:?} has no quota")]
    NoQuota(String),
    /// More limits applied to one request than one store call can check.
    #[error("more than {MAX_LIMITS} limits apply to one request")]
    TooManyLimits,
}

pub(crate) struct Shared<St> {
    store: St,
    rules: Box<[Rule]>,
    quotas: Quotas,
    org_sources: Box<[OrgSource]>,
    policies: Arc<dyn DynPolicies>,
    cache: PolicyCache<Resolved>,
    headers_on_success: bool,
    events: Arc<dyn ThrottleEvents>,
    time: Time,
    profile: Profile,
    findings: Box<[Finding]>,
    /// `palisade_throttle_decisions_total{decision="allowed"}` and `{decision="limited"}`,
    /// resolved once when the layer is built (install the recorder before), so that a
    /// decision costs one increment, not a registry lookup.
    allowed: metrics::Counter,
    limited: metrics::Counter,
}

/// Builds a [`ThrottleLayer`].
#[must_use]
pub struct ThrottleBuilder<St> {
    store: St,
    rules: Vec<Rule>,
    quotas: Option<Quotas>,
    org_sources: Vec<OrgSource>,
    policies: Arc<dyn DynPolicies>,
    cache_ttl: Duration,
    cache_capacity: usize,
    headers_on_success: bool,
    events: Arc<dyn ThrottleEvents>,
    clock: Option<SharedClock>,
}

impl<St> std::fmt::Debug for ThrottleBuilder<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThrottleBuilder")
            .field("rules", &self.rules)
            .field("org_sources", &self.org_sources)
            .finish_non_exhaustive()
    }
}

impl<St: ThrottleStore> ThrottleBuilder<St> {
    /// Adds a rule.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// The quotas (required): keep a clone of the handle to change them at runtime.
    pub fn quotas(mut self, quotas: Quotas) -> Self {
        self.quotas = Some(quotas);
        self
    }

    /// Adds a place where requests name an org; a name other than the verified org is refused
    /// with 403.
    pub fn org_from(mut self, source: OrgSource) -> Self {
        self.org_sources.push(source);
        self
    }

    /// Where org tiers and flags come from (default: every org in the default tier).
    pub fn policies(mut self, policies: impl OrgPolicies) -> Self {
        self.policies = Arc::new(policies);
        self
    }

    /// How long an org's policy is cached (default 30 s) and for how many orgs (default
    /// 100,000).
    pub fn policy_cache(mut self, ttl: Duration, capacity: usize) -> Self {
        self.cache_ttl = ttl;
        self.cache_capacity = capacity;
        self
    }

    /// Sends `RateLimit-Policy` and `RateLimit` on admitted responses too (default: only on
    /// 429s). Costs two small allocations per response.
    pub fn headers_on_success(mut self, on: bool) -> Self {
        self.headers_on_success = on;
        self
    }

    /// Receives limited requests and store failures (default: logs).
    pub fn events(mut self, events: impl ThrottleEvents) -> Self {
        self.events = Arc::new(events);
        self
    }

    /// Reads the policy cache's time from `clock` (tests) instead of a monotonic clock.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Checks the configuration and builds the layer (as in production).
    pub fn build(self) -> Result<ThrottleLayer<St>, ConfigError> {
        self.build_for(Profile::Production)
    }

    /// [`ThrottleBuilder::build`] under an explicit profile. Invalid settings are errors in
    /// every profile; weaker ones are findings ([`ThrottleLayer::findings`]): a rule that
    /// lets requests through when the store fails, no limit for anonymous callers.
    pub fn build_for(self, profile: Profile) -> Result<ThrottleLayer<St>, ConfigError> {
        if self.rules.is_empty() {
            return Err(ConfigError::NoRules);
        }
        let mut posture = Posture::new(profile, "throttle");
        for rule in &self.rules {
            if rule.failure == FailurePolicy::Open {
                posture.record(
                    Severity::Warn,
                    "throttle-fails-open",
                    format!(
                        "rule {} lets requests through when the store fails",
                        rule.name
                    ),
                );
            }
        }
        if !self.rules.iter().any(|r| r.scope == Scope::Anonymous) {
            posture.record(
                Severity::Warn,
                "throttle-no-anonymous-rule",
                "no rule limits anonymous callers (per client network)",
            );
        }
        let findings: Box<[Finding]> = posture.findings().into();
        // At most MAX_LIMITS rules may apply to one request: authenticated requests meet every
        // rule but the anonymous ones, anonymous requests the anonymous and route rules.
        let authenticated = self
            .rules
            .iter()
            .filter(|r| r.scope != Scope::Anonymous)
            .count();
        let anonymous = self
            .rules
            .iter()
            .filter(|r| matches!(r.scope, Scope::Anonymous | Scope::Route))
            .count();
        if authenticated.max(anonymous) > MAX_LIMITS || self.rules.len() > MAX_RULES {
            return Err(ConfigError::TooManyRules);
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if !valid_name(&rule.name) {
                return Err(ConfigError::RuleName(rule.name.to_string()));
            }
            if self.rules[..i].iter().any(|r| r.name == rule.name) {
                return Err(ConfigError::DuplicateRule(rule.name.to_string()));
            }
            if rule.scope == Scope::Route && rule.paths.is_empty() {
                return Err(ConfigError::RouteWithoutPaths(rule.name.to_string()));
            }
        }
        let quotas = self.quotas.ok_or(ConfigError::NoQuotas)?;
        let requirements: Vec<_> = self
            .rules
            .iter()
            .map(|r| (Arc::clone(&r.name), r.cost))
            .collect();
        quotas.register(&requirements)?;
        let ttl_ns = u64::try_from(self.cache_ttl.as_nanos()).unwrap_or(u64::MAX);
        Ok(ThrottleLayer {
            shared: Arc::new(Shared {
                store: self.store,
                rules: self.rules.into(),
                quotas,
                org_sources: self.org_sources.into(),
                policies: self.policies,
                cache: PolicyCache::new(ttl_ns, self.cache_capacity),
                headers_on_success: self.headers_on_success,
                events: self.events,
                time: self.clock.map_or_else(Time::monotonic, Time::Clock),
                profile,
                findings,
                allowed: metrics::counter!("palisade_throttle_decisions_total", "decision" => "allowed"),
                limited: metrics::counter!("palisade_throttle_decisions_total", "decision" => "limited"),
            }),
        })
    }
}

impl<St> ThrottleLayer<St> {
    /// The non-blocking findings recorded while the layer was built.
    pub fn findings(&self) -> &[Finding] {
        &self.shared.findings
    }

    /// The profile the layer was checked under when it was built.
    pub fn profile(&self) -> Profile {
        self.shared.profile
    }
}

/// The throttle layer (see the module docs). Cloning shares the limiter state.
pub struct ThrottleLayer<St> {
    shared: Arc<Shared<St>>,
}

impl<St> Clone for ThrottleLayer<St> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<St> std::fmt::Debug for ThrottleLayer<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThrottleLayer")
            .field("rules", &self.shared.rules)
            .finish_non_exhaustive()
    }
}

impl<St: ThrottleStore> ThrottleLayer<St> {
    /// A builder over `store`.
    pub fn builder(store: St) -> ThrottleBuilder<St> {
        ThrottleBuilder {
            store,
            rules: Vec::new(),
            quotas: None,
            org_sources: Vec::new(),
            policies: Arc::new(StaticPolicies::new()),
            cache_ttl: Duration::from_secs(30),
            cache_capacity: 100_000,
            headers_on_success: false,
            events: Arc::new(LogEvents),
            clock: None,
        }
    }

    /// The quotas handle.
    pub fn quotas(&self) -> &Quotas {
        &self.shared.quotas
    }
}

impl<S, St> Layer<S> for ThrottleLayer<St> {
    type Service = Throttle<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        Throttle {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The throttle service (see [`ThrottleLayer`]).
pub struct Throttle<S, St> {
    inner: S,
    shared: Arc<Shared<St>>,
}

impl<S: Clone, St> Clone for Throttle<S, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: std::fmt::Debug, St> std::fmt::Debug for Throttle<S, St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// A client network as text, without allocating: an IPv4 address, or an IPv6 /64.
struct Net {
    buf: [u8; 48],
    len: usize,
}

impl Net {
    fn of(ip: IpAddr) -> Self {
        use std::io::Write as _;
        let mut buf = [0u8; 48];
        let mut cursor = &mut buf[..];
        // Both forms fit in 48 bytes: the writes cannot fail.
        let _ = match ip.to_canonical() {
            IpAddr::V4(v4) => write!(cursor, "{v4}"),
            IpAddr::V6(v6) => {
                let net = std::net::Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX));
                write!(cursor, "{net}/64")
            }
        };
        let len = 48 - cursor.len();
        Self { buf, len }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

/// Who the request is, as far as the rules care.
struct Who<'a> {
    identity: Option<&'a Identity>,
    org: Option<&'a str>,
    net: Option<&'a str>,
    /// The org, else the user's subject, else the client network.
    tag: &'a str,
    /// What kind of name the tag is (`org`, the user's issuer, `net`): route buckets carry it,
    /// so an org, a user and a network with the same name never share one.
    tag_kind: &'a str,
}

impl<'a> Who<'a> {
    fn new(identity: Option<&'a Identity>, net: Option<&'a Net>) -> Self {
        let org = identity.and_then(Identity::org);
        let net = net.map(Net::as_str);
        let (tag, tag_kind) = match (org, identity) {
            (Some(org), _) => (org, "org"),
            (None, Some(identity)) => (identity.subject(), identity.issuer()),
            (None, None) => (net.unwrap_or_default(), "net"),
        };
        Self {
            identity,
            org,
            net,
            tag,
            tag_kind,
        }
    }
}

/// The limits of one request and which rule each comes from: the enforced ones from the front
/// of one array, the shadow ones from the back.
struct Plan<'a> {
    limits: [Limit<'a>; MAX_LIMITS],
    rules: [usize; MAX_LIMITS],
    len: usize,
    shadow_from: usize,
    /// Whether every applicable enforced rule fails open.
    fail_open: bool,
}

const FILLER: Limit<'static> = Limit {
    key: BucketKey {
        tag: "",
        rule: "",
        namespace: "",
        subject: "",
    },
    quota: Quota::FILLER,
    cost: 0,
};

impl<'a> Plan<'a> {
    fn empty() -> Self {
        Self {
            limits: [FILLER; MAX_LIMITS],
            rules: [0; MAX_LIMITS],
            len: 0,
            shadow_from: MAX_LIMITS,
            fail_open: true,
        }
    }

    /// Fills the plan in place with the limits that apply to the request.
    fn fill<St>(
        &mut self,
        shared: &'a Shared<St>,
        resolved: &Resolved,
        who: &Who<'a>,
        path: &str,
    ) -> Result<(), Box<Refusal>> {
        for (index, rule) in shared.rules.iter().enumerate() {
            let Some(route) = rule.route(path) else {
                continue;
            };
            let (namespace, subject) = match (rule.scope, who.identity) {
                (Scope::Anonymous, None) => match who.net {
                    Some(net) => ("", net),
                    None => {
                        return Err(Refusal::new(Rejection::new(
                            RejectionKind::Unavailable,
                            ThrottleError::NoClientIp,
                        )));
                    }
                },
                (Scope::Anonymous, Some(_)) => continue,
                (Scope::User, Some(identity)) => (identity.issuer(), identity.subject()),
                (Scope::Org, Some(_)) => match who.org {
                    Some(org) => ("", org),
                    None => continue,
                },
                (Scope::AccessKey, Some(identity)) => match identity.method() {
                    AuthMethod::AccessKey { key_id } => ("", key_id.as_str()),
                    _ => continue,
                },
                (Scope::Route, _) => (who.tag_kind, route),
                (Scope::User | Scope::Org | Scope::AccessKey, None) => continue,
            };
            let Some(Some(quota)) = resolved.quotas.get(index).copied() else {
                return Err(Refusal::new(Rejection::new(
                    RejectionKind::Unavailable,
                    ThrottleError::NoQuota(rule.name.to_string()),
                )));
            };
            let limit = Limit {
                key: BucketKey {
                    tag: who.tag,
                    rule: &rule.name,
                    namespace,
                    subject,
                },
                quota,
                cost: rule.cost,
            };
            // The build checked that no request meets more than MAX_LIMITS rules; were it
            // wrong, the request is refused rather than a limit dropped.
            if self.len >= self.shadow_from {
                return Err(Refusal::new(Rejection::new(
                    RejectionKind::Unavailable,
                    ThrottleError::TooManyLimits,
                )));
            }
            let slot = if resolved.shadow & (1 << index) != 0 {
                self.shadow_from -= 1;
                self.shadow_from
            } else {
                self.len += 1;
                self.fail_open &= rule.failure == FailurePolicy::Open;
                self.len - 1
            };
            self.limits[slot] = limit;
            self.rules[slot] = index;
        }
        Ok(())
    }

    fn enforced(&self) -> &[Limit<'a>] {
        &self.limits[..self.len]
    }

    fn shadowed(&self) -> &[Limit<'a>] {
        &self.limits[self.shadow_from..]
    }

    fn has_shadow(&self) -> bool {
        self.shadow_from < MAX_LIMITS
    }
}

/// What the layer does with a request.
pub(crate) type Outcome = Result<Option<Box<RateHeaders>>, Box<Refusal>>;

impl<St: ThrottleStore> Shared<St> {
    /// The refusal when a claimed org is not the verified one.
    fn check_claims(
        &self,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        verified: Option<&str>,
    ) -> Result<(), Box<Refusal>> {
        if self
            .org_sources
            .iter()
            .all(|source| source.agrees(uri, headers, verified))
        {
            Ok(())
        } else {
            Err(Refusal::new(Rejection::new(
                RejectionKind::Forbidden,
                ThrottleError::OrgMismatch,
            )))
        }
    }

    /// Resolves `policy` against the current quotas: per rule, the quota of the tier raised by
    /// the org's flags, and whether the rule is in shadow mode.
    fn resolve(&self, policy: OrgPolicy) -> Resolved {
        // The version is read first: a table replaced in between is seen by the next request.
        let version = self.quotas.version();
        let table = self.quotas.current();
        let mut quotas = [None; MAX_RULES];
        let mut shadow = 0u8;
        for (index, rule) in self.rules.iter().enumerate().take(MAX_RULES) {
            quotas[index] = table.quota(&rule.name, policy.tier_name()).map(|base| {
                let factor = policy.factor(&rule.name);
                if factor > 1 {
                    base.scaled(factor).unwrap_or(base)
                } else {
                    base
                }
            });
            if policy.is_shadow(&rule.name) {
                shadow |= 1 << index;
            }
        }
        Resolved {
            policy,
            quotas,
            shadow,
            version,
        }
    }

    /// Turns the store's answers into an outcome, reporting every limited rule.
    fn conclude(
        &self,
        plan: &Plan<'_>,
        policy: &OrgPolicy,
        org: Option<&str>,
        verdict: &Result<Verdict, StoreError>,
        shadow: Option<&Result<Verdict, StoreError>>,
    ) -> Outcome {
        // Borrowed, not moved: a verdict is a few hundred bytes.
        if let Some(Ok(shadow)) = shadow {
            for (i, decision) in shadow.decisions().iter().enumerate() {
                let rule = plan
                    .rules
                    .get(plan.shadow_from + i)
                    .and_then(|&r| self.rules.get(r));
                if let (false, Some(rule)) = (decision.allowed(), rule) {
                    self.events.limited(&Limited {
                        rule: &rule.name,
                        org,
                        tier: policy.tier_name(),
                        shadow: true,
                        retry_after: decision.retry_after(),
                    });
                }
            }
        }
        let verdict = match verdict {
            Ok(verdict) => {
                // Only an answer the store gave says it is up (not an empty plan, nor a
                // refusal answered from memory).
                if plan.len > 0 && !verdict.is_local() {
                    STORE_HEALTH.ok();
                }
                verdict
            }
            Err(error) => {
                STORE_HEALTH.failed();
                self.events.store_failed(&StoreFailed {
                    error,
                    failed_open: plan.fail_open,
                    org,
                });
                return if plan.fail_open {
                    Ok(None)
                } else {
                    Err(Refusal::new(Rejection::new(
                        RejectionKind::Unavailable,
                        ThrottleError::Store(error.clone()),
                    )))
                };
            }
        };
        // The store answers one decision per limit; a store that answers more is not trusted
        // with an index.
        let rule_of = |i: usize| plan.rules.get(i).and_then(|&r| self.rules.get(r));
        let headers = |(i, decision): (usize, &crate::gcra::Decision)| {
            let rule = rule_of(i)?;
            RateHeaders::new(&rule.name, &plan.limits.get(i)?.quota, decision).map(Box::new)
        };
        if verdict.allowed() {
            self.allowed.increment(1);
            if self.headers_on_success {
                return Ok(verdict.binding().and_then(headers));
            }
            return Ok(None);
        }
        self.limited.increment(1);
        let table = self.quotas.current();
        for (i, decision) in verdict.decisions().iter().enumerate() {
            if let (false, Some(rule)) = (decision.allowed(), rule_of(i)) {
                metrics::counter!(
                    "palisade_throttle_limited_total",
                    "rule" => rule.name.to_string(),
                    "tier" => table.tier_label(&rule.name, policy.tier_name()).to_owned(),
                )
                .increment(1);
                self.events.limited(&Limited {
                    rule: &rule.name,
                    org,
                    tier: policy.tier_name(),
                    shadow: false,
                    retry_after: decision.retry_after(),
                });
            }
        }
        let binding = verdict.binding();
        let (rule, retry) = binding.map_or(("", Duration::ZERO), |(i, d)| {
            (rule_of(i).map_or("", |r| &*r.name), d.retry_after())
        });
        Err(Box::new(Refusal {
            rejection: Rejection::new(
                RejectionKind::TooManyRequests,
                ThrottleError::Limited {
                    rule: rule.to_owned(),
                },
            )
            .with_retry_after(retry),
            headers: binding.and_then(headers),
        }))
    }

    /// Decides without waiting, when the resolved policy is cached and the store answers at
    /// once.
    fn decide_now(&self, who: &Who<'_>, path: &str) -> Option<Outcome> {
        let version = self.quotas.version();
        let now = self.time.nanos();
        self.cache.with(who.org, now, |resolved| {
            if resolved.version != version {
                return None;
            }
            if resolved.policy.is_unlimited() {
                return Some(Ok(None));
            }
            let mut plan = Plan::empty();
            if let Err(refusal) = plan.fill(self, resolved, who, path) {
                return Some(Err(refusal));
            }
            // A layer on an injected clock never hands its reading to the store.
            let check = |limits| {
                if self.time.is_monotonic() {
                    self.store.try_check_at(limits, now)
                } else {
                    self.store.try_check_now(limits)
                }
            };
            let verdict = check(plan.enforced())?;
            // Shadow rules count admitted requests only; once the enforced limits are charged
            // there is no going back to the slow path (a store that cannot answer the shadow
            // check at once just leaves it unreported).
            let shadow = if plan.has_shadow() && verdict.as_ref().is_ok_and(Verdict::allowed) {
                check(plan.shadowed())
            } else {
                None
            };
            Some(self.conclude(&plan, &resolved.policy, who.org, &verdict, shadow.as_ref()))
        })
    }

    /// Decides, waiting for the policy source and the store as needed.
    async fn decide(&self, who: &Who<'_>, path: &str) -> Outcome {
        let version = self.quotas.version();
        let cached = self.cache.with(who.org, self.time.nanos(), |resolved| {
            (resolved.version == version).then(|| resolved.clone())
        });
        let resolved = match cached {
            Some(resolved) => resolved,
            None => {
                let policy = match who.org {
                    None => OrgPolicy::default(),
                    Some(org) => self.policies.policy_boxed(org).await.map_err(|e| {
                        Refusal::new(Rejection::new(
                            RejectionKind::Unavailable,
                            ThrottleError::Policy(e),
                        ))
                    })?,
                };
                let resolved = self.resolve(policy);
                self.cache.put(who.org, resolved.clone(), self.time.nanos());
                resolved
            }
        };
        if resolved.policy.is_unlimited() {
            return Ok(None);
        }
        let mut plan = Plan::empty();
        plan.fill(self, &resolved, who, path)?;
        let verdict = if plan.len > 0 {
            self.store.check(plan.enforced()).await
        } else {
            Verdict::new(&[])
        };
        let shadow = if plan.has_shadow() && verdict.as_ref().is_ok_and(Verdict::allowed) {
            Some(self.store.check(plan.shadowed()).await)
        } else {
            None
        };
        self.conclude(&plan, &resolved.policy, who.org, &verdict, shadow.as_ref())
    }
}

/// An org's policy resolved against the quota table of `version`, per rule of the layer.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    policy: OrgPolicy,
    /// Per rule (at most MAX_RULES), inline so that a lookup touches one entry.
    quotas: [Option<Quota>; MAX_RULES],
    /// Bit i: rule i is in shadow mode.
    shadow: u8,
    version: u64,
}

/// The boxed check of the slow path; it holds the request and hands it back.
pub(crate) type Check<B> = Pin<Box<dyn Future<Output = (Outcome, Request<B>)> + Send>>;

impl<S, St, B, ResBody> Service<Request<B>> for Throttle<S, St>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    St: ThrottleStore,
    B: Send + 'static,
{
    type Response = Response<palisade_core::ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let span = palisade_core::request_span!("palisade.throttle");
        if span.is_disabled() {
            return self.decide_and_call(request);
        }
        let future = {
            let _entered = span.enter();
            self.decide_and_call(request)
        };
        future.in_span(span)
    }
}

impl<S, St> Throttle<S, St> {
    #[inline(always)]
    fn decide_and_call<B, ResBody>(&mut self, request: Request<B>) -> ResponseFuture<S, B>
    where
        S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
        St: ThrottleStore,
        B: Send + 'static,
    {
        let shared = &self.shared;
        let identity = request.extensions().get::<Identity>();
        let verified = identity.and_then(Identity::org);
        if let Err(refusal) = shared.check_claims(request.uri(), request.headers(), verified) {
            return ResponseFuture::refused(refusal);
        }
        let ip = if identity.is_none() {
            request.extensions().get::<ClientIp>().map(|ip| ip.0)
        } else {
            None
        };
        let net = ip.map(Net::of);
        let who = Who::new(identity, net.as_ref());
        match shared.decide_now(&who, request.uri().path()) {
            Some(Ok(headers)) => ResponseFuture::calling(self.inner.call(request), headers),
            Some(Err(refusal)) => ResponseFuture::refused(refusal),
            None => {
                // The slow path: the policy or the store has to be waited for.
                let shared = Arc::clone(shared);
                let check: Check<B> = Box::pin(async move {
                    let outcome = {
                        let identity = request.extensions().get::<Identity>();
                        let net = ip.map(Net::of);
                        let who = Who::new(identity, net.as_ref());
                        shared.decide(&who, request.uri().path()).await
                    };
                    (outcome, request)
                });
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::checking(check, inner)
            }
        }
    }
}
