//! Single-use tokens: email verification, password reset, invitations.
//!
//! - Purpose-bound: a token is hashed together with its purpose, so a verification token is
//!   no reset token.
//! - 256 bits from the operating system's CSPRNG; stores keep only an HMAC-SHA256 under a
//!   [`KeyRing`] key.
//! - Expiry between 15 and 60 minutes, per purpose (default 30).
//! - Consumed atomically, once; expired ones are refused and removed by [`SingleUseTokens::purge`].
//! - Issuing a password-reset token revokes the subject's outstanding reset tokens; call
//!   [`SingleUseTokens::revoke_subject`] when a password changes.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use palisade_core::secret::{ExposeSecret, SecretString};
use palisade_core::{KeyRing, SharedClock, SystemClock};

use crate::store::{StoreError, TokenHash};

/// What a single-use token is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Purpose(String);

impl Purpose {
    /// Email address verification.
    pub fn email_verification() -> Self {
        Self("email-verification".into())
    }
    /// Password reset.
    pub fn password_reset() -> Self {
        Self("password-reset".into())
    }
    /// Invitation to an org.
    pub fn invitation() -> Self {
        Self("invitation".into())
    }
    /// The notice mailed to an address's owner when someone signs up with it: following it
    /// (consume under this purpose) can lead on to a reset. Issuing one revokes nothing.
    pub fn sign_up_notice() -> Self {
        Self("sign-up-notice".to_owned())
    }
    /// A purpose of your own: 1 to 32 characters of `a-z0-9-`.
    pub fn custom(name: &str) -> Option<Self> {
        let ok = !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        ok.then(|| Self(name.to_owned()))
    }
    /// The purpose name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where single-use tokens live. Every operation is atomic on its own.
pub trait SingleUseStore: Send + Sync + 'static {
    /// Stores a token hash for `subject`, expiring at `expires` (Unix seconds).
    fn insert(
        &self,
        hash: &TokenHash,
        purpose: &Purpose,
        subject: &str,
        expires: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Removes and returns the token if it exists for `purpose`: `Some((subject, expires))`.
    /// A token of another purpose is left alone.
    fn take(
        &self,
        hash: &TokenHash,
        purpose: &Purpose,
    ) -> impl Future<Output = Result<Option<(String, u64)>, StoreError>> + Send;
    /// Removes `subject`'s outstanding tokens of `purpose` (all purposes when `None`).
    fn revoke(
        &self,
        subject: &str,
        purpose: Option<&Purpose>,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;
    /// Removes tokens expired at `now`; returns how many (stores with native expiry may say 0).
    fn purge(&self, now: u64) -> impl Future<Output = Result<usize, StoreError>> + Send;
}

/// Why a single-use token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SingleUseError {
    /// Unknown, already used, revoked, or for another purpose.
    #[error("invalid or used token")]
    Invalid,
    /// Past its expiry (and now removed).
    #[error("token expired")]
    Expired,
    /// An expiry outside 15 to 60 minutes was configured.
    #[error("single-use token lifetimes must be between 15 and 60 minutes")]
    BadLifetime,
    /// The store is unreachable, or no key is active: fail closed.
    #[error("token store unavailable")]
    Unavailable,
}

impl From<StoreError> for SingleUseError {
    fn from(err: StoreError) -> Self {
        tracing::error!(target: "palisade::sessions", %err, "single-use token store failed");
        Self::Unavailable
    }
}

/// A freshly issued token (redacted in `Debug`).
pub struct SingleUseToken(SecretString);

impl SingleUseToken {
    /// The token text, to put in the email link.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for SingleUseToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SingleUseToken([REDACTED])")
    }
}

/// Issues and consumes single-use tokens over a store.
#[derive(Debug)]
pub struct SingleUseTokens<S> {
    store: S,
    ring: KeyRing,
    clock: SharedClock,
    lifetimes: HashMap<Purpose, Duration>,
}

const MIN_LIFETIME: Duration = Duration::from_secs(15 * 60);
const MAX_LIFETIME: Duration = Duration::from_secs(60 * 60);
const DEFAULT_LIFETIME: Duration = Duration::from_secs(30 * 60);

impl<S: SingleUseStore> SingleUseTokens<S> {
    /// Tokens in `store`, hashed with keys from `ring`, 30 minutes by default.
    pub fn new(store: S, ring: KeyRing) -> Self {
        Self {
            store,
            ring,
            clock: SystemClock::shared(),
            lifetimes: HashMap::new(),
        }
    }

    /// Uses `clock` (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the lifetime of `purpose` (15 to 60 minutes).
    pub fn lifetime(
        mut self,
        purpose: Purpose,
        lifetime: Duration,
    ) -> Result<Self, SingleUseError> {
        if !(MIN_LIFETIME..=MAX_LIFETIME).contains(&lifetime) {
            return Err(SingleUseError::BadLifetime);
        }
        self.lifetimes.insert(purpose, lifetime);
        Ok(self)
    }

    fn now(&self) -> u64 {
        self.clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn hash(key: &[u8], purpose: &Purpose, token: &str) -> TokenHash {
        let key = hmac::Key::new(hmac::HMAC_SHA256, key);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(purpose.as_str().as_bytes());
        ctx.update(&[0x1f]);
        ctx.update(token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        TokenHash(out)
    }

    /// Issues a token of `purpose` for `subject`. A new password-reset token revokes the
    /// subject's outstanding ones.
    pub async fn issue(
        &self,
        purpose: &Purpose,
        subject: &str,
    ) -> Result<SingleUseToken, SingleUseError> {
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).map_err(|_| SingleUseError::Unavailable)?;
        let token = URL_SAFE_NO_PAD.encode(secret);
        let key = self
            .ring
            .active(self.clock.now())
            .map_err(|_| SingleUseError::Unavailable)?;
        let hash = Self::hash(key.material().expose_secret(), purpose, &token);
        if *purpose == Purpose::password_reset() {
            self.store.revoke(subject, Some(purpose)).await?;
        }
        let lifetime = self
            .lifetimes
            .get(purpose)
            .copied()
            .unwrap_or(DEFAULT_LIFETIME);
        self.store
            .insert(
                &hash,
                purpose,
                subject,
                self.now().saturating_add(lifetime.as_secs()),
            )
            .await?;
        Ok(SingleUseToken(SecretString::from(token)))
    }

    /// Consumes a token of `purpose`, once; returns its subject.
    pub async fn consume(&self, purpose: &Purpose, token: &str) -> Result<String, SingleUseError> {
        if token.len() != 43
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(SingleUseError::Invalid);
        }
        let now = self.clock.now();
        for key in self.ring.keys().iter().filter(|k| k.is_valid_at(now)) {
            let hash = Self::hash(key.material().expose_secret(), purpose, token);
            if let Some((subject, expires)) = self.store.take(&hash, purpose).await? {
                return if self.now() >= expires {
                    Err(SingleUseError::Expired)
                } else {
                    Ok(subject)
                };
            }
        }
        Err(SingleUseError::Invalid)
    }

    /// Revokes every outstanding token of `subject` (call it when the password changes).
    pub async fn revoke_subject(&self, subject: &str) -> Result<usize, SingleUseError> {
        Ok(self.store.revoke(subject, None).await?)
    }

    /// Removes expired tokens; returns how many the store removed.
    pub async fn purge(&self) -> Result<usize, SingleUseError> {
        Ok(self.store.purge(self.now()).await?)
    }
}
