//! Against the real Cerbos PDP (npm `@cerbos/cerbos-linux-x64`, pinned; installed into the
//! cache folder) serving the repository's `policies/`: plaintext on loopback, TLS with a CA the
//! test generates, and mutual TLS.

#[path = "../../../xtask/src/cerbos.rs"]
#[allow(dead_code)]
mod cerbos;

use std::path::Path;
use std::time::{Duration, Instant};

use palisade_authz_cerbos::{
    AuthzError, PdpClient, PrincipalOptions, Resource, Tenant, principal_for,
};
use palisade_core::{AuthMethod, Identity, Membership, MfaLevel, Profile, Surface};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};

fn alice() -> Identity {
    // A member of org-1 and an admin of org-2.
    Identity::new(
        "https://idp/realms/r",
        "alice",
        AuthMethod::Oidc,
        Surface::API,
    )
    .with_membership(Membership::new("org-1", None, ["member"]))
    .with_membership(Membership::new("org-2", None, ["admin"]))
}

fn doc(org: &str) -> Resource {
    Resource::new("document", "doc-1").attr("org", org)
}

async fn allowed(pdp: &PdpClient, who: &Identity, tenant: &str, org_of_doc: &str) -> Vec<String> {
    let principal =
        principal_for(who, &Tenant::org(tenant), &PrincipalOptions::default()).expect("principal");
    pdp.check(
        principal,
        doc(org_of_doc),
        &["read", "update", "export", "delete"],
        "test",
    )
    .await
    .expect("decision")
    .allowed_actions()
    .to_vec()
}

fn plaintext_client(pdp: &cerbos::Pdp) -> PdpClient {
    PdpClient::builder(format!("http://{}", pdp.grpc))
        .insecure_plaintext_loopback()
        .profile(Profile::Development)
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client")
}

#[tokio::test]
async fn decisions_follow_the_policies_and_never_cross_tenants() {
    let pdp = cerbos::Pdp::start(&cerbos::Transport::Plaintext).expect("pdp");
    let client = plaintext_client(&pdp);
    // Same org: a member reads, but exports only with MFA.
    assert_eq!(allowed(&client, &alice(), "org-1", "org-1").await, ["read"]);
    let mfa = alice().with_mfa(MfaLevel::MultiFactor, Some("2".into()), vec!["otp".into()]);
    assert_eq!(
        allowed(&client, &mfa, "org-1", "org-1").await,
        ["read", "export"]
    );
    // Alice is an admin of org-2: her org-2 principal gets nothing on org-1's document, and
    // her org-1 principal does not carry the org-2 admin role.
    assert!(allowed(&client, &mfa, "org-2", "org-1").await.is_empty());
    assert_eq!(
        allowed(&client, &mfa, "org-2", "org-2").await,
        ["read", "update", "export", "delete"]
    );
    // Impersonating, even with MFA, exports nothing.
    let impersonated = Identity::new(
        "https://idp/realms/r",
        "alice",
        AuthMethod::Impersonation {
            actor: Box::new(Identity::new(
                "https://idp/realms/r",
                "root",
                AuthMethod::Oidc,
                Surface::GLOBAL_ADMIN,
            )),
        },
        Surface::API,
    )
    .with_membership(Membership::new("org-1", None, ["member"]))
    .with_mfa(MfaLevel::MultiFactor, None, vec![]);
    assert_eq!(
        allowed(&client, &impersonated, "org-1", "org-1").await,
        ["read"]
    );
}

#[tokio::test]
async fn a_stopped_pdp_is_a_deny_within_the_timeout_and_a_restarted_one_serves_again() {
    let mut pdp = cerbos::Pdp::start(&cerbos::Transport::Plaintext).expect("pdp");
    let client = plaintext_client(&pdp);
    assert_eq!(allowed(&client, &alice(), "org-1", "org-1").await, ["read"]);
    pdp.stop();
    let principal = principal_for(
        &alice(),
        &Tenant::org("org-1"),
        &PrincipalOptions::default(),
    )
    .expect("principal");
    let started = Instant::now();
    let answer = client
        .check(principal.clone(), doc("org-1"), &["read"], "down")
        .await;
    assert!(matches!(answer, Err(AuthzError::Unavailable)), "{answer:?}");
    // Two attempts of at most 500 ms each, and some slack for a loaded machine.
    assert!(started.elapsed() < Duration::from_secs(3));
    pdp.restart().expect("restart");
    // The same client (no rebuild) reconnects; the first calls may still meet the old
    // connection's failure.
    let mut answer = Err(AuthzError::Unavailable);
    for _ in 0..20 {
        answer = client
            .check(principal.clone(), doc("org-1"), &["read"], "back")
            .await;
        if answer.is_ok() {
            break;
        }
    }
    assert!(answer.expect("served again").allowed("read"));
}

