//! SigV4 from anyone: the Authorization parser, the date parser, the canonicalizer in every
//! mode, the verifier's precheck and the aws-chunked decoder never panic, and canonical output
//! stays in its alphabet.
#![no_main]

use http::{HeaderValue, Request};
use libfuzzer_sys::fuzz_target;
use palisade_aksk::Verifier;
use palisade_aksk::canonical::{
    self, CanonicalOptions, PathEncoding, PathNormalization, SigningKey,
};
use palisade_aksk::streaming::{ChunkedDecoder, MIN_CHUNK, encode_chunked};
use palisade_aksk::verifier::{parse_amz_date, parse_authorization};
use palisade_core::{KeyRing, ManualClock};
use palisade_field_crypto::FieldCipher;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(5, |b| *b == b'\n');
    let auth = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let query = parts.next().unwrap_or_default();
    let signed = parts.next().unwrap_or_default();
    let date = parts.next().unwrap_or_default();

    let _ = parse_authorization(auth);
    let _ = parse_amz_date(date);
    let _ = canonical::check_signed_headers(&String::from_utf8_lossy(signed));
    for path_encoding in [PathEncoding::Double, PathEncoding::Single] {
        for path_normalization in [PathNormalization::Enabled, PathNormalization::Disabled] {
            let mut out = Vec::new();
            let options = CanonicalOptions { path_encoding, path_normalization };
            if canonical::canonical_uri(&mut out, path, options).is_ok() {
                assert!(out.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.~%/".contains(b)));
            }
        }
    }
    let mut out = Vec::new();
    if canonical::canonical_query(&mut out, query).is_ok() {
        assert!(out.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.~%&=".contains(b)));
    }

    // The precheck over hostile headers.
    let clock = ManualClock::at_unix(1_795_953_600);
    let ring = KeyRing::parse("f1 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("ring");
    let verifier = Verifier::builder("palisade", "eu-west-1")
        .build(FieldCipher::new(ring, clock.shared()), clock.shared())
        .expect("verifier");
    let mut request = Request::new(());
    for (name, value) in [
        ("authorization", auth),
        ("x-amz-date", date),
        ("x-palisade-nonce", query),
        ("x-amz-content-sha256", signed),
        ("content-length", path),
    ] {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            request.headers_mut().insert(name, v);
        }
    }
    if let Ok(uri) = http::Uri::try_from(path) {
        *request.uri_mut() = uri;
    }
    let (parts, ()) = request.into_parts();
    let _ = verifier.precheck(&parts);

    // Hostile aws-chunked framing, fed in two pieces: never a panic.
    let key = SigningKey::derive(b"fuzz", "20261129", "eu-west-1", "palisade");
    let (date, scope) = ("20261129T120000Z", "20261129/eu-west-1/palisade/aws4_request");
    let expected = u64::from(data.first().copied().unwrap_or(0)) * 64;
    let mut decoder = ChunkedDecoder::new(key.clone(), date, scope, [0; 32], expected);
    let split = data.len() / 2;
    let _ = decoder.feed(&data[..split]);
    let _ = decoder.feed(&data[split..]);
    let _ = decoder.finish();

    // A valid stream of the input decodes to exactly it; with one byte changed (at a place
    // and by a value the input picks), it decodes to the same bytes or not at all.
    let encoded = encode_chunked(&key, date, scope, &[1; 32], data, MIN_CHUNK);
    let decode = |body: &[u8]| {
        let mut decoder = ChunkedDecoder::new(key.clone(), date, scope, [1; 32], data.len() as u64);
        decoder.feed(body)?;
        decoder.finish()
    };
    assert_eq!(decode(&encoded).as_deref().ok(), Some(data));
    if let [a, b, c, ..] = data {
        let mut changed = encoded.clone();
        let at = (usize::from(*a) << 8 | usize::from(*b)) % changed.len();
        changed[at] ^= c | 1;
        if let Ok(decoded) = decode(&changed) {
            assert_eq!(&decoded[..], data, "a changed stream decoded to other bytes");
        }
    }
});
