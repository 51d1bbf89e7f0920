//! Strict compact-JWS parsing and header checks (pipeline steps 2 and 3).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::error::AuthnError;

/// The default token size cap.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Longest `kid` accepted.
const MAX_KID_BYTES: usize = 256;

/// The three parts of a compact JWS, still encoded.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Compact<'a> {
    pub(crate) header: &'a str,
    pub(crate) payload: &'a str,
    pub(crate) signature: &'a str,
    /// `header.payload`, the signing input.
    pub(crate) signing_input: &'a str,
}

/// Splits a token after checking its size and alphabet: exactly three non-empty parts of
/// base64url characters, no padding, nothing else.
pub(crate) fn split(token: &str, max: usize) -> Result<Compact<'_>, AuthnError> {
    if token.len() > max {
        return Err(AuthnError::TooLarge { max });
    }
    let mut parts = token.splitn(4, '.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthnError::Malformed);
    };
    for part in [header, payload, signature] {
        if part.is_empty()
            || !part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            || part.len() % 4 == 1
        {
            return Err(AuthnError::Malformed);
        }
    }
    Ok(Compact {
        header,
        payload,
        signature,
        signing_input: &token[..header.len() + 1 + payload.len()],
    })
}

/// Decodes one base64url part.
pub(crate) fn decode_part(part: &str) -> Result<Vec<u8>, AuthnError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthnError::Malformed)
}

/// The header fields Palisade reads. Duplicate keys are an error (serde's derive rejects
/// them); unknown keys are ignored unless they select keys.
#[derive(Deserialize)]
struct RawHeader<'a> {
    #[serde(borrow)]
    alg: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    kid: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    typ: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    cty: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
    #[serde(default)]
    jku: Option<IgnoredAny>,
    #[serde(default)]
    x5u: Option<IgnoredAny>,
    #[serde(default)]
    jwk: Option<IgnoredAny>,
    #[serde(default)]
    x5c: Option<IgnoredAny>,
}

/// Which access-token typing the issuer uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenTypeMode {
    /// Keycloak's default: header `typ` `JWT` (or absent) and claim `typ: "Bearer"`.
    #[default]
    Keycloak,
    /// RFC 9068: header `typ: at+jwt` (or `application/at+jwt`).
    Rfc9068,
}

/// A checked header.
#[derive(Clone, Debug)]
pub(crate) struct Header {
    pub(crate) alg: Algorithm,
    pub(crate) kid: String,
    pub(crate) typ: Option<String>,
}

/// Checks the header `typ` against the issuer's token-type mode.
pub(crate) fn check_type(header: &Header, mode: TokenTypeMode) -> Result<(), AuthnError> {
    let typ = header.typ.as_deref();
    let ok = match mode {
        TokenTypeMode::Keycloak => typ.is_none_or(|t| t.eq_ignore_ascii_case("jwt")),
        TokenTypeMode::Rfc9068 => typ.is_some_and(|t| {
            t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
        }),
    };
    if ok {
        Ok(())
    } else {
        Err(AuthnError::HeaderType(
            typ.unwrap_or("").chars().take(32).collect(),
        ))
    }
}

/// Decodes and checks the header (step 3), except `typ`, which depends on the issuer.
pub(crate) fn header(compact: &Compact<'_>) -> Result<Header, AuthnError> {
    let bytes = decode_part(compact.header)?;
    // serde would also read a struct from a JSON array: only an object is a header.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(AuthnError::MalformedHeader);
    }
    let raw: RawHeader<'_> =
        serde_json::from_slice(&bytes).map_err(|_| AuthnError::MalformedHeader)?;
    for (present, name) in [
        (raw.jku.is_some(), "jku"),
        (raw.x5u.is_some(), "x5u"),
        (raw.jwk.is_some(), "jwk"),
        (raw.x5c.is_some(), "x5c"),
    ] {
        if present {
            return Err(AuthnError::EmbeddedKey(name));
        }
    }
    if raw.crit.is_some() {
        return Err(AuthnError::CriticalExtension);
    }
    if raw
        .cty
        .as_deref()
        .is_some_and(|c| c.eq_ignore_ascii_case("jwt"))
    {
        return Err(AuthnError::Nested);
    }
    let alg = accepted_algorithm(&raw.alg)?;
    let kid = match raw.kid {
        Some(k) if !k.is_empty() && k.len() <= MAX_KID_BYTES => k.into_owned(),
        _ => return Err(AuthnError::BadKid),
    };
    Ok(Header {
        alg,
        kid,
        typ: raw.typ.map(|t| t.chars().take(64).collect()),
    })
}

