//! [`KeyRing`]: named, versioned keys.
//!
//! One key is *active* for new work (signing, MACs, encryption); older keys stay available for
//! verification until they retire. Keys come from the environment, a file or a caller-supplied
//! [`KeySource`]; a key ring is never generated implicitly.
//!
//! # Text format
//!
//! One key per line; blank lines and lines starting with `#` are ignored:
//!
//! ```text
//! <id> <version> <base64 material> [not_before=<unix seconds>] [retire_after=<unix seconds>]
//! ```
//!
//! Ids are 1 to 64 characters of `A-Za-z0-9._-`; material is standard base64 of at least
//! [`MIN_KEY_BYTES`] bytes. In an environment variable, `;` may separate lines.
//!
//! ```
//! use palisade_core::{KeyRing, ManualClock, Clock};
//!
//! let text = "\
//! k2024 1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= retire_after=1800000000
//! k2025 2 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE= not_before=1700000000";
//! let ring = KeyRing::parse(text)?;
//! let clock = ManualClock::at_unix(1_750_000_000);
//! assert_eq!(ring.active(clock.now())?.id().as_str(), "k2025");
//! assert!(ring.verification_key("k2024", clock.now()).is_some());
//! assert!(!format!("{ring:?}").contains("AQEB"));
//! # Ok::<_, palisade_core::KeyRingError>(())
//! ```

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretSlice};
use zeroize::Zeroizing;

/// The shortest key material accepted, in bytes (256 bits).
pub const MIN_KEY_BYTES: usize = 32;

/// The largest key-ring text read from a source, in bytes.
const MAX_SOURCE_BYTES: usize = 64 * 1024;

/// The name of a key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(Arc<str>);

impl KeyId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One key: id, version, secret material and validity window.
pub struct Key {
    id: KeyId,
    version: u32,
    material: SecretSlice<u8>,
    not_before: Option<SystemTime>,
    retire_after: Option<SystemTime>,
}

impl Key {
    /// A key. Fails if the id is malformed or the material shorter than [`MIN_KEY_BYTES`].
    pub fn new(
        id: &str,
        version: u32,
        material: SecretSlice<u8>,
        not_before: Option<SystemTime>,
        retire_after: Option<SystemTime>,
    ) -> Result<Self, KeyRingError> {
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(KeyRingError::InvalidId);
        }
        if material.expose_secret().len() < MIN_KEY_BYTES {
            return Err(KeyRingError::ShortKey { id: id.to_owned() });
        }
        if let (Some(nb), Some(ra)) = (not_before, retire_after)
            && ra <= nb
        {
            return Err(KeyRingError::EmptyWindow { id: id.to_owned() });
        }
        Ok(Self {
            id: KeyId(id.into()),
            version,
            material,
            not_before,
            retire_after,
        })
    }

    /// The key id.
    pub fn id(&self) -> &KeyId {
        &self.id
    }
    /// The version; the highest valid version is active.
    pub fn version(&self) -> u32 {
        self.version
    }
    /// The secret material.
    pub fn material(&self) -> &SecretSlice<u8> {
        &self.material
    }
    /// Not valid before this time.
    pub fn not_before(&self) -> Option<SystemTime> {
        self.not_before
    }
    /// Not valid after this time.
    pub fn retire_after(&self) -> Option<SystemTime> {
        self.retire_after
    }

    /// Whether the key is valid at `now`.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.not_before.is_none_or(|nb| nb <= now) && self.retire_after.is_none_or(|ra| now < ra)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("version", &self.version)
            .field("material", &"[REDACTED]")
            .field("not_before", &self.not_before)
            .field("retire_after", &self.retire_after)
            .finish()
    }
}

/// Where key-ring text comes from.
pub trait KeySource: Send + Sync {
    /// Returns the key-ring text (see the module docs for the format).
    fn load(&self) -> Result<Zeroizing<String>, KeyRingError>;
}

impl<F> KeySource for F
where
    F: Fn() -> Result<Zeroizing<String>, KeyRingError> + Send + Sync,
{
    fn load(&self) -> Result<Zeroizing<String>, KeyRingError> {
        self()
    }
}

/// Keys by id, newest version first.
#[derive(Clone, Debug)]
pub struct KeyRing {
    keys: Arc<[Key]>,
}

