//! Authenticated encryption of sensitive fields, with key rotation and keyed blind indexes.
//!
//! A [`FieldCipher`] encrypts one field value (an access-key secret, a TOTP seed, a phone
//! number) with XChaCha20-Poly1305 under the active key of a [`KeyRing`]
//! (`FIELD_ENCRYPTION_KEYS`). Each ciphertext carries the id and version of the key that sealed
//! it, so values sealed under older keys still open while those keys are in the ring, and
//! [`FieldCipher::reencrypt`] moves them to the active key during a rotation.
//!
//! Every ciphertext is bound to a [`FieldContext`] (table, field and record id) through the
//! AEAD's associated data: a ciphertext copied to another record or another column does not
//! open. Values that must be looked up by equality get a keyed [`BlindIndex`] (HMAC-SHA256),
//! never a plain hash.
//!
//! The 192-bit random XChaCha nonce makes random nonces safe for any realistic number of
//! encryptions under one key. Ring keys are never used directly: the AEAD key and the index key
//! are derived from each ring key with HMAC-SHA256 under distinct labels.
//!
//! There are no default keys: [`FieldCipher::new`] takes a ring, [`FieldCipher::from_env`] reads
//! `FIELD_ENCRYPTION_KEYS` and fails when it is unset, and
//! [`FieldCipher::ephemeral_for_development`] (a random key that dies with the process) is refused
//! under [`Profile::Production`].
//!
//! ```
//! use palisade_core::{KeyRing, SystemClock};
//! use palisade_field_crypto::{FieldCipher, FieldContext};
//!
//! let ring = KeyRing::parse("f1 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")?;
//! let cipher = FieldCipher::new(ring, SystemClock::shared());
//! let ctx = FieldContext::new("access_keys", "secret", "AKPALISADE0001");
//!
//! let sealed = cipher.encrypt(&ctx, b"wJalrXUtnFEMI/K7MDENG")?;
//! assert_eq!(sealed.key_id(), "f1");
//! assert_eq!(&*cipher.decrypt(&ctx, &sealed)?, b"wJalrXUtnFEMI/K7MDENG");
//!
//! // Bound to its record: the same bytes under another record id do not open.
//! let other = FieldContext::new("access_keys", "secret", "AKPALISADE0002");
//! assert!(cipher.decrypt(&other, &sealed).is_err());
//!
//! // Stored as text and read back.
//! let text = sealed.to_string();
//! let parsed: palisade_field_crypto::Sealed = text.parse()?;
//! assert_eq!(parsed, sealed);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, KeyInit, Mac};
use palisade_core::{Key, KeyRing, KeyRingError, Posture, PostureError, Profile, SharedClock};
use rand::RngCore as _;
use secrecy::ExposeSecret as _;
use sha2::Sha256;
use zeroize::Zeroizing;

/// The environment variable [`FieldCipher::from_env`] reads.
pub const FIELD_ENCRYPTION_KEYS: &str = "FIELD_ENCRYPTION_KEYS";

/// The format byte of version-1 ciphertexts.
const FORMAT_V1: u8 = 1;
/// The XChaCha20 nonce length.
const NONCE_LEN: usize = 24;
/// The Poly1305 tag length.
const TAG_LEN: usize = 16;
/// The largest plaintext accepted, in bytes. Fields are small; a huge value is a mistake.
pub const MAX_PLAINTEXT_BYTES: usize = 64 * 1024;
/// The largest key id carried in a ciphertext (the key-ring limit).
const MAX_KEY_ID: usize = 64;

const LABEL_AEAD: &[u8] = b"palisade field-crypto v1 aead key";
const LABEL_INDEX: &[u8] = b"palisade field-crypto v1 blind-index key";
const AAD_PREFIX: &[u8] = b"palisade field-crypto v1\0";

type HmacSha256 = Hmac<Sha256>;

