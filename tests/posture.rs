//! The posture catalogue and the `Hardening` assembly: every finding a weak configuration of
//! every layer records is catalogued (an id, a fix, a level at least as severe), the whole
//! report comes at once, and `docs/posture.md` lists exactly the catalogue.

use std::time::Duration;

use palisade::Hardening;
use palisade::core::checks::{self, CHECKS};
use palisade::core::{ClientIpLayer, Profile, SystemClock, TrustedProxies};

const P: Profile = Profile::Production;

#[tokio::test]
async fn a_weak_stack_is_refused_with_every_finding_catalogued() {
    use palisade::authn::local::LocalJwtIssuer;
    use palisade::authn::{Authenticator, IssuerConfig, KeySource, SurfacePolicy};
    use palisade::core::Surface;
    use palisade::csp_headers::csp::{ContentSecurityPolicy, Directive, Source};
    use palisade::csp_headers::{AdminHostLayer, CorsLayer, Hsts, RequireHttpsLayer};

    let mut h = Hardening::new(P);
    let weak_csp = ContentSecurityPolicy::empty().set(
        Directive::ScriptSrc,
        [
            Source::UNSAFE_INLINE,
            Source::UNSAFE_EVAL,
            Source::scheme("https:").expect("scheme"),
        ],
    );
    let headers = h.check(
        palisade::csp_headers::SecurityHeadersLayer::builder()
            .profile(P)
            .csp(weak_csp)
            .hsts(Hsts::new(Duration::from_secs(86_400)).include_subdomains(false))
            .frame_options(None)
            .build(),
    );
    let cors = h.check(
        CorsLayer::builder()
            .profile(P)
            .allow_origins(["http://app.example.com", "http://localhost:3000"])
            .expect("origins")
            .build(),
    );
    let https = h.check(RequireHttpsLayer::builder().profile(P).build());
    let admin = h.check(
        AdminHostLayer::builder("localhost")
            .expect("host")
            .profile(P)
            .allow_client_ips(["0.0.0.0/0"])
            .expect("ips")
            .build(),
    );
    let ip = h.check(ClientIpLayer::checked(
        TrustedProxies::new(["0.0.0.0/0"]).expect("proxies"),
        P,
    ));
    let local = h.check(
        LocalJwtIssuer::builder("https://api.example.com/local")
            .profile(P)
            .build(),
    );
    let dev_local = LocalJwtIssuer::builder("https://api.example.com/local")
        .profile(Profile::Development)
        .build()
        .expect("development");
    let auth = h.check(
        Authenticator::builder()
            .profile(P)
            .issuer(
                IssuerConfig::new("http://sso.example.com/realms/acme")
                    .expect("issuer")
                    .key_source(KeySource::Static(dev_local.key_set())),
            )
            .build()
            .await,
    );
    assert!(
        auth.is_none(),
        "an issuer over plain HTTP was accepted in production"
    );
    // A sound authenticator, and a surface of it that accepts any client.
    let sound = h
        .check(
            Authenticator::builder()
                .profile(P)
                .issuer(
                    IssuerConfig::new("https://sso.example.com/realms/acme")
                        .expect("issuer")
                        .key_source(KeySource::Static(dev_local.key_set())),
                )
                .build()
                .await,
        )
        .expect("a sound authenticator");
    let api = Some(&sound)
        .and_then(|a| h.check(a.layer(SurfacePolicy::new(Surface::API).audiences(["api"]))));
    let admin_surface = h.check(
        sound.layer(
            SurfacePolicy::new(Surface::GLOBAL_ADMIN)
                .audiences(["global-admin"])
                .authorized_parties(["admin-console"]),
        ),
    );
    assert!(admin_surface.is_none());
    let cipher = h.check(
        palisade::field_crypto::FieldCipher::ephemeral_for_development(P, SystemClock::shared()),
    );
    let dev_cipher = palisade::field_crypto::FieldCipher::ephemeral_for_development(
        Profile::Development,
        SystemClock::shared(),
    )
    .expect("development");
    let aksk = h.check(
        palisade::aksk::Verifier::builder("svc", "region")
            .profile(P)
            .window(Duration::from_secs(3_600))
            .build(dev_cipher, SystemClock::shared()),
    );
    let store = h.check(
        palisade::sessions::require_transport(
            "redis://cache.internal:6379",
            P,
            "session-store",
            |_| {},
        )
        .map(|()| {
            ClientIpLayer::checked(TrustedProxies::new(["10.0.0.1"]).expect("p"), P).expect("ok")
        }),
    );

    // A throttle whose only rule fails open, with no limit for anonymous callers: built, and
    // both weaknesses reported.
    {
        use palisade::throttle::{
            FailurePolicy, MemoryStore, Quota, QuotaTable, Quotas, Rule, Scope, ThrottleLayer,
        };
        let throttle = h.check(
            ThrottleLayer::builder(MemoryStore::new())
                .rule(Rule::new("user", Scope::User).on_store_error(FailurePolicy::Open))
                .quotas(Quotas::new(
                    QuotaTable::new().rule("user", Quota::per_minute(8).expect("quota")),
                ))
                .build_for(P),
        );
        assert!(throttle.is_some());
    }
    // A local issuer with a key ring but two-hour tokens: built, and the warning reported.
    let long_lived = h.check(
        LocalJwtIssuer::builder("https://api.example.com/local")
            .profile(P)
            .key_ring(
                palisade::core::KeyRing::parse(
                    "jwt 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
                )
                .expect("ring"),
            )
            .ttl(Duration::from_secs(7_200))
            .build(),
    );
    assert!(long_lived.is_some());
    // Password login on: its per-process attempt limits are reported.
    h.absorb(palisade::sessions::local_login::posture(true, P));
    // A wildcard origin is refused outright by the builder; the assembly lists it.
    let wildcard = h.step(CorsLayer::builder().profile(P).allow_origins(["*"]));
    assert!(wildcard.is_none());
    let pdp = h.check(
        palisade::authz_cerbos::PdpClient::builder("http://127.0.0.1:3593")
            .profile(P)
            .insecure_plaintext_loopback()
            .build(),
    );
    assert!(pdp.is_none());

    // Refused layers give nothing; the report has them all.
    assert!(headers.is_none() && cors.is_none() && admin.is_none() && ip.is_none());
    assert!(local.is_none() && cipher.is_none() && aksk.is_none() && store.is_none());
    assert!(https.is_some());
    let report = h.finish().expect_err("refused").report().clone();
    let codes: Vec<&str> = report.findings().iter().map(|f| f.code()).collect();
    for code in [
        "csp-unsafe-inline",
        "csp-unsafe-eval",
        "hsts-short",
        "framing-allowed",
        "cors-http-origin",
        "cors-localhost-origin",
        "https-redirect-to-request-host",
        "admin-host-not-a-name",
        "proxy-trusts-everyone",
        "local-jwt-generated-key",
        "authn-http-issuer",
        "field-crypto-ephemeral-key",
        "aksk-window-too-long",
        "store-plaintext",
        "authz-pdp-plaintext",
        "authn-admin-without-mfa",
        "cors-wildcard-origin",
        "throttle-fails-open",
        "throttle-no-anonymous-rule",
        "local-login-process-limits",
        "local-jwt-long-ttl",
    ] {
        assert!(codes.contains(&code), "{code} missing from {codes:?}");
    }
    if api.is_some() {
        // An API surface without authorized parties must have been refused.
        panic!("a surface without authorized parties was built in production");
    }
    assert!(codes.contains(&"authn-any-client"), "{codes:?}");
    for f in report.findings() {
        let check = checks::find(f.code()).unwrap_or_else(|| panic!("uncatalogued {f}"));
        assert_eq!(f.id(), check.id);
        assert!(!f.fix().is_empty());
        assert!(
            f.severity() <= check.level(),
            "{f} is recorded above its id's level"
        );
    }
    // The text and JSON forms carry ids and fixes.
    let text = report.to_string();
    assert!(text.contains("REFUSED") && text.contains("csp.E003") && text.contains("fix:"));
    let json = report.to_json();
    assert_eq!(json["refused"], true);
    assert_eq!(
        json["findings"].as_array().map(Vec::len),
        Some(report.findings().len())
    );
}

