//! Rules: who a limit counts, where it applies, what a request costs and what happens when the
//! store cannot answer.

use std::sync::Arc;

/// Who a rule counts. Every subject comes from what the request proved, never from what it
/// claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scope {
    /// Requests without an [`Identity`](palisade_core::Identity), by client network: the
    /// [`ClientIp`](palisade_core::ClientIp) resolved through the trusted proxies only (an IPv4
    /// address, or the /64 of an IPv6 address, since one host holds a whole /64).
    Anonymous,
    /// Authenticated requests, by token issuer and subject, within the request's org: the
    /// bucket carries the org as its tag, so that all of a request's buckets live on one Redis
    /// Cluster slot and are decided in one script call. A user with tokens for several orgs has
    /// a bucket in each (each org's own limit still applies); a limit across a user's orgs
    /// needs a layer of its own without org rules.
    User,
    /// Authenticated requests of an org, by the verified org id. Requests without an org are
    /// not counted by this rule.
    Org,
    /// Requests signed with an access key, by key id.
    AccessKey,
    /// Every request to the rule's paths, by route and by the request's tag (the verified org,
    /// else the user, else the client network): a per-route limit for each tenant.
    Route,
}

/// What happens to a request when the store cannot answer (down, timed out, full).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Refuse with 503 (the default).
    #[default]
    Closed,
    /// Let the request through, count it in the events and log a warning.
    Open,
}

/// One limit of the layer: a name (used in `RateLimit` headers, metrics and store keys), a
/// scope, optional path prefixes, a cost and a failure policy. The quotas live in a
/// [`QuotaTable`](crate::QuotaTable), per rule and tier, so they can change at runtime.
#[derive(Clone, Debug)]
pub struct Rule {
    pub(crate) name: Arc<str>,
    pub(crate) scope: Scope,
    pub(crate) paths: Vec<String>,
    pub(crate) cost: u32,
    pub(crate) failure: FailurePolicy,
}

impl Rule {
    /// A rule counting `scope` on every path, cost 1, failing closed.
    ///
    /// The name is 1 to 64 characters of `a-z`, `0-9`, `-`, `_` and `.` (checked when the
    /// layer is built).
    pub fn new(name: &str, scope: Scope) -> Self {
        Self {
            name: name.into(),
            scope,
            paths: Vec::new(),
            cost: 1,
            failure: FailurePolicy::Closed,
        }
    }

    /// Applies the rule only under these path prefixes (whole segments: `/api/export` covers
    /// `/api/export` and `/api/export/x`, not `/api/exports`).
    pub fn on_paths<I, P>(mut self, prefixes: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.paths.extend(prefixes.into_iter().map(Into::into));
        self
    }

    /// What one request costs (default 1; at most the smallest burst of the rule's quotas).
    pub fn cost(mut self, cost: u32) -> Self {
        self.cost = cost;
        self
    }

    /// What happens when the store cannot answer.
    pub fn on_store_error(mut self, policy: FailurePolicy) -> Self {
        self.failure = policy;
        self
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rule's scope.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The path prefix of `path` this rule applies under: `Some("")` when it has none (every
    /// path), `None` when it does not apply.
    pub(crate) fn route<'a>(&'a self, path: &str) -> Option<&'a str> {
        if self.paths.is_empty() {
            return Some("");
        }
        self.paths
            .iter()
            .find(|prefix| under_prefix(path, prefix))
            .map(String::as_str)
    }
}

/// Whether `path` is `prefix` or under it, by whole segments.
pub(crate) fn under_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Whether `name` may name a rule (it is sent in headers as a structured-field string).
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_whole_segments() {
        let rule = Rule::new("export", Scope::Route).on_paths(["/api/export", "/v2/"]);
        assert_eq!(rule.route("/api/export"), Some("/api/export"));
        assert_eq!(rule.route("/api/export/1"), Some("/api/export"));
        assert_eq!(rule.route("/api/exports"), None);
        assert_eq!(rule.route("/v2/x"), Some("/v2/"));
        assert_eq!(Rule::new("all", Scope::User).route("/x"), Some(""));
    }

    #[test]
    fn names_are_header_safe() {
        assert!(valid_name("org-limit_1.v2"));
        for bad in ["", "Org", "a\"b", "a b", "a;b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
