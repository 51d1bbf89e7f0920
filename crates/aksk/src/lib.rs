//! Replay-proof access-key request signing for Tower services.
//!
//! Machine clients sign requests with an access key id and a secret key using AWS Signature
//! Version 4: any standard SigV4 signer (the `aws-sigv4` crate, botocore, the AWS SDKs) can
//! call a Palisade service, with the service name and region of the credential scope set by
//! the server. On top of SigV4, Palisade's verifier enforces:
//!
//! - `host`, `x-amz-date`, `x-amz-content-sha256` and a nonce header (`x-palisade-nonce`, at
//!   least 128 bits) must be signed; duplicate `Authorization`, date, nonce or host headers and
//!   signed-header lists that are not lowercase and sorted are refused;
//! - the body hash must be present and match the body actually received, which is read up to a
//!   limit and hashed as it streams in; `UNSIGNED-PAYLOAD` and signed aws-chunked streams
//!   (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`, verified chunk by chunk, see [`streaming`]) only on
//!   routes that opt in, other `STREAMING-*` forms never;
//! - the timestamp is inside a short window (default 120 s each way, at most 300 s in
//!   Production) and the credential-scope date is the timestamp's date;
//! - a (key id, nonce) pair is accepted once, inserted atomically only after the signature
//!   verified; an unreachable store refuses the request.
//!
//! Failures are typed ([`VerifyError`]) for logs and metrics; the client sees one generic 401.
//! Signatures are compared in constant time; derived signing keys are cached per (key, secret
//! version, date) for the verifier's region and service.
//!
//! # What SigV4 itself leaves open
//!
//! These come from the SigV4 canonical form, and any verifier compatible with it shares them;
//! handlers should read requests the same way:
//!
//! - query parameters are sorted, so `a=1&a=2` and `a=2&a=1` sign alike: do not give meaning
//!   to the order of repeated parameters;
//! - repeated headers are joined with `,`, so two `x-h` headers and one `x-h: a,b` sign alike;
//! - `+` in a query is read as a space (as form decoders and the `aws-sigv4` crate read it);
//!   an application reading raw `+` as a literal plus sees another value than was signed;
//!
//! Flooding the credential store with made-up key ids, and one valid key filling the nonce
//! store, are rate-limiting concerns: put a throttle in front of this layer.
//!
//! Credentials ([`AccessKeys`]) belong to an org and carry roles and scopes; the secret is
//! returned once at issue and stored sealed with [`palisade_field_crypto`].
//!
//! | module | what it holds |
//! |---|---|
//! | [`canonical`] | SigV4 canonical request, string to sign, signing key |
//! | [`verifier`] | [`Verifier`], its policy and [`VerifyError`] |
//! | [`server`] | [`AccessKeyLayer`]: the Tower layer for servers |
//! | [`client`] | [`client::Signer`] and [`client::SigningLayer`] for outgoing requests |
//! | [`streaming`] | signed aws-chunked bodies: [`streaming::ChunkedDecoder`], the encoder |
//! | [`credential`] | [`AccessKeys`], [`CredentialStore`], [`MemoryCredentialStore`] |
//! | [`nonce`] | [`NonceStore`], [`MemoryNonceStore`] |
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `redis` | [`RedisNonceStore`] (`SET NX PX`, prefixed, hash-tagged per key) |
//! | `postgres` | [`PostgresCredentialStore`] (`sqlx`) |
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod canonical;
pub mod client;
pub mod credential;
pub mod nonce;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres_store;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis_store;
pub mod server;
pub mod streaming;
pub mod verifier;

pub use credential::{
    AccessKeys, CredentialError, CredentialRecord, CredentialStore, IssuedCredential, KeyMetadata,
    KeyStatus, MemoryCredentialStore, NewCredential, StoredSecret,
};
pub use nonce::{MemoryNonceStore, NonceStore};
#[cfg(feature = "postgres")]
pub use postgres_store::PostgresCredentialStore;
#[cfg(feature = "redis")]
pub use redis_store::RedisNonceStore;
pub use server::{AccessKey, AccessKeyLayer, VerifiedBody};
pub use verifier::{Malformed, Precheck, Verifier, VerifierBuilder, VerifyError};

pub use palisade_core::StoreError;

/// Runs the store-URL transport check of `palisade-sessions` under `profile`.
#[cfg(feature = "postgres")]
pub(crate) fn require_transport(
    url: &str,
    profile: palisade_core::Profile,
    component: &'static str,
) -> Result<(), StoreError> {
    palisade_sessions::require_transport(url, profile, component, |_| {})
}
