//! Admin impersonation: MFA-gated, of existing users of the right org only, always audited.
//!
//! [`Impersonator::start`] checks, in order, and refuses with a typed reason (logged in the
//! audit record as a denied attempt):
//!
//! 1. the admin is not already impersonating (no impersonation within an impersonation);
//! 2. the admin's token was accepted for an admin surface (`global-admin`, or `org-admin` for
//!    its own org only);
//! 3. the admin holds the impersonation role ([`RoleRule`]: a realm role or a client role);
//! 4. multi-factor authentication: two factors, or an `acr` value the policy names, no older
//!    than the policy's maximum age (`auth_time`);
//! 5. the target user exists in the [`UserDirectory`] and belongs to the org (impersonation
//!    never creates a user), and is not an admin (unless the policy allows it).
//!
//! Then the start is written to the audit sink *before* the credential is issued (no audit,
//! no credential), and a short-lived local JWT is issued for the user with an RFC 8693 `act`
//! claim naming the admin: an [`Authenticator`](palisade_authn::Authenticator) trusting
//! [`Impersonator::key_set`] with `accept_actor_claims()` turns it into an [`Identity`] with
//! [`AuthMethod::Impersonation`], showing both the user and the admin.
//!
//! Every credential names its impersonation (`sid`), which the impersonator keeps while it is
//! in progress. [`Impersonator::end`] ends one (the admin, or the credential itself, may end
//! it): its credential is refused from then on and the end is recorded.
//! [`Impersonator::sweep`], run periodically, records the end of every impersonation whose
//! credential expired (and retries ends whose record could not be written).
//! [`Impersonator::audit_layer`] writes every request made with a credential to the audit sink
//! before it is handled, refuses (503) when it cannot, and refuses (401) credentials of ended
//! impersonations.
//!
//! Impersonations in progress live in the memory of the process that started them: a
//! credential presented to another replica is refused (fail closed), and a restart ends them
//! all without an end record (the start records and credential lifetimes still bound them).
//!
//! ```
//! use std::time::Duration;
//! use palisade_audit::{Chain, MemorySink};
//! use palisade_core::{KeyRing, Profile};
//! use palisade_impersonation::{
//!     DirectoryUser, ImpersonationPolicy, Impersonator, RoleRule, StaticDirectory,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let audit = MemorySink::new(KeyRing::parse("audit 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")?);
//! let users = StaticDirectory::new().with(DirectoryUser {
//!     id: "u-1".into(),
//!     org: "org-1".into(),
//!     roles: vec!["member".into()],
//!     is_admin: false,
//! });
//! let impersonator = Impersonator::builder(
//!     ImpersonationPolicy::new(RoleRule::Realm("impersonator".into())).mfa_acr_values(["2"]),
//!     users,
//!     audit,
//!     "https://api.example.com/impersonation",
//! )
//! .key_ring(KeyRing::parse("imp 1 ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=")?)
//! .lifetime(Duration::from_secs(900))
//! .profile(Profile::Production)
//! .build()?;
//! // Requests made with its credentials: audited first, refused once ended.
//! let _layer = impersonator.audit_layer();
//! // Periodically (for example every few seconds from a background task):
//! // impersonator.sweep().await?;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod grants;
mod layer;

pub use grants::{MAX_ACTIVE, MAX_PER_ADMIN};
pub use layer::{AuditImpersonation, AuditImpersonationLayer, AuditRefusal, ResponseFuture};

use grants::{Active, EndReason, Full, Grants};
use std::sync::Arc;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::time::{Duration, SystemTime};

use palisade_audit::{AuditSink, Event, Outcome};
use palisade_authn::BuildError;
use palisade_authn::jwks::KeySet;
use palisade_authn::local::{IssueError, LocalClaims, LocalJwtIssuer};
use palisade_core::{AuthMethod, Identity, KeyRing, MfaLevel, Profile, SharedClock, Surface};
use secrecy::SecretString;