/// A surface without an audience is refused in every profile, and listed as `authn.E004`.
#[tokio::test]
async fn a_surface_without_an_audience_is_a_catalogued_finding() {
    use palisade::authn::local::LocalJwtIssuer;
    use palisade::authn::{Authenticator, IssuerConfig, KeySource, SurfacePolicy};
    use palisade::core::Surface;

    let local = LocalJwtIssuer::builder("https://api.example.com/local")
        .profile(Profile::Development)
        .build()
        .expect("development");
    for profile in [Profile::Development, P] {
        let mut h = Hardening::new(profile);
        let auth = Authenticator::builder()
            .profile(profile)
            .issuer(
                IssuerConfig::new("https://sso.example.com/realms/acme")
                    .expect("issuer")
                    .key_source(KeySource::Static(local.key_set())),
            )
            .build()
            .await
            .expect("authenticator");
        let surface = SurfacePolicy::new(Surface::API).authorized_parties(["web"]);
        assert!(h.check(auth.layer(surface)).is_none());
        // Rate limits elsewhere: listed, not refused.
        h.rate_limited_elsewhere("the API gateway");
        let refused = h.finish().expect_err("no audience");
        let ids: Vec<&str> = refused.report().findings().iter().map(|f| f.id()).collect();
        assert_eq!(ids, ["authn.E004", "throttle.I001"], "{}", refused.report());
    }
}

