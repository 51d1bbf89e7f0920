//! [`Hardening`]: every configured layer built under one [`Profile`], and every posture
//! finding of every layer reported at once.
//!
//! Each Palisade builder checks its own configuration and, in production, refuses insecure
//! settings with a [`PostureError`]. Built one by one, a service would stop at the first
//! refusal and its operator would fix settings one restart at a time. `Hardening` takes each
//! builder's result, keeps the layer or the findings, and [`Hardening::finish`] answers the
//! whole report: in production, a refusal listing every finding (with its stable id from
//! [`palisade_core::checks`], its severity and its fix); otherwise the report to log.
//!
//! ```
//! # #[cfg(feature = "csp-headers")] {
//! use palisade::Hardening;
//! use palisade::core::Profile;
//! use palisade::csp_headers::{CorsLayer, SecurityHeadersLayer};
//!
//! let profile = Profile::Production;
//! let mut hardening = Hardening::new(profile);
//! let headers = hardening.check(SecurityHeadersLayer::builder().profile(profile).build());
//! let cors = hardening.check(
//!     CorsLayer::builder()
//!         .profile(profile)
//!         .allow_origins(["http://localhost:3000"])
//!         .expect("well-formed origins")
//!         .build(),
//! );
//! // Every finding of every layer, in one refusal.
//! let refused = hardening.finish().unwrap_err();
//! assert!(refused.report().findings().iter().any(|f| f.id() == "cors.E002"));
//! assert!(headers.is_some() && cors.is_none());
//! # }
//! ```

use std::fmt;

use palisade_core::{Finding, Posture, PostureError, Profile, Severity};

/// A built layer (or client) whose non-blocking findings and profile [`Hardening`] checks.
pub trait Checked {
    /// The findings recorded while it was built (none by default).
    fn posture_findings(&self) -> &[Finding] {
        &[]
    }

    /// The profile its settings were checked under; `None` when no check depends on it.
    /// A production assembly refuses a layer checked under another profile
    /// (`posture.E001`), since a development build may have let through what production
    /// refuses.
    fn checked_profile(&self) -> Option<Profile> {
        None
    }

    /// Whether it was built without any posture check (counted as development).
    fn unchecked(&self) -> bool {
        false
    }

    /// Whether it limits request rates (a throttle layer).
    fn limits_rate(&self) -> bool {
        false
    }
}

/// A build error, which may be a posture refusal listing findings.
pub trait Refusal: fmt::Display {
    /// The refusal, when the error is one.
    fn posture(&self) -> Option<&PostureError>;

    /// The catalogued check an insecure setting refused outright (without a posture
    /// refusal) stands for, such as a wildcard CORS origin (see [`palisade_core::checks`]).
    fn code(&self) -> Option<&'static str> {
        None
    }
}

impl Refusal for PostureError {
    fn posture(&self) -> Option<&PostureError> {
        Some(self)
    }
}

impl Refusal for palisade_core::StoreError {
    fn posture(&self) -> Option<&PostureError> {
        // A store's transport refusal is its source (shared behind an `Arc`).
        let source = std::error::Error::source(self)?;
        source.downcast_ref::<PostureError>().or_else(|| {
            source
                .downcast_ref::<std::sync::Arc<dyn std::error::Error + Send + Sync>>()
                .and_then(|shared| shared.downcast_ref::<PostureError>())
        })
    }
}

/// Collects the layers and findings of a whole stack (see the module docs).
#[derive(Debug)]
pub struct Hardening {
    profile: Profile,
    findings: Vec<Finding>,
    errors: Vec<String>,
    /// A throttle layer was checked.
    throttled: bool,
    /// What limits request rates instead, as the application says.
    rate_limited_by: Option<String>,
}

impl Hardening {
    /// An empty assembly under `profile`.
    pub fn new(profile: Profile) -> Self {
        Self {
            profile,
            findings: Vec::new(),
            errors: Vec::new(),
            throttled: false,
            rate_limited_by: None,
        }
    }

    /// Says that request rates are limited outside this stack (an API gateway, say), so that
    /// [`Hardening::finish`] does not refuse a stack without a throttle layer (`throttle.E001`);
    /// the report lists it (`throttle.I001`).
    pub fn rate_limited_elsewhere(&mut self, by: impl Into<String>) {
        self.rate_limited_by = Some(by.into());
    }