/// The `azp` of impersonation credentials (list it among the surface's authorized parties).
pub const AUTHORIZED_PARTY: &str = "palisade-impersonation";

/// The longest an impersonation credential may live.
pub const MAX_LIFETIME: Duration = Duration::from_secs(3_600);

/// Which role allows impersonating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoleRule {
    /// A realm role (`realm_access.roles`).
    Realm(String),
    /// A role of a client (`resource_access.<client>.roles`).
    Client {
        /// The client.
        client: String,
        /// The role.
        role: String,
    },
}

impl RoleRule {
    fn holds(&self, admin: &Identity) -> bool {
        match self {
            Self::Realm(role) => admin.has_realm_role(role),
            Self::Client { client, role } => admin.has_client_role(client, role),
        }
    }
}

/// Who may impersonate, and how recently they must have proven a second factor.
#[derive(Clone, Debug)]
pub struct ImpersonationPolicy {
    role: RoleRule,
    mfa_acr: BTreeSet<String>,
    max_auth_age: Duration,
    allow_admin_targets: bool,
    org_admin_role: Option<String>,
}

impl ImpersonationPolicy {
    /// Admins holding `role`, with two factors (or an `acr` named by
    /// [`ImpersonationPolicy::mfa_acr_values`]) at most 10 minutes old; admin targets refused.
    pub fn new(role: RoleRule) -> Self {
        Self {
            role,
            mfa_acr: BTreeSet::new(),
            max_auth_age: Duration::from_secs(600),
            allow_admin_targets: false,
            org_admin_role: None,
        }
    }

    /// `acr` values that count as multi-factor (for example Keycloak's `"2"`).
    pub fn mfa_acr_values<I, S>(mut self, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.mfa_acr = values.into_iter().map(Into::into).collect();
        self
    }

    /// The oldest authentication (`auth_time`) that may start an impersonation.
    pub fn max_auth_age(mut self, age: Duration) -> Self {
        self.max_auth_age = age;
        self
    }

    /// Org admins (the `org-admin` surface, acting in the org of their token) must also hold
    /// `role` in a membership of that org (`Identity::memberships`, for example from Keycloak
    /// group paths), not only the org claim. Off by default.
    pub fn require_org_admin_role(mut self, role: &str) -> Self {
        self.org_admin_role = Some(role.to_owned());
        self
    }

    /// Lets admins impersonate other admins (refused by default).
    pub fn allow_admin_targets(mut self, allow: bool) -> Self {
        self.allow_admin_targets = allow;
        self
    }
}

/// A user as the directory knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryUser {
    /// The user's id (the `sub` of the credential).
    pub id: String,
    /// The org the user belongs to.
    pub org: String,
    /// The user's roles in that org.
    pub roles: Vec<String>,
    /// Whether the user is an administrator.
    pub is_admin: bool,
}

/// Looks users up; impersonation never creates one.
pub trait UserDirectory: Send + Sync + 'static {
    /// The user `id` of `org`, if there is one. An error (directory down) refuses the start.
    fn find(
        &self,
        org: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<DirectoryUser>, String>> + Send;
}

/// A fixed directory (tests, demos).
#[derive(Clone, Debug, Default)]
pub struct StaticDirectory {
    users: HashMap<(String, String), DirectoryUser>,
}

impl StaticDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `user`.
    pub fn with(mut self, user: DirectoryUser) -> Self {
        self.users.insert((user.org.clone(), user.id.clone()), user);
        self
    }

    /// The users of `org`, by id.
    pub fn users(&self, org: &str) -> Vec<DirectoryUser> {
        let mut users: Vec<_> = self
            .users
            .values()
            .filter(|u| u.org == org)
            .cloned()
            .collect();
        users.sort_by(|a, b| a.id.cmp(&b.id));
        users
    }
}

impl UserDirectory for StaticDirectory {
    async fn find(&self, org: &str, id: &str) -> Result<Option<DirectoryUser>, String> {
        Ok(self.users.get(&(org.to_owned(), id.to_owned())).cloned())
    }
}