/// The asymmetric algorithms accepted from an identity provider. `none` and HMAC never are.
pub(crate) fn accepted_algorithm(alg: &str) -> Result<Algorithm, AuthnError> {
    Ok(match alg {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        other => {
            return Err(AuthnError::AlgorithmRejected(
                other.chars().take(16).collect(),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token(header: &str) -> String {
        format!("{}.{}.{}", b64(header), b64("{}"), b64("sig"))
    }

    #[test]
    fn split_table() {
        let ok = "aaaa.bbbb.cccc";
        assert!(split(ok, 100).is_ok());
        let bad = [
            "",
            "a.b",
            "a.b.c.d",
            ".b.c",
            "a..c",
            "a.b.",
            "a=.b.c",
            "a.b+.c",
            "a.b/.c",
            "a.b.c ",
            "aaaaa.b.c",
        ];
        for t in bad {
            assert!(matches!(split(t, 100), Err(AuthnError::Malformed)), "{t:?}");
        }
        assert_eq!(split(ok, 5).unwrap_err(), AuthnError::TooLarge { max: 5 });
    }

    #[test]
    fn header_table() {
        let cases: &[(&str, Result<(), AuthnError>)] = &[
            (r#"{"alg":"RS256","kid":"k","typ":"JWT"}"#, Ok(())),
            (r#"{"alg":"ES256","kid":"k"}"#, Ok(())),
            (
                r#"{"alg":"none","kid":"k"}"#,
                Err(AuthnError::AlgorithmRejected("none".into())),
            ),
            (
                r#"{"alg":"NONE","kid":"k"}"#,
                Err(AuthnError::AlgorithmRejected("NONE".into())),
            ),
            (
                r#"{"alg":"nOnE","kid":"k"}"#,
                Err(AuthnError::AlgorithmRejected("nOnE".into())),
            ),
            (
                r#"{"alg":"HS256","kid":"k"}"#,
                Err(AuthnError::AlgorithmRejected("HS256".into())),
            ),
            (
                r#"{"alg":"RS256","kid":"k","jku":"https://evil/jwks"}"#,
                Err(AuthnError::EmbeddedKey("jku")),
            ),
            (
                r#"{"alg":"RS256","kid":"k","x5u":"https://evil/c"}"#,
                Err(AuthnError::EmbeddedKey("x5u")),
            ),
            (
                r#"{"alg":"RS256","kid":"k","jwk":{"kty":"oct","k":"AA"}}"#,
                Err(AuthnError::EmbeddedKey("jwk")),
            ),
            (
                r#"{"alg":"RS256","kid":"k","x5c":["MII"]}"#,
                Err(AuthnError::EmbeddedKey("x5c")),
            ),
            (
                r#"{"alg":"RS256","kid":"k","crit":["exp"]}"#,
                Err(AuthnError::CriticalExtension),
            ),
            (
                r#"{"alg":"RS256","kid":"k","cty":"JWT"}"#,
                Err(AuthnError::Nested),
            ),
            (
                r#"{"alg":"RS256","kid":"k","typ":"at+jwt"}"#,
                Err(AuthnError::HeaderType("at+jwt".into())),
            ),
            (r#"{"alg":"RS256"}"#, Err(AuthnError::BadKid)),
            (r#"{"alg":"RS256","kid":""}"#, Err(AuthnError::BadKid)),
            (
                r#"{"alg":"RS256","alg":"none","kid":"k"}"#,
                Err(AuthnError::MalformedHeader),
            ),
            (
                r#"{"alg":"RS256","kid":"k","kid":"j"}"#,
                Err(AuthnError::MalformedHeader),
            ),
            (r#"["RS256"]"#, Err(AuthnError::MalformedHeader)),
            (r#"{"alg":1,"kid":"k"}"#, Err(AuthnError::MalformedHeader)),
        ];
        for (h, want) in cases {
            let t = token(h);
            let got = split(&t, 8192)
                .and_then(|c| header(&c))
                .and_then(|h| check_type(&h, TokenTypeMode::Keycloak))
                .map(|_| ());
            assert_eq!(&got, want, "{h}");
        }
        let long_kid = format!(r#"{{"alg":"RS256","kid":"{}"}}"#, "k".repeat(300));
        assert_eq!(
            header(&split(&token(&long_kid), 8192).unwrap()).unwrap_err(),
            AuthnError::BadKid
        );
        let rfc = |h: &str| {
            let t = token(h);
            check_type(
                &header(&split(&t, 8192).unwrap()).unwrap(),
                TokenTypeMode::Rfc9068,
            )
        };
        assert!(rfc(r#"{"alg":"ES256","kid":"k","typ":"at+jwt"}"#).is_ok());
        assert!(rfc(r#"{"alg":"ES256","kid":"k","typ":"application/at+jwt"}"#).is_ok());
        assert!(rfc(r#"{"alg":"ES256","kid":"k","typ":"JWT"}"#).is_err());
    }
}
