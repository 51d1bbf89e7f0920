//! The Redis store against the machine's real Redis: the conformance suite (on the caller's
//! clock), Redis `TIME` as the clock, NOSCRIPT recovery, several replicas sharing one server,
//! and an unreachable server.

mod common;

use std::time::Duration;

use palisade_core::{ManualClock, Profile};
use palisade_throttle::{BucketKey, Limit, Quota, RedisStore, ThrottleStore};

fn url() -> String {
    std::env::var("PALISADE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn prefix(test: &str) -> String {
    format!("palisade-throttle-test:{}:{test}:", std::process::id())
}

async fn store(test: &str) -> RedisStore {
    RedisStore::connect(&url(), &prefix(test), Profile::Development)
        .await
        .expect("the machine's Redis")
}

/// A plain connection to the machine's Redis, for commands the tests send themselves.
async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("the machine's Redis")
}

/// Redis's own clock, in seconds: the only clock the store's decisions use.
async fn redis_time(conn: &mut redis::aio::MultiplexedConnection) -> f64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(conn).await.expect("time");
    s as f64 + us as f64 / 1e6
}

async fn cleanup(test: &str) {
    let mut conn = raw().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", prefix(test)))
        .query_async(&mut conn)
        .await
        .expect("keys");
    for key in keys {
        let _: () = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("del");
    }
}

#[tokio::test]
async fn redis_store_conformance_on_the_callers_clock() {
    let clock = ManualClock::new(common::at(0, 0));
    let s = store("conformance")
        .await
        .with_test_clock(clock.shared(), Profile::Development)
        .expect("test clock");
    common::conformance(&s, &clock, "t").await;
    cleanup("conformance").await;
}

#[tokio::test]
async fn the_callers_clock_is_refused_in_production() {
    let s = store("prod").await;
    let clock = ManualClock::new(common::at(0, 0));
    assert!(
        s.with_test_clock(clock.shared(), Profile::Production)
            .is_err()
    );
}

fn limit(subject: &str, quota: Quota) -> Limit<'_> {
    Limit {
        key: BucketKey::new("org-1", "org", subject),
        quota,
        cost: 1,
    }
}

#[tokio::test]
async fn redis_time_is_the_clock_and_keys_expire() {
    let s = store("time").await;
    let quota = Quota::per_window(3, Duration::from_secs(3600)).expect("quota");
    for n in 0..3u32 {
        let v = s.check(&[limit("a", quota)]).await.expect("redis");
        assert!(v.allowed());
        assert_eq!(v.decisions()[0].remaining(), 2 - n);
    }
    let v = s.check(&[limit("a", quota)]).await.expect("redis");
    assert!(!v.allowed());
    let retry = v.decisions()[0].retry_after();
    assert!(
        retry > Duration::from_secs(1190) && retry <= Duration::from_secs(1200),
        "{retry:?}"
    );
    // The key carries a TTL of the time until the bucket is full again.
    let mut conn = raw().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(s.key(&limit("a", quota).key))
        .query_async(&mut conn)
        .await
        .expect("pttl");
    assert!(ttl > 3_590_000 && ttl <= 3_600_001, "{ttl}");
    cleanup("time").await;
}

#[tokio::test]
async fn keys_share_the_request_tag_and_escape_their_parts() {
    let s = store("keys").await;
    let key = s.key(&BucketKey {
        tag: "ac}me",
        rule: "user",
        namespace: "https://idp/x",
        subject: "a:b%",
    });
    let expected = format!(
        "{}{{ac%7Dme}}:user:https%3A//idp/x:a%3Ab%25",
        prefix("keys")
    );
    assert_eq!(key, expected);
}

#[tokio::test]
async fn the_script_is_reloaded_after_a_flush() {
    let s = store("noscript").await;
    let quota = Quota::per_minute(10).expect("quota");
    assert!(
        s.check(&[limit("a", quota)])
            .await
            .expect("redis")
            .allowed()
    );
    let mut conn = raw().await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .expect("flush");
    let v = s.check(&[limit("a", quota)]).await.expect("reloaded");
    assert_eq!(v.decisions()[0].remaining(), 8);
    cleanup("noscript").await;
}

#[tokio::test]
async fn an_unreachable_server_is_an_error() {
    // A port nothing listens on: connecting fails, nothing is allowed.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let answer = RedisStore::connect(
        &format!("redis://127.0.0.1:{port}"),
        "x:",
        Profile::Development,
    )
    .await;
    assert!(answer.is_err());
    assert!(
        RedisStore::connect("redis://redis.example.com:6379", "x:", Profile::Production)
            .await
            .is_err(),
        "plaintext to another machine is refused in production"
    );
}

