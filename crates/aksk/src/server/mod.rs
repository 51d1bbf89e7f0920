//! The server side: [`AccessKeyLayer`] verifies signed requests and puts the caller's
//! [`Identity`](palisade_core::Identity) in the request extensions.
//!
//! Per request, in this order:
//! 1. the cheap checks ([`Verifier::precheck`]): headers, scope, signed-header policy, host,
//!    window, declared length; nothing is hashed yet;
//! 2. the credential lookup (unknown keys stop here);
//! 3. the signature, over the signed `x-amz-content-sha256` claim, compared in constant time
//!    (disabled and expired keys and wrong secrets stop here, before any body is read);
//! 4. the body is read up to the limit, hashed as it streams in, and compared with the claim;
//! 5. only then is the (key id, nonce) pair inserted, atomically: unauthenticated traffic never
//!    reaches the nonce store;
//! 6. the inner service gets the verified bytes as a [`VerifiedBody`].
//!
//! Every failure answers one generic `401` (a store failure answers `503`), with the typed
//! [`VerifyError`] in the response extensions and the logs.

mod body;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt as _;
use palisade_core::{GateFuture, Rejection, RejectionKind, ResponseBody};
use sha2::{Digest as _, Sha256};
use tower_layer::Layer;
use tower_service::Service;

pub use body::{BoxError, VerifiedBody};

/// The response future of [`AccessKey`]: the authentication (store calls and the body read,
/// one boxed future: the layer's only allocation of its own), then the inner service's
/// future; or the refusal (the inner service is never called).
pub type ResponseFuture<S, B> = GateFuture<S, Request<VerifiedBody<B>>>;

use crate::canonical;
use crate::credential::CredentialStore;
use crate::nonce::NonceStore;
use crate::verifier::{Verifier, VerifyError};

/// What the layer does with requests that carry no SigV4 `Authorization` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Others {
    Refuse,
    PassThrough,
}

/// Verifies access-key (SigV4) signed requests.
///
/// ```
/// use palisade_aksk::{AccessKeyLayer, MemoryCredentialStore, MemoryNonceStore, Verifier};
/// use palisade_core::{KeyRing, SystemClock};
/// use palisade_field_crypto::FieldCipher;
///
/// let ring = KeyRing::parse("f1 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")?;
/// let cipher = FieldCipher::new(ring, SystemClock::shared());
/// let verifier = Verifier::builder("palisade", "eu-west-1").build(cipher, SystemClock::shared())?;
/// let layer = AccessKeyLayer::new(verifier, MemoryCredentialStore::new(), MemoryNonceStore::new());
/// # let _ = layer;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub struct AccessKeyLayer<C, N> {
    shared: Arc<Shared<C, N>>,
    others: Others,
}

struct Shared<C, N> {
    verifier: Verifier,
    credentials: C,
    nonces: N,
}

impl<C, N> Clone for AccessKeyLayer<C, N> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            others: self.others,
        }
    }
}

impl<C, N> fmt::Debug for AccessKeyLayer<C, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKeyLayer")
            .field("verifier", &self.shared.verifier)
            .finish_non_exhaustive()
    }
}

impl<C, N> AccessKeyLayer<C, N> {
    /// Verifies with `verifier`, looking keys up in `credentials` and nonces in `nonces`.
    /// Requests without a SigV4 `Authorization` header are refused.
    pub fn new(verifier: Verifier, credentials: C, nonces: N) -> Self {
        Self {
            shared: Arc::new(Shared {
                verifier,
                credentials,
                nonces,
            }),
            others: Others::Refuse,
        }
    }

    /// Lets requests whose `Authorization` is not `AWS4-HMAC-SHA256 …` (a bearer token, or
    /// none) through untouched, without an identity, for another authenticator further in.
    /// A request that claims SigV4 is always verified.
    pub fn pass_through_other_schemes(mut self) -> Self {
        self.others = Others::PassThrough;
        self
    }

    /// The verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.shared.verifier
    }
}

