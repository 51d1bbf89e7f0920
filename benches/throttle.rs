//! The in-process throttle decision against `governor`'s keyed limiter (`check_key`) in the
//! same run, at 1,000 and 100,000 keys, with the memory each uses per key; the whole layer
//! (identity to org, cached tier, check) against the same bare check; and the Redis decision
//! against a `PING` round trip (p50) and a no-op `EVALSHA` (throughput with 32 concurrent
//! callers), on the same server in the same run.
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

type Body = http_body_util::Empty<bytes::Bytes>;

fn now<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            return output;
        }
    }
}

/// The whole layer over a service that answers at once, against the same service bare: the
/// difference is the layer's cost, set beside governor's bare check of the same org keys.
fn layer(c: &mut Criterion) {
    use palisade::core::{AuthMethod, Identity, Surface};
    use palisade::throttle::{
        OrgPolicy, QuotaTable, Quotas, Rule, Scope, StaticPolicies, ThrottleLayer,
    };
    use tower::{Layer as _, Service as _};

    let rate = 1_000_000u32;
    let q = Quota::per_second(rate).expect("quota");
    let n = 1_000;
    let orgs = keys(n);
    let mut policies = StaticPolicies::new();
    for org in orgs.iter().step_by(2) {
        policies = policies.with(org, OrgPolicy::tier("gold"));
    }
    // One org rule: the single check governor makes, plus everything around it.
    let layer = ThrottleLayer::builder(MemoryStore::new())
        .rule(Rule::new("org", Scope::Org))
        .quotas(Quotas::new(
            QuotaTable::new().rule("org", q).tier("org", "gold", q),
        ))
        .policies(policies)
        .build()
        .expect("layer");
    // The inner service keeps the request (dropping it is not the layer's cost) and answers
    // at once; requests are made before the clock starts.
    thread_local! {
        static KEPT: std::cell::RefCell<Vec<http::Request<Body>>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let inner = tower::service_fn(|req: http::Request<Body>| {
        KEPT.with(|kept| kept.borrow_mut().push(req));
        std::future::ready(Ok::<_, std::convert::Infallible>(http::Response::new(
            Body::new(),
        )))
    });
    let mut throttled = layer.layer(inner);
    let mut bare = inner;
    let identities: Vec<Identity> = orgs
        .iter()
        .map(|org| {
            Identity::new(
                "https://idp.example.com/realms/x",
                "alice",
                AuthMethod::Oidc,
                Surface::API,
            )
            .with_org(org.as_str())
        })
        .collect();
    let mut i = 0usize;
    let mut make = || {
        i = (i + 7919) % n;
        let mut req = http::Request::builder()
            .uri("/api/x")
            .body(Body::new())
            .expect("request");
        req.extensions_mut().insert(identities[i].clone());
        req
    };
    for _ in 0..2 * n {
        now(throttled.call(make())).expect("infallible");
    }
    KEPT.with(|kept| kept.borrow_mut().clear());
    let governor = governor::RateLimiter::keyed(governor::Quota::per_second(
        NonZeroU32::new(rate).expect("non-zero"),
    ));
    let mut group = c.benchmark_group("throttle/layer_1000_orgs");
    let mut j = 0usize;
    group.bench_function("governor_check_key", |b| {
        b.iter(|| {
            j = (j + 7919) % n;
            black_box(governor.check_key(black_box(&orgs[j])).is_ok())
        })
    });
    let mut timed = |svc: &mut dyn FnMut(http::Request<Body>), iters: u64| {
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let batch = left.min(32);
            let requests: Vec<_> = (0..batch).map(|_| make()).collect();
            KEPT.with(|kept| kept.borrow_mut().reserve(batch as usize));
            let start = std::time::Instant::now();
            for req in requests {
                svc(req);
            }
            total += start.elapsed();
            KEPT.with(|kept| kept.borrow_mut().clear());
            left -= batch;
        }
        total
    };
    group.bench_function("bare_service", |b| {
        b.iter_custom(|iters| timed(&mut |req| drop(black_box(now(bare.call(req)))), iters))
    });
    // What reading the verified org costs on its own (any layer after authentication pays it).
    let mut reading = tower::service_fn(|req: http::Request<Body>| {
        let org_len = req
            .extensions()
            .get::<Identity>()
            .and_then(Identity::org)
            .map_or(0, str::len);
        black_box(org_len);
        KEPT.with(|kept| kept.borrow_mut().push(req));
        std::future::ready(Ok::<_, std::convert::Infallible>(http::Response::new(
            Body::new(),
        )))
    });
    group.bench_function("bare_service_reading_the_org", |b| {
        b.iter_custom(|iters| timed(&mut |req| drop(black_box(now(reading.call(req)))), iters))
    });
    group.bench_function("throttled_service", |b| {
        b.iter_custom(|iters| timed(&mut |req| drop(black_box(now(throttled.call(req)))), iters))
    });
    // As a service runs it: a subscriber logging at INFO (the layers' debug spans are off).
    // Last: once a subscriber was set, every later layer call asks it.
    let info = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::sink)
        .finish();
    let _subscriber = tracing::subscriber::set_default(info);
    group.bench_function("throttled_service_info_subscriber", |b| {
        b.iter_custom(|iters| timed(&mut |req| drop(black_box(now(throttled.call(req)))), iters))
    });
    group.finish();
}

