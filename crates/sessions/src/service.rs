//! [`RefreshSessions`]: issue, rotate and revoke refresh tokens over a store.

use std::time::{Duration, UNIX_EPOCH};

use aws_lc_rs::{aead, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use palisade_core::secret::ExposeSecret;
use palisade_core::{KeyRing, SharedClock, SystemClock};

use crate::store::{
    DeviceBinding, Family, FamilyId, Grace, RefreshStore, Rotation, StoreError, TokenHash,
};
use crate::token::{self, RefreshToken};

/// Lifetimes of a family.
#[derive(Clone, Copy, Debug)]
pub struct SessionPolicy {
    /// No refresh after this long since login (default 30 days).
    pub absolute_lifetime: Duration,
    /// No refresh after this long without one (default 7 days).
    pub idle_timeout: Duration,
    /// How long the same device may retry a refresh whose answer was lost and get the same
    /// successor (default off; at most one minute).
    pub grace: Option<Duration>,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            absolute_lifetime: Duration::from_secs(30 * 86_400),
            idle_timeout: Duration::from_secs(7 * 86_400),
            grace: None,
        }
    }
}

/// Why a refresh was refused. The client sees a generic 401 (or 503 for
/// [`SessionError::Unavailable`]); the reason is for logs and audit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Not a well-formed refresh token, or no such token.
    #[error("invalid refresh token")]
    InvalidToken,
    /// A consumed token was presented again: the family is now revoked.
    #[error("refresh token reused: family revoked")]
    Reused,
    /// The family was revoked (logout, reuse, or an administrator).
    #[error("session revoked")]
    Revoked,
    /// Past the absolute lifetime or the idle timeout.
    #[error("session expired")]
    Expired,
    /// Presented from another device than the family's.
    #[error("refresh from another device")]
    DeviceMismatch,
    /// The store could not be reached, or the ring has no active key: fail closed.
    #[error("session store unavailable")]
    Unavailable,
}

/// The health of the refresh store (`palisade_store_up{store="sessions"}`).
static STORE_HEALTH: palisade_core::StoreHealth = palisade_core::StoreHealth::new("sessions");

/// `result`, with a success recorded as store health (a failure is recorded by the
/// conversion into [`SessionError`]).
fn observed<T>(result: Result<T, StoreError>) -> Result<T, StoreError> {
    if result.is_ok() {
        STORE_HEALTH.ok();
    }
    result
}

impl From<StoreError> for SessionError {
    fn from(err: StoreError) -> Self {
        store_failed(&err);
        SessionError::Unavailable
    }
}

/// Logs and counts a failed store call.
fn store_failed(err: &StoreError) {
    tracing::error!(target: "palisade::sessions", %err, "session store failed");
    STORE_HEALTH.failed();
}

/// A successful refresh.
#[derive(Debug)]
pub struct Refreshed {
    /// The family (carry it in access tokens as `sid`).
    pub family: FamilyId,
    /// The user.
    pub user_id: String,
    /// The successor token; the presented one is spent.
    pub token: RefreshToken,
}

/// What happened when a spent refresh token came back: the family is revoked. Handed to the
/// reuse hook (for an audit record or an alert) and logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReuseEvent {
    /// The revoked family.
    pub family: FamilyId,
    /// Its user.
    pub user_id: String,
    /// The device that presented the spent token.
    pub device_id: String,
}

/// A reuse hook.
pub type ReuseHook = std::sync::Arc<dyn Fn(&ReuseEvent) + Send + Sync>;

/// Refresh-token families over a store.
pub struct RefreshSessions<S> {
    store: S,
    ring: KeyRing,
    clock: SharedClock,
    policy: SessionPolicy,
    on_reuse: Option<ReuseHook>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for RefreshSessions<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshSessions")
            .field("store", &self.store)
            .field("policy", &self.policy)
            .field("on_reuse", &self.on_reuse.as_ref().map(|_| "<fn>"))
            .finish_non_exhaustive()
    }
}

impl<S: RefreshStore> RefreshSessions<S> {
    /// Sessions in `store`, hashing tokens with keys from `ring`.
    pub fn new(store: S, ring: KeyRing) -> Self {
        Self {
            store,
            ring,
            clock: SystemClock::shared(),
            policy: SessionPolicy::default(),
            on_reuse: None,
        }
    }

