//! Impersonation flows: who may start, of whom, what the credential proves, and that nothing
//! is issued without its audit record.

use std::time::Duration;

use palisade_audit::{Chain, MemorySink, Outcome, Verifier};
use palisade_authn::{Authenticator, AuthnError, IssuerConfig, KeySource, SurfacePolicy};
use palisade_core::{AuthMethod, Identity, KeyRing, ManualClock, MfaLevel, Profile, Surface};
use palisade_impersonation::{
    AUTHORIZED_PARTY, DirectoryUser, ImpersonationError, ImpersonationPolicy, Impersonator,
    RoleRule, StaticDirectory,
};
use secrecy::ExposeSecret as _;

const T: u64 = 1_800_000_000;
const AUDIT_KEY: &str = "audit 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const JWT_KEY: &str = "imp 1 ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
const IDP: &str = "https://sso.example.com/realms/acme";

fn user(id: &str, org: &str, admin: bool) -> DirectoryUser {
    DirectoryUser {
        id: id.to_owned(),
        org: org.to_owned(),
        roles: vec!["member".to_owned()],
        is_admin: admin,
    }
}

fn admin(surface: Surface) -> Identity {
    Identity::new(IDP, "admin-1", AuthMethod::Oidc, surface)
        .with_org("org-1")
        .with_realm_roles(["impersonator"])
        .with_mfa(
            MfaLevel::MultiFactor,
            Some("2".into()),
            vec!["pwd".into(), "otp".into()],
        )
        .with_auth_time(std::time::UNIX_EPOCH + Duration::from_secs(T - 60))
}

/// A memory sink whose writes can be made to fail (an audit store going down and back up).
#[derive(Clone)]
struct Flaky {
    inner: MemorySink,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// When set, the next record of this action signals `entered` and waits for `release`.
    hold: std::sync::Arc<std::sync::Mutex<Option<&'static str>>>,
    entered: std::sync::Arc<tokio::sync::Notify>,
    release: std::sync::Arc<tokio::sync::Notify>,
}

impl Flaky {
    fn records(&self) -> Vec<palisade_audit::Record> {
        self.inner.records()
    }

    fn fail_writes(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }
}

impl palisade_audit::AuditSink for Flaky {
    async fn append(
        &self,
        event: palisade_audit::Event,
    ) -> Result<palisade_audit::Record, palisade_audit::AuditError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(palisade_audit::AuditError::Event("sink down"));
        }
        let held = {
            let mut hold = self.hold.lock().expect("hold");
            let held = hold.is_some_and(|action| format!("{event:?}").contains(action));
            if held {
                *hold = None;
            }
            held
        };
        if held {
            self.entered.notify_one();
            self.release.notified().await;
        }
        self.inner.append(event).await
    }

    async fn checkpoint(&self) -> Result<palisade_audit::Checkpoint, palisade_audit::AuditError> {
        self.inner.checkpoint().await
    }
}

struct Setup {
    clock: ManualClock,
    audit: Flaky,
    imp: Impersonator<StaticDirectory, Flaky>,
}

fn setup(audit_ring: &str) -> Setup {
    setup_with(
        audit_ring,
        ImpersonationPolicy::new(RoleRule::Realm("impersonator".into())).mfa_acr_values(["2"]),
    )
}

fn setup_with(audit_ring: &str, policy: ImpersonationPolicy) -> Setup {
    let clock = ManualClock::at_unix(T);
    let audit = Flaky {
        inner: MemorySink::with_chain(Chain::with_clock(
            KeyRing::parse(audit_ring).expect("ring"),
            clock.shared(),
        )),
        down: Default::default(),
        hold: Default::default(),
        entered: Default::default(),
        release: Default::default(),
    };
    let directory = StaticDirectory::new()
        .with(user("u-1", "org-1", false))
        .with(user("u-admin", "org-1", true))
        .with(user("u-2", "org-2", false));
    let imp = Impersonator::builder(
        policy,
        directory,
        audit.clone(),
        "https://api.example.com/impersonation",
    )
    .key_ring(KeyRing::parse(JWT_KEY).expect("ring"))
    .lifetime(Duration::from_secs(600))
    .clock(clock.shared())
    .profile(Profile::Production)
    .build()
    .expect("impersonator");
    Setup { clock, audit, imp }
}

