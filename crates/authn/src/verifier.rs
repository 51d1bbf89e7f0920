//! [`Authenticator`]: issuers, their key caches, and the validation pipeline.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use palisade_core::{Identity, Posture, Profile, Severity, SharedClock, SystemClock};

use crate::claims::{self, ClaimRules};
use crate::error::{AuthnError, BuildError, ConfigError};
use crate::jwks::{CachePolicy, KeyCache, KeySource, Lookup};
use crate::layer::AuthnLayer;
use crate::strict_json;
use crate::surface::SurfacePolicy;
use crate::token::{self, DEFAULT_MAX_TOKEN_BYTES, TokenTypeMode};

/// One trusted issuer (a Keycloak realm).
///
/// ```
/// use std::time::Duration;
/// use palisade_authn::{IssuerConfig, KeySource, TokenTypeMode};
///
/// let issuer = IssuerConfig::new("https://sso.example.com/realms/acme")?
///     .key_source(KeySource::Discovery)
///     .token_type(TokenTypeMode::Keycloak)
///     .max_token_age(Duration::from_secs(3600));
/// # Ok::<_, palisade_authn::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct IssuerConfig {
    issuer: String,
    source: KeySource,
    mode: TokenTypeMode,
    leeway: Duration,
    max_age: Option<Duration>,
    org_claim: String,
    team_claim: String,
    groups_prefix: Option<String>,
    accept_actor: bool,
    cache: CachePolicy,
}

impl IssuerConfig {
    /// An issuer, matched exactly against `iss`. Keys come from discovery by default.
    pub fn new(issuer: &str) -> Result<Self, ConfigError> {
        let uri: http::Uri = issuer
            .parse()
            .map_err(|_| ConfigError::InvalidIssuer(issuer.to_owned()))?;
        if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.host().is_none() {
            return Err(ConfigError::InvalidIssuer(issuer.to_owned()));
        }
        Ok(Self {
            issuer: issuer.to_owned(),
            source: KeySource::Discovery,
            mode: TokenTypeMode::Keycloak,
            leeway: Duration::from_secs(30),
            max_age: Some(Duration::from_secs(24 * 3600)),
            org_claim: "org_id".to_owned(),
            team_claim: "team_id".to_owned(),
            groups_prefix: None,
            accept_actor: false,
            cache: CachePolicy::default(),
        })
    }

    /// Where the keys come from (default: discovery).
    #[must_use]
    pub fn key_source(mut self, source: KeySource) -> Self {
        self.source = source;
        self
    }

    /// Keycloak (`typ: "Bearer"` claim, default) or RFC 9068 (`typ: at+jwt` header).
    #[must_use]
    pub fn token_type(mut self, mode: TokenTypeMode) -> Self {
        self.mode = mode;
        self
    }

    /// Clock leeway for `exp`, `nbf` and `iat` (default 30 s, at most 5 minutes).
    #[must_use]
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway.min(Duration::from_secs(300));
        self
    }

    /// Oldest `iat` accepted (default 24 hours); `None` switches the check off.
    #[must_use]
    pub fn max_token_age(mut self, age: impl Into<Option<Duration>>) -> Self {
        self.max_age = age.into();
        self
    }

    /// Claims holding the org (tenant) and team ids (default `org_id`, `team_id`).
    #[must_use]
    pub fn tenant_claims(mut self, org: &str, team: &str) -> Self {
        self.org_claim = org.to_owned();
        self.team_claim = team.to_owned();
        self
    }

    /// Reads the caller's memberships from the `groups` claim (Keycloak's group membership
    /// mapper with full paths): under `prefix` (for example `/orgs/`), `<org>/<role>` is a
    /// role in an org and `<org>/teams/<team>/<role>` a role in one team of it. Other groups
    /// are ignored, and so are paths with Keycloak's `~` escape; at most 256 memberships, from
    /// group paths of up to 256 bytes, are read.
    #[must_use]
    pub fn memberships_from_groups(mut self, prefix: &str) -> Self {
        // A whole path segment: `/orgs` and `orgs/` both mean `/orgs/` (never `/orgsX/...`).
        let trimmed = prefix.trim_matches('/');
        self.groups_prefix = Some(if trimmed.is_empty() {
            "/".to_owned()
        } else {
            format!("/{trimmed}/")
        });
        self
    }

    /// Accepts RFC 8693 `act` claims from this issuer (an impersonation issuer): the
    /// identity then names the actor. Off by default: a token of any other issuer that
    /// carries `act` is refused, so no identity provider mapper can make a user look like an
    /// admin acting for them.
    #[must_use]
    pub fn accept_actor_claims(mut self) -> Self {
        self.accept_actor = true;
        self
    }

    /// JWKS cache tuning.
    #[must_use]
    pub fn cache_policy(mut self, policy: CachePolicy) -> Self {
        self.cache = policy;
        self
    }
}