impl<S, C, N> Layer<S> for AccessKeyLayer<C, N> {
    type Service = AccessKey<S, C, N>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessKey {
            inner,
            shared: self.shared.clone(),
            others: self.others,
        }
    }
}

/// The service of [`AccessKeyLayer`].
pub struct AccessKey<S, C, N> {
    inner: S,
    shared: Arc<Shared<C, N>>,
    others: Others,
}

impl<S: Clone, C, N> Clone for AccessKey<S, C, N> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            others: self.others,
        }
    }
}

impl<S: fmt::Debug, C, N> fmt::Debug for AccessKey<S, C, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKey")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Whether `headers` claim SigV4 (any `Authorization` value starting `AWS4-`): such a request
/// is always verified by this layer, never handed to another authenticator. Routers that send
/// signed and bearer requests to different stacks decide with this same test.
pub fn claims_sigv4(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .any(|v| v.as_bytes().starts_with(b"AWS4-"))
}

impl<S, C, N, B, ResBody> Service<Request<B>> for AccessKey<S, C, N>
where
    S: Service<Request<VerifiedBody<B>>, Response = Response<ResBody>> + Clone + Send + 'static,
    C: CredentialStore,
    N: NonceStore,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if self.others == Others::PassThrough && !claims_sigv4(request.headers()) {
            return ResponseFuture::calling(
                self.inner
                    .call(request.map(|b| VerifiedBody::unverified(b, u64::MAX))),
            );
        }
        // The ready service moves into the future; a clone stays for the next call.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        ResponseFuture::gating(Box::pin(authenticate(shared, request)), service)
            .in_span(palisade_core::request_span!("palisade.aksk"))
    }
}

/// The health of the credential store (`palisade_store_up{store="access-keys"}`).
static CREDENTIALS_HEALTH: palisade_core::StoreHealth =
    palisade_core::StoreHealth::new("access-keys");
/// The health of the nonce store (`palisade_store_up{store="nonces"}`).
static NONCES_HEALTH: palisade_core::StoreHealth = palisade_core::StoreHealth::new("nonces");

/// `result`, recorded as the health of the store that answered it.
fn observed<T>(
    health: &palisade_core::StoreHealth,
    result: Result<T, palisade_core::StoreError>,
) -> Result<T, palisade_core::StoreError> {
    match &result {
        Ok(_) => health.ok(),
        Err(_) => health.failed(),
    }
    result
}

fn reject(error: VerifyError, key_id: Option<&str>) -> Rejection {
    metrics::counter!("palisade_aksk_failures_total", "reason" => error.reason()).increment(1);
    let kind = match error {
        VerifyError::Unavailable(_) => {
            tracing::error!(reason = %error, key_id, "access-key request refused: store unavailable");
            RejectionKind::Unavailable
        }
        _ => {
            tracing::warn!(reason = %error, key_id, "access-key request refused");
            RejectionKind::Unauthenticated
        }
    };
    Rejection::new(kind, error)
}

