//! Access-key credentials: issuing (secret shown once), listing, disabling, rotating, and the
//! [`CredentialStore`] that keeps them with secrets sealed by field encryption.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use palisade_core::SharedClock;
use palisade_field_crypto::{FieldCipher, FieldContext, FieldCryptoError, Sealed};
use rand::RngCore as _;
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::StoreError;

/// The table name bound into every sealed secret.
const SEAL_TABLE: &str = "palisade_access_keys";
/// The most secrets a key holds at once (the current one and one in its overlap).
pub const MAX_SECRETS_PER_KEY: usize = 2;

/// Whether a key may sign requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyStatus {
    /// The key signs requests.
    Active,
    /// The key was disabled; its requests are refused.
    Disabled,
}

impl KeyStatus {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
        }
    }

    /// Reads the stored word.
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "active" => Some(Self::Active),
            "disabled" => Some(Self::Disabled),
            _ => None,
        }
    }
}

/// One secret of a key, sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSecret {
    /// Increases by one on each rotation; part of the signing-key cache key.
    pub version: u32,
    /// The secret, sealed for (`palisade_access_keys`, `secret.<version>`, key id).
    pub sealed: Sealed,
    /// After this unix second the secret no longer verifies (set on the old secret by a
    /// rotation with overlap).
    pub not_after: Option<u64>,
}

/// A stored credential. Secrets are sealed; nothing here is usable without the key ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialRecord {
    /// The public access key id.
    pub key_id: String,
    /// The org the key belongs to.
    pub org: String,
    /// The principal the key acts as (a service account name).
    pub subject: String,
    /// Roles granted to requests signed with the key.
    pub roles: Vec<String>,
    /// Scopes granted to requests signed with the key.
    pub scopes: Vec<String>,
    /// A note for humans.
    pub description: String,
    /// Active or disabled.
    pub status: KeyStatus,
    /// Issue time, unix seconds.
    pub created_at: u64,
    /// After this unix second the key no longer verifies.
    pub expires_at: Option<u64>,
    /// One or two secrets, newest first.
    pub secrets: Vec<StoredSecret>,
}

impl CredentialRecord {
    /// The metadata of the record (no secret material, sealed or not).
    pub fn metadata(&self) -> KeyMetadata {
        KeyMetadata {
            key_id: self.key_id.clone(),
            org: self.org.clone(),
            subject: self.subject.clone(),
            roles: self.roles.clone(),
            scopes: self.scopes.clone(),
            description: self.description.clone(),
            status: self.status,
            created_at: self.created_at,
            expires_at: self.expires_at,
            secret_versions: self
                .secrets
                .iter()
                .map(|s| (s.version, s.not_after))
                .collect(),
        }
    }
}

/// What listing shows about a key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyMetadata {
    /// The public access key id.
    pub key_id: String,
    /// The org the key belongs to.
    pub org: String,
    /// The principal the key acts as.
    pub subject: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// A note for humans.
    pub description: String,
    /// Active or disabled.
    pub status: KeyStatus,
    /// Issue time, unix seconds.
    pub created_at: u64,
    /// Expiry, unix seconds.
    pub expires_at: Option<u64>,
    /// (version, not-after) of each secret, newest first.
    pub secret_versions: Vec<(u32, Option<u64>)>,
}