    /// Calls `hook` whenever reuse revokes a family (write the audit record there).
    #[must_use]
    pub fn on_reuse(mut self, hook: ReuseHook) -> Self {
        self.on_reuse = Some(hook);
        self
    }

    /// Uses `clock` (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Uses `policy`.
    #[must_use]
    pub fn with_policy(mut self, policy: SessionPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    fn now(&self) -> u64 {
        self.clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    /// The token hashed under the active key (for a new token).
    fn hash_active(&self, token: &str) -> Result<TokenHash, SessionError> {
        let key = self
            .ring
            .active(self.clock.now())
            .map_err(|_| SessionError::Unavailable)?;
        Ok(mac(key.material().expose_secret(), token))
    }

    /// The token hashed under every key valid now (a token issued before a rotation still
    /// matches).
    fn hash_all(&self, token: &str) -> Vec<TokenHash> {
        let now = self.clock.now();
        self.ring
            .keys()
            .iter()
            .filter(|k| k.is_valid_at(now))
            .map(|k| mac(k.material().expose_secret(), token))
            .collect()
    }

    /// Starts a family for `user_id` on `device` (after a login) and returns its first token.
    pub async fn start(
        &self,
        user_id: &str,
        device: &DeviceBinding,
    ) -> Result<(FamilyId, RefreshToken), SessionError> {
        let id = FamilyId::generate().ok_or(SessionError::Unavailable)?;
        let token = RefreshToken::generate(&id).ok_or(SessionError::Unavailable)?;
        let now = self.now();
        let family = Family {
            id: id.clone(),
            user_id: user_id.to_owned(),
            device: device.clone(),
            absolute_expiry: now.saturating_add(self.policy.absolute_lifetime.as_secs()),
            idle_timeout: self.policy.idle_timeout.as_secs(),
            created_at: now,
        };
        observed(
            self.store
                .create(&family, &self.hash_active(token.expose())?)
                .await,
        )?;
        Ok((id, token))
    }

    /// Consumes `presented` and returns its successor.
    pub async fn refresh(
        &self,
        presented: &str,
        device: &DeviceBinding,
    ) -> Result<Refreshed, SessionError> {
        let family = token::parse(presented).ok_or(SessionError::InvalidToken)?;
        let successor = RefreshToken::generate(&family).ok_or(SessionError::Unavailable)?;
        let successor_hash = self.hash_active(successor.expose())?;
        let presented_hashes = self.hash_all(presented);
        let grace = match self.policy.grace {
            Some(window) => Some(Grace {
                sealed: self.seal(presented, successor.expose())?,
                until: self
                    .now()
                    .saturating_add(window.min(Duration::from_secs(60)).as_secs()),
            }),
            None => None,
        };
        match observed(
            self.store
                .rotate(
                    &family,
                    &presented_hashes,
                    &successor_hash,
                    device,
                    self.now(),
                    grace.as_ref(),
                )
                .await,
        )? {
            Rotation::Grace { user_id, sealed } => match self.open(presented, &sealed) {
                Some(token) => Ok(Refreshed {
                    family,
                    user_id,
                    token,
                }),
                None => Err(SessionError::InvalidToken),
            },
            Rotation::Rotated { user_id } => Ok(Refreshed {
                family,
                user_id,
                token: successor,
            }),
            Rotation::Reused { user_id } => {
                tracing::warn!(target: "palisade::sessions", family = family.as_str(), user = %user_id, "refresh token reuse: family revoked");
                if let Some(hook) = &self.on_reuse {
                    hook(&ReuseEvent {
                        family: family.clone(),
                        user_id,
                        device_id: device.device_id.clone(),
                    });
                }
                Err(SessionError::Reused)
            }
            Rotation::Revoked => Err(SessionError::Revoked),
            Rotation::Expired => Err(SessionError::Expired),
            Rotation::DeviceMismatch => Err(SessionError::DeviceMismatch),
            _ => Err(SessionError::InvalidToken),
        }
    }

    /// Logs out the family of `token`, whether the token is current or was spent already;
    /// `false` when the token is not one the family issued (a family id alone does not do).
    pub async fn logout(&self, token: &str) -> Result<bool, SessionError> {
        let family = token::parse(token).ok_or(SessionError::InvalidToken)?;
        Ok(observed(
            self.store
                .revoke_family(&family, &self.hash_all(token))
                .await,
        )?)
    }

    /// Logs `user_id` out everywhere; returns how many families were revoked.
    pub async fn logout_everywhere(&self, user_id: &str) -> Result<usize, SessionError> {
        Ok(observed(self.store.revoke_user(user_id).await)?)
    }

    /// Whether a family is revoked or unknown.
    pub async fn is_revoked(&self, family: &FamilyId) -> Result<bool, SessionError> {
        Ok(observed(self.store.is_revoked(family).await)?)
    }
}

impl<S: RefreshStore> RefreshSessions<S> {
    /// The sealing key for a grace successor: only the holder of `presented` can derive it.
    fn grace_key(material: &[u8], presented: &str) -> Option<aead::LessSafeKey> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, material);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(b"palisade refresh grace v1\0");
        ctx.update(presented.as_bytes());
        let derived = ctx.sign();
        let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, derived.as_ref()).ok()?;
        Some(aead::LessSafeKey::new(unbound))
    }

    fn seal(&self, presented: &str, successor: &str) -> Result<String, SessionError> {
        let active = self
            .ring
            .active(self.clock.now())
            .map_err(|_| SessionError::Unavailable)?;
        let key = Self::grace_key(active.material().expose_secret(), presented)
            .ok_or(SessionError::Unavailable)?;
        let mut nonce = [0u8; 12];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SessionError::Unavailable)?;
        let mut data = successor.as_bytes().to_vec();
        key.seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::empty(),
            &mut data,
        )
        .map_err(|_| SessionError::Unavailable)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    fn open(&self, presented: &str, sealed: &str) -> Option<RefreshToken> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if bytes.len() < 12 + 16 {
            return None;
        }
        let now = self.clock.now();
        for key in self.ring.keys().iter().filter(|k| k.is_valid_at(now)) {
            let aead_key = Self::grace_key(key.material().expose_secret(), presented)?;
            let nonce = aead::Nonce::try_assume_unique_for_key(&bytes[..12]).ok()?;
            let mut data = bytes[12..].to_vec();
            if let Ok(plain) = aead_key.open_in_place(nonce, aead::Aad::empty(), &mut data) {
                return std::str::from_utf8(plain).ok().map(RefreshToken::from_text);
            }
        }
        None
    }
}

