//! The store trait and its records.

use std::future::Future;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A family id: 128 random bits, base64url (22 characters). Not secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FamilyId(String);

impl FamilyId {
    pub(crate) fn generate() -> Option<Self> {
        let mut bytes = [0u8; 16];
        aws_lc_rs::rand::fill(&mut bytes).ok()?;
        Some(Self(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Parses a family id (22 base64url characters).
    pub fn parse(text: &str) -> Option<Self> {
        let ok = text.len() == 22
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(text.to_owned()))
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An HMAC-SHA256 of a refresh token under a key-ring key: what stores keep.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenHash({}…)", &self.to_hex()[..8])
    }
}

/// The device a family is bound to: an id and a fingerprint of the client metadata the caller
/// supplies (user agent, app version, ...), and optionally a DPoP key thumbprint.
///
/// # What it proves
///
/// A device id and metadata are whatever the client sends: they stop a stolen token from being
/// replayed by someone who does not also know (or guess) them, and they make a token copied to
/// another browser or app stand out, but an attacker who stole the token from the device's
/// storage can usually read the id too. Only [`with_dpop_jkt`](Self::with_dpop_jkt) binds the
/// family to a private key the client never reveals; use it where clients can do DPoP
/// (RFC 9449), after verifying the request's DPoP proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceBinding {
    pub(crate) device_id: String,
    pub(crate) fingerprint: String,
    pub(crate) dpop_jkt: Option<String>,
}

impl DeviceBinding {
    /// A device `device_id` presenting `metadata` (hashed with SHA-256; never stored as is).
    pub fn new(device_id: &str, metadata: &[u8]) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, metadata);
        Self {
            device_id: device_id.to_owned(),
            fingerprint: URL_SAFE_NO_PAD.encode(digest.as_ref()),
            dpop_jkt: None,
        }
    }

    /// Also binds the family to a DPoP key (RFC 9449 `jkt` thumbprint).
    #[must_use]
    pub fn with_dpop_jkt(mut self, jkt: &str) -> Self {
        self.dpop_jkt = Some(jkt.to_owned());
        self
    }

    /// One string comparing equal exactly when the bindings do.
    pub fn canonical(&self) -> String {
        format!(
            "{}\u{1f}{}\u{1f}{}",
            self.device_id,
            self.fingerprint,
            self.dpop_jkt.as_deref().unwrap_or("")
        )
    }
}

/// A family as created.
#[derive(Clone, Debug)]
pub struct Family {
    /// The id.
    pub id: FamilyId,
    /// The user.
    pub user_id: String,
    /// The device binding.
    pub device: DeviceBinding,
    /// Unix seconds: no refresh after this.
    pub absolute_expiry: u64,
    /// Seconds without a refresh after which the family is dead.
    pub idle_timeout: u64,
    /// Unix seconds of creation.
    pub created_at: u64,
}

/// A successor kept for a retry within the grace window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grace {
    /// The successor token, sealed (see [`RefreshStore::rotate`]); opaque to stores.
    pub sealed: String,
    /// Unix seconds until which a retry may get it.
    pub until: u64,
}

/// What a rotation did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rotation {
    /// The presented token was current: it is consumed and the successor is current.
    Rotated {
        /// The family's user.
        user_id: String,
    },
    /// The presented token was consumed moments ago by this device and the answer was lost:
    /// here is the same successor again (sealed), never a new one.
    Grace {
        /// The family's user.
        user_id: String,
        /// The sealed successor.
        sealed: String,
    },
    /// The presented token was already consumed: the family is now revoked.
    Reused {
        /// The family's user.
        user_id: String,
    },
    /// The family is revoked.
    Revoked,
    /// Past the absolute lifetime or the idle timeout.
    Expired,
    /// Another device (the family is left as it was).
    DeviceMismatch,
    /// No such family or token.
    Unknown,
}

pub use palisade_core::StoreError;

