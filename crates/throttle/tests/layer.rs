//! The throttle layer on the in-process store: who is counted, org claims, tiers and flags,
//! headers, events.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use palisade_core::{
    AuthMethod, ClientIpLayer, ConnectionInfo, Identity, ManualClock, Rejection, Surface,
    TrustedProxies,
};
use palisade_throttle::{
    BucketKey, Limit, Limited, MemoryStore, OrgPolicy, OrgSource, Quota, QuotaTable, Quotas, Rule,
    Scope, StaticPolicies, ThrottleError, ThrottleEvents, ThrottleLayer,
};
use proptest::prelude::*;
use tower::{Layer as _, Service as _, ServiceExt as _};

type Body = http_body_util::Empty<bytes::Bytes>;

const ISSUER: &str = "https://idp.example.com/realms/acme";

fn user(sub: &str, org: Option<&str>) -> Identity {
    let identity = Identity::new(ISSUER, sub, AuthMethod::Oidc, Surface::API);
    match org {
        Some(org) => identity.with_org(org),
        None => identity,
    }
}

fn quotas() -> Quotas {
    let q = |n, secs| Quota::per_window(n, Duration::from_secs(secs)).expect("quota");
    Quotas::new(
        QuotaTable::new()
            .rule("anon", q(3, 60))
            .rule("user", q(5, 60))
            .rule("org", q(8, 60))
            .tier("org", "gold", q(20, 60))
            .rule("export", q(2, 60))
            .rule("keys", q(4, 60)),
    )
}

/// (rule, org, tier, shadow) of each limited request.
type Seen = Vec<(String, Option<String>, String, bool)>;

#[derive(Clone, Default)]
struct Events(Arc<Mutex<Seen>>);

impl ThrottleEvents for Events {
    fn limited(&self, e: &Limited<'_>) {
        self.0.lock().expect("events").push((
            e.rule.to_owned(),
            e.org.map(str::to_owned),
            e.tier.to_owned(),
            e.shadow,
        ));
    }
}

struct Fixture {
    store: Arc<MemoryStore>,
    layer: ThrottleLayer<Arc<MemoryStore>>,
    policies: StaticPolicies,
    events: Events,
    clock: ManualClock,
}

fn fixture() -> Fixture {
    fixture_with(|b| b)
}

fn fixture_with(
    configure: impl FnOnce(
        palisade_throttle::ThrottleBuilder<Arc<MemoryStore>>,
    ) -> palisade_throttle::ThrottleBuilder<Arc<MemoryStore>>,
) -> Fixture {
    let clock = ManualClock::at_unix(1_795_953_600);
    let store = Arc::new(MemoryStore::with_clock(100_000, clock.shared()));
    let policies = StaticPolicies::new()
        .with("gold-org", OrgPolicy::tier("gold"))
        .with("free-pass", OrgPolicy::tier("default").unlimited())
        .with("raised", OrgPolicy::tier("default").raise("org", 3))
        .with("trial", OrgPolicy::tier("default").shadow("user"));
    let events = Events::default();
    let builder = ThrottleLayer::builder(Arc::clone(&store))
        .rule(Rule::new("anon", Scope::Anonymous))
        .rule(Rule::new("user", Scope::User))
        .rule(Rule::new("org", Scope::Org))
        .rule(Rule::new("export", Scope::Route).on_paths(["/api/export"]))
        .rule(Rule::new("keys", Scope::AccessKey))
        .quotas(quotas())
        .policies(policies.clone())
        .events(events.clone())
        .clock(clock.shared())
        .org_from(OrgSource::path_segment_after("/api/orgs/"))
        .org_from(OrgSource::header(http::HeaderName::from_static("x-org-id")))
        .org_from(OrgSource::query("org"));
    let layer = configure(builder).build().expect("layer");
    Fixture {
        store,
        layer,
        policies,
        events,
        clock,
    }
}

async fn ok(_req: Request<Body>) -> Result<Response<Body>, Infallible> {
    Ok(Response::new(Body::new()))
}

