//! Access-key verification against the crypto floor SigV4 cannot avoid, in the same run:
//! SHA-256 of the body, SHA-256 of the canonical request and one HMAC-SHA256 of the string to
//! sign with a cached key. Also: throughput on 64 KiB bodies against raw SHA-256, the
//! `aws-sigv4` crate signing the same requests, and the nonce check on the in-memory and the
//! real Redis store (reported beside, not inside, the verification).

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use palisade::aksk::canonical::{self, CanonicalOptions, SigningKey};
use palisade::aksk::client::Signer;
use palisade::aksk::{
    CredentialRecord, KeyStatus, MemoryNonceStore, NonceStore, RedisNonceStore, StoredSecret,
    Verifier,
};
use palisade::core::{KeyRing, ManualClock, Profile};
use palisade::field_crypto::{FieldCipher, FieldContext};
use secrecy::SecretString;
use sha2::Digest as _;

const T0: u64 = 1_795_953_600;
const SECRET: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";

struct Case {
    name: &'static str,
    method: &'static str,
    uri: &'static str,
    body: Vec<u8>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "get",
            method: "GET",
            uri: "https://api.example.com/api/orders?limit=10&cursor=abc",
            body: Vec::new(),
        },
        Case {
            name: "post_1k",
            method: "POST",
            uri: "https://api.example.com/api/orders",
            body: vec![b'x'; 1024],
        },
        Case {
            name: "post_64k",
            method: "POST",
            uri: "https://api.example.com/api/orders",
            body: vec![b'x'; 64 * 1024],
        },
    ]
}

fn signed(clock: &ManualClock, case: &Case) -> http::request::Parts {
    let signer = Signer::new(
        "PKBENCH",
        SecretString::from(SECRET),
        "palisade",
        "eu-west-1",
        clock.shared(),
    );
    let (mut parts, ()) = http::Request::builder()
        .method(case.method)
        .uri(case.uri)
        .header("content-type", "application/json")
        .header("user-agent", "bench/1.0")
        .body(())
        .expect("request")
        .into_parts();
    signer.sign(&mut parts, &case.body).expect("sign");
    parts
}

fn aksk(c: &mut Criterion) {
    let clock = ManualClock::at_unix(T0);
    let ring = KeyRing::parse("f1 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("ring");
    let cipher = FieldCipher::new(ring, clock.shared());
    let verifier = Verifier::builder("palisade", "eu-west-1")
        .profile(Profile::Production)
        .max_body(1 << 20)
        .build(cipher.clone(), clock.shared())
        .expect("verifier");
    let sealed = cipher
        .encrypt(
            &FieldContext::new("palisade_access_keys", "secret.1", "PKBENCH"),
            SECRET.as_bytes(),
        )
        .expect("seal");
    let record = CredentialRecord {
        key_id: "PKBENCH".into(),
        org: "acme".into(),
        subject: "svc:bench".into(),
        roles: vec!["writer".into()],
        scopes: vec![],
        description: String::new(),
        status: KeyStatus::Active,
        created_at: T0,
        expires_at: None,
        secrets: vec![StoredSecret {
            version: 1,
            sealed,
            not_after: None,
        }],
    };
    let date = "20261129";
    let cached = SigningKey::derive(SECRET.as_bytes(), date, "eu-west-1", "palisade");
    let identity = aws_identity();

    for case in cases() {
        let parts = signed(&clock, &case);
        verifier
            .verify_buffered(&parts, &case.body, &record)
            .expect("verifies");
        // The floor: the three digests a verifier cannot avoid, over inputs of the real sizes.
        let payload = canonical::sha256_hex(&case.body);
        let auth = parts.headers["authorization"].to_str().expect("ascii");
        let signed_headers = auth
            .split("SignedHeaders=")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .expect("list");
        let mut creq = Vec::new();
        canonical::canonical_request(
            &mut creq,
            parts.method.as_str(),
            parts.uri.path().as_bytes(),
            parts.uri.query().unwrap_or("").as_bytes(),
            &parts.headers,
            None,
            signed_headers,
            &payload,
            CanonicalOptions::default(),
        )
        .expect("creq");
        let mut sts = String::new();
        canonical::string_to_sign(
            &mut sts,
            "20261129T120000Z",
            "20261129/eu-west-1/palisade/aws4_request",
            &creq,
        );

        // The ratios, measured interleaved: rounds of floor and verify alternate, so the
        // machine's drift (a shared, noisy host) hits both alike; the median round is printed.
        let floor_once = || {
            let body = sha2::Sha256::digest(black_box(&case.body));
            let creq = sha2::Sha256::digest(black_box(&creq));
            let sig = cached.sign(black_box(sts.as_bytes()));
            black_box((body, creq, sig));
        };
        let verify_once = || {
            black_box(
                verifier
                    .verify_buffered(black_box(&parts), black_box(&case.body), &record)
                    .expect("ok"),
            );
        };
        let aws_once = || {
            black_box(aws_sign(&identity, &case, &parts));
        };
        // PALISADE_BENCH_INTERLEAVED=0 skips them (under a profiler, say).
        if std::env::var("PALISADE_BENCH_INTERLEAVED").as_deref() != Ok("0") {
            let (floor_ns, verify_ns, ratio) = interleaved(floor_once, verify_once);
            println!(
                "aksk/{}: interleaved medians: floor {floor_ns:.0} ns, verify {verify_ns:.0} ns, verify/floor {ratio:.2}x",
                case.name
            );
            let (aws_ns, verify_ns, ratio) = interleaved(aws_once, verify_once);
            println!(
                "aksk/{}: interleaved medians: aws-sigv4 {aws_ns:.0} ns, verify {verify_ns:.0} ns, aws-sigv4/verify {:.2}x",
                case.name,
                1.0 / ratio
            );
        }

        let mut group = c.benchmark_group(format!("aksk/{}", case.name));
        if case.body.len() >= 64 * 1024 {
            group.throughput(Throughput::Bytes(case.body.len() as u64));
            group.bench_function("sha256", |b| {
                b.iter(|| sha2::Sha256::digest(black_box(&case.body)))
            });
        }
        group.bench_function("floor", |b| {
            b.iter(|| {
                let body = sha2::Sha256::digest(black_box(&case.body));
                let creq = sha2::Sha256::digest(black_box(&creq));
                let sig = cached.sign(black_box(sts.as_bytes()));
                black_box((body, creq, sig))
            })
        });
        group.bench_function("verify", |b| {
            b.iter(|| {
                verifier
                    .verify_buffered(black_box(&parts), black_box(&case.body), &record)
                    .expect("ok")
            })
        });
        group.bench_function("aws_sigv4_sign", |b| {
            b.iter(|| aws_sign(&identity, &case, &parts))
        });
        // The breakdown: the cheap checks alone, and the canonical request alone.
        group.bench_function("precheck", |b| {
            b.iter(|| {
                verifier
                    .precheck(black_box(&parts))
                    .map(|p| p.body_is_signed())
                    .expect("ok")
            })
        });
        group.bench_function("canonical_request", |b| {
            let mut out = Vec::with_capacity(1024);
            b.iter(|| {
                out.clear();
                canonical::canonical_request(
                    &mut out,
                    parts.method.as_str(),
                    parts.uri.path().as_bytes(),
                    parts.uri.query().unwrap_or("").as_bytes(),
                    black_box(&parts.headers),
                    None,
                    signed_headers,
                    &payload,
                    CanonicalOptions::default(),
                )
                .expect("creq");
                out.len()
            })
        });
        group.finish();
    }

    // The signing-key cache: a hit against a fresh derivation.
    let secret = &record.secrets[0];
    c.bench_function("aksk/signing_key/cache_hit", |b| {
        b.iter(|| {
            verifier
                .signing_key(black_box("PKBENCH"), secret, black_box(date))
                .expect("key")
        })
    });
    c.bench_function("aksk/signing_key/derive", |b| {
        b.iter(|| SigningKey::derive(black_box(SECRET.as_bytes()), date, "eu-west-1", "palisade"))
    });

    // The nonce check, beside the verification.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let now = UNIX_EPOCH + Duration::from_secs(T0);
    let memory = MemoryNonceStore::new();
    let mut n = 0u64;
    // Simulated time moves a millisecond per request, so the store holds a steady ~241,000
    // live nonces (a 241 s TTL) and sweeps as it would in service.
    c.bench_function("aksk/nonce/memory", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(memory.insert_once(
                "PKBENCH",
                &format!("{n:032x}"),
                Duration::from_secs(241),
                now + Duration::from_millis(n),
            ))
            .expect("store")
        })
    });
    let url =
        std::env::var("PALISADE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("palisade-aksk-bench:{}:", std::process::id());
    let redis = rt
        .block_on(RedisNonceStore::connect(
            &url,
            &prefix,
            Profile::Development,
        ))
        .expect("redis");
    c.bench_function("aksk/nonce/redis", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(redis.insert_once(
                "PKBENCH",
                &format!("{n:032x}"),
                Duration::from_secs(5),
                SystemTime::now(),
            ))
            .expect("store")
        })
    });
}

