//! The in-process store against the conformance suite, and its bound.

mod common;

use std::time::Duration;

use palisade_core::ManualClock;
use palisade_throttle::{BucketKey, Limit, MemoryStore, Quota};

fn clocked(capacity: usize) -> (MemoryStore, ManualClock) {
    let clock = ManualClock::new(common::at(0, 0));
    (MemoryStore::with_clock(capacity, clock.shared()), clock)
}

#[tokio::test]
async fn memory_store_conformance() {
    let (store, clock) = clocked(1_000_000);
    common::conformance(&store, &clock, "t").await;
}

fn limit(subject: &str, quota: Quota) -> Limit<'_> {
    Limit {
        key: BucketKey::new("t", "r", subject),
        quota,
        cost: 1,
    }
}

#[test]
fn a_flood_of_new_callers_stays_bounded_and_new_callers_are_still_counted() {
    let (store, clock) = clocked(128 * 8);
    let quota = Quota::per_window(2, Duration::from_secs(60)).expect("quota");
    // A steady caller with most of its quota spent (a large debt).
    let steady = limit("steady", quota);
    assert!(store.check_sync(&[steady]).expect("store").allowed());
    clock.set(common::at(1, 0));
    // Then a flood of one-request callers, far more than the store holds.
    for i in 0..20_000 {
        let s = format!("flood{i}");
        let v = store
            .check_sync(&[limit(&s, quota)])
            .expect("never refused for being full");
        assert!(v.allowed());
    }
    let stats = store.stats();
    assert!(stats.buckets <= 128 * 8, "{stats:?}");
    // A newcomer is counted like anyone: its second request in the same instant is its last.
    let late = limit("late", quota);
    assert!(store.check_sync(&[late]).expect("store").allowed());
    assert!(store.check_sync(&[late]).expect("store").allowed());
    assert!(!store.check_sync(&[late]).expect("store").allowed());
}

#[test]
fn idle_buckets_are_swept() {
    let (store, clock) = clocked(100_000);
    let quota = Quota::per_window(10, Duration::from_secs(1)).expect("quota");
    let subjects: Vec<String> = (0..5_000).map(|i| format!("s{i}")).collect();
    for s in &subjects {
        let v = store.check_sync(&[limit(s, quota)]).expect("store");
        assert!(v.allowed());
    }
    assert_eq!(store.stats().buckets, 5_000);
    assert!(store.stats().bytes_per_bucket() > 24.0);
    clock.set(common::at(0, 50));
    assert_eq!(store.sweep(), 0);
    clock.set(common::at(2, 0));
    assert_eq!(store.sweep(), 5_000);
    assert_eq!(store.stats().buckets, 0);
}

#[test]
fn concurrent_callers_never_exceed_the_burst() {
    let (store, _clock) = clocked(1_000);
    let quota = Quota::per_window(100, Duration::from_secs(3600)).expect("quota");
    let admitted: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    (0..1_000)
                        .filter(|_| {
                            store
                                .check_sync(&[limit("shared", quota)])
                                .expect("store")
                                .allowed()
                        })
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    assert_eq!(admitted, 100);
}

#[test]
fn the_default_clock_is_monotonic_and_live() {
    // The default store reads a monotonic counter: a burst is admitted and then refused,
    // whatever the wall clock says.
    let store = MemoryStore::with_capacity(1_000);
    let quota = Quota::per_window(3, Duration::from_secs(3600)).expect("quota");
    let admitted = (0..10)
        .filter(|_| {
            store
                .check_sync(&[limit("a", quota)])
                .expect("store")
                .allowed()
        })
        .count();
    assert_eq!(admitted, 3);
}