    /// The profile every layer is checked under.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Takes a builder's result: the layer (its findings kept), or nothing when the builder
    /// refused (its findings kept) or failed (its error kept). [`Hardening::finish`] refuses
    /// if anything was refused or failed. Build every layer with the assembly's profile
    /// ([`Hardening::profile`]): in production, a layer checked under the development
    /// profile (or a client-IP layer built without a check) is a blocking finding,
    /// `posture.E001`.
    pub fn check<L: Checked, E: Refusal>(&mut self, built: Result<L, E>) -> Option<L> {
        let layer = self.step(built)?;
        self.findings.extend_from_slice(layer.posture_findings());
        self.throttled |= layer.limits_rate();
        if let Some(built) = layer.checked_profile()
            && self.profile.is_production()
            && !built.is_production()
        {
            let name = std::any::type_name::<L>();
            let name = name.split('<').next().unwrap_or(name);
            let name = name.rsplit("::").next().unwrap_or(name);
            let how = if layer.unchecked() {
                "was built without a posture check".to_owned()
            } else {
                format!("was checked under the {built} profile")
            };
            let mut posture = Posture::new(self.profile, "hardening");
            posture.record(
                Severity::Deny,
                "profile-mismatch",
                format!("{name} {how}, not {}", self.profile),
            );
            self.findings.extend_from_slice(posture.findings());
        }
        Some(layer)
    }

    /// Takes a builder step's result (a setting a builder refused outright, such as a
    /// wildcard CORS origin): the builder, or nothing with the error kept (as a finding when
    /// it stands for a catalogued check).
    pub fn step<T, E: Refusal>(&mut self, step: Result<T, E>) -> Option<T> {
        match step {
            Ok(value) => Some(value),
            Err(err) => {
                match (err.posture(), err.code()) {
                    (Some(refusal), _) => {
                        self.findings.extend_from_slice(refusal.findings());
                        // Refused under its own (production) profile while this assembly is
                        // not: the missing layer still refuses the start.
                        if !self.profile.is_production() {
                            self.errors.push(err.to_string());
                        }
                    }
                    (None, Some(code)) => {
                        let mut posture = Posture::new(self.profile, "settings");
                        posture.record(Severity::Deny, code, err.to_string());
                        self.findings.extend_from_slice(posture.findings());
                        // Refused in every profile: the setting cannot be built.
                        self.errors.push(err.to_string());
                    }
                    (None, None) => self.errors.push(err.to_string()),
                }
                None
            }
        }
    }

    /// Adds the application's own findings (for example missing key settings).
    pub fn absorb(&mut self, posture: Posture) {
        self.findings.extend_from_slice(posture.findings());
    }

    /// The report so far.
    pub fn report(&self) -> Report {
        Report {
            profile: self.profile,
            findings: self.findings.clone(),
            errors: self.errors.clone(),
        }
    }

    /// The report, or in production (and whenever a builder failed) a refusal carrying it.
    /// A stack without a throttle layer is a blocking finding (`throttle.E001`) unless
    /// [`Hardening::rate_limited_elsewhere`] says what limits its request rates.
    pub fn finish(mut self) -> Result<Report, HardeningError> {
        let mut posture = Posture::new(self.profile, "hardening");
        match (&self.rate_limited_by, self.throttled) {
            (_, true) => {}
            (Some(by), false) => posture.record(
                Severity::Info,
                "throttle-elsewhere",
                format!("request rates are limited outside the stack: {by}"),
            ),
            (None, false) => posture.record(
                Severity::Deny,
                "throttle-missing",
                "no rate limit in the stack: no throttle layer was checked",
            ),
        }
        self.findings.extend_from_slice(posture.findings());
        let report = self.report();
        if report.refuses() {
            Err(HardeningError { report })
        } else {
            Ok(report)
        }
    }
}

/// Every finding of a stack, and the builder errors that were not findings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    profile: Profile,
    findings: Vec<Finding>,
    errors: Vec<String>,
}

