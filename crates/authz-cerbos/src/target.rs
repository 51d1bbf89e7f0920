//! What a request asks to do ([`Target`]), how a layer finds out ([`MapRequest`]), and a
//! helper to read tenants and ids from paths ([`PathPattern`]).

use std::collections::HashMap;

use http::request::Parts;

use crate::client::Resource;
use crate::principal::Tenant;

/// What a request asks to do: an action on a resource of a tenant.
///
/// The tenant often comes from the route, which is caller input: the principal is built
/// with that tenant's memberships only, so naming another org gains nothing. Resource
/// attributes that policies compare (the document's owning org, say) should come from your
/// data, not from the request.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// The tenant the request acts in.
    pub tenant: Tenant,
    /// The resource acted on.
    pub resource: Resource,
    /// The action.
    pub action: String,
}

/// Describes a request as a [`Target`]; `None` when it cannot (the request is then refused
/// with 403: a request the policy cannot be asked about is not let through).
///
/// Closures `Fn(&Parts) -> Option<Target>` implement it.
pub trait MapRequest: Send + Sync + 'static {
    /// The target of the request whose head is `parts`.
    fn target(&self, parts: &Parts) -> Option<Target>;
}

impl<F> MapRequest for F
where
    F: Fn(&Parts) -> Option<Target> + Send + Sync + 'static,
{
    fn target(&self, parts: &Parts) -> Option<Target> {
        self(parts)
    }
}

/// A path template such as `/api/orgs/{org}/documents/{id}`: literal segments and `{name}`
/// captures, each capture one whole, non-empty segment, strictly percent-decoded to UTF-8
/// (no `/`, no dot segments).
///
/// ```
/// use palisade_authz_cerbos::PathPattern;
///
/// let p = PathPattern::new("/api/orgs/{org}/documents/{id}");
/// let c = p.captures("/api/orgs/org-1/documents/d%2D7").expect("match");
/// assert_eq!((c["org"].as_str(), c["id"].as_str()), ("org-1", "d-7"));
/// assert!(p.captures("/api/orgs/org-1/documents/a/b").is_none());
/// assert!(p.captures("/api/orgs/%2e%2e/documents/x").is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern {
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Capture(String),
}

impl PathPattern {
    /// Parses `template` (segments separated by `/`; `{name}` captures).
    pub fn new(template: &str) -> Self {
        let segments = template
            .trim_start_matches('/')
            .split('/')
            .map(
                |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => Segment::Capture(name.to_owned()),
                    None => Segment::Literal(s.to_owned()),
                },
            )
            .collect();
        Self { segments }
    }

    /// The captures of `path` (a request path, without the query), if it matches.
    pub fn captures(&self, path: &str) -> Option<HashMap<String, String>> {
        let rest = path.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut out = HashMap::new();
        for (segment, raw) in self.segments.iter().zip(parts) {
            match segment {
                Segment::Literal(lit) => {
                    if lit != raw {
                        return None;
                    }
                }
                Segment::Capture(name) => {
                    let bytes = palisade_core::percent::decode(raw.as_bytes(), false)?;
                    let value = String::from_utf8(bytes).ok()?;
                    if value.is_empty() || value == "." || value == ".." || value.contains('/') {
                        return None;
                    }
                    out.insert(name.clone(), value);
                }
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Hostile paths never panic, and a capture never holds a separator or dot segment.
        #[test]
        fn captures_are_single_clean_segments(path in "(/[a-z%0-9.{}-]{0,6}){0,6}") {
            let p = PathPattern::new("/api/orgs/{org}/documents/{id}");
            if let Some(c) = p.captures(&path) {
                for v in c.values() {
                    prop_assert!(!v.is_empty() && !v.contains('/') && v != "." && v != "..");
                }
            }
        }
    }

    #[test]
    fn literals_must_match_exactly() {
        let p = PathPattern::new("/api/orgs/{org}");
        assert!(p.captures("/api/orgs/a").is_some());
        assert!(p.captures("/api/Orgs/a").is_none());
        assert!(p.captures("/api/orgs/").is_none());
        assert!(p.captures("api/orgs/a").is_none());
        assert!(p.captures("/api/orgs/%zz").is_none());
        assert!(p.captures("/api/orgs/%2F").is_none());
    }
}
