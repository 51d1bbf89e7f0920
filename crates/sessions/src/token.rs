//! The refresh token format: `rt1.<family id>.<secret>`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use palisade_core::secret::{ExposeSecret, SecretString};

use crate::store::FamilyId;

/// A refresh token. Its `Debug` output is redacted; read it with [`RefreshToken::expose`]
/// only to hand it to the client.
pub struct RefreshToken(SecretString);

impl RefreshToken {
    /// A fresh token for `family`: 256 bits from the operating system's CSPRNG.
    pub(crate) fn generate(family: &FamilyId) -> Option<Self> {
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).ok()?;
        Some(Self(SecretString::from(format!(
            "rt1.{}.{}",
            family.as_str(),
            URL_SAFE_NO_PAD.encode(secret)
        ))))
    }

    /// A token from its text (a successor recovered in the grace window).
    pub(crate) fn from_text(text: &str) -> Self {
        Self(SecretString::from(text.to_owned()))
    }

    /// The token text, to send to the client.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken([REDACTED])")
    }
}

/// Splits a presented token strictly; `None` for anything malformed.
pub(crate) fn parse(token: &str) -> Option<FamilyId> {
    let rest = token.strip_prefix("rt1.")?;
    let (family, secret) = rest.split_once('.')?;
    let b64 = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !b64(family, 22) || !b64(secret, 43) {
        return None;
    }
    FamilyId::parse(family)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_parsing() {
        let family = FamilyId::generate().unwrap();
        let token = RefreshToken::generate(&family).unwrap();
        assert_eq!(parse(token.expose()), Some(family.clone()));
        assert!(!format!("{token:?}").contains(family.as_str()));
        let good = token.expose().to_owned();
        for bad in [
            "",
            "rt1",
            "rt1..",
            &good.replace("rt1.", "rt2."),
            &format!("{good}x"),
            &good[..good.len() - 1],
            &good.replace('.', ":"),
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