/// Why an impersonation was refused. Everything but [`ImpersonationError::Unavailable`]
/// answers 403; the audit record names the reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImpersonationError {
    /// Already impersonating.
    #[error("impersonation within an impersonation")]
    Nested,
    /// Not authenticated for an admin surface, or an org admin outside its org.
    #[error("not an admin of this org")]
    NotAdmin,
    /// The impersonation role is missing.
    #[error("missing the impersonation role")]
    MissingRole,
    /// No second factor.
    #[error("multi-factor authentication required")]
    MfaRequired,
    /// The authentication is older than the policy allows (or its time is unknown).
    #[error("authentication too old")]
    StaleAuthentication,
    /// No such user in the org.
    #[error("no such user in the org")]
    UnknownUser,
    /// The target is an admin.
    #[error("the target is an admin")]
    AdminTarget,
    /// No such impersonation in progress (ended, expired, unknown, or not the caller's).
    #[error("no such impersonation in progress")]
    NotActive,
    /// The admin has [`MAX_PER_ADMIN`] impersonations in progress already.
    #[error("too many impersonations in progress for this admin")]
    TooMany,
    /// The directory or the audit sink could not answer: nothing was issued (503).
    #[error("impersonation unavailable: {0}")]
    Unavailable(String),
    /// The credential could not be issued.
    #[error("credential: {0}")]
    Issue(#[from] IssueError),
}

/// Why an [`Impersonator`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImpersonatorBuildError {
    /// A credential lifetime of zero or over [`MAX_LIFETIME`].
    #[error("impersonation credentials live between 1 s and 1 h")]
    Lifetime,
    /// The credential issuer (keys, profile).
    #[error(transparent)]
    Issuer(#[from] BuildError),
}

/// A started impersonation.
#[derive(Debug)]
pub struct Grant {
    /// The impersonation's id (the credential's `sid`; ends it with [`Impersonator::end`]).
    pub id: String,
    /// The credential (a bearer token for the API surface). Never logged.
    pub token: SecretString,
    /// When it expires.
    pub expires_at: SystemTime,
    /// The impersonated user.
    pub user: String,
}

/// Starts and ends impersonations (see the crate docs).
#[derive(Debug)]
pub struct Impersonator<D, A> {
    policy: ImpersonationPolicy,
    directory: D,
    audit: Arc<A>,
    grants: Arc<Grants>,
    issuer: LocalJwtIssuer,
    audience: String,
    lifetime: Duration,
    clock: SharedClock,
}

/// Builds an [`Impersonator`].
#[derive(Debug)]
pub struct ImpersonatorBuilder<D, A> {
    policy: ImpersonationPolicy,
    directory: D,
    audit: A,
    issuer_url: String,
    ring: Option<KeyRing>,
    audience: String,
    lifetime: Duration,
    clock: SharedClock,
    profile: Profile,
}

impl<D: UserDirectory, A: AuditSink> Impersonator<D, A> {
    /// An impersonator under `policy`, finding users in `directory` and auditing to `audit`,
    /// issuing credentials as `issuer_url` for the `api` audience, 15 minutes long.
    pub fn builder(
        policy: ImpersonationPolicy,
        directory: D,
        audit: A,
        issuer_url: &str,
    ) -> ImpersonatorBuilder<D, A> {
        ImpersonatorBuilder {
            policy,
            directory,
            audit,
            issuer_url: issuer_url.to_owned(),
            ring: None,
            audience: "api".to_owned(),
            lifetime: Duration::from_secs(900),
            clock: palisade_core::SystemClock::shared(),
            profile: Profile::Production,
        }
    }
}

impl<D, A> ImpersonatorBuilder<D, A> {
    /// The key ring signing credentials (required in production).
    pub fn key_ring(mut self, ring: KeyRing) -> Self {
        self.ring = Some(ring);
        self
    }

    /// The audience of the credentials (the surface they are accepted on).
    pub fn audience(mut self, audience: &str) -> Self {
        self.audience = audience.to_owned();
        self
    }

