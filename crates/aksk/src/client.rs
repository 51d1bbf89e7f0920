//! The client side: [`Signer`] signs an `http::Request` (date, nonce, body hash, SigV4
//! `Authorization`), and [`SigningLayer`] does it for every request a Tower client sends.
//!
//! ```
//! use palisade_aksk::client::Signer;
//! use palisade_core::SystemClock;
//! use secrecy::SecretString;
//!
//! let signer = Signer::new("PKEXAMPLE", SecretString::from("secret"), "palisade", "eu-west-1", SystemClock::shared());
//! let mut request = http::Request::post("https://api.example.com/api/orders?b=2&a=1")
//!     .header("content-type", "application/json")
//!     .body(bytes::Bytes::from_static(b"{}"))?;
//! let (mut parts, body) = request.into_parts();
//! signer.sign(&mut parts, &body)?;
//! assert!(parts.headers["authorization"].to_str()?.starts_with("AWS4-HMAC-SHA256 Credential=PKEXAMPLE/"));
//! assert!(parts.headers.contains_key("x-palisade-nonce"));
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Request};
use http_body::Body;
use http_body_util::{BodyExt as _, Full};
use palisade_core::SharedClock;
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};
use tower_layer::Layer;
use tower_service::Service;

use crate::canonical::{self, CanonicalOptions, SigningKey};
use crate::verifier::{X_AMZ_CONTENT_SHA256, X_AMZ_DATE, X_PALISADE_NONCE, format_amz_date};

/// Why a request could not be signed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The request has no host (neither a `Host` header nor an authority in its URI).
    #[error("the request has no host")]
    NoHost,
    /// The URI carries user information (`user:pass@host`), which would end up in `Host`.
    #[error("the request URI carries user information")]
    UserInfo,
    /// The request could not be canonicalized.
    #[error(transparent)]
    Canonical(#[from] canonical::CanonicalError),
    /// A header value could not be built.
    #[error("a signing header could not be built")]
    Header,
    /// Reading the body failed.
    #[error("the request body could not be read")]
    Body(#[source] crate::server::BoxError),
}

/// Headers never signed: they change hop by hop or are the signature itself.
const UNSIGNED: &[&str] = &[
    "authorization",
    "connection",
    "expect",
    "keep-alive",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "x-amzn-trace-id",
];

/// Signs requests with one access key.
#[derive(Clone)]
pub struct Signer {
    key_id: Arc<str>,
    secret: Arc<SecretString>,
    service: Arc<str>,
    region: Arc<str>,
    nonce_header: HeaderName,
    clock: SharedClock,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .field("service", &self.service)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for `key_id` / `secret` in `region` for `service`.
    pub fn new(
        key_id: impl Into<Arc<str>>,
        secret: SecretString,
        service: impl Into<Arc<str>>,
        region: impl Into<Arc<str>>,
        clock: SharedClock,
    ) -> Self {
        Self {
            key_id: key_id.into(),
            secret: Arc::new(secret),
            service: service.into(),
            region: region.into(),
            nonce_header: X_PALISADE_NONCE,
            clock,
        }
    }

    /// Uses `name` for the nonce header (it must match the verifier's).
    pub fn nonce_header(mut self, name: HeaderName) -> Self {
        self.nonce_header = name;
        self
    }

    /// Signs `parts` for `body`: sets `host` (from the URI when absent), `x-amz-date`, a fresh
    /// 128-bit nonce and `x-amz-content-sha256`, then `Authorization` over every header but
    /// hop-by-hop ones and `user-agent`.
    pub fn sign(&self, parts: &mut Parts, body: &[u8]) -> Result<(), SignError> {
        self.sign_payload(parts, &canonical::sha256_hex(body))
            .map(|_| ())
    }

    /// Signs `parts` for a signed streaming upload of `data` (aws-chunked, chunks of
    /// `chunk_size` bytes, at least [`crate::streaming::MIN_CHUNK`]) and answers the encoded
    /// body to send: sets `content-encoding: aws-chunked`, `x-amz-decoded-content-length` and
    /// `content-length`, signs with `x-amz-content-sha256:
    /// STREAMING-AWS4-HMAC-SHA256-PAYLOAD`, then signs each chunk in the chain.
    pub fn sign_streaming(
        &self,
        parts: &mut Parts,
        data: &[u8],
        chunk_size: usize,
    ) -> Result<Vec<u8>, SignError> {
        use crate::streaming::{self, X_AMZ_DECODED_CONTENT_LENGTH};
        let value = |s: &str| HeaderValue::from_str(s).map_err(|_| SignError::Header);
        parts
            .headers
            .insert(http::header::CONTENT_ENCODING, value("aws-chunked")?);
        parts.headers.insert(
            X_AMZ_DECODED_CONTENT_LENGTH,
            value(&data.len().to_string())?,
        );
        parts.headers.insert(
            http::header::CONTENT_LENGTH,
            value(&streaming::encoded_len(data.len(), chunk_size).to_string())?,
        );
        let signed = self.sign_payload(parts, streaming::STREAMING_PAYLOAD)?;
        Ok(streaming::encode_chunked(
            &signed.key,
            &signed.amz_date,
            &signed.scope,
            &signed.signature,
            data,
            chunk_size,
        ))
    }

    fn sign_payload(&self, parts: &mut Parts, payload: &str) -> Result<Signed, SignError> {
        if !parts.headers.contains_key(HOST) {
            let authority = parts.uri.authority().ok_or(SignError::NoHost)?;
            // Never put credentials from `user:pass@host` into a header.
            if authority.as_str().contains('@') {
                return Err(SignError::UserInfo);
            }
            let host = HeaderValue::from_str(authority.as_str()).map_err(|_| SignError::Header)?;
            parts.headers.insert(HOST, host);
        }
        let unix = self
            .clock
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let amz_date = format_amz_date(unix);
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(nonce);
        let value = |s: &str| HeaderValue::from_str(s).map_err(|_| SignError::Header);
        parts.headers.insert(X_AMZ_DATE, value(&amz_date)?);
        parts
            .headers
            .insert(self.nonce_header.clone(), value(&nonce)?);
        parts.headers.insert(X_AMZ_CONTENT_SHA256, value(payload)?);
        parts.headers.remove(AUTHORIZATION);

        let mut names: Vec<&str> = parts
            .headers
            .keys()
            .map(HeaderName::as_str)
            .filter(|n| !UNSIGNED.contains(n))
            .collect();
        names.sort_unstable();
        names.dedup();
        let signed = names.join(";");
        let mut creq = Vec::with_capacity(512);
        canonical::canonical_request(
            &mut creq,
            parts.method.as_str(),
            parts.uri.path().as_bytes(),
            parts.uri.query().unwrap_or("").as_bytes(),
            &parts.headers,
            None,
            &signed,
            payload,
            CanonicalOptions::default(),
        )?;
        let scope = canonical::credential_scope(&amz_date[..8], &self.region, &self.service);
        let mut sts = String::with_capacity(160);
        canonical::string_to_sign(&mut sts, &amz_date, &scope, &creq);
        let key = SigningKey::derive(
            self.secret.expose_secret().as_bytes(),
            &amz_date[..8],
            &self.region,
            &self.service,
        );
        let signature = key.sign(sts.as_bytes());
        let authorization = format!(
            "{} Credential={}/{scope}, SignedHeaders={signed}, Signature={}",
            canonical::ALGORITHM,
            self.key_id,
            hex::encode(signature)
        );
        parts.headers.insert(AUTHORIZATION, value(&authorization)?);
        Ok(Signed {
            key,
            amz_date,
            scope,
            signature,
        })
    }
}

/// What signing a request leaves for signing its chunks.
struct Signed {
    key: SigningKey,
    amz_date: String,
    scope: String,
    signature: [u8; 32],
}

/// Signs every outgoing request with a [`Signer`]. The body is read (to hash it) and sent
/// as a [`Full`] body.
#[derive(Clone, Debug)]
pub struct SigningLayer {
    signer: Signer,
}

impl SigningLayer {
    /// Signs with `signer`.
    pub fn new(signer: Signer) -> Self {
        Self { signer }
    }
}

impl<S> Layer<S> for SigningLayer {
    type Service = SigningService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SigningService {
            inner,
            signer: self.signer.clone(),
        }
    }
}

