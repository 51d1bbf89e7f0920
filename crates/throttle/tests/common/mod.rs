//! The conformance suite every [`ThrottleStore`] passes: GCRA on a manual clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palisade_core::ManualClock;
use palisade_throttle::{BucketKey, Limit, Quota, ThrottleStore, Verdict};

/// A fixed instant for the manual clock (whole seconds).
pub(crate) const T0: u64 = 1_795_953_600;

pub(crate) fn at(seconds: u64, millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0 + seconds) + Duration::from_millis(millis)
}

fn limit<'a>(tag: &'a str, rule: &'a str, subject: &'a str, quota: Quota, cost: u32) -> Limit<'a> {
    Limit {
        key: BucketKey::new(tag, rule, subject),
        quota,
        cost,
    }
}

/// 5 requests at once, then one every 2 s.
fn five_per_ten() -> Quota {
    Quota::per_window(5, Duration::from_secs(10)).expect("quota")
}

/// A store reading the time from the suite's manual clock.
struct Clocked<'a, S> {
    store: &'a S,
    clock: &'a ManualClock,
}

impl<S: ThrottleStore> Clocked<'_, S> {
    async fn check(&self, limits: &[Limit<'_>], now: SystemTime) -> Result<Verdict, String> {
        self.clock.set(now);
        self.store.check(limits).await.map_err(|e| e.to_string())
    }
}

async fn one<S: ThrottleStore>(store: &Clocked<'_, S>, l: Limit<'_>, now: SystemTime) -> Verdict {
    store.check(&[l], now).await.expect("store answers")
}

