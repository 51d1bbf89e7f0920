//! The SigV4 verifier with Palisade's policy: what must be signed, the time window, the body
//! hash, the signing-key cache.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderName;
use http::request::Parts;
use palisade_core::{
    AuthMethod, Identity, Posture, PostureError, Profile, Severity, SharedClock, Surface,
};
use palisade_field_crypto::FieldCipher;

use crate::StoreError;
use crate::canonical::{self, CanonicalError, CanonicalOptions, SigningKey};
use crate::credential::{CredentialRecord, KeyStatus, StoredSecret, open_secret};

/// The date header (the only one accepted; `Date` is not).
pub const X_AMZ_DATE: HeaderName = HeaderName::from_static("x-amz-date");
/// The body-hash header.
pub const X_AMZ_CONTENT_SHA256: HeaderName = HeaderName::from_static("x-amz-content-sha256");
/// The longest nonce accepted.
pub const MAX_NONCE_LEN: usize = 64;
/// The default nonce header.
pub const X_PALISADE_NONCE: HeaderName = HeaderName::from_static("x-palisade-nonce");
/// The `x-amz-content-sha256` value of a route that opted out of body signing.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// The client-role namespace a key's roles are put under in the [`Identity`].
pub const ROLE_CLIENT: &str = "access-key";
/// The client-role namespace a key's scopes are put under in the [`Identity`].
pub const SCOPE_CLIENT: &str = "access-key-scope";
/// The default time window, each way.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(120);
/// The largest window Production accepts, each way.
pub const MAX_PRODUCTION_WINDOW: Duration = Duration::from_secs(300);
/// The default body limit.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// Added to a nonce's time to live beyond the window on both sides.
pub const NONCE_TTL_MARGIN: Duration = Duration::from_secs(60);
/// Signing keys kept in the cache before it is cleared.
const CACHE_CAPACITY: usize = 4096;
/// The longest access key id.
pub const MAX_KEY_ID_LEN: usize = 64;

/// Why a request's signature was not accepted. The client always sees one generic 401; the
/// variant goes to logs and metrics (and the response extensions).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The request is not a well-formed signed request (see the reason).
    #[error("malformed signed request: {0}")]
    Malformed(#[from] Malformed),
    /// No credential has this key id.
    #[error("unknown access key")]
    UnknownKey,
    /// The key is disabled.
    #[error("disabled access key")]
    DisabledKey,
    /// The key (or every one of its secrets) expired.
    #[error("expired access key")]
    ExpiredKey,
    /// The timestamp is outside the window.
    #[error("request timestamp outside the allowed window")]
    Skew,
    /// The (key id, nonce) pair was seen before.
    #[error("replayed nonce")]
    Replay,
    /// The body does not hash to the signed `x-amz-content-sha256`.
    #[error("body hash mismatch")]
    BadBodyHash,
    /// The signature does not match.
    #[error("signature mismatch")]
    BadSignature,
    /// The body is larger than the configured limit.
    #[error("body larger than the limit")]
    BodyTooLarge,
    /// `UNSIGNED-PAYLOAD` or a signed stream on a route that did not opt in, or another
    /// `STREAMING-*` form (never accepted).
    #[error("unsigned or streaming payload refused")]
    PayloadNotAllowed,
    /// Reading the body failed.
    #[error("the request body could not be read")]
    Body,
    /// A signed streaming body failed its chunk checks.
    #[error("streaming body refused: {0}")]
    Chunk(#[from] crate::streaming::ChunkError),
    /// A store was unreachable or failed: refused (fail closed).
    #[error("access-key store unavailable")]
    Unavailable(#[source] StoreError),
}

impl VerifyError {
    /// A short, stable name of the reason (`skew`, `replay`, `bad_signature`, ...): the
    /// `reason` label of the `palisade_aksk_failures_total` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "malformed",
            Self::UnknownKey { .. } => "unknown_key",
            Self::DisabledKey { .. } => "disabled_key",
            Self::ExpiredKey { .. } => "expired_key",
            Self::Skew { .. } => "skew",
            Self::Replay { .. } => "replay",
            Self::BadBodyHash { .. } => "bad_body_hash",
            Self::BadSignature { .. } => "bad_signature",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::PayloadNotAllowed { .. } => "payload_not_allowed",
            Self::Body { .. } => "body",
            Self::Chunk { .. } => "chunk",
            Self::Unavailable { .. } => "unavailable",
        }
    }
}

/// What is malformed about a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// No `Authorization` header.
    #[error("no Authorization header")]
    MissingAuthorization,
    /// More than one `Authorization` header.
    #[error("more than one Authorization header")]
    DuplicateAuthorization,
    /// The `Authorization` header does not parse.
    #[error("the Authorization header does not parse")]
    BadAuthorization,
    /// The credential scope does not parse, or names another region, service or terminator.
    #[error("bad credential scope")]
    BadScope,
    /// The credential-scope date differs from the timestamp's date.
    #[error("credential-scope date differs from x-amz-date")]
    ScopeDate,
    /// A header Palisade requires to be signed is not in the signed-header list.
    #[error("required header not signed: {0}")]
    Unsigned(&'static str),
    /// No date header, or more than one.
    #[error("missing or repeated x-amz-date")]
    Date,
    /// The date header does not parse.
    #[error("x-amz-date does not parse")]
    BadDate,
    /// No nonce header, more than one, or shorter than 128 bits.
    #[error("missing, repeated or weak nonce")]
    Nonce,
    /// No body hash header, more than one, or not 64 lowercase hex.
    #[error("missing, repeated or malformed x-amz-content-sha256")]
    ContentHash,
    /// No `x-amz-decoded-content-length` on a streaming payload, more than one, or not a
    /// decimal length.
    #[error("missing, repeated or malformed x-amz-decoded-content-length")]
    DecodedLength,
    /// More than one `Host` header.
    #[error("more than one Host header")]
    DuplicateHost,
    /// The signed host is not one of the allowed hosts.
    #[error("host not allowed")]
    Host,
    /// The path has dot segments or empty segments, which signers normalize differently.
    #[error("path not normalized")]
    Path,
    /// Canonicalization failed.
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
}

/// A request that passed the cheap checks, before the body and the credential are looked at.
/// It borrows from the request's headers: nothing is copied.
#[derive(Clone, Debug)]
pub struct Precheck<'a> {
    /// Checked: 1 to 64 ASCII letters and digits.
    key_id: &'a [u8],
    /// Checked ASCII: `<yyyymmdd>/<region>/<service>/aws4_request`.
    scope: &'a [u8],
    /// Checked: `YYYYMMDDTHHMMSSZ`.
    amz_date: &'a [u8],
    /// Checked: lowercase token names, `;`-separated, strictly ascending.
    signed_headers: &'a [u8],
    /// Where each signed header's value comes from, in list order.
    plan: Plan,
    signature: [u8; 32],
    /// Checked: the nonce alphabet (ASCII).
    nonce: &'a [u8],
    payload: Payload,
    /// The verifier's clock when the precheck ran (unix seconds).
    now: u64,
    /// Single-valued headers already read, reused by the canonical request.
    host: Option<&'a [u8]>,
    content_type: Option<&'a [u8]>,
    content_sha256: &'a [u8],
}