impl KeyRing {
    /// A ring of `keys`. Fails when empty or when ids or versions repeat.
    pub fn new(mut keys: Vec<Key>) -> Result<Self, KeyRingError> {
        if keys.is_empty() {
            return Err(KeyRingError::Empty);
        }
        keys.sort_by_key(|k| std::cmp::Reverse(k.version));
        for (i, key) in keys.iter().enumerate() {
            for other in &keys[i + 1..] {
                if other.id == key.id {
                    return Err(KeyRingError::DuplicateId {
                        id: key.id.to_string(),
                    });
                }
                if other.version == key.version {
                    return Err(KeyRingError::DuplicateVersion {
                        version: key.version,
                    });
                }
            }
        }
        Ok(Self { keys: keys.into() })
    }

    /// Parses key-ring text.
    pub fn parse(text: &str) -> Result<Self, KeyRingError> {
        let mut keys = Vec::new();
        for (index, line) in text.split(['\n', ';']).enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            keys.push(parse_line(line).map_err(|reason| KeyRingError::Syntax {
                line: index + 1,
                reason,
            })?);
        }
        Self::new(keys)
    }

    /// Loads the ring from environment variable `var`.
    pub fn from_env(var: &str) -> Result<Self, KeyRingError> {
        let text = Zeroizing::new(std::env::var(var).map_err(|_| KeyRingError::Missing {
            source_name: var.to_owned(),
        })?);
        if text.len() > MAX_SOURCE_BYTES {
            return Err(KeyRingError::TooLarge);
        }
        Self::parse(&text)
    }

    /// Loads the ring from a file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyRingError> {
        let path = path.as_ref();
        let missing = || KeyRingError::Missing {
            source_name: path.display().to_string(),
        };
        let file = std::fs::File::open(path).map_err(|_| missing())?;
        // Read at most one byte past the limit: a FIFO or a growing file cannot make us read
        // without bound.
        let mut bytes = Zeroizing::new(Vec::new());
        std::io::Read::read_to_end(
            &mut std::io::Read::take(file, MAX_SOURCE_BYTES as u64 + 1),
            &mut bytes,
        )
        .map_err(|_| missing())?;
        if bytes.len() > MAX_SOURCE_BYTES {
            return Err(KeyRingError::TooLarge);
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| KeyRingError::Syntax {
            line: 0,
            reason: "key ring file is not UTF-8",
        })?;
        Self::parse(text)
    }

    /// Loads the ring from a caller-supplied source (a secret manager, for example).
    pub fn from_source(source: &dyn KeySource) -> Result<Self, KeyRingError> {
        let text = source.load()?;
        if text.len() > MAX_SOURCE_BYTES {
            return Err(KeyRingError::TooLarge);
        }
        Self::parse(&text)
    }

    /// The key for new work at `now`: the highest version valid at `now`.
    pub fn active(&self, now: SystemTime) -> Result<&Key, KeyRingError> {
        self.keys
            .iter()
            .find(|k| k.is_valid_at(now))
            .ok_or(KeyRingError::NoActiveKey)
    }

    /// The key named `id`, if it is valid at `now`. Retired and not-yet-valid keys verify
    /// nothing.
    pub fn verification_key(&self, id: &str, now: SystemTime) -> Option<&Key> {
        self.keys
            .iter()
            .find(|k| k.id.as_str() == id)
            .filter(|k| k.is_valid_at(now))
    }

    /// Every key, newest version first.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }
}

fn parse_line(line: &str) -> Result<Key, &'static str> {
    let mut parts = line.split_ascii_whitespace();
    let id = parts.next().ok_or("missing id")?;
    let version = parts
        .next()
        .ok_or("missing version")?
        .parse::<u32>()
        .map_err(|_| "version is not a number")?;
    let encoded = parts.next().ok_or("missing key material")?;
    let material = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "key material is not base64")?,
    );
    let (mut not_before, mut retire_after) = (None, None);
    for attr in parts {
        let (name, value) = attr.split_once('=').ok_or("attribute without '='")?;
        let secs = value
            .parse::<u64>()
            .map_err(|_| "time is not unix seconds")?;
        let at = UNIX_EPOCH
            .checked_add(Duration::from_secs(secs))
            .ok_or("time is out of range")?;
        match name {
            "not_before" => not_before = Some(at),
            "retire_after" => retire_after = Some(at),
            _ => return Err("unknown attribute"),
        }
    }
    let material: SecretSlice<u8> = material.to_vec().into();
    Key::new(id, version, material, not_before, retire_after).map_err(|e| match e {
        KeyRingError::InvalidId => "invalid key id",
        KeyRingError::ShortKey { .. } => "key material shorter than 32 bytes",
        _ => "retire_after is not after not_before",
    })
}

