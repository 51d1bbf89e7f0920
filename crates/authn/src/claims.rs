//! Claim checks (step 6) and the [`Identity`] they produce (step 7).

use std::collections::BTreeSet;
use std::time::{Duration, UNIX_EPOCH};

use palisade_core::{AuthMethod, Identity, Membership, MfaLevel};
use serde_json::{Map, Value};

use crate::error::AuthnError;
use crate::surface::SurfacePolicy;
use crate::token::TokenTypeMode;

/// Claim-check settings shared by every surface of an issuer.
#[derive(Clone, Debug)]
pub(crate) struct ClaimRules {
    pub(crate) issuer: String,
    pub(crate) leeway: Duration,
    pub(crate) max_age: Option<Duration>,
    pub(crate) mode: TokenTypeMode,
    pub(crate) org_claim: String,
    pub(crate) team_claim: String,
    /// Memberships from group paths under this prefix (`<org>/<role>`,
    /// `<org>/teams/<team>/<role>`).
    pub(crate) groups_prefix: Option<String>,
    /// Whether `act` (impersonation) claims are accepted from this issuer.
    pub(crate) accept_actor: bool,
}

/// Memberships read from one token at most, and the longest group path read.
const MAX_GROUPS: usize = 256;
const MAX_GROUP_LEN: usize = 256;

