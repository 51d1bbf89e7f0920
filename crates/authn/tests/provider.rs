//! `palisade-authn` against a real OpenID provider (npm `oidc-provider`, configured as a
//! Keycloak realm by `tests/oidc/provider.mjs`): every persona on every surface, key rotation
//! at the provider, provider outage, a flood of unknown kids, and the layer end to end.

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../../../xtask/src/oidc.rs"]
mod oidc;

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Request, Response, StatusCode};
use palisade_authn::cookie::CookieSource;
use palisade_authn::{
    Authenticator, AuthnError, BuildError, CachePolicy, IssuerConfig, SurfacePolicy,
};
use palisade_core::{Identity, ManualClock, MfaLevel, Profile, Rejection, Surface};
use tower::{Layer, ServiceExt, service_fn};

/// These tests start and stop real provider processes, some on fixed ports (a restart must
/// keep the issuer URL): run them one at a time so none takes another's port or starves it of
/// CPU while it starts.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("palisade-authn-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn api() -> SurfacePolicy {
    SurfacePolicy::new(Surface::API)
        .audiences(["api"])
        .authorized_parties([
            "api-user",
            "api-user-es",
            "api-user-ed",
            "multi-aud",
            "no-aud",
            "other-tenant",
            "id-token",
            "expired",
            "stranger",
        ])
}

fn global_admin() -> SurfacePolicy {
    SurfacePolicy::new(Surface::GLOBAL_ADMIN)
        .audiences(["global-admin"])
        .authorized_parties(["admin-mfa", "admin-no-mfa"])
        .require_mfa(true)
}

fn org_admin() -> SurfacePolicy {
    SurfacePolicy::new(Surface::ORG_ADMIN)
        .audiences(["org-admin"])
        .authorized_parties(["org-admin"])
}

/// The built-in personas plus three hostile ones.
fn clients_file(dir: &std::path::Path) -> PathBuf {
    let base = |id: &str, aud: serde_json::Value| {
        serde_json::json!({"client_id": id, "aud": aud, "alg": "RS256", "realm_roles": ["member"],
            "client_roles": ["reader"], "acr": "1", "amr": ["pwd"], "org_id": "org-1", "team_id": "team-1"})
    };
    let mut personas = vec![
        base("api-user", "api".into()),
        {
            let mut p = base("api-user-es", "api".into());
            p["alg"] = "ES256".into();
            p
        },
        {
            let mut p = base("api-user-ed", "api".into());
            p["alg"] = "EdDSA".into();
            p
        },
        base("multi-aud", serde_json::json!(["api", "account"])),
        base("no-aud", serde_json::Value::Null),
        {
            let mut p = base("admin-mfa", "global-admin".into());
            p["acr"] = "2".into();
            p["amr"] = serde_json::json!(["pwd", "otp"]);
            p["realm_roles"] = serde_json::json!(["member", "admin"]);
            p
        },
        {
            let mut p = base("admin-no-mfa", "global-admin".into());
            p["realm_roles"] = serde_json::json!(["member", "admin"]);
            p
        },
        {
            let mut p = base("org-admin", "org-admin".into());
            p["amr"] = serde_json::json!(["pwd", "otp"]);
            p
        },
        {
            let mut p = base("other-tenant", "api".into());
            p["org_id"] = "org-2".into();
            p
        },
    ];
    // An ID-token-shaped token, an expired one, and one for a client no surface lists.
    let mut id_token = base("id-token", "api".into());
    id_token["claims"] = serde_json::json!({"typ": "ID"});
    let mut expired = base("expired", "api".into());
    expired["claims"] = serde_json::json!({"exp": 1_000_000_000, "iat": 999_999_000});
    personas.extend([id_token, expired, base("not-listed", "api".into())]);
    let path = dir.join("clients.json");
    std::fs::write(&path, serde_json::Value::Array(personas).to_string()).unwrap();
    path
}

async fn authenticator(issuer: &str, clock: &ManualClock, policy: CachePolicy) -> Authenticator {
    Authenticator::builder()
        .profile(Profile::Production)
        .clock(clock.shared())
        .issuer(IssuerConfig::new(issuer).unwrap().cache_policy(policy))
        .build()
        .await
        .expect("authenticator with keys from the provider")
}