/// Why a field could not be encrypted, decrypted or indexed.
///
/// Decryption failures are deliberately coarse: a wrong key, a wrong context and a tampered
/// ciphertext all give [`FieldCryptoError::Unauthentic`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FieldCryptoError {
    /// The key ring has no key valid now, or could not be read.
    #[error("field encryption keys: {0}")]
    KeyRing(#[from] KeyRingError),
    /// The key that sealed the value is not in the ring (or is not valid now).
    #[error("the field was sealed with key `{key_id}` v{version}, which the ring does not hold")]
    UnknownKey {
        /// The key id named by the ciphertext.
        key_id: String,
        /// The key version named by the ciphertext.
        version: u32,
    },
    /// The ciphertext is not in the expected format.
    #[error("the sealed field is malformed")]
    Malformed,
    /// The ciphertext failed authentication: tampered, or opened under the wrong context.
    #[error("the sealed field failed authentication")]
    Unauthentic,
    /// The plaintext is larger than [`MAX_PLAINTEXT_BYTES`].
    #[error("the field value is larger than {MAX_PLAINTEXT_BYTES} bytes")]
    TooLarge,
    /// The configuration is refused under the profile.
    #[error(transparent)]
    Posture(#[from] PostureError),
}

/// What a ciphertext is bound to: the table (or record type), the field and the record id.
///
/// The three parts are length-prefixed in the associated data, so no two different contexts
/// produce the same bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldContext<'a> {
    table: &'a str,
    field: &'a str,
    record: &'a str,
}

impl<'a> FieldContext<'a> {
    /// The context of field `field` of record `record` in `table`.
    pub fn new(table: &'a str, field: &'a str, record: &'a str) -> Self {
        Self {
            table,
            field,
            record,
        }
    }

    fn write_to(&self, out: &mut Vec<u8>) {
        for part in [self.table, self.field, self.record] {
            out.extend_from_slice(&(part.len() as u64).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
    }
}

/// An encrypted field: format, key id, key version, nonce and ciphertext with tag.
///
/// Its text form (`Display` / `FromStr`) is unpadded base64url of the binary form, suitable for
/// a text column; [`Sealed::as_bytes`] and [`Sealed::from_bytes`] give the binary form for a
/// `bytea` column. `Debug` shows only the key id and version.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    bytes: Vec<u8>,
    key_id_len: usize,
}

impl Sealed {
    /// Parses the binary form.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, FieldCryptoError> {
        let (&format, rest) = bytes.split_first().ok_or(FieldCryptoError::Malformed)?;
        if format != FORMAT_V1 {
            return Err(FieldCryptoError::Malformed);
        }
        let (&id_len, rest) = rest.split_first().ok_or(FieldCryptoError::Malformed)?;
        let id_len = usize::from(id_len);
        if id_len == 0 || id_len > MAX_KEY_ID || rest.len() < id_len + 4 + NONCE_LEN + TAG_LEN {
            return Err(FieldCryptoError::Malformed);
        }
        if std::str::from_utf8(&rest[..id_len]).is_err() {
            return Err(FieldCryptoError::Malformed);
        }
        Ok(Self {
            bytes,
            key_id_len: id_len,
        })
    }

    /// The binary form.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The id of the key that sealed the value.
    pub fn key_id(&self) -> &str {
        // Checked as UTF-8 when built.
        std::str::from_utf8(&self.bytes[2..2 + self.key_id_len]).unwrap_or_default()
    }

    /// The version of the key that sealed the value.
    pub fn key_version(&self) -> u32 {
        let at = 2 + self.key_id_len;
        let mut v = [0u8; 4];
        v.copy_from_slice(&self.bytes[at..at + 4]);
        u32::from_be_bytes(v)
    }

    fn header(&self) -> &[u8] {
        &self.bytes[..2 + self.key_id_len + 4]
    }

    fn nonce(&self) -> &[u8] {
        let at = 2 + self.key_id_len + 4;
        &self.bytes[at..at + NONCE_LEN]
    }

    fn ciphertext(&self) -> &[u8] {
        &self.bytes[2 + self.key_id_len + 4 + NONCE_LEN..]
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id())
            .field("key_version", &self.key_version())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(&self.bytes))
    }
}

impl FromStr for Sealed {
    type Err = FieldCryptoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Bounded: the largest plaintext plus the header, in base64.
        if s.len() > (MAX_PLAINTEXT_BYTES + 256) * 4 / 3 + 4 {
            return Err(FieldCryptoError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| FieldCryptoError::Malformed)?;
        Self::from_bytes(bytes)
    }
}