/// Where the value of a signed header comes from when the canonical request is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// `x-amz-date`, already parsed (digits only: written as is).
    AmzDate,
    /// The nonce, already checked against its alphabet (written as is).
    Nonce,
    /// `x-amz-content-sha256`, already checked (written as is).
    ContentSha256,
    /// The single `Host` header, else the URI authority (trimmed).
    Host,
    /// The single `Content-Type` header (trimmed).
    ContentType,
    /// Any other header: looked up in the map, repeated values joined.
    Map,
}

/// The signed-header list, split once by the precheck: where each name ends and where its
/// value comes from.
#[derive(Clone, Copy, Debug)]
struct Plan {
    ends: [u16; canonical::MAX_SIGNED_HEADERS],
    sources: [Source; canonical::MAX_SIGNED_HEADERS],
    len: u8,
}

/// What the request says about its body.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Payload {
    Hash([u8; 32]),
    Unsigned,
    /// Signed aws-chunked, with the signed decoded length.
    Streaming(u64),
}

impl<'a> Precheck<'a> {
    /// The access key id.
    pub fn key_id(&self) -> &'a str {
        // Checked to be ASCII letters and digits: never empty here.
        std::str::from_utf8(self.key_id).unwrap_or_default()
    }

    /// The nonce.
    pub fn nonce(&self) -> &'a str {
        // Checked against the nonce alphabet (ASCII): never empty here.
        std::str::from_utf8(self.nonce).unwrap_or_default()
    }

    /// Whether the body is verified before the handler sees it (false only for
    /// `UNSIGNED-PAYLOAD`): hashed and compared, or decoded chunk by chunk when streaming.
    pub fn body_is_signed(&self) -> bool {
        !matches!(self.payload, Payload::Unsigned)
    }

    /// The signed decoded length when the body is a signed aws-chunked stream
    /// ([`crate::streaming`]).
    pub fn streaming_length(&self) -> Option<u64> {
        match self.payload {
            Payload::Streaming(length) => Some(length),
            _ => None,
        }
    }
}

/// The signing-key cache key: the sealed secret's AEAD tag (unique per sealed secret, and
/// bound to its key id and version by the associated data) and the scope date.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct CacheKey {
    tag: [u8; 16],
    date: [u8; 8],
}

/// Hashes a [`CacheKey`] cheaply: its tag is already uniformly random, and keys only enter the
/// cache for stored secrets inside the time window, so there is nothing to flood.
#[derive(Default)]
struct TagHasher(u64);

impl std::hash::Hasher for TagHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
}

/// A cached signing key and what it was derived for: a hit must match the key id, the secret
/// version and the whole sealed secret, so a sealed row copied to another key never reuses it.
struct CacheEntry {
    key_id: Box<str>,
    version: u32,
    sealed: Box<[u8]>,
    key: SigningKey,
}

type Cache = HashMap<CacheKey, CacheEntry, std::hash::BuildHasherDefault<TagHasher>>;

thread_local! {
    /// Reused buffers for the canonical request and the string to sign.
    static BUFFERS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        std::cell::RefCell::new((Vec::with_capacity(1024), Vec::with_capacity(256)));
}

/// Builds a [`Verifier`].
#[derive(Clone, Debug)]
#[must_use]
pub struct VerifierBuilder {
    service: String,
    region: String,
    window: Duration,
    nonce_header: HeaderName,
    max_body: usize,
    max_unsigned_body: Option<u64>,
    unsigned_prefixes: Vec<String>,
    streaming_prefixes: Vec<String>,
    allowed_hosts: Vec<String>,
    options: CanonicalOptions,
    issuer: String,
    surface: Surface,
    profile: Profile,
}

impl VerifierBuilder {
    /// The time window each way (default 120 s; Production refuses more than 300 s).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The nonce header name (default `x-palisade-nonce`).
    pub fn nonce_header(mut self, name: HeaderName) -> Self {
        self.nonce_header = name;
        self
    }

    /// The largest body accepted, checked before any hashing (default 1 MiB).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Accept `UNSIGNED-PAYLOAD` on `prefix` and the paths under it, matched by whole
    /// segments (`/api/uploads` covers `/api/uploads/x`, not `/api/uploads-admin`). Every other
    /// path requires the body hash. The unsigned body is streamed to the handler unverified,
    /// within [`max_unsigned_body`](Self::max_unsigned_body).
    pub fn allow_unsigned_payload_on(mut self, prefix: impl Into<String>) -> Self {
        self.unsigned_prefixes.push(prefix.into());
        self
    }

    /// Accept signed streaming payloads (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`, aws-chunked) on
    /// `prefix` and the paths under it, matched by whole segments. Each chunk's signature is
    /// verified before its bytes reach the handler, and the signed decoded length
    /// (`x-amz-decoded-content-length`, which must be signed) must fit the body limit; see
    /// [`crate::streaming`].
    pub fn allow_streaming_payload_on(mut self, prefix: impl Into<String>) -> Self {
        self.streaming_prefixes.push(prefix.into());
        self
    }

    /// The largest unsigned body streamed on opted-in routes (default: the body limit).
    pub fn max_unsigned_body(mut self, bytes: u64) -> Self {
        self.max_unsigned_body = Some(bytes);
        self
    }

    /// The hosts signed requests may be addressed to (the signed `host` value, compared
    /// case-insensitively, port included when sent). Without it a request signed for another
    /// deployment that shares the credentials is accepted there; Production warns
    /// (`aksk-any-host`).
    pub fn allowed_hosts<I, H>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = H>,
        H: Into<String>,
    {
        self.allowed_hosts = hosts
            .into_iter()
            .map(|h| h.into().to_ascii_lowercase())
            .collect();
        self
    }

    /// Canonicalization options (default: double-encoded path, as `aws-sigv4` signs).
    pub fn canonical_options(mut self, options: CanonicalOptions) -> Self {
        self.options = options;
        self
    }

    /// The issuer recorded in identities (default `palisade-aksk`).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// The surface identities are accepted for (default `api`).
    pub fn surface(mut self, surface: Surface) -> Self {
        self.surface = surface;
        self
    }