/// Runs every case against a store that reads `clock`; `tag` keeps this run's buckets apart
/// from other runs on a shared server.
pub(crate) async fn conformance<S: ThrottleStore>(store: &S, clock: &ManualClock, tag: &str) {
    let store = &Clocked { store, clock };
    let q = five_per_ten();

    // Burst: five at once, counting down, then a refusal that names the wait.
    for n in 0..5u32 {
        let v = one(store, limit(tag, "burst", "a", q, 1), at(0, 0)).await;
        assert!(v.allowed(), "request {n} of the burst");
        let d = v.decisions()[0];
        assert_eq!(d.remaining(), 4 - n);
        assert_eq!(d.limit(), 5);
        assert_eq!(d.reset_after(), Duration::from_secs(2 * u64::from(n + 1)));
        assert_eq!(d.retry_after(), Duration::ZERO);
    }
    let v = one(store, limit(tag, "burst", "a", q, 1), at(0, 0)).await;
    assert!(!v.allowed());
    let d = v.decisions()[0];
    assert_eq!(
        (d.remaining(), d.retry_after()),
        (0, Duration::from_secs(2))
    );
    assert_eq!(d.reset_after(), Duration::from_secs(10));
    // Retry-after shrinks with time and is exact.
    let v = one(store, limit(tag, "burst", "a", q, 1), at(1, 250)).await;
    assert!(!v.allowed());
    assert_eq!(v.decisions()[0].retry_after(), Duration::from_millis(750));
    // Refill: after 6 s three requests fit, the fourth does not.
    for _ in 0..3 {
        assert!(
            one(store, limit(tag, "burst", "a", q, 1), at(6, 0))
                .await
                .allowed()
        );
    }
    assert!(
        !one(store, limit(tag, "burst", "a", q, 1), at(6, 0))
            .await
            .allowed()
    );

    // Steady rate: one request every emission interval is always admitted, never building up.
    for step in 0..20u64 {
        let v = one(
            store,
            limit(tag, "steady", "a", q, 1),
            at(100 + 2 * step, 0),
        )
        .await;
        assert!(v.allowed(), "steady request {step}");
        assert_eq!(v.decisions()[0].remaining(), 4);
    }
    // Faster than the rate is refused once the burst is spent: 5 + 1 per 2 s over 4 s.
    let mut admitted = 0;
    for ms in (0..4_000).step_by(100) {
        if one(store, limit(tag, "fast", "a", q, 1), at(200, ms))
            .await
            .allowed()
        {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5 + 1);

    // Cost above one: three tokens, then three more need one token's refill (2 s).
    let v = one(store, limit(tag, "cost", "a", q, 3), at(300, 0)).await;
    assert!(v.allowed());
    assert_eq!(v.decisions()[0].remaining(), 2);
    let v = one(store, limit(tag, "cost", "a", q, 3), at(300, 0)).await;
    assert!(!v.allowed());
    assert_eq!(v.decisions()[0].retry_after(), Duration::from_secs(2));
    assert!(
        one(store, limit(tag, "cost", "a", q, 3), at(302, 0))
            .await
            .allowed()
    );
    // A cost above the burst never fits.
    assert!(
        !one(store, limit(tag, "cost", "b", q, 6), at(300, 0))
            .await
            .allowed()
    );

    // Peek without cost: reports, charges nothing.
    assert!(
        one(store, limit(tag, "peek", "a", q, 2), at(400, 0))
            .await
            .allowed()
    );
    for _ in 0..3 {
        let v = one(store, limit(tag, "peek", "a", q, 0), at(400, 0)).await;
        assert!(v.allowed());
        assert_eq!(v.decisions()[0].remaining(), 3);
    }

    // All-or-nothing: the refusing limit leaves the other uncharged.
    let tight = Quota::per_window(1, Duration::from_secs(60)).expect("quota");
    let both = [
        limit(tag, "org", "acme", q, 1),
        limit(tag, "user", "alice", tight, 1),
    ];
    let v = store.check(&both, at(500, 0)).await.expect("store");
    assert!(v.allowed());
    assert_eq!(v.decisions()[0].remaining(), 4);
    for _ in 0..3 {
        let v = store.check(&both, at(500, 0)).await.expect("store");
        assert!(!v.allowed());
        assert_eq!(v.binding().map(|(i, _)| i), Some(1));
        assert_eq!(v.decisions()[0].remaining(), 4, "the org is not charged");
    }
    let v = one(store, limit(tag, "org", "acme", q, 0), at(500, 0)).await;
    assert_eq!(v.decisions()[0].remaining(), 4);
    // One bucket named twice in one request is charged twice.
    let twice = [limit(tag, "dup", "a", q, 3), limit(tag, "dup", "a", q, 3)];
    let v = store.check(&twice, at(600, 0)).await.expect("store");
    assert!(!v.allowed());
    assert_eq!(
        one(store, limit(tag, "dup", "a", q, 0), at(600, 0))
            .await
            .decisions()[0]
            .remaining(),
        5
    );

    // Buckets are apart: by subject, by rule, and by components that would join alike.
    assert!(
        one(store, limit(tag, "solo", "x", tight, 1), at(700, 0))
            .await
            .allowed()
    );
    assert!(
        !one(store, limit(tag, "solo", "x", tight, 1), at(700, 0))
            .await
            .allowed()
    );
    assert!(
        one(store, limit(tag, "solo", "y", tight, 1), at(700, 0))
            .await
            .allowed()
    );
    assert!(
        one(store, limit(tag, "solo2", "x", tight, 1), at(700, 0))
            .await
            .allowed()
    );
    assert!(
        one(store, limit(tag, "j:a", "b", tight, 1), at(700, 0))
            .await
            .allowed()
    );
    assert!(
        one(store, limit(tag, "j", "a:b", tight, 1), at(700, 0))
            .await
            .allowed()
    );
    let ns = |namespace, subject| Limit {
        key: BucketKey {
            tag,
            rule: "ns",
            namespace,
            subject,
        },
        quota: tight,
        cost: 1,
    };
    assert!(one(store, ns("https://a", "b"), at(700, 0)).await.allowed());
    assert!(
        one(store, ns("https://a:b", ""), at(700, 0))
            .await
            .allowed()
    );
    assert!(
        one(store, ns("", "https://a:b"), at(700, 0))
            .await
            .allowed()
    );
    assert!(!one(store, ns("https://a", "b"), at(700, 0)).await.allowed());
    let other_tag = format!("{tag}}}:j");
    assert!(
        one(store, limit(&other_tag, "a", "b", tight, 1), at(700, 0))
            .await
            .allowed()
    );
}