/// A keyed blind index of a field value: HMAC-SHA256 under an index key derived from a ring
/// key, over the field's table and name and the value. Equal values give equal indexes; the
/// index reveals nothing about the value without the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlindIndex([u8; 32]);

impl BlindIndex {
    /// The 32 index bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The index as lowercase hex (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for BlindIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlindIndex({})", self.to_hex())
    }
}

/// Encrypts, decrypts, re-encrypts and indexes fields with a key ring.
#[derive(Clone)]
pub struct FieldCipher {
    ring: KeyRing,
    clock: SharedClock,
    /// The profile a generated key was allowed under (`None`: a configured ring).
    ephemeral_under: Option<Profile>,
}

impl fmt::Debug for FieldCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldCipher")
            .field("ring", &self.ring)
            .finish_non_exhaustive()
    }
}

impl FieldCipher {
    /// A cipher over `ring`; `clock` decides which keys are valid.
    pub fn new(ring: KeyRing, clock: SharedClock) -> Self {
        Self {
            ring,
            clock,
            ephemeral_under: None,
        }
    }

    /// A cipher over the ring in [`FIELD_ENCRYPTION_KEYS`]; fails when the variable is unset,
    /// empty or malformed (there are no default keys).
    pub fn from_env(clock: SharedClock) -> Result<Self, FieldCryptoError> {
        Ok(Self::new(KeyRing::from_env(FIELD_ENCRYPTION_KEYS)?, clock))
    }

    /// A cipher over one random key that lives only as long as the process, for development.
    ///
    /// Refused under [`Profile::Production`] (finding `field-crypto-ephemeral-key`): values sealed
    /// with it are unreadable after a restart.
    pub fn ephemeral_for_development(
        profile: Profile,
        clock: SharedClock,
    ) -> Result<Self, FieldCryptoError> {
        let mut posture = Posture::new(profile, "field-crypto");
        posture.record(
            palisade_core::Severity::Deny,
            "field-crypto-ephemeral-key",
            "field encryption uses a random per-process key: set FIELD_ENCRYPTION_KEYS",
        );
        posture.finish()?;
        let mut material = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(&mut material[..]);
        let key = Key::new("ephemeral", 1, material.to_vec().into(), None, None)?;
        Ok(Self {
            ephemeral_under: Some(profile),
            ..Self::new(KeyRing::new(vec![key])?, clock)
        })
    }

    /// The profile a generated development key was allowed under; `None` for a configured
    /// ring, whose checks do not depend on the profile.
    pub fn profile(&self) -> Option<Profile> {
        self.ephemeral_under
    }

    /// The key ring.
    pub fn ring(&self) -> &KeyRing {
        &self.ring
    }

    /// Seals `plaintext` for `ctx` under the active key.
    pub fn encrypt(
        &self,
        ctx: &FieldContext<'_>,
        plaintext: &[u8],
    ) -> Result<Sealed, FieldCryptoError> {
        if plaintext.len() > MAX_PLAINTEXT_BYTES {
            return Err(FieldCryptoError::TooLarge);
        }
        let key = self.ring.active(self.clock.now())?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        seal_with(key, &nonce, ctx, plaintext)
    }

    /// Opens `sealed` for `ctx` with the key it names.
    pub fn decrypt(
        &self,
        ctx: &FieldContext<'_>,
        sealed: &Sealed,
    ) -> Result<Zeroizing<Vec<u8>>, FieldCryptoError> {
        let key = self.key_for(sealed)?;
        open_with(key, ctx, sealed)
    }

    /// Re-seals `sealed` under the active key when another key sealed it; `None` when it is
    /// already under the active key. Run it over stored values during a key rotation, then
    /// retire the old key.
    pub fn reencrypt(
        &self,
        ctx: &FieldContext<'_>,
        sealed: &Sealed,
    ) -> Result<Option<Sealed>, FieldCryptoError> {
        let active = self.ring.active(self.clock.now())?;
        if active.id().as_str() == sealed.key_id() && active.version() == sealed.key_version() {
            return Ok(None);
        }
        let plaintext = self.decrypt(ctx, sealed)?;
        self.encrypt(ctx, &plaintext).map(Some)
    }

