//! Property tests of the canonicalizer, the parsers and the sign/verify round trip.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use palisade_aksk::canonical::{self, CanonicalOptions};
use palisade_aksk::client::Signer;
use palisade_aksk::verifier::{format_amz_date, parse_amz_date, parse_authorization};
use palisade_aksk::{CredentialRecord, KeyStatus, StoredSecret, VerifyError};
use palisade_core::ManualClock;
use palisade_field_crypto::FieldContext;
use proptest::prelude::*;
use secrecy::SecretString;

fn form_encode(s: &str) -> String {
    // What a client may put on the wire: a mix of escapes and literal unreserved bytes.
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else if b == b' ' {
                "+".to_owned()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn canonical_query(q: &str) -> Result<String, canonical::CanonicalError> {
    let mut out = Vec::new();
    canonical::canonical_query(&mut out, q.as_bytes())?;
    Ok(String::from_utf8(out).unwrap())
}

fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec(
        ("[a-zA-Z0-9 +/=&%~._-]{1,8}", "[a-zA-Z0-9 +/=&%~é€._-]{0,8}"),
        0..8,
    )
}

fn query_of(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

proptest! {
    /// Order does not matter; the output is in the canonical alphabet.
    #[test]
    fn query_is_order_independent(mut p in pairs(), seed in any::<u64>()) {
        let a = canonical_query(&query_of(&p)).unwrap();
        let n = p.len().max(1);
        p.rotate_left((seed as usize) % n);
        let b = canonical_query(&query_of(&p)).unwrap();
        prop_assert_eq!(&a, &b);
        prop_assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.~%&=".contains(&c)));
    }

    /// Two queries share a canonical form only when they decode to the same multiset of
    /// parameters: no collision an attacker could use to swap one signed query for another.
    #[test]
    fn query_is_injective(a in pairs(), b in pairs()) {
        let (mut sa, mut sb) = (a.clone(), b.clone());
        sa.sort();
        sb.sort();
        let same = canonical_query(&query_of(&a)).unwrap() == canonical_query(&query_of(&b)).unwrap();
        prop_assert_eq!(same, sa == sb);
    }

    /// Already-canonical queries (the allocation-free fast path) come out sorted exactly as
    /// the general path sorts them.
    #[test]
    fn canonical_queries_take_the_fast_path_correctly(
        p in proptest::collection::vec(("[a-zA-Z0-9._~-]{1,6}", "[a-zA-Z0-9._~-]{0,6}"), 0..20),
        bare in any::<bool>(),
    ) {
        let query = p
            .iter()
            .map(|(k, v)| if bare && v.is_empty() { k.clone() } else { format!("{k}={v}") })
            .collect::<Vec<_>>()
            .join("&");
        let mut sorted = p.clone();
        sorted.sort();
        let expected = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        prop_assert_eq!(canonical_query(&query).unwrap(), expected);
    }

    /// Double encoding keeps distinct wire paths distinct.
    #[test]
    fn paths_are_injective(a in "/[a-z%0-9A-F/ ]{0,12}", b in "/[a-z%0-9A-F/ ]{0,12}") {
        let opts = CanonicalOptions { path_normalization: canonical::PathNormalization::Disabled, ..CanonicalOptions::default() };
        let (mut x, mut y) = (Vec::new(), Vec::new());
        canonical::canonical_uri(&mut x, a.as_bytes(), opts).unwrap();
        canonical::canonical_uri(&mut y, b.as_bytes(), opts).unwrap();
        prop_assert_eq!(x == y, a == b);
    }

    #[test]
    fn dates_round_trip(unix in 0u64..4_102_444_800) {
        prop_assert_eq!(parse_amz_date(format_amz_date(unix).as_bytes()), Some(unix));
    }

    #[test]
    fn authorization_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_authorization(&bytes);
    }

    /// Whatever the path, query and body, a Palisade-signed request verifies, and flipping any
    /// body byte breaks it.
    #[test]
    fn sign_then_verify(
        path in "/[a-zA-Z0-9._~-]{1,10}(/[a-zA-Z0-9%._~-]{1,6}){0,3}",
        p in pairs(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
        flip in any::<usize>(),
    ) {
        prop_assume!(!canonical::path_needs_normalization(path.as_bytes()));
        prop_assume!(!path.split('/').any(|s| s == "." || s == ".."));
        prop_assume!(http::Uri::try_from(format!("https://api.example.com{path}")).is_ok());
        let clock = ManualClock::at_unix(T0);
        let verifier = verifier(&clock);
        let cipher = cipher(&clock);
        let secret = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t-0000";
        let sealed = cipher.encrypt(&FieldContext::new("palisade_access_keys", "secret.1", "PKPROP"), secret.as_bytes()).unwrap();
        let record = CredentialRecord {
            key_id: "PKPROP".into(),
            org: "acme".into(),
            subject: "svc:prop".into(),
            roles: vec![],
            scopes: vec![],
            description: String::new(),
            status: KeyStatus::Active,
            created_at: T0,
            expires_at: None,
            secrets: vec![StoredSecret { version: 1, sealed, not_after: None }],
        };
        let q = query_of(&p);
        let uri = if q.is_empty() { format!("https://api.example.com{path}") } else { format!("https://api.example.com{path}?{q}") };
        let signer = Signer::new("PKPROP", SecretString::from(secret), SERVICE, REGION, clock.shared());
        let (mut parts, ()) = http::Request::post(uri).body(()).unwrap().into_parts();
        signer.sign(&mut parts, &body).unwrap();
        let verified = verifier.verify_buffered(&parts, &body, &record);
        prop_assert!(verified.is_ok(), "{:?}", verified.err());
        if !body.is_empty() {
            let mut tampered = body.clone();
            let i = flip % tampered.len();
            tampered[i] ^= 1;
            prop_assert!(matches!(verifier.verify_buffered(&parts, &tampered, &record), Err(VerifyError::BadBodyHash)));
        }
    }
}