/// The service of [`SigningLayer`].
#[derive(Clone, Debug)]
pub struct SigningService<S> {
    inner: S,
    signer: Signer,
}

/// The error of [`SigningService`]: signing failed, or the inner service failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigningServiceError<E> {
    /// Signing failed.
    #[error(transparent)]
    Sign(SignError),
    /// The inner service failed.
    #[error("the inner service failed")]
    Inner(#[source] E),
}

/// The future of [`SigningService`] (client side; boxed around the body read).
pub struct SigningFuture<R, E> {
    inner: Pin<Box<dyn Future<Output = Result<R, SigningServiceError<E>>> + Send>>,
}

impl<R, E> fmt::Debug for SigningFuture<R, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningFuture").finish_non_exhaustive()
    }
}

impl<R, E> Future for SigningFuture<R, E> {
    type Output = Result<R, SigningServiceError<E>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<S, B> Service<Request<B>> for SigningService<S>
where
    S: Service<Request<Full<Bytes>>> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<crate::server::BoxError>,
{
    type Response = S::Response;
    type Error = SigningServiceError<S::Error>;
    type Future = SigningFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(SigningServiceError::Inner)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let signer = self.signer.clone();
        SigningFuture {
            inner: Box::pin(async move {
                let (mut parts, body) = request.into_parts();
                let body = body
                    .collect()
                    .await
                    .map_err(|e| SigningServiceError::Sign(SignError::Body(e.into())))?
                    .to_bytes();
                signer
                    .sign(&mut parts, &body)
                    .map_err(SigningServiceError::Sign)?;
                inner
                    .call(Request::from_parts(parts, Full::new(body)))
                    .await
                    .map_err(SigningServiceError::Inner)
            }),
        }
    }
}