#[test]
fn development_reports_without_refusing() {
    let mut h = Hardening::new(Profile::Development);
    let ip = h.check(ClientIpLayer::checked(
        TrustedProxies::new(["0.0.0.0/0"]).expect("proxies"),
        Profile::Development,
    ));
    assert!(ip.is_some());
    let report = h.finish().expect("development starts");
    assert!(!report.refuses());
    // Reported, not refused (and no throttle layer: reported too).
    let ids: Vec<_> = report.findings().iter().map(|f| f.id()).collect();
    assert_eq!(ids, ["proxy.E001", "throttle.E001"], "{report}");
}

#[tokio::test]
async fn a_production_assembly_refuses_layers_checked_under_development() {
    use palisade::authn::local::LocalJwtIssuer;
    use palisade::authz_cerbos::PdpClient;
    use palisade::core::ManualClock;
    use palisade::csp_headers::{CorsLayer, SecurityHeadersLayer};
    use palisade::field_crypto::FieldCipher;

    const D: Profile = Profile::Development;
    let mut h = Hardening::new(P);
    // Each of these passes its own (development) checks.
    let headers = h.check(SecurityHeadersLayer::builder().profile(D).build());
    let cors = h.check(CorsLayer::builder().profile(D).build());
    let ip = h.check(Ok::<_, palisade::core::PostureError>(ClientIpLayer::new(
        TrustedProxies::none(),
    )));
    let local = h.check(
        LocalJwtIssuer::builder("https://api.example.com/local")
            .profile(D)
            .build(),
    );
    let pdp = h.check(
        PdpClient::builder("http://127.0.0.1:3593")
            .insecure_plaintext_loopback()
            .profile(D)
            .build(),
    );
    let clock = ManualClock::new(std::time::UNIX_EPOCH).shared();
    let cipher = h.check(FieldCipher::ephemeral_for_development(D, clock.clone()));
    assert!(headers.is_some() && cors.is_some() && ip.is_some() && local.is_some());
    assert!(pdp.is_some() && cipher.is_some());
    // A checked client-IP layer and a configured key ring depend on no profile mismatch.
    let strong = h.check(ClientIpLayer::checked(TrustedProxies::none(), P));
    assert!(strong.is_some());
    let ring = palisade::core::KeyRing::parse(&format!("k 1 {}", "QUJD".repeat(11))).expect("ring");
    assert!(
        h.check(Ok::<_, palisade::core::PostureError>(FieldCipher::new(
            ring, clock
        )))
        .is_some()
    );

    let refused = h.finish().expect_err("development layers in production");
    let report = refused.report();
    let mismatched: Vec<String> = report
        .findings()
        .iter()
        .filter(|f| f.id() == "posture.E001")
        .map(|f| f.to_string())
        .collect();
    assert_eq!(mismatched.len(), 6, "{report}");
    assert!(
        mismatched
            .iter()
            .any(|m| m.contains("ClientIpLayer was built without a posture check")),
        "{mismatched:#?}"
    );
    for name in [
        "SecurityHeadersLayer",
        "CorsLayer",
        "LocalJwtIssuer",
        "PdpClient",
        "FieldCipher",
    ] {
        assert!(
            mismatched
                .iter()
                .any(|m| m.contains(&format!("{name} was checked under the development profile"))),
            "{name}: {mismatched:#?}"
        );
    }
}

