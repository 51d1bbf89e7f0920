//! Where a request *claims* an org (a path segment, a header, a query parameter), so that a claim
//! differing from the verified org is refused before any limiter state is touched.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Uri};

type Custom = Arc<dyn Fn(&Uri, &HeaderMap) -> Vec<String> + Send + Sync>;

/// One place a request can name an org. Every occurrence is checked (a repeated header or
/// query parameter, each value), after percent-decoding for paths and queries; a value that does
/// not decode counts as a different org.
#[derive(Clone)]
pub struct OrgSource(Kind);

#[derive(Clone)]
enum Kind {
    PathSegment(String),
    Header(HeaderName),
    Query(String),
    Custom(Custom),
}

impl fmt::Debug for OrgSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::PathSegment(prefix) => f.debug_tuple("PathSegment").field(prefix).finish(),
            Kind::Header(name) => f.debug_tuple("Header").field(name).finish(),
            Kind::Query(name) => f.debug_tuple("Query").field(name).finish(),
            Kind::Custom(_) => f.write_str("Custom"),
        }
    }
}

impl OrgSource {
    /// The path segment right after `prefix`, e.g. `/api/orgs/` for `/api/orgs/{org}/...`.
    pub fn path_segment_after(prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self(Kind::PathSegment(prefix))
    }

    /// Every value of a header, e.g. `x-org-id`.
    pub fn header(name: HeaderName) -> Self {
        Self(Kind::Header(name))
    }

    /// Every value of a query parameter, e.g. `org`.
    pub fn query(name: impl Into<String>) -> Self {
        Self(Kind::Query(name.into()))
    }

    /// Any other place: a function answering every org id the request names.
    pub fn custom<F>(f: F) -> Self
    where
        F: Fn(&Uri, &HeaderMap) -> Vec<String> + Send + Sync + 'static,
    {
        Self(Kind::Custom(Arc::new(f)))
    }

    /// Whether every org this source finds in the request is `verified` (vacuously true when it
    /// finds none). Without a verified org, any claim is a mismatch.
    pub(crate) fn agrees(&self, uri: &Uri, headers: &HeaderMap, verified: Option<&str>) -> bool {
        let same = |claimed: Option<Cow<'_, str>>| match (claimed, verified) {
            (Some(claimed), Some(verified)) => claimed == verified,
            _ => false,
        };
        match &self.0 {
            Kind::PathSegment(prefix) => match uri.path().strip_prefix(prefix.as_str()) {
                // Nothing after the prefix: no claim.
                Some("") => true,
                Some(rest) => {
                    let segment = rest.split('/').next().unwrap_or_default();
                    // An empty or dot segment (`//x`, `/./x`, `/../x`) names something a later
                    // normalization could read as another org: refused.
                    !matches!(segment, "" | "." | "..")
                        && same(decode(segment, false).filter(|d| !matches!(&**d, "." | "..")))
                }
                None => true,
            },
            Kind::Header(name) => headers
                .get_all(name)
                .iter()
                .all(|v| same(v.to_str().ok().map(|s| Cow::Borrowed(s.trim())))),
            Kind::Query(name) => uri.query().unwrap_or_default().split('&').all(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                match decode(key, true) {
                    Some(key) if key == name.as_str() => same(decode(value, true)),
                    // A key that does not decode could be the parameter in disguise.
                    None => false,
                    Some(_) => true,
                }
            }),
            Kind::Custom(f) => f(uri, headers)
                .into_iter()
                .all(|claimed| same(Some(Cow::Owned(claimed)))),
        }
    }
}

