//! The layer end to end with in-memory stores: requests signed by the `aws-sigv4` crate and by
//! Palisade's client are accepted; every tampered element, policy breach and replay is refused
//! with its typed reason and one generic 401.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt as _, Full};
use palisade_aksk::client::{Signer, SigningLayer};
use palisade_aksk::{CredentialStore as _, Malformed, MemoryNonceStore, VerifyError};
use palisade_core::Clock as _;
use secrecy::{ExposeSecret as _, SecretString};
use tower::{Layer as _, ServiceExt as _};

const BODY: &[u8] = br#"{"amount":42}"#;
const URI: &str = "https://api.example.com/api/orders/42?a=1&b=two";

#[tokio::test]
async fn requests_signed_by_aws_sigv4_are_accepted() {
    let fx = fixture().await;
    let cases: &[(&str, &str, &'static [u8])] = &[
        ("GET", "https://api.example.com/api/orders", b""),
        (
            "GET",
            "https://api.example.com/api/orders?z=1&a=2&a=1&empty=",
            b"",
        ),
        ("POST", URI, BODY),
        (
            "PUT",
            "https://api.example.com/api/files/a%20b/%E1%88%B4",
            b"x",
        ),
        (
            "GET",
            "https://api.example.com/api/search?q=a+b&r=c%2Bd&s=%2F%3D%26&t=%E2%82%AC",
            b"",
        ),
        ("DELETE", "https://api.example.com/api/orders/42", b""),
    ];
    for (method, uri, body) in cases {
        let req = aws_signed(&fx, method, uri, body);
        let reply = send(&fx, req).await;
        assert_eq!(
            reply.status(),
            StatusCode::OK,
            "{method} {uri}: {:?}",
            reason(&reply)
        );
        let text = body_text(reply).await;
        assert_eq!(
            text,
            format!("svc:billing acme {}", String::from_utf8_lossy(body))
        );
    }
}

#[tokio::test]
async fn the_host_can_come_from_the_uri_authority() {
    // HTTP/2 carries the host as :authority; hyper leaves no Host header.
    let fx = fixture().await;
    let mut req = request("GET", "https://api.example.com/api/orders", b"");
    req.headers_mut().remove("host");
    sign_with_aws(
        &mut req,
        b"",
        &fx.issued.key_id,
        fx.issued.secret.expose_secret(),
        fx.clock.now(),
    );
    assert!(!req.headers().contains_key("host"));
    let reply = send(&fx, req).await;
    assert_eq!(reply.status(), StatusCode::OK, "{:?}", reason(&reply));
}

#[tokio::test]
async fn palisade_signer_matches_aws_sigv4_byte_for_byte() {
    let fx = fixture().await;
    let signer = Signer::new(
        fx.issued.key_id.as_str(),
        SecretString::from(fx.issued.secret.expose_secret()),
        SERVICE,
        REGION,
        fx.clock.shared(),
    );
    let (mut parts, _) = request("POST", URI, BODY).into_parts();
    signer.sign(&mut parts, BODY).unwrap();
    let ours = parts.headers["authorization"].clone();
    let nonce = parts.headers["x-palisade-nonce"].clone();
    // aws-sigv4 over the same request and nonce at the same time.
    let mut theirs = http::Request::from_parts(parts, Full::new(Bytes::from_static(BODY)));
    theirs.headers_mut().remove("authorization");
    resign_keeping_nonce(&fx, &mut theirs, nonce);
    assert_eq!(theirs.headers()["authorization"], ours);
    // And the server accepts it.
    let reply = send(&fx, theirs).await;
    assert_eq!(reply.status(), StatusCode::OK, "{:?}", reason(&reply));
}

fn resign_keeping_nonce<C, N>(
    fx: &Fixture<C, N>,
    req: &mut http::Request<Full<Bytes>>,
    nonce: HeaderValue,
) {
    req.headers_mut().insert("x-palisade-nonce", nonce);
    req.headers_mut().remove("x-amz-date");
    req.headers_mut().remove("x-amz-content-sha256");
    aws_sign_in_place(
        req,
        BODY,
        &fx.issued.key_id,
        fx.issued.secret.expose_secret(),
        fx.clock.now(),
    );
}

#[tokio::test]
async fn the_signing_layer_talks_to_the_verifying_layer() {
    let fx = Arc::new(fixture().await);
    let signer = Signer::new(
        fx.issued.key_id.as_str(),
        SecretString::from(fx.issued.secret.expose_secret()),
        SERVICE,
        REGION,
        fx.clock.shared(),
    );
    let server = {
        let fx = fx.clone();
        tower::service_fn(move |req: http::Request<Full<Bytes>>| {
            let fx = fx.clone();
            async move { Ok::<_, std::convert::Infallible>(send(&fx, req).await) }
        })
    };
    let client = SigningLayer::new(signer).layer(server);
    let outgoing = http::Request::post(URI)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY)))
        .unwrap();
    let reply = client.clone().oneshot(outgoing).await.unwrap();
    assert_eq!(reply.status(), StatusCode::OK, "{:?}", reason(&reply));
    // Two calls, two nonces: no false replay.
    let outgoing = http::Request::get("https://api.example.com/api/orders")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        client.oneshot(outgoing).await.unwrap().status(),
        StatusCode::OK
    );
}

