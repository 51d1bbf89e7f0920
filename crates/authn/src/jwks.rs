//! Verification keys from a JWKS document (pipeline step 4) and the per-issuer key cache.
//!
//! Only keys fit for verifying access tokens are kept: `use` absent or `sig`, `key_ops` absent
//! or containing `verify`, never symmetric (`oct`), RSA of 2048 to 8192 bits, EC P-256 / P-384,
//! Ed25519; an `alg`, when given, must fit the key type. The key decides the algorithm: a
//! token whose header `alg` differs from its key's is refused.
//!
//! # Cache behaviour
//!
//! - Reads are lock-free (an [`ArcSwap`] snapshot).
//! - One fetch at a time: concurrent misses wait for the fetch in flight instead of starting
//!   their own.
//! - An unknown `kid` triggers a refresh at most once per cooldown (default 30 s), so a flood of
//!   random kids costs at most one fetch per cooldown.
//! - Keys are refreshed in the background once older than the provider's `Cache-Control:
//!   max-age`, clamped to 1 minute .. 24 hours (default 5 minutes without a header).
//! - When the provider is down, the last good keys are served for a bounded time (default
//!   1 hour past their refresh time, so at most `max_refresh + max_stale` after the last
//!   successful fetch), then every request fails closed with 503 until a fetch succeeds; a
//!   request after each cooldown tries again, so service resumes within one cooldown of the
//!   provider's return.
//! - With discovery, the `jwks_uri` must be on the issuer's own origin.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use palisade_core::SharedClock;
use serde::Deserialize;

use crate::error::ConfigError;

/// Largest JWKS document read.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most keys kept from one JWKS.
pub const MAX_KEYS: usize = 64;

/// A key that verifies tokens with one algorithm.
#[derive(Clone)]
pub struct VerificationKey {
    pub(crate) alg: Algorithm,
    pub(crate) key: Arc<DecodingKey>,
    not_before: Option<SystemTime>,
    retire_after: Option<SystemTime>,
}

impl VerificationKey {
    pub(crate) fn new(alg: Algorithm, key: DecodingKey) -> Self {
        Self {
            alg,
            key: Arc::new(key),
            not_before: None,
            retire_after: None,
        }
    }

    /// Limits the key to a validity window (local key-ring keys).
    pub(crate) fn with_window(
        mut self,
        not_before: Option<SystemTime>,
        retire_after: Option<SystemTime>,
    ) -> Self {
        self.not_before = not_before;
        self.retire_after = retire_after;
        self
    }

    fn valid_at(&self, now: SystemTime) -> bool {
        self.not_before.is_none_or(|nb| nb <= now) && self.retire_after.is_none_or(|ra| now < ra)
    }
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Keys by `kid`.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: HashMap<String, VerificationKey>,
    skipped: usize,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    key_ops: Option<Vec<String>>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

impl KeySet {
    /// Parses a JWKS document, keeping only keys fit for verification (see the module docs).
    pub fn from_jwks(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(ConfigError::InvalidJwks(format!(
                "larger than {MAX_JWKS_BYTES} bytes"
            )));
        }
        let raw: RawJwks = serde_json::from_slice(bytes)
            .map_err(|_| ConfigError::InvalidJwks("not a JWKS document".into()))?;
        let mut set = KeySet::default();
        for value in raw.keys {
            if set.keys.len() >= MAX_KEYS {
                set.skipped += 1;
                continue;
            }
            let Ok(jwk) = serde_json::from_value::<RawJwk>(value) else {
                set.skipped += 1;
                continue;
            };
            match key_from_jwk(&jwk) {
                Some((kid, key)) if !set.keys.contains_key(&kid) => {
                    set.keys.insert(kid, key);
                }
                _ => set.skipped += 1,
            }
        }
        Ok(set)
    }

    /// The key named `kid`.
    pub fn get(&self, kid: &str) -> Option<&VerificationKey> {
        self.keys.get(kid)
    }

    pub(crate) fn insert(&mut self, kid: String, key: VerificationKey) {
        self.keys.insert(kid, key);
    }