/// Where credentials live. Each call is atomic on its own.
pub trait CredentialStore: Send + Sync + 'static {
    /// Stores a new record; fails when the key id exists.
    fn insert(
        &self,
        record: &CredentialRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The record of `key_id`.
    fn get(
        &self,
        key_id: &str,
    ) -> impl Future<Output = Result<Option<CredentialRecord>, StoreError>> + Send;
    /// Every record of `org`, oldest first.
    fn list(
        &self,
        org: &str,
    ) -> impl Future<Output = Result<Vec<CredentialRecord>, StoreError>> + Send;
    /// Sets the status; `false` when the key does not exist.
    fn set_status(
        &self,
        key_id: &str,
        status: KeyStatus,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Replaces the secrets when the newest stored version is still `expected_version`
    /// (compare-and-set, so two concurrent rotations cannot both win); `false` otherwise.
    fn replace_secrets(
        &self,
        key_id: &str,
        expected_version: u32,
        secrets: &[StoredSecret],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

impl<C: CredentialStore> CredentialStore for Arc<C> {
    fn insert(
        &self,
        record: &CredentialRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).insert(record)
    }
    fn get(
        &self,
        key_id: &str,
    ) -> impl Future<Output = Result<Option<CredentialRecord>, StoreError>> + Send {
        (**self).get(key_id)
    }
    fn list(
        &self,
        org: &str,
    ) -> impl Future<Output = Result<Vec<CredentialRecord>, StoreError>> + Send {
        (**self).list(org)
    }
    fn set_status(
        &self,
        key_id: &str,
        status: KeyStatus,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).set_status(key_id, status)
    }
    fn replace_secrets(
        &self,
        key_id: &str,
        expected_version: u32,
        secrets: &[StoredSecret],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).replace_secrets(key_id, expected_version, secrets)
    }
}

/// An in-memory [`CredentialStore`] for tests and single-process development.
#[derive(Clone, Default)]
pub struct MemoryCredentialStore {
    records: Arc<Mutex<HashMap<String, CredentialRecord>>>,
}

impl fmt::Debug for MemoryCredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryCredentialStore")
            .finish_non_exhaustive()
    }
}

impl MemoryCredentialStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut HashMap<String, CredentialRecord>) -> T,
    ) -> Result<T, StoreError> {
        let mut records = self
            .records
            .lock()
            .map_err(|_| StoreError::new("credential store lock poisoned", None))?;
        Ok(f(&mut records))
    }
}

impl CredentialStore for MemoryCredentialStore {
    async fn insert(&self, record: &CredentialRecord) -> Result<(), StoreError> {
        self.with(|records| {
            if records.contains_key(&record.key_id) {
                return Err(StoreError::new("access key id exists", None));
            }
            records.insert(record.key_id.clone(), record.clone());
            Ok(())
        })?
    }

    async fn get(&self, key_id: &str) -> Result<Option<CredentialRecord>, StoreError> {
        self.with(|records| records.get(key_id).cloned())
    }

    async fn list(&self, org: &str) -> Result<Vec<CredentialRecord>, StoreError> {
        self.with(|records| {
            let mut out: Vec<_> = records.values().filter(|r| r.org == org).cloned().collect();
            out.sort_by(|a, b| (a.created_at, &a.key_id).cmp(&(b.created_at, &b.key_id)));
            out
        })
    }

    async fn set_status(&self, key_id: &str, status: KeyStatus) -> Result<bool, StoreError> {
        self.with(|records| match records.get_mut(key_id) {
            Some(record) => {
                record.status = status;
                true
            }
            None => false,
        })
    }

    async fn replace_secrets(
        &self,
        key_id: &str,
        expected_version: u32,
        secrets: &[StoredSecret],
    ) -> Result<bool, StoreError> {
        self.with(|records| match records.get_mut(key_id) {
            Some(record) if record.secrets.first().map(|s| s.version) == Some(expected_version) => {
                record.secrets = secrets.to_vec();
                true
            }
            _ => false,
        })
    }
}