    /// The profile whose posture rules apply.
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// Checks the settings and builds the verifier.
    pub fn build(self, cipher: FieldCipher, clock: SharedClock) -> Result<Verifier, PostureError> {
        let mut posture = Posture::new(self.profile, "access-key-verifier");
        if cipher.profile().is_some() {
            // A generated development key: the secrets sealed with it die with the process.
            posture.record(
                Severity::Deny,
                "field-crypto-ephemeral-key",
                "access-key secrets are sealed with a generated per-process key: set FIELD_ENCRYPTION_KEYS",
            );
        }
        if self.window > MAX_PRODUCTION_WINDOW {
            posture.record(
                Severity::Deny,
                "aksk-window-too-long",
                format!(
                    "the signing window is {} s each way; production allows at most {} s",
                    self.window.as_secs(),
                    MAX_PRODUCTION_WINDOW.as_secs()
                ),
            );
        }
        if self.window.is_zero() {
            posture.record(
                Severity::Deny,
                "aksk-window-zero",
                "the signing window is zero",
            );
        }
        let valid_part = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !valid_part(&self.service) || !valid_part(&self.region) {
            posture.record(
                Severity::Deny,
                "aksk-scope-invalid",
                "service and region are 1 to 64 characters of A-Z, a-z, 0-9, '-' and '_'",
            );
        }
        if !self.unsigned_prefixes.is_empty() {
            posture.record(
                Severity::Warn,
                "aksk-unsigned-payload-routes",
                format!(
                    "UNSIGNED-PAYLOAD accepted under {:?}",
                    self.unsigned_prefixes
                ),
            );
        }
        if !self.streaming_prefixes.is_empty() {
            posture.record(
                Severity::Info,
                "aksk-streaming-payload-routes",
                format!(
                    "signed aws-chunked payloads accepted under {:?}",
                    self.streaming_prefixes
                ),
            );
        }
        if self.allowed_hosts.is_empty() {
            posture.record(
                Severity::Warn,
                "aksk-any-host",
                "signed requests are accepted for any host: set allowed_hosts",
            );
        }
        if self.max_body == 0 {
            posture.record(
                Severity::Warn,
                "aksk-no-body",
                "the body limit is zero: every body is refused",
            );
        }
        let findings = posture.finish()?;
        Ok(Verifier {
            inner: Arc::new(Inner {
                profile: self.profile,
                findings,
                // The scope after its date, for the common Authorization layout; only when
                // region and service hold no separator the general parser splits at.
                scope_tail: (!self.region.contains(['/', ','])
                    && !self.service.contains(['/', ',']))
                .then(|| format!("/{}/{}/aws4_request", self.region, self.service).into_bytes()),
                service: self.service,
                region: self.region,
                window: self.window,
                nonce_header: self.nonce_header,
                max_body: self.max_body,
                max_unsigned_body: self.max_unsigned_body.unwrap_or(self.max_body as u64),
                unsigned_prefixes: self.unsigned_prefixes,
                streaming_prefixes: self.streaming_prefixes,
                allowed_hosts: self.allowed_hosts,
                options: self.options,
                issuer: self.issuer,
                surface: self.surface,
                cipher,
                clock,
                cache: RwLock::new(Cache::default()),
            }),
        })
    }
}

/// Verifies SigV4-signed requests against Palisade's policy.
///
/// The verifier does the cheap checks ([`Verifier::precheck`]), then, with the credential and
/// the body hash, the signature ([`Verifier::verify_signature`]). The layer
/// ([`crate::AccessKeyLayer`]) adds the stores, the body and the nonce.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    service: String,
    region: String,
    scope_tail: Option<Vec<u8>>,
    window: Duration,
    nonce_header: HeaderName,
    max_body: usize,
    max_unsigned_body: u64,
    unsigned_prefixes: Vec<String>,
    streaming_prefixes: Vec<String>,
    allowed_hosts: Vec<String>,
    options: CanonicalOptions,
    issuer: String,
    surface: Surface,
    cipher: FieldCipher,
    clock: SharedClock,
    cache: RwLock<Cache>,
    profile: Profile,
    findings: Vec<palisade_core::Finding>,
}

impl Inner {
    fn body_limit(&self, payload: &Payload) -> u64 {
        match *payload {
            Payload::Hash(_) => self.max_body as u64,
            Payload::Streaming(decoded) => crate::streaming::max_encoded_len(decoded),
            Payload::Unsigned => self.max_unsigned_body,
        }
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("service", &self.inner.service)
            .field("region", &self.inner.region)
            .field("window", &self.inner.window)
            .field("nonce_header", &self.inner.nonce_header)
            .field("max_body", &self.inner.max_body)
            .finish_non_exhaustive()
    }
}

/// One header's values as far as the policy cares: the first, and whether there were more.
#[derive(Clone, Copy, Default)]
struct Slot<'a> {
    first: Option<&'a [u8]>,
    many: bool,
}

impl<'a> Slot<'a> {
    fn add(&mut self, value: &'a [u8]) {
        if self.first.is_some() {
            self.many = true;
        } else {
            self.first = Some(value);
        }
    }

    /// Exactly one value, or `missing` / `many`.
    fn single(self, missing: Malformed, many: Malformed) -> Result<&'a [u8], Malformed> {
        match (self.first, self.many) {
            (None, _) => Err(missing),
            (Some(_), true) => Err(many),
            (Some(v), false) => Ok(v),
        }
    }
}

/// The headers the policy reads, found in one pass over the map (no per-name hashing).
#[derive(Default)]
struct Found<'a> {
    authorization: Slot<'a>,
    host: Slot<'a>,
    amz_date: Slot<'a>,
    nonce: Slot<'a>,
    content_sha256: Slot<'a>,
    content_type: Slot<'a>,
    content_length: Slot<'a>,
    decoded_length: Slot<'a>,
    date: bool,
}

impl<'a> Found<'a> {
    fn scan(headers: &'a http::HeaderMap, nonce_name: &HeaderName) -> Self {
        let mut found = Self::default();
        let nonce_name = nonce_name.as_str();
        for (name, value) in headers {
            let value = value.as_bytes();
            let name = name.as_str();
            // Dispatch on the length first: one compare for most names.
            let slot = match (name.len(), name) {
                (13, "authorization") => &mut found.authorization,
                (4, "host") => &mut found.host,
                (12, "content-type") => &mut found.content_type,
                (14, "content-length") => &mut found.content_length,
                (4, "date") => {
                    found.date = true;
                    continue;
                }
                (10, "x-amz-date") => &mut found.amz_date,
                (20, "x-amz-content-sha256") => &mut found.content_sha256,
                (28, "x-amz-decoded-content-length") => &mut found.decoded_length,
                _ if name == nonce_name => &mut found.nonce,
                _ => continue,
            };
            slot.add(value);
        }
        found
    }
}

/// What [`parse_authorization`] answers: key id, scope, signed-header list, signature.
pub type AuthorizationParts<'a> = (&'a [u8], &'a [u8], &'a [u8], [u8; 32]);

