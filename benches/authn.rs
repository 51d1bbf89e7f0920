//! The authentication layer against a bare `jsonwebtoken::decode` with the same key and
//! validation, in the same run, for RS256, ES256 and EdDSA; plus the cost of refusing a token
//! with an unknown kid (no fetch: the key set is static).
//!
//! `cargo xtask bench` prints medians and ratios. `authn/<alg>/bare` is `decode` alone;
//! `authn/<alg>/verify` is `Authenticator::verify` (parse, header checks, key lookup,
//! signature, claims, identity); `authn/<alg>/layer` is a whole request through `AuthnLayer`
//! (header extraction, verify, identity into extensions, inner call), with the request built
//! outside the measurement.

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use palisade::authn::{Authenticator, IssuerConfig, KeySet, KeySource, SurfacePolicy};
use palisade::core::{Profile, Surface};
use tower::{Layer, Service, service_fn};

const ISS: &str = "https://sso.example.com/realms/acme";
const JWKS: &str = include_str!("../crates/authn/tests/keys/jwks.json");

fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the benchmarked call was not ready at once"),
    }
}

fn keys(alg: Algorithm) -> (EncodingKey, DecodingKey, &'static str) {
    let jwks: serde_json::Value = serde_json::from_str(JWKS).expect("jwks");
    let k = |i: usize, f: &str| jwks["keys"][i][f].as_str().expect("jwk field").to_owned();
    match alg {
        Algorithm::RS256 => (
            EncodingKey::from_rsa_pem(include_bytes!("../crates/authn/tests/keys/rs256.pem"))
                .expect("key"),
            DecodingKey::from_rsa_components(&k(0, "n"), &k(0, "e")).expect("key"),
            "test-rs",
        ),
        Algorithm::ES256 => (
            EncodingKey::from_ec_pem(include_bytes!("../crates/authn/tests/keys/es256.pem"))
                .expect("key"),
            DecodingKey::from_ec_components(&k(1, "x"), &k(1, "y")).expect("key"),
            "test-es",
        ),
        _ => (
            EncodingKey::from_ed_pem(include_bytes!("../crates/authn/tests/keys/ed25519.pem"))
                .expect("key"),
            DecodingKey::from_ed_components(&k(2, "x")).expect("key"),
            "test-ed",
        ),
    }
}

fn bench_alg(
    c: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    auth: &Authenticator,
    alg: Algorithm,
    name: &str,
) {
    let (enc, dec, kid) = keys(alg);
    let now_secs = jsonwebtoken::get_current_timestamp();
    // A Keycloak-shaped access token.
    let claims = serde_json::json!({
        "iss": ISS, "sub": "5d9c7b1e-2f0a-4c7e-9b1a-0a1b2c3d4e5f", "typ": "Bearer", "azp": "web",
        "aud": "api", "exp": now_secs + 86_400, "iat": now_secs, "auth_time": now_secs,
        "jti": "0f7c2d1e-8a9b-4c3d-a2b1-c0d9e8f7a6b5", "sid": "a1b2c3d4-e5f6-4711-8000-123456789abc",
        "acr": "1", "amr": ["pwd"], "scope": "profile email",
        "realm_access": {"roles": ["member", "offline_access", "uma_authorization"]},
        "resource_access": {"api": {"roles": ["reader", "writer"]}, "account": {"roles": ["view-profile"]}},
        "org_id": "org-1", "team_id": "team-1", "preferred_username": "alice"
    });
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    header.typ = Some("JWT".to_owned());
    let token = encode(&header, &claims, &enc).expect("token");

    let mut validation = Validation::new(alg);
    validation.set_issuer(&[ISS]);
    validation.set_audience(&["api"]);
    validation.leeway = 30;
    validation.required_spec_claims =
        HashSet::from(["exp".to_owned(), "iss".to_owned(), "aud".to_owned()]);
    assert!(decode::<serde_json::Value>(&token, &dec, &validation).is_ok());

    let policy = SurfacePolicy::new(Surface::API)
        .audiences(["api"])
        .authorized_parties(["web"]);
    assert!(runtime.block_on(auth.verify(&token, &policy)).is_ok());
    let mut layered =
        auth.layer(policy.clone())
            .expect("layer")
            .layer(service_fn(|_req: Request<()>| async {
                Ok::<_, Infallible>(Response::new(()))
            }));
    let bearer = format!("Bearer {token}");

    c.bench_function(&format!("authn/{name}/bare"), |b| {
        b.iter(|| {
            black_box(decode::<serde_json::Value>(
                black_box(&token),
                &dec,
                &validation,
            ))
        })
    });
    c.bench_function(&format!("authn/{name}/verify"), |b| {
        b.iter(|| black_box(now(auth.verify(black_box(&token), &policy))))
    });
    let _guard = runtime.enter();
    // The request is built outside the measurement, as `bare` gets its token for free.
    c.bench_function(&format!("authn/{name}/layer"), |b| {
        b.iter_batched(
            || {
                Request::builder()
                    .uri("/api/orders")
                    .header("authorization", bearer.as_str())
                    .body(())
                    .expect("request")
            },
            |req| {
                let res = now(layered.call(black_box(req))).expect("infallible");
                assert_eq!(res.status(), 200);
                black_box(res)
            },
            BatchSize::SmallInput,
        )
    });
}