async fn authenticator(s: &Setup) -> Authenticator {
    Authenticator::builder()
        .clock(s.clock.shared())
        .issuer(
            IssuerConfig::new(s.imp.issuer())
                .expect("issuer")
                .key_source(KeySource::Static(s.imp.key_set()))
                .accept_actor_claims(),
        )
        .build()
        .await
        .expect("authenticator")
}

/// A global admin of `s` impersonates u-1 of org-1: the grant and the credential's identity.
async fn started(s: &Setup) -> (palisade_impersonation::Grant, Identity) {
    let grant = s
        .imp
        .start(&admin(Surface::GLOBAL_ADMIN), "org-1", "u-1", "req-1")
        .await
        .expect("start");
    let id = authenticator(s)
        .await
        .verify(grant.token.expose_secret(), &api())
        .await
        .expect("verify");
    (grant, id)
}

/// A refused start: its name, the admin, the org, the target and the refusal expected.
type Case = (
    &'static str,
    Identity,
    &'static str,
    &'static str,
    fn(&ImpersonationError) -> bool,
);

fn api() -> SurfacePolicy {
    SurfacePolicy::new(Surface::API)
        .audiences(["api"])
        .authorized_parties([AUTHORIZED_PARTY])
}

#[tokio::test]
async fn an_admin_with_fresh_mfa_impersonates_a_user_of_the_org_and_it_is_audited() {
    let s = setup(AUDIT_KEY);
    let grant = s
        .imp
        .start(&admin(Surface::GLOBAL_ADMIN), "org-1", "u-1", "req-1")
        .await
        .expect("start");
    // The start was written before the credential existed.
    let records = s.audit.records();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (
            records[0].action.as_str(),
            records[0].actor.as_str(),
            records[0].target.as_str(),
            records[0].outcome
        ),
        ("impersonation.start", "admin-1", "u-1", Outcome::Success)
    );
    // The credential proves both the user and the admin.
    let auth = authenticator(&s).await;
    let id = auth
        .verify(grant.token.expose_secret(), &api())
        .await
        .expect("verify");
    assert_eq!((id.subject(), id.org()), ("u-1", Some("org-1")));
    match id.method() {
        AuthMethod::Impersonation { actor } => {
            assert_eq!((actor.issuer(), actor.subject()), (IDP, "admin-1"))
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{grant:?}").contains(grant.token.expose_secret()));
    // Impersonating while impersonating is refused.
    let nested = s.imp.start(&id, "org-1", "u-1", "req-2").await;
    assert!(
        matches!(nested, Err(ImpersonationError::Nested)),
        "{nested:?}"
    );
    // The end is recorded; the log verifies.
    assert_eq!(s.imp.in_progress(), 1);
    s.imp.end(&id, &grant.id, "req-3").await.expect("end");
    assert_eq!(s.imp.in_progress(), 0);
    // Ending twice is refused (nothing in progress).
    let again = s.imp.end(&id, &grant.id, "req-4").await;
    assert!(
        matches!(again, Err(ImpersonationError::NotActive)),
        "{again:?}"
    );
    // The credential expires with its lifetime.
    s.clock.advance(Duration::from_secs(600 + 31));
    let expired = auth.verify(grant.token.expose_secret(), &api()).await;
    assert_eq!(expired.err(), Some(AuthnError::Expired));
    // Nothing is left to record at expiry: the end was recorded already.
    assert_eq!(s.imp.sweep().await.expect("sweep"), 0);
    let records: Vec<_> = s.audit.records().into_iter().map(Ok).collect();
    assert_eq!(records.len(), 3);
    let end = &s.audit.records()[2];
    assert_eq!(
        (end.action.as_str(), end.details["reason"].as_str()),
        ("impersonation.end", "ended")
    );
    let ring = KeyRing::parse(AUDIT_KEY).expect("ring");
    assert!(Verifier::new(ring).verify(records, None).is_ok());
}

#[tokio::test]
async fn refusals_are_typed_and_audited() {
    let s = setup(AUDIT_KEY);
    let no_mfa = Identity::new(IDP, "admin-1", AuthMethod::Oidc, Surface::GLOBAL_ADMIN)
        .with_realm_roles(["impersonator"])
        .with_mfa(MfaLevel::SingleFactor, Some("1".into()), vec!["pwd".into()])
        .with_auth_time(std::time::UNIX_EPOCH + Duration::from_secs(T - 60));
    let stale = admin(Surface::GLOBAL_ADMIN)
        .with_auth_time(std::time::UNIX_EPOCH + Duration::from_secs(T - 3_600));
    let no_role = Identity::new(IDP, "admin-1", AuthMethod::Oidc, Surface::GLOBAL_ADMIN)
        .with_mfa(MfaLevel::MultiFactor, Some("2".into()), vec!["otp".into()])
        .with_auth_time(std::time::UNIX_EPOCH + Duration::from_secs(T - 60));
    let api_user = admin(Surface::API);
    let cases: Vec<Case> = vec![
        ("no MFA", no_mfa, "org-1", "u-1", |e| {
            matches!(e, ImpersonationError::MfaRequired)
        }),
        ("stale MFA", stale, "org-1", "u-1", |e| {
            matches!(e, ImpersonationError::StaleAuthentication)
        }),
        ("missing role", no_role, "org-1", "u-1", |e| {
            matches!(e, ImpersonationError::MissingRole)
        }),
        ("an API token", api_user, "org-1", "u-1", |e| {
            matches!(e, ImpersonationError::NotAdmin)
        }),
        (
            "unknown user",
            admin(Surface::GLOBAL_ADMIN),
            "org-1",
            "ghost",
            |e| matches!(e, ImpersonationError::UnknownUser),
        ),
        (
            "a user of another org",
            admin(Surface::GLOBAL_ADMIN),
            "org-1",
            "u-2",
            |e| matches!(e, ImpersonationError::UnknownUser),
        ),
        (
            "an org admin outside its org",
            admin(Surface::ORG_ADMIN),
            "org-2",
            "u-2",
            |e| matches!(e, ImpersonationError::NotAdmin),
        ),
        (
            "an admin target",
            admin(Surface::GLOBAL_ADMIN),
            "org-1",
            "u-admin",
            |e| matches!(e, ImpersonationError::AdminTarget),
        ),
    ];
    let count = cases.len();
    for (name, who, org, target, expected) in cases {
        let refused = s.imp.start(&who, org, target, name).await;
        match refused {
            Err(e) => assert!(expected(&e), "{name}: {e:?}"),
            Ok(_) => panic!("{name}: started"),
        }
    }
    // Every refusal is in the log, as denied, with its reason; none issued anything.
    let records = s.audit.records();
    assert_eq!(records.len(), count);
    assert!(
        records
            .iter()
            .all(|r| r.outcome == Outcome::Denied && r.details.contains_key("reason"))
    );
    // An org admin may impersonate in its own org.
    assert!(
        s.imp
            .start(&admin(Surface::ORG_ADMIN), "org-1", "u-1", "own")
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn without_a_working_audit_sink_nothing_is_issued() {
    // The audit ring's only key is not valid yet: every audit write fails.
    let s = setup(&format!("{AUDIT_KEY} not_before={}", T + 86_400));
    let refused = s
        .imp
        .start(&admin(Surface::GLOBAL_ADMIN), "org-1", "u-1", "req")
        .await;
    assert!(
        matches!(refused, Err(ImpersonationError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(s.audit.records().is_empty());
}

#[tokio::test]
async fn the_end_at_expiry_is_recorded_by_the_sweep() {
    let s = setup(AUDIT_KEY);
    let a = s
        .imp
        .start(&admin(Surface::GLOBAL_ADMIN), "org-1", "u-1", "req-1")
        .await
        .expect("start");
    s.clock.advance(Duration::from_secs(300));
    let b = s
        .imp
        .start(&admin(Surface::GLOBAL_ADMIN), "org-1", "u-1", "req-2")
        .await
        .expect("start");
    assert_ne!(a.id, b.id);
    // Nothing has expired yet.
    assert_eq!(s.imp.sweep().await.expect("sweep"), 0);
    // The first one's lifetime (600 s) runs out; the second has 300 s left.
    s.clock.advance(Duration::from_secs(300));
    assert_eq!(s.imp.sweep().await.expect("sweep"), 1);
    assert_eq!(s.imp.in_progress(), 1);
    let records = s.audit.records();
    let end = records.last().expect("end");
    assert_eq!(
        (
            end.action.as_str(),
            end.actor.as_str(),
            end.target.as_str(),
            end.details["reason"].as_str(),
            end.details["impersonation"].as_str(),
        ),
        (
            "impersonation.end",
            "admin-1",
            "u-1",
            "expired",
            a.id.as_str()
        )
    );
    // An expired impersonation can no longer be ended.
    let late = s
        .imp
        .end(&admin(Surface::GLOBAL_ADMIN), &a.id, "req-3")
        .await;
    assert!(
        matches!(late, Err(ImpersonationError::NotActive)),
        "{late:?}"
    );
    s.clock.advance(Duration::from_secs(300));
    assert_eq!(s.imp.sweep().await.expect("sweep"), 1);
    assert_eq!(s.imp.in_progress(), 0);
    assert_eq!(s.audit.records().len(), 4);
}

#[tokio::test]
async fn only_the_admin_or_the_credential_may_end_an_impersonation() {
    let s = setup(AUDIT_KEY);
    let grant = s
        .imp
        .start(&admin(Surface::GLOBAL_ADMIN), "org-1", "u-1", "req-1")
        .await
        .expect("start");
    let other = Identity::new(IDP, "admin-2", AuthMethod::Oidc, Surface::GLOBAL_ADMIN);
    let refused = s.imp.end(&other, &grant.id, "req-2").await;
    assert!(
        matches!(refused, Err(ImpersonationError::NotActive)),
        "{refused:?}"
    );
    // Another impersonation's credential cannot end it either.
    let second = s
        .imp
        .start(&admin(Surface::GLOBAL_ADMIN), "org-1", "u-1", "req-3")
        .await
        .expect("start");
    let auth = authenticator(&s).await;
    let second_id = auth
        .verify(second.token.expose_secret(), &api())
        .await
        .expect("verify");
    let refused = s.imp.end(&second_id, &grant.id, "req-4").await;
    assert!(
        matches!(refused, Err(ImpersonationError::NotActive)),
        "{refused:?}"
    );
    // Its own credential can; the admin can end theirs.
    s.imp
        .end(&second_id, &second.id, "req-5")
        .await
        .expect("end");
    s.imp
        .end(&admin(Surface::GLOBAL_ADMIN), &grant.id, "req-6")
        .await
        .expect("end");
    assert_eq!(s.imp.in_progress(), 0);
}

#[tokio::test]
async fn org_admins_act_in_their_own_org_and_can_be_held_to_a_membership_role() {
    let org_admin = admin(Surface::ORG_ADMIN);
    // By default the org of the token decides.
    let s = setup(AUDIT_KEY);
    assert!(s.imp.start(&org_admin, "org-1", "u-1", "r").await.is_ok());
    let other = s.imp.start(&org_admin, "org-2", "u-2", "r").await;
    assert!(
        matches!(other, Err(ImpersonationError::NotAdmin)),
        "{other:?}"
    );
    // Held to a membership role: the org claim alone is not enough.
    let s = setup_with(
        AUDIT_KEY,
        ImpersonationPolicy::new(RoleRule::Realm("impersonator".into()))
            .mfa_acr_values(["2"])
            .require_org_admin_role("admin"),
    );
    let claim_only = s.imp.start(&org_admin, "org-1", "u-1", "r").await;
    assert!(
        matches!(claim_only, Err(ImpersonationError::NotAdmin)),
        "{claim_only:?}"
    );
    let member_elsewhere = org_admin
        .clone()
        .with_membership(palisade_core::Membership::new("org-2", None, ["admin"]));
    assert!(
        s.imp
            .start(&member_elsewhere, "org-1", "u-1", "r")
            .await
            .is_err()
    );
    let member =
        org_admin.with_membership(palisade_core::Membership::new("org-1", None, ["admin"]));
    assert!(s.imp.start(&member, "org-1", "u-1", "r").await.is_ok());
}

#[tokio::test]
async fn one_admin_cannot_hold_every_slot_and_oversized_names_are_still_audited() {
    let s = setup(AUDIT_KEY);
    let a = admin(Surface::GLOBAL_ADMIN);
    for _ in 0..palisade_impersonation::MAX_PER_ADMIN {
        s.imp.start(&a, "org-1", "u-1", "r").await.expect("start");
    }
    let more = s.imp.start(&a, "org-1", "u-1", "r").await;
    assert!(matches!(more, Err(ImpersonationError::TooMany)), "{more:?}");
    let last = s.audit.records().pop().expect("record");
    assert_eq!(
        (last.outcome, last.details["reason"].as_str()),
        (
            Outcome::Denied,
            "too many impersonations in progress for this admin"
        )
    );
    // Another admin is not held up.
    let b = Identity::new(IDP, "admin-2", AuthMethod::Oidc, Surface::GLOBAL_ADMIN)
        .with_realm_roles(["impersonator"])
        .with_mfa(MfaLevel::MultiFactor, Some("2".into()), vec![])
        .with_auth_time(std::time::UNIX_EPOCH + Duration::from_secs(T - 60));
    assert!(s.imp.start(&b, "org-1", "u-1", "r").await.is_ok());
    // A 4 KiB user name: refused, and the refusal recorded with the name cut short.
    let huge = "é".repeat(2_048);
    let refused = s.imp.start(&b, "org-1", &huge, "r").await;
    assert!(
        matches!(refused, Err(ImpersonationError::UnknownUser)),
        "{refused:?}"
    );
    let last = s.audit.records().pop().expect("record");
    assert_eq!(last.outcome, Outcome::Denied);
    assert!(last.target.len() <= 256 + '…'.len_utf8());
    assert!(last.target.starts_with('é') && last.target.ends_with('…'));
}

#[tokio::test]
async fn a_sweep_that_fails_leaves_every_end_for_the_next() {
    let s = setup(AUDIT_KEY);
    let a = admin(Surface::GLOBAL_ADMIN);
    for _ in 0..3 {
        s.imp.start(&a, "org-1", "u-1", "r").await.expect("start");
    }
    s.clock.advance(Duration::from_secs(601));
    s.audit.fail_writes(true);
    assert!(s.imp.sweep().await.is_err());
    assert!(s.imp.sweep().await.is_err());
    s.audit.fail_writes(false);
    assert_eq!(s.imp.sweep().await.expect("sweep"), 3);
    assert_eq!(s.imp.in_progress(), 0);
    let ends = s
        .audit
        .records()
        .iter()
        .filter(|r| r.action == "impersonation.end")
        .count();
    assert_eq!(ends, 3);
}

#[tokio::test]
async fn a_cancelled_end_is_recorded_by_the_next_sweep() {
    let s = std::sync::Arc::new(setup(AUDIT_KEY));
    let grant = s
        .imp
        .start(&admin(Surface::GLOBAL_ADMIN), "org-1", "u-1", "r")
        .await
        .expect("start");
    *s.audit.hold.lock().expect("hold") = Some("impersonation.end");
    let ending = tokio::spawn({
        let s = s.clone();
        let id = grant.id.clone();
        async move { s.imp.end(&admin(Surface::GLOBAL_ADMIN), &id, "r").await }
    });
    s.audit.entered.notified().await;
    // The client went away: the end's future is dropped mid-write.
    ending.abort();
    assert!(ending.await.is_err());
    // Ended all the same (nothing to end twice), and the sweep writes its record.
    let again = s
        .imp
        .end(&admin(Surface::GLOBAL_ADMIN), &grant.id, "r")
        .await;
    assert!(
        matches!(again, Err(ImpersonationError::NotActive)),
        "{again:?}"
    );
    assert_eq!(s.imp.sweep().await.expect("sweep"), 1);
    let last = s.audit.records().pop().expect("record");
    assert_eq!(
        (last.action.as_str(), last.details["reason"].as_str()),
        ("impersonation.end", "ended")
    );
    assert_eq!(s.imp.in_progress(), 0);
}

#[tokio::test]
async fn a_team_admin_is_not_an_org_admin() {
    let s = setup_with(
        AUDIT_KEY,
        ImpersonationPolicy::new(RoleRule::Realm("impersonator".into()))
            .mfa_acr_values(["2"])
            .require_org_admin_role("admin"),
    );
    let team_admin = admin(Surface::ORG_ADMIN).with_membership(palisade_core::Membership::new(
        "org-1",
        Some("t1"),
        ["admin"],
    ));
    let refused = s.imp.start(&team_admin, "org-1", "u-1", "r").await;
    assert!(
        matches!(refused, Err(ImpersonationError::NotAdmin)),
        "{refused:?}"
    );
}

mod per_request {
    use super::*;
    use palisade_impersonation::AuditImpersonationLayer;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::{Layer as _, ServiceExt as _};

    type Body = http_body_util::Empty<bytes::Bytes>;

    async fn call(
        layer: &AuditImpersonationLayer<Flaky>,
        who: Identity,
        ran: Arc<AtomicUsize>,
    ) -> http::StatusCode {
        let svc = layer.layer(tower::service_fn(move |_req: http::Request<Body>| {
            ran.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, std::convert::Infallible>(http::Response::new(Body::new())) }
        }));
        let mut req = http::Request::builder()
            .uri("/api/orgs/org-1/documents/d1?token=not-logged")
            .header("x-request-id", "req-9")
            .body(Body::new())
            .expect("request");
        req.extensions_mut().insert(who);
        svc.oneshot(req).await.expect("infallible").status()
    }

    fn impersonated() -> Identity {
        Identity::new(
            "https://api.example.com/impersonation",
            "u-1",
            AuthMethod::Impersonation {
                actor: Box::new(admin(Surface::GLOBAL_ADMIN)),
            },
            Surface::API,
        )
        .with_org("org-1")
    }

    #[tokio::test]
    async fn requests_while_impersonating_are_audited_before_they_run() {
        let s = setup(AUDIT_KEY);
        let layer = AuditImpersonationLayer::new(s.audit.clone());
        let ran = Arc::new(AtomicUsize::new(0));
        assert_eq!(call(&layer, impersonated(), ran.clone()).await, 200);
        let records = s.audit.records();
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(
            (
                r.action.as_str(),
                r.actor.as_str(),
                r.target.as_str(),
                r.request_id.as_deref()
            ),
            ("impersonation.request", "admin-1", "u-1", Some("req-9"))
        );
        assert_eq!(r.details["path"], "/api/orgs/org-1/documents/d1");
        assert!(!serde_json_text(r).contains("not-logged"));
        // An ordinary caller is not recorded.
        assert_eq!(call(&layer, admin(Surface::API), ran.clone()).await, 200);
        assert_eq!(s.audit.records().len(), 1);
        assert_eq!(ran.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn without_its_audit_record_a_request_is_not_executed() {
        let s = setup(&format!("{AUDIT_KEY} not_before={}", T + 86_400));
        let layer = AuditImpersonationLayer::new(s.audit.clone());
        let ran = Arc::new(AtomicUsize::new(0));
        assert_eq!(call(&layer, impersonated(), ran.clone()).await, 503);
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_ended_impersonation_credential_is_refused() {
        let s = setup(AUDIT_KEY);
        let layer = s.imp.audit_layer();
        let (grant, id) = started(&s).await;
        let ran = Arc::new(AtomicUsize::new(0));
        assert_eq!(call(&layer, id.clone(), ran.clone()).await, 200);
        // A credential naming no impersonation this impersonator knows is refused.
        assert_eq!(call(&layer, impersonated(), ran.clone()).await, 401);
        s.imp
            .end(&admin(Surface::GLOBAL_ADMIN), &grant.id, "req-2")
            .await
            .expect("end");
        assert_eq!(call(&layer, id, ran.clone()).await, 401);
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        // start, a request, a refused unknown credential, end, a refused ended credential.
        let outcomes: Vec<_> = s
            .audit
            .records()
            .iter()
            .map(|r| (r.action.clone(), r.outcome))
            .collect();
        assert_eq!(
            outcomes,
            [
                ("impersonation.start".to_owned(), Outcome::Success),
                ("impersonation.request".to_owned(), Outcome::Success),
                ("impersonation.request".to_owned(), Outcome::Denied),
                ("impersonation.end".to_owned(), Outcome::Success),
                ("impersonation.request".to_owned(), Outcome::Denied),
            ]
        );
    }

    #[tokio::test]
    async fn an_end_that_cannot_be_recorded_still_ends_and_is_recorded_later() {
        let s = setup(AUDIT_KEY);
        let layer = s.imp.audit_layer();
        let (grant, id) = started(&s).await;
        s.audit.fail_writes(true);
        let ended = s.imp.end(&id, &grant.id, "req-2").await;
        assert!(
            matches!(ended, Err(ImpersonationError::Unavailable(_))),
            "{ended:?}"
        );
        let ran = Arc::new(AtomicUsize::new(0));
        assert_eq!(call(&layer, id, ran.clone()).await, 401);
        assert!(s.imp.sweep().await.is_err());
        s.audit.fail_writes(false);
        assert_eq!(s.imp.sweep().await.expect("sweep"), 1);
        let records = s.audit.records();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].details["reason"], "ended");
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_request_racing_the_end_is_not_executed() {
        let s = setup(AUDIT_KEY);
        let layer = s.imp.audit_layer();
        let (grant, id) = started(&s).await;
        let ran = Arc::new(AtomicUsize::new(0));
        // The request's record is held while the admin ends the impersonation.
        *s.audit.hold.lock().expect("hold") = Some("impersonation.request");
        let request = tokio::spawn({
            let (layer, id, ran) = (layer.clone(), id.clone(), ran.clone());
            async move { call(&layer, id, ran).await }
        });
        s.audit.entered.notified().await;
        s.imp
            .end(&admin(Surface::GLOBAL_ADMIN), &grant.id, "req-2")
            .await
            .expect("end");
        s.audit.release.notify_one();
        assert_eq!(request.await.expect("joined"), 401);
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_credential_must_match_its_impersonation_and_long_paths_are_cut() {
        let s = setup(AUDIT_KEY);
        let layer = s.imp.audit_layer();
        let (grant, id) = started(&s).await;
        let ran = Arc::new(AtomicUsize::new(0));
        // The same impersonation id, presented for another user: refused, and recorded.
        let forged = Identity::new(
            s.imp.issuer(),
            "u-2",
            AuthMethod::Impersonation {
                actor: Box::new(admin(Surface::GLOBAL_ADMIN)),
            },
            Surface::API,
        )
        .with_org("org-1")
        .with_session_id(grant.id.clone());
        assert_eq!(call(&layer, forged.clone(), ran.clone()).await, 401);
        let last = s.audit.records().pop().expect("record");
        assert_eq!(
            (last.outcome, last.target.as_str()),
            (Outcome::Denied, "u-2")
        );
        // Replayed, it is refused again without flooding the log.
        let before = s.audit.records().len();
        for _ in 0..5 {
            assert_eq!(call(&layer, forged.clone(), ran.clone()).await, 401);
        }
        assert_eq!(s.audit.records().len(), before);
        // A 3 KiB path of multi-byte characters: admitted, recorded cut short.
        let svc = layer.layer(tower::service_fn({
            let ran = ran.clone();
            move |_req: http::Request<Body>| {
                ran.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, std::convert::Infallible>(http::Response::new(Body::new())) }
            }
        }));
        let path = format!("/api/{}", "%C3%A9é".repeat(400));
        let mut req = http::Request::builder()
            .uri(path.as_str())
            .body(Body::new())
            .expect("request");
        req.extensions_mut().insert(id);
        assert_eq!(svc.oneshot(req).await.expect("infallible").status(), 200);
        let last = s.audit.records().pop().expect("record");
        assert!(last.details["path"].len() <= 1_004);
        assert_eq!(last.details["impersonation"], grant.id);
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    fn serde_json_text(r: &palisade_audit::Record) -> String {
        format!("{r:?}")
    }
}