/// Why a key ring could not be built or used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRingError {
    /// The ring holds no key.
    #[error("the key ring is empty")]
    Empty,
    /// The environment variable or file does not exist or cannot be read.
    #[error("key source {source_name:?} is missing or unreadable")]
    Missing {
        /// The variable name or path.
        source_name: String,
    },
    /// The source is larger than 64 KiB.
    #[error("key source is larger than 64 KiB")]
    TooLarge,
    /// A line of key-ring text is malformed.
    #[error("key ring line {line}: {reason}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A key id is empty, longer than 64 characters or uses other characters than
    /// `A-Za-z0-9._-`.
    #[error("invalid key id")]
    InvalidId,
    /// Key material is shorter than [`MIN_KEY_BYTES`].
    #[error("key {id:?} is shorter than 32 bytes")]
    ShortKey {
        /// The key id.
        id: String,
    },
    /// `retire_after` is not after `not_before`.
    #[error("key {id:?} retires before it becomes valid")]
    EmptyWindow {
        /// The key id.
        id: String,
    },
    /// Two keys share an id.
    #[error("duplicate key id {id:?}")]
    DuplicateId {
        /// The key id.
        id: String,
    },
    /// Two keys share a version.
    #[error("duplicate key version {version}")]
    DuplicateVersion {
        /// The version.
        version: u32,
    },
    /// No key is valid now.
    #[error("no key in the ring is valid now")]
    NoActiveKey,
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    const K2: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn rotation_window() {
        let ring = KeyRing::parse(&format!(
            "old 1 {K1} retire_after=200\nnew 2 {K2} not_before=100"
        ))
        .unwrap();
        assert_eq!(ring.active(at(50)).unwrap().id().as_str(), "old");
        assert_eq!(ring.active(at(150)).unwrap().id().as_str(), "new");
        assert!(ring.verification_key("old", at(150)).is_some());
        assert!(ring.verification_key("old", at(200)).is_none());
        assert!(ring.verification_key("new", at(50)).is_none());
        assert!(ring.verification_key("nope", at(150)).is_none());
    }

    #[test]
    fn no_active_key_is_an_error() {
        let ring = KeyRing::parse(&format!("only 1 {K1} retire_after=10")).unwrap();
        assert_eq!(ring.active(at(20)).unwrap_err(), KeyRingError::NoActiveKey);
    }

    #[test]
    fn rejects_bad_rings() {
        let short = "AAAA";
        let cases = [
            String::new(),
            format!("a 1 {short}"),
            format!("a 1 {K1}\na 2 {K2}"),
            format!("a 1 {K1}\nb 1 {K2}"),
            format!("a x {K1}"),
            "a 1 not-base64!".to_string(),
            format!("a/b 1 {K1}"),
            format!("a 1 {K1} color=blue"),
            format!("a 1 {K1} not_before=10 retire_after=10"),
            format!("a 1 {K1} not_before=18446744073709551615"),
        ];
        for case in cases {
            assert!(KeyRing::parse(&case).is_err(), "{case}");
        }
    }

    #[test]
    fn env_and_source_loading() {
        assert!(matches!(
            KeyRing::from_env("PALISADE_TEST_KEYRING_THAT_IS_NOT_SET"),
            Err(KeyRingError::Missing { .. })
        ));
        let source = || Ok(Zeroizing::new(format!("a 1 {K1}; b 2 {K2}")));
        let ring = KeyRing::from_source(&source).unwrap();
        assert_eq!(ring.keys().len(), 2);
        assert!(matches!(
            KeyRing::from_file("/nonexistent/palisade/keys"),
            Err(KeyRingError::Missing { .. })
        ));
    }

    #[test]
    fn file_loading_is_bounded() {
        let dir = std::env::temp_dir().join(format!("palisade-keyring-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("ring");
        std::fs::write(&good, format!("a 1 {K1}\n")).unwrap();
        assert_eq!(KeyRing::from_file(&good).unwrap().keys().len(), 1);
        let big = dir.join("big");
        std::fs::write(&big, "#".repeat(MAX_SOURCE_BYTES + 10)).unwrap();
        assert_eq!(
            KeyRing::from_file(&big).unwrap_err(),
            KeyRingError::TooLarge
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_redacts_material() {
        let ring = KeyRing::parse(&format!("a 1 {K2}")).unwrap();
        let text = format!("{ring:?}");
        assert!(text.contains("REDACTED"));
        assert!(!text.contains("AQEB") && !text.contains("[1, 1"));
    }
}