/// Where refresh families live. Every operation is atomic on its own.
pub trait RefreshStore: Send + Sync + 'static {
    /// Records a new family whose current token hashes to `first`.
    fn create(
        &self,
        family: &Family,
        first: &TokenHash,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Atomically: if one of `presented` (the token hashed under each verification key) is the
    /// family's current token, check revocation, expiry (absolute and idle, at `now`) and the
    /// device, then consume it and make `successor` current. If one of `presented` was consumed
    /// before, revoke the family and answer [`Rotation::Reused`].
    ///
    /// With `grace`, the store also remembers, until `grace.until`, the consumed token's hash
    /// and `grace.sealed` (the successor, sealed with a key only that token's holder can
    /// derive). When that same consumed token comes back in time from the same device, it
    /// answers [`Rotation::Grace`] with the sealed successor instead of revoking the family.
    fn rotate(
        &self,
        family: &FamilyId,
        presented: &[TokenHash],
        successor: &TokenHash,
        device: &DeviceBinding,
        now: u64,
        grace: Option<&Grace>,
    ) -> impl Future<Output = Result<Rotation, StoreError>> + Send;

    /// Atomically: revokes a family if one of `presented` (the token hashed under each
    /// verification key) is its current token or one it consumed; `false` otherwise. Knowing a
    /// family id (it is the access token's `sid`) is not enough to log someone out.
    fn revoke_family(
        &self,
        family: &FamilyId,
        presented: &[TokenHash],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Revokes every family of `user_id`; returns how many.
    fn revoke_user(&self, user_id: &str) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Whether a family is revoked or unknown (for access tokens carrying its id as `sid`).
    fn is_revoked(
        &self,
        family: &FamilyId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// How Palisade's Redis stores hold their connection: a reconnecting connection manager that
/// fails fast while Redis is unreachable (one connection attempt of at most a second per
/// command, commands answered within two seconds), so requests are refused promptly during
/// an outage and served again once Redis is back, without restarting the process.
#[cfg(feature = "redis")]
pub fn redis_manager_config() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_max_delay(std::time::Duration::from_millis(200))
        .set_connection_timeout(Some(std::time::Duration::from_secs(1)))
        .set_response_timeout(Some(std::time::Duration::from_secs(2)))
}

/// Records a finding when a store URL is plaintext to a host that is not this machine: in
/// production that refuses the build (`rediss://` without `#insecure`, or
/// `sslmode=verify-full`, are required).
///
/// The URL is read by the driver's own parser (the one that will connect), so userinfo,
/// fragments, repeated or `host=` query parameters cannot make a remote host look local. A
/// URL the enabled drivers cannot read is a finding too.
#[cfg(any(feature = "redis", feature = "postgres"))]
pub fn check_transport(url: &str, posture: &mut palisade_core::Posture) {
    match transport(url) {
        Ok(Transport::Local) | Ok(Transport::Tcp { verified: true, .. }) => {}
        Ok(Transport::Tcp { host, .. }) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let local = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !local {
                posture.record(
                    palisade_core::Severity::Deny,
                    "store-plaintext",
                    format!("session store at {host} is reached without verified TLS (use rediss:// or sslmode=verify-full)"),
                );
            }
        }
        Err(why) => posture.record(
            palisade_core::Severity::Deny,
            "store-url",
            format!("session store URL refused: {why}"),
        ),
    }
}

/// Runs [`check_transport`] on one store URL (plus any `extra` findings) under `profile` and
/// turns a refusal into a [`StoreError`]. Every Palisade store that connects by URL uses it.
#[cfg(any(feature = "redis", feature = "postgres"))]
pub fn require_transport(
    url: &str,
    profile: palisade_core::Profile,
    component: &'static str,
    extra: impl FnOnce(&mut palisade_core::Posture),
) -> Result<(), StoreError> {
    let mut posture = palisade_core::Posture::new(profile, component);
    check_transport(url, &mut posture);
    extra(&mut posture);
    posture
        .finish()
        .map(|_| ())
        .map_err(|e| StoreError::new(e.to_string(), Some(std::sync::Arc::new(e))))
}

/// Reads the outcome word the Redis script and the PostgreSQL function answer a rotation
/// with (one vocabulary for both); an unknown word is an error, never a rotation.
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) fn rotation_from_outcome(
    outcome: &str,
    user_id: String,
    sealed: Option<String>,
) -> Result<Rotation, StoreError> {
    Ok(match outcome {
        "rotated" => Rotation::Rotated { user_id },
        "reused" => Rotation::Reused { user_id },
        "grace" => Rotation::Grace {
            user_id,
            sealed: sealed.unwrap_or_default(),
        },
        "revoked" => Rotation::Revoked,
        "expired" => Rotation::Expired,
        "device" => Rotation::DeviceMismatch,
        "unknown" => Rotation::Unknown,
        _ => return Err(StoreError::new("unexpected rotation outcome", None)),
    })
}

/// How a store URL connects, as its driver reads it.
#[cfg(any(feature = "redis", feature = "postgres"))]
enum Transport {
    /// A Unix socket on this machine.
    Local,
    /// TCP to `host`, with verified TLS or not.
    Tcp { host: String, verified: bool },
}

#[cfg(any(feature = "redis", feature = "postgres"))]
fn transport(url: &str) -> Result<Transport, String> {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    match scheme {
        #[cfg(feature = "redis")]
        "redis" | "rediss" | "redis+unix" | "unix" => {
            use redis::{ConnectionAddr, IntoConnectionInfo};
            let info = url.into_connection_info().map_err(|e| e.to_string())?;
            match info.addr() {
                ConnectionAddr::Tcp(host, _) => Ok(Transport::Tcp {
                    host: host.clone(),
                    verified: false,
                }),
                ConnectionAddr::TcpTls { host, insecure, .. } => Ok(Transport::Tcp {
                    host: host.clone(),
                    verified: !insecure,
                }),
                ConnectionAddr::Unix(_) => Ok(Transport::Local),
                _ => Err("unsupported Redis address".to_owned()),
            }
        }
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => {
            use sqlx::postgres::{PgConnectOptions, PgSslMode};
            let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| e.to_string())?;
            if options.get_socket().is_some() {
                return Ok(Transport::Local);
            }
            Ok(Transport::Tcp {
                host: options.get_host().to_owned(),
                verified: matches!(options.get_ssl_mode(), PgSslMode::VerifyFull),
            })
        }
        _ => Err(format!(
            "scheme {scheme:?} is not one an enabled store feature reads"
        )),
    }
}