/// Parses `AWS4-HMAC-SHA256 Credential=<id>/<scope>, SignedHeaders=<list>, Signature=<hex>`.
/// Each component exactly once, in any order; nothing else.
///
/// Answers the key id, the scope and the signed-header list as bytes (the key id was checked
/// to be alphanumeric; the other two are checked by [`Verifier::precheck`]) and the decoded
/// signature.
pub fn parse_authorization(value: &[u8]) -> Result<AuthorizationParts<'_>, Malformed> {
    const PREFIX: &[u8] = b"AWS4-HMAC-SHA256 ";
    if value.len() > 4096 {
        return Err(Malformed::BadAuthorization);
    }
    let rest = value
        .strip_prefix(PREFIX)
        .ok_or(Malformed::BadAuthorization)?;
    let mut credential: Option<&[u8]> = None;
    let mut signed: Option<&[u8]> = None;
    let mut signature: Option<&[u8]> = None;
    let mut at = 0;
    loop {
        while rest.get(at) == Some(&b' ') {
            at += 1;
        }
        let end = canonical::find_byte(b',', &rest[at..]).map_or(rest.len(), |p| at + p);
        let part = &rest[at..end];
        let (slot, text) = if let Some(v) = part.strip_prefix(b"Credential=") {
            (&mut credential, v)
        } else if let Some(v) = part.strip_prefix(b"SignedHeaders=") {
            (&mut signed, v)
        } else if let Some(v) = part.strip_prefix(b"Signature=") {
            (&mut signature, v)
        } else {
            return Err(Malformed::BadAuthorization);
        };
        if slot.replace(text).is_some() {
            return Err(Malformed::BadAuthorization);
        }
        if end == rest.len() {
            break;
        }
        at = end + 1;
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return Err(Malformed::BadAuthorization);
    };
    let slash = canonical::find_byte(b'/', credential).ok_or(Malformed::BadScope)?;
    let (key_id, scope) = (&credential[..slash], &credential[slash + 1..]);
    if scope.iter().filter(|&&b| b == b'/').count() != 3 || !scope.ends_with(b"/aws4_request") {
        return Err(Malformed::BadScope);
    }
    if key_id.is_empty()
        || key_id.len() > MAX_KEY_ID_LEN
        || !canonical::swar::all_in(key_id, canonical::swar::ALNUM)
    {
        return Err(Malformed::BadAuthorization);
    }
    let sig = canonical::decode_hex32(signature).ok_or(Malformed::BadAuthorization)?;
    Ok((key_id, scope, signed, sig))
}

/// The layout every common signer writes,
/// `AWS4-HMAC-SHA256 Credential=<id>/<yyyymmdd><scope_tail>, SignedHeaders=<list>,
/// Signature=<64 hex>` (with `,` or `, ` between components), parsed without searching for
/// separators: the signature sits at a fixed distance from the end and the scope after the key
/// id is known but for its date. Answers `None` for any other text, which then goes to
/// [`parse_authorization`]; when it answers, that parser answers the same (the list holds no
/// `,`, the key id no `/` or `,`, the date is digits, and `scope_tail` has no `,` and exactly
/// three `/`, ending in `/aws4_request`).
fn parse_common_layout<'a>(value: &'a [u8], scope_tail: &[u8]) -> Option<AuthorizationParts<'a>> {
    const PREFIX: &[u8] = b"AWS4-HMAC-SHA256 Credential=";
    const SIGNATURE: &[u8] = b"Signature=";
    const SIGNED: &[u8] = b"SignedHeaders=";
    if value.len() > 4096 {
        return None;
    }
    let rest = value.strip_prefix(PREFIX)?;
    let (head, signature) = rest.split_at_checked(rest.len().checked_sub(64)?)?;
    let head = head.strip_suffix(SIGNATURE)?;
    let head = head
        .strip_suffix(b", ")
        .or_else(|| head.strip_suffix(b","))?;
    let slash = canonical::find_byte(b'/', head.get(..=MAX_KEY_ID_LEN).unwrap_or(head))?;
    let (key_id, after) = head.split_at(slash);
    let scope_len = 1 + 8 + scope_tail.len();
    let (scope, after) = after.split_at_checked(scope_len)?;
    let scope = &scope[1..];
    let (date, tail) = scope.split_at(8);
    if tail != scope_tail || !date.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let list = after
        .strip_prefix(b", ")
        .or_else(|| after.strip_prefix(b","))?
        .strip_prefix(SIGNED)?;
    if key_id.is_empty()
        || !canonical::swar::all_in(key_id, canonical::swar::ALNUM)
        || !signed_list_alphabet(list)
    {
        return None;
    }
    let signature = canonical::decode_hex32(signature)?;
    Some((key_id, scope, list, signature))
}

/// Whether a signed-header list holds only lowercase token characters and `;`: the common
/// alphabet eight bytes at a time, the table for the rest.
fn signed_list_alphabet(list: &[u8]) -> bool {
    canonical::swar::all_in(list, canonical::swar::COMMON_LIST)
        || canonical::class::all(list, canonical::class::LIST)
}