fn authn(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let auth = runtime
        .block_on(
            Authenticator::builder()
                .profile(Profile::Production)
                .issuer(
                    IssuerConfig::new(ISS)
                        .expect("issuer")
                        .key_source(KeySource::Static(
                            KeySet::from_jwks(JWKS.as_bytes()).expect("jwks"),
                        )),
                )
                .build(),
        )
        .expect("authenticator");
    for (alg, name) in [
        (Algorithm::RS256, "rs256"),
        (Algorithm::ES256, "es256"),
        (Algorithm::EdDSA, "eddsa"),
    ] {
        bench_alg(c, &runtime, &auth, alg, name);
    }
    // Refusing an unknown kid: parse, header, lookup miss (no fetch with a static key set).
    let (enc, _, _) = keys(Algorithm::EdDSA);
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("random-unknown-kid".to_owned());
    let forged = encode(
        &header,
        &serde_json::json!({"iss": ISS, "exp": 4_102_444_800u64}),
        &enc,
    )
    .expect("token");
    let policy = SurfacePolicy::new(Surface::API)
        .audiences(["api"])
        .authorized_parties(["web"]);
    c.bench_function("authn/unknown_kid/refuse", |b| {
        b.iter(|| black_box(now(auth.verify(black_box(&forged), &policy))))
    });
}

/// 10,000 requests with random unknown kids against an issuer whose keys come over HTTP (a
/// loopback JWKS endpoint counting its hits): at most one fetch per cooldown.
fn kid_flood(c: &mut Criterion) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { JWKS }
        }),
    );
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    runtime.spawn(async move { axum::serve(listener, app).await });
    let auth = runtime
        .block_on(
            Authenticator::builder()
                .profile(Profile::Development)
                .issuer(
                    IssuerConfig::new(ISS)
                        .expect("issuer")
                        .key_source(KeySource::JwksUrl(format!("http://{addr}/jwks"))),
                )
                .build(),
        )
        .expect("authenticator");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "one fetch at start-up");
    let (enc, _, _) = keys(Algorithm::EdDSA);
    let policy = SurfacePolicy::new(Surface::API)
        .audiences(["api"])
        .authorized_parties(["web"]);
    let forged: Vec<String> = (0..10_000)
        .map(|i| {
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some(format!("random-{i}"));
            encode(
                &header,
                &serde_json::json!({"iss": ISS, "exp": 4_102_444_800u64}),
                &enc,
            )
            .expect("token")
        })
        .collect();
    c.bench_function("authn/kid_flood/10000", |b| {
        b.iter(|| {
            for token in &forged {
                assert!(
                    runtime
                        .block_on(auth.verify(black_box(token), &policy))
                        .is_err()
                );
            }
        })
    });
    // Every iteration ran within one 30 s cooldown of the first: one refresh in all.
    let fetches = hits.load(Ordering::SeqCst);
    println!(
        "kid flood: {fetches} JWKS fetches in all (1 at start-up, at most 1 per 30 s cooldown)"
    );
    assert!(fetches <= 3, "{fetches} fetches");
}

criterion_group!(benches, authn, kid_flood);
criterion_main!(benches);
