//! Known JWT attacks, each refused for the right reason. Keys are the throwaway test keys in
//! `tests/keys/`; tokens are signed with `jsonwebtoken` (or forged by hand).

#![allow(clippy::unwrap_used, clippy::type_complexity)]

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use palisade_authn::{Authenticator, AuthnError, IssuerConfig, KeySet, KeySource, SurfacePolicy};
use palisade_core::{ManualClock, Profile, Surface};
use serde_json::{Value, json};

const ISS: &str = "https://sso.example.com/realms/acme";
const NOW: u64 = 1_800_000_000;
const JWKS: &str = include_str!("keys/jwks.json");

fn key(alg: Algorithm) -> (EncodingKey, &'static str) {
    match alg {
        Algorithm::RS256 => (
            EncodingKey::from_rsa_pem(include_bytes!("keys/rs256.pem")).unwrap(),
            "test-rs",
        ),
        Algorithm::ES256 => (
            EncodingKey::from_ec_pem(include_bytes!("keys/es256.pem")).unwrap(),
            "test-es",
        ),
        Algorithm::EdDSA => (
            EncodingKey::from_ed_pem(include_bytes!("keys/ed25519.pem")).unwrap(),
            "test-ed",
        ),
        other => panic!("no test key for {other:?}"),
    }
}

fn claims() -> Value {
    json!({
        "iss": ISS, "sub": "user-1", "typ": "Bearer", "azp": "web", "aud": "api",
        "exp": NOW + 300, "iat": NOW - 10, "realm_access": {"roles": ["member"]}, "org_id": "org-1"
    })
}

fn sign(alg: Algorithm, claims: &Value) -> String {
    let (k, kid) = key(alg);
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    header.typ = Some("JWT".to_owned());
    encode(&header, claims, &k).unwrap()
}

fn patched(patch: Value) -> Value {
    let mut c = claims();
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

/// A token with a hand-written header over `payload`, signed with `alg`'s test key.
fn with_header(header: &str, payload: &Value, alg: Algorithm) -> String {
    let input = format!("{}.{}", B64.encode(header), B64.encode(payload.to_string()));
    let (k, _) = key(alg);
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &k, alg).unwrap();
    format!("{input}.{sig}")
}

/// A token whose payload is the raw text `payload` (for duplicate keys).
fn raw_payload(payload: &str) -> String {
    let header = r#"{"alg":"EdDSA","typ":"JWT","kid":"test-ed"}"#;
    let input = format!("{}.{}", B64.encode(header), B64.encode(payload));
    let (k, _) = key(Algorithm::EdDSA);
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &k, Algorithm::EdDSA).unwrap();
    format!("{input}.{sig}")
}

async fn authenticator() -> Authenticator {
    Authenticator::builder()
        .profile(Profile::Production)
        .clock(ManualClock::at_unix(NOW).shared())
        .issuer(
            IssuerConfig::new(ISS)
                .unwrap()
                .key_source(KeySource::Static(
                    KeySet::from_jwks(JWKS.as_bytes()).unwrap(),
                ))
                .max_token_age(Duration::from_secs(3600)),
        )
        .build()
        .await
        .unwrap()
}

fn api() -> SurfacePolicy {
    SurfacePolicy::new(Surface::API)
        .audiences(["api"])
        .authorized_parties(["web"])
}

#[tokio::test]
async fn genuine_tokens_of_every_algorithm_pass() {
    let auth = authenticator().await;
    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let id = auth.verify(&sign(alg, &claims()), &api()).await.unwrap();
        assert_eq!(id.subject(), "user-1");
        assert_eq!(id.org(), Some("org-1"));
    }
}