fn now_clock() -> ManualClock {
    ManualClock::new(std::time::SystemTime::now())
}

#[tokio::test]
async fn every_persona_on_every_surface() {
    let _serial = SERIAL.lock().await;
    let dir = scratch("surfaces");
    let provider = oidc::Provider::start(&oidc::Options {
        clients_file: Some(clients_file(&dir)),
        ..Default::default()
    })
    .unwrap();
    let clock = now_clock();
    let auth = authenticator(&provider.issuer, &clock, CachePolicy::default()).await;
    let (api, admin, org) = (api(), global_admin(), org_admin());

    type Want = Result<(), AuthnError>;
    let ok: Want = Ok(());
    let table: Vec<(&str, Want, Want, Want)> = vec![
        (
            "api-user",
            ok.clone(),
            Err(AuthnError::WrongAudience),
            Err(AuthnError::WrongAudience),
        ),
        (
            "api-user-es",
            ok.clone(),
            Err(AuthnError::WrongAudience),
            Err(AuthnError::WrongAudience),
        ),
        (
            "api-user-ed",
            ok.clone(),
            Err(AuthnError::WrongAudience),
            Err(AuthnError::WrongAudience),
        ),
        (
            "multi-aud",
            ok.clone(),
            Err(AuthnError::WrongAudience),
            Err(AuthnError::WrongAudience),
        ),
        (
            "no-aud",
            Err(AuthnError::MissingAudience),
            Err(AuthnError::MissingAudience),
            Err(AuthnError::MissingAudience),
        ),
        (
            "admin-mfa",
            Err(AuthnError::WrongAudience),
            ok.clone(),
            Err(AuthnError::WrongAudience),
        ),
        (
            "admin-no-mfa",
            Err(AuthnError::WrongAudience),
            Err(AuthnError::MfaRequired),
            Err(AuthnError::WrongAudience),
        ),
        (
            "org-admin",
            Err(AuthnError::WrongAudience),
            Err(AuthnError::WrongAudience),
            ok.clone(),
        ),
        (
            "other-tenant",
            ok.clone(),
            Err(AuthnError::WrongAudience),
            Err(AuthnError::WrongAudience),
        ),
        (
            "id-token",
            Err(AuthnError::NotAnAccessToken("ID".into())),
            Err(AuthnError::NotAnAccessToken("ID".into())),
            Err(AuthnError::NotAnAccessToken("ID".into())),
        ),
        (
            "expired",
            Err(AuthnError::Expired),
            Err(AuthnError::Expired),
            Err(AuthnError::Expired),
        ),
        (
            "not-listed",
            Err(AuthnError::WrongAuthorizedParty),
            Err(AuthnError::WrongAudience),
            Err(AuthnError::WrongAudience),
        ),
    ];
    for (persona, want_api, want_admin, want_org) in table {
        let token = provider.token(persona).await.unwrap();
        for (surface, want) in [(&api, want_api), (&admin, want_admin), (&org, want_org)] {
            let got = auth.verify(&token, surface).await.map(|_| ());
            assert_eq!(got, want, "{persona} on {}", surface.surface());
        }
    }

    // What the identity carries.
    let id = auth
        .verify(&provider.token("admin-mfa").await.unwrap(), &admin)
        .await
        .unwrap();
    assert_eq!(id.surface(), &Surface::GLOBAL_ADMIN);
    assert!(id.has_realm_role("admin"));
    assert!(id.has_client_role("admin-mfa", "reader"));
    assert_eq!(id.mfa_level(), MfaLevel::MultiFactor);
    assert_eq!(id.org(), Some("org-1"));
    assert!(id.session_id().is_some());
    let other = auth
        .verify(&provider.token("other-tenant").await.unwrap(), &api)
        .await
        .unwrap();
    assert_eq!(other.org(), Some("org-2"));
    assert_eq!(other.team(), Some("team-1"));
    // One fetch served every verification.
    assert_eq!(auth.fetch_count(&provider.issuer), Some(1));
}