async fn authenticate<B, C, N>(
    shared: Arc<Shared<C, N>>,
    request: Request<B>,
) -> Result<Request<VerifiedBody<B>>, Rejection>
where
    C: CredentialStore,
    N: NonceStore,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let verifier = &shared.verifier;
    let (mut parts, body) = request.into_parts();
    let check = verifier.precheck(&parts).map_err(|e| reject(e, None))?;
    let key_id = check.key_id();
    let record = match observed(&CREDENTIALS_HEALTH, shared.credentials.get(key_id).await) {
        Ok(Some(record)) => record,
        Ok(None) => return Err(reject(VerifyError::UnknownKey, Some(key_id))),
        Err(e) => return Err(reject(VerifyError::Unavailable(e), Some(key_id))),
    };
    // The signature covers the claimed body hash: it is checked before the body is read, so
    // only a caller holding the secret gets a body buffered and hashed.
    let version = verifier
        .verify_signature(&parts, &check, &record)
        .map_err(|e| reject(e, Some(key_id)))?;
    let mut decoded_len = None;
    let body = if check.streaming_length().is_some() {
        // Signed aws-chunked: each chunk verified before its bytes are kept.
        let decoder = verifier
            .chunk_decoder(&check, &record, version)
            .map_err(|e| reject(e, Some(key_id)))?;
        let bytes = read_chunked(body, decoder, verifier.body_limit(&check))
            .await
            .map_err(|e| reject(e, Some(key_id)))?;
        decoded_len = Some(bytes.len());
        VerifiedBody::verified(bytes)
    } else if check.body_is_signed() {
        let (bytes, hash) = read_hashed(body, verifier.body_limit(&check))
            .await
            .map_err(|e| reject(e, Some(key_id)))?;
        verifier
            .check_body(&check, &hash)
            .map_err(|e| reject(e, Some(key_id)))?;
        VerifiedBody::verified(bytes)
    } else {
        VerifiedBody::unverified(body, verifier.body_limit(&check))
    };
    let now = verifier.clock().now();
    let inserted = shared
        .nonces
        .insert_once(key_id, check.nonce(), verifier.nonce_ttl(), now)
        .await;
    match observed(&NONCES_HEALTH, inserted) {
        Ok(true) => {}
        Ok(false) => return Err(reject(VerifyError::Replay, Some(key_id))),
        Err(e) => return Err(reject(VerifyError::Unavailable(e), Some(key_id))),
    }
    tracing::debug!(key_id, version, "access-key request verified");
    let identity = verifier.identity(&record);
    if let Some(len) = decoded_len {
        describe_decoded(&mut parts.headers, len);
    }
    parts.extensions.insert(identity);
    Ok(Request::from_parts(parts, body))
}

/// Makes the headers describe the decoded body the inner service receives: its length, and
/// no `aws-chunked` content coding (other codings stay, in order).
fn describe_decoded(headers: &mut http::HeaderMap, len: usize) {
    headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    let codings: Vec<String> = headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("aws-chunked"))
        .map(str::to_owned)
        .collect();
    headers.remove(http::header::CONTENT_ENCODING);
    if !codings.is_empty()
        && let Ok(value) = http::HeaderValue::from_str(&codings.join(", "))
    {
        headers.insert(http::header::CONTENT_ENCODING, value);
    }
}

/// Reads a signed aws-chunked body of at most `limit` encoded bytes through `decoder`.
async fn read_chunked<B>(
    body: B,
    mut decoder: crate::streaming::ChunkedDecoder,
    limit: u64,
) -> Result<Bytes, VerifyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    if body.size_hint().lower() > limit {
        return Err(VerifyError::BodyTooLarge);
    }
    let mut body = std::pin::pin!(body);
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| VerifyError::Body)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len() as u64);
        if total > limit {
            return Err(VerifyError::BodyTooLarge);
        }
        decoder.feed(&data)?;
    }
    Ok(decoder.finish()?)
}

/// Reads the body up to `limit` bytes, hashing each frame as it arrives.
async fn read_hashed<B>(body: B, limit: u64) -> Result<(Bytes, [u8; 32]), VerifyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    if body.size_hint().lower() > limit {
        return Err(VerifyError::BodyTooLarge);
    }
    let mut body = std::pin::pin!(body);
    let mut hasher = Sha256::new();
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| VerifyError::Body)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total as u64 > limit {
            return Err(VerifyError::BodyTooLarge);
        }
        hasher.update(&data);
        // One frame (the common case) is kept without copying.
        match (&mut first, &mut joined) {
            (None, None) => first = Some(data),
            (Some(_), None) => {
                let mut buf = BytesMut::with_capacity(total);
                buf.extend_from_slice(&first.take().unwrap_or_default());
                buf.extend_from_slice(&data);
                joined = Some(buf);
            }
            (_, Some(buf)) => buf.extend_from_slice(&data),
        }
    }
    let bytes = match joined {
        Some(buf) => buf.freeze(),
        None => first.unwrap_or_default(),
    };
    let hash = if total == 0 {
        // Nothing was hashed: the empty body's digest is a constant.
        canonical::body_digest(&[])
    } else {
        hasher.finalize().into()
    };
    Ok((bytes, hash))
}
