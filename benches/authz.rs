//! Authorization through Cerbos: a decision-cache hit against a PDP call over loopback, and a
//! miss through `Authorizer` (a sensitive action, never cached) against the bare generated
//! gRPC client (`cerbos::genpb`) asking the same question, in the same run, on the same PDP
//! (the pinned npm build, serving `policies/`, started by this bench on free loopback ports).
//!
//! Besides criterion's medians, interleaved runs report the hit's p50 and p99 and the
//! miss/bare ratio of medians (the machine's drift hits both sides alike).

#[path = "../xtask/src/cerbos.rs"]
#[allow(dead_code)]
mod pdp;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use palisade::authz_cerbos::{
    Authorizer, PdpClient, PrincipalOptions, Resource, Tenant, principal_for,
};
use palisade::core::{AuthMethod, Identity, Membership, Profile, Surface};

fn authz(c: &mut Criterion) {
    let server = pdp::Pdp::start(&pdp::Transport::Plaintext).expect("pdp");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let endpoint = format!("http://{}", server.grpc);
    let (client, bare) = rt.block_on(async {
        let client = PdpClient::builder(endpoint.clone())
            .insecure_plaintext_loopback()
            .profile(Profile::Development)
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
            .expect("endpoint")
            .tcp_nodelay(true)
            .connect()
            .await
            .expect("connect");
        let bare = cerbos::genpb::cerbos::svc::v1::cerbos_service_client::CerbosServiceClient::new(
            channel,
        );
        (client, bare)
    });
    let authz = Authorizer::builder(client).sensitive(["export"]).build();
    let alice = Identity::new(
        "https://idp/realms/r",
        "alice",
        AuthMethod::Oidc,
        Surface::API,
    )
    .with_membership(Membership::new("org-1", None, ["member"]))
    .with_membership(Membership::new("org-2", None, ["admin"]));
    let principal =
        principal_for(&alice, &Tenant::org("org-1"), &PrincipalOptions::default()).expect("p");
    let resource = Resource::new("document", "doc-1").attr("org", "org-1");
    let bare_request = || cerbos::genpb::cerbos::request::v1::CheckResourcesRequest {
        request_id: "bench".into(),
        principal: Some(principal.clone()),
        resources: vec![
            cerbos::genpb::cerbos::request::v1::check_resources_request::ResourceEntry {
                actions: vec!["export".into()],
                resource: Some(cerbos::genpb::cerbos::engine::v1::Resource {
                    kind: "document".into(),
                    id: "doc-1".into(),
                    attr: resource.attributes().clone(),
                    ..Default::default()
                }),
            },
        ],
        ..Default::default()
    };
    // Warm: the hit is cached, both channels are connected.
    rt.block_on(async {
        assert!(
            authz
                .check(&principal, &resource, "read", "warm")
                .await
                .expect("read")
        );
        let mut b = bare.clone();
        b.check_resources(bare_request()).await.expect("bare");
    });

    let mut group = c.benchmark_group("authz");
    group.bench_function("cache_hit", |b| {
        b.iter(|| {
            rt.block_on(authz.check(black_box(&principal), &resource, "read", "hit"))
                .expect("hit")
        })
    });
    group.bench_function("miss_through_authorizer", |b| {
        b.iter(|| {
            rt.block_on(authz.check(black_box(&principal), &resource, "export", "miss"))
                .expect("miss")
        })
    });
    group.bench_function("bare_generated_client", |b| {
        b.iter(|| {
            let mut client = bare.clone();
            rt.block_on(client.check_resources(bare_request()))
                .expect("bare")
        })
    });
    group.finish();

    // Interleaved: the hit's p50/p99, and miss against bare alternating.
    let mut hits = Vec::with_capacity(20_000);
    for _ in 0..20_000 {
        let t = Instant::now();
        black_box(
            rt.block_on(authz.check(&principal, &resource, "read", "hit"))
                .expect("hit"),
        );
        hits.push(t.elapsed());
    }
    hits.sort();
    let (mut misses, mut bares) = (Vec::new(), Vec::new());
    for round in 0..2_001 {
        let miss = || {
            let t = Instant::now();
            black_box(
                rt.block_on(authz.check(&principal, &resource, "export", "miss"))
                    .expect("miss"),
            );
            t.elapsed()
        };
        let bare_call = || {
            let mut client = bare.clone();
            let request = bare_request();
            let t = Instant::now();
            black_box(rt.block_on(client.check_resources(request)).expect("bare"));
            t.elapsed()
        };
        if round % 2 == 0 {
            misses.push(miss());
            bares.push(bare_call());
        } else {
            bares.push(bare_call());
            misses.push(miss());
        }
    }
    misses.sort();
    bares.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let p = |v: &[Duration], q: f64| v[((v.len() - 1) as f64 * q) as usize];
    println!(
        "authz: cache hit p50 {:.2} µs, p90 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs (20,000 calls); miss through the authorizer p50 {:.0} µs vs bare generated client p50 {:.0} µs: {:.3}x (2,001 alternating rounds)",
        us(p(&hits, 0.5)),
        us(p(&hits, 0.9)),
        us(p(&hits, 0.99)),
        us(p(&hits, 0.999)),
        us(p(&misses, 0.5)),
        us(p(&bares, 0.5)),
        us(p(&misses, 0.5)) / us(p(&bares, 0.5)),
    );
    println!(
        "authz: cache hit p50 {:.2} µs vs a PDP call (bare client) p50 {:.0} µs: the hit takes {:.4}x the call's time",
        us(p(&hits, 0.5)),
        us(p(&bares, 0.5)),
        us(p(&hits, 0.5)) / us(p(&bares, 0.5)),
    );
    let stats = authz.stats();
    println!(
        "authz: hit ratio {:.3}, PDP calls {}, latency buckets (µs ≤ {:?}, rest) {:?}",
        stats.hit_ratio(),
        stats.pdp_calls,
        palisade::authz_cerbos::LATENCY_BUCKETS_US,
        stats.latency_us
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = authz
}
criterion_main!(benches);
