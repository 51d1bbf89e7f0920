//! Local JWTs: access tokens this service issues itself, signed with keys from a
//! [`KeyRing`], verified by the same [`Authenticator`](crate::Authenticator) as Keycloak's.
//!
//! - Ed25519 (EdDSA) keys, derived from each ring key's material (SHA-256 with a domain label,
//!   so a ring key shared with another use yields an unrelated signing key).
//! - `kid` is the RFC 7638 JWK thumbprint of the public key.
//! - The ring's active key signs; every key not yet retired verifies, so tokens issued before
//!   a rotation keep working until their key retires.
//! - Tokens always carry an audience, and the verifying surface always checks it.
//! - No implicit keys: without a key ring the builder refuses in production; in development it
//!   generates a throwaway key, logs a loud warning and records a posture finding.
//!
//! ```
//! use palisade_authn::local::{LocalClaims, LocalJwtIssuer};
//! use palisade_authn::{Authenticator, IssuerConfig, KeySource, SurfacePolicy};
//! use palisade_core::{KeyRing, Profile, Surface};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ring = KeyRing::parse("k1 1 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=")?;
//! let issuer = LocalJwtIssuer::builder("https://api.example.com/local")
//!     .profile(Profile::Production)
//!     .key_ring(ring)
//!     .build()?;
//! let token = issuer.issue(&LocalClaims::new("user-7", ["api"]).authorized_party("cli").org("org-1"))?;
//!
//! let auth = Authenticator::builder()
//!     .issuer(IssuerConfig::new(issuer.issuer())?.key_source(KeySource::Static(issuer.key_set())))
//!     .build()
//!     .await?;
//! let policy = SurfacePolicy::new(Surface::API).audiences(["api"]).authorized_parties(["cli"]);
//! let identity = auth.verify(&token, &policy).await?;
//! assert_eq!(identity.org(), Some("org-1"));
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use palisade_core::secret::ExposeSecret;
use palisade_core::{KeyRing, Posture, Profile, Severity, SharedClock, SystemClock};
use serde_json::{Value, json};

use crate::error::{BuildError, ConfigError};
use crate::jwks::{KeySet, VerificationKey};

/// Domain label for deriving Ed25519 seeds from ring key material.
const SEED_LABEL: &[u8] = b"palisade local-jwt ed25519 v1\0";

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410), followed by the 32-byte seed.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

struct LocalKey {
    kid: String,
    encoding: EncodingKey,
    x: String,
    not_before: Option<SystemTime>,
    retire_after: Option<SystemTime>,
    version: u32,
}

impl std::fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKey")
            .field("kid", &self.kid)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

fn key_from_seed(
    seed: &[u8; 32],
    version: u32,
    not_before: Option<SystemTime>,
    retire_after: Option<SystemTime>,
) -> Result<LocalKey, ConfigError> {
    let pair = Ed25519KeyPair::from_seed_unchecked(seed)
        .map_err(|_| ConfigError::InvalidJwks("cannot derive an Ed25519 key".into()))?;
    let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    // RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace.
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    let kid =
        URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref());
    let mut pkcs8 = zeroizing_vec(48);
    pkcs8.extend_from_slice(&PKCS8_ED25519_PREFIX);
    pkcs8.extend_from_slice(seed);
    Ok(LocalKey {
        kid,
        encoding: EncodingKey::from_ed_der(&pkcs8),
        x,
        not_before,
        retire_after,
        version,
    })
}

fn zeroizing_vec(capacity: usize) -> palisade_core::secret::Zeroizing<Vec<u8>> {
    palisade_core::secret::Zeroizing::new(Vec::with_capacity(capacity))
}

fn derive_seed(material: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(SEED_LABEL);
    ctx.update(material);
    let mut seed = [0u8; 32];
    seed.copy_from_slice(ctx.finish().as_ref());
    seed
}

/// Builds a [`LocalJwtIssuer`].
#[derive(Debug)]
#[must_use]
pub struct LocalJwtBuilder {
    issuer: String,
    profile: Profile,
    ring: Option<KeyRing>,
    ttl: Duration,
    clock: SharedClock,
}