/// The membership a group path names under `prefix`, if it names one.
pub(crate) fn membership_of(group: &str, prefix: &str) -> Option<Membership> {
    if group.len() > MAX_GROUP_LEN {
        return None;
    }
    let rest = group.strip_prefix(prefix)?;
    // `~` is Keycloak's escape for a `/` inside a group name: such paths are not read.
    if rest.contains('~') {
        return None;
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let ok = |s: &&str| !s.is_empty() && *s != "." && *s != "..";
    if !parts.iter().all(ok) {
        return None;
    }
    match parts.as_slice() {
        // `teams` is the container of an org's team groups, never a role.
        [_, "teams"] => None,
        [org, role] => Some(Membership::new(*org, None, [*role])),
        [org, "teams", team, role] => Some(Membership::new(*org, Some(team), [*role])),
        _ => None,
    }
}

/// `amr` values that are a second factor on their own.
const SECOND_FACTORS: &[&str] = &[
    "mfa", "otp", "hwk", "swk", "sms", "sc", "fpt", "face", "iris", "retina", "vbm", "webauthn",
    "totp",
];

fn number(value: Option<&Value>) -> Result<Option<i64>, ()> {
    match value {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or(()),
        Some(_) => Err(()),
    }
}

fn string<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// Checks the claims and builds the identity. `now` is unix seconds.
pub(crate) fn check(
    claims: &Map<String, Value>,
    rules: &ClaimRules,
    surface: &SurfacePolicy,
    now: i64,
) -> Result<Identity, AuthnError> {
    if string(claims, "iss") != Some(rules.issuer.as_str()) {
        return Err(AuthnError::WrongIssuer);
    }
    let leeway = i64::try_from(rules.leeway.as_secs()).unwrap_or(i64::MAX);
    let exp = number(claims.get("exp"))
        .map_err(|()| AuthnError::MissingExpiry)?
        .ok_or(AuthnError::MissingExpiry)?;
    if now > exp.saturating_add(leeway) {
        return Err(AuthnError::Expired);
    }
    if let Some(nbf) = number(claims.get("nbf")).map_err(|()| AuthnError::MalformedClaims)?
        && now.saturating_add(leeway) < nbf
    {
        return Err(AuthnError::NotYetValid);
    }
    let iat = number(claims.get("iat")).map_err(|()| AuthnError::MalformedClaims)?;
    if let Some(iat) = iat
        && iat > now.saturating_add(leeway)
    {
        return Err(AuthnError::IssuedInFuture);
    }
    if let Some(max_age) = rules.max_age {
        let max_age = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
        match iat {
            Some(iat) if now.saturating_sub(iat) <= max_age.saturating_add(leeway) => {}
            _ => return Err(AuthnError::TooOld),
        }
    }
    // Sender-constrained tokens (mTLS `x5t#S256`, DPoP `jkt`) need a proof of possession this
    // layer does not check: refuse them rather than accept them as plain bearer tokens.
    if claims.contains_key("cnf") {
        return Err(AuthnError::SenderConstrained);
    }
    // An access token, not an ID or refresh token.
    if rules.mode == TokenTypeMode::Keycloak {
        match string(claims, "typ") {
            Some("Bearer") => {}
            other => {
                return Err(AuthnError::NotAnAccessToken(
                    other.unwrap_or("").chars().take(16).collect(),
                ));
            }
        }
    } else if claims.contains_key("nonce") || string(claims, "typ").is_some_and(|t| t != "Bearer") {
        return Err(AuthnError::NotAnAccessToken(
            string(claims, "typ")
                .unwrap_or("id")
                .chars()
                .take(16)
                .collect(),
        ));
    }
    // Audience and authorized party, per surface.
    let aud = strings(claims.get("aud"));
    if aud.is_empty() {
        return Err(AuthnError::MissingAudience);
    }
    if !aud.iter().any(|a| surface.audiences.contains(a)) {
        return Err(AuthnError::WrongAudience);
    }
    let azp = string(claims, "azp").or_else(|| string(claims, "client_id"));
    match azp {
        Some(azp)
            if surface.authorized_parties.is_empty()
                || surface.authorized_parties.iter().any(|p| p == azp) => {}
        _ => return Err(AuthnError::WrongAuthorizedParty),
    }
    let subject = string(claims, "sub")
        .filter(|s| !s.is_empty())
        .ok_or(AuthnError::MissingSubject)?;

    // Roles.
    let realm_roles: BTreeSet<String> = claims
        .get("realm_access")
        .and_then(|r| r.get("roles"))
        .map(|r| strings(Some(r)).into_iter().collect())
        .unwrap_or_default();
    // RFC 8693 `act`: the token was issued to an actor acting as the subject (impersonation).
    // One level only: an actor acting for an actor is refused.
    let method = match claims.get("act") {
        None => AuthMethod::Oidc,
        Some(_) if !rules.accept_actor => return Err(AuthnError::MalformedClaims),
        Some(Value::Object(act)) => {
            let actor = act
                .get("sub")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or(AuthnError::MalformedClaims)?;
            if act.contains_key("act") {
                return Err(AuthnError::MalformedClaims);
            }
            let actor_issuer = match act.get("iss") {
                None => rules.issuer.as_str(),
                Some(Value::String(iss)) if !iss.is_empty() => iss.as_str(),
                Some(_) => return Err(AuthnError::MalformedClaims),
            };
            AuthMethod::Impersonation {
                actor: Box::new(Identity::new(
                    actor_issuer,
                    actor,
                    AuthMethod::Oidc,
                    surface.surface.clone(),
                )),
            }
        }
        Some(_) => return Err(AuthnError::MalformedClaims),
    };
    let mut identity = Identity::new(
        rules.issuer.clone(),
        subject,
        method,
        surface.surface.clone(),
    )
    .with_realm_roles(realm_roles);
    if let Some(Value::Object(resources)) = claims.get("resource_access") {
        for (client, access) in resources {
            let roles = strings(access.get("roles"));
            if !roles.is_empty() {
                identity = identity.with_client_roles(client.clone(), roles);
            }
        }
    }
    if let Some(org) = string(claims, &rules.org_claim) {
        identity = identity.with_org(org);
    }
    if let Some(team) = string(claims, &rules.team_claim) {
        identity = identity.with_team(team);
    }
    if let (Some(prefix), Some(Value::Array(groups))) = (&rules.groups_prefix, claims.get("groups"))
    {
        // Groups under the prefix are counted, so unrelated groups cannot crowd them out.
        let memberships = groups
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|group| membership_of(group, prefix))
            .take(MAX_GROUPS);
        for membership in memberships {
            identity = identity.with_membership(membership);
        }
    }
    if let Ok(exp) = u64::try_from(exp) {
        identity = identity.with_expiry(UNIX_EPOCH + Duration::from_secs(exp));
    }
    if let Some(sid) = string(claims, "sid") {
        identity = identity.with_session_id(sid);
    }
    if let Ok(Some(at)) = number(claims.get("auth_time"))
        && let Ok(secs) = u64::try_from(at)
    {
        identity = identity.with_auth_time(UNIX_EPOCH + Duration::from_secs(secs));
    }

    // Authentication strength.
    let acr = string(claims, "acr").map(str::to_owned);
    let amr = strings(claims.get("amr"));
    let distinct: BTreeSet<&str> = amr.iter().map(String::as_str).collect();
    let level = if distinct.len() >= 2
        || distinct.iter().any(|m| SECOND_FACTORS.contains(m))
        || acr
            .as_ref()
            .is_some_and(|a| surface.mfa_acr_values.contains(a))
    {
        MfaLevel::MultiFactor
    } else if !distinct.is_empty() || acr.as_deref() == Some("1") {
        MfaLevel::SingleFactor
    } else {
        MfaLevel::None
    };
    identity = identity.with_mfa(level, acr, amr);
    if surface.require_mfa && !level.is_multi_factor() {
        return Err(AuthnError::MfaRequired);
    }
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use palisade_core::Surface;
    use proptest::prelude::*;

    proptest! {
        /// Hostile group paths never panic, and a membership never holds an empty, dot or
        /// slashed part.
        #[test]
        fn group_paths_parse_safely(group in "(/[a-z.]{0,4}){0,6}") {
            if let Some(m) = super::membership_of(&group, "/orgs/") {
                let parts = [m.org()].into_iter().chain(m.team()).chain(m.roles().iter().map(String::as_str));
                for part in parts {
                    prop_assert!(!part.is_empty() && part != "." && part != ".." && !part.contains('/'));
                }
            }
        }
    }

    #[test]
    fn groups_name_memberships() {
        use palisade_core::Membership;
        let of = |g: &str| super::membership_of(g, "/orgs/");
        assert_eq!(
            of("/orgs/org-1/member"),
            Some(Membership::new("org-1", None, ["member"]))
        );
        assert_eq!(
            of("/orgs/org-1/teams/ops/editor"),
            Some(Membership::new("org-1", Some("ops"), ["editor"]))
        );
        for bad in [
            "/orgs/org-1",
            "/orgs//member",
            "/other/org-1/member",
            "/orgs/../admin",
            "/orgs/a/b/c",
            "/orgs/org-1/teams",
            "/orgs/org~/1/admin",
        ] {
            assert_eq!(of(bad), None, "{bad}");
        }
    }

    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn rules() -> ClaimRules {
        ClaimRules {
            issuer: "https://sso.example.com/realms/acme".into(),
            leeway: Duration::from_secs(30),
            max_age: Some(Duration::from_secs(3600)),
            mode: TokenTypeMode::Keycloak,
            org_claim: "org_id".into(),
            team_claim: "team_id".into(),
            groups_prefix: Some("/orgs/".into()),
            accept_actor: true,
        }
    }

    fn api() -> SurfacePolicy {
        SurfacePolicy::new(Surface::API)
            .audiences(["api"])
            .authorized_parties(["web"])
    }

    fn admin() -> SurfacePolicy {
        SurfacePolicy::new(Surface::GLOBAL_ADMIN)
            .audiences(["global-admin"])
            .authorized_parties(["console"])
            .require_mfa(true)
            .mfa_acr_values(["2"])
    }

    fn good() -> Value {
        json!({
            "iss": "https://sso.example.com/realms/acme", "sub": "u1", "typ": "Bearer",
            "exp": NOW + 300, "iat": NOW - 10, "aud": "api", "azp": "web",
            "realm_access": {"roles": ["member"]}, "resource_access": {"api": {"roles": ["reader"]}},
            "org_id": "org-1", "team_id": "t-1", "sid": "s-1", "acr": "1", "amr": ["pwd"], "auth_time": NOW - 20
        })
    }

    fn with(patch: Value) -> Map<String, Value> {
        let mut v = good();
        for (k, val) in patch.as_object().unwrap() {
            if val.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = val.clone();
            }
        }
        v.as_object().unwrap().clone()
    }

    #[test]
    fn an_act_claim_is_refused_from_issuers_not_trusted_with_it() {
        let claims = with(json!({"act": {"sub": "admin-1"}}));
        let mut plain = rules();
        plain.accept_actor = false;
        assert_eq!(
            check(&claims, &plain, &api(), NOW).unwrap_err(),
            AuthnError::MalformedClaims
        );
        assert!(check(&with(json!({})), &plain, &api(), NOW).is_ok());
    }

    #[test]
    fn an_act_claim_names_the_actor_and_nesting_is_refused() {
        let claims =
            with(json!({"act": {"sub": "admin-1", "iss": "https://sso.example.com/realms/acme"}}));
        let id = check(&claims, &rules(), &api(), NOW).unwrap();
        match id.method() {
            AuthMethod::Impersonation { actor } => {
                assert_eq!(actor.subject(), "admin-1");
                assert_eq!(id.subject(), "u1");
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            json!({"act": {"sub": "a", "act": {"sub": "b"}}}),
            json!({"act": "admin-1"}),
            json!({"act": {"sub": ""}}),
            json!({"act": {"sub": "a", "iss": 7}}),
        ] {
            assert_eq!(
                check(&with(bad), &rules(), &api(), NOW).unwrap_err(),
                AuthnError::MalformedClaims
            );
        }
    }

    #[test]
    fn groups_become_memberships() {
        let claims =
            with(json!({"groups": ["/orgs/org-1/member", "/orgs/org-2/admin", "/staff", 7]}));
        let id = check(&claims, &rules(), &api(), NOW).unwrap();
        let orgs: Vec<&str> = id.memberships().iter().map(|m| m.org()).collect();
        assert_eq!(orgs, ["org-1", "org-2"]);
        let mut no_prefix = rules();
        no_prefix.groups_prefix = None;
        assert!(
            check(&claims, &no_prefix, &api(), NOW)
                .unwrap()
                .memberships()
                .is_empty()
        );
    }

    #[test]
    fn good_token_builds_the_identity() {
        let id = check(&with(json!({})), &rules(), &api(), NOW).unwrap();
        assert_eq!(id.subject(), "u1");
        assert_eq!(id.org(), Some("org-1"));
        assert_eq!(id.team(), Some("t-1"));
        assert!(id.has_realm_role("member"));
        assert!(id.has_client_role("api", "reader"));
        assert_eq!(id.mfa_level(), MfaLevel::SingleFactor);
        assert_eq!(id.session_id(), Some("s-1"));
        assert_eq!(id.surface(), &Surface::API);
    }

    #[test]
    fn claim_attack_table() {
        let cases = vec![
            (
                json!({"iss": "https://evil.example.com/realms/acme"}),
                AuthnError::WrongIssuer,
            ),
            (
                json!({"iss": "https://sso.example.com/realms/acme/"}),
                AuthnError::WrongIssuer,
            ),
            (json!({"iss": null}), AuthnError::WrongIssuer),
            (json!({"exp": null}), AuthnError::MissingExpiry),
            (json!({"exp": "9999999999"}), AuthnError::MissingExpiry),
            (json!({"exp": NOW - 31}), AuthnError::Expired),
            (json!({"nbf": NOW + 31}), AuthnError::NotYetValid),
            (json!({"iat": NOW + 31}), AuthnError::IssuedInFuture),
            (json!({"iat": NOW - 3700}), AuthnError::TooOld),
            (json!({"iat": null}), AuthnError::TooOld),
            (
                json!({"typ": "ID"}),
                AuthnError::NotAnAccessToken("ID".into()),
            ),
            (
                json!({"typ": "Refresh"}),
                AuthnError::NotAnAccessToken("Refresh".into()),
            ),
            (
                json!({"typ": null}),
                AuthnError::NotAnAccessToken(String::new()),
            ),
            (json!({"aud": null}), AuthnError::MissingAudience),
            (json!({"aud": []}), AuthnError::MissingAudience),
            (json!({"aud": ["account"]}), AuthnError::WrongAudience),
            (json!({"aud": "global-admin"}), AuthnError::WrongAudience),
            (
                json!({"azp": "other-client"}),
                AuthnError::WrongAuthorizedParty,
            ),
            (json!({"azp": null}), AuthnError::WrongAuthorizedParty),
            (json!({"sub": null}), AuthnError::MissingSubject),
            (json!({"sub": ""}), AuthnError::MissingSubject),
            (
                json!({"cnf": {"x5t#S256": "abc"}}),
                AuthnError::SenderConstrained,
            ),
            (
                json!({"cnf": {"jkt": "abc"}}),
                AuthnError::SenderConstrained,
            ),
        ];
        for (patch, want) in cases {
            assert_eq!(
                check(&with(patch.clone()), &rules(), &api(), NOW).unwrap_err(),
                want,
                "{patch}"
            );
        }
        // Leeway edges are accepted.
        assert!(
            check(
                &with(json!({"exp": NOW - 30, "nbf": NOW + 30, "iat": NOW + 30})),
                &rules(),
                &api(),
                NOW
            )
            .is_ok()
        );
        // client_id stands in for azp.
        assert!(
            check(
                &with(json!({"azp": null, "client_id": "web"})),
                &rules(),
                &api(),
                NOW
            )
            .is_ok()
        );
        // aud as a list with one match.
        assert!(
            check(
                &with(json!({"aud": ["account", "api"]})),
                &rules(),
                &api(),
                NOW
            )
            .is_ok()
        );
    }

    #[test]
    fn mfa_policy() {
        let admin_claims = |amr: Value, acr: &str| {
            with(json!({"aud": "global-admin", "azp": "console", "amr": amr, "acr": acr}))
        };
        assert_eq!(
            check(&admin_claims(json!(["pwd"]), "1"), &rules(), &admin(), NOW).unwrap_err(),
            AuthnError::MfaRequired
        );
        assert_eq!(
            check(
                &admin_claims(json!(["pwd", "pwd"]), "1"),
                &rules(),
                &admin(),
                NOW
            )
            .unwrap_err(),
            AuthnError::MfaRequired
        );
        assert!(
            check(
                &admin_claims(json!(["pwd", "otp"]), "1"),
                &rules(),
                &admin(),
                NOW
            )
            .is_ok()
        );
        assert!(check(&admin_claims(json!(["hwk"]), "1"), &rules(), &admin(), NOW).is_ok());
        assert!(check(&admin_claims(json!([]), "2"), &rules(), &admin(), NOW).is_ok());
        // An API token is not an admin token, MFA or not.
        assert_eq!(
            check(
                &with(json!({"amr": ["pwd", "otp"]})),
                &rules(),
                &admin(),
                NOW
            )
            .unwrap_err(),
            AuthnError::WrongAudience
        );
    }
}
