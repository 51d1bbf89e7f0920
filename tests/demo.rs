//! Integration tests against the running demo service (`examples/hardened_api`): the whole
//! attack tour, plus checks that need more than a table row. The demo binary is built by
//! `cargo test` (examples are built before tests run) and started on kernel-chosen ports.

#[allow(dead_code)]
#[path = "../xtask/src/cerbos.rs"]
mod cerbos;
#[allow(dead_code)]
#[path = "../xtask/src/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../xtask/src/oidc.rs"]
mod oidc;
#[allow(dead_code)]
#[path = "../xtask/src/pki.rs"]
mod pki;
#[allow(dead_code)]
#[path = "../xtask/src/tour.rs"]
mod tour;

use std::path::PathBuf;

use content_security_policy::{
    CheckResult, CspList, Element, InlineCheckType, PolicyDisposition, PolicySource,
};

/// `target/<profile>`: the test runs from `target/<profile>/deps/demo-<hash>`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target profile dir")
        .to_path_buf()
}

fn demo_binary() -> PathBuf {
    // target/<profile>/examples/hardened_api
    let bin = profile_dir()
        .join("examples")
        .join(format!("hardened_api{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test` (which builds examples) or `cargo build --example hardened_api`",
        bin.display()
    );
    bin
}

fn test_pki(name: &str) -> pki::TestPki {
    let dir = std::env::temp_dir().join(format!("palisade-test-{}-{name}", std::process::id()));
    pki::generate(
        &dir,
        &[
            harness::PUBLIC_HOST,
            harness::ADMIN_HOST,
            "localhost",
            "127.0.0.1",
        ],
    )
    .expect("test PKI")
}

/// The test OpenID provider and a token per persona the tour uses.
async fn provider() -> (oidc::Provider, tour::Tokens) {
    let provider = oidc::Provider::start(&oidc::Options::default()).expect("OIDC provider starts");
    let mut tokens = tour::Tokens::new();
    for persona in tour::PERSONAS {
        tokens.insert(
            persona.to_owned(),
            provider.token(persona).await.expect("token"),
        );
    }
    (provider, tokens)
}

fn start(
    pki: &pki::TestPki,
    issuer: &str,
    tokens: tour::Tokens,
) -> (harness::Demo, tour::Target, Vec<(&'static str, String)>) {
    // The real Cerbos PDP, serving TLS with the test certificate.
    let pdp = cerbos::Pdp::start(&cerbos::Transport::Tls {
        cert: pki.cert_path.clone(),
        key: pki.key_path.clone(),
    })
    .expect("PDP starts");
    let mut env = harness::demo_env(pki, "production", issuer);
    env.extend(harness::cerbos_env(pki, &pdp));
    // Everything the demo and its dependencies log, for the secret-leak check.
    env.push(("RUST_LOG", "debug".to_owned()));
    let demo = harness::Demo::start(&demo_binary(), &env).expect("demo starts");
    let target = tour::Target {
        https: demo.https,
        http: demo.http,
        ca_pem: pki.ca_pem.clone(),
        tokens,
        pdp: Some(std::sync::Arc::new(std::sync::Mutex::new(pdp))),
        audit: harness::AuditLog::of(&env, &profile_dir()),
        metrics: demo.metrics,
    };
    (demo, target, env)
}

fn assert_all_pass(rows: &[tour::Row], demo: &harness::Demo) {
    let failed: Vec<_> = rows.iter().filter(|r| !r.pass).collect();
    assert!(
        failed.is_empty(),
        "failed rows: {failed:#?}\nlogs: {:#?}",
        demo.drain_logs()
    );
}

#[tokio::test]
async fn attack_tour_passes_against_the_running_demo() {
    let pki = test_pki("tour");
    let (provider, tokens) = provider().await;
    let (demo, target, env) = start(&pki, &provider.issuer, tokens.clone());
    let rows = tour::run(&target).await;
    assert!(rows.len() >= 25, "only {} rows", rows.len());
    // No token, key, access-key secret or password the tour used appears in any log line
    // (read to the end of the demo's output).
    let logs = demo.stop_and_drain();
    assert!(
        logs.iter()
            .filter(|l| l.contains("request refused"))
            .count()
            > 20,
        "the refusals were not captured: {logs:#?}"
    );
    // Each layer's refusals are logged inside its span, with the reason.
    for span in [
        "palisade.authn{surface=",
        "palisade.aksk",
        "palisade.throttle",
        "palisade.authz",
        "palisade.impersonation",
    ] {
        assert!(
            logs.iter().any(|l| l.contains(span)
                && l.contains("request refused")
                && l.contains("reason=")),
            "no refusal logged inside {span}"
        );
    }
    let mut secrets = tour::secrets_seen();
    secrets.extend(tokens.values().cloned());
    // The check itself finds a planted token and a planted key.
    let planted = vec![
        format!("authorization: Bearer {}", secrets[secrets.len() - 1]),
        format!("key {}", harness::TOUR_AUDIT_KEY),
    ];
    assert_eq!(harness::leaks(&planted, &env, &secrets).len(), 2);
    let leaked = harness::leaks(&logs, &env, &secrets);
    assert!(leaked.is_empty(), "secrets in the demo's logs: {leaked:?}");
    assert!(secrets.len() > 10, "only {} secrets checked", secrets.len());
    let failed: Vec<_> = rows.iter().filter(|r| !r.pass).collect();
    assert!(
        failed.is_empty(),
        "failed rows: {failed:#?}\nlogs: {logs:#?}"
    );
}

#[tokio::test]
async fn admin_allowlist_behind_a_trusted_proxy() {
    let pki = test_pki("proxy");
    let (provider, tokens) = provider().await;
    let demo = harness::Demo::start(
        &demo_binary(),
        &harness::proxied_demo_env(&pki, &provider.issuer),
    )
    .expect("demo starts");
    let target = tour::Target {
        https: demo.https,
        http: demo.http,
        ca_pem: pki.ca_pem.clone(),
        tokens,
        pdp: None,
        audit: None,
        metrics: None,
    };
    let rows = tour::run_behind_proxy(&target).await;
    assert_eq!(rows.len(), 4);
    assert_all_pass(&rows, &demo);
}

#[tokio::test]
async fn expired_reset_tokens_are_refused() {
    let pki = test_pki("clock");
    let (provider, _) = provider().await;
    let mut env = harness::clocked_demo_env(&pki, &provider.issuer);
    env.push(("RUST_LOG", "debug".to_owned()));
    let demo = harness::Demo::start(&demo_binary(), &env).expect("demo starts");
    let target = tour::Target {
        https: demo.https,
        http: demo.http,
        ca_pem: pki.ca_pem.clone(),
        tokens: tour::Tokens::new(),
        pdp: None,
        audit: None,
        metrics: None,
    };
    let rows = tour::run_with_clock(&target).await;
    assert_all_pass(&rows, &demo);
    // This demo handles passwords, verification, reset and refresh tokens: none is logged.
    let logs = demo.stop_and_drain();
    let secrets = tour::secrets_seen();
    assert!(secrets.iter().any(|s| s == "correct horse battery staple"));
    let leaked = harness::leaks(&logs, &env, &secrets);
    assert!(
        leaked.is_empty(),
        "secrets in the clocked demo's logs: {leaked:?}"
    );
}

#[tokio::test]
async fn the_posture_report_lists_every_finding_with_its_id_and_fix() {
    let pki = test_pki("posture");
    // A weak production configuration: refused, every finding listed, each catalogued.
    let (status, out) =
        harness::posture(&demo_binary(), &harness::weak_env(&pki), true).expect("posture runs");
    assert_eq!(status.code(), Some(2), "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(report["refused"], true);
    let findings = report["findings"].as_array().expect("findings");
    let ids: Vec<&str> = findings.iter().filter_map(|f| f["id"].as_str()).collect();
    for id in [
        "admin.E001",
        "cors.E001",
        "cors.E002",
        "proxy.E001",
        "keys.E001",
        "keys.E004",
        "audit.E001",
        "audit.E002",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    for f in findings {
        assert_ne!(f["id"], "palisade.X000", "uncatalogued finding {f}");
        assert!(!f["fix"].as_str().unwrap_or("").is_empty(), "{f}");
        assert!(["deny", "warn", "info"].contains(&f["severity"].as_str().unwrap_or("")));
    }
    assert_eq!(
        report["blocking"].as_u64(),
        Some(findings.iter().filter(|f| f["severity"] == "deny").count() as u64)
    );
    // The text form says the same.
    let (status, text) =
        harness::posture(&demo_binary(), &harness::weak_env(&pki), false).expect("posture runs");
    assert_eq!(status.code(), Some(2));
    assert!(
        text.contains("REFUSED") && text.contains("admin.E001"),
        "{text}"
    );
    // The tour's production configuration: it would start, nothing blocking.
    let (provider, _) = provider().await;
    // Checked while a demo with the same settings runs (and holds its audit log): the check
    // reads the log, it does not compete for it.
    let env = harness::demo_env(&pki, "production", &provider.issuer);
    let running = harness::Demo::start(&demo_binary(), &env).expect("demo starts");
    let (status, out) = harness::posture(&demo_binary(), &env, true).expect("posture runs");
    drop(running);
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    assert!(status.success(), "{out}");
    assert_eq!(
        (report["refused"].clone(), report["blocking"].clone()),
        (serde_json::json!(false), serde_json::json!(0))
    );
}

#[test]
fn test_only_switches_are_refused_in_production() {
    for switch in ["PALISADE_DEMO_TEST_CLOCK", "PALISADE_DEMO_MAIL_OUTBOX"] {
        let pki = test_pki("switch-prod");
        let mut env = harness::demo_env(&pki, "production", "http://127.0.0.1:1/realms/x");
        env.push((switch, "true".to_owned()));
        let (status, stderr) = harness::run_to_exit(&demo_binary(), &env).unwrap();
        assert!(!status.success(), "{switch}");
        assert!(
            stderr.contains(&format!("{switch} is refused in production")),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn served_csp_parses_and_only_admits_the_pages_own_nonce() {
    let pki = test_pki("csp");
    let (provider, tokens) = provider().await;
    let (_demo, target, _env) = start(&pki, &provider.issuer, tokens);
    let client = tour::client(&target).unwrap();
    let url = format!("https://{}:{}/", harness::PUBLIC_HOST, target.https.port());
    let res = client.get(&url).send().await.unwrap();
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = res.text().await.unwrap();
    let nonce = body
        .split("<script nonce=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();

    let list = CspList::parse(&csp, PolicySource::Header, PolicyDisposition::Enforce);
    assert!(list.is_valid(), "{csp}");
    let check = |nonce: Option<&str>| {
        let element = Element {
            nonce: nonce.map(Into::into),
        };
        list.should_elements_inline_type_behavior_be_blocked(
            &element,
            InlineCheckType::Script,
            "x()",
        )
        .0
    };
    assert_eq!(check(Some(&nonce)), CheckResult::Allowed);
    assert_eq!(check(None), CheckResult::Blocked);

    // The next response's nonce does not unlock this page's scripts, and vice versa.
    let other = client.get(&url).send().await.unwrap();
    let other_csp = other.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let other_list = CspList::parse(&other_csp, PolicySource::Header, PolicyDisposition::Enforce);
    let element = Element {
        nonce: Some(nonce.as_str().into()),
    };
    assert_eq!(
        other_list
            .should_elements_inline_type_behavior_be_blocked(
                &element,
                InlineCheckType::Script,
                "x()"
            )
            .0,
        CheckResult::Blocked
    );
}

#[test]
fn weak_production_config_is_refused_with_every_finding() {
    let row = harness::refusal_row(&demo_binary(), &test_pki("refusal"));
    assert!(row.pass, "{row:?}");
}

#[test]
fn production_requires_certificates() {
    let envs = [
        ("PALISADE_PROFILE", "production".to_owned()),
        ("ADMIN_HOSTNAME", harness::ADMIN_HOST.to_owned()),
        ("PALISADE_DEMO_PUBLIC_HOST", harness::PUBLIC_HOST.to_owned()),
        (
            "PALISADE_DEMO_CORS_ORIGINS",
            harness::ALLOWED_ORIGIN.to_owned(),
        ),
    ];
    let (status, stderr) = harness::run_to_exit(&demo_binary(), &envs).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("required in production"), "{stderr}");
}

#[test]
fn development_starts_with_a_generated_certificate() {
    let envs = [
        ("PALISADE_PROFILE", "development".to_owned()),
        ("PALISADE_DEMO_HTTPS_ADDR", "127.0.0.1:0".to_owned()),
        ("PALISADE_DEMO_HTTP_ADDR", "127.0.0.1:0".to_owned()),
    ];
    let demo = harness::Demo::start(&demo_binary(), &envs)
        .expect("development demo starts without certificates");
    assert!(demo.https.port() != 0 && demo.http.port() != 0);
}