    /// How long a credential lives (at most [`MAX_LIFETIME`]).
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Reads the time from `clock`.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The deployment profile (default production).
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// The impersonator; refuses a lifetime over [`MAX_LIFETIME`] or of zero, and (in
    /// production) a missing key ring.
    pub fn build(self) -> Result<Impersonator<D, A>, ImpersonatorBuildError> {
        if self.lifetime.is_zero() || self.lifetime > MAX_LIFETIME {
            return Err(ImpersonatorBuildError::Lifetime);
        }
        let mut issuer = LocalJwtIssuer::builder(&self.issuer_url)
            .profile(self.profile)
            .ttl(self.lifetime)
            .clock(self.clock.clone());
        if let Some(ring) = self.ring {
            issuer = issuer.key_ring(ring);
        }
        Ok(Impersonator {
            policy: self.policy,
            directory: self.directory,
            audit: Arc::new(self.audit),
            grants: Arc::default(),
            issuer: issuer.build()?,
            audience: self.audience,
            lifetime: self.lifetime,
            clock: self.clock,
        })
    }
}

impl<D: UserDirectory, A: AuditSink> Impersonator<D, A> {
    /// The issuer of the credentials (trust it in the API's authenticator).
    pub fn issuer(&self) -> &str {
        self.issuer.issuer()
    }

    /// The keys verifying the credentials.
    pub fn key_set(&self) -> KeySet {
        self.issuer.key_set()
    }

    /// The profile its credential issuer was checked under.
    pub fn profile(&self) -> Profile {
        self.issuer.profile()
    }

    /// The non-blocking findings of its credential issuer (for example `jwt.W001`).
    pub fn findings(&self) -> &[palisade_core::Finding] {
        self.issuer.findings()
    }

    fn check_admin(&self, admin: &Identity, org: &str) -> Result<(), ImpersonationError> {
        if matches!(admin.method(), AuthMethod::Impersonation { .. }) {
            return Err(ImpersonationError::Nested);
        }
        let surface = admin.surface();
        let member_admin = || match &self.policy.org_admin_role {
            None => true,
            // A membership of the org itself: a team's admin is not the org's.
            Some(role) => admin
                .memberships()
                .iter()
                .any(|m| m.org() == org && m.team().is_none() && m.roles().contains(role)),
        };
        let admin_of_org = *surface == Surface::GLOBAL_ADMIN
            || (*surface == Surface::ORG_ADMIN && admin.org() == Some(org) && member_admin());
        if !admin_of_org {
            return Err(ImpersonationError::NotAdmin);
        }
        if !self.policy.role.holds(admin) {
            return Err(ImpersonationError::MissingRole);
        }
        let acr_ok = admin
            .acr()
            .is_some_and(|acr| self.policy.mfa_acr.contains(acr));
        if !(admin.mfa_level() == MfaLevel::MultiFactor || acr_ok) {
            return Err(ImpersonationError::MfaRequired);
        }
        let now = self.clock.now();
        let fresh = admin.auth_time().is_some_and(|at| {
            now.duration_since(at)
                .is_ok_and(|age| age <= self.policy.max_auth_age)
                || at <= now + Duration::from_secs(60) && at > now
        });
        if !fresh {
            return Err(ImpersonationError::StaleAuthentication);
        }
        Ok(())
    }

    /// The audit event of an impersonation step by the admin `actor` (issuer, subject).
    fn event(
        actor: (&str, &str),
        action: &str,
        user: &str,
        org: &str,
        request_id: Option<&str>,
        outcome: Outcome,
    ) -> Event {
        let mut event = Event::new(actor.1, action, user, outcome)
            .org(org)
            .detail("actor_issuer", actor.0);
        if let Some(id) = request_id {
            event = event.request_id(id);
        }
        event
    }