#[test]
fn a_development_assembly_accepts_production_layers() {
    use palisade::csp_headers::SecurityHeadersLayer;
    let mut h = Hardening::new(Profile::Development);
    assert!(
        h.check(SecurityHeadersLayer::builder().profile(P).build())
            .is_some()
    );
    let report = h.finish().expect("stricter layers are fine");
    assert!(
        report.findings().iter().all(|f| f.id() != "posture.E001"),
        "{report}"
    );
}

#[test]
fn every_code_builders_record_is_catalogued() {
    // Scans the component crates for codes passed to `record`, so that a check no test
    // triggers is catalogued too.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut missing = Vec::new();
    let mut seen = 0;
    let mut stack = vec![root.join("crates"), root.join("examples")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                if !path.ends_with("tests") && !path.ends_with("target") {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source");
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if line.trim_start().starts_with("//") || !line.contains("record(") {
                    continue;
                }
                // The code is the first kebab-case string literal of the call.
                let call = lines[i..lines.len().min(i + 6)].join(" ");
                if let Some(code) = first_code(&call) {
                    seen += 1;
                    if checks::find(code).is_none() {
                        missing.push(format!("{}: {code}", path.display()));
                    }
                }
            }
        }
    }
    assert!(seen > 40, "only {seen} record calls found");
    assert!(missing.is_empty(), "uncatalogued codes: {missing:#?}");
}

/// The first `"kebab-case"` literal in `text`.
fn first_code(text: &str) -> Option<&str> {
    text.split('"').skip(1).step_by(2).find(|s| {
        s.contains('-')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
    })
}

#[test]
fn the_guide_lists_exactly_the_catalogue() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/posture.md"))
        .expect("docs/posture.md");
    let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with("| `")).collect();
    assert_eq!(rows.len(), CHECKS.len(), "one row per check");
    for c in CHECKS {
        let row = format!("| `{}` | `{}` | {} |", c.id, c.code, c.title);
        assert!(
            rows.iter().any(|r| r.starts_with(&row)),
            "docs/posture.md lacks {row}"
        );
    }
}