/// The no-op script, with a decision's shape: one key and the same arguments.
async fn noop_call(
    noop: &redis::Script,
    conn: &mut palisade::sessions::RedisConnection,
) -> Vec<i64> {
    noop.key("k")
        .arg("")
        .arg(1)
        .arg(1)
        .arg(1)
        .invoke_async(conn)
        .await
        .expect("noop")
}

/// The Redis decision against the round trips it cannot avoid, on the machine's Redis.
fn redis(c: &mut Criterion) {
    use palisade::throttle::{RedisStore, ThrottleStore};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let url =
        std::env::var("PALISADE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("palisade-throttle-bench:{}:", std::process::id());
    // Round trips are timed on a current-thread runtime (no cross-thread wake-ups in the
    // measurement); throughput on the two-worker runtime.
    let local = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local_store = local
        .block_on(RedisStore::connect(
            &url,
            &prefix,
            palisade::core::Profile::Development,
        ))
        .expect("redis");
    // PING and the no-op script go through the same kind of connection the store holds.
    let connect = || {
        palisade::sessions::RedisConnection::single(
            &url,
            palisade::core::Profile::Development,
            "throttle-bench",
        )
    };
    let local_conn = local.block_on(connect()).expect("connect");
    let store = rt
        .block_on(RedisStore::connect(
            &url,
            &prefix,
            palisade::core::Profile::Development,
        ))
        .expect("redis");
    let conn = rt.block_on(connect()).expect("connect");
    let noop = redis::Script::new("return {1, 0, 0, 0, 0}");
    let quota = Quota::per_second(1_000_000).expect("quota");
    let orgs = keys(1_000);

    let mut group = c.benchmark_group("throttle/redis");
    group.bench_function("ping", |b| {
        b.iter(|| {
            let mut conn = local_conn.clone();
            local.block_on(async move {
                let pong: String = redis::cmd("PING")
                    .query_async(&mut conn)
                    .await
                    .expect("ping");
                pong
            })
        })
    });
    let mut i = 0usize;
    group.bench_function("decision", |b| {
        b.iter(|| {
            i = (i + 7919) % orgs.len();
            let limit = limit(&orgs[i], quota);
            local
                .block_on(local_store.check(&[limit]))
                .expect("redis")
                .allowed()
        })
    });
    group.bench_function("noop_evalsha", |b| {
        b.iter(|| {
            let mut conn = local_conn.clone();
            let noop = &noop;
            local.block_on(async move {
                let v: Vec<i64> = noop_call(noop, &mut conn).await;
                v
            })
        })
    });
    group.finish();

    // p50 of single round trips, PING and decision alternating (the host's drift hits both).
    let mut pings = Vec::new();
    let mut decisions = Vec::new();
    let mut k = 0usize;
    for round in 0..4_001 {
        let ping = || {
            let mut conn = local_conn.clone();
            let start = std::time::Instant::now();
            local.block_on(async move {
                let _: String = redis::cmd("PING")
                    .query_async(&mut conn)
                    .await
                    .expect("ping");
            });
            start.elapsed()
        };
        let mut decide = || {
            k = (k + 7919) % orgs.len();
            let limit = limit(&orgs[k], quota);
            let start = std::time::Instant::now();
            local.block_on(local_store.check(&[limit])).expect("redis");
            start.elapsed()
        };
        if round % 2 == 0 {
            pings.push(ping());
            decisions.push(decide());
        } else {
            decisions.push(decide());
            pings.push(ping());
        }
    }
    pings.sort();
    decisions.sort();
    let (p, d) = (pings[pings.len() / 2], decisions[decisions.len() / 2]);
    println!(
        "throttle/redis: p50 of 4,001 alternating round trips: PING {:.1} µs, decision {:.1} µs, decision/PING {:.2}",
        p.as_secs_f64() * 1e6,
        d.as_secs_f64() * 1e6,
        d.as_secs_f64() / p.as_secs_f64()
    );

    // Throughput: 32 concurrent callers, each making its share of the calls.
    const CALLERS: usize = 32;
    const CALLS: usize = 200;
    let throughput = |decision: bool| {
        rt.block_on(async {
            let start = std::time::Instant::now();
            let mut tasks = Vec::new();
            for org in orgs.iter().take(CALLERS) {
                let store = store.clone();
                let mut conn = conn.clone();
                let noop = noop.clone();
                let org = org.clone();
                tasks.push(tokio::spawn(async move {
                    for _ in 0..CALLS {
                        if decision {
                            store.check(&[limit(&org, quota)]).await.expect("redis");
                        } else {
                            let _: Vec<i64> = noop_call(&noop, &mut conn).await;
                        }
                    }
                }));
            }
            for task in tasks {
                task.await.expect("task");
            }
            (CALLERS * CALLS) as f64 / start.elapsed().as_secs_f64()
        })
    };
    let mut ratios = Vec::new();
    let mut rates = (Vec::new(), Vec::new());
    for _ in 0..15 {
        let noop_rate = throughput(false);
        let decision_rate = throughput(true);
        rates.0.push(noop_rate);
        rates.1.push(decision_rate);
        ratios.push(decision_rate / noop_rate);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "throttle/redis: 32 concurrent callers: no-op EVALSHA {:.0}/s, decision {:.0}/s, decision/no-op {:.2} (median of 15 alternating rounds)",
        median(&mut rates.0),
        median(&mut rates.1),
        median(&mut ratios)
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = throttle, layer, redis
}
criterion_main!(benches);