impl LocalJwtBuilder {
    /// The profile the configuration is checked against (default: production).
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// The signing keys (required in production).
    pub fn key_ring(mut self, ring: KeyRing) -> Self {
        self.ring = Some(ring);
        self
    }

    /// Token lifetime (default 5 minutes).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The clock.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the issuer.
    pub fn build(self) -> Result<LocalJwtIssuer, BuildError> {
        crate::verifier::install_crypto_providers();
        let mut posture = Posture::new(self.profile, "local-jwt");
        if self.ring.is_none() {
            posture.record(
                Severity::Deny,
                "local-jwt-generated-key",
                "no key ring: a throwaway signing key is generated, and tokens die with the process",
            );
        }
        if self.ttl > Duration::from_secs(3600) {
            posture.record(
                Severity::Warn,
                "local-jwt-long-ttl",
                "local access tokens live longer than an hour",
            );
        }
        let findings = posture.finish()?;
        let keys = match &self.ring {
            Some(ring) => ring
                .keys()
                .iter()
                .map(|k| {
                    key_from_seed(
                        &derive_seed(k.material().expose_secret()),
                        k.version(),
                        k.not_before(),
                        k.retire_after(),
                    )
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => {
                tracing::warn!(target: "palisade::authn", "LOCAL JWT ISSUER USES A GENERATED KEY: development only; configure a key ring");
                let mut seed = [0u8; 32];
                aws_lc_rs::rand::fill(&mut seed)
                    .map_err(|_| ConfigError::InvalidJwks("no randomness".into()))?;
                vec![key_from_seed(&seed, 1, None, None)?]
            }
        };
        Ok(LocalJwtIssuer {
            inner: Arc::new(Inner {
                issuer: self.issuer,
                keys,
                ttl: self.ttl,
                clock: self.clock,
                profile: self.profile,
                findings,
            }),
        })
    }
}

#[derive(Debug)]
struct Inner {
    issuer: String,
    keys: Vec<LocalKey>,
    ttl: Duration,
    clock: SharedClock,
    profile: Profile,
    findings: Vec<palisade_core::Finding>,
}

/// Issues local access tokens (see the module docs).
#[derive(Clone, Debug)]
pub struct LocalJwtIssuer {
    inner: Arc<Inner>,
}

/// Why a token could not be issued.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// No audience: local tokens always name one.
    #[error("a local token needs an audience")]
    NoAudience,
    /// No key is valid now.
    #[error("no signing key is valid now")]
    NoActiveKey,
    /// Signing failed.
    #[error("signing failed")]
    Signing,
}

/// What a local token says.
#[derive(Clone, Debug)]
pub struct LocalClaims {
    subject: String,
    audience: Vec<String>,
    azp: Option<String>,
    realm_roles: Vec<String>,
    org: Option<String>,
    team: Option<String>,
    session_id: Option<String>,
    amr: Vec<String>,
    actor: Option<(String, String)>,
}

impl LocalClaims {
    /// Claims for `subject`, for `audience`.
    pub fn new<I, S>(subject: &str, audience: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            subject: subject.to_owned(),
            audience: audience.into_iter().map(Into::into).collect(),
            azp: None,
            realm_roles: Vec::new(),
            org: None,
            team: None,
            session_id: None,
            amr: Vec::new(),
            actor: None,
        }
    }

    /// The client the token is for (`azp`).
    #[must_use]
    pub fn authorized_party(mut self, azp: &str) -> Self {
        self.azp = Some(azp.to_owned());
        self
    }