fn request(uri: &str, identity: Option<Identity>, ip: &str) -> Request<Body> {
    let mut req = Request::builder()
        .uri(uri)
        .body(Body::new())
        .expect("request");
    if let Some(identity) = identity {
        req.extensions_mut().insert(identity);
    }
    req.extensions_mut()
        .insert(palisade_core::ClientIp(ip.parse().expect("ip")));
    req
}

async fn send(fx: &Fixture, req: Request<Body>) -> Response<palisade_core::ResponseBody<Body>> {
    fx.layer
        .layer(tower::service_fn(ok))
        .oneshot(req)
        .await
        .expect("infallible")
}

fn reason(resp: &Response<palisade_core::ResponseBody<Body>>) -> Option<&ThrottleError> {
    resp.extensions()
        .get::<Rejection>()
        .and_then(|r| r.reason_as::<ThrottleError>())
}

async fn statuses(fx: &Fixture, n: usize, make: impl Fn() -> Request<Body>) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(send(fx, make()).await.status().as_u16());
    }
    out
}

#[tokio::test]
async fn a_burst_then_429_with_the_standard_fields() {
    let fx = fixture();
    let alice = || {
        request(
            "/api/things",
            Some(user("alice", Some("acme"))),
            "192.0.2.1",
        )
    };
    assert_eq!(statuses(&fx, 5, alice).await, vec![200; 5]);
    let resp = send(&fx, alice()).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(matches!(reason(&resp), Some(ThrottleError::Limited { rule }) if rule == "user"));
    assert_eq!(resp.headers()["retry-after"], "12");
    assert_eq!(resp.headers()["ratelimit-policy"], "\"user\";q=5;w=60");
    assert_eq!(resp.headers()["ratelimit"], "\"user\";r=0;t=12");
    // Refill: 12 s later one more fits.
    fx.clock.advance(Duration::from_secs(12));
    assert_eq!(send(&fx, alice()).await.status(), StatusCode::OK);
    let events = fx.events.0.lock().expect("events").clone();
    assert_eq!(
        events,
        vec![("user".into(), Some("acme".into()), "default".into(), false)]
    );
}