/// Several replicas (own connections) sharing one Redis admit at most
/// burst + rate × T + 1 requests over T, T measured by Redis itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_redis_admit_at_most_burst_plus_rate() {
    let burst = 20u32;
    let quota = Quota::per_window(burst, Duration::from_secs(1)).expect("quota");
    let mut conn = raw().await;
    let start = redis_time(&mut conn).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let replica = store("replicas").await;
        tasks.push(tokio::spawn(async move {
            let mut admitted = 0u32;
            for _ in 0..300 {
                if replica
                    .check(&[limit("shared", quota)])
                    .await
                    .expect("redis")
                    .allowed()
                {
                    admitted += 1;
                }
            }
            admitted
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.expect("task");
    }
    let elapsed = redis_time(&mut conn).await - start;
    let bound = f64::from(burst) + f64::from(burst) * elapsed + 1.0;
    assert!(admitted >= burst, "the burst is available: {admitted}");
    assert!(
        f64::from(admitted) <= bound,
        "{admitted} admitted over {elapsed:.3} s, bound {bound:.1}"
    );
    cleanup("replicas").await;
}

use palisade_testkit::relay::relay_to;

mod through_the_layer {
    use std::convert::Infallible;

    use http::{Request, Response, StatusCode};
    use palisade_core::{AuthMethod, Identity, Surface};
    use palisade_throttle::{
        FailurePolicy, QuotaTable, Quotas, Rule, Scope, ThrottleLayer, ThrottleStore,
    };
    use tower::{Layer as _, ServiceExt as _};

    use super::*;

    type Body = http_body_util::Empty<bytes::Bytes>;

    fn layer<St: ThrottleStore>(store: St, policies: [FailurePolicy; 2]) -> ThrottleLayer<St> {
        let q = Quota::per_window(20, Duration::from_secs(1)).expect("quota");
        ThrottleLayer::builder(store)
            .rule(Rule::new("org", Scope::Org).on_store_error(policies[0]))
            .rule(Rule::new("user", Scope::User).on_store_error(policies[1]))
            .quotas(Quotas::new(
                QuotaTable::new().rule("org", q).rule("user", q),
            ))
            .build()
            .expect("layer")
    }

    async fn send<St: ThrottleStore>(
        layer: &ThrottleLayer<St>,
        org: &str,
        user: &str,
    ) -> StatusCode {
        let mut req = Request::builder()
            .uri("/x")
            .body(Body::new())
            .expect("request");
        req.extensions_mut().insert(
            Identity::new(
                "https://idp.example.com",
                user,
                AuthMethod::Oidc,
                Surface::API,
            )
            .with_org(org),
        );
        let svc = layer.layer(tower::service_fn(|_req: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::new()))
        }));
        svc.oneshot(req).await.expect("infallible").status()
    }

    #[tokio::test]
    async fn a_store_outage_under_each_failure_policy() {
        use FailurePolicy::{Closed, Open};
        for (policies, expected) in [
            ([Closed, Closed], StatusCode::SERVICE_UNAVAILABLE),
            ([Closed, Open], StatusCode::SERVICE_UNAVAILABLE),
            ([Open, Closed], StatusCode::SERVICE_UNAVAILABLE),
            ([Open, Open], StatusCode::OK),
        ] {
            let (port, cut) = relay_to("127.0.0.1:6379").await;
            let store = RedisStore::connect(
                &format!("redis://127.0.0.1:{port}"),
                &prefix("outage"),
                Profile::Development,
            )
            .await
            .expect("through the relay");
            let layer = layer(store, policies);
            assert_eq!(send(&layer, "acme", "alice").await, StatusCode::OK);
            cut.send(true).expect("cut");
            assert_eq!(
                send(&layer, "acme", "alice").await,
                expected,
                "{policies:?}"
            );
            // Redis is back: the store reconnects and requests are decided again, without a
            // new layer. (The request that notices the old connection is gone may still fail;
            // a bounded number of tries, no sleeping.)
            cut.send(false).expect("heal");
            let mut recovered = false;
            for _ in 0..20 {
                if send(&layer, "acme", "alice").await == StatusCode::OK {
                    recovered = true;
                    break;
                }
            }
            assert!(recovered, "{policies:?}: the store never reconnected");
        }
        cleanup("outage").await;
    }

    /// Several replicas, each its own layer and connection, share one Redis: over T they
    /// admit at most burst + rate × T + 1 requests of one org.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replica_layers_share_the_limit() {
        let mut conn = raw().await;
        let start = redis_time(&mut conn).await;
        let mut tasks = Vec::new();
        for replica in 0..3 {
            let layer = layer(store("replica-layers").await, [FailurePolicy::Closed; 2]);
            tasks.push(tokio::spawn(async move {
                let mut admitted = 0u32;
                for i in 0..200 {
                    let user = format!("r{replica}-u{i}");
                    if send(&layer, "acme", &user).await == StatusCode::OK {
                        admitted += 1;
                    }
                }
                admitted
            }));
        }
        let mut admitted = 0;
        for task in tasks {
            admitted += task.await.expect("task");
        }
        let elapsed = redis_time(&mut conn).await - start;
        let bound = 20.0 + 20.0 * elapsed + 1.0;
        assert!(admitted >= 20, "{admitted}");
        assert!(
            f64::from(admitted) <= bound,
            "{admitted} admitted over {elapsed:.3} s, bound {bound:.1}"
        );
        let _: () = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .expect("ping");
        cleanup("replica-layers").await;
    }
}