    /// The blind index of `value` for `table`.`field` under the active key.
    pub fn blind_index(
        &self,
        table: &str,
        field: &str,
        value: &[u8],
    ) -> Result<BlindIndex, FieldCryptoError> {
        let key = self.ring.active(self.clock.now())?;
        Ok(index_with(key, table, field, value))
    }

    /// The blind indexes of `value` under every key valid now, active key first: look a value
    /// up by any of them while stored indexes move to the active key.
    pub fn blind_index_candidates(
        &self,
        table: &str,
        field: &str,
        value: &[u8],
    ) -> Vec<BlindIndex> {
        let now = self.clock.now();
        let mut keys: Vec<&Key> = self
            .ring
            .keys()
            .iter()
            .filter(|k| k.is_valid_at(now))
            .collect();
        if let Ok(active) = self.ring.active(now) {
            keys.retain(|k| k.id() != active.id());
            keys.insert(0, active);
        }
        keys.into_iter()
            .map(|k| index_with(k, table, field, value))
            .collect()
    }

    fn key_for(&self, sealed: &Sealed) -> Result<&Key, FieldCryptoError> {
        self.ring
            .verification_key(sealed.key_id(), self.clock.now())
            .filter(|k| k.version() == sealed.key_version())
            .ok_or_else(|| FieldCryptoError::UnknownKey {
                key_id: sealed.key_id().to_owned(),
                version: sealed.key_version(),
            })
    }
}

fn derive(key: &Key, label: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key.material().expose_secret())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(label);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

fn aad(header: &[u8], ctx: &FieldContext<'_>) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_PREFIX.len() + header.len() + 64);
    aad.extend_from_slice(AAD_PREFIX);
    aad.extend_from_slice(header);
    ctx.write_to(&mut aad);
    aad
}

/// Seals with an explicit nonce: the public API always draws a random one; tests use this for
/// known-answer vectors.
fn seal_with(
    key: &Key,
    nonce: &[u8; NONCE_LEN],
    ctx: &FieldContext<'_>,
    plaintext: &[u8],
) -> Result<Sealed, FieldCryptoError> {
    let id = key.id().as_str().as_bytes();
    let mut bytes = Vec::with_capacity(2 + id.len() + 4 + NONCE_LEN + plaintext.len() + TAG_LEN);
    bytes.push(FORMAT_V1);
    // Key-ring ids are 1 to 64 bytes.
    bytes.push(id.len() as u8);
    bytes.extend_from_slice(id);
    bytes.extend_from_slice(&key.version().to_be_bytes());
    let aad = aad(&bytes, ctx);
    bytes.extend_from_slice(nonce);
    let aead_key = derive(key, LABEL_AEAD);
    let cipher = XChaCha20Poly1305::new((&*aead_key).into());
    let ct = cipher
        .encrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        // The AEAD refuses only plaintexts far beyond MAX_PLAINTEXT_BYTES.
        .map_err(|_| FieldCryptoError::TooLarge)?;
    bytes.extend_from_slice(&ct);
    Ok(Sealed {
        bytes,
        key_id_len: id.len(),
    })
}

fn open_with(
    key: &Key,
    ctx: &FieldContext<'_>,
    sealed: &Sealed,
) -> Result<Zeroizing<Vec<u8>>, FieldCryptoError> {
    let aad = aad(sealed.header(), ctx);
    let aead_key = derive(key, LABEL_AEAD);
    let cipher = XChaCha20Poly1305::new((&*aead_key).into());
    cipher
        .decrypt(
            XNonce::from_slice(sealed.nonce()),
            Payload {
                msg: sealed.ciphertext(),
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| FieldCryptoError::Unauthentic)
}

fn index_with(key: &Key, table: &str, field: &str, value: &[u8]) -> BlindIndex {
    let index_key = derive(key, LABEL_INDEX);
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&index_key[..])
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for part in [table.as_bytes(), field.as_bytes(), value] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    BlindIndex(mac.finalize().into_bytes().into())
}

#[cfg(test)]
mod tests;
