//! Signed streaming uploads (aws-chunked) through the layer: accepted on the opted-in route
//! with the decoded body handed on, refused on any other route, on a changed chunk, a changed
//! decoded length, a body over the limit, and a replay. The chunk chain itself is checked
//! against AWS's published example in the crate's unit tests, and the request signature of
//! that example here.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::{HeaderValue, StatusCode};
use http_body_util::Full;
use palisade_aksk::canonical::{self, CanonicalOptions, PathEncoding, PathNormalization};
use palisade_aksk::client::Signer;
use palisade_aksk::streaming::ChunkError;
use palisade_aksk::{Malformed, VerifyError};
use secrecy::{ExposeSecret as _, SecretString};

fn signer<C, N>(fx: &Fixture<C, N>) -> Signer {
    Signer::new(
        fx.issued.key_id.as_str(),
        SecretString::from(fx.issued.secret.expose_secret()),
        SERVICE,
        REGION,
        fx.clock.shared(),
    )
}

/// A streamed upload of `data` to `uri`, signed, with its encoded body.
fn streamed<C, N>(fx: &Fixture<C, N>, uri: &str, data: &[u8]) -> (http::request::Parts, Vec<u8>) {
    let (mut parts, _) = request("PUT", uri, b"").into_parts();
    let body = signer(fx).sign_streaming(&mut parts, data, 8192).unwrap();
    (parts, body)
}

fn with_body(parts: &http::request::Parts, body: Vec<u8>) -> http::Request<Full<Bytes>> {
    clone_request(
        &http::Request::from_parts(parts.clone(), Full::new(Bytes::new())),
        &Bytes::from(body),
    )
}

#[tokio::test]
async fn a_streamed_upload_is_verified_and_decoded() {
    let fx = fixture().await;
    let data: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let (parts, body) = streamed(&fx, "https://api.example.com/api/streams/42", &data);
    assert_eq!(parts.headers["content-encoding"], "aws-chunked");
    let reply = send(&fx, with_body(&parts, body.clone())).await;
    assert_eq!(reply.status(), StatusCode::OK);
    let echoed = body_text(reply).await;
    assert_eq!(
        echoed,
        format!("svc:billing acme {}", String::from_utf8_lossy(&data))
    );
    // The same request again is a replay.
    let reply = send(&fx, with_body(&parts, body)).await;
    assert!(matches!(reason(&reply), Some(VerifyError::Replay)));
}

#[tokio::test]
async fn streamed_uploads_are_refused_when_anything_changes() {
    let fx = fixture().await;
    let data = vec![b'x'; 3000];
    let uri = "https://api.example.com/api/streams/42";

    // A byte of the chunk data.
    let (parts, mut body) = streamed(&fx, uri, &data);
    let at = body.len() / 2;
    body[at] ^= 1;
    let reply = send(&fx, with_body(&parts, body)).await;
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
    assert!(
        matches!(
            reason(&reply),
            Some(VerifyError::Chunk(ChunkError::BadSignature))
        ),
        "{:?}",
        reason(&reply)
    );

    // The decoded length (signed): the request signature no longer matches.
    let (mut parts, body) = streamed(&fx, uri, &data);
    parts.headers.insert(
        "x-amz-decoded-content-length",
        HeaderValue::from_static("2999"),
    );
    let reply = send(&fx, with_body(&parts, body)).await;
    assert!(matches!(reason(&reply), Some(VerifyError::BadSignature)));

    // The final chunk cut off.
    let (parts, body) = streamed(&fx, uri, &data);
    let cut = body[..body.len() - 90].to_vec();
    let reply = send(&fx, with_body(&parts, cut)).await;
    assert!(matches!(
        reason(&reply),
        Some(VerifyError::Chunk(ChunkError::Truncated))
    ));

    // A route that did not opt in.
    let (parts, body) = streamed(&fx, "https://api.example.com/api/orders/42", &data);
    let reply = send(&fx, with_body(&parts, body)).await;
    assert!(matches!(
        reason(&reply),
        Some(VerifyError::PayloadNotAllowed)
    ));

    // A signed decoded length over the body limit (4 KiB here): refused by the precheck.
    let (parts, body) = streamed(&fx, uri, &vec![b'x'; 5000]);
    let reply = send(&fx, with_body(&parts, body)).await;
    assert!(matches!(reason(&reply), Some(VerifyError::BodyTooLarge)));
}