/// Stores and the impersonator go through `Hardening` too: one connected without a check, or
/// checked under the development profile, refuses a production start.
#[cfg(all(feature = "redis", feature = "postgres", feature = "impersonation"))]
#[tokio::test]
async fn stores_connected_unchecked_or_for_development_refuse_production() {
    use palisade::core::ManualClock;

    let redis =
        std::env::var("PALISADE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let pg = std::env::var("PALISADE_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let prefix = format!("palisade-posture-{}:", std::process::id());
    let mut h = Hardening::new(P);
    // Checked under production, on loopback: accepted.
    let sessions =
        h.check(palisade::sessions::RedisStore::connect_checked(&redis, &prefix, P).await);
    let credentials = h.check(palisade::aksk::PostgresCredentialStore::connect_url(&pg, P).await);
    let nonces = h.check(palisade::aksk::RedisNonceStore::connect(&redis, &prefix, P).await);
    assert!(sessions.is_some() && credentials.is_some() && nonces.is_some());
    assert!(h.report().findings().is_empty(), "{}", h.report());
    // Unchecked, or for development.
    let unchecked = h.check(palisade::sessions::RedisStore::connect(&redis, &prefix).await);
    let dev_pg =
        h.check(palisade::sessions::PostgresStore::connect_url(&pg, Profile::Development).await);
    let clock = ManualClock::new(std::time::UNIX_EPOCH).shared();
    let throttle = palisade::throttle::RedisStore::connect(&redis, &prefix, P)
        .await
        .expect("redis")
        .with_test_clock(clock, Profile::Development);
    let throttle = h.check(throttle);
    let impersonator = h.check(
        palisade::impersonation::Impersonator::builder(
            palisade::impersonation::ImpersonationPolicy::new(
                palisade::impersonation::RoleRule::Realm("impersonator".into()),
            ),
            palisade::impersonation::StaticDirectory::new(),
            palisade::audit::MemorySink::new(
                palisade::core::KeyRing::parse(&format!("k 1 {}", "QUJD".repeat(11)))
                    .expect("ring"),
            ),
            "https://api.example.com/impersonation",
        )
        .profile(Profile::Development)
        .build(),
    );
    assert!(unchecked.is_some() && dev_pg.is_some() && throttle.is_some());
    assert!(impersonator.is_some());
    let refused = h.finish().expect_err("development parts in production");
    let mismatched: Vec<String> = refused
        .report()
        .findings()
        .iter()
        .filter(|f| f.id() == "posture.E001")
        .map(|f| f.to_string())
        .collect();
    assert_eq!(mismatched.len(), 4, "{mismatched:#?}");
    for part in [
        "RedisStore was built without a posture check",
        "PostgresStore was checked under the development profile",
        "RedisStore was checked under the development profile",
        "Impersonator was checked under the development profile",
    ] {
        assert!(
            mismatched.iter().any(|m| m.contains(part)),
            "{part}: {mismatched:#?}"
        );
    }
}

/// A production stack without a throttle layer is refused (`throttle.E001`), unless the
/// application names what limits its rates.
#[test]
fn a_stack_without_a_rate_limit_is_refused_unless_limited_elsewhere() {
    let sound = || ClientIpLayer::checked(TrustedProxies::none(), P);
    let mut h = Hardening::new(P);
    assert!(h.check(sound()).is_some());
    let refused = h.finish().expect_err("no throttle");
    let ids: Vec<&str> = refused.report().findings().iter().map(|f| f.id()).collect();
    assert_eq!(ids, ["throttle.E001"]);

    let mut h = Hardening::new(P);
    assert!(h.check(sound()).is_some());
    h.rate_limited_elsewhere("the API gateway limits per org");
    let report = h.finish().expect("limited elsewhere");
    let ids: Vec<&str> = report.findings().iter().map(|f| f.id()).collect();
    assert_eq!(ids, ["throttle.I001"]);
}

/// The PostgreSQL audit sink: a plaintext URL to another machine is listed as `store.E001`;
/// one connected for development refuses a production start (`posture.E001`).
#[cfg(all(feature = "postgres", feature = "audit"))]
#[tokio::test]
async fn the_audit_sink_goes_through_hardening_like_the_stores() {
    use palisade::audit::PostgresSink;
    use palisade::core::KeyRing;

    let pg = std::env::var("PALISADE_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let ring = KeyRing::parse(&format!("audit 1 {}", "QUJD".repeat(11))).expect("ring");
    let schema = format!("palisade_posture_{}", std::process::id());
    let pool = sqlx::PgPool::connect(&pg).await.expect("postgres");
    sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .execute(&pool)
        .await
        .expect("schema");
    let in_schema = format!("{pg}?options=-c%20search_path%3D{schema}");

    let mut h = Hardening::new(P);
    let remote = h.check(
        PostgresSink::connect(
            "postgres://audit@10.0.0.5/audit",
            P,
            "audit_log",
            ring.clone(),
        )
        .await,
    );
    assert!(remote.is_none());
    let sound = h.check(PostgresSink::connect(&in_schema, P, "audit_log", ring.clone()).await);
    let dev =
        h.check(PostgresSink::connect(&in_schema, Profile::Development, "audit_log", ring).await);
    assert!(sound.is_some() && dev.is_some());
    let refused = h.finish().expect_err("refused");
    let ids: Vec<&str> = refused.report().findings().iter().map(|f| f.id()).collect();
    assert!(ids.contains(&"store.E001"), "{ids:?}");
    let mismatched = refused
        .report()
        .findings()
        .iter()
        .filter(|f| f.id() == "posture.E001")
        .map(|f| f.to_string())
        .collect::<Vec<_>>();
    assert_eq!(mismatched.len(), 1, "{mismatched:#?}");
    assert!(mismatched[0].contains("PostgresSink was checked under the development profile"));
    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&pool)
        .await
        .expect("drop");
}