    /// Audits a refused start (best effort: the refusal stands either way), with the caller's
    /// `org` and `user` cut short so that an oversized one cannot keep the record out.
    async fn refused(
        &self,
        admin: &Identity,
        org: &str,
        user: &str,
        request_id: &str,
        refusal: ImpersonationError,
    ) -> ImpersonationError {
        let event = Self::event(
            (&clip(admin.issuer()), &clip(admin.subject())),
            "impersonation.start",
            &clip(user),
            &clip(org),
            Some(&clip(request_id)),
            Outcome::Denied,
        )
        .detail("reason", refusal.to_string());
        let _ = self.audit.append(event).await;
        refusal
    }

    /// Starts impersonating `user` of `org` for `admin` (see the crate docs). The start (or
    /// the refusal) is audited; a credential is issued only after its start was written.
    pub async fn start(
        &self,
        admin: &Identity,
        org: &str,
        user: &str,
        request_id: &str,
    ) -> Result<Grant, ImpersonationError> {
        let target = match self.check_admin(admin, org) {
            Ok(()) => match self.directory.find(org, user).await {
                Ok(Some(found)) if found.org == org && found.id == user => {
                    if found.is_admin && !self.policy.allow_admin_targets {
                        Err(ImpersonationError::AdminTarget)
                    } else {
                        Ok(found)
                    }
                }
                Ok(_) => Err(ImpersonationError::UnknownUser),
                // The directory's own error text may hold connection details: not recorded.
                Err(_) => Err(ImpersonationError::Unavailable(
                    "the user directory did not answer".into(),
                )),
            },
            Err(e) => Err(e),
        };
        let target = match target {
            Ok(target) => target,
            Err(refusal) => return Err(self.refused(admin, org, user, request_id, refusal).await),
        };
        let id = grant_id();
        let expires_at = self.clock.now() + self.lifetime;
        let registered = self.grants.insert(
            id.clone(),
            Active {
                admin_issuer: admin.issuer().to_owned(),
                admin_subject: admin.subject().to_owned(),
                user: target.id.clone(),
                org: org.to_owned(),
                expires_at,
                ended: None,
                recording: false,
            },
        );
        if let Err(full) = registered {
            let refusal = match full {
                Full::Admin => ImpersonationError::TooMany,
                Full::All => {
                    ImpersonationError::Unavailable("too many impersonations in progress".into())
                }
            };
            return Err(self.refused(admin, org, user, request_id, refusal).await);
        }
        // The credential is made first (a failure here writes no success), and handed out
        // only once its start is written.
        let claims = LocalClaims::new(&target.id, [self.audience.as_str()])
            .authorized_party(AUTHORIZED_PARTY)
            .org(org)
            .session_id(&id)
            .roles(target.roles.iter().map(String::as_str))
            .actor(admin.issuer(), admin.subject());
        let issued = self.issuer.issue(&claims);
        let token = match issued {
            Ok(token) => SecretString::from(token),
            Err(e) => {
                self.grants.forget(&id);
                return Err(e.into());
            }
        };
        let event = Self::event(
            (admin.issuer(), admin.subject()),
            "impersonation.start",
            user,
            org,
            Some(request_id),
            Outcome::Success,
        )
        .detail("impersonation", id.as_str());
        if let Err(e) = self.audit.append(event).await {
            self.grants.forget(&id);
            return Err(ImpersonationError::Unavailable(format!("audit: {e}")));
        }
        Ok(Grant {
            id,
            token,
            expires_at,
            user: target.id,
        })
    }