#[tokio::test]
async fn key_rotation_at_the_provider() {
    let _serial = SERIAL.lock().await;
    let dir = scratch("rotation");
    let (gen1, gen2, both) = (
        dir.join("gen1.json"),
        dir.join("gen2.json"),
        dir.join("both.json"),
    );
    // Generate the second generation's keys with a throwaway run.
    oidc::Provider::start(&oidc::Options {
        keys_file: Some(gen2.clone()),
        key_generation: 2,
        ..Default::default()
    })
    .unwrap()
    .stop();
    let provider = oidc::Provider::start(&oidc::Options {
        keys_file: Some(gen1.clone()),
        ..Default::default()
    })
    .unwrap();
    let port = provider.port;
    let issuer = provider.issuer.clone();
    let clock = now_clock();
    let policy = CachePolicy {
        unknown_kid_cooldown: Duration::from_secs(30),
        ..CachePolicy::default()
    };
    let auth = authenticator(&issuer, &clock, policy).await;
    let old = provider.token("api-user").await.unwrap();
    assert!(auth.verify(&old, &api()).await.is_ok());
    provider.stop();

    // Mid-rotation: a new kid signs, the old key is still published.
    oidc::merge_keys(&gen2, &gen1, &both).unwrap();
    let provider = oidc::Provider::start(&oidc::Options {
        port,
        keys_file: Some(both.clone()),
        ..Default::default()
    })
    .unwrap();
    let new = provider.token("api-user").await.unwrap();
    assert_ne!(kid(&old), kid(&new));
    assert!(
        auth.verify(&old, &api()).await.is_ok(),
        "old tokens keep working"
    );
    assert!(
        auth.verify(&new, &api()).await.is_ok(),
        "the new kid is fetched on first sight"
    );
    assert_eq!(auth.fetch_count(&issuer), Some(2));
    provider.stop();

    // The old key leaves the JWKS; once the cache refreshes, old tokens stop working.
    let provider = oidc::Provider::start(&oidc::Options {
        port,
        keys_file: Some(gen2.clone()),
        ..Default::default()
    })
    .unwrap();
    // Until the cache refreshes, cached keys still verify; a refresh (due after the JWKS
    // max-age, or forced here) drops the old key.
    assert!(auth.verify(&old, &api()).await.is_ok());
    auth.refresh_keys(&issuer).await.unwrap();
    assert_eq!(auth.fetch_count(&issuer), Some(3));
    assert_eq!(
        auth.verify(&old, &api()).await.unwrap_err(),
        AuthnError::UnknownKid
    );
    assert!(
        auth.verify(&provider.token("api-user").await.unwrap(), &api())
            .await
            .is_ok()
    );
}

fn kid(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    v["kid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn provider_outage_serves_last_good_keys_then_fails_closed() {
    let _serial = SERIAL.lock().await;
    // A long-lived token, so that only the keys' age matters below.
    let dir = scratch("outage");
    let clients = dir.join("clients.json");
    std::fs::write(
        &clients,
        r#"[{"client_id":"api-user","aud":"api","ttl":7200}]"#,
    )
    .unwrap();
    let provider = oidc::Provider::start(&oidc::Options {
        clients_file: Some(clients),
        ..Default::default()
    })
    .unwrap();
    let issuer = provider.issuer.clone();
    let clock = now_clock();
    let policy = CachePolicy {
        default_refresh: Duration::from_secs(300),
        max_stale: Duration::from_secs(600),
        unknown_kid_cooldown: Duration::from_secs(30),
        ..CachePolicy::default()
    };
    let auth = authenticator(&issuer, &clock, policy).await;
    let token = provider.token("api-user").await.unwrap();
    provider.stop();

    // Within refresh + max_stale the last good keys still verify (a background refresh fails).
    clock.advance(Duration::from_secs(600));
    assert!(auth.verify(&token, &api()).await.is_ok());
    // Past the bound: fail closed with 503.
    clock.advance(Duration::from_secs(301));
    assert_eq!(
        auth.verify(&token, &api()).await.unwrap_err(),
        AuthnError::KeysUnavailable
    );

    // And production refuses to start without keys.
    let err = Authenticator::builder()
        .profile(Profile::Production)
        .issuer(IssuerConfig::new(&issuer).unwrap())
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::KeysUnavailable { .. }), "{err}");
}

