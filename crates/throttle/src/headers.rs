//! The IETF rate-limit fields (draft-ietf-httpapi-ratelimit-headers, structured-field syntax):
//! `RateLimit-Policy: "<rule>";q=<quota>;w=<window s>` and `RateLimit: "<rule>";r=<left>;t=<s>`.

use std::io::Write as _;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::gcra::{Decision, Quota};

/// `RateLimit-Policy`.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The two fields for one rule's decision.
#[derive(Clone, Debug)]
pub(crate) struct RateHeaders {
    policy: HeaderValue,
    state: HeaderValue,
}

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

impl RateHeaders {
    /// The fields for `rule` under `quota`: `r` is what is left, `t` the seconds until the
    /// request would fit again when refused, else until the bucket is full.
    pub(crate) fn new(rule: &str, quota: &Quota, decision: &Decision) -> Option<Self> {
        let t = if decision.allowed() {
            decision.reset_after()
        } else {
            decision.retry_after()
        };
        let mut buf = [0u8; 160];
        let mut cursor = &mut buf[..];
        write!(
            cursor,
            "\"{rule}\";q={};w={}",
            quota.burst(),
            ceil_secs(quota.window())
        )
        .ok()?;
        let left = cursor.len();
        let policy = HeaderValue::from_bytes(&buf[..buf.len() - left]).ok()?;
        let mut cursor = &mut buf[..];
        write!(
            cursor,
            "\"{rule}\";r={};t={}",
            decision.remaining(),
            ceil_secs(t)
        )
        .ok()?;
        let left = cursor.len();
        let state = HeaderValue::from_bytes(&buf[..buf.len() - left]).ok()?;
        Some(Self { policy, state })
    }

    pub(crate) fn apply(self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_POLICY, self.policy);
        headers.insert(RATELIMIT, self.state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_structured() {
        let quota = Quota::per_minute(100).expect("quota");
        let d = Decision::new(true, 100, 42, Duration::from_millis(34_800), Duration::ZERO);
        let mut map = HeaderMap::new();
        RateHeaders::new("org", &quota, &d)
            .expect("fits")
            .apply(&mut map);
        assert_eq!(map[RATELIMIT_POLICY], "\"org\";q=100;w=60");
        assert_eq!(map[RATELIMIT], "\"org\";r=42;t=35");
        let d = Decision::new(
            false,
            100,
            0,
            Duration::from_secs(60),
            Duration::from_millis(600),
        );
        RateHeaders::new("org", &quota, &d)
            .expect("fits")
            .apply(&mut map);
        assert_eq!(map[RATELIMIT], "\"org\";r=0;t=1");
    }
}