/// Times `a` and `b` in alternating rounds and answers the median per-call time of each and
/// the median of the per-round ratios `b / a`.
fn interleaved(mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64, f64) {
    const ROUNDS: usize = 301;
    const BATCH: u32 = 64;
    let time = |f: &mut dyn FnMut()| {
        let start = std::time::Instant::now();
        for _ in 0..BATCH {
            f();
        }
        start.elapsed().as_secs_f64() * 1e9 / f64::from(BATCH)
    };
    for _ in 0..20 {
        time(&mut a);
        time(&mut b);
    }
    let (mut ta, mut tb, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (x, y) = if round % 2 == 0 {
            let x = time(&mut a);
            (x, time(&mut b))
        } else {
            let y = time(&mut b);
            (time(&mut a), y)
        };
        ta.push(x);
        tb.push(y);
        ratios.push(y / x);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(&mut ta), median(&mut tb), median(&mut ratios))
}

/// The credentials `aws-sigv4` signs with, made once (a client holds them across requests).
fn aws_identity() -> aws_smithy_runtime_api::client::identity::Identity {
    aws_credential_types::Credentials::new("PKBENCH", SECRET, None, None, "bench").into()
}

/// The `aws-sigv4` crate signing the same request (it derives the key every time: it has no
/// cache to hit).
fn aws_sign(
    identity: &aws_smithy_runtime_api::client::identity::Identity,
    case: &Case,
    parts: &http::request::Parts,
) -> String {
    use aws_sigv4::http_request::{
        PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
    };
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(identity)
        .region("eu-west-1")
        .name("palisade")
        .time(UNIX_EPOCH + Duration::from_secs(T0))
        .settings(settings)
        .build()
        .expect("params")
        .into();
    let headers = parts
        .headers
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "authorization" | "x-amz-date" | "x-amz-content-sha256"
            )
        })
        .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or_default()));
    let signable = SignableRequest::new(
        case.method,
        case.uri,
        headers,
        SignableBody::Bytes(&case.body),
    )
    .expect("signable");
    let (_, signature) = sign(signable, &params).expect("sign").into_parts();
    signature
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = aksk
}
criterion_main!(benches);