/// Builds an [`Authenticator`].
#[derive(Debug)]
#[must_use]
pub struct AuthenticatorBuilder {
    profile: Profile,
    issuers: Vec<IssuerConfig>,
    max_token_bytes: usize,
    clock: SharedClock,
    http: Option<reqwest::Client>,
}

impl AuthenticatorBuilder {
    /// The profile the configuration is checked against (default: production).
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// Trusts `issuer`.
    pub fn issuer(mut self, issuer: IssuerConfig) -> Self {
        self.issuers.push(issuer);
        self
    }

    /// The token size cap (default 8 KiB).
    pub fn max_token_bytes(mut self, max: usize) -> Self {
        self.max_token_bytes = max;
        self
    }

    /// The clock (a [`palisade_core::ManualClock`] in tests).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The HTTP client for discovery and JWKS fetches (for a private CA, say). By default a
    /// rustls client with the platform's roots, no redirects and no idle connections. A
    /// client you supply should also refuse redirects: a redirect could lead key fetches away
    /// from the issuer.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// The findings this configuration produces.
    pub fn posture(&self) -> Posture {
        let mut posture = Posture::new(self.profile, "authn");
        if self.issuers.is_empty() {
            posture.record(
                Severity::Deny,
                "authn-no-issuer",
                "no issuer is trusted: every token is refused",
            );
        }
        for issuer in &self.issuers {
            if issuer.issuer.starts_with("http://") {
                let local = issuer.issuer.starts_with("http://127.")
                    || issuer.issuer.starts_with("http://localhost")
                    || issuer.issuer.starts_with("http://[::1]");
                posture.record(
                    if local {
                        Severity::Warn
                    } else {
                        Severity::Deny
                    },
                    "authn-http-issuer",
                    format!(
                        "issuer {} is plain HTTP: its keys can be swapped in transit",
                        issuer.issuer
                    ),
                );
            }
            if let KeySource::JwksUrl(url) = &issuer.source {
                let local = url.starts_with("http://127.")
                    || url.starts_with("http://localhost")
                    || url.starts_with("http://[::1]");
                if !url.starts_with("https://") {
                    posture.record(
                        if local {
                            Severity::Warn
                        } else {
                            Severity::Deny
                        },
                        "authn-http-jwks",
                        format!("JWKS URL {url} is not HTTPS: its keys can be swapped in transit"),
                    );
                }
            }
            if issuer.max_age.is_none() {
                posture.record(
                    Severity::Warn,
                    "authn-no-max-age",
                    format!("issuer {}: no maximum token age", issuer.issuer),
                );
            }
        }
        if self.max_token_bytes > 64 * 1024 {
            posture.record(
                Severity::Warn,
                "authn-large-tokens",
                "token size cap above 64 KiB",
            );
        }
        posture
    }