    /// How many keys were kept.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key was kept.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys of the document were not fit for verification.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The kept key ids.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

fn b64_len(s: &str) -> Option<usize> {
    URL_SAFE_NO_PAD.decode(s).ok().map(|v| {
        let leading = v.iter().take_while(|b| **b == 0).count();
        v.len() - leading
    })
}

fn key_from_jwk(jwk: &RawJwk) -> Option<(String, VerificationKey)> {
    let kid = jwk
        .kid
        .clone()
        .filter(|k| !k.is_empty() && k.len() <= 256)?;
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    if jwk
        .key_ops
        .as_ref()
        .is_some_and(|ops| !ops.iter().any(|o| o == "verify"))
    {
        return None;
    }
    let alg_ok = |allowed: &[&str]| jwk.alg.as_deref().is_none_or(|a| allowed.contains(&a));
    let (alg, key) = match jwk.kty.as_str() {
        "RSA" => {
            let (n, e) = (jwk.n.as_deref()?, jwk.e.as_deref()?);
            let bytes = b64_len(n)?;
            if !(256..=1024).contains(&bytes) {
                return None; // under 2048 or over 8192 bits
            }
            let alg = match jwk.alg.as_deref() {
                None | Some("RS256") => Algorithm::RS256,
                Some("RS384") => Algorithm::RS384,
                Some("RS512") => Algorithm::RS512,
                Some("PS256") => Algorithm::PS256,
                Some("PS384") => Algorithm::PS384,
                Some("PS512") => Algorithm::PS512,
                _ => return None,
            };
            (alg, DecodingKey::from_rsa_components(n, e).ok()?)
        }
        "EC" => {
            let (x, y) = (jwk.x.as_deref()?, jwk.y.as_deref()?);
            let alg = match jwk.crv.as_deref() {
                Some("P-256") if alg_ok(&["ES256"]) => Algorithm::ES256,
                Some("P-384") if alg_ok(&["ES384"]) => Algorithm::ES384,
                _ => return None,
            };
            (alg, DecodingKey::from_ec_components(x, y).ok()?)
        }
        "OKP" => {
            if jwk.crv.as_deref() != Some("Ed25519") || !alg_ok(&["EdDSA", "Ed25519"]) {
                return None;
            }
            let x = jwk.x.as_deref()?;
            b64_len(x)?;
            (Algorithm::EdDSA, DecodingKey::from_ed_components(x).ok()?)
        }
        _ => return None,
    };
    Some((kid, VerificationKey::new(alg, key)))
}

/// Where an issuer's keys come from.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum KeySource {
    /// `<issuer>/.well-known/openid-configuration`, then its `jwks_uri`.
    Discovery,
    /// An explicit JWKS URL.
    JwksUrl(String),
    /// A fixed key set (tests, air-gapped deployments).
    Static(KeySet),
}

/// Cache tuning.
#[derive(Clone, Copy, Debug)]
pub struct CachePolicy {
    /// Least time between two fetches triggered by unknown kids.
    pub unknown_kid_cooldown: Duration,
    /// Refresh interval without `Cache-Control`.
    pub default_refresh: Duration,
    /// Bounds on the refresh interval taken from `Cache-Control: max-age`.
    pub min_refresh: Duration,
    /// Upper bound on the refresh interval.
    pub max_refresh: Duration,
    /// How long past their refresh time the last good keys are served while fetches fail.
    pub max_stale: Duration,
    /// Timeout of one fetch.
    pub fetch_timeout: Duration,
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            unknown_kid_cooldown: Duration::from_secs(30),
            default_refresh: Duration::from_secs(300),
            min_refresh: Duration::from_secs(60),
            max_refresh: Duration::from_secs(86_400),
            max_stale: Duration::from_secs(3600),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug)]
struct Snapshot {
    keys: KeySet,
    /// When these keys should be refreshed (unix nanos); `u64::MAX` for static keys.
    refresh_at: u64,
}

/// What a lookup found.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// The key, fresh enough.
    Found(VerificationKey),
    /// Not known; a refresh may be tried.
    Miss,
    /// Known keys are older than the stale bound: refresh or fail closed.
    Stale,
}

