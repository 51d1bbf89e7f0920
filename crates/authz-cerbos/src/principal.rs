//! Cerbos principals scoped to the tenant a request targets.
//!
//! A caller may belong to many orgs. The principal sent to the PDP for a request to org `O`
//! (and team `T`) carries only:
//!
//! - the roles of the caller's org-wide memberships of `O`;
//! - realm roles named in [`PrincipalOptions::global_roles`] (platform-wide roles such as an
//!   operator role), and the token's realm roles only when
//!   [`PrincipalOptions::token_org_roles`] is on and the token was issued for `O`;
//! - the roles of its memberships of team `T` of `O`, as the `team_roles` attribute only (a
//!   team's admin is not the org's admin);
//! - attributes about the request's tenant and the authentication (below), never another
//!   org's id, team or role.
//!
//! A caller with no role in `O` gets no principal ([`AuthzError::NoRole`]): a deny, without
//! asking the PDP (which needs a role).
//!
//! Attributes: `org`, `team` (empty when none), `team_roles`, `mfa` (two factors or more), `mfa_level`
//! (`none`, `single`, `multi`), `amr` (list), `acr`, `auth_method` (`oidc`, `local_jwt`,
//! `access_key`, `impersonation`), `impersonating` and `actor` (the acting administrator's
//! subject, empty when not impersonating), `issuer`.
//!
//! ```
//! use palisade_authz_cerbos::{PrincipalOptions, Tenant, principal_for};
//! use palisade_core::{AuthMethod, Identity, Membership, Surface};
//!
//! let alice = Identity::new("https://sso.example.com/realms/acme", "alice", AuthMethod::Oidc, Surface::API)
//!     .with_membership(Membership::new("org-1", None, ["member"]))
//!     .with_membership(Membership::new("org-2", None, ["admin"]));
//! let p = principal_for(&alice, &Tenant::org("org-1"), &PrincipalOptions::default())?;
//! assert_eq!(p.roles, ["member"]); // never org-2's admin
//! # Ok::<(), palisade_authz_cerbos::AuthzError>(())
//! ```

use std::collections::{BTreeSet, HashMap};

use cerbos::genpb::cerbos::engine::v1::Principal;
use cerbos::genpb::google::protobuf::{ListValue, Value, value::Kind};
use palisade_core::{AuthMethod, Identity, MfaLevel};

use crate::AuthzError;

/// The tenant a request targets: an org, and optionally a team of it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tenant {
    org: String,
    team: Option<String>,
}

impl Tenant {
    /// Org `org`, no team.
    pub fn org(org: impl Into<String>) -> Self {
        Self {
            org: org.into(),
            team: None,
        }
    }

    /// Team `team` of this org.
    pub fn with_team(mut self, team: impl Into<String>) -> Self {
        self.team = Some(team.into());
        self
    }

    /// The org id.
    pub fn org_id(&self) -> &str {
        &self.org
    }

    /// The team id, if any.
    pub fn team_id(&self) -> Option<&str> {
        self.team.as_deref()
    }
}

/// How principals are built.
#[derive(Clone, Debug, Default)]
pub struct PrincipalOptions {
    global_roles: BTreeSet<String>,
    token_org_roles: bool,
    scope_by_tenant: bool,
    policy_version: String,
}