    /// Builds the authenticator and loads every issuer's keys. In production, an issuer whose
    /// keys cannot be loaded stops the build (fail closed); in development it is logged and
    /// retried on first use.
    pub async fn build(self) -> Result<Authenticator, BuildError> {
        install_crypto_providers();
        let findings = self.posture().finish()?;
        let http = match self.http {
            Some(client) => client,
            // Fetches are rare: no idle connections to go stale between them.
            None => reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(0)
                .build()
                .map_err(|e| ConfigError::HttpClient(e.to_string()))?,
        };
        let mut issuers = HashMap::new();
        for config in self.issuers {
            let cache = Arc::new(KeyCache::new(
                config.issuer.clone(),
                config.source.clone(),
                http.clone(),
                config.cache,
                self.clock.clone(),
            ));
            if let Err(reason) = cache.refresh(0).await {
                if self.profile.is_production() {
                    return Err(BuildError::KeysUnavailable {
                        issuer: config.issuer,
                        reason,
                    });
                }
                tracing::warn!(target: "palisade::authn", issuer = %config.issuer, %reason, "keys not loaded; will retry on first use");
            }
            let rules = ClaimRules {
                issuer: config.issuer.clone(),
                leeway: config.leeway,
                max_age: config.max_age,
                mode: config.mode,
                org_claim: config.org_claim,
                team_claim: config.team_claim,
                groups_prefix: config.groups_prefix,
                accept_actor: config.accept_actor,
            };
            issuers.insert(
                config.issuer,
                Issuer {
                    rules,
                    cache,
                    refreshing: AtomicBool::new(false),
                },
            );
        }
        Ok(Authenticator {
            inner: Arc::new(Inner {
                profile: self.profile,
                issuers,
                max_token_bytes: self.max_token_bytes,
                clock: self.clock,
                findings,
            }),
        })
    }
}

/// Installs aws-lc-rs as the process default for jsonwebtoken and rustls, so feature
/// unification elsewhere in the dependency graph can never make either pick another provider
/// or panic at first use. Installing twice is harmless.
pub fn install_crypto_providers() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[derive(Debug)]
pub(crate) struct Issuer {
    pub(crate) rules: ClaimRules,
    pub(crate) cache: Arc<KeyCache>,
    refreshing: AtomicBool,
}

#[derive(Debug)]
pub(crate) struct Inner {
    profile: Profile,
    issuers: HashMap<String, Issuer>,
    max_token_bytes: usize,
    clock: SharedClock,
    findings: Vec<palisade_core::Finding>,
}

/// Trusted issuers and their keys; makes one [`AuthnLayer`] per surface, all sharing the keys.
#[derive(Clone, Debug)]
pub struct Authenticator {
    pub(crate) inner: Arc<Inner>,
}

/// The outcome of the synchronous part of verification. Short-lived on the stack; the identity
/// moves on into the request extensions.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Step {
    Done(Result<Identity, AuthnError>),
    /// The keys must be refreshed first (the caller may do so once, then retry).
    Refresh {
        issuer: String,
        requested_at: u64,
    },
}

impl Authenticator {
    /// A builder: no issuer, production profile, 8 KiB tokens.
    pub fn builder() -> AuthenticatorBuilder {
        AuthenticatorBuilder {
            profile: Profile::Production,
            issuers: Vec::new(),
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            clock: SystemClock::shared(),
            http: None,
        }
    }

    /// The current time by the authenticator's clock.
    pub(crate) fn now(&self) -> std::time::SystemTime {
        self.inner.clock.now()
    }

    /// The non-blocking findings recorded when it was built.
    pub fn findings(&self) -> &[palisade_core::Finding] {
        &self.inner.findings
    }

    /// The profile the issuers were checked under when it was built.
    pub fn profile(&self) -> Profile {
        self.inner.profile
    }

    /// A layer for one surface. Refused in production when the policy accepts any client.
    pub fn layer(&self, policy: SurfacePolicy) -> Result<AuthnLayer, BuildError> {
        self.check_policy(&policy)?;
        Ok(AuthnLayer::new(self.clone(), Arc::new(policy)))
    }