    /// Ends the impersonation `id`. `caller` is the admin who started it, or the
    /// impersonation credential itself. The credential is refused from now on (by
    /// [`Impersonator::audit_layer`]); the end is recorded. When the record cannot be written
    /// the impersonation is ended all the same, the answer is
    /// [`ImpersonationError::Unavailable`], and [`Impersonator::sweep`] writes it later.
    pub async fn end(
        &self,
        caller: &Identity,
        id: &str,
        request_id: &str,
    ) -> Result<(), ImpersonationError> {
        let issuer = self.issuer.issuer();
        let may_end = |grant: &Active| match caller.method() {
            // Its own credential.
            AuthMethod::Impersonation { actor } => {
                caller.session_id() == Some(id)
                    && caller.issuer() == issuer
                    && caller.subject() == grant.user
                    && caller.org() == Some(grant.org.as_str())
                    && actor.issuer() == grant.admin_issuer
                    && actor.subject() == grant.admin_subject
            }
            // The admin who started it.
            _ => caller.issuer() == grant.admin_issuer && caller.subject() == grant.admin_subject,
        };
        // Taken and marked ended in one step: a concurrent end or sweep does not record it
        // again.
        let grant = self
            .grants
            .end(id, self.clock.now(), may_end)
            .ok_or(ImpersonationError::NotActive)?;
        let guard = Recording::new(&self.grants, id);
        self.record_end(guard, &grant, EndReason::Ended, Some(request_id))
            .await
    }

    async fn record_end(
        &self,
        mut guard: Recording<'_>,
        grant: &Active,
        reason: EndReason,
        request_id: Option<&str>,
    ) -> Result<(), ImpersonationError> {
        let id = guard.id.as_str();
        let event = Self::event(
            (&grant.admin_issuer, &grant.admin_subject),
            "impersonation.end",
            &grant.user,
            &grant.org,
            request_id,
            Outcome::Success,
        )
        .detail("impersonation", id)
        .detail("reason", reason.as_str());
        match self.audit.append(event).await {
            Ok(_) => {
                self.grants.recorded(id);
                guard.done = true;
                Ok(())
            }
            // The guard hands the end back to the next sweep.
            Err(e) => Err(ImpersonationError::Unavailable(format!("audit: {e}"))),
        }
    }

    /// Records the end of every impersonation whose credential expired, and of ended ones
    /// whose end could not be recorded before. Run it periodically (every few seconds); it
    /// answers how many ends it recorded, or the first write that failed (that one and the
    /// rest wait for the next run, as do all of them when the sweep is cancelled).
    pub async fn sweep(&self) -> Result<usize, ImpersonationError> {
        // Every due end gets its guard now: whatever stops this loop hands the unrecorded
        // ones back.
        let due: Vec<_> = self
            .grants
            .due(self.clock.now())
            .into_iter()
            .map(|(id, grant)| (Recording::new(&self.grants, &id), grant))
            .collect();
        let mut recorded = 0;
        for (guard, grant) in due {
            let reason = grant.ended.unwrap_or(EndReason::Expired);
            self.record_end(guard, &grant, reason, None).await?;
            recorded += 1;
        }
        Ok(recorded)
    }

    /// How many impersonations are in progress (or wait for their end to be recorded).
    pub fn in_progress(&self) -> usize {
        self.grants.len()
    }

    /// The layer auditing requests made with this impersonator's credentials, and refusing
    /// those of ended impersonations. Put it after the authentication layer.
    pub fn audit_layer(&self) -> AuditImpersonationLayer<A> {
        AuditImpersonationLayer::tracking(
            Arc::clone(&self.audit),
            Arc::clone(&self.grants),
            self.issuer.issuer(),
            self.clock.clone(),
        )
    }
}

/// An end being recorded: unless its record was written, dropping it (a failed write, or a
/// cancelled future) hands the end back to the next sweep.
struct Recording<'a> {
    grants: &'a Grants,
    id: String,
    done: bool,
}

impl<'a> Recording<'a> {
    fn new(grants: &'a Grants, id: &str) -> Self {
        Self {
            grants,
            id: id.to_owned(),
            done: false,
        }
    }
}

impl Drop for Recording<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.grants.not_recorded(&self.id);
        }
    }
}

/// The longest text a record keeps of a caller-supplied field.
const MAX_REFUSED_FIELD: usize = 256;

/// `text` cut to [`MAX_REFUSED_FIELD`] bytes at a character boundary, marked with `…` when
/// cut.
pub(crate) fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_REFUSED_FIELD {
        return text.into();
    }
    let mut end = MAX_REFUSED_FIELD;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end]).into()
}

/// A fresh impersonation id: 128 random bits, hex.
fn grant_id() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