/// Several chunks through the layer (a 64 KiB limit here, so chunks of the 8 KiB minimum
/// chain): the handler gets the decoded bytes, described by its headers; a declared encoded
/// length past what the signed decoded length allows is refused before the body is read.
#[tokio::test]
async fn a_multi_chunk_upload_and_its_declared_length() {
    use http_body_util::BodyExt as _;
    use tower::{Layer as _, ServiceExt as _};
    let fx = fixture_with_limit(
        palisade_aksk::MemoryCredentialStore::new(),
        palisade_aksk::MemoryNonceStore::new(),
        64 * 1024,
    )
    .await;
    let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let uri = "https://api.example.com/api/streams/big";
    let (parts, body) = streamed(&fx, uri, &data);
    let inner = tower::service_fn(
        |req: http::Request<palisade_aksk::VerifiedBody<Full<Bytes>>>| async move {
            let length = req.headers().get("content-length").cloned();
            let coding = req.headers().get("content-encoding").cloned();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let same = body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8);
            Ok::<_, std::convert::Infallible>(http::Response::new(format!(
                "{length:?} {coding:?} {} {same}",
                body.len()
            )))
        },
    );
    let reply = fx
        .layer
        .layer(inner)
        .oneshot(with_body(&parts, body))
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(body_text(reply).await, "Some(\"40000\") None 40000 true");

    // The same upload declaring an encoded length past the bound for 40,000 decoded bytes.
    let (mut parts, body) = streamed(&fx, uri, &data);
    let bound = palisade_aksk::streaming::max_encoded_len(40_000);
    parts.headers.insert(
        "content-length",
        HeaderValue::from_str(&(bound + 1).to_string()).unwrap(),
    );
    let reply = send(&fx, with_body(&parts, body)).await;
    assert!(
        matches!(reason(&reply), Some(VerifyError::BodyTooLarge)),
        "{:?}",
        reason(&reply)
    );
}

#[tokio::test]
async fn the_decoded_length_must_be_signed() {
    let fx = fixture().await;
    // Sent but left out of the signed headers.
    let mut request = request("PUT", "https://api.example.com/api/streams/42", b"");
    request.headers_mut().insert(
        "x-amz-decoded-content-length",
        HeaderValue::from_static("5"),
    );
    let mut raw = Raw::new(&fx.issued.key_id, fx.issued.secret.expose_secret(), T0);
    raw.payload = Some(palisade_aksk::streaming::STREAMING_PAYLOAD);
    raw.sign(&mut request, b"");
    let reply = send(&fx, request).await;
    assert!(
        matches!(
            reason(&reply),
            Some(VerifyError::Malformed(Malformed::Unsigned(
                "x-amz-decoded-content-length"
            )))
        ),
        "{:?}",
        reason(&reply)
    );
    // Trailer variants are never accepted, opted in or not.
    let mut request = request_template();
    let mut raw = Raw::new(&fx.issued.key_id, fx.issued.secret.expose_secret(), T0);
    raw.payload = Some("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER");
    raw.sign(&mut request, b"");
    let reply = send(&fx, request).await;
    assert!(matches!(
        reason(&reply),
        Some(VerifyError::PayloadNotAllowed)
    ));
}

fn request_template() -> http::Request<Full<Bytes>> {
    request("PUT", "https://api.example.com/api/streams/42", b"")
}

/// The request signature of AWS's published streaming example ("Transferring Payload in
/// Multiple Chunks"), from the canonical functions: the seed the unit tests' chunk chain
/// starts from.
#[test]
fn aws_published_streaming_request_signature() {
    let mut headers = http::HeaderMap::new();
    for (name, value) in [
        ("host", "s3.amazonaws.com"),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
        ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "66560"),
        ("content-length", "66824"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    let signed = "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class";
    let mut creq = Vec::new();
    canonical::canonical_request(
        &mut creq,
        "PUT",
        b"/examplebucket/chunkObject.txt",
        b"",
        &headers,
        None,
        signed,
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        CanonicalOptions {
            path_encoding: PathEncoding::Single,
            path_normalization: PathNormalization::Disabled,
        },
    )
    .unwrap();
    let mut sts = String::new();
    canonical::string_to_sign(
        &mut sts,
        "20130524T000000Z",
        "20130524/us-east-1/s3/aws4_request",
        &creq,
    );
    let key = canonical::SigningKey::derive(
        b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "20130524",
        "us-east-1",
        "s3",
    );
    assert_eq!(
        hex::encode(key.sign(sts.as_bytes())),
        "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    );
}