/// Why a credential operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Sealing or opening a secret failed.
    #[error(transparent)]
    Crypto(#[from] FieldCryptoError),
    /// No such key.
    #[error("no such access key")]
    UnknownKey,
    /// Another rotation of the same key won the race; read the key again and retry.
    #[error("the key was rotated concurrently")]
    Conflict,
    /// A field is empty or too long.
    #[error("invalid credential field: {0}")]
    Invalid(&'static str),
}

/// What to issue.
#[derive(Clone, Debug, Default)]
pub struct NewCredential {
    /// The org the key belongs to (required).
    pub org: String,
    /// The principal the key acts as (required).
    pub subject: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// A note for humans.
    pub description: String,
    /// How long the key lives; `None` for no expiry.
    pub lifetime: Option<Duration>,
}

/// A freshly issued (or rotated) credential. The secret exists here and nowhere else in
/// plaintext: show it to the caller once and drop it. `Debug` redacts it.
pub struct IssuedCredential {
    /// The access key id.
    pub key_id: String,
    /// The secret access key.
    pub secret: SecretString,
    /// The secret version.
    pub version: u32,
}

impl fmt::Debug for IssuedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCredential")
            .field("key_id", &self.key_id)
            .field("secret", &"[redacted]")
            .field("version", &self.version)
            .finish()
    }
}

/// Issues and manages access keys over a [`CredentialStore`], sealing secrets with a
/// [`FieldCipher`].
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use palisade_aksk::{AccessKeys, MemoryCredentialStore, NewCredential};
/// use palisade_core::{KeyRing, SystemClock};
/// use palisade_field_crypto::FieldCipher;
/// use secrecy::ExposeSecret;
///
/// let ring = KeyRing::parse("f1 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")?;
/// let keys = AccessKeys::new(
///     MemoryCredentialStore::new(),
///     FieldCipher::new(ring, SystemClock::shared()),
///     SystemClock::shared(),
/// );
/// let issued = keys
///     .issue(NewCredential { org: "acme".into(), subject: "svc:billing".into(), ..Default::default() })
///     .await?;
/// assert_eq!(issued.secret.expose_secret().len(), 40);
/// // Listing shows metadata only.
/// let listed = keys.list("acme").await?;
/// assert_eq!(listed[0].key_id, issued.key_id);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct AccessKeys<C> {
    store: Arc<C>,
    cipher: FieldCipher,
    clock: SharedClock,
}

impl<C> Clone for AccessKeys<C> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            cipher: self.cipher.clone(),
            clock: self.clock.clone(),
        }
    }
}

impl<C> fmt::Debug for AccessKeys<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKeys").finish_non_exhaustive()
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn seal_field(version: u32) -> String {
    format!("secret.{version}")
}

/// A new access key id: `PK` and 18 characters of RFC 4648 base32 (90 random bits).
fn new_key_id() -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bytes = [0u8; 18];
    rand::rng().fill_bytes(&mut bytes);
    let mut id = String::with_capacity(20);
    id.push_str("PK");
    id.extend(
        bytes
            .iter()
            .map(|b| char::from(ALPHABET[usize::from(b & 31)])),
    );
    id
}

/// A new secret: 30 random bytes as 40 characters of base64url.
fn new_secret() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 30]);
    rand::rng().fill_bytes(&mut bytes[..]);
    Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[..]))
}

fn bounded(field: &'static str, value: &str, max: usize) -> Result<(), CredentialError> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(CredentialError::Invalid(field));
    }
    Ok(())
}

impl<C: CredentialStore> AccessKeys<C> {
    /// Manages keys in `store`, sealing secrets with `cipher`.
    pub fn new(store: C, cipher: FieldCipher, clock: SharedClock) -> Self {
        Self {
            store: Arc::new(store),
            cipher,
            clock,
        }
    }

    /// The store.
    pub fn store(&self) -> &C {
        &self.store
    }

    /// The store, shared: hand it to [`crate::AccessKeyLayer`] so the layer sees what this
    /// manager writes.
    pub fn shared_store(&self) -> Arc<C> {
        self.store.clone()
    }

    /// The cipher.
    pub fn cipher(&self) -> &FieldCipher {
        &self.cipher
    }

    fn seal(&self, key_id: &str, version: u32, secret: &str) -> Result<Sealed, CredentialError> {
        let field = seal_field(version);
        Ok(self.cipher.encrypt(
            &FieldContext::new(SEAL_TABLE, &field, key_id),
            secret.as_bytes(),
        )?)
    }