#[tokio::test]
async fn fields_on_admitted_responses_when_asked() {
    let fx = fixture_with(|b| b.headers_on_success(true));
    let resp = send(
        &fx,
        request("/x", Some(user("bob", Some("acme"))), "192.0.2.1"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    // The tightest limit: the user's (4 of 5 left) rather than the org's (7 of 8).
    assert_eq!(resp.headers()["ratelimit"], "\"user\";r=4;t=12");
    assert_eq!(resp.headers()["ratelimit-policy"], "\"user\";q=5;w=60");
    let fx = fixture();
    let resp = send(
        &fx,
        request("/x", Some(user("bob", Some("acme"))), "192.0.2.1"),
    )
    .await;
    assert!(resp.headers().get("ratelimit").is_none());
}

#[tokio::test]
async fn users_share_their_org_limit() {
    let fx = fixture();
    let mut codes = Vec::new();
    for i in 0..10 {
        let who = user(&format!("u{i}"), Some("acme"));
        codes.push(
            send(&fx, request("/x", Some(who), "192.0.2.1"))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(codes, [vec![200; 8], vec![429; 2]].concat());
    // Another org is untouched.
    let other = request("/x", Some(user("u0", Some("globex"))), "192.0.2.1");
    assert_eq!(send(&fx, other).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_claimed_org_that_differs_is_refused_before_counting() {
    let fx = fixture();
    let alice = || Some(user("alice", Some("acme")));
    for uri in [
        "/api/orgs/globex/docs",
        "/api/orgs/acme/docs?org=globex",
        "/api/orgs/acme/docs?org=acme&org=globex",
        "/api/orgs/gl%6Fbex/docs",
    ] {
        let resp = send(&fx, request(uri, alice(), "192.0.2.1")).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{uri}");
        assert!(matches!(reason(&resp), Some(ThrottleError::OrgMismatch)));
    }
    let mut req = request("/api/things", alice(), "192.0.2.1");
    req.headers_mut()
        .insert("x-org-id", "globex".parse().expect("value"));
    assert_eq!(send(&fx, req).await.status(), StatusCode::FORBIDDEN);
    // Anonymous callers cannot claim an org at all.
    let anon = send(&fx, request("/api/orgs/acme/docs", None, "192.0.2.1")).await;
    assert_eq!(anon.status(), StatusCode::FORBIDDEN);
    // Nothing was counted: the whole burst is still there.
    assert_eq!(fx.store.stats().buckets, 0);
    let same = || request("/api/orgs/acme/docs?org=acme", alice(), "192.0.2.1");
    assert_eq!(statuses(&fx, 5, same).await, vec![200; 5]);
}

#[tokio::test]
async fn anonymous_callers_by_network() {
    let fx = fixture();
    let from = |ip: &'static str| move || request("/public", None, ip);
    assert_eq!(
        statuses(&fx, 4, from("198.51.100.7")).await,
        [200, 200, 200, 429]
    );
    assert_eq!(statuses(&fx, 1, from("198.51.100.8")).await, [200]);
    // One IPv6 host holds a /64: rotating the interface id does not buy a new bucket.
    assert_eq!(statuses(&fx, 3, from("2001:db8:1:2::1")).await, [200; 3]);
    assert_eq!(statuses(&fx, 1, from("2001:db8:1:2::ffff")).await, [429]);
    assert_eq!(statuses(&fx, 1, from("2001:db8:1:3::1")).await, [200]);
    // The IPv4-mapped form of an address is that address.
    assert_eq!(statuses(&fx, 1, from("::ffff:198.51.100.7")).await, [429]);
}

#[tokio::test]
async fn anonymous_without_a_client_address_fails_closed() {
    let fx = fixture();
    let req = Request::builder()
        .uri("/public")
        .body(Body::new())
        .expect("request");
    let resp = send(&fx, req).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(matches!(reason(&resp), Some(ThrottleError::NoClientIp)));
}

#[tokio::test]
async fn a_spoofed_forwarded_for_does_not_reset_the_anonymous_limit() {
    let fx = fixture();
    // No trusted proxy: the peer address is the client, whatever the headers say.
    let stack =
        ClientIpLayer::new(TrustedProxies::none()).layer(fx.layer.layer(tower::service_fn(ok)));
    let mut codes = Vec::new();
    for i in 0..5 {
        let mut req = Request::builder()
            .uri("/public")
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .header("forwarded", format!("for=203.0.113.{i}"))
            .body(Body::new())
            .expect("request");
        req.extensions_mut().insert(ConnectionInfo::new(
            "198.51.100.20:4000".parse().expect("addr"),
            true,
        ));
        let resp = stack.clone().oneshot(req).await.expect("infallible");
        codes.push(resp.status().as_u16());
    }
    assert_eq!(codes, [200, 200, 200, 429, 429]);
}

#[tokio::test]
async fn tiers_and_runtime_quotas() {
    let fx = fixture();
    let gold = || request("/x", Some(user(&unique(), Some("gold-org"))), "192.0.2.1");
    assert_eq!(statuses(&fx, 20, gold).await, vec![200; 20]);
    assert_eq!(statuses(&fx, 1, gold).await, [429]);
    // A smaller quota for the default tier, without rebuilding the layer.
    let q = |n| Quota::per_window(n, Duration::from_secs(60)).expect("quota");
    let smaller = QuotaTable::new()
        .rule("anon", q(3))
        .rule("user", q(5))
        .rule("org", q(2))
        .rule("export", q(2))
        .rule("keys", q(4));
    fx.layer.quotas().replace(smaller).expect("replace");
    let acme = || request("/x", Some(user(&unique(), Some("acme"))), "192.0.2.1");
    assert_eq!(statuses(&fx, 3, acme).await, [200, 200, 429]);
    // A table missing a rule, or with a burst below a rule's cost, is refused.
    assert!(
        fx.layer
            .quotas()
            .replace(QuotaTable::new().rule("anon", q(3)))
            .is_err()
    );
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("u{}", N.fetch_add(1, Ordering::Relaxed))
}

#[tokio::test]
async fn flags_raise_exempt_and_shadow() {
    let fx = fixture();
    // Unlimited: never counted.
    let pass = || request("/x", Some(user("same", Some("free-pass"))), "192.0.2.1");
    assert_eq!(statuses(&fx, 30, pass).await, vec![200; 30]);
    // Raised: the org limit times three.
    let raised = || request("/x", Some(user(&unique(), Some("raised"))), "192.0.2.1");
    assert_eq!(
        statuses(&fx, 25, raised).await,
        [vec![200; 24], vec![429]].concat()
    );
    // Shadow: the user limit reports but never refuses.
    let trial = || request("/x", Some(user("carol", Some("trial"))), "192.0.2.1");
    assert_eq!(statuses(&fx, 7, trial).await, vec![200; 7]);
    let events = fx.events.0.lock().expect("events").clone();
    let shadowed = events
        .iter()
        .filter(|(rule, org, _, shadow)| {
            rule == "user" && org.as_deref() == Some("trial") && *shadow
        })
        .count();
    assert_eq!(shadowed, 2);
    // Policies change at runtime (seen once the cached copy expires).
    fx.policies.set("free-pass", OrgPolicy::tier("default"));
    fx.clock.advance(Duration::from_secs(31));
    let codes = statuses(&fx, 6, pass).await;
    assert_eq!(codes, [vec![200; 5], vec![429]].concat());
}

#[tokio::test]
async fn routes_and_access_keys() {
    let fx = fixture();
    let export = || {
        request(
            "/api/export/csv",
            Some(user(&unique(), Some("acme"))),
            "192.0.2.1",
        )
    };
    assert_eq!(statuses(&fx, 3, export).await, [200, 200, 429]);
    // The route limit is per org.
    let other = request("/api/export", Some(user("x", Some("globex"))), "192.0.2.1");
    assert_eq!(send(&fx, other).await.status(), StatusCode::OK);
    let key = || {
        let identity = Identity::new(
            "palisade",
            "svc:report",
            AuthMethod::AccessKey {
                key_id: "PK1".into(),
            },
            Surface::API,
        )
        .with_org("initech");
        request("/x", Some(identity), "192.0.2.1")
    };
    assert_eq!(statuses(&fx, 5, key).await, [200, 200, 200, 200, 429]);
}

#[test]
fn bad_configurations_are_refused() {
    let base = || ThrottleLayer::builder(MemoryStore::new()).quotas(quotas());
    assert!(base().build().is_err(), "no rules");
    assert!(
        base()
            .rule(Rule::new("Bad Name", Scope::User))
            .build()
            .is_err()
    );
    assert!(
        base()
            .rule(Rule::new("user", Scope::User))
            .rule(Rule::new("user", Scope::Org))
            .build()
            .is_err()
    );
    assert!(base().rule(Rule::new("nope", Scope::User)).build().is_err());
    assert!(
        base()
            .rule(Rule::new("export", Scope::Route))
            .build()
            .is_err()
    );
    assert!(
        base()
            .rule(Rule::new("export", Scope::Route).on_paths(["/e"]).cost(3))
            .build()
            .is_err()
    );
    assert!(
        ThrottleLayer::builder(MemoryStore::new())
            .rule(Rule::new("user", Scope::User))
            .build()
            .is_err(),
        "no quotas"
    );
}

#[tokio::test]
async fn the_inner_service_is_not_called_when_refused() {
    let fx = fixture();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let mut svc = fx
        .layer
        .layer(tower::service_fn(move |_req: Request<Body>| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Body::new())) }
        }));
    for _ in 0..6 {
        let req = request("/x", Some(user("dave", Some("acme"))), "192.0.2.1");
        let _ = svc.ready().await.expect("ready").call(req).await;
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 5);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever org a request claims, and wherever: it goes through exactly when every claim
    /// is the verified org, and a refused request touches no limiter state.
    #[test]
    fn org_claims_match_or_are_refused(
        verified in "[a-z]{1,6}",
        claims in proptest::collection::vec(("[a-z]{1,6}", 0..3usize), 0..4),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(async {
            let fx = fixture();
            let mut path = String::from("/api/things");
            let mut query = Vec::new();
            let mut headers = Vec::new();
            for (org, place) in &claims {
                match place {
                    0 if path == "/api/things" => path = format!("/api/orgs/{org}/things"),
                    1 => headers.push(org.clone()),
                    _ => query.push(format!("org={org}")),
                }
            }
            let used: Vec<&String> = claims
                .iter()
                .filter(|(org, place)| {
                    *place != 0 || path.starts_with(&format!("/api/orgs/{org}/"))
                })
                .map(|(org, _)| org)
                .collect();
            let uri = if query.is_empty() { path.clone() } else { format!("{path}?{}", query.join("&")) };
            let mut req = request(&uri, Some(user("p", Some(&verified))), "192.0.2.1");
            for h in &headers {
                req.headers_mut().append("x-org-id", h.parse().expect("value"));
            }
            let status = send(&fx, req).await.status();
            let all_match = used.iter().all(|org| **org == verified);
            if all_match {
                prop_assert_eq!(status, StatusCode::OK);
            } else {
                prop_assert_eq!(status, StatusCode::FORBIDDEN);
                prop_assert_eq!(fx.store.stats().buckets, 0);
            }
            let peek = Limit {
                key: BucketKey::new(&verified, "org", &verified),
                quota: Quota::per_window(8, Duration::from_secs(60)).expect("quota"),
                cost: 0,
            };
            let left = fx.store.check_sync(&[peek]).expect("store").decisions()[0].remaining();
            prop_assert_eq!(left, if all_match { 7 } else { 8 });
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn route_buckets_never_mix_an_org_a_user_and_a_network_of_one_name() {
    let fx = fixture();
    // An org named "alice" spends its route quota (2 a minute)...
    let org = || {
        request(
            "/api/export",
            Some(user(&unique(), Some("alice"))),
            "192.0.2.1",
        )
    };
    assert_eq!(statuses(&fx, 3, org).await, [200, 200, 429]);
    // ...which is not the route quota of a user "alice" without an org, nor of a user "alice"
    // at another issuer, nor of the client network "alice" could never be.
    let lone = || request("/api/export", Some(user("alice", None)), "192.0.2.1");
    assert_eq!(statuses(&fx, 3, lone).await, [200, 200, 429]);
    let elsewhere = || {
        let identity = Identity::new(
            "https://other-idp.example.com",
            "alice",
            AuthMethod::Oidc,
            Surface::API,
        );
        request("/api/export", Some(identity), "192.0.2.1")
    };
    assert_eq!(statuses(&fx, 3, elsewhere).await, [200, 200, 429]);
}

#[tokio::test]
async fn shadow_rules_count_admitted_requests_only() {
    let fx = fixture();
    // "trial": the user rule (5 a minute) only reports; the org rule (8) still refuses.
    let carol = || request("/x", Some(user("carol", Some("trial"))), "192.0.2.1");
    assert_eq!(
        statuses(&fx, 10, carol).await,
        [vec![200; 8], vec![429; 2]].concat()
    );
    let events = fx.events.0.lock().expect("events").clone();
    let shadowed = events.iter().filter(|e| e.0 == "user" && e.3).count();
    let enforced = events.iter().filter(|e| e.0 == "org" && !e.3).count();
    // Requests 6, 7 and 8 pass the user's quota (reported); 9 and 10 are refused by the org
    // rule and do not count against the user.
    assert_eq!((shadowed, enforced), (3, 2));
}