fn signed_raw<C, N>(
    fx: &Fixture<C, N>,
    edit: impl FnOnce(&mut Raw<'_>),
) -> http::Request<Full<Bytes>> {
    let mut req = request("POST", URI, BODY);
    let secret = fx.issued.secret.expose_secret().to_owned();
    let mut raw = Raw::new(&fx.issued.key_id, &secret, T0);
    edit(&mut raw);
    raw.sign(&mut req, BODY);
    req
}

fn expect_refused(reply: &Reply, what: &str, check: impl FnOnce(&VerifyError) -> bool) {
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED, "{what}");
    let why = reason(reply).unwrap_or_else(|| panic!("{what}: no typed reason"));
    assert!(check(why), "{what}: refused for the wrong reason: {why:?}");
}

#[tokio::test]
async fn every_signed_element_tampered_in_turn_is_refused() {
    let fx = fixture().await;
    let base = signed_raw(&fx, |_| {});

    type Edit = Box<dyn Fn(&mut http::Request<Full<Bytes>>) -> Bytes>;
    let body = Bytes::from_static(BODY);
    type Case = (&'static str, Edit, fn(&VerifyError) -> bool);
    let cases: Vec<Case> = vec![
        (
            "method",
            Box::new(|r| {
                *r.method_mut() = http::Method::PUT;
                Bytes::from_static(BODY)
            }),
            |e| matches!(e, VerifyError::BadSignature),
        ),
        (
            "host",
            Box::new(|r| {
                r.headers_mut()
                    .insert("host", "evil.example.com".parse().unwrap());
                Bytes::from_static(BODY)
            }),
            |e| matches!(e, VerifyError::BadSignature),
        ),
        (
            "path",
            Box::new(|r| {
                *r.uri_mut() = "https://api.example.com/api/orders/43?a=1&b=two"
                    .parse()
                    .unwrap();
                Bytes::from_static(BODY)
            }),
            |e| matches!(e, VerifyError::BadSignature),
        ),
        (
            "query a",
            Box::new(|r| {
                *r.uri_mut() = "https://api.example.com/api/orders/42?a=2&b=two"
                    .parse()
                    .unwrap();
                Bytes::from_static(BODY)
            }),
            |e| matches!(e, VerifyError::BadSignature),
        ),
        (
            "query b",
            Box::new(|r| {
                *r.uri_mut() = "https://api.example.com/api/orders/42?a=1&b=three"
                    .parse()
                    .unwrap();
                Bytes::from_static(BODY)
            }),
            |e| matches!(e, VerifyError::BadSignature),
        ),
        (
            "query added",
            Box::new(|r| {
                *r.uri_mut() = "https://api.example.com/api/orders/42?a=1&b=two&admin=1"
                    .parse()
                    .unwrap();
                Bytes::from_static(BODY)
            }),
            |e| matches!(e, VerifyError::BadSignature),
        ),
        (
            "query removed",
            Box::new(|r| {
                *r.uri_mut() = "https://api.example.com/api/orders/42?a=1".parse().unwrap();
                Bytes::from_static(BODY)
            }),
            |e| matches!(e, VerifyError::BadSignature),
        ),
        (
            "content-type",
            Box::new(|r| {
                r.headers_mut()
                    .insert("content-type", "text/plain".parse().unwrap());
                Bytes::from_static(BODY)
            }),
            |e| matches!(e, VerifyError::BadSignature),
        ),
        (
            "x-custom",
            Box::new(|r| {
                r.headers_mut().insert("x-custom", "two".parse().unwrap());
                Bytes::from_static(BODY)
            }),
            |e| matches!(e, VerifyError::BadSignature),
        ),
        (
            "x-custom repeated",
            Box::new(|r| {
                r.headers_mut().append("x-custom", "two".parse().unwrap());
                Bytes::from_static(BODY)
            }),
            |e| matches!(e, VerifyError::BadSignature),
        ),
        (
            "x-amz-date",
            Box::new(|r| {
                r.headers_mut()
                    .insert("x-amz-date", "20261129T120001Z".parse().unwrap());
                Bytes::from_static(BODY)
            }),
            |e| matches!(e, VerifyError::BadSignature),
        ),
        (
            "nonce",
            Box::new(|r| {
                r.headers_mut().insert(
                    "x-palisade-nonce",
                    "ffffffffffffffffffffffffffffffff".parse().unwrap(),
                );
                Bytes::from_static(BODY)
            }),
            |e| matches!(e, VerifyError::BadSignature),
        ),
        (
            "body hash header",
            Box::new(|r| {
                r.headers_mut().insert(
                    "x-amz-content-sha256",
                    canonical_hash(b"{}").parse().unwrap(),
                );
                Bytes::from_static(BODY)
            }),
            |e| matches!(e, VerifyError::BadSignature),
        ),
        (
            "body",
            Box::new(|_| Bytes::from_static(br#"{"amount":4200}"#)),
            |e| matches!(e, VerifyError::BadBodyHash),
        ),
        (
            "body truncated",
            Box::new(|_| Bytes::from_static(br#"{"amount":4"#)),
            |e| matches!(e, VerifyError::BadBodyHash),
        ),
        (
            "signature",
            Box::new(|r| {
                let auth = r.headers()["authorization"].to_str().unwrap().to_owned();
                let flipped = format!(
                    "{}{}",
                    &auth[..auth.len() - 1],
                    if auth.ends_with('0') { '1' } else { '0' }
                );
                r.headers_mut()
                    .insert("authorization", flipped.parse().unwrap());
                Bytes::from_static(BODY)
            }),
            |e| matches!(e, VerifyError::BadSignature),
        ),
    ];
    let mut refused = 0;
    for (what, edit, check) in &cases {
        let mut req = clone_request(&base, &body);
        let new_body = edit(&mut req);
        let req = clone_request(&req, &new_body);
        let reply = send(&fx, req).await;
        expect_refused(&reply, what, check);
        let text = body_text(reply).await;
        assert!(
            text.contains("Valid credentials are required."),
            "{what}: generic body"
        );
        assert!(
            !text.contains("signature") && !text.contains("hash"),
            "{what}: no detail leaks"
        );
        refused += 1;
    }
    assert_eq!(refused, cases.len());
    // And the untouched request is accepted: none of the refusals burned its nonce.
    let reply = send(&fx, clone_request(&base, &body)).await;
    assert_eq!(reply.status(), StatusCode::OK, "{:?}", reason(&reply));
}

fn canonical_hash(body: &[u8]) -> String {
    palisade_aksk::canonical::sha256_hex(body)
}

#[tokio::test]
async fn policy_breaches_are_malformed() {
    let fx = fixture().await;
    let malformed =
        |m: Malformed| move |e: &VerifyError| matches!(e, VerifyError::Malformed(x) if *x == m);

    let reply = send(
        &fx,
        signed_raw(
            &fx,
            |r| r.signed = "content-type;x-amz-content-sha256;x-amz-date;x-custom;x-palisade-nonce",
        ),
    )
    .await;
    expect_refused(
        &reply,
        "unsigned host",
        malformed(Malformed::Unsigned("host")),
    );
    let reply = send(
        &fx,
        signed_raw(&fx, |r| {
            r.signed = "content-type;host;x-amz-content-sha256;x-amz-date;x-custom"
        }),
    )
    .await;
    expect_refused(
        &reply,
        "unsigned nonce",
        malformed(Malformed::Unsigned("nonce")),
    );
    let reply = send(
        &fx,
        signed_raw(&fx, |r| {
            r.signed = "content-type;host;x-amz-date;x-custom;x-palisade-nonce"
        }),
    )
    .await;
    expect_refused(
        &reply,
        "unsigned body hash",
        malformed(Malformed::Unsigned("x-amz-content-sha256")),
    );
    let reply = send(
        &fx,
        signed_raw(&fx, |r| {
            r.signed = "content-type;host;x-amz-content-sha256;x-custom;x-palisade-nonce"
        }),
    )
    .await;
    expect_refused(
        &reply,
        "unsigned date",
        malformed(Malformed::Unsigned("x-amz-date")),
    );
    let reply = send(
        &fx,
        signed_raw(
            &fx,
            |r| {
                r.signed =
                    "host;content-type;x-amz-content-sha256;x-amz-date;x-custom;x-palisade-nonce"
            },
        ),
    )
    .await;
    expect_refused(&reply, "unsorted list", |e| {
        matches!(e, VerifyError::Malformed(Malformed::Canonical(_)))
    });
    let reply = send(
        &fx,
        signed_raw(
            &fx,
            |r| {
                r.signed =
                    "Content-Type;host;x-amz-content-sha256;x-amz-date;x-custom;x-palisade-nonce"
            },
        ),
    )
    .await;
    expect_refused(&reply, "uppercase list", |e| {
        matches!(e, VerifyError::Malformed(Malformed::Canonical(_)))
    });
    let reply = send(
        &fx,
        signed_raw(&fx, |r| r.nonce = Some("0123456789abcdef".into())),
    )
    .await;
    expect_refused(&reply, "64-bit nonce", malformed(Malformed::Nonce));
    let reply = send(&fx, signed_raw(&fx, |r| r.nonce = None)).await;
    expect_refused(&reply, "no nonce", malformed(Malformed::Nonce));
    let reply = send(&fx, signed_raw(&fx, |r| r.region = "us-east-1")).await;
    expect_refused(&reply, "other region", malformed(Malformed::BadScope));
    let reply = send(&fx, signed_raw(&fx, |r| r.service = "s3")).await;
    expect_refused(&reply, "other service", malformed(Malformed::BadScope));
    let reply = send(&fx, signed_raw(&fx, |r| r.scope_date = Some("20261128"))).await;
    expect_refused(&reply, "scope date", malformed(Malformed::ScopeDate));
    let reply = send(
        &fx,
        signed_raw(&fx, |r| {
            r.payload = Some("STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
        }),
    )
    .await;
    expect_refused(&reply, "streaming", |e| {
        matches!(e, VerifyError::PayloadNotAllowed)
    });
    let reply = send(
        &fx,
        signed_raw(&fx, |r| r.payload = Some("UNSIGNED-PAYLOAD")),
    )
    .await;
    expect_refused(&reply, "unsigned payload", |e| {
        matches!(e, VerifyError::PayloadNotAllowed)
    });
    let upper = canonical_hash(BODY).to_uppercase();
    let reply = send(
        &fx,
        signed_raw(&fx, |r| r.payload = Some(Box::leak(upper.into_boxed_str()))),
    )
    .await;
    expect_refused(
        &reply,
        "uppercase body hash",
        malformed(Malformed::ContentHash),
    );

    // Duplicates.
    for (header, value, expect) in [
        (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=X",
            Malformed::DuplicateAuthorization,
        ),
        ("x-amz-date", "20261129T120000Z", Malformed::Date),
        (
            "x-palisade-nonce",
            "00000000000000000000000000000000",
            Malformed::Nonce,
        ),
        ("host", "api.example.com", Malformed::DuplicateHost),
        (
            "x-amz-content-sha256",
            "UNSIGNED-PAYLOAD",
            Malformed::ContentHash,
        ),
    ] {
        let mut req = signed_raw(&fx, |_| {});
        req.headers_mut().append(header, value.parse().unwrap());
        let reply = send(&fx, req).await;
        expect_refused(&reply, &format!("duplicate {header}"), malformed(expect));
    }
    let mut req = signed_raw(&fx, |_| {});
    req.headers_mut().remove("authorization");
    expect_refused(
        &send(&fx, req).await,
        "no authorization",
        malformed(Malformed::MissingAuthorization),
    );
    let mut req = request("GET", "https://api.example.com/api/a/../admin", b"");
    Raw::new(&fx.issued.key_id, fx.issued.secret.expose_secret(), T0).sign(&mut req, b"");
    expect_refused(
        &send(&fx, req).await,
        "dot segments",
        malformed(Malformed::Path),
    );
}

#[tokio::test]
async fn unsigned_payload_only_where_a_route_opted_in() {
    let fx = fixture().await;
    let mut req = request(
        "PUT",
        "https://api.example.com/api/uploads/big.bin",
        b"raw bytes",
    );
    let secret = fx.issued.secret.expose_secret().to_owned();
    let mut raw = Raw::new(&fx.issued.key_id, &secret, T0);
    raw.payload = Some("UNSIGNED-PAYLOAD");
    raw.sign(&mut req, b"raw bytes");
    let reply = send(&fx, req).await;
    assert_eq!(reply.status(), StatusCode::OK, "{:?}", reason(&reply));
    // A declared length over the unsigned-body limit (4096 in the fixture) is refused before
    // any byte is read.
    let mut req = request("PUT", "https://api.example.com/api/uploads/big.bin", b"");
    req.headers_mut()
        .insert("content-length", http::HeaderValue::from_static("4097"));
    let mut raw = Raw::new(&fx.issued.key_id, &secret, T0);
    raw.payload = Some("UNSIGNED-PAYLOAD");
    raw.sign(&mut req, b"");
    let reply = send(&fx, req).await;
    assert!(
        matches!(reason(&reply), Some(VerifyError::BodyTooLarge)),
        "{:?}",
        reason(&reply)
    );
}

#[tokio::test]
async fn the_window_is_enforced_at_its_edges() {
    let fx = fixture().await;
    let window = 120;
    for (offset, ok) in [
        (-(window as i64), true),
        (window as i64, true),
        (-(window as i64) - 1, false),
        (window as i64 + 1, false),
    ] {
        let unix = (T0 as i64 + offset) as u64;
        let req = signed_raw(&fx, |r| r.unix = unix);
        let reply = send(&fx, req).await;
        if ok {
            assert_eq!(
                reply.status(),
                StatusCode::OK,
                "offset {offset}: {:?}",
                reason(&reply)
            );
        } else {
            expect_refused(&reply, &format!("offset {offset}"), |e| {
                matches!(e, VerifyError::Skew)
            });
        }
    }
}

#[tokio::test]
async fn a_replay_is_refused_even_after_the_clock_moves() {
    let fx = fixture().await;
    let req = aws_signed(&fx, "POST", URI, BODY);
    let body = Bytes::from_static(BODY);
    let copy = clone_request(&req, &body);
    assert_eq!(send(&fx, req).await.status(), StatusCode::OK);
    expect_refused(
        &send(&fx, clone_request(&copy, &body)).await,
        "replay",
        |e| matches!(e, VerifyError::Replay),
    );
    // Later, still inside the window: still a replay.
    fx.clock.advance(secs(119));
    expect_refused(
        &send(&fx, clone_request(&copy, &body)).await,
        "late replay",
        |e| matches!(e, VerifyError::Replay),
    );
    // Once the window closed the request is too old, whatever the nonce store forgot.
    fx.clock.advance(secs(2));
    expect_refused(&send(&fx, copy).await, "stale replay", |e| {
        matches!(e, VerifyError::Skew)
    });
}

#[tokio::test]
async fn a_thousand_concurrent_copies_are_accepted_once() {
    let fx = Arc::new(fixture().await);
    let req = aws_signed(&fx, "POST", URI, BODY);
    let body = Bytes::from_static(BODY);
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let fx = fx.clone();
        let copy = clone_request(&req, &body);
        tasks.push(tokio::spawn(async move { send(&fx, copy).await.status() }));
    }
    let mut accepted = 0;
    for task in tasks {
        if task.await.unwrap() == StatusCode::OK {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 1);
}

#[tokio::test]
async fn unknown_disabled_expired_and_rotated_keys() {
    let fx = fixture().await;
    // Unknown key: right shape, wrong id.
    let mut req = request("GET", "https://api.example.com/api/orders", b"");
    Raw::new("PKUNKNOWNUNKNOWN0000", "whatever", T0).sign(&mut req, b"");
    expect_refused(&send(&fx, req).await, "unknown", |e| {
        matches!(e, VerifyError::UnknownKey)
    });

    // Disabled, then enabled again.
    fx.keys.disable(&fx.issued.key_id).await.unwrap();
    let req = aws_signed(&fx, "GET", "https://api.example.com/api/orders", b"");
    expect_refused(&send(&fx, req).await, "disabled", |e| {
        matches!(e, VerifyError::DisabledKey)
    });
    fx.keys.enable(&fx.issued.key_id).await.unwrap();
    let req = aws_signed(&fx, "GET", "https://api.example.com/api/orders", b"");
    assert_eq!(send(&fx, req).await.status(), StatusCode::OK);

    // Rotation with a 60 s overlap: both secrets verify, then only the new one.
    let old = SecretString::from(fx.issued.secret.expose_secret());
    let new = fx.keys.rotate(&fx.issued.key_id, secs(60)).await.unwrap();
    assert_eq!(new.version, 2);
    for secret in [&old, &new.secret] {
        let mut req = request("GET", "https://api.example.com/api/orders", b"");
        sign_with_aws(
            &mut req,
            b"",
            &fx.issued.key_id,
            secret.expose_secret(),
            fx.clock.now(),
        );
        assert_eq!(send(&fx, req).await.status(), StatusCode::OK);
    }
    fx.clock.advance(secs(61));
    let mut req = request("GET", "https://api.example.com/api/orders", b"");
    sign_with_aws(
        &mut req,
        b"",
        &fx.issued.key_id,
        old.expose_secret(),
        fx.clock.now(),
    );
    expect_refused(&send(&fx, req).await, "old secret after overlap", |e| {
        matches!(e, VerifyError::BadSignature)
    });
    let mut req = request("GET", "https://api.example.com/api/orders", b"");
    sign_with_aws(
        &mut req,
        b"",
        &fx.issued.key_id,
        new.secret.expose_secret(),
        fx.clock.now(),
    );
    assert_eq!(send(&fx, req).await.status(), StatusCode::OK);

    // Metadata only in listings.
    let listed = fx.keys.list("acme").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].secret_versions.len(), 2);
    assert!(!format!("{listed:?}").contains(new.secret.expose_secret()));
    assert!(!format!("{new:?}").contains(new.secret.expose_secret()));
}

#[tokio::test]
async fn expired_keys_are_refused() {
    let clock_fx = fixture().await;
    let issued = clock_fx
        .keys
        .issue(palisade_aksk::NewCredential {
            org: "acme".into(),
            subject: "svc:short".into(),
            lifetime: Some(secs(30)),
            ..Default::default()
        })
        .await
        .unwrap();
    clock_fx.clock.advance(secs(31));
    let mut req = request("GET", "https://api.example.com/api/orders", b"");
    sign_with_aws(
        &mut req,
        b"",
        &issued.key_id,
        issued.secret.expose_secret(),
        clock_fx.clock.now(),
    );
    expect_refused(&send(&clock_fx, req).await, "expired", |e| {
        matches!(e, VerifyError::ExpiredKey)
    });
}

#[tokio::test]
async fn oversized_bodies_are_refused_before_hashing() {
    let fx = fixture().await;
    static BIG: [u8; 5000] = [b'x'; 5000];
    // Declared length over the limit: refused by the precheck.
    let mut req = request("POST", URI, &BIG);
    req.headers_mut()
        .insert("content-length", "5000".parse().unwrap());
    Raw::new(&fx.issued.key_id, fx.issued.secret.expose_secret(), T0).sign(&mut req, &BIG);
    expect_refused(&send(&fx, req).await, "declared", |e| {
        matches!(e, VerifyError::BodyTooLarge)
    });
    // No declared length: refused while streaming.
    let mut req = request("POST", URI, &BIG);
    Raw::new(&fx.issued.key_id, fx.issued.secret.expose_secret(), T0).sign(&mut req, &BIG);
    let (parts, _) = req.into_parts();
    let stream = futures_stream(&BIG);
    let echo = tower::service_fn(
        |_req: http::Request<palisade_aksk::VerifiedBody<_>>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
        },
    );
    let reply = fx
        .layer
        .layer(echo)
        .oneshot(http::Request::from_parts(parts, stream))
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
    let why = reply
        .extensions()
        .get::<palisade_core::Rejection>()
        .unwrap();
    assert!(matches!(
        why.reason_as::<VerifyError>(),
        Some(VerifyError::BodyTooLarge)
    ));
}

/// A body of 1000-byte frames with no declared length.
struct Chunks(std::collections::VecDeque<Bytes>);

fn futures_stream(data: &'static [u8]) -> Chunks {
    Chunks(data.chunks(1000).map(Bytes::from_static).collect())
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}

#[tokio::test]
async fn a_failing_nonce_store_refuses_with_503() {
    let fx = fixture_with(
        palisade_aksk::MemoryCredentialStore::new(),
        MemoryNonceStore::with_capacity(1),
    )
    .await;
    let req = aws_signed(&fx, "GET", "https://api.example.com/api/orders", b"");
    assert_eq!(send(&fx, req).await.status(), StatusCode::OK);
    // The store is full of live nonces: it refuses, and so does the layer.
    let req = aws_signed(&fx, "GET", "https://api.example.com/api/orders", b"");
    let reply = send(&fx, req).await;
    assert_eq!(reply.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(matches!(reason(&reply), Some(VerifyError::Unavailable(_))));
}

#[tokio::test]
async fn other_schemes_pass_through_only_when_asked() {
    let fx = fixture().await;
    let bearer = || {
        http::Request::get("https://api.example.com/api/orders")
            .header("authorization", "Bearer abc")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    expect_refused(
        &send(&fx, bearer()).await,
        "bearer refused by default",
        |e| matches!(e, VerifyError::Malformed(Malformed::BadAuthorization)),
    );
    let passing = Fixture {
        layer: fx.layer.clone().pass_through_other_schemes(),
        ..fx
    };
    let reply = send(&passing, bearer()).await;
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(body_text(reply).await, "anonymous");
    // A request claiming SigV4 is still verified.
    let mut req = signed_raw(&passing, |_| {});
    req.headers_mut()
        .insert("x-custom", "tampered".parse().unwrap());
    expect_refused(&send(&passing, req).await, "claims sigv4", |e| {
        matches!(e, VerifyError::BadSignature)
    });
}

#[test]
fn production_refuses_long_windows() {
    let clock = palisade_core::ManualClock::at_unix(T0);
    let err = palisade_aksk::Verifier::builder(SERVICE, REGION)
        .window(secs(301))
        .build(cipher(&clock), clock.shared())
        .unwrap_err();
    assert!(
        err.findings()
            .iter()
            .any(|f| f.code() == "aksk-window-too-long")
    );
    assert!(
        palisade_aksk::Verifier::builder(SERVICE, REGION)
            .window(secs(301))
            .profile(palisade_core::Profile::Development)
            .build(cipher(&clock), clock.shared())
            .is_ok()
    );
    assert!(
        palisade_aksk::Verifier::builder(SERVICE, REGION)
            .window(secs(300))
            .build(cipher(&clock), clock.shared())
            .is_ok()
    );
}

#[tokio::test]
async fn review_hardening() {
    let fx = fixture().await;
    let record = fx
        .keys
        .store()
        .get(&fx.issued.key_id)
        .await
        .unwrap()
        .unwrap();
    let secret = fx.issued.secret.expose_secret().to_owned();

    // A sent content-type must be signed.
    let req = signed_raw(&fx, |r| {
        r.signed = "host;x-amz-content-sha256;x-amz-date;x-custom;x-palisade-nonce"
    });
    expect_refused(&send(&fx, req).await, "unsigned content-type", |e| {
        matches!(
            e,
            VerifyError::Malformed(Malformed::Unsigned("content-type"))
        )
    });

    // Allowed hosts: the signed host must be one of them.
    let clock = fx.clock.clone();
    let strict = palisade_aksk::Verifier::builder(SERVICE, REGION)
        .allowed_hosts(["api.example.com"])
        .build(cipher(&clock), clock.shared())
        .unwrap();
    let (parts, _) = signed_raw(&fx, |_| {}).into_parts();
    assert!(strict.verify_buffered(&parts, BODY, &record).is_ok());
    let mut req = request("POST", URI, BODY);
    req.headers_mut()
        .insert("host", "staging.example.com".parse().unwrap());
    Raw::new(&fx.issued.key_id, &secret, T0).sign(&mut req, BODY);
    let (parts, _) = req.into_parts();
    assert!(matches!(
        strict.verify_buffered(&parts, BODY, &record),
        Err(VerifyError::Malformed(Malformed::Host))
    ));

    // A sealed secret copied to another key id never reuses the cached signing key, even warm.
    let warm = strict.verify_buffered(&signed_raw(&fx, |_| {}).into_parts().0, BODY, &record);
    assert!(warm.is_ok());
    let mut moved = record.clone();
    moved.key_id = "PKVICTIMVICTIM00000".into();
    let mut req = request("POST", URI, BODY);
    Raw::new(&moved.key_id, &secret, T0).sign(&mut req, BODY);
    let (parts, _) = req.into_parts();
    assert!(matches!(
        strict.verify_buffered(&parts, BODY, &moved),
        Err(VerifyError::Unavailable(_))
    ));

    // The nonce is remembered beyond the window on both sides.
    assert_eq!(strict.nonce_ttl(), secs(2 * 120 + 60));

    // A wrong secret is refused before the body is read: a body that would fail to read is
    // never touched.
    let mut req = request("POST", URI, BODY);
    Raw::new(&fx.issued.key_id, "not-the-secret", T0).sign(&mut req, BODY);
    let (parts, _) = req.into_parts();
    let echo = tower::service_fn(
        |_req: http::Request<palisade_aksk::VerifiedBody<_>>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
        },
    );
    let reply = fx
        .layer
        .layer(echo)
        .oneshot(http::Request::from_parts(parts, FailingBody))
        .await
        .unwrap();
    let why = reply
        .extensions()
        .get::<palisade_core::Rejection>()
        .unwrap();
    assert!(matches!(
        why.reason_as::<VerifyError>(),
        Some(VerifyError::BadSignature)
    ));
}

/// A body whose first read fails.
struct FailingBody;

impl http_body::Body for FailingBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(Some(Err(std::io::Error::other("read"))))
    }
}

#[tokio::test]
async fn unsigned_payload_routes_match_whole_segments_and_stay_bounded() {
    let fx = fixture().await;
    let secret = fx.issued.secret.expose_secret().to_owned();
    // `/api/uploads/` opted in; `/api/uploads-admin/` did not.
    let mut req = request("PUT", "https://api.example.com/api/uploads-admin/x", b"raw");
    let mut raw = Raw::new(&fx.issued.key_id, &secret, T0);
    raw.payload = Some("UNSIGNED-PAYLOAD");
    raw.sign(&mut req, b"raw");
    expect_refused(&send(&fx, req).await, "sibling prefix", |e| {
        matches!(e, VerifyError::PayloadNotAllowed)
    });
    // The unsigned stream is cut off past the limit (4096 in the fixture).
    static BIG: [u8; 5000] = [b'y'; 5000];
    let mut req = request("PUT", "https://api.example.com/api/uploads/big.bin", b"");
    let mut raw = Raw::new(&fx.issued.key_id, &secret, T0);
    raw.payload = Some("UNSIGNED-PAYLOAD");
    raw.sign(&mut req, b"");
    let (parts, _) = req.into_parts();
    let read = tower::service_fn(
        |req: http::Request<palisade_aksk::VerifiedBody<Chunks>>| async move {
            let outcome = req.into_body().collect().await;
            Ok::<_, std::convert::Infallible>(http::Response::new(format!("{}", outcome.is_err())))
        },
    );
    let reply = fx
        .layer
        .layer(read)
        .oneshot(http::Request::from_parts(parts, futures_stream(&BIG)))
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(
        body_text(reply).await,
        "true",
        "the oversized unsigned body must fail to read"
    );
}