#[tokio::test]
async fn a_flood_of_unknown_kids_costs_one_fetch_per_cooldown() {
    let _serial = SERIAL.lock().await;
    let provider = oidc::Provider::start(&oidc::Options::default()).unwrap();
    let clock = now_clock();
    let auth = authenticator(&provider.issuer, &clock, CachePolicy::default()).await;
    let real = provider.token("api-user").await.unwrap();
    let mut parts = real.splitn(3, '.');
    let (_, payload, sig) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let forged = |i: usize| {
        let header = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"alg":"RS256","typ":"JWT","kid":"random-{i}"}}"#
        ));
        format!("{header}.{payload}.{sig}")
    };
    for i in 0..10_000 {
        assert!(auth.verify(&forged(i), &api()).await.is_err());
    }
    assert_eq!(
        auth.fetch_count(&provider.issuer),
        Some(2),
        "one initial fetch plus one per cooldown"
    );
    // After the cooldown, kids already found missing (negative cache) cost nothing...
    clock.advance(Duration::from_secs(31));
    assert!(auth.verify(&forged(0), &api()).await.is_err());
    assert_eq!(auth.fetch_count(&provider.issuer), Some(2));
    // ...while a kid never seen may trigger one more fetch per cooldown.
    for i in 10_000..11_000 {
        assert!(auth.verify(&forged(i), &api()).await.is_err());
    }
    assert_eq!(auth.fetch_count(&provider.issuer), Some(3));
    // Real tokens keep working throughout.
    assert!(auth.verify(&real, &api()).await.is_ok());
}

#[tokio::test]
async fn the_layer_end_to_end() {
    let _serial = SERIAL.lock().await;
    let provider = oidc::Provider::start(&oidc::Options::default()).unwrap();
    let clock = now_clock();
    let auth = authenticator(&provider.issuer, &clock, CachePolicy::default()).await;
    let admin = auth.layer(global_admin()).unwrap();
    let svc = admin.layer(service_fn(|req: Request<()>| async move {
        let id = req
            .extensions()
            .get::<Identity>()
            .cloned()
            .expect("identity");
        Ok::<_, Infallible>(Response::new(id.subject().to_owned()))
    }));
    let send = |auth: Option<String>, uri: &str| {
        let mut b = Request::builder().uri(uri);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        svc.clone().oneshot(b.body(()).unwrap())
    };
    let good = provider.token("admin-mfa").await.unwrap();
    let res = send(Some(format!("Bearer {good}")), "/admin")
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let weak = provider.token("admin-no-mfa").await.unwrap();
    let res = send(Some(format!("Bearer {weak}")), "/admin")
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer error=\"insufficient_user_authentication\""
    );
    assert_eq!(
        res.extensions()
            .get::<Rejection>()
            .unwrap()
            .reason_as::<AuthnError>(),
        Some(&AuthnError::MfaRequired)
    );

    let res = send(None, "/admin").await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");

    let res = send(None, &format!("/admin?access_token={good}"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.extensions()
            .get::<Rejection>()
            .unwrap()
            .reason_as::<AuthnError>(),
        Some(&AuthnError::TokenInQuery)
    );

    let api_token = provider.token("api-user").await.unwrap();
    let res = send(Some(format!("Bearer {api_token}")), "/admin")
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "an api token is not an admin token"
    );

    let res = send(Some(format!("Basic {good}")), "/admin").await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // Browser sessions: the same token in a __Host- cookie, with the CSRF check.
    let source = CookieSource::new("__Host-session", ["https://console.example.com"]).unwrap();
    let browser = auth
        .layer(global_admin())
        .unwrap()
        .with_cookie(source)
        .layer(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(()))
        }));
    let cookie_req = |method: &str, site: &str| {
        Request::builder()
            .method(method)
            .uri("/admin")
            .header("cookie", format!("theme=dark; __Host-session={good}"))
            .header("sec-fetch-site", site)
            .body(())
            .unwrap()
    };
    let status = |r: Response<_>| r.status();
    assert_eq!(
        status(
            browser
                .clone()
                .oneshot(cookie_req("POST", "same-origin"))
                .await
                .unwrap()
        ),
        StatusCode::OK
    );
    assert_eq!(
        status(
            browser
                .clone()
                .oneshot(cookie_req("POST", "cross-site"))
                .await
                .unwrap()
        ),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(
            browser
                .oneshot(cookie_req("GET", "same-site"))
                .await
                .unwrap()
        ),
        StatusCode::UNAUTHORIZED
    );
}