    /// Realm roles.
    #[must_use]
    pub fn roles<I: IntoIterator<Item = S>, S: Into<String>>(mut self, roles: I) -> Self {
        self.realm_roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// The org (tenant).
    #[must_use]
    pub fn org(mut self, org: &str) -> Self {
        self.org = Some(org.to_owned());
        self
    }

    /// The team.
    #[must_use]
    pub fn team(mut self, team: &str) -> Self {
        self.team = Some(team.to_owned());
        self
    }

    /// The session (token family) id, carried as `sid`.
    #[must_use]
    pub fn session_id(mut self, sid: &str) -> Self {
        self.session_id = Some(sid.to_owned());
        self
    }

    /// Names the actor of an impersonation (RFC 8693 `act`: `iss` and `sub` of the admin);
    /// the verified [`Identity`](palisade_core::Identity) then carries
    /// [`AuthMethod::Impersonation`](palisade_core::AuthMethod::Impersonation).
    #[must_use]
    pub fn actor(mut self, issuer: &str, subject: &str) -> Self {
        self.actor = Some((issuer.to_owned(), subject.to_owned()));
        self
    }

    /// Authentication methods (`amr`).
    #[must_use]
    pub fn amr<I: IntoIterator<Item = S>, S: Into<String>>(mut self, amr: I) -> Self {
        self.amr = amr.into_iter().map(Into::into).collect();
        self
    }
}

impl LocalJwtBuilder {
    fn new(issuer: &str) -> Self {
        Self {
            issuer: issuer.to_owned(),
            profile: Profile::Production,
            ring: None,
            ttl: Duration::from_secs(300),
            clock: SystemClock::shared(),
        }
    }
}

impl LocalJwtIssuer {
    /// The non-blocking findings recorded while the issuer was built (for example
    /// `local-jwt-long-ttl`).
    pub fn findings(&self) -> &[palisade_core::Finding] {
        &self.inner.findings
    }

    /// The profile the issuer was checked under when it was built.
    pub fn profile(&self) -> Profile {
        self.inner.profile
    }

    /// A builder for issuer `issuer` (the `iss` of every token).
    pub fn builder(issuer: &str) -> LocalJwtBuilder {
        LocalJwtBuilder::new(issuer)
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    fn valid(key: &LocalKey, now: SystemTime) -> bool {
        key.not_before.is_none_or(|nb| nb <= now) && key.retire_after.is_none_or(|ra| now < ra)
    }

    /// Signs a token with the active key (the highest version valid now).
    pub fn issue(&self, claims: &LocalClaims) -> Result<String, IssueError> {
        if claims.audience.is_empty() {
            return Err(IssueError::NoAudience);
        }
        let now = self.inner.clock.now();
        let key = self
            .inner
            .keys
            .iter()
            .filter(|k| Self::valid(k, now))
            .max_by_key(|k| k.version)
            .ok_or(IssueError::NoActiveKey)?;
        let secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut body = json!({
            "iss": self.inner.issuer,
            "sub": claims.subject,
            "aud": claims.audience,
            "typ": "Bearer",
            "iat": secs,
            "exp": secs.saturating_add(self.inner.ttl.as_secs()),
            "realm_access": {"roles": claims.realm_roles},
        });
        let extra = [
            ("azp", claims.azp.clone()),
            ("org_id", claims.org.clone()),
            ("team_id", claims.team.clone()),
            ("sid", claims.session_id.clone()),
        ];
        for (name, value) in extra {
            if let Some(v) = value {
                body[name] = Value::String(v);
            }
        }
        if !claims.amr.is_empty() {
            body["amr"] = json!(claims.amr);
        }
        if let Some((iss, sub)) = &claims.actor {
            body["act"] = json!({"iss": iss, "sub": sub});
        }
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        header.typ = Some("JWT".to_owned());
        jsonwebtoken::encode(&header, &body, &key.encoding).map_err(|_| IssueError::Signing)
    }

    /// The public keys, for an [`Authenticator`](crate::Authenticator) issuer with
    /// [`KeySource::Static`](crate::KeySource::Static); each key verifies within its ring
    /// validity window.
    pub fn key_set(&self) -> KeySet {
        let mut set = KeySet::default();
        for key in &self.inner.keys {
            if let Ok(decoding) = DecodingKey::from_ed_components(&key.x) {
                set.insert(
                    key.kid.clone(),
                    VerificationKey::new(Algorithm::EdDSA, decoding)
                        .with_window(key.not_before, key.retire_after),
                );
            }
        }
        set
    }

    /// The public keys as a JWKS document, to publish for other services.
    pub fn jwks(&self) -> Value {
        json!({"keys": self.inner.keys.iter().map(|k| json!({
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": k.kid, "x": k.x
        })).collect::<Vec<_>>()})
    }
}

#[cfg(test)]
mod tests {
    use palisade_core::ManualClock;