impl Report {
    /// The profile checked against.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Every finding, in the order the layers were checked.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Builder errors that were not posture findings (an invalid setting).
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// How many findings block a production start.
    pub fn blocking(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity() == Severity::Deny)
            .count()
    }

    /// Whether this stack may not start: a builder failed, or a blocking finding in
    /// production.
    pub fn refuses(&self) -> bool {
        !self.errors.is_empty() || (self.profile.is_production() && self.blocking() > 0)
    }

    /// The report as JSON: `{"profile", "refused", "blocking", "findings": [{"id", "code",
    /// "component", "severity", "message", "fix"}], "errors"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "profile": self.profile.to_string(),
            "refused": self.refuses(),
            "blocking": self.blocking(),
            "findings": self.findings.iter().map(|f| serde_json::json!({
                "id": f.id(),
                "code": f.code(),
                "component": f.component(),
                "severity": f.severity().to_string(),
                "message": f.message(),
                "fix": f.fix(),
            })).collect::<Vec<_>>(),
            "errors": self.errors,
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "posture ({}): {} findings, {} blocking in production{}",
            self.profile,
            self.findings.len(),
            self.blocking(),
            if self.refuses() { ": REFUSED" } else { "" }
        )?;
        for finding in &self.findings {
            write!(f, "\n  {finding}")?;
        }
        for error in &self.errors {
            write!(f, "\n  [error] {error}")?;
        }
        Ok(())
    }
}

/// A stack refused: the whole [`Report`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HardeningError {
    report: Report,
}

impl HardeningError {
    /// The report (every finding of every layer).
    pub fn report(&self) -> &Report {
        &self.report
    }
}

impl fmt::Display for HardeningError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "insecure configuration refused: {}", self.report)
    }
}

impl std::error::Error for HardeningError {}

/// `Checked` for layers keeping their findings and profile.
#[allow(unused_macros)] // used by feature-gated modules
macro_rules! with_findings {
    ($($ty:ty),* $(,)?) => {
        $(impl Checked for $ty {
            fn posture_findings(&self) -> &[Finding] {
                self.findings()
            }

            fn checked_profile(&self) -> Option<Profile> {
                Some(self.profile())
            }
        })*
    };
}

/// `Checked` for parts whose `profile()` is `None` when they were built without a check
/// (`ClientIpLayer::new`, a store's unchecked `connect`): counted as development. With
/// `findings:`, their `findings()` too.
#[allow(unused_macros)] // used by feature-gated modules
macro_rules! maybe_checked {
    (findings: $($ty:ty),* $(,)?) => {
        $(impl Checked for $ty {
            fn posture_findings(&self) -> &[Finding] {
                self.findings()
            }
            maybe_checked!(@profile);
        })*
    };
    (@profile) => {
        fn checked_profile(&self) -> Option<Profile> {
            Some(self.profile().unwrap_or(Profile::Development))
        }

        fn unchecked(&self) -> bool {
            self.profile().is_none()
        }
    };
    ($($ty:ty),* $(,)?) => {
        $(impl Checked for $ty {
            maybe_checked!(@profile);
        })*
    };
}

maybe_checked!(findings: palisade_core::ClientIpLayer);

#[cfg(feature = "csp-headers")]
mod csp_headers {
    use super::*;
    use palisade_csp_headers::{
        AdminHostLayer, BuildError, ConfigError, CorsLayer, RequireHttpsLayer, SecurityHeadersLayer,
    };

    impl Refusal for ConfigError {
        fn posture(&self) -> Option<&PostureError> {
            None
        }

        fn code(&self) -> Option<&'static str> {
            match self {
                ConfigError::WildcardOrigin => Some("cors-wildcard-origin"),
                _ => None,
            }
        }
    }

    with_findings!(
        SecurityHeadersLayer,
        CorsLayer,
        RequireHttpsLayer,
        AdminHostLayer
    );

    impl Refusal for BuildError {
        fn posture(&self) -> Option<&PostureError> {
            match self {
                BuildError::Posture(p) => Some(p),
                _ => None,
            }
        }

        fn code(&self) -> Option<&'static str> {
            match self {
                BuildError::Config(c) => c.code(),
                _ => None,
            }
        }
    }
}

#[cfg(feature = "authn")]
mod authn {
    use super::*;
    use palisade_authn::local::LocalJwtIssuer;
    use palisade_authn::{Authenticator, AuthnLayer, BuildError};

    with_findings!(Authenticator, LocalJwtIssuer);

    impl Checked for AuthnLayer {
        fn checked_profile(&self) -> Option<Profile> {
            Some(self.profile())
        }
    }

