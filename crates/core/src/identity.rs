//! [`Identity`]: the authenticated caller, as layers put it in request extensions.
//!
//! ```
//! use palisade_core::{AuthMethod, Identity, MfaLevel, Surface};
//!
//! let id = Identity::new("https://sso.example.com/realms/acme", "user-1", AuthMethod::Oidc, Surface::API)
//!     .with_org("org-42")
//!     .with_realm_roles(["member"])
//!     .with_client_roles("api", ["reader"])
//!     .with_mfa(MfaLevel::MultiFactor, Some("2".into()), vec!["pwd".into(), "otp".into()]);
//! assert_eq!(id.org(), Some("org-42"));
//! assert!(id.has_realm_role("member"));
//! assert!(id.has_client_role("api", "reader"));
//! assert!(id.mfa_level().is_multi_factor());
//! ```

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::SystemTime;

/// The API surface a credential was accepted for.
///
/// A token is checked against the audience policy of exactly one surface; the identity
/// remembers which.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Surface(Cow<'static, str>);

impl Surface {
    /// The tenant-facing API.
    pub const API: Surface = Surface(Cow::Borrowed("api"));
    /// The operator console across all tenants.
    pub const GLOBAL_ADMIN: Surface = Surface(Cow::Borrowed("global-admin"));
    /// A tenant's own administration surface.
    pub const ORG_ADMIN: Surface = Surface(Cow::Borrowed("org-admin"));

    /// A user-defined surface. Names are 1 to 64 characters of `a-z`, `0-9`, `-` and `_`.
    pub fn custom(name: impl Into<String>) -> Result<Self, InvalidSurfaceName> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(Cow::Owned(name)))
        } else {
            Err(InvalidSurfaceName)
        }
    }

    /// The surface name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Surface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A surface name that is empty, too long or uses characters outside `a-z0-9-_`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a surface name is 1 to 64 characters of a-z, 0-9, '-' and '_'")]
pub struct InvalidSurfaceName;

/// How the caller authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthMethod {
    /// An OpenID Connect access token (Keycloak).
    Oidc,
    /// A JWT issued by this service with a local key ring.
    LocalJwt,
    /// An access key / secret key signed request.
    AccessKey {
        /// The access key id (public).
        key_id: String,
    },
    /// An administrator acting as another user.
    Impersonation {
        /// The administrator who is acting.
        actor: Box<Identity>,
    },
}

/// How strongly the caller proved who they are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum MfaLevel {
    /// Unknown or none (for example an access key).
    #[default]
    None,
    /// One factor.
    SingleFactor,
    /// Two or more factors.
    MultiFactor,
}

impl MfaLevel {
    /// Whether at least two factors were used.
    pub fn is_multi_factor(self) -> bool {
        self == Self::MultiFactor
    }
}

/// One of the caller's memberships: an org, optionally one team of it, and the roles the
/// membership grants there. A caller may belong to many orgs; authorization takes only the
/// memberships of the org a request targets (`palisade-authz-cerbos` builds its principals so).
///
/// ```
/// use palisade_core::Membership;
///
/// let m = Membership::new("org-1", Some("team-a"), ["editor"]);
/// assert_eq!((m.org(), m.team()), ("org-1", Some("team-a")));
/// assert!(m.roles().contains("editor"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Membership {
    org: String,
    team: Option<String>,
    roles: BTreeSet<String>,
}

impl Membership {
    /// A membership of `org` (of `team` in it, when given) granting `roles`.
    pub fn new<I, R>(org: impl Into<String>, team: Option<&str>, roles: I) -> Self
    where
        I: IntoIterator<Item = R>,
        R: Into<String>,
    {
        Self {
            org: org.into(),
            team: team.map(str::to_owned),
            roles: roles.into_iter().map(Into::into).collect(),
        }
    }

    /// The org.
    pub fn org(&self) -> &str {
        &self.org
    }

    /// The team within the org, for a team membership.
    pub fn team(&self) -> Option<&str> {
        self.team.as_deref()
    }

    /// The roles granted.
    pub fn roles(&self) -> &BTreeSet<String> {
        &self.roles
    }
}

/// The authenticated caller.
///
/// Built by authenticating layers and inserted into request extensions; handlers and later
/// layers (authorization, throttling) read it from there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    issuer: String,
    subject: String,
    method: AuthMethod,
    surface: Surface,
    org: Option<String>,
    team: Option<String>,
    realm_roles: BTreeSet<String>,
    client_roles: BTreeMap<String, BTreeSet<String>>,
    mfa_level: MfaLevel,
    acr: Option<String>,
    amr: Vec<String>,
    auth_time: Option<SystemTime>,
    session_id: Option<String>,
    expires_at: Option<SystemTime>,
    memberships: Vec<Membership>,
}