impl PrincipalOptions {
    /// Realm roles that hold in every org (for example a platform operator role). Other realm
    /// roles are dropped unless the token was issued for the request's org.
    pub fn global_roles<I, R>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = R>,
        R: Into<String>,
    {
        self.global_roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// Treats the token's realm roles as roles in the token's own org (`Identity::org`), for
    /// deployments that issue tokens per org. Off by default: realm roles are realm-wide, and
    /// an org claim is often a user attribute that outlives a membership.
    pub fn token_org_roles(mut self, on: bool) -> Self {
        self.token_org_roles = on;
        self
    }

    /// Sets the principal's Cerbos `scope` to the org (and `org.team`), so scoped policies
    /// can follow the tenant. Org and team ids must then be valid scope segments.
    pub fn scope_by_tenant(mut self, on: bool) -> Self {
        self.scope_by_tenant = on;
        self
    }

    /// The policy version to ask for (empty: the PDP's default).
    pub fn policy_version(mut self, version: impl Into<String>) -> Self {
        self.policy_version = version.into();
        self
    }
}

/// A Cerbos scope segment: a letter or digit, then letters, digits, `-` and `_`, at most 128
/// bytes.
fn scope_segment(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(crate) fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

pub(crate) fn boolean(b: bool) -> Value {
    Value {
        kind: Some(Kind::BoolValue(b)),
    }
}

pub(crate) fn strings<'a>(items: impl IntoIterator<Item = &'a str>) -> Value {
    Value {
        kind: Some(Kind::ListValue(ListValue {
            values: items.into_iter().map(string).collect(),
        })),
    }
}

/// The Cerbos principal of `identity` for a request to `tenant` (see the module docs).
/// Errors when the tenant is empty, or is not a valid scope while scoping by tenant.
pub fn principal_for(
    identity: &Identity,
    tenant: &Tenant,
    options: &PrincipalOptions,
) -> Result<Principal, AuthzError> {
    if tenant.org.is_empty() || tenant.team.as_deref() == Some("") {
        return Err(AuthzError::InvalidTenant);
    }
    // Org-wide roles of the tenant's org; team roles only as an attribute (a team's admin is
    // not the org's admin: policies that honour team roles check the team too).
    let mut roles: BTreeSet<&str> = BTreeSet::new();
    let mut team_roles: BTreeSet<&str> = BTreeSet::new();
    for membership in identity.memberships() {
        if membership.org() != tenant.org {
            continue;
        }
        match membership.team() {
            None => roles.extend(membership.roles().iter().map(String::as_str)),
            Some(team) if tenant.team.as_deref() == Some(team) => {
                team_roles.extend(membership.roles().iter().map(String::as_str));
            }
            Some(_) => {}
        }
    }
    // Realm roles are realm-wide: only the named global ones pass, unless the deployment says
    // its tokens are issued per org (then the token's roles are its org's).
    let token_for_tenant = options.token_org_roles
        && identity.org() == Some(tenant.org.as_str())
        && identity
            .team()
            .is_none_or(|team| tenant.team.as_deref() == Some(team));
    for role in identity.realm_roles() {
        if token_for_tenant || options.global_roles.contains(role) {
            roles.insert(role);
        }
    }
    if roles.is_empty() {
        // Cerbos needs a role; a caller without one in this tenant is denied here.
        return Err(AuthzError::NoRole);
    }
    let (method, actor) = match identity.method() {
        AuthMethod::Oidc => ("oidc", None),
        AuthMethod::LocalJwt => ("local_jwt", None),
        AuthMethod::AccessKey { .. } => ("access_key", None),
        AuthMethod::Impersonation { actor } => ("impersonation", Some(actor.subject())),
        _ => ("other", None),
    };
    let level = match identity.mfa_level() {
        MfaLevel::MultiFactor => "multi",
        MfaLevel::SingleFactor => "single",
        _ => "none",
    };
    let attr: HashMap<String, Value> = [
        ("org", string(&tenant.org)),
        ("team", string(tenant.team.as_deref().unwrap_or(""))),
        ("team_roles", strings(team_roles.iter().copied())),
        ("mfa", boolean(identity.mfa_level().is_multi_factor())),
        ("mfa_level", string(level)),
        ("amr", strings(identity.amr().iter().map(String::as_str))),
        ("acr", string(identity.acr().unwrap_or(""))),
        ("auth_method", string(method)),
        ("impersonating", boolean(actor.is_some())),
        ("actor", string(actor.unwrap_or(""))),
        ("issuer", string(identity.issuer())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let scope = if options.scope_by_tenant {
        let segments = std::iter::once(tenant.org.as_str()).chain(tenant.team.as_deref());
        let mut scope = Vec::new();
        for segment in segments {
            if !scope_segment(segment) {
                return Err(AuthzError::InvalidTenant);
            }
            scope.push(segment);
        }
        scope.join(".")
    } else {
        String::new()
    };
    Ok(Principal {
        id: identity.subject().to_owned(),
        policy_version: options.policy_version.clone(),
        roles: roles.into_iter().map(str::to_owned).collect(),
        attr,
        scope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::{Membership, Surface};
    use proptest::prelude::*;

    fn identity() -> Identity {
        Identity::new(
            "https://idp/realms/r",
            "alice",
            AuthMethod::Oidc,
            Surface::API,
        )
    }

    /// Every text value in a principal's attributes.
    fn texts(p: &Principal) -> Vec<String> {
        fn walk(v: &Value, out: &mut Vec<String>) {
            match &v.kind {
                Some(Kind::StringValue(s)) => out.push(s.clone()),
                Some(Kind::ListValue(l)) => l.values.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        p.attr.values().for_each(|v| walk(v, &mut out));
        out
    }

    proptest! {
        /// Memberships in many orgs and teams: the principal for one tenant has exactly the
        /// roles of that tenant's memberships, and no attribute names another org or team.
        /// Role and team names carry their org, so any bleed would show.
        #[test]
        fn no_cross_tenant_bleed(
            memberships in proptest::collection::vec(
                (0u8..6, proptest::option::of(0u8..3), proptest::collection::btree_set(0u8..4, 0..4)),
                0..12,
            ),
            target in 0u8..6,
            target_team in proptest::option::of(0u8..3),
            token_org in proptest::option::of(0u8..6),
            realm in proptest::collection::btree_set(0u8..3, 0..3),
        ) {
            let org = |o: u8| format!("org-{o}");
            let team = |o: u8, t: u8| format!("org-{o}-team-{t}");
            let role = |o: u8, r: u8| format!("org-{o}-role-{r}");
            let mut id = identity();
            for (o, t, roles) in &memberships {
                let team_name = t.map(|t| team(*o, t));
                id = id.with_membership(Membership::new(
                    org(*o),
                    team_name.as_deref(),
                    roles.iter().map(|r| role(*o, *r)),
                ));
            }
            if let Some(o) = token_org {
                id = id.with_org(org(o));
            }
            // Realm roles named after the token's org (or "realm" without one).
            let realm_role = |r: u8| format!("{}-realm-{r}", token_org.map_or("none".to_owned(), org));
            id = id.with_realm_roles(realm.iter().map(|r| realm_role(*r)));
            let mut tenant = Tenant::org(org(target));
            if let Some(t) = target_team {
                tenant = tenant.with_team(team(target, t));
            }
            let expected: BTreeSet<String> = memberships
                .iter()
                .filter(|(o, t, _)| *o == target && t.is_none())
                .flat_map(|(o, _, roles)| roles.iter().map(move |r| role(*o, *r)))
                .collect();
            let expected_team: Vec<String> = memberships
                .iter()
                .filter(|(o, t, _)| *o == target && t.is_some() && *t == target_team)
                .flat_map(|(o, _, roles)| roles.iter().map(move |r| role(*o, *r)))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let p = match principal_for(&id, &tenant, &PrincipalOptions::default()) {
                Ok(p) => p,
                Err(AuthzError::NoRole) => {
                    prop_assert!(expected.is_empty());
                    return Ok(());
                }
                Err(e) => return Err(TestCaseError::fail(e.to_string())),
            };
            let got: BTreeSet<String> = p.roles.iter().cloned().collect();
            prop_assert_eq!(got, expected);
            prop_assert_eq!(&p.attr["team_roles"], &strings(expected_team.iter().map(String::as_str)));
            let own = org(target);
            for text in texts(&p) {
                // Every org-like value is the target's own.
                if let Some(rest) = text.strip_prefix("org-") {
                    prop_assert!(text.starts_with(&own), "{} leaked ({})", text, rest);
                }
            }
        }
    }

    #[test]
    fn realm_roles_pass_only_when_global_or_opted_in_for_the_tokens_org() {
        let id = identity()
            .with_org("org-9")
            .with_realm_roles(["operator", "admin"]);
        let opts = PrincipalOptions::default().global_roles(["operator"]);
        let p = principal_for(&id, &Tenant::org("org-1"), &opts).expect("principal");
        assert_eq!(p.roles, ["operator"]);
        // The token's org claim alone grants nothing realm-wide ...
        let p = principal_for(&id, &Tenant::org("org-9"), &opts).expect("principal");
        assert_eq!(p.roles, ["operator"]);
        // ... unless tokens are declared per org.
        let per_org = opts.clone().token_org_roles(true);
        let p = principal_for(&id, &Tenant::org("org-9"), &per_org).expect("principal");
        assert_eq!(p.roles, ["admin", "operator"]);
        let p = principal_for(&id, &Tenant::org("org-1"), &per_org).expect("principal");
        assert_eq!(p.roles, ["operator"]);
        // No role at all: no principal (a deny without asking the PDP).
        let nobody = identity().with_org("org-9");
        assert!(matches!(
            principal_for(&nobody, &Tenant::org("org-9"), &PrincipalOptions::default()),
            Err(AuthzError::NoRole)
        ));
    }

    #[test]
    fn team_roles_stay_with_their_team() {
        let id = identity()
            .with_membership(Membership::new("org-1", None, ["member"]))
            .with_membership(Membership::new("org-1", Some("ops"), ["admin"]));
        let opts = PrincipalOptions::default();
        let p = principal_for(&id, &Tenant::org("org-1").with_team("ops"), &opts).expect("p");
        assert_eq!(p.roles, ["member"]);
        assert_eq!(p.attr["team_roles"], strings(["admin"]));
        let p = principal_for(&id, &Tenant::org("org-1").with_team("finance"), &opts).expect("p");
        assert_eq!(p.attr["team_roles"], strings([]));
    }

    #[test]
    fn scopes_follow_the_tenant_and_refuse_odd_ids() {
        let opts = PrincipalOptions::default().scope_by_tenant(true);
        let member = |org: &str| identity().with_membership(Membership::new(org, None, ["member"]));
        let p = principal_for(
            &member("acme"),
            &Tenant::org("acme").with_team("ops"),
            &opts,
        )
        .expect("principal");
        assert_eq!(p.scope, "acme.ops");
        for bad in [
            Tenant::org("a.b"),
            Tenant::org(""),
            Tenant::org("-x"),
            Tenant::org("x").with_team(""),
            Tenant::org("x").with_team("_t"),
        ] {
            let who = member(bad.org_id());
            assert!(principal_for(&who, &bad, &opts).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn impersonation_and_mfa_are_attributes() {
        let admin = identity();
        let id = Identity::new(
            "https://idp/realms/r",
            "bob",
            AuthMethod::Impersonation {
                actor: Box::new(admin),
            },
            Surface::API,
        )
        .with_membership(Membership::new("o", None, ["member"]))
        .with_mfa(MfaLevel::MultiFactor, Some("2".into()), vec!["otp".into()]);
        let p =
            principal_for(&id, &Tenant::org("o"), &PrincipalOptions::default()).expect("principal");
        assert_eq!(p.attr["impersonating"], boolean(true));
        assert_eq!(p.attr["actor"], string("alice"));
        assert_eq!(p.attr["mfa"], boolean(true));
        assert_eq!(p.attr["amr"], strings(["otp"]));
    }
}