/// One issuer's keys.
#[derive(Debug)]
pub(crate) struct KeyCache {
    issuer: String,
    source: KeySource,
    http: reqwest::Client,
    policy: CachePolicy,
    clock: SharedClock,
    snapshot: ArcSwap<Snapshot>,
    fetch_lock: tokio::sync::Mutex<()>,
    last_miss_fetch: AtomicU64,
    last_success: AtomicU64,
    retry_after: AtomicU64,
    fetches: AtomicU64,
    /// Kids found missing right after a fetch: refused without asking for another fetch
    /// until the keys change. Bounded.
    negative: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Most kids remembered as missing.
const MAX_NEGATIVE: usize = 1024;

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn dur_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl KeyCache {
    pub(crate) fn new(
        issuer: String,
        source: KeySource,
        http: reqwest::Client,
        policy: CachePolicy,
        clock: SharedClock,
    ) -> Self {
        let snapshot = match &source {
            KeySource::Static(keys) => Snapshot {
                keys: keys.clone(),
                refresh_at: u64::MAX,
            },
            _ => Snapshot {
                keys: KeySet::default(),
                refresh_at: 0,
            },
        };
        Self {
            issuer,
            source,
            http,
            policy,
            clock,
            snapshot: ArcSwap::from_pointee(snapshot),
            fetch_lock: tokio::sync::Mutex::new(()),
            last_miss_fetch: AtomicU64::new(0),
            last_success: AtomicU64::new(0),
            retry_after: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            negative: std::sync::Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// How many fetches have completed, successfully or not (for tests and metrics).
    pub(crate) fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Lock-free lookup.
    pub(crate) fn lookup(&self, kid: &str) -> Lookup {
        let snap = self.snapshot.load();
        let now = nanos(self.clock.now());
        if snap.refresh_at != u64::MAX
            && now
                > snap
                    .refresh_at
                    .saturating_add(dur_nanos(self.policy.max_stale))
        {
            return Lookup::Stale;
        }
        match snap.keys.get(kid) {
            Some(key) if key.valid_at(self.clock.now()) => Lookup::Found(key.clone()),
            _ => Lookup::Miss,
        }
    }

    /// Whether the keys are due for a background refresh.
    pub(crate) fn refresh_due(&self) -> bool {
        let snap = self.snapshot.load();
        let now = nanos(self.clock.now());
        snap.refresh_at != u64::MAX
            && now >= snap.refresh_at
            && now >= self.retry_after.load(Ordering::Acquire)
    }

    /// After a failed background refresh, waits one cooldown before the next, so a
    /// recovering provider is not hammered.
    pub(crate) fn back_off(&self) {
        let at =
            nanos(self.clock.now()).saturating_add(dur_nanos(self.policy.unknown_kid_cooldown));
        self.retry_after.store(at, Ordering::Release);
    }

    /// Whether `kid` was missing from the keys fetched last.
    pub(crate) fn known_missing(&self, kid: &str) -> bool {
        self.negative
            .lock()
            .map(|n| n.contains(kid))
            .unwrap_or(false)
    }

    /// Remembers that `kid` is missing from the current keys.
    pub(crate) fn remember_missing(&self, kid: &str) {
        if let Ok(mut negative) = self.negative.lock()
            && negative.len() < MAX_NEGATIVE
        {
            negative.insert(kid.to_owned());
        }
    }

    /// Claims the right to fetch because of an unknown kid: at most once per cooldown.
    pub(crate) fn claim_miss_fetch(&self) -> bool {
        let now = nanos(self.clock.now());
        let last = self.last_miss_fetch.load(Ordering::Acquire);
        if last != 0 && now < last.saturating_add(dur_nanos(self.policy.unknown_kid_cooldown)) {
            return false;
        }
        self.last_miss_fetch
            .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Fetches the keys unless another fetch completed while waiting for the lock (then its
    /// result is used). Returns an error description on failure; the old keys stay.
    pub(crate) async fn refresh(&self, requested_at: u64) -> Result<(), String> {
        if matches!(self.source, KeySource::Static(_)) {
            return Ok(());
        }
        let _guard = self.fetch_lock.lock().await;
        if self.last_success.load(Ordering::Acquire) > requested_at {
            // A fetch that started after we asked has succeeded: its keys stand.
            return Ok(());
        }
        // The start time is what counts: a fetch that began before a key was published cannot
        // vouch for requests that asked after that.
        let started = nanos(self.clock.now());
        let fetched = self.fetch().await;
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match fetched {
            Ok((keys, max_age)) => {
                let (lo, hi) = (
                    self.policy.min_refresh.min(self.policy.max_refresh),
                    self.policy.max_refresh.max(self.policy.min_refresh),
                );
                let interval = max_age.unwrap_or(self.policy.default_refresh).clamp(lo, hi);
                let now = nanos(self.clock.now());
                tracing::info!(target: "palisade::authn", issuer = %self.issuer, keys = keys.len(), skipped = keys.skipped(), "JWKS refreshed");
                self.snapshot.store(Arc::new(Snapshot {
                    keys,
                    refresh_at: now.saturating_add(dur_nanos(interval)),
                }));
                self.last_success.store(started.max(1), Ordering::Release);
                if let Ok(mut negative) = self.negative.lock() {
                    negative.clear();
                }
                Ok(())
            }
            Err(err) => {
                tracing::error!(target: "palisade::authn", issuer = %self.issuer, %err, "JWKS fetch failed");
                Err(err)
            }
        }
    }

    /// The current time in the cache's clock, for `refresh`.
    pub(crate) fn now_nanos(&self) -> u64 {
        nanos(self.clock.now())
    }

    async fn fetch(&self) -> Result<(KeySet, Option<Duration>), String> {
        let url = match &self.source {
            KeySource::JwksUrl(url) => url.clone(),
            KeySource::Discovery => {
                let doc_url = format!(
                    "{}/.well-known/openid-configuration",
                    self.issuer.trim_end_matches('/')
                );
                let (body, _) = self.get(&doc_url).await?;
                #[derive(Deserialize)]
                struct Discovery {
                    issuer: String,
                    jwks_uri: String,
                }
                let doc: Discovery = serde_json::from_slice(&body)
                    .map_err(|_| "discovery document is malformed".to_owned())?;
                if doc.issuer != self.issuer {
                    return Err(format!("discovery names issuer {:?}", doc.issuer));
                }
                // The keys must come from the issuer's own origin: a discovery document that
                // points elsewhere (or at plain HTTP when the issuer is HTTPS) is refused.
                if origin(&doc.jwks_uri) != origin(&self.issuer) || origin(&doc.jwks_uri).is_none()
                {
                    return Err(format!(
                        "jwks_uri {:?} is not on the issuer's origin",
                        doc.jwks_uri
                    ));
                }
                doc.jwks_uri
            }
            KeySource::Static(keys) => return Ok((keys.clone(), None)),
        };
        let (body, max_age) = self.get(&url).await?;
        let keys = KeySet::from_jwks(&body).map_err(|e| e.to_string())?;
        if keys.is_empty() {
            return Err("JWKS has no usable signing key".into());
        }
        Ok((keys, max_age))
    }

    async fn get(&self, url: &str) -> Result<(Vec<u8>, Option<Duration>), String> {
        let response = self
            .http
            .get(url)
            .timeout(self.policy.fetch_timeout)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: status {}", response.status()));
        }
        let max_age = response
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_max_age);
        if response
            .content_length()
            .is_some_and(|l| l > MAX_JWKS_BYTES as u64)
        {
            return Err(format!("GET {url}: body too large"));
        }
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("GET {url}: body too large"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
    }
}

/// `scheme://host:port` of a URL, lowercased, with the default port made explicit.
fn origin(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    Some(format!("{scheme}://{host}:{port}"))
}

/// `max-age` from a `Cache-Control` value; `no-store`/`no-cache` mean "refresh soon".
fn parse_max_age(value: &str) -> Option<Duration> {
    let mut out = None;
    for directive in value.split(',') {
        let directive = directive.trim().to_ascii_lowercase();
        if directive == "no-store" || directive == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(secs) = directive.strip_prefix("max-age=") {
            out = secs
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // A 2048-bit RSA modulus (openssl genrsa), the P-256 key of RFC 7517 A.1 and the Ed25519
    // key of RFC 8037 A.2.
    pub(crate) const RSA_N: &str = "vLzDAbZUkHQHOKkkr5V-GROrfljWbf-Z89PYCwmWQKVHmbrC-ryv47BXQ_O20gki_5QPD9iwW-XxMknv-WQ_SmmoKnzyDB5Sk-R6hQX8fe6eWS0Xrd1iUNOUixCDDvVoWJOynGpPLdTx3wlNfDNMaZSWxW4EtN8E6RxZAOHzYBN5ogiGw1T75-K6w-IWwL8x6COzGQa_iholGU27_7mgvs-zyb-BvQWE6uXfpY3qI_jArkintHmO88ORFMRTay-O0M4VN50FQ5M4fa4PmyCluCtH895az5ZVN4iMZlfccpsDtGR3gCzYJty6V04LsDutO9V7RFWQXQ71K-mmcdQTAw";
    pub(crate) const RSA_E: &str = "AQAB";
    pub(crate) const EC_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    pub(crate) const EC_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    pub(crate) const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    #[test]
    fn filtering_table() {
        let short_n = URL_SAFE_NO_PAD.encode([0xffu8; 128]); // 1024 bits
        let doc = serde_json::json!({"keys": [
            {"kty":"RSA","kid":"rsa","use":"sig","alg":"RS256","n":RSA_N,"e":RSA_E},
            {"kty":"RSA","kid":"rsa-enc","use":"enc","alg":"RSA-OAEP","n":RSA_N,"e":RSA_E},
            {"kty":"RSA","kid":"rsa-short","n":short_n,"e":RSA_E},
            {"kty":"RSA","kid":"rsa-hs","alg":"HS256","n":RSA_N,"e":RSA_E},
            {"kty":"RSA","kid":"rsa-ops","key_ops":["encrypt"],"n":RSA_N,"e":RSA_E},
            {"kty":"oct","kid":"hmac","k":"c2VjcmV0"},
            {"kty":"EC","kid":"ec","crv":"P-256","x":EC_X,"y":EC_Y},
            {"kty":"EC","kid":"ec-wrong-alg","crv":"P-256","alg":"ES384","x":EC_X,"y":EC_Y},
            {"kty":"OKP","kid":"ed","crv":"Ed25519","x":ED_X},
            {"kty":"OKP","kid":"x25519","crv":"X25519","x":ED_X},
            {"kty":"RSA","n":RSA_N,"e":RSA_E},
            {"kty":"RSA","kid":"rsa","alg":"PS256","n":RSA_N,"e":RSA_E},
            "not an object"
        ]});
        let set = KeySet::from_jwks(doc.to_string().as_bytes()).unwrap();
        let mut kids: Vec<_> = set.kids().collect();
        kids.sort_unstable();
        assert_eq!(kids, ["ec", "ed", "rsa"]);
        assert_eq!(set.get("rsa").unwrap().alg, Algorithm::RS256);
        assert_eq!(set.get("ec").unwrap().alg, Algorithm::ES256);
        assert_eq!(set.get("ed").unwrap().alg, Algorithm::EdDSA);
        assert_eq!(set.skipped(), 10);
        assert!(KeySet::from_jwks(b"{}").is_err());
        assert!(KeySet::from_jwks(&vec![b' '; MAX_JWKS_BYTES + 1]).is_err());
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin("https://SSO.example.com/realms/a"),
            origin("https://sso.example.com:443/x")
        );
        assert_ne!(
            origin("https://sso.example.com/a"),
            origin("http://sso.example.com/a")
        );
        assert_ne!(
            origin("https://sso.example.com/a"),
            origin("https://evil.example/a")
        );
        assert_eq!(origin("not a url"), None);
    }

    #[test]
    fn max_age_parsing() {
        assert_eq!(
            parse_max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(parse_max_age("no-cache"), Some(Duration::ZERO));
        assert_eq!(parse_max_age("private"), None);
    }
}