    /// The checks of a surface policy, for HTTP and WebSocket layers alike: an audience is
    /// required; in production, a client list, and a second factor on admin surfaces.
    pub(crate) fn check_policy(&self, policy: &SurfacePolicy) -> Result<(), BuildError> {
        if policy.audiences.is_empty() {
            return Err(ConfigError::NoAudience(policy.surface.to_string()).into());
        }
        let mut posture = Posture::new(self.inner.profile, "authn");
        if policy.authorized_parties.is_empty() {
            posture.record(
                Severity::Deny,
                "authn-any-client",
                format!(
                    "surface {} accepts tokens issued to any client (no azp list)",
                    policy.surface
                ),
            );
        }
        let admin = policy.surface == palisade_core::Surface::GLOBAL_ADMIN
            || policy.surface == palisade_core::Surface::ORG_ADMIN;
        if admin && !policy.require_mfa {
            posture.record(
                Severity::Deny,
                "authn-admin-without-mfa",
                format!(
                    "admin surface {} accepts tokens without a second factor",
                    policy.surface
                ),
            );
        }
        posture.finish()?;
        Ok(())
    }

    /// Verifies `token` for `surface` with the keys at hand.
    pub(crate) fn verify_now(
        &self,
        token: &str,
        surface: &SurfacePolicy,
        allow_refresh: bool,
    ) -> Step {
        match self.try_verify(token, surface, allow_refresh) {
            Ok(identity) => Step::Done(Ok(identity)),
            Err(Verdict::Reject(e)) => Step::Done(Err(e)),
            Err(Verdict::Refresh(issuer, requested_at)) => Step::Refresh {
                issuer,
                requested_at,
            },
        }
    }

    /// Refreshes an issuer's keys (single flight).
    pub(crate) async fn refresh(&self, issuer: &str, requested_at: u64) -> Result<(), String> {
        match self.inner.issuers.get(issuer) {
            Some(i) => i.cache.refresh(requested_at).await,
            None => Err("unknown issuer".into()),
        }
    }

    /// Verifies `token` for `surface`, refreshing keys once if needed.
    ///
    /// ```no_run
    /// # async fn demo(auth: palisade_authn::Authenticator, token: &str) {
    /// use palisade_authn::SurfacePolicy;
    /// use palisade_core::Surface;
    /// let policy = SurfacePolicy::new(Surface::API).audiences(["api"]).authorized_parties(["web"]);
    /// match auth.verify(token, &policy).await {
    ///     Ok(identity) => println!("hello {}", identity.subject()),
    ///     Err(reason) => println!("refused: {reason}"),
    /// }
    /// # }
    /// ```
    pub async fn verify(
        &self,
        token: &str,
        surface: &SurfacePolicy,
    ) -> Result<Identity, AuthnError> {
        match self.verify_now(token, surface, true) {
            Step::Done(result) => result,
            Step::Refresh {
                issuer,
                requested_at,
            } => self.finish(token, surface, &issuer, requested_at).await,
        }
    }

    /// The slow path after [`Step::Refresh`]: refresh the issuer's keys (joining a fetch in
    /// flight), then verify once more without asking for another refresh. A kid still missing
    /// after a fetch that started after the request asked is remembered (negative cache); a
    /// failed fetch is a 503, never a 401.
    pub(crate) async fn finish(
        &self,
        token: &str,
        surface: &SurfacePolicy,
        issuer: &str,
        requested_at: u64,
    ) -> Result<Identity, AuthnError> {
        let refreshed = self.refresh(issuer, requested_at).await;
        let result = match self.verify_now(token, surface, false) {
            Step::Done(result) => result,
            Step::Refresh { .. } => Err(AuthnError::UnknownKid),
        };
        match (&result, refreshed) {
            (Err(AuthnError::UnknownKid | AuthnError::KeysUnavailable), Err(_)) => {
                Err(AuthnError::KeysUnavailable)
            }
            (Err(AuthnError::UnknownKid), Ok(())) => {
                if let (Some(cache), Some(kid)) = (
                    self.inner.issuers.get(issuer).map(|i| &i.cache),
                    token::split(token, self.inner.max_token_bytes)
                        .and_then(|c| token::header(&c))
                        .ok()
                        .map(|h| h.kid),
                ) {
                    cache.remember_missing(&kid);
                }
                result
            }
            _ => result,
        }
    }