/// The conformance suite on a real three-node Redis Cluster: every request's buckets share
/// its `{tag}`, so each script call touches one slot; requests with other tags land on other
/// slots (and nodes) and are decided there.
#[cfg(feature = "redis-cluster")]
#[tokio::test]
async fn redis_cluster_conformance() {
    let cluster = tokio::task::spawn_blocking(palisade_testkit::redis_cluster::get)
        .await
        .expect("cluster start");
    let urls: Vec<&str> = cluster.urls.iter().map(String::as_str).collect();
    // Production refuses plaintext cluster seeds even on loopback; the test cluster has no TLS.
    assert!(
        RedisStore::connect_cluster(&urls, "x:", Profile::Production)
            .await
            .is_err()
    );
    let clock = ManualClock::new(common::at(0, 0));
    let s = RedisStore::connect_cluster(&urls, &prefix("cluster"), Profile::Development)
        .await
        .expect("cluster")
        .with_test_clock(clock.shared(), Profile::Development)
        .expect("test clock");
    // Many tags: the suite's buckets spread over the cluster's slots.
    for tag in ["t", "acme", "globex", "initech", "org-1", "org-2"] {
        common::conformance(&s, &clock, tag).await;
    }
}

/// Stored times keep every digit: 16-digit microsecond values would lose their last digits
/// through Lua's own number formatting.
#[tokio::test]
async fn stored_times_are_exact_to_the_microsecond() {
    let now = common::at(0, 0) + Duration::from_micros(123_457);
    let clock = ManualClock::new(now);
    let s = store("exact")
        .await
        .with_test_clock(clock.shared(), Profile::Development)
        .expect("test clock");
    let quota = Quota::new(5, Duration::from_micros(1_000_003)).expect("quota");
    assert!(
        s.check(&[limit("a", quota)])
            .await
            .expect("redis")
            .allowed()
    );
    let mut conn = raw().await;
    let stored: String = redis::cmd("GET")
        .arg(s.key(&limit("a", quota).key))
        .query_async(&mut conn)
        .await
        .expect("get");
    let now_us = now
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_micros();
    assert_eq!(
        stored.parse::<u128>().ok(),
        Some(now_us + 1_000_003),
        "{stored}"
    );
    cleanup("exact").await;
}

/// With the blocked-until cache, a caller over its limit is refused from memory: with Redis
/// cut off, it still gets its refusal (not a store error), while anyone else needs Redis.
#[tokio::test]
async fn over_limit_callers_are_answered_without_a_round_trip() {
    let (port, cut) = relay_to("127.0.0.1:6379").await;
    let s = RedisStore::connect(
        &format!("redis://127.0.0.1:{port}"),
        &prefix("blocked"),
        Profile::Development,
    )
    .await
    .expect("through the relay")
    .with_blocked_cache(1_000);
    let quota = Quota::per_window(2, Duration::from_secs(3600)).expect("quota");
    for _ in 0..2 {
        assert!(
            s.check(&[limit("a", quota)])
                .await
                .expect("redis")
                .allowed()
        );
    }
    let refused = s.check(&[limit("a", quota)]).await.expect("redis");
    assert!(!refused.allowed() && !refused.is_local());
    cut.send(true).expect("cut");
    let local = s
        .check(&[limit("a", quota)])
        .await
        .expect("answered from memory");
    // Marked, so that it says nothing of the store's health.
    assert!(!local.allowed() && local.is_local());
    let left = local.decisions()[0].retry_after();
    assert!(left > Duration::from_secs(1700) && left <= refused.decisions()[0].retry_after());
    // Redis really is out of reach: a caller that is not blocked gets a store error.
    assert!(s.check(&[limit("b", quota)]).await.is_err());
    cut.send(false).expect("heal");
    cleanup("blocked").await;
}