    /// Issues a key; the returned secret is the only plaintext copy.
    pub async fn issue(&self, new: NewCredential) -> Result<IssuedCredential, CredentialError> {
        bounded("org", &new.org, 128)?;
        bounded("subject", &new.subject, 256)?;
        for item in new.roles.iter().chain(&new.scopes) {
            bounded("role or scope", item, 128)?;
        }
        if new.description.len() > 1024 {
            return Err(CredentialError::Invalid("description"));
        }
        let now = self.clock.now();
        let key_id = new_key_id();
        let secret = new_secret();
        let record = CredentialRecord {
            key_id: key_id.clone(),
            org: new.org,
            subject: new.subject,
            roles: new.roles,
            scopes: new.scopes,
            description: new.description,
            status: KeyStatus::Active,
            created_at: unix(now),
            expires_at: new.lifetime.map(|l| unix(now + l)),
            secrets: vec![StoredSecret {
                version: 1,
                sealed: self.seal(&key_id, 1, &secret)?,
                not_after: None,
            }],
        };
        self.store.insert(&record).await?;
        Ok(IssuedCredential {
            key_id,
            secret: SecretString::from(secret.as_str()),
            version: 1,
        })
    }

    /// Metadata of every key of `org`.
    pub async fn list(&self, org: &str) -> Result<Vec<KeyMetadata>, CredentialError> {
        Ok(self
            .store
            .list(org)
            .await?
            .iter()
            .map(CredentialRecord::metadata)
            .collect())
    }

    /// Disables a key: its requests are refused from the next request on.
    pub async fn disable(&self, key_id: &str) -> Result<(), CredentialError> {
        if self.store.set_status(key_id, KeyStatus::Disabled).await? {
            Ok(())
        } else {
            Err(CredentialError::UnknownKey)
        }
    }

    /// Enables a disabled key again.
    pub async fn enable(&self, key_id: &str) -> Result<(), CredentialError> {
        if self.store.set_status(key_id, KeyStatus::Active).await? {
            Ok(())
        } else {
            Err(CredentialError::UnknownKey)
        }
    }

    /// Gives the key a new secret. The current secret keeps verifying for `overlap` (zero ends
    /// it now); any older secret is dropped, so at most two secrets are ever valid.
    pub async fn rotate(
        &self,
        key_id: &str,
        overlap: Duration,
    ) -> Result<IssuedCredential, CredentialError> {
        let record = self
            .store
            .get(key_id)
            .await?
            .ok_or(CredentialError::UnknownKey)?;
        let current = record.secrets.first().ok_or(CredentialError::UnknownKey)?;
        let version = current
            .version
            .checked_add(1)
            .ok_or(CredentialError::Invalid("version"))?;
        let secret = new_secret();
        let now = unix(self.clock.now());
        let mut secrets = vec![StoredSecret {
            version,
            sealed: self.seal(key_id, version, &secret)?,
            not_after: None,
        }];
        if !overlap.is_zero() {
            secrets.push(StoredSecret {
                not_after: Some(now + overlap.as_secs()),
                ..current.clone()
            });
        }
        if !self
            .store
            .replace_secrets(key_id, current.version, &secrets)
            .await?
        {
            return Err(CredentialError::Conflict);
        }
        Ok(IssuedCredential {
            key_id: key_id.to_owned(),
            secret: SecretString::from(secret.as_str()),
            version,
        })
    }
}

/// Opens a stored secret of `key_id` with `cipher`.
pub(crate) fn open_secret(
    cipher: &FieldCipher,
    key_id: &str,
    secret: &StoredSecret,
) -> Result<Zeroizing<Vec<u8>>, FieldCryptoError> {
    let field = seal_field(secret.version);
    cipher.decrypt(
        &FieldContext::new(SEAL_TABLE, &field, key_id),
        &secret.sealed,
    )
}