fn mac(key: &[u8], token: &str) -> TokenHash {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&key, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    TokenHash(out)
}

impl<S: RefreshStore> palisade_core::SessionRevocation for RefreshSessions<S> {
    fn is_revoked<'a>(&'a self, sid: &'a str) -> palisade_core::revocation::RevocationFuture<'a> {
        Box::pin(async move {
            let Some(family) = FamilyId::parse(sid) else {
                // Not one of ours: revoked as far as we know.
                return Ok(true);
            };
            observed(self.store.is_revoked(&family).await).map_err(|err| {
                // Logged and counted like every other store failure; the caller denies.
                store_failed(&err);
                palisade_core::RevocationError
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use palisade_core::ManualClock;

    use super::*;
    use crate::MemoryStore;

    #[tokio::test]
    async fn reuse_calls_the_hook_once_with_the_family() {
        let seen: Arc<Mutex<Vec<ReuseEvent>>> = Arc::default();
        let sink = seen.clone();
        let sessions = RefreshSessions::new(
            MemoryStore::new(),
            KeyRing::parse("k 1 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=").unwrap(),
        )
        .with_clock(ManualClock::at_unix(1_800_000_000).shared())
        .on_reuse(Arc::new(move |e: &ReuseEvent| {
            sink.lock().unwrap().push(e.clone())
        }));
        let device = DeviceBinding::new("d", b"m");
        let (family, first) = sessions.start("u", &device).await.unwrap();
        sessions.refresh(first.expose(), &device).await.unwrap();
        assert_eq!(
            sessions.refresh(first.expose(), &device).await.unwrap_err(),
            SessionError::Reused
        );
        // Later attempts meet a revoked family: no second reuse event.
        assert_eq!(
            sessions.refresh(first.expose(), &device).await.unwrap_err(),
            SessionError::Revoked
        );
        let events = seen.lock().unwrap().clone();
        assert_eq!(
            events,
            vec![ReuseEvent {
                family,
                user_id: "u".into(),
                device_id: "d".into()
            }]
        );
    }
}