/// Parses `YYYYMMDDTHHMMSSZ` to unix seconds.
pub fn parse_amz_date(value: &[u8]) -> Option<u64> {
    use canonical::swar;
    // Two words: `YYYYMMDD` and `THHMMSSZ`, each checked and converted eight bytes at a time.
    let value: &[u8; 16] = value.try_into().ok()?;
    let (date, time) = value.as_chunks::<8>().0.split_first()?;
    let date = u64::from_le_bytes(*date);
    let time = u64::from_le_bytes(*time.first()?);
    if time & 0xff != u64::from(b'T') || time >> 56 != u64::from(b'Z') {
        return None;
    }
    // `T` and `Z` read as `0` so that the whole word is checked as digits.
    let time = (time & 0x00ff_ffff_ffff_ff00) | 0x3000_0000_0000_0030;
    if !swar::all_digits(date) || !swar::all_digits(time) {
        return None;
    }
    // Digit values, then each 16-bit lane as a two-digit number (its first digit in the low
    // byte: little-endian).
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    let pairs = |digits: u64| {
        (digits & 0x00ff_00ff_00ff_00ff) * 10 + ((digits >> 8) & 0x00ff_00ff_00ff_00ff)
    };
    let lane = |w: u64, i: u32| (w >> (16 * i)) & 0xffff;
    let date = pairs(date - ZEROS);
    let time = pairs((time - ZEROS) >> 8);
    let (y, m, d) = (
        lane(date, 0) * 100 + lane(date, 1),
        lane(date, 2),
        lane(date, 3),
    );
    let (hh, mm, ss) = (lane(time, 0), lane(time, 1), lane(time, 2));
    let days_in_month = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => return None,
    };
    if y < 1970 || d == 0 || d > days_in_month || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm), for years from 1970.
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Formats unix seconds as `YYYYMMDDTHHMMSSZ`.
pub fn format_amz_date(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Whether `path` is `prefix` or under it, by whole segments.
fn under_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

fn nonce_is_strong(nonce: &[u8]) -> bool {
    let (charset, all_hex) = canonical::swar::nonce_classes(nonce);
    // At least 128 bits whatever the encoding: 32 hex digits, or 22 base64url characters.
    let min = if all_hex { 32 } else { 22 };
    charset && nonce.len() >= min && nonce.len() <= MAX_NONCE_LEN
}

/// Writes the canonical headers following the precheck's plan: the values it already read and
/// checked are written as they are, the rest are read from the map.
fn write_planned_headers(
    out: &mut Vec<u8>,
    parts: &Parts,
    check: &Precheck<'_>,
) -> Result<(), CanonicalError> {
    let plan = &check.plan;
    let mut start = 0;
    for (&end, &source) in plan.ends.iter().zip(&plan.sources).take(plan.len.into()) {
        let end = usize::from(end);
        let name = &check.signed_headers[start..end];
        start = end + 1;
        out.extend_from_slice(name);
        out.push(b':');
        match source {
            Source::AmzDate => out.extend_from_slice(check.amz_date),
            Source::Nonce => out.extend_from_slice(check.nonce),
            Source::ContentSha256 => out.extend_from_slice(check.content_sha256),
            Source::Host => {
                let host = check
                    .host
                    .or_else(|| parts.uri.authority().map(|a| a.as_str().as_bytes()))
                    .ok_or(CanonicalError::MissingSignedHeader)?;
                canonical::write_trimmed(out, host);
            }
            Source::ContentType => {
                let value = check
                    .content_type
                    .ok_or(CanonicalError::MissingSignedHeader)?;
                canonical::write_trimmed(out, value);
            }
            Source::Map => {
                // The list's alphabet was checked: ASCII.
                let name =
                    std::str::from_utf8(name).map_err(|_| CanonicalError::BadSignedHeaders)?;
                let mut values = parts.headers.get_all(name).iter();
                let first = values.next().ok_or(CanonicalError::MissingSignedHeader)?;
                canonical::write_trimmed(out, first.as_bytes());
                for value in values {
                    out.push(b',');
                    canonical::write_trimmed(out, value.as_bytes());
                }
            }
        }
        out.push(b'\n');
    }
    Ok(())
}

/// A decimal length: 1 to 19 ASCII digits.
fn parse_length(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 {
        return None;
    }
    text.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Verifier {
    /// The non-blocking findings recorded while the verifier was built (for example
    /// `aksk-any-host`).
    pub fn findings(&self) -> &[palisade_core::Finding] {
        &self.inner.findings
    }

    /// The profile the verifier was checked under when it was built.
    pub fn profile(&self) -> Profile {
        self.inner.profile
    }

    /// A builder for credential scopes `<date>/<region>/<service>/aws4_request`.
    pub fn builder(service: impl Into<String>, region: impl Into<String>) -> VerifierBuilder {
        VerifierBuilder {
            service: service.into(),
            region: region.into(),
            window: DEFAULT_WINDOW,
            nonce_header: X_PALISADE_NONCE,
            max_body: DEFAULT_MAX_BODY,
            max_unsigned_body: None,
            unsigned_prefixes: Vec::new(),
            streaming_prefixes: Vec::new(),
            allowed_hosts: Vec::new(),
            options: CanonicalOptions::default(),
            issuer: "palisade-aksk".to_owned(),
            surface: Surface::API,
            profile: Profile::Production,
        }
    }

    /// The body limit.
    pub fn max_body(&self) -> usize {
        self.inner.max_body
    }

    /// How long a nonce must be remembered: the whole window on both sides, plus a margin for
    /// clock differences between replicas sharing the nonce store.
    pub fn nonce_ttl(&self) -> Duration {
        self.inner.window * 2 + NONCE_TTL_MARGIN
    }

    /// The largest unsigned body streamed on opted-in routes.
    pub fn max_unsigned_body(&self) -> u64 {
        self.inner.max_unsigned_body
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// The cheap checks, before any hashing: header shape and count, algorithm, scope, signed
    /// headers (host, date, nonce and body hash must be signed), nonce strength, date and
    /// window, body-hash form and whether unsigned payloads are allowed here, declared length.
    pub fn precheck<'a>(&self, parts: &'a Parts) -> Result<Precheck<'a>, VerifyError> {
        let inner = &*self.inner;
        let found = Found::scan(&parts.headers, &inner.nonce_header);
        let authorization = found.authorization.single(
            Malformed::MissingAuthorization,
            Malformed::DuplicateAuthorization,
        )?;
        let common = inner
            .scope_tail
            .as_deref()
            .and_then(|tail| parse_common_layout(authorization, tail));
        // The common layout checked the list's alphabet and the scope's region and service.
        let list_checked = common.is_some();
        let (key_id, scope, signed, signature) = match common {
            Some(parts) => parts,
            None => parse_authorization(authorization)?,
        };
        // The list's alphabet in one branch-free pass, then one split: non-empty names,
        // strictly ascending, at most MAX_SIGNED_HEADERS, and the names that must be in it. Each
        // name's value source is noted so the canonical request needs no second lookup.
        if !(list_checked || signed_list_alphabet(signed)) || signed.len() > u16::MAX.into() {
            return Err(Malformed::Canonical(CanonicalError::BadSignedHeaders).into());
        }
        let nonce_name = inner.nonce_header.as_str().as_bytes();
        let content_type_single = !found.content_type.many;
        let mut plan = Plan {
            ends: [0; canonical::MAX_SIGNED_HEADERS],
            sources: [Source::Map; canonical::MAX_SIGNED_HEADERS],
            len: 0,
        };
        let mut seen = [false; 4];
        let mut content_type_signed = false;
        let mut decoded_length_signed = false;
        let mut previous: &[u8] = &[];
        let mut previous_key = 0;
        let mut separators = canonical::Positions::new(signed, b';');
        let mut start = 0;
        for i in 0..=canonical::MAX_SIGNED_HEADERS {
            let end = separators.next().unwrap_or(signed.len());
            let name = &signed[start..end];
            // Strictly ascending: by the first eight bytes, and by the whole names only when
            // those are equal.
            let key = canonical::swar::order_key(name);
            let ascending =
                i == 0 || previous_key < key || (previous_key == key && previous < name);
            if name.is_empty() || i == canonical::MAX_SIGNED_HEADERS || !ascending {
                return Err(Malformed::Canonical(CanonicalError::BadSignedHeaders).into());
            }
            previous_key = key;
            let source = match name {
                b"host" => {
                    seen[0] = true;
                    Source::Host
                }
                b"content-type" => {
                    content_type_signed = true;
                    if content_type_single {
                        Source::ContentType
                    } else {
                        Source::Map
                    }
                }
                b"x-amz-date" => {
                    seen[1] = true;
                    Source::AmzDate
                }
                b"x-amz-content-sha256" => {
                    seen[2] = true;
                    Source::ContentSha256
                }
                b"x-amz-decoded-content-length" => {
                    decoded_length_signed = true;
                    Source::Map
                }
                n if n == nonce_name => {
                    seen[3] = true;
                    Source::Nonce
                }
                b"date" if found.date => {
                    // Only x-amz-date carries the time; a signed Date could disagree with it.
                    return Err(Malformed::Date.into());
                }
                _ => Source::Map,
            };
            // Both fit: the list is at most u16::MAX long and i < MAX_SIGNED_HEADERS.
            plan.ends[i] = end as u16;
            plan.sources[i] = source;
            plan.len = (i + 1) as u8;
            previous = name;
            if end == signed.len() {
                break;
            }
            start = end + 1;
        }
        for (present, label) in
            seen.into_iter()
                .zip(["host", "x-amz-date", "x-amz-content-sha256", "nonce"])
        {
            if !present {
                return Err(Malformed::Unsigned(label).into());
            }
        }
        // A body's media type decides how it is parsed: when sent, it is signed.
        let content_type = found.content_type.first;
        if !content_type_signed && content_type.is_some() {
            return Err(Malformed::Unsigned("content-type").into());
        }
        // The scope's shape was checked by the parser: date/region/service/aws4_request. The
        // common-layout parser also matched region and service.
        let date = if list_checked {
            &scope[..8]
        } else {
            let mut slashes = canonical::Positions::new(scope, b'/');
            let (first, second, third) = (
                slashes.next().unwrap_or_default(),
                slashes.next().unwrap_or_default(),
                slashes.next().unwrap_or_default(),
            );
            let date = &scope[..first];
            let region = scope.get(first + 1..second).unwrap_or_default();
            let service = scope.get(second + 1..third).unwrap_or_default();
            if region != inner.region.as_bytes()
                || service != inner.service.as_bytes()
                || date.len() != 8
            {
                return Err(Malformed::BadScope.into());
            }
            date
        };
        let host = found.host.first;
        if found.host.many {
            return Err(Malformed::DuplicateHost.into());
        }
        if !inner.allowed_hosts.is_empty() {
            // The signed host: the Host header, else the URI authority (HTTP/2).
            let host = host.or_else(|| parts.uri.authority().map(|a| a.as_str().as_bytes()));
            let allowed = host.is_some_and(|h| {
                inner
                    .allowed_hosts
                    .iter()
                    .any(|a| a.as_bytes().eq_ignore_ascii_case(h))
            });
            if !allowed {
                return Err(Malformed::Host.into());
            }
        }
        let amz_date = found.amz_date.single(Malformed::Date, Malformed::Date)?;
        let timestamp = parse_amz_date(amz_date).ok_or(Malformed::BadDate)?;
        if amz_date[..8] != *date {
            return Err(Malformed::ScopeDate.into());
        }
        let now = unix(inner.clock.now());
        if timestamp.abs_diff(now) > inner.window.as_secs() {
            return Err(VerifyError::Skew);
        }
        let nonce = found.nonce.single(Malformed::Nonce, Malformed::Nonce)?;
        if !nonce_is_strong(nonce) {
            return Err(Malformed::Nonce.into());
        }
        let content = found
            .content_sha256
            .single(Malformed::ContentHash, Malformed::ContentHash)?;
        let payload = if content == UNSIGNED_PAYLOAD.as_bytes() {
            let path = parts.uri.path();
            if !inner
                .unsigned_prefixes
                .iter()
                .any(|p| under_prefix(path, p))
            {
                return Err(VerifyError::PayloadNotAllowed);
            }
            Payload::Unsigned
        } else if content == crate::streaming::STREAMING_PAYLOAD.as_bytes() {
            let path = parts.uri.path();
            if !inner
                .streaming_prefixes
                .iter()
                .any(|p| under_prefix(path, p))
            {
                return Err(VerifyError::PayloadNotAllowed);
            }
            // The decoded length bounds the body and ends the stream: it must be signed.
            if !decoded_length_signed {
                return Err(Malformed::Unsigned("x-amz-decoded-content-length").into());
            }
            let decoded = found
                .decoded_length
                .single(Malformed::DecodedLength, Malformed::DecodedLength)?;
            let decoded = parse_length(decoded).ok_or(Malformed::DecodedLength)?;
            if decoded > inner.max_body as u64 {
                return Err(VerifyError::BodyTooLarge);
            }
            Payload::Streaming(decoded)
        } else if content.starts_with(b"STREAMING-") {
            // Trailers and unsigned streaming are never accepted.
            return Err(VerifyError::PayloadNotAllowed);
        } else {
            Payload::Hash(canonical::decode_hex32(content).ok_or(Malformed::ContentHash)?)
        };
        if let Some(length) = found.content_length.first {
            let length = parse_length(length).ok_or(VerifyError::BodyTooLarge)?;
            if length > inner.body_limit(&payload) {
                return Err(VerifyError::BodyTooLarge);
            }
        }
        if !canonical::path_is_unambiguous(parts.uri.path().as_bytes(), inner.options) {
            return Err(Malformed::Path.into());
        }
        Ok(Precheck {
            // Checked alphanumeric by the parser; the nonce's alphabet was checked above.
            key_id,
            scope,
            amz_date,
            signed_headers: signed,
            plan,
            signature,
            nonce,
            payload,
            now,
            host,
            content_type: content_type.filter(|_| content_type_single),
            content_sha256: content,
        })
    }

    /// Checks the signature against `record`'s valid secrets, in constant time, over the
    /// *claimed* body hash (`x-amz-content-sha256` is signed). Runs before the body is read, so
    /// a caller without the secret never gets a body buffered; [`Verifier::check_body`] then
    /// compares the body actually received. Answers the secret version that verified.
    pub fn verify_signature(
        &self,
        parts: &Parts,
        check: &Precheck<'_>,
        record: &CredentialRecord,
    ) -> Result<u32, VerifyError> {
        let inner = &*self.inner;
        let now = check.now;
        if record.key_id.as_bytes() != check.key_id {
            return Err(VerifyError::UnknownKey);
        }
        if record.status != KeyStatus::Active {
            return Err(VerifyError::DisabledKey);
        }
        if record.expires_at.is_some_and(|at| now >= at) {
            return Err(VerifyError::ExpiredKey);
        }
        let payload: &[u8] = match &check.payload {
            // The header as sent: decode_hex32 accepted only 64 lowercase hex digits.
            // The header as sent: decode_hex32 accepted only 64 lowercase hex digits, and the
            // streaming value was compared exactly.
            Payload::Hash(_) | Payload::Streaming(_) => check.content_sha256,
            Payload::Unsigned => UNSIGNED_PAYLOAD.as_bytes(),
        };
        // Checked to be eight digits by the precheck.
        let date = std::str::from_utf8(&check.amz_date[..8]).map_err(|_| Malformed::BadDate)?;
        BUFFERS.with(|buffers| {
            let mut buffers = buffers.borrow_mut();
            let (creq, sts) = &mut *buffers;
            creq.clear();
            sts.clear();
            canonical::write_request_head(
                creq,
                parts.method.as_str(),
                parts.uri.path().as_bytes(),
                parts.uri.query().unwrap_or("").as_bytes(),
                // The precheck refused every path normalization would change: skip it here.
                CanonicalOptions {
                    path_normalization: canonical::PathNormalization::Disabled,
                    ..inner.options
                },
            )
            .map_err(Malformed::from)?;
            write_planned_headers(creq, parts, check).map_err(Malformed::from)?;
            canonical::write_request_tail(creq, check.signed_headers, payload);
            canonical::write_string_to_sign(sts, check.amz_date, check.scope, creq);
            let mut matched = None;
            let mut any_valid = false;
            for secret in &record.secrets {
                if secret.not_after.is_some_and(|at| now >= at) {
                    continue;
                }
                any_valid = true;
                let expected = self.sign(&record.key_id, secret, date, sts)?;
                // Every valid secret is computed and compared: no early exit on a match.
                if canonical::ct_eq32(&expected, &check.signature) {
                    matched = Some(secret.version);
                }
            }
            if !any_valid {
                return Err(VerifyError::ExpiredKey);
            }
            matched.ok_or(VerifyError::BadSignature)
        })
    }

    /// The identity a request signed with `record`'s key acts as: the key's subject, org, roles
    /// (client roles under [`ROLE_CLIENT`], never realm roles, so a key cannot pass for a human
    /// administrator) and scopes (client roles under [`SCOPE_CLIENT`]).
    pub fn identity(&self, record: &CredentialRecord) -> Identity {
        Identity::new(
            self.inner.issuer.clone(),
            record.subject.clone(),
            AuthMethod::AccessKey {
                key_id: record.key_id.clone(),
            },
            self.inner.surface.clone(),
        )
        .with_org(record.org.clone())
        .with_client_roles(ROLE_CLIENT, record.roles.iter().cloned())
        .with_client_roles(SCOPE_CLIENT, record.scopes.iter().cloned())
    }

    /// Compares the SHA-256 of the body as received with the signed claim, in constant time
    /// (nothing to compare for `UNSIGNED-PAYLOAD`).
    pub fn check_body(&self, check: &Precheck<'_>, actual: &[u8; 32]) -> Result<(), VerifyError> {
        match &check.payload {
            Payload::Hash(claimed) if canonical::ct_eq32(claimed, actual) => Ok(()),
            Payload::Hash(_) => Err(VerifyError::BadBodyHash),
            Payload::Unsigned => Ok(()),
            // A stream is checked by its chunk decoder, never by one hash.
            Payload::Streaming(_) => Err(VerifyError::BadBodyHash),
        }
    }

    /// The most body bytes a request that passed `check` may send: the body limit, the
    /// unsigned-body limit on an opted-in route, or the encoded size of a signed stream of the
    /// signed decoded length. Declared lengths, buffered bodies and streamed reads all use it.
    pub fn body_limit(&self, check: &Precheck<'_>) -> u64 {
        self.inner.body_limit(&check.payload)
    }

    /// Precheck, signature and body hash over a buffered body: everything but the stores.
    /// Answers the secret version that verified.
    pub fn verify_buffered(
        &self,
        parts: &Parts,
        body: &[u8],
        record: &CredentialRecord,
    ) -> Result<u32, VerifyError> {
        let check = self.precheck(parts)?;
        if body.len() as u64 > self.body_limit(&check) {
            return Err(VerifyError::BodyTooLarge);
        }
        let version = self.verify_signature(parts, &check, record)?;
        if check.streaming_length().is_some() {
            let mut decoder = self.chunk_decoder(&check, record, version)?;
            decoder.feed(body)?;
            decoder.finish()?;
            return Ok(version);
        }
        self.check_body(&check, &canonical::body_digest(body))?;
        Ok(version)
    }

    /// The decoder of a signed streaming body whose request signature verified with secret
    /// `version` of `record` ([`Verifier::verify_signature`]): its chunks are chained from that
    /// signature. Refused when the request is not streaming.
    pub fn chunk_decoder(
        &self,
        check: &Precheck<'_>,
        record: &CredentialRecord,
        version: u32,
    ) -> Result<crate::streaming::ChunkedDecoder, VerifyError> {
        let Payload::Streaming(length) = check.payload else {
            return Err(VerifyError::PayloadNotAllowed);
        };
        let secret = record
            .secrets
            .iter()
            .find(|s| s.version == version)
            .ok_or(VerifyError::BadSignature)?;
        // The date and scope were checked to be ASCII by the precheck.
        let amz_date = std::str::from_utf8(check.amz_date).map_err(|_| Malformed::BadDate)?;
        let scope = std::str::from_utf8(check.scope).map_err(|_| Malformed::BadScope)?;
        let key = self.signing_key(&record.key_id, secret, &amz_date[..8])?;
        Ok(crate::streaming::ChunkedDecoder::new(
            key,
            amz_date,
            scope,
            check.signature,
            length,
        ))
    }

    /// The signing key for (key, secret version, date) under this verifier's region and
    /// service, from the cache (no allocation on a hit) or opened, derived and cached.
    pub fn signing_key(
        &self,
        key_id: &str,
        secret: &StoredSecret,
        date: &str,
    ) -> Result<SigningKey, VerifyError> {
        self.with_signing_key(key_id, secret, date, SigningKey::clone)
    }

    /// The signature of `string_to_sign` with the signing key for (key, secret version, date),
    /// computed under the cache's read lock on a hit (the key is not copied out).
    fn sign(
        &self,
        key_id: &str,
        secret: &StoredSecret,
        date: &str,
        string_to_sign: &[u8],
    ) -> Result<[u8; 32], VerifyError> {
        self.with_signing_key(key_id, secret, date, |key| key.sign(string_to_sign))
    }

    fn with_signing_key<T>(
        &self,
        key_id: &str,
        secret: &StoredSecret,
        date: &str,
        use_key: impl FnOnce(&SigningKey) -> T,
    ) -> Result<T, VerifyError> {
        let sealed = secret.sealed.as_bytes();
        let mut cache_key = CacheKey {
            tag: [0; 16],
            date: [0; 8],
        };
        // A sealed secret ends with its 16-byte AEAD tag; a shorter one is corrupt.
        let Some(tag) = sealed.last_chunk::<16>() else {
            tracing::error!(
                key_id,
                "a stored access-key secret is too short to be sealed"
            );
            return Err(VerifyError::Unavailable(StoreError::new(
                "secret could not be opened",
                None,
            )));
        };
        cache_key.tag = *tag;
        if date.len() != 8 {
            return Err(Malformed::BadScope.into());
        }
        cache_key.date.copy_from_slice(date.as_bytes());
        if let Ok(cache) = self.inner.cache.read()
            && let Some(entry) = cache.get(&cache_key)
            && entry.version == secret.version
            && *entry.key_id == *key_id
            && *entry.sealed == *sealed
        {
            return Ok(use_key(&entry.key));
        }
        let plaintext = open_secret(&self.inner.cipher, key_id, secret).map_err(|e| {
            tracing::error!(error = %e, key_id, "an access-key secret could not be opened");
            VerifyError::Unavailable(StoreError::new("secret could not be opened", None))
        })?;
        let key = SigningKey::derive(&plaintext, date, &self.inner.region, &self.inner.service);
        let answer = use_key(&key);
        if let Ok(mut cache) = self.inner.cache.write() {
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(
                cache_key,
                CacheEntry {
                    key_id: key_id.into(),
                    version: secret.version,
                    sealed: sealed.into(),
                    key,
                },
            );
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_match_a_digit_loop() {
        fn reference(value: &[u8]) -> Option<(u64, u64, u64, u64, u64, u64)> {
            if value.len() != 16 || value[8] != b'T' || value[15] != b'Z' {
                return None;
            }
            let num = |r: std::ops::Range<usize>| -> Option<u64> {
                value[r].iter().try_fold(0u64, |acc, &b| {
                    b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
                })
            };
            Some((
                num(0..4)?,
                num(4..6)?,
                num(6..8)?,
                num(9..11)?,
                num(11..13)?,
                num(13..15)?,
            ))
        }
        // Every byte value at every position of a few dates: accepted exactly when the digit
        // loop reads the same fields and they form a valid time, and then as the same instant.
        for base in [
            b"20150830T123600Z",
            b"20240229T235959Z",
            b"19700101T000000Z",
        ] {
            for at in 0..16 {
                for b in 0..=255u8 {
                    let mut text = *base;
                    text[at] = b;
                    let got = parse_amz_date(&text);
                    match reference(&text) {
                        None => assert_eq!(got, None, "{:?}", String::from_utf8_lossy(&text)),
                        Some((y, m, d, hh, mm, ss)) => {
                            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
                            let days = [
                                31,
                                if leap { 29 } else { 28 },
                                31,
                                30,
                                31,
                                30,
                                31,
                                31,
                                30,
                                31,
                                30,
                                31,
                            ];
                            let valid = y >= 1970
                                && (1..=12).contains(&m)
                                && d >= 1
                                && d <= days[(m.clamp(1, 12) - 1) as usize]
                                && hh < 24
                                && mm < 60
                                && ss < 60;
                            assert_eq!(
                                got.is_some(),
                                valid,
                                "{:?}",
                                String::from_utf8_lossy(&text)
                            );
                            if let Some(unix) = got {
                                assert_eq!(format_amz_date(unix).as_bytes(), &text[..]);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn amz_dates() {
        assert_eq!(parse_amz_date(b"20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(format_amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(
            parse_amz_date(b"20240229T000000Z")
                .map(format_amz_date)
                .as_deref(),
            Some("20240229T000000Z")
        );
        for bad in [
            &b"20150830T123600"[..],
            b"20150830 123600Z",
            b"20150230T123600Z",
            b"20230229T000000Z",
            b"20151330T123600Z",
            b"20150830T243600Z",
            b"2015083aT123600Z",
            b"19690101T000000Z",
            b"",
        ] {
            assert_eq!(
                parse_amz_date(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn authorization_headers() {
        let good = b"AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/svc/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        let (id, scope, signed, _) = parse_authorization(good).unwrap();
        assert_eq!(
            (id, scope, signed),
            (
                &b"AKID"[..],
                &b"20150830/us-east-1/svc/aws4_request"[..],
                &b"host;x-amz-date"[..]
            )
        );
        let text = std::str::from_utf8(good).unwrap();
        for bad in [
            text.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1"),
            text.replace(", Signature", ", Signature=x, Signature"),
            text.replace("Signature=5f", "Signature=5F"),
            text.replace("Credential=AKID", "Credential=AK/ID"),
            text.replace("Credential=AKID", "Credential="),
            text.replace(", SignedHeaders=host;x-amz-date", ""),
            format!("{text}, Extra=1"),
            text.replace("fbf31", "fbf3"),
        ] {
            assert!(parse_authorization(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    /// The common-layout parser answers for the layout signers write, and whenever it answers,
    /// the general parser answers the same.
    #[test]
    fn common_layout_agrees_with_the_general_parser() {
        let tail = b"/us-east-1/svc/aws4_request";
        let good = b"AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/svc/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        assert_eq!(
            parse_common_layout(good, tail),
            parse_authorization(good).ok()
        );
        assert!(parse_common_layout(good, tail).is_some());
        let compact = String::from_utf8_lossy(good).replace(", ", ",");
        assert!(parse_common_layout(compact.as_bytes(), tail).is_some());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]
        #[test]
        fn common_layout_never_disagrees(
            key in proptest::prop_oneof!["[A-Za-z0-9]{1,64}", "[A-Za-z0-9/,]{0,70}"],
            date in proptest::prop_oneof!["[0-9]{8}", "[0-9/,a]{6,9}"],
            region in proptest::sample::select(vec!["us-east-1", "us-east-2", "us/east", ""]),
            sep1 in proptest::sample::select(vec![",", ", ", ",  ", " ,", ""]),
            list in proptest::prop_oneof!["[a-z;-]{0,24}", "[a-z;,= -]{0,24}"],
            sep2 in proptest::sample::select(vec![",", ", ", ",  ", " ,", ""]),
            sig in proptest::prop_oneof!["[0-9a-f]{64}", "[0-9a-fA-F,]{62,66}"],
            swap in proptest::bool::ANY,
        ) {
            let credential = format!("Credential={key}/{date}/{region}/svc/aws4_request");
            let signed = format!("SignedHeaders={list}");
            let (first, second) = if swap { (&signed, &credential) } else { (&credential, &signed) };
            let value = format!("AWS4-HMAC-SHA256 {first}{sep1}{second}{sep2}Signature={sig}");
            let common = parse_common_layout(value.as_bytes(), b"/us-east-1/svc/aws4_request");
            if let Some(parts) = common {
                proptest::prop_assert_eq!(Ok(parts), parse_authorization(value.as_bytes()));
            }
            // The layout every signer writes is always taken.
            let layout = key.bytes().all(|b| b.is_ascii_alphanumeric())
                && !key.is_empty()
                && date.len() == 8
                && date.bytes().all(|b| b.is_ascii_digit())
                && region == "us-east-1"
                && !swap
                && matches!(sep1, "," | ", ")
                && matches!(sep2, "," | ", ")
                && !list.contains([',', '=', ' '])
                && sig.len() == 64
                && sig.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if layout {
                proptest::prop_assert!(common.is_some());
            }
        }
    }

    #[test]
    fn nonce_strength() {
        assert!(nonce_is_strong(b"AAAAAAAAAAAAAAAAAAAAAg"));
        assert!(!nonce_is_strong(b"AAAAAAAAAAAAAAAAAAAAA"));
        assert!(nonce_is_strong(b"0123456789abcdef0123456789abcdef"));
        assert!(!nonce_is_strong(b"0123456789abcdef0123456789abcde"));
        assert!(!nonce_is_strong(b"AAAAAAAAAAAAAAAAAAAAAAAA=="));
        assert!(!nonce_is_strong(&[b'A'; 129]));
    }
}