struct Pki {
    issuer: Issuer<'static, KeyPair>,
    ca: String,
    server_cert: std::path::PathBuf,
    server_key: std::path::PathBuf,
    ca_path: std::path::PathBuf,
    client: (String, String),
    rogue_client: (String, String),
}

fn ca(name: &str) -> (Issuer<'static, KeyPair>, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("ca");
    (Issuer::new(params, key), cert.pem())
}

fn leaf(issuer: &Issuer<'static, KeyPair>, names: &[&str], client: bool) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("params");
    params.extended_key_usages = vec![if client {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    }];
    let cert = params.signed_by(&key, issuer).expect("leaf");
    (cert.pem(), key.serialize_pem())
}

fn pki(dir: &Path) -> Pki {
    std::fs::create_dir_all(dir).expect("dir");
    let (issuer, ca_pem) = ca("palisade-authz test CA");
    let (rogue, _) = ca("someone else's CA");
    let (cert, key) = leaf(&issuer, &["localhost", "127.0.0.1"], false);
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    Pki {
        server_cert: write("server.pem", &cert),
        server_key: write("server.key", &key),
        ca_path: write("ca.pem", &ca_pem),
        ca: ca_pem,
        client: leaf(&issuer, &["client"], true),
        rogue_client: leaf(&rogue, &["client"], true),
        issuer,
    }
}

fn tls_client(
    pdp: &cerbos::Pdp,
    ca: Option<&str>,
    identity: Option<&(String, String)>,
) -> PdpClient {
    let mut builder = PdpClient::builder(format!("https://localhost:{}", pdp.grpc.port()))
        .timeout(Duration::from_millis(1_000));
    if let Some(ca) = ca {
        builder = builder.ca_certificate_pem(ca.as_bytes().to_vec());
    }
    if let Some((cert, key)) = identity {
        builder =
            builder.client_identity_pem(cert.as_bytes().to_vec(), key.as_bytes().to_vec().into());
    }
    builder.build().expect("client")
}

async fn read(client: &PdpClient) -> Result<bool, AuthzError> {
    let principal = principal_for(
        &alice(),
        &Tenant::org("org-1"),
        &PrincipalOptions::default(),
    )
    .expect("principal");
    client
        .check(principal, doc("org-1"), &["read"], "tls")
        .await
        .map(|d| d.allowed("read"))
}

