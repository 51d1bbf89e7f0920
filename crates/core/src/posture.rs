//! [`Profile`] and the posture report.
//!
//! Every layer builder records [`Finding`]s: what in its configuration is insecure and why.
//! In [`Profile::Production`] any finding of [`Severity::Deny`] makes the builder return a
//! [`PostureError`] listing **all** findings at once, instead of building. In
//! [`Profile::Development`] the same findings are logged as warnings and the layer is built.
//!
//! ```
//! use palisade_core::{Posture, Profile, Severity};
//!
//! let mut posture = Posture::new(Profile::Production, "example");
//! posture.record(Severity::Warn, "weak-referrer", "Referrer-Policy unsafe-url leaks full URLs");
//! posture.record(Severity::Deny, "no-hsts", "HSTS is disabled");
//! let err = posture.finish().unwrap_err();
//! assert_eq!(err.findings().len(), 2);
//! assert!(err.to_string().contains("no-hsts"));
//!
//! let mut dev = Posture::new(Profile::Development, "example");
//! dev.record(Severity::Deny, "no-hsts", "HSTS is disabled");
//! assert_eq!(dev.finish().unwrap().len(), 1);
//! ```

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// Where a layer is deployed; decides whether insecure settings are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Profile {
    /// Local development: insecure settings are logged, not refused.
    Development,
    /// Production: a [`Severity::Deny`] finding stops the builder.
    Production,
}

impl Profile {
    /// Whether this is [`Profile::Production`].
    pub fn is_production(self) -> bool {
        self == Self::Production
    }

    /// Reads `PALISADE_PROFILE` (`development` or `production`); unset means `default`.
    pub fn from_env_or(default: Profile) -> Result<Profile, UnknownProfile> {
        match std::env::var("PALISADE_PROFILE") {
            Ok(value) => value.parse(),
            Err(_) => Ok(default),
        }
    }
}

impl Default for Profile {
    /// The safe default: [`Profile::Production`].
    fn default() -> Self {
        Self::Production
    }
}

impl FromStr for Profile {
    type Err = UnknownProfile;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "development" | "dev" => Ok(Self::Development),
            "production" | "prod" => Ok(Self::Production),
            _ => Err(UnknownProfile(s.to_owned())),
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Development => "development",
            Self::Production => "production",
        })
    }
}

/// A profile name other than `development` or `production`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown profile {0:?}: expected \"development\" or \"production\"")]
pub struct UnknownProfile(String);

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Severity {
    /// Worth knowing; never blocks.
    Info,
    /// Weaker than recommended; never blocks.
    Warn,
    /// Insecure: refused in production.
    Deny,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Deny => "deny",
        })
    }
}

/// One thing a builder found in its configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    component: &'static str,
    code: &'static str,
    severity: Severity,
    message: Cow<'static, str>,
}

impl Finding {
    /// The layer or component that recorded it (`"csp"`, `"cors"`, ...).
    pub fn component(&self) -> &'static str {
        self.component
    }
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        self.code
    }
    /// How bad it is.
    pub fn severity(&self) -> Severity {
        self.severity
    }
    /// What is wrong and why.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// The stable id of its check (`csp.E003`; see [`crate::checks`]), or `palisade.X000`
    /// for a code the catalogue does not know (an application's own).
    pub fn id(&self) -> &'static str {
        crate::checks::find(self.code).map_or("palisade.X000", |c| c.id)
    }
    /// How to fix it (from the catalogue; empty for an uncatalogued code).
    pub fn fix(&self) -> &'static str {
        crate::checks::find(self.code).map_or("", |c| c.fix)
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {} {}/{}: {}",
            self.severity,
            self.id(),
            self.component,
            self.code,
            self.message
        )?;
        match self.fix() {
            "" => Ok(()),
            fix => write!(f, " (fix: {fix})"),
        }
    }
}

/// Collects findings while a builder checks its configuration.
#[derive(Debug)]
pub struct Posture {
    profile: Profile,
    component: &'static str,
    findings: Vec<Finding>,
}

impl Posture {
    /// Starts a report for `component` under `profile`.
    pub fn new(profile: Profile, component: &'static str) -> Self {
        Self {
            profile,
            component,
            findings: Vec::new(),
        }
    }

    /// The profile being checked against.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Records a finding.
    pub fn record(
        &mut self,
        severity: Severity,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) {
        self.findings.push(Finding {
            component: self.component,
            code,
            severity,
            message: message.into(),
        });
    }

    /// Merges another component's findings into this report.
    pub fn absorb(&mut self, other: Posture) {
        self.findings.extend(other.findings);
    }

    /// The findings so far.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Ends the check. In production, any [`Severity::Deny`] finding is an error carrying every
    /// finding; otherwise the findings are returned (and logged) for the caller to report.
    pub fn finish(self) -> Result<Vec<Finding>, PostureError> {
        let denied = self.findings.iter().any(|f| f.severity == Severity::Deny);
        if denied && self.profile.is_production() {
            return Err(PostureError {
                findings: self.findings,
            });
        }
        for finding in &self.findings {
            match finding.severity {
                Severity::Deny | Severity::Warn => {
                    tracing::warn!(target: "palisade::posture", profile = %self.profile, "{finding}");
                }
                Severity::Info => {
                    tracing::info!(target: "palisade::posture", profile = %self.profile, "{finding}");
                }
            }
        }
        Ok(self.findings)
    }
}

/// A production build refused because of insecure settings. Lists every finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostureError {
    findings: Vec<Finding>,
}

impl PostureError {
    /// Every finding, including those that alone would not have blocked.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }
}

impl fmt::Display for PostureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let denied = self
            .findings
            .iter()
            .filter(|x| x.severity == Severity::Deny)
            .count();
        write!(
            f,
            "insecure configuration refused in production ({denied} blocking of {} findings):",
            self.findings.len()
        )?;
        for finding in &self.findings {
            write!(f, "\n  {finding}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PostureError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_alone_do_not_block_production() {
        let mut p = Posture::new(Profile::Production, "t");
        p.record(Severity::Warn, "w", "weak");
        p.record(Severity::Info, "i", "fyi");
        assert_eq!(p.finish().unwrap().len(), 2);
    }

    #[test]
    fn profile_parsing() {
        assert_eq!(
            "Production".parse::<Profile>().unwrap(),
            Profile::Production
        );
        assert_eq!("dev".parse::<Profile>().unwrap(), Profile::Development);
        assert!("staging".parse::<Profile>().is_err());
        assert_eq!(Profile::default(), Profile::Production);
    }
}