/// Sends one request with `token` through `layer` and returns the status.
async fn through(layer: &palisade_authn::AuthnLayer, token: &str) -> StatusCode {
    let svc = layer.layer(service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(()))
    }));
    let req = Request::builder()
        .uri("/api")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    svc.oneshot(req).await.unwrap().status()
}

#[tokio::test]
async fn the_layer_fails_closed_in_an_outage_and_recovers() {
    let _serial = SERIAL.lock().await;
    let dir = scratch("recovery");
    let keys = dir.join("keys.json");
    let clients = dir.join("clients.json");
    std::fs::write(
        &clients,
        r#"[{"client_id":"api-user","aud":"api","ttl":7200}]"#,
    )
    .unwrap();
    let options = oidc::Options {
        keys_file: Some(keys.clone()),
        clients_file: Some(clients.clone()),
        ..Default::default()
    };
    let provider = oidc::Provider::start(&options).unwrap();
    let port = provider.port;
    let clock = now_clock();
    let policy = CachePolicy {
        default_refresh: Duration::from_secs(300),
        max_stale: Duration::from_secs(600),
        unknown_kid_cooldown: Duration::from_secs(30),
        ..CachePolicy::default()
    };
    let auth = authenticator(&provider.issuer, &clock, policy).await;
    let layer = auth.layer(api()).unwrap();
    let token = provider.token("api-user").await.unwrap();
    assert_eq!(through(&layer, &token).await, StatusCode::OK);
    provider.stop();

    // Past refresh + max_stale with the provider down: 503, not 401 and never 200.
    clock.advance(Duration::from_secs(901));
    assert_eq!(
        through(&layer, &token).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        through(&layer, &token).await,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // The provider comes back: after the cooldown, the layer's own request refreshes the keys.
    let _provider = oidc::Provider::start(&oidc::Options { port, ..options }).unwrap();
    clock.advance(Duration::from_secs(31));
    assert_eq!(through(&layer, &token).await, StatusCode::OK);
}

#[tokio::test]
async fn the_layer_fetches_a_rotated_kid_on_first_sight() {
    let _serial = SERIAL.lock().await;
    let dir = scratch("layer-rotation");
    let (gen1, gen2, both) = (
        dir.join("gen1.json"),
        dir.join("gen2.json"),
        dir.join("both.json"),
    );
    oidc::Provider::start(&oidc::Options {
        keys_file: Some(gen2.clone()),
        key_generation: 2,
        ..Default::default()
    })
    .unwrap()
    .stop();
    let provider = oidc::Provider::start(&oidc::Options {
        keys_file: Some(gen1.clone()),
        ..Default::default()
    })
    .unwrap();
    let port = provider.port;
    let issuer = provider.issuer.clone();
    let clock = now_clock();
    let auth = authenticator(&issuer, &clock, CachePolicy::default()).await;
    let layer = auth.layer(api()).unwrap();
    assert_eq!(
        through(&layer, &provider.token("api-user").await.unwrap()).await,
        StatusCode::OK
    );
    provider.stop();
    oidc::merge_keys(&gen2, &gen1, &both).unwrap();
    let provider = oidc::Provider::start(&oidc::Options {
        port,
        keys_file: Some(both),
        ..Default::default()
    })
    .unwrap();
    let rotated = provider.token("api-user").await.unwrap();
    assert_eq!(through(&layer, &rotated).await, StatusCode::OK);
    assert_eq!(auth.fetch_count(&issuer), Some(2));
}