#[tokio::test]
async fn tls_is_verified_and_mutual_tls_presents_a_certificate() {
    let dir = std::env::temp_dir().join(format!("palisade-authz-pki-{}", std::process::id()));
    let pki = pki(&dir);
    let pdp = cerbos::Pdp::start(&cerbos::Transport::Tls {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
    })
    .expect("pdp");
    // Trusting the test CA: served.
    assert!(
        read(&tls_client(&pdp, Some(&pki.ca), None))
            .await
            .expect("tls")
    );
    // Trusting only the system roots: the PDP's certificate is refused (a deny, not a pass).
    assert!(read(&tls_client(&pdp, None, None)).await.is_err());
    drop(pdp);

    let pdp = cerbos::Pdp::start(&cerbos::Transport::MutualTls {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        client_ca: pki.ca_path.clone(),
    })
    .expect("pdp");
    assert!(
        read(&tls_client(&pdp, Some(&pki.ca), Some(&pki.client)))
            .await
            .expect("mtls")
    );
    // A client certificate from another CA is refused by the PDP.
    assert!(
        read(&tls_client(&pdp, Some(&pki.ca), Some(&pki.rogue_client)))
            .await
            .is_err()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads through `client` until one answer comes (the PDP was just restarted: the first
/// calls may meet the old connection's failure), at most 20 tries.
async fn read_after_restart(client: &PdpClient) -> Result<bool, AuthzError> {
    let mut answer = Err(AuthzError::Unavailable);
    for _ in 0..20 {
        answer = read(client).await;
        if answer.is_ok() {
            break;
        }
    }
    answer
}

/// The runbook's Cerbos steps: a server certificate re-issued from the same CA needs nothing
/// from the clients; a CA change goes through a bundle trusting both CAs, and a certificate
/// from a CA the client does not trust is a deny.
#[tokio::test]
async fn certificates_re_issued_from_the_same_ca_or_a_bundled_new_ca_are_served() {
    let dir = std::env::temp_dir().join(format!("palisade-authz-rotate-{}", std::process::id()));
    let pki = pki(&dir);
    let mut pdp = cerbos::Pdp::start(&cerbos::Transport::Tls {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
    })
    .expect("pdp");
    let client = tls_client(&pdp, Some(&pki.ca), None);
    assert!(read(&client).await.expect("first certificate"));
    let first = std::fs::read_to_string(&pki.server_cert).expect("cert");

    // 1. A new key and certificate from the same CA, the PDP restarted on it: the same
    //    client (not rebuilt) is served.
    let (cert, key) = leaf(&pki.issuer, &["localhost", "127.0.0.1"], false);
    assert_ne!(cert, first);
    std::fs::write(&pki.server_cert, &cert).expect("write");
    std::fs::write(&pki.server_key, &key).expect("write");
    pdp.restart().expect("restart");
    assert!(
        read_after_restart(&client)
            .await
            .expect("re-issued certificate")
    );

    // 2. A CA change: clients first trust a bundle of the old and the new CA ...
    let (new_ca, new_ca_pem) = ca("palisade-authz test CA (next)");
    let bundle = format!("{}{}", pki.ca, new_ca_pem);
    let bundled = tls_client(&pdp, Some(&bundle), None);
    assert!(read(&bundled).await.expect("old CA through the bundle"));
    // ... then the PDP moves to a certificate of the new CA: bundled clients are served,
    // clients trusting only the old CA are refused (a deny, never a pass).
    let (cert, key) = leaf(&new_ca, &["localhost", "127.0.0.1"], false);
    std::fs::write(&pki.server_cert, &cert).expect("write");
    std::fs::write(&pki.server_key, &key).expect("write");
    pdp.restart().expect("restart");
    assert!(
        read_after_restart(&bundled)
            .await
            .expect("new CA through the bundle")
    );
    assert!(read_after_restart(&client).await.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn plaintext_on_a_unix_socket_by_the_named_option() {
    // A private directory: a socket in a world-writable one is refused.
    let dir = std::env::temp_dir().join(format!("palisade-cerbos-sock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("mode");
    }
    let socket = dir.join("grpc.sock");
    let _ = std::fs::remove_file(&socket);
    let pdp = cerbos::Pdp::start(&cerbos::Transport::Unix {
        socket: socket.clone(),
    })
    .expect("pdp");
    let endpoint = format!("unix:{}", socket.display());
    let client = PdpClient::builder(endpoint.clone())
        .insecure_plaintext_loopback()
        .profile(Profile::Development)
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client");
    assert_eq!(allowed(&client, &alice(), "org-1", "org-1").await, ["read"]);
    // Without the named option, in production, or relative: refused.
    assert!(
        PdpClient::builder(endpoint.clone())
            .profile(Profile::Development)
            .build()
            .is_err()
    );
    assert!(
        PdpClient::builder(endpoint)
            .insecure_plaintext_loopback()
            .profile(Profile::Production)
            .build()
            .is_err()
    );
    assert!(
        PdpClient::builder("unix:relative.sock")
            .insecure_plaintext_loopback()
            .profile(Profile::Development)
            .build()
            .is_err()
    );
    let in_tmp = format!("unix:{}", std::env::temp_dir().join("pdp.sock").display());
    assert!(
        PdpClient::builder(in_tmp)
            .insecure_plaintext_loopback()
            .profile(Profile::Development)
            .build()
            .is_err()
    );
    drop(pdp);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn outside_a_runtime_building_is_an_error_not_a_panic() {
    let built = PdpClient::builder("https://127.0.0.1:3593").build();
    assert!(matches!(built, Err(AuthzError::Config(_))));
}

#[tokio::test]
async fn unsafe_settings_are_refused_when_the_client_is_built() {
    let build = |endpoint: &str, insecure: bool, profile: Profile| {
        let mut b = PdpClient::builder(endpoint).profile(profile);
        if insecure {
            b = b.insecure_plaintext_loopback();
        }
        b.build().map(|_| ())
    };
    // Plaintext needs the named option, loopback, and not Production.
    assert!(build("http://127.0.0.1:3593", false, Profile::Development).is_err());
    assert!(build("http://127.0.0.1:3593", true, Profile::Production).is_err());
    assert!(build("http://10.0.0.5:3593", true, Profile::Development).is_err());
    assert!(build("http://pdp.internal:3593", true, Profile::Development).is_err());
    assert!(build("http://localhost:3593", true, Profile::Development).is_err());
    assert!(build("https://127.0.0.1:3593", true, Profile::Development).is_err());
    assert!(build("http://127.0.0.1:3593", true, Profile::Development).is_ok());
    assert!(build("http://[::1]:3593", true, Profile::Development).is_ok());
    // TLS is the default, in every profile.
    assert!(build("https://pdp.internal:3593", false, Profile::Production).is_ok());
    assert!(build("not a uri", false, Profile::Development).is_err());
}

fn authorizer(pdp: &cerbos::Pdp) -> palisade_authz_cerbos::Authorizer {
    palisade_authz_cerbos::Authorizer::builder(plaintext_client(pdp))
        .sensitive(["export", "delete"])
        .build()
}

fn alice_principal() -> cerbos_principal::Principal {
    principal_for(
        &alice(),
        &Tenant::org("org-1"),
        &PrincipalOptions::default(),
    )
    .expect("principal")
}

mod cerbos_principal {
    pub(crate) use ::cerbos::genpb::cerbos::engine::v1::Principal;
}

#[tokio::test]
async fn the_cache_answers_repeats_coalesces_misses_and_forgets_on_invalidation() {
    let pdp = cerbos::Pdp::start(&cerbos::Transport::Plaintext).expect("pdp");
    let authz = authorizer(&pdp);
    let (p, r) = (alice_principal(), doc("org-1"));
    // Sixteen concurrent first asks: one PDP call.
    let asks = (0..16).map(|_| authz.check(&p, &r, "read", "coalesce"));
    for answer in futures_join(asks).await {
        assert!(answer.expect("decision"));
    }
    assert_eq!(authz.stats().pdp_calls, 1);
    // Repeats are hits; a deny is cached too.
    assert!(
        authz
            .check(&p, &r, "read", "again")
            .await
            .expect("decision")
    );
    assert!(
        !authz
            .check(&p, &r, "update", "deny")
            .await
            .expect("decision")
    );
    assert!(
        !authz
            .check(&p, &r, "update", "deny")
            .await
            .expect("decision")
    );
    let stats = authz.stats();
    assert_eq!((stats.pdp_calls, stats.hits), (2, 2));
    assert!(stats.hit_ratio() > 0.0);
    assert_eq!(stats.latency_us.iter().sum::<u64>(), 2);
    // Sensitive actions ask every time.
    for _ in 0..2 {
        assert!(
            !authz
                .check(&p, &r, "export", "mfa")
                .await
                .expect("decision")
        );
    }
    assert_eq!(authz.stats().pdp_calls, 4);
    // Invalidating another tenant changes nothing; this tenant, the principal, the resource
    // or everything sends the next ask to the PDP.
    authz.invalidate_tenant("org-2");
    assert!(authz.check(&p, &r, "read", "x").await.expect("decision"));
    assert_eq!(authz.stats().pdp_calls, 4);
    let mut calls = 4;
    type Invalidate = Box<dyn Fn(&palisade_authz_cerbos::Authorizer)>;
    let invalidations: Vec<Invalidate> = vec![
        Box::new(|a| a.invalidate_tenant("org-1")),
        Box::new(|a| a.invalidate_principal("https://idp/realms/r", "alice")),
        Box::new(|a| a.invalidate_resource("document", "doc-1")),
        Box::new(|a| a.invalidate_all()),
    ];
    for invalidate in invalidations {
        invalidate(&authz);
        assert!(authz.check(&p, &r, "read", "x").await.expect("decision"));
        calls += 1;
        assert_eq!(authz.stats().pdp_calls, calls);
    }
    // The batch helper: cached answers plus one call for the rest (an action named twice is
    // asked once).
    let d = authz
        .permitted(
            &p,
            &r,
            &["read", "update", "export", "delete", "update"],
            "menu",
        )
        .await
        .expect("decisions");
    assert_eq!(d.allowed_actions(), ["read"]);
    assert_eq!(authz.stats().pdp_calls, calls + 1);
}

#[tokio::test]
async fn errors_are_never_cached() {
    let mut pdp = cerbos::Pdp::start(&cerbos::Transport::Plaintext).expect("pdp");
    let authz = authorizer(&pdp);
    let (p, r) = (alice_principal(), doc("org-1"));
    pdp.stop();
    assert!(matches!(
        authz.check(&p, &r, "read", "down").await,
        Err(AuthzError::Unavailable)
    ));
    pdp.restart().expect("restart");
    let mut answer = Err(AuthzError::Unavailable);
    for _ in 0..20 {
        answer = authz.check(&p, &r, "read", "back").await;
        if answer.is_ok() {
            break;
        }
    }
    assert!(answer.expect("served again"));
}

/// Runs futures concurrently on this task.
async fn futures_join<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let handles: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = handles.iter().map(|_| None).collect();
    let mut handles: Vec<_> = handles.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, out) in handles.iter_mut().zip(outputs.iter_mut()) {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

mod layer {
    use super::*;
    use palisade_authz_cerbos::{AuthorizeLayer, Authorizer, PathPattern, Target};
    use tower::{Layer as _, ServiceExt as _};

    type Body = http_body_util::Empty<bytes::Bytes>;

    /// Documents and the org owning each (the service's data, not the request's word).
    fn owner(id: &str) -> Option<&'static str> {
        match id {
            "d1" => Some("org-1"),
            "d2" => Some("org-2"),
            _ => None,
        }
    }

    fn layer(authz: Authorizer) -> AuthorizeLayer {
        let read = PathPattern::new("/api/orgs/{org}/documents/{id}");
        let export = PathPattern::new("/api/orgs/{org}/documents/{id}/export");
        AuthorizeLayer::new(authz, move |parts: &http::request::Parts| {
            let path = parts.uri.path();
            let (c, action) = match (read.captures(path), export.captures(path)) {
                (Some(c), _) => (c, "read"),
                (_, Some(c)) => (c, "export"),
                _ => return None,
            };
            Some(Target {
                tenant: Tenant::org(&c["org"]),
                resource: Resource::new("document", &c["id"]).attr("org", owner(&c["id"])?),
                action: action.to_owned(),
            })
        })
    }

    async fn status(layer: &AuthorizeLayer, who: Option<Identity>, path: &str) -> http::StatusCode {
        let svc = layer.layer(tower::service_fn(|_req: http::Request<Body>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::new()))
        }));
        let mut req = http::Request::builder()
            .uri(path)
            .header("x-request-id", "tour-1")
            .body(Body::new())
            .expect("request");
        if let Some(who) = who {
            req.extensions_mut().insert(who);
        }
        svc.oneshot(req).await.expect("infallible").status()
    }

    #[tokio::test]
    async fn requests_are_authorized_per_tenant_and_fail_closed() {
        let mut pdp = cerbos::Pdp::start(&cerbos::Transport::Plaintext).expect("pdp");
        let authz = authorizer(&pdp);
        let layer = layer(authz);
        let mfa = alice().with_mfa(MfaLevel::MultiFactor, Some("2".into()), vec!["otp".into()]);
        use http::StatusCode as S;
        let cases = [
            (Some(alice()), "/api/orgs/org-1/documents/d1", S::OK),
            // Alice is an admin of org-2, yet org-1's document stays org-1's.
            (
                Some(mfa.clone()),
                "/api/orgs/org-2/documents/d1",
                S::FORBIDDEN,
            ),
            (Some(alice()), "/api/orgs/org-1/documents/d2", S::FORBIDDEN),
            (
                Some(alice()),
                "/api/orgs/org-1/documents/d1/export",
                S::FORBIDDEN,
            ),
            (
                Some(mfa.clone()),
                "/api/orgs/org-1/documents/d1/export",
                S::OK,
            ),
            (None, "/api/orgs/org-1/documents/d1", S::UNAUTHORIZED),
            (Some(alice()), "/api/orgs/org-1/other", S::FORBIDDEN),
            (
                Some(alice()),
                "/api/orgs/org-1/documents/unknown",
                S::FORBIDDEN,
            ),
            // No role in org-3: a deny (403), decided without the PDP, not an outage (503).
            (Some(alice()), "/api/orgs/org-3/documents/d1", S::FORBIDDEN),
        ];
        for (who, path, expected) in cases {
            assert_eq!(status(&layer, who, path).await, expected, "{path}");
        }
        // The PDP stopped: 503 (the cached read still answers; a sensitive action cannot).
        pdp.stop();
        assert_eq!(
            status(
                &layer,
                Some(mfa.clone()),
                "/api/orgs/org-1/documents/d1/export"
            )
            .await,
            S::SERVICE_UNAVAILABLE
        );
        // Back, without rebuilding the layer.
        pdp.restart().expect("restart");
        let mut last = S::SERVICE_UNAVAILABLE;
        for _ in 0..20 {
            last = status(
                &layer,
                Some(mfa.clone()),
                "/api/orgs/org-1/documents/d1/export",
            )
            .await;
            if last == S::OK {
                break;
            }
        }
        assert_eq!(last, S::OK);
    }
}