/// Percent-decodes into UTF-8 (and `+` as a space in queries, as forms do; a path keeps its
/// `+`); `None` for an escape that is not `%` and two hex digits, or bytes that are not UTF-8.
fn decode(text: &str, plus_is_space: bool) -> Option<Cow<'_, str>> {
    if !text
        .bytes()
        .any(|b| b == b'%' || (plus_is_space && b == b'+'))
    {
        return Some(Cow::Borrowed(text));
    }
    let out = palisade_core::percent::decode(text.as_bytes(), plus_is_space)?;
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any percent-encoded text decodes back to itself, and arbitrary text never panics
        /// the decoder; a claim that decodes to the verified org agrees, anything else not.
        #[test]
        fn decoding_round_trips_and_never_panics(org in "\\PC{0,12}", junk in "\\PC{0,24}") {
            let encoded: String = org.bytes().map(|b| format!("%{b:02X}")).collect();
            let (path, query) = (decode(&encoded, false), decode(&encoded, true));
            prop_assert_eq!(path.as_deref(), Some(org.as_str()));
            prop_assert_eq!(query.as_deref(), Some(org.as_str()));
            let _ = decode(&junk, true);
            let _ = decode(&junk, false);
            let query = OrgSource::query("org");
            let uri: Uri = format!("/x?org={encoded}").parse().expect("uri");
            let verified = Some(org.as_str());
            prop_assert!(query.agrees(&uri, &HeaderMap::new(), verified));
            let other = format!("{org}x");
            prop_assert!(!query.agrees(&uri, &HeaderMap::new(), Some(other.as_str())));
        }
    }

    fn agrees(source: &OrgSource, uri: &str, headers: &[(&str, &str)], org: Option<&str>) -> bool {
        let uri: Uri = uri.parse().expect("uri");
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        source.agrees(&uri, &map, org)
    }

    #[test]
    fn path_segments() {
        let s = OrgSource::path_segment_after("/api/orgs");
        assert!(agrees(&s, "/api/orgs/acme/docs", &[], Some("acme")));
        assert!(agrees(&s, "/api/orgs/acme", &[], Some("acme")));
        assert!(agrees(&s, "/api/other", &[], Some("acme")));
        assert!(agrees(&s, "/api/orgs/", &[], Some("acme")));
        assert!(!agrees(&s, "/api/orgs/evil/docs", &[], Some("acme")));
        assert!(!agrees(&s, "/api/orgs/acme/docs", &[], None));
        assert!(agrees(&s, "/api/orgs/ac%6De/docs", &[], Some("acme")));
        assert!(!agrees(&s, "/api/orgs/ac%6/docs", &[], Some("acme")));
        assert!(!agrees(&s, "/api/orgs/%FF/docs", &[], Some("acme")));
        // Signs are not hex digits; a path keeps its `+`.
        assert!(!agrees(&s, "/api/orgs/%+A/docs", &[], Some("\n")));
        assert!(!agrees(&s, "/api/orgs/a+b/docs", &[], Some("a b")));
        assert!(agrees(&s, "/api/orgs/a+b/docs", &[], Some("a+b")));
        // Empty and dot segments under the prefix are refused.
        for path in [
            "/api/orgs//evil",
            "/api/orgs/./x",
            "/api/orgs/../x",
            "/api/orgs/%2E%2E/x",
        ] {
            assert!(!agrees(&s, path, &[], Some("acme")), "{path}");
        }
    }

    #[test]
    fn headers_every_value() {
        let s = OrgSource::header(HeaderName::from_static("x-org-id"));
        assert!(agrees(&s, "/", &[("x-org-id", "acme")], Some("acme")));
        assert!(agrees(&s, "/", &[], Some("acme")));
        assert!(!agrees(
            &s,
            "/",
            &[("x-org-id", "acme"), ("x-org-id", "evil")],
            Some("acme")
        ));
        assert!(!agrees(&s, "/", &[("x-org-id", "acme")], None));
    }

    #[test]
    fn query_every_occurrence_decoded() {
        let s = OrgSource::query("org");
        assert!(agrees(&s, "/x?org=acme&a=b", &[], Some("acme")));
        assert!(agrees(&s, "/x?a=b", &[], Some("acme")));
        assert!(!agrees(&s, "/x?org=acme&org=evil", &[], Some("acme")));
        assert!(!agrees(&s, "/x?o%72g=evil", &[], Some("acme")));
        assert!(!agrees(&s, "/x?%zz=evil", &[], Some("acme")));
        assert!(agrees(&s, "/x?org=ac%6De", &[], Some("acme")));
    }

    #[test]
    fn custom_sources() {
        let s = OrgSource::custom(|uri, _| {
            uri.host()
                .map(|h| vec![h.split('.').next().unwrap_or_default().to_owned()])
                .unwrap_or_default()
        });
        assert!(agrees(&s, "https://acme.example.com/", &[], Some("acme")));
        assert!(!agrees(&s, "https://evil.example.com/", &[], Some("acme")));
    }
}