#[tokio::test]
async fn attack_table() {
    let auth = authenticator().await;
    let good = sign(Algorithm::RS256, &claims());
    let (h, p, s) = {
        let mut it = good.split('.');
        (
            it.next().unwrap().to_owned(),
            it.next().unwrap().to_owned(),
            it.next().unwrap().to_owned(),
        )
    };
    let payload = claims();
    let enc = |v: &str| B64.encode(v);
    // The RSA public key's modulus, as an attacker would use it for an HMAC secret.
    let jwks: Value = serde_json::from_str(JWKS).unwrap();
    let rsa_n = jwks["keys"][0]["n"].as_str().unwrap().to_owned();
    let hs_input = format!(
        "{}.{}",
        enc(r#"{"alg":"HS256","typ":"JWT","kid":"test-rs"}"#),
        p
    );
    let hs_sig = jsonwebtoken::crypto::sign(
        hs_input.as_bytes(),
        &EncodingKey::from_secret(rsa_n.as_bytes()).unwrap(),
        Algorithm::HS256,
    )
    .unwrap();
    let zero_ecdsa = format!(
        "{}.{}.{}",
        enc(r#"{"alg":"ES256","typ":"JWT","kid":"test-es"}"#),
        p,
        B64.encode([0u8; 64])
    );
    let nested_inner = sign(Algorithm::EdDSA, &claims());

    let cases: Vec<(&str, String, AuthnError)> = vec![
        (
            "alg none",
            format!(
                "{}.{p}.",
                enc(r#"{"alg":"none","typ":"JWT","kid":"test-rs"}"#)
            ),
            AuthnError::Malformed,
        ),
        (
            "alg none with a signature part",
            format!(
                "{}.{p}.{s}",
                enc(r#"{"alg":"none","typ":"JWT","kid":"test-rs"}"#)
            ),
            AuthnError::AlgorithmRejected("none".into()),
        ),
        (
            "alg None",
            format!(
                "{}.{p}.{s}",
                enc(r#"{"alg":"None","typ":"JWT","kid":"test-rs"}"#)
            ),
            AuthnError::AlgorithmRejected("None".into()),
        ),
        (
            "alg nOnE",
            format!(
                "{}.{p}.{s}",
                enc(r#"{"alg":"nOnE","typ":"JWT","kid":"test-rs"}"#)
            ),
            AuthnError::AlgorithmRejected("nOnE".into()),
        ),
        (
            "RS256 to HS256 key confusion",
            format!("{hs_input}.{hs_sig}"),
            AuthnError::AlgorithmRejected("HS256".into()),
        ),
        (
            "signature stripped",
            format!("{h}.{p}."),
            AuthnError::Malformed,
        ),
        (
            "signature from another token",
            format!(
                "{h}.{}.{s}",
                enc(&patched(json!({"sub": "admin"})).to_string())
            ),
            AuthnError::BadSignature,
        ),
        (
            "kid path traversal",
            with_header(
                r#"{"alg":"RS256","typ":"JWT","kid":"../../../../etc/passwd"}"#,
                &payload,
                Algorithm::RS256,
            ),
            AuthnError::UnknownKid,
        ),
        (
            "kid SQL injection",
            with_header(
                r#"{"alg":"RS256","typ":"JWT","kid":"x' OR '1'='1"}"#,
                &payload,
                Algorithm::RS256,
            ),
            AuthnError::UnknownKid,
        ),
        (
            "jku injection",
            with_header(
                r#"{"alg":"RS256","typ":"JWT","kid":"test-rs","jku":"https://evil.example/jwks"}"#,
                &payload,
                Algorithm::RS256,
            ),
            AuthnError::EmbeddedKey("jku"),
        ),
        (
            "x5u injection",
            with_header(
                r#"{"alg":"RS256","typ":"JWT","kid":"test-rs","x5u":"https://evil.example/cert"}"#,
                &payload,
                Algorithm::RS256,
            ),
            AuthnError::EmbeddedKey("x5u"),
        ),
        (
            "embedded jwk",
            with_header(
                r#"{"alg":"RS256","typ":"JWT","kid":"test-rs","jwk":{"kty":"RSA","n":"AQAB","e":"AQAB"}}"#,
                &payload,
                Algorithm::RS256,
            ),
            AuthnError::EmbeddedKey("jwk"),
        ),
        ("ECDSA r = s = 0", zero_ecdsa, AuthnError::BadSignature),
        (
            "alg differs from the key's",
            with_header(
                r#"{"alg":"ES256","typ":"JWT","kid":"test-rs"}"#,
                &payload,
                Algorithm::ES256,
            ),
            AuthnError::AlgorithmMismatch {
                header: "ES256".into(),
                key: "RS256".into(),
            },
        ),
        (
            "expired",
            sign(Algorithm::EdDSA, &patched(json!({"exp": NOW - 31}))),
            AuthnError::Expired,
        ),
        (
            "not yet valid",
            sign(Algorithm::EdDSA, &patched(json!({"nbf": NOW + 31}))),
            AuthnError::NotYetValid,
        ),
        (
            "issued in the future",
            sign(Algorithm::EdDSA, &patched(json!({"iat": NOW + 31}))),
            AuthnError::IssuedInFuture,
        ),
        (
            "too old",
            sign(Algorithm::EdDSA, &patched(json!({"iat": NOW - 3700}))),
            AuthnError::TooOld,
        ),
        (
            "aud mismatch",
            sign(Algorithm::EdDSA, &patched(json!({"aud": "billing"}))),
            AuthnError::WrongAudience,
        ),
        (
            "azp mismatch",
            sign(Algorithm::EdDSA, &patched(json!({"azp": "attacker-app"}))),
            AuthnError::WrongAuthorizedParty,
        ),
        (
            "unknown crit",
            with_header(
                r#"{"alg":"RS256","typ":"JWT","kid":"test-rs","crit":["x-evil"],"x-evil":1}"#,
                &payload,
                Algorithm::RS256,
            ),
            AuthnError::CriticalExtension,
        ),
        (
            "nested JWT",
            with_header(
                r#"{"alg":"EdDSA","typ":"JWT","kid":"test-ed","cty":"JWT"}"#,
                &json!(nested_inner),
                Algorithm::EdDSA,
            ),
            AuthnError::Nested,
        ),
        (
            "duplicate claim",
            raw_payload(&format!(
                r#"{{"iss":"{ISS}","sub":"user-1","sub":"admin","typ":"Bearer","azp":"web","aud":"api","exp":{},"iat":{}}}"#,
                NOW + 300,
                NOW - 10
            )),
            AuthnError::MalformedClaims,
        ),
        (
            "duplicate nested claim",
            raw_payload(&format!(
                r#"{{"iss":"{ISS}","sub":"u","typ":"Bearer","azp":"web","aud":"api","exp":{},"iat":{},"realm_access":{{"roles":[],"roles":["admin"]}}}}"#,
                NOW + 300,
                NOW - 10
            )),
            AuthnError::MalformedClaims,
        ),
        (
            "duplicate header key",
            with_header(
                r#"{"alg":"EdDSA","alg":"none","typ":"JWT","kid":"test-ed"}"#,
                &payload,
                Algorithm::EdDSA,
            ),
            AuthnError::MalformedHeader,
        ),
        (
            "oversize token",
            sign(Algorithm::EdDSA, &patched(json!({"pad": "x".repeat(9000)}))),
            AuthnError::TooLarge { max: 8192 },
        ),
        (
            "wrong issuer",
            sign(
                Algorithm::EdDSA,
                &patched(json!({"iss": "https://sso.example.com/realms/other"})),
            ),
            AuthnError::WrongIssuer,
        ),
        (
            "token for another surface",
            sign(Algorithm::EdDSA, &patched(json!({"aud": "global-admin"}))),
            AuthnError::WrongAudience,
        ),
        (
            "ID token as access token",
            sign(
                Algorithm::EdDSA,
                &patched(json!({"typ": "ID", "nonce": "n"})),
            ),
            AuthnError::NotAnAccessToken("ID".into()),
        ),
        (
            "refresh token as access token",
            sign(Algorithm::EdDSA, &patched(json!({"typ": "Refresh"}))),
            AuthnError::NotAnAccessToken("Refresh".into()),
        ),
        (
            "padded base64",
            format!("{h}=.{p}.{s}"),
            AuthnError::Malformed,
        ),
        (
            "four parts (JWE-like)",
            format!("{h}.{p}.{s}.{s}"),
            AuthnError::Malformed,
        ),
        (
            "exp as a string",
            sign(Algorithm::EdDSA, &patched(json!({"exp": "9999999999"}))),
            AuthnError::MissingExpiry,
        ),
    ];
    for (name, token, want) in cases {
        assert_eq!(
            auth.verify(&token, &api()).await.unwrap_err(),
            want,
            "{name}"
        );
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any single-byte change anywhere in a genuine token makes it fail (and never panics).
        #[test]
        fn any_mutation_of_a_genuine_token_is_refused(pos in any::<prop::sample::Index>(), byte in any::<u8>(), alg in prop::sample::select(vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA])) {
            let rt = runtime();
            let auth = rt.block_on(authenticator());
            let token = sign(alg, &claims());
            let mut bytes = token.clone().into_bytes();
            let i = pos.index(bytes.len());
            prop_assume!(bytes[i] != byte);
            bytes[i] = byte;
            let Ok(mutated) = String::from_utf8(bytes) else { return Ok(()) };
            // Base64 has spare bits in its last character: a change there can decode to the
            // same bytes. Only mutations that change the decoded token count.
            let decoded = |t: &str| t.split('.').map(|p| B64.decode(p).ok()).collect::<Vec<_>>();
            prop_assume!(decoded(&mutated) != decoded(&token));
            prop_assert!(rt.block_on(auth.verify(&mutated, &api())).is_err());
        }

        /// Arbitrary input never panics and is never accepted.
        #[test]
        fn arbitrary_input_is_refused(input in "\\PC{0,400}") {
            let rt = runtime();
            let auth = rt.block_on(authenticator());
            prop_assert!(rt.block_on(auth.verify(&input, &api())).is_err());
        }

        /// Three base64url parts of arbitrary JSON-ish bytes never panic and are never accepted.
        #[test]
        fn structured_garbage_is_refused(h in prop::collection::vec(any::<u8>(), 0..200), p in prop::collection::vec(any::<u8>(), 0..400), s in prop::collection::vec(any::<u8>(), 0..300)) {
            let rt = runtime();
            let auth = rt.block_on(authenticator());
            let token = format!("{}.{}.{}", B64.encode(h), B64.encode(p), B64.encode(s));
            prop_assert!(rt.block_on(auth.verify(&token, &api())).is_err());
        }
    }
}

#[tokio::test]
async fn websocket_grant_deadline_and_protocol_scrubbing() {
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};
    use std::time::UNIX_EPOCH;

    use http::{Request, Response};
    use palisade_authn::websocket::{WebSocketAuthLayer, WsGrant};
    use tower::{Layer, ServiceExt, service_fn};

    let auth = authenticator().await;
    let token = sign(Algorithm::EdDSA, &claims());
    for (lifetime, want) in [(3600, NOW + 300), (60, NOW + 60)] {
        let seen: Arc<Mutex<Option<(WsGrant, Option<String>)>>> = Arc::default();
        let sink = seen.clone();
        let svc = WebSocketAuthLayer::new(auth.clone(), api(), ["chat.v1"])
            .limits(Duration::from_secs(lifetime), Duration::from_secs(30))
            .layer(service_fn(move |req: Request<()>| {
                let sink = sink.clone();
                async move {
                    let grant = req.extensions().get::<WsGrant>().cloned().unwrap();
                    let offered = req
                        .headers()
                        .get("sec-websocket-protocol")
                        .map(|v| v.to_str().unwrap().to_owned());
                    *sink.lock().unwrap() = Some((grant, offered));
                    Ok::<_, Infallible>(Response::new(()))
                }
            }));
        let req = Request::builder()
            .uri("/ws")
            .header("upgrade", "websocket")
            .header(
                "sec-websocket-protocol",
                format!("chat.v1, palisade.bearer.{token}"),
            )
            .body(())
            .unwrap();
        assert_eq!(svc.oneshot(req).await.unwrap().status(), 200);
        let (grant, offered) = seen.lock().unwrap().take().unwrap();
        assert_eq!(
            grant.deadline,
            UNIX_EPOCH + Duration::from_secs(want),
            "lifetime {lifetime}"
        );
        assert_eq!(grant.protocol.as_deref(), Some("chat.v1"));
        assert_eq!(grant.idle_limit, Duration::from_secs(30));
        assert_eq!(
            offered.as_deref(),
            Some("chat.v1"),
            "the handler never sees the token"
        );
    }
}

#[tokio::test]
async fn several_issuers_keep_their_keys_apart() {
    let all = KeySet::from_jwks(JWKS.as_bytes()).unwrap();
    // The second realm publishes only the EC key.
    let jwks: Value = serde_json::from_str(JWKS).unwrap();
    let only_ec = json!({"keys": [jwks["keys"][1].clone()]});
    let other_iss = "https://sso.example.com/realms/other";
    let auth = Authenticator::builder()
        .clock(ManualClock::at_unix(NOW).shared())
        .issuer(
            IssuerConfig::new(ISS)
                .unwrap()
                .key_source(KeySource::Static(all)),
        )
        .issuer(
            IssuerConfig::new(other_iss)
                .unwrap()
                .key_source(KeySource::Static(
                    KeySet::from_jwks(only_ec.to_string().as_bytes()).unwrap(),
                )),
        )
        .build()
        .await
        .unwrap();
    let mine = patched(json!({"iss": other_iss}));
    assert!(
        auth.verify(&sign(Algorithm::ES256, &mine), &api())
            .await
            .is_ok()
    );
    // A key of the first realm cannot vouch for the second.
    assert_eq!(
        auth.verify(&sign(Algorithm::EdDSA, &mine), &api())
            .await
            .unwrap_err(),
        AuthnError::UnknownKid
    );
    assert!(
        auth.verify(&sign(Algorithm::EdDSA, &claims()), &api())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn websocket_layers_are_checked_like_http_layers() {
    use palisade_authn::websocket::WebSocketAuthLayer;

    let auth = authenticator().await;
    let layer = WebSocketAuthLayer::checked(auth.clone(), api(), ["chat.v1"]).expect("checked");
    assert_eq!(layer.profile(), Some(Profile::Production));
    assert_eq!(
        WebSocketAuthLayer::new(auth.clone(), api(), ["chat.v1"]).profile(),
        None
    );
    // No audience; any client; an admin surface without a second factor: refused.
    for policy in [
        SurfacePolicy::new(Surface::API).authorized_parties(["web"]),
        SurfacePolicy::new(Surface::API).audiences(["api"]),
        SurfacePolicy::new(Surface::GLOBAL_ADMIN)
            .audiences(["global-admin"])
            .authorized_parties(["admin"]),
    ] {
        assert!(WebSocketAuthLayer::checked(auth.clone(), policy, ["chat.v1"]).is_err());
    }
}
