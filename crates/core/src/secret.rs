//! Secrets that never print, and constant-time comparison.
//!
//! Palisade keeps tokens, keys and MACs in [`secrecy`] types: their `Debug` output is redacted
//! and their memory is zeroized on drop. Compare secret bytes only with [`constant_time_eq`].
//!
//! ```
//! use palisade_core::secret::{ExposeSecret, SecretString, constant_time_eq};
//!
//! let token = SecretString::from("s3cr3t-token");
//! assert!(!format!("{token:?}").contains("s3cr3t"));
//! assert!(constant_time_eq(token.expose_secret().as_bytes(), b"s3cr3t-token"));
//! assert!(!constant_time_eq(b"a", b"ab"));
//! ```

pub use secrecy::{ExposeSecret, SecretBox, SecretSlice, SecretString};
pub use zeroize::{Zeroize, Zeroizing};

use subtle::ConstantTimeEq;

/// Compares two byte strings in time that depends only on their lengths, never on where they
/// differ. Strings of different lengths are unequal.
#[must_use]
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_table() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"", b"", true),
            (b"abc", b"abc", true),
            (b"abc", b"abd", false),
            (b"abc", b"ab", false),
            (b"", b"a", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(constant_time_eq(a, b), *want, "{a:?} vs {b:?}");
        }
    }
}
