//! The allow path allocates nothing: in-process store, cached org policy, fields off.

use std::alloc::System;
use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use palisade_core::{AuthMethod, ClientIp, Identity, Surface};
use palisade_throttle::{
    MemoryStore, OrgPolicy, Quota, QuotaTable, Quotas, Rule, Scope, StaticPolicies, ThrottleLayer,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer as _, Service as _};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

type Body = http_body_util::Empty<bytes::Bytes>;

fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the in-process path never waits"),
    }
}

#[test]
fn the_allow_path_does_not_allocate() {
    // The counting allocator sees every thread of the test process (the harness's own
    // threads may allocate while a loaded machine runs the test slowly): the fewest of a few
    // runs is the layer's count, since an allocation on the allow path shows in every run.
    let fewest = |fields| (0..5).map(|_| allocations_per_request(fields)).min();
    assert_eq!(fewest(false), Some(0));
    // The count sees allocations: the fields on admitted responses cost a few, every time.
    assert!(fewest(true) > Some(0));
}

/// Allocations on the allow path, after the first request of each kind (which fills the
/// policy cache and creates the buckets).
fn allocations_per_request(fields: bool) -> usize {
    let q = Quota::per_window(1_000_000, Duration::from_secs(1)).expect("quota");
    let layer = ThrottleLayer::builder(MemoryStore::new())
        .headers_on_success(fields)
        .rule(Rule::new("anon", Scope::Anonymous))
        .rule(Rule::new("user", Scope::User))
        .rule(Rule::new("org", Scope::Org))
        .quotas(Quotas::new(
            QuotaTable::new()
                .rule("anon", q)
                .rule("user", q)
                .rule("org", q)
                .tier("org", "gold", q),
        ))
        .policies(StaticPolicies::new().with("acme", OrgPolicy::tier("gold")))
        .build()
        .expect("layer");
    let mut svc = layer.layer(tower::service_fn(|_req: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::new()))
    }));
    let make = |authenticated: bool| {
        let mut req = Request::builder()
            .uri("/api/x")
            .body(Body::new())
            .expect("request");
        if authenticated {
            req.extensions_mut().insert(
                Identity::new(
                    "https://idp.example.com",
                    "alice",
                    AuthMethod::Oidc,
                    Surface::API,
                )
                .with_org("acme"),
            );
        }
        req.extensions_mut()
            .insert(ClientIp("2001:db8::7".parse().expect("ip")));
        req
    };
    // The first request fills the policy cache (that path may allocate) and the buckets.
    for authenticated in [true, false] {
        let resp = now(svc.call(make(authenticated))).expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let mut total = 0;
    for authenticated in [true, false] {
        let requests: Vec<_> = (0..100).map(|_| make(authenticated)).collect();
        let region = Region::new(GLOBAL);
        for req in requests {
            let resp = now(svc.call(req)).expect("infallible");
            assert_eq!(resp.status(), StatusCode::OK);
        }
        total += region.change().allocations;
    }
    total
}