    maybe_checked!(palisade_authn::websocket::WebSocketAuthLayer);

    impl Refusal for BuildError {
        fn posture(&self) -> Option<&PostureError> {
            match self {
                BuildError::Posture(p) => Some(p),
                _ => None,
            }
        }

        /// A surface with no audience accepts tokens meant for anyone: `authn.E004`.
        fn code(&self) -> Option<&'static str> {
            match self {
                BuildError::Config(palisade_authn::ConfigError::NoAudience(_)) => {
                    Some("authn-any-client")
                }
                _ => None,
            }
        }
    }
}

#[cfg(feature = "field-crypto")]
mod field_crypto {
    use super::*;
    use palisade_field_crypto::{FieldCipher, FieldCryptoError};

    impl Checked for FieldCipher {
        fn checked_profile(&self) -> Option<Profile> {
            self.profile()
        }
    }

    impl Refusal for FieldCryptoError {
        fn posture(&self) -> Option<&PostureError> {
            match self {
                FieldCryptoError::Posture(p) => Some(p),
                _ => None,
            }
        }
    }
}

#[cfg(feature = "aksk")]
mod aksk {
    use super::*;

    with_findings!(palisade_aksk::Verifier);
}

#[cfg(feature = "throttle")]
mod throttle {
    use super::*;

    impl<S> Checked for palisade_throttle::ThrottleLayer<S> {
        fn posture_findings(&self) -> &[Finding] {
            self.findings()
        }

        fn checked_profile(&self) -> Option<Profile> {
            Some(self.profile())
        }

        fn limits_rate(&self) -> bool {
            true
        }
    }

    impl Refusal for palisade_throttle::ConfigError {
        fn posture(&self) -> Option<&PostureError> {
            None
        }
    }
}

#[cfg(feature = "authz-cerbos")]
mod authz_cerbos {
    use super::*;

    impl Checked for palisade_authz_cerbos::PdpClient {
        fn checked_profile(&self) -> Option<Profile> {
            Some(self.profile())
        }
    }

    impl Refusal for palisade_authz_cerbos::AuthzError {
        fn posture(&self) -> Option<&PostureError> {
            match self {
                palisade_authz_cerbos::AuthzError::Posture(p) => Some(p),
                _ => None,
            }
        }
    }
}

#[cfg(feature = "impersonation")]
mod impersonation {
    use super::*;
    use palisade_impersonation::{Impersonator, ImpersonatorBuildError};

    impl<D, A> Checked for Impersonator<D, A>
    where
        D: palisade_impersonation::UserDirectory,
        A: palisade_audit::AuditSink,
    {
        fn posture_findings(&self) -> &[Finding] {
            self.findings()
        }

        fn checked_profile(&self) -> Option<Profile> {
            Some(self.profile())
        }
    }

    impl Refusal for ImpersonatorBuildError {
        fn posture(&self) -> Option<&PostureError> {
            match self {
                ImpersonatorBuildError::Issuer(palisade_authn::BuildError::Posture(p)) => Some(p),
                _ => None,
            }
        }
    }
}

#[cfg(feature = "redis")]
mod redis_stores {
    use super::*;

    maybe_checked!(palisade_sessions::RedisStore);
    #[cfg(feature = "aksk")]
    maybe_checked!(palisade_aksk::RedisNonceStore);

    #[cfg(feature = "throttle")]
    impl Checked for palisade_throttle::RedisStore {
        fn checked_profile(&self) -> Option<Profile> {
            Some(self.profile())
        }
    }
}

#[cfg(feature = "postgres")]
mod postgres_stores {
    use super::*;

    maybe_checked!(palisade_sessions::PostgresStore);
    #[cfg(feature = "aksk")]
    maybe_checked!(palisade_aksk::PostgresCredentialStore);
    #[cfg(feature = "audit")]
    maybe_checked!(palisade_audit::PostgresSink);
}

#[cfg(feature = "audit")]
mod audit {
    use super::*;

    /// A refused transport is a store refusal (`store.E001`).
    impl Refusal for palisade_audit::AuditError {
        fn posture(&self) -> Option<&PostureError> {
            match self {
                palisade_audit::AuditError::Transport(store) => store.posture(),
                _ => None,
            }
        }
    }
}
