//! The in-process throttle decision against `governor`'s keyed limiter (`check_key`) in the
//! same run, at 1,000 and 100,000 keys, with the memory each uses per key.
//!
//! Both sides read their own clock on every decision (both a monotonic `quanta` clock), and
//! both admit every request (the quotas are far above the request rate per key), so the allow
//! path is what is measured.

use std::alloc::System;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade::throttle::{BucketKey, Limit, MemoryStore, Quota};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("org-{i:08}")).collect()
}

fn limit(subject: &str, quota: Quota) -> Limit<'_> {
    Limit {
        key: BucketKey::new(subject, "org", subject),
        quota,
        cost: 1,
    }
}

fn throttle(c: &mut Criterion) {
    let rate = 1_000_000u32;
    let quota = Quota::per_second(rate).expect("quota");
    for n in [1_000usize, 100_000] {
        let keys = keys(n);
        // Fill both, measuring the bytes each allocates for its keys.
        let region = Region::new(GLOBAL);
        let governor = governor::RateLimiter::keyed(governor::Quota::per_second(
            NonZeroU32::new(rate).expect("non-zero"),
        ));
        for k in &keys {
            let _ = governor.check_key(k);
        }
        let net = |c: stats_alloc::Stats| c.bytes_allocated.saturating_sub(c.bytes_deallocated);
        let governor_bytes = net(region.change());
        let region = Region::new(GLOBAL);
        let store = MemoryStore::with_capacity(1_000_000);
        for k in &keys {
            store.check_sync(&[limit(k, quota)]).expect("store");
        }
        let store_bytes = net(region.change());
        println!(
            "throttle/{n}_keys: bytes per key: governor {:.1} (map and key strings), palisade {:.1} (table; {:.1} by its own count)",
            governor_bytes as f64 / n as f64,
            store_bytes as f64 / n as f64,
            store.stats().bytes_per_bucket()
        );

        let mut group = c.benchmark_group(format!("throttle/{n}_keys"));
        let mut i = 0usize;
        group.bench_function("governor_check_key", |b| {
            b.iter(|| {
                i = (i + 7919) % n;
                black_box(governor.check_key(black_box(&keys[i])).is_ok())
            })
        });
        let mut i = 0usize;
        group.bench_function("palisade_memory", |b| {
            b.iter(|| {
                i = (i + 7919) % n;
                let verdict = store
                    .check_sync(&[limit(black_box(&keys[i]), quota)])
                    .expect("store");
                black_box(verdict.allowed())
            })
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = throttle
}
criterion_main!(benches);