impl Identity {
    /// An identity for `subject` at `issuer`, accepted for `surface`.
    pub fn new(
        issuer: impl Into<String>,
        subject: impl Into<String>,
        method: AuthMethod,
        surface: Surface,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            subject: subject.into(),
            method,
            surface,
            org: None,
            team: None,
            realm_roles: BTreeSet::new(),
            client_roles: BTreeMap::new(),
            mfa_level: MfaLevel::None,
            acr: None,
            amr: Vec::new(),
            auth_time: None,
            session_id: None,
            expires_at: None,
            memberships: Vec::new(),
        }
    }

    /// Scopes the identity to an org (tenant).
    #[must_use]
    pub fn with_org(mut self, org: impl Into<String>) -> Self {
        self.org = Some(org.into());
        self
    }

    /// Scopes the identity to a team inside its org.
    #[must_use]
    pub fn with_team(mut self, team: impl Into<String>) -> Self {
        self.team = Some(team.into());
        self
    }

    /// Adds realm roles.
    #[must_use]
    pub fn with_realm_roles<I, R>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = R>,
        R: Into<String>,
    {
        self.realm_roles.extend(roles.into_iter().map(Into::into));
        self
    }

    /// Adds roles granted by `client`.
    #[must_use]
    pub fn with_client_roles<I, R>(mut self, client: impl Into<String>, roles: I) -> Self
    where
        I: IntoIterator<Item = R>,
        R: Into<String>,
    {
        self.client_roles
            .entry(client.into())
            .or_default()
            .extend(roles.into_iter().map(Into::into));
        self
    }

    /// Records the authentication strength: level, `acr` and `amr` values.
    #[must_use]
    pub fn with_mfa(mut self, level: MfaLevel, acr: Option<String>, amr: Vec<String>) -> Self {
        self.mfa_level = level;
        self.acr = acr;
        self.amr = amr;
        self
    }

    /// Records when the user last authenticated interactively.
    #[must_use]
    pub fn with_auth_time(mut self, at: SystemTime) -> Self {
        self.auth_time = Some(at);
        self
    }

    /// Adds a membership (an org, a team of it, roles there).
    #[must_use]
    pub fn with_membership(mut self, membership: Membership) -> Self {
        self.memberships.push(membership);
        self
    }

    /// Records the session or token-family id the credential belongs to.
    #[must_use]
    pub fn with_session_id(mut self, id: impl Into<String>) -> Self {
        self.session_id = Some(id.into());
        self
    }

    /// Records when the credential expires (`exp`).
    #[must_use]
    pub fn with_expiry(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// When the credential expires, if known: long-lived connections (WebSockets) must end
    /// by then.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// The issuer (`iss`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
    /// The subject (`sub`), unique per issuer.
    pub fn subject(&self) -> &str {
        &self.subject
    }
    /// How the caller authenticated.
    pub fn method(&self) -> &AuthMethod {
        &self.method
    }
    /// The surface the credential was accepted for.
    pub fn surface(&self) -> &Surface {
        &self.surface
    }
    /// The org (tenant) the credential is scoped to.
    pub fn org(&self) -> Option<&str> {
        self.org.as_deref()
    }
    /// The team the credential is scoped to.
    pub fn team(&self) -> Option<&str> {
        self.team.as_deref()
    }
    /// Realm roles.
    pub fn realm_roles(&self) -> &BTreeSet<String> {
        &self.realm_roles
    }
    /// Roles per client.
    pub fn client_roles(&self) -> &BTreeMap<String, BTreeSet<String>> {
        &self.client_roles
    }
    /// Whether the identity holds realm role `role`.
    pub fn has_realm_role(&self, role: &str) -> bool {
        self.realm_roles.contains(role)
    }
    /// Whether the identity holds role `role` of client `client`.
    pub fn has_client_role(&self, client: &str, role: &str) -> bool {
        self.client_roles
            .get(client)
            .is_some_and(|roles| roles.contains(role))
    }
    /// The authentication strength.
    pub fn mfa_level(&self) -> MfaLevel {
        self.mfa_level
    }
    /// The `acr` value, if any.
    pub fn acr(&self) -> Option<&str> {
        self.acr.as_deref()
    }
    /// The `amr` values.
    pub fn amr(&self) -> &[String] {
        &self.amr
    }
    /// When the user last authenticated interactively.
    pub fn auth_time(&self) -> Option<SystemTime> {
        self.auth_time
    }

    /// The caller's memberships, of every org it belongs to.
    pub fn memberships(&self) -> &[Membership] {
        &self.memberships
    }

    /// The session or token-family id.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_surface_names_are_validated() {
        assert_eq!(
            Surface::custom("partner-api").unwrap().as_str(),
            "partner-api"
        );
        for bad in ["", "Admin", "a b", "x/y", &"a".repeat(65)] {
            assert!(Surface::custom(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn impersonation_keeps_the_actor() {
        let admin = Identity::new("iss", "admin", AuthMethod::Oidc, Surface::GLOBAL_ADMIN);
        let user = Identity::new(
            "iss",
            "user",
            AuthMethod::Impersonation {
                actor: Box::new(admin.clone()),
            },
            Surface::API,
        );
        match user.method() {
            AuthMethod::Impersonation { actor } => assert_eq!(**actor, admin),
            other => panic!("unexpected {other:?}"),
        }
    }
}