    use super::*;

    #[test]
    fn rfc7638_thumbprint_of_the_rfc8037_key() {
        // RFC 8037 appendix A.3: the thumbprint of the A.2 public key.
        let pair = Ed25519KeyPair::from_seed_unchecked(
            &URL_SAFE_NO_PAD
                .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
                .unwrap(),
        )
        .unwrap();
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        assert_eq!(x, "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
        let seed: [u8; 32] = URL_SAFE_NO_PAD
            .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .unwrap()
            .try_into()
            .unwrap();
        let key = key_from_seed(&seed, 1, None, None).unwrap();
        assert_eq!(key.kid, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn production_refuses_without_keys_and_development_warns() {
        assert!(matches!(
            LocalJwtIssuer::builder("https://a.example").build(),
            Err(BuildError::Posture(_))
        ));
        let dev = LocalJwtIssuer::builder("https://a.example")
            .profile(Profile::Development)
            .build()
            .unwrap();
        assert!(dev.issue(&LocalClaims::new("u", ["api"])).is_ok());
        assert_eq!(
            dev.issue(&LocalClaims::new("u", Vec::<String>::new()))
                .unwrap_err(),
            IssueError::NoAudience
        );
    }

    #[test]
    fn the_active_key_signs_and_both_keys_are_published() {
        let ring = KeyRing::parse(
            "old 1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= retire_after=2000\n\
             new 2 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE= not_before=1000",
        )
        .unwrap();
        let clock = ManualClock::at_unix(500);
        let issuer = LocalJwtIssuer::builder("https://a.example")
            .key_ring(ring)
            .clock(clock.shared())
            .build()
            .unwrap();
        let kid_of = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
        let before = issuer.issue(&LocalClaims::new("u", ["api"])).unwrap();
        clock.set(UNIX_EPOCH + Duration::from_secs(1500));
        let after = issuer.issue(&LocalClaims::new("u", ["api"])).unwrap();
        assert_ne!(kid_of(&before), kid_of(&after));
        assert_eq!(issuer.key_set().len(), 2);
        assert_eq!(issuer.jwks()["keys"].as_array().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn tokens_verify_until_their_key_retires() {
        use crate::{Authenticator, AuthnError, IssuerConfig, KeySource, SurfacePolicy};
        let ring = KeyRing::parse(
            "old 1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= retire_after=2000
             new 2 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE= not_before=1000",
        )
        .unwrap();
        let clock = ManualClock::at_unix(500);
        let issuer = LocalJwtIssuer::builder("https://a.example")
            .key_ring(ring)
            .ttl(Duration::from_secs(3600))
            .clock(clock.shared())
            .build()
            .unwrap();
        let auth = Authenticator::builder()
            .clock(clock.shared())
            .issuer(
                IssuerConfig::new("https://a.example")
                    .unwrap()
                    .key_source(KeySource::Static(issuer.key_set())),
            )
            .build()
            .await
            .unwrap();
        let policy = SurfacePolicy::new(palisade_core::Surface::API)
            .audiences(["api"])
            .authorized_parties(["cli"]);
        let claims = LocalClaims::new("u", ["api"]).authorized_party("cli");
        let old = issuer.issue(&claims).unwrap();
        clock.set(UNIX_EPOCH + Duration::from_secs(1500));
        let new = issuer.issue(&claims).unwrap();
        assert!(
            auth.verify(&old, &policy).await.is_ok(),
            "overlap: the old key still verifies"
        );
        assert!(auth.verify(&new, &policy).await.is_ok());
        clock.set(UNIX_EPOCH + Duration::from_secs(2100));
        assert_eq!(
            auth.verify(&old, &policy).await.unwrap_err(),
            AuthnError::UnknownKid
        );
        assert!(auth.verify(&new, &policy).await.is_ok());
        // Audience is always enforced.
        let other = issuer
            .issue(&LocalClaims::new("u", ["billing"]).authorized_party("cli"))
            .unwrap();
        assert_eq!(
            auth.verify(&other, &policy).await.unwrap_err(),
            AuthnError::WrongAudience
        );
    }
}