    /// Fetches an issuer's keys now (for an operator's "rotate now", or tests), waiting for a
    /// fetch already in flight rather than starting a second one.
    pub async fn refresh_keys(&self, issuer: &str) -> Result<(), String> {
        let requested = match self.inner.issuers.get(issuer) {
            Some(i) => i.cache.now_nanos(),
            None => return Err("unknown issuer".into()),
        };
        self.refresh(issuer, requested).await
    }

    /// How many JWKS fetches an issuer's cache has completed.
    pub fn fetch_count(&self, issuer: &str) -> Option<u64> {
        self.inner
            .issuers
            .get(issuer)
            .map(|i| i.cache.fetch_count())
    }

    fn try_verify(
        &self,
        token: &str,
        surface: &SurfacePolicy,
        allow_refresh: bool,
    ) -> Result<Identity, Verdict> {
        let compact = token::split(token, self.inner.max_token_bytes)?;
        let header = token::header(&compact)?;
        let payload = token::decode_part(compact.payload)?;
        let claims = strict_json::parse_object(&payload).ok_or(AuthnError::MalformedClaims)?;
        let iss = claims
            .get("iss")
            .and_then(|v| v.as_str())
            .ok_or(AuthnError::WrongIssuer)?;
        let issuer = self.inner.issuers.get(iss).ok_or(AuthnError::WrongIssuer)?;
        token::check_type(&header, issuer.rules.mode)?;
        let key = match issuer.cache.lookup(&header.kid) {
            Lookup::Found(key) => {
                if issuer.cache.refresh_due() {
                    self.refresh_in_background(iss);
                }
                key
            }
            Lookup::Miss => {
                if allow_refresh
                    && !issuer.cache.known_missing(&header.kid)
                    && issuer.cache.claim_miss_fetch()
                {
                    return Err(Verdict::Refresh(iss.to_owned(), issuer.cache.now_nanos()));
                }
                return Err(AuthnError::UnknownKid.into());
            }
            Lookup::Stale => {
                if allow_refresh && issuer.cache.claim_miss_fetch() {
                    return Err(Verdict::Refresh(iss.to_owned(), issuer.cache.now_nanos()));
                }
                return Err(AuthnError::KeysUnavailable.into());
            }
        };
        if header.alg != key.alg {
            return Err(AuthnError::AlgorithmMismatch {
                header: format!("{:?}", header.alg),
                key: format!("{:?}", key.alg),
            }
            .into());
        }
        let ok = jsonwebtoken::crypto::verify(
            compact.signature,
            compact.signing_input.as_bytes(),
            &key.key,
            key.alg,
        )
        .unwrap_or(false);
        if !ok {
            return Err(AuthnError::BadSignature.into());
        }
        let now = i64::try_from(self.inner.clock.unix_seconds()).unwrap_or(i64::MAX);
        Ok(claims::check(&claims, &issuer.rules, surface, now)?)
    }

    fn refresh_in_background(&self, iss: &str) {
        let Some(issuer) = self.inner.issuers.get(iss) else {
            return;
        };
        if issuer.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            issuer.refreshing.store(false, Ordering::Release);
            return;
        };
        let this = self.clone();
        let iss = iss.to_owned();
        handle.spawn(async move {
            if let Some(issuer) = this.inner.issuers.get(&iss) {
                let requested = issuer.cache.now_nanos();
                if issuer.cache.refresh(requested).await.is_err() {
                    issuer.cache.back_off();
                }
                issuer.refreshing.store(false, Ordering::Release);
            }
        });
    }
}

enum Verdict {
    Reject(AuthnError),
    Refresh(String, u64),
}

impl From<AuthnError> for Verdict {
    fn from(e: AuthnError) -> Self {
        Verdict::Reject(e)
    }
}
