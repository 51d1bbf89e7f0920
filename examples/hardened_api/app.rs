//! The demo's routes and its Palisade layer stack.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Extension, Path};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use http::StatusCode;
use http::{HeaderName, Method, header};
use palisade::aksk::{
    AccessKeyLayer, AccessKeys, MemoryCredentialStore, MemoryNonceStore, NewCredential, Verifier,
};
use palisade::audit::{AUDIT_SIGNING_KEY, Chain, JsonlSink};
use palisade::authn::KeySource;
use palisade::authn::local::{LocalClaims, LocalJwtIssuer};
use palisade::authn::websocket::{WebSocketAuthLayer, WsGrant, WsTickets};
use palisade::authn::{Authenticator, IssuerConfig, SurfacePolicy};
use palisade::authz_cerbos::{
    AuthorizeLayer, Authorizer, PathPattern, PdpClient, Resource, Target as AuthzTarget, Tenant,
};
use palisade::core::{
    AuthMethod, ClientIp, ClientIpLayer, Identity, KeyRing, ManualClock, Posture, Rejection,
    RejectionKind, Severity, SharedClock, Surface, TrustedProxies,
};
use palisade::csp_headers::{
    AdminHostLayer, ContentSecurityPolicy, CorsLayer, CspNonce, RequireHttpsLayer,
    SecurityHeadersBuilder,
};
use palisade::field_crypto::FieldCipher;
use palisade::impersonation::{
    AUTHORIZED_PARTY as IMPERSONATION_CLIENT, DirectoryUser, ImpersonationError,
    ImpersonationPolicy, Impersonator, RoleRule, StaticDirectory,
};
use palisade::sessions::local_login::{
    LocalLogin, LoginError, MemoryAccounts, SignUp, check_password,
};
use palisade::sessions::single_use::{Purpose, SingleUseToken, SingleUseTokens};
use palisade::sessions::{
    DeviceBinding, MemorySingleUseStore, MemoryStore, RefreshSessions, SessionError,
};
use palisade::throttle::{
    MemoryStore as ThrottleMemory, OrgPolicy, OrgSource, Quota, QuotaTable, Quotas, Rule, Scope,
    StaticPolicies, ThrottleLayer,
};
use serde_json::{Value, json};

use crate::Settings;
use palisade::{Hardening, Report};

/// Builds the app, or refuses with every posture finding at once.
pub(crate) async fn build(
    settings: &Settings,
    https_port: u16,
) -> Result<(Router, Report), Box<dyn std::error::Error>> {
    let profile = settings.profile;
    // Every layer is built under one profile; the refusal (or the report) lists every finding
    // of every layer at once.
    let mut hardening = Hardening::new(profile);
    // Test-only switches: findings that refuse production.
    let mut switches = Posture::new(profile, "hardened_api");
    if settings.test_clock {
        switches.record(
            Severity::Deny,
            "debug-switch-on",
            "PALISADE_DEMO_TEST_CLOCK is refused in production: anyone may move the clock",
        );
    }
    if settings.mail_outbox {
        switches.record(
            Severity::Deny,
            "debug-switch-on",
            "PALISADE_DEMO_MAIL_OUTBOX is refused in production: it hands out reset tokens",
        );
    }
    hardening.absorb(switches);

    // Violation reports go to this service's own /csp-reports when it knows its public name.
    // The report-only policy trials Trusted Types before enforcing them.
    let mut headers = SecurityHeadersBuilder::default().profile(profile);
    match &settings.public_host {
        Some(host) => {
            let port = if https_port == 443 {
                String::new()
            } else {
                format!(":{https_port}")
            };
            headers = headers
                .csp(ContentSecurityPolicy::strict().report_to("csp")?)
                .csp_report_only(
                    ContentSecurityPolicy::strict()
                        .require_trusted_types_for_script(true)
                        .report_to("csp")?,
                )
                .reporting_endpoint("csp", &format!("https://{host}{port}/csp-reports"))?;
        }
        None => headers = headers.csp(ContentSecurityPolicy::strict()),
    }
    let headers = hardening.check(headers.build());

    let mut https = RequireHttpsLayer::builder()
        .profile(profile)
        .https_port(https_port);
    if let Some(host) = &settings.public_host {
        https = https.canonical_host(host)?;
    }
    let https = hardening.check(https.build());

    let mut admin = AdminHostLayer::builder(&settings.admin_hostname)?.profile(profile);
    if !settings.admin_allow.is_empty() {
        admin = admin.allow_client_ips(&settings.admin_allow)?;
    }
    let admin = hardening.check(admin.build());

    // A wildcard origin is refused outright; it is listed with the other findings.
    let cors = hardening
        .step(
            CorsLayer::builder()
                .profile(profile)
                .allow_origins(&settings.cors_origins),
        )
        .and_then(|cors| {
            hardening.check(
                cors.allow_methods([Method::GET, Method::POST])
                    .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
                    .expose_headers([HeaderName::from_static("retry-after")])
                    .allow_credentials(true)
                    .build(),
            )
        });

    let proxies = TrustedProxies::new(&settings.trusted_proxies)?;
    let client_ip = hardening.check(ClientIpLayer::checked(proxies, profile));

    // Authentication: `/api/` accepts `api` tokens, `/admin/` `global-admin` tokens with MFA.
    // The demo's own settings: missing keys or log are findings like any layer's.
    let mut own = Posture::new(profile, "hardened_api");
    let ring = key_ring(
        settings.session_keys.as_deref(),
        ("PALISADE_DEMO_SESSION_KEYS", "session-keys-missing"),
        &mut own,
    )?;
    // Tests may drive time forward (development only; refused in production).
    let test_clock = settings
        .test_clock
        .then(|| ManualClock::new(std::time::SystemTime::now()));
    let clock: SharedClock = match &test_clock {
        Some(c) => c.shared(),
        None => palisade::core::SystemClock::shared(),
    };
    // The audit log: tamper-evident, every append synced before it counts.
    let audit_ring = key_ring(
        settings.audit_keys.as_deref(),
        (AUDIT_SIGNING_KEY, "audit-signing-key-missing"),
        &mut own,
    )?;
    let audit_chain = Chain::with_clock(audit_ring.clone(), clock.clone());
    let audit = match audit_log_path(settings, &mut own) {
        // A posture check never takes the log's writer lock (a running service holds it): it
        // reads and verifies the log instead.
        Some(path) if settings.posture_only => {
            if path.exists() {
                let verified = JsonlSink::records_of(&path).map(|records| {
                    palisade::audit::Verifier::new(audit_ring).verify(records, None)
                });
                let problem = match verified {
                    Ok(report) => report
                        .finding
                        .map(|f| format!("record {}: {:?}", f.line, f.kind)),
                    Err(err) => Some(err.to_string()),
                };
                if let Some(problem) = problem {
                    own.record(
                        Severity::Deny,
                        "audit-log-unusable",
                        format!("the audit log does not verify: {problem}"),
                    );
                }
            }
            DemoAudit::Missing
        }
        Some(path) => match JsonlSink::open(path, audit_chain) {
            Ok(log) => DemoAudit::Log(log),
            // For example a log signed with keys this start does not have.
            Err(err) => {
                own.record(
                    Severity::Deny,
                    "audit-log-unusable",
                    format!("the audit log cannot be continued: {err}"),
                );
                DemoAudit::Missing
            }
        },
        None => DemoAudit::Missing,
    };
    // Impersonation: admins with a fresh second factor and the `impersonator` realm role, of
    // users the directory knows, with credentials living 15 minutes, all of it audited.
    let audit_checkpoints = audit.clone();
    let impersonator = hardening.check(
        Impersonator::builder(
            // Org admins also need the `admin` role in a membership of the org (a Keycloak
            // group `/orgs/<org>/admin`), not only the org claim.
            ImpersonationPolicy::new(RoleRule::Realm("impersonator".into()))
                .mfa_acr_values(["2"])
                .require_org_admin_role("admin"),
            demo_directory(),
            audit,
            &format!(
                "https://{}/impersonation",
                settings.public_host.as_deref().unwrap_or("localhost")
            ),
        )
        .key_ring(key_ring(
            settings.impersonation_keys.as_deref(),
            (
                "PALISADE_DEMO_IMPERSONATION_KEYS",
                "impersonation-keys-missing",
            ),
            &mut own,
        )?)
        .lifetime(Duration::from_secs(900))
        .clock(clock.clone())
        .profile(profile)
        .build(),
    );
    // Local accounts get local JWTs (EdDSA, from the same ring) and refresh families.
    let local_issuer_url = format!(
        "https://{}/local",
        settings.public_host.as_deref().unwrap_or("localhost")
    );
    let local_jwt = hardening.check(
        LocalJwtIssuer::builder(&local_issuer_url)
            .profile(profile)
            .key_ring(ring.clone())
            .build(),
    );
    let mut auth = Authenticator::builder().profile(profile);
    // Impersonation credentials: the only issuer whose `act` claims are believed.
    if let Some(impersonator) = &impersonator {
        auth = auth.issuer(
            IssuerConfig::new(impersonator.issuer())?
                .key_source(KeySource::Static(impersonator.key_set()))
                .accept_actor_claims(),
        );
    }
    if let Some(local_jwt) = &local_jwt {
        auth = auth.issuer(
            IssuerConfig::new(&local_issuer_url)?
                .key_source(KeySource::Static(local_jwt.key_set())),
        );
    }
    match &settings.oidc_issuer {
        // Memberships (org and team roles) come from Keycloak group paths `/orgs/<org>/<role>`.
        Some(issuer) => {
            auth = auth.issuer(IssuerConfig::new(issuer)?.memberships_from_groups("/orgs/"))
        }
        None => tracing::warn!("PALISADE_DEMO_OIDC_ISSUER is not set: every token is refused"),
    }
    let auth = hardening.check(auth.build().await);
    let api_policy = SurfacePolicy::new(Surface::API)
        .audiences(["api"])
        .authorized_parties(
            settings
                .api_clients
                .iter()
                .map(String::as_str)
                .chain([LOCAL_CLIENT, IMPERSONATION_CLIENT]),
        );
    let surfaces = auth.as_ref().map(|auth| {
        let api = hardening.check(auth.layer(api_policy.clone()));
        let admin = hardening.check(
            auth.layer(
                SurfacePolicy::new(Surface::GLOBAL_ADMIN)
                    .audiences(["global-admin"])
                    .authorized_parties(&settings.admin_clients)
                    .require_mfa(true),
            ),
        );
        let org_admin = hardening.check(
            auth.layer(
                SurfacePolicy::new(Surface::ORG_ADMIN)
                    .audiences(["org-admin"])
                    .authorized_parties(&settings.org_admin_clients)
                    .require_mfa(true),
            ),
        );
        // WebSockets: a bearer token in Sec-WebSocket-Protocol, or a single-use ticket minted
        // by an authenticated call; never a token in the URL.
        let ws = hardening.check(WebSocketAuthLayer::checked(
            auth.clone(),
            api_policy.clone(),
            ["chat.v1"],
        ));
        (api, admin, org_admin, ws)
    });

    // Access-key secrets are sealed at rest with FIELD_ENCRYPTION_KEYS; a throwaway key is
    // accepted in development only.
    let cipher = match &settings.field_keys {
        Some(text) => Some(FieldCipher::new(
            key_ring(
                Some(text),
                (
                    palisade::field_crypto::FIELD_ENCRYPTION_KEYS,
                    "key-ring-invalid",
                ),
                &mut own,
            )?,
            palisade::core::SystemClock::shared(),
        )),
        None => hardening.check(FieldCipher::ephemeral_for_development(
            profile,
            palisade::core::SystemClock::shared(),
        )),
    };

    // Uploads under /api/streams/ may come as signed aws-chunked streams, verified chunk by
    // chunk before the handler sees a byte.
    let mut verifier = Verifier::builder(AKSK_SERVICE, AKSK_REGION)
        .profile(profile)
        .allow_streaming_payload_on("/api/streams/");
    if let Some(host) = &settings.public_host {
        // Requests signed for another deployment (or another host) are refused here.
        verifier = verifier.allowed_hosts([host.clone(), format!("{host}:{https_port}")]);
    }
    let verifier = cipher
        .clone()
        .and_then(|cipher| hardening.check(verifier.build(cipher, clock.clone())));
    // Throttling, after authentication: per user and per org on the tenant routes (the org
    // named in the path, an `x-org-id` header or an `org` query parameter must be the token's),
    // per client address for anonymous callers. Two tiers: org-2 is "premium" and flagged
    // unlimited.
    let throttle = hardening.check(
        ThrottleLayer::builder(ThrottleMemory::new())
            .rule(Rule::new("anon", Scope::Anonymous))
            .rule(Rule::new("user", Scope::User))
            .rule(Rule::new("org", Scope::Org))
            .quotas(Quotas::new(
                QuotaTable::new()
                    .rule("anon", Quota::per_minute(5)?)
                    .rule("user", Quota::per_minute(8)?)
                    .rule("org", Quota::per_minute(12)?)
                    .tier("org", "premium", Quota::per_minute(600)?),
            ))
            .policies(StaticPolicies::new().with("org-2", OrgPolicy::tier("premium").unlimited()))
            .org_from(OrgSource::path_segment_after("/api/orgs/"))
            .org_from(OrgSource::header(HeaderName::from_static("x-org-id")))
            .org_from(OrgSource::query("org"))
            .headers_on_success(true)
            .build_for(profile),
    );
    // The Cerbos PDP client (documents): TLS verified; plaintext is a finding.
    let pdp = match &settings.cerbos_url {
        Some(url) => {
            let mut pdp = PdpClient::builder(url.clone()).profile(profile);
            if let Some(ca) = &settings.cerbos_ca {
                pdp = pdp.ca_certificate_pem(std::fs::read(ca)?);
            }
            if url.starts_with("http://") {
                pdp = pdp.insecure_plaintext_loopback();
            }
            Some(hardening.check(pdp.build()))
        }
        None => None,
    };
    hardening.absorb(own);
    hardening.absorb(palisade::sessions::local_login::posture(
        settings.local_auth_enabled,
        profile,
    ));
    // In production, any blocking finding refuses the start with the whole report.
    let report = hardening.finish()?;
    for finding in report.findings() {
        tracing::warn!(target: "hardened_api::posture", id = finding.id(), "{finding}");
    }
    // Passing `finish` means every check above gave its layer.
    let (
        Some(headers),
        Some(https),
        Some(admin),
        Some(cors),
        Some(client_ip),
        Some((Some(api_auth), Some(admin_auth), Some(org_admin_auth), Some(ws_auth))),
        Some(verifier),
        Some(throttle),
        Some(local_jwt),
        Some(impersonator),
    ) = (
        headers,
        https,
        admin,
        cors,
        client_ip,
        surfaces,
        verifier,
        throttle,
        local_jwt,
        impersonator,
    )
    else {
        return Err("a layer was not built".into());
    };
    let impersonator = Arc::new(impersonator);
    // Ends of expired impersonations are recorded within seconds.
    let sweeper = Arc::clone(&impersonator);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(2));
        loop {
            every.tick().await;
            if let Err(err) = sweeper.sweep().await {
                tracing::error!(%err, "impersonation ends not recorded yet");
            }
        }
    });

    // WebSocket tickets live 30 s.
    let tickets = WsTickets::new(Duration::from_secs(30));
    let ws_auth = ws_auth
        .with_tickets(tickets.clone())
        .limits(Duration::from_secs(3600), Duration::from_secs(60));
    // Refresh-token sessions (in memory): /api/session starts one for the caller, /auth/refresh
    // rotates, /auth/logout revokes.
    let sessions =
        Arc::new(RefreshSessions::new(MemoryStore::new(), ring.clone()).with_clock(clock.clone()));
    // Local access tokens stop working within 30 s of their family's revocation.
    let api_auth =
        api_auth.with_revocation(&local_issuer_url, sessions.clone(), Duration::from_secs(30));
    let tokens =
        Arc::new(SingleUseTokens::new(MemorySingleUseStore::new(), ring).with_clock(clock.clone()));
    let local = Arc::new(LocalAuth {
        login: LocalLogin::new(
            settings.local_auth_enabled,
            MemoryAccounts::new(),
            sessions.clone(),
            tokens.clone(),
            clock.clone(),
        )
        .map_err(|e| format!("local login: {e}"))?,
        tokens,
        jwt: local_jwt,
        outbox: settings.mail_outbox,
    });
    // Access keys: SigV4-signed requests to /api/ are verified by the access-key layer (the
    // bearer-token layer never sees them); admins manage keys under /admin/access-keys.
    let cipher = cipher.ok_or("field encryption is not configured")?;
    let access_keys = AccessKeys::new(MemoryCredentialStore::new(), cipher.clone(), clock.clone());
    let signed_api = Router::new()
        .route("/api/hello", get(hello))
        .route("/api/echo", post(echo))
        .route("/api/streams/{name}", axum::routing::put(stream_upload))
        .route_layer(AccessKeyLayer::new(
            verifier,
            access_keys.shared_store(),
            MemoryNonceStore::new(),
        ));
    // Documents are authorized through Cerbos (policies/document.yaml): the principal carries
    // only the memberships of the org in the path, the document's owning org comes from the
    // store, export is MFA-gated and never cached. Without a PDP the routes fail closed.
    let documents = match pdp {
        Some(Some(pdp)) => {
            let authorizer = Authorizer::builder(pdp)
                .sensitive(["export", "delete"])
                .build();
            let read = PathPattern::new("/api/orgs/{org}/documents/{id}");
            let export = PathPattern::new("/api/orgs/{org}/documents/{id}/export");
            let authorize = AuthorizeLayer::new(authorizer, move |parts: &http::request::Parts| {
                let path = parts.uri.path();
                let (c, action) = match (read.captures(path), export.captures(path)) {
                    (Some(c), _) if parts.method == Method::GET => (c, "read"),
                    (_, Some(c)) if parts.method == Method::POST => (c, "export"),
                    _ => return None,
                };
                let owner = document_owner(&c["id"])?;
                Some(AuthzTarget {
                    tenant: Tenant::org(&c["org"]),
                    resource: Resource::new("document", &c["id"]).attr("org", owner),
                    action: action.to_owned(),
                })
            });
            Router::new()
                .route("/api/orgs/{org}/documents/{id}", get(document_read))
                .route(
                    "/api/orgs/{org}/documents/{id}/export",
                    post(document_export),
                )
                .route_layer(authorize)
        }
        Some(None) => return Err("the PDP client was not built".into()),
        None => {
            tracing::warn!("PALISADE_DEMO_CERBOS_URL is not set: document routes answer 503");
            let closed = || async { StatusCode::SERVICE_UNAVAILABLE };
            Router::new()
                .route("/api/orgs/{org}/documents/{id}", get(closed))
                .route("/api/orgs/{org}/documents/{id}/export", post(closed))
        }
    };
    let api = Router::new()
        .merge(documents)
        .route("/api/hello", get(hello))
        .route("/api/echo", post(echo))
        .route(
            "/api/orgs/{org}/usage",
            get(org_usage).route_layer(throttle.clone()),
        )
        .route("/api/ws-ticket", post(ws_ticket))
        .route("/api/session", post(start_session))
        .route("/api/impersonation/end", post(end_own_impersonation))
        // Requests made while impersonating are audited before they run (after
        // authentication, before authorization).
        .route_layer(impersonator.audit_layer())
        .route_layer(api_auth)
        .route(
            "/api/ws",
            get(ws_upgrade)
                .route_layer(impersonator.audit_layer())
                .route_layer(ws_auth),
        )
        .layer(Extension(tickets));
    let auth_routes = Router::new()
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
        .route("/auth/signup", post(signup))
        .route("/auth/verify", post(verify_email))
        .route("/auth/login", post(local_login))
        .route("/auth/reset/request", post(reset_request))
        .route("/auth/reset/confirm", post(reset_confirm))
        .layer(Extension(local));
    let api = api
        .merge(auth_routes)
        .layer(Extension(sessions))
        .layer(Extension(Arc::clone(&impersonator)));
    let admin_routes = Router::new()
        .route("/admin/", get(admin_home))
        .route("/admin/status", get(admin_status))
        .route("/admin/users/{id}", get(admin_user))
        .route(
            "/admin/orgs/{org}/access-keys",
            post(issue_access_key).get(list_access_keys),
        )
        .route("/admin/access-keys/{id}/disable", post(disable_access_key))
        .route("/admin/impersonation", post(start_impersonation))
        .route("/admin/impersonation/{id}/end", post(end_impersonation))
        .route("/admin/orgs/{org}/users", get(org_users))
        .route("/admin/audit/checkpoint", post(audit_checkpoint))
        .route_layer(admin_auth)
        .layer(Extension(audit_checkpoints))
        .layer(Extension(access_keys));
    // Org admins (audience `org-admin`) act in their own org only.
    let org_admin_routes = Router::new()
        .route(
            "/admin/orgs/{org}/impersonation",
            post(start_org_impersonation),
        )
        .route(
            "/admin/orgs/{org}/impersonation/{id}/end",
            post(end_org_impersonation),
        )
        .route_layer(org_admin_auth);
    let admin_routes = admin_routes
        .merge(org_admin_routes)
        .layer(Extension(impersonator));

    let router = Router::new()
        .route("/", get(index))
        .route("/healthz", get(|| async { "ok" }))
        .route("/public/status", get(public_status).route_layer(throttle))
        .route(
            "/csp-reports",
            post(csp_report).layer(DefaultBodyLimit::max(MAX_REPORT_BYTES)),
        )
        .merge(api)
        .merge(admin_routes)
        .merge(match test_clock {
            Some(c) => Router::new().route(
                "/demo/clock/advance",
                post(move |Json(body): Json<Value>| {
                    let c = c.clone();
                    async move {
                        // Forward only, at most a day at a time.
                        let secs = body["seconds"].as_u64().unwrap_or(0).min(86_400);
                        c.advance(Duration::from_secs(secs));
                        StatusCode::NO_CONTENT
                    }
                }),
            ),
            None => Router::new(),
        })
        .layer(axum::middleware::from_fn_with_state(
            signed_api,
            route_signed_requests,
        ))
        .layer(cors)
        .layer(admin)
        .layer(https)
        .layer(headers)
        .layer(client_ip);
    Ok((router, report))
}

async fn index(Extension(nonce): Extension<CspNonce>) -> impl IntoResponse {
    Html(format!(
        r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Palisade demo</title>
<style nonce="{nonce}">body {{ font-family: sans-serif; margin: 2rem; }}</style></head>
<body>
<h1>Palisade demo</h1>
<p id="status">This script runs only because it carries this response's CSP nonce.</p>
<script nonce="{nonce}">document.getElementById("status").dataset.ran = "yes";</script>
</body>
</html>
"#
    ))
}

/// Largest CSP report body accepted.
const MAX_REPORT_BYTES: usize = 64 * 1024;

/// Receives Reporting API batches (`application/reports+json`): counts and logs them; the
/// body is attacker-controlled, so only its size and report count are logged.
async fn csp_report(body: Bytes) -> StatusCode {
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(reports)) => {
            tracing::info!(target: "hardened_api::csp", reports = reports.len(), bytes = body.len(), "CSP violation reports received");
            StatusCode::NO_CONTENT
        }
        _ => StatusCode::BAD_REQUEST,
    }
}

async fn hello(Extension(id): Extension<Identity>) -> Json<Value> {
    Json(json!({
        "hello": id.subject(),
        "org": id.org(),
        "surface": id.surface().as_str(),
        "roles": id.realm_roles(),
    }))
}

/// A tenant route: throttled per user and per org of the verified token.
async fn org_usage(Path(org): Path<String>, Extension(id): Extension<Identity>) -> Json<Value> {
    Json(json!({ "org": org, "caller": id.subject() }))
}

/// The demo's documents and the org owning each (the store's word, not the request's).
fn document_owner(id: &str) -> Option<&'static str> {
    match id {
        "d1" => Some("org-1"),
        "d2" => Some("org-2"),
        _ => None,
    }
}

/// A document, once the policy allowed reading it.
async fn document_read(Path((org, id)): Path<(String, String)>) -> Json<Value> {
    Json(json!({ "id": id, "org": org, "owner": document_owner(&id) }))
}

/// An export, once the policy allowed it (multi-factor callers only).
async fn document_export(Path((_org, id)): Path<(String, String)>) -> Json<Value> {
    Json(json!({ "id": id, "exported": true }))
}

/// A public route: throttled per client address.
async fn public_status() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn echo(Json(body): Json<Value>) -> Json<Value> {
    Json(json!({ "echo": body }))
}

/// A verified upload: the decoded bytes (the access-key layer checked every chunk).
async fn stream_upload(Path(name): Path<String>, body: axum::body::Bytes) -> Json<Value> {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(&body);
    let sha256: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Json(json!({ "name": name, "bytes": body.len(), "sha256": sha256 }))
}

/// The credential scope of the demo's access keys.
const AKSK_SERVICE: &str = "palisade-demo";
const AKSK_REGION: &str = "local";

type Keys = AccessKeys<MemoryCredentialStore>;

/// Sends SigV4-signed `/api/` requests to the access-key stack; everything else goes on to
/// the bearer-token stack.
async fn route_signed_requests(
    axum::extract::State(signed): axum::extract::State<Router>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let signed_api = palisade::aksk::server::claims_sigv4(request.headers())
        && request.uri().path().starts_with("/api/");
    if signed_api {
        use tower::ServiceExt as _;
        match signed.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    } else {
        next.run(request).await
    }
}

/// Issues an access key for an org; the secret is in this answer and nowhere else.
async fn issue_access_key(
    Extension(keys): Extension<Keys>,
    Path(org): Path<String>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let text = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
    let list = |k: &str| -> Vec<String> {
        body[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let issued = keys
        .issue(NewCredential {
            org,
            subject: text("subject"),
            roles: list("roles"),
            scopes: list("scopes"),
            description: text("description"),
            lifetime: None,
        })
        .await;
    match issued {
        Ok(issued) => {
            use secrecy::ExposeSecret as _;
            (
                StatusCode::CREATED,
                [(header::CACHE_CONTROL, "no-store")],
                Json(json!({
                    "key_id": issued.key_id,
                    "secret": issued.secret.expose_secret(),
                    "service": AKSK_SERVICE,
                    "region": AKSK_REGION,
                    "note": "the secret is shown once; the service keeps it sealed",
                })),
            )
                .into_response()
        }
        Err(palisade::aksk::CredentialError::Invalid(field)) => {
            (StatusCode::BAD_REQUEST, Json(json!({ "error": field }))).into_response()
        }
        Err(err) => {
            tracing::error!(error = %err, "access key issue failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// Lists an org's keys: metadata only.
async fn list_access_keys(
    Extension(keys): Extension<Keys>,
    Path(org): Path<String>,
) -> axum::response::Response {
    match keys.list(&org).await {
        Ok(list) => Json(Value::Array(
            list.into_iter()
                .map(|m| {
                    json!({
                        "key_id": m.key_id,
                        "subject": m.subject,
                        "status": m.status.as_str(),
                        "roles": m.roles,
                        "scopes": m.scopes,
                        "created_at": m.created_at,
                        "secret_versions": m.secret_versions.iter().map(|(v, _)| v).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        ))
        .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "access key list failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// Disables a key: its requests are refused from the next one on.
async fn disable_access_key(
    Extension(keys): Extension<Keys>,
    Path(id): Path<String>,
) -> StatusCode {
    match keys.disable(&id).await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(palisade::aksk::CredentialError::UnknownKey) => StatusCode::NOT_FOUND,
        Err(err) => {
            tracing::error!(error = %err, "access key disable failed");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

async fn admin_home() -> Json<Value> {
    Json(json!({ "admin": true }))
}

type Sessions = Arc<RefreshSessions<MemoryStore>>;

/// The `azp` of local access tokens.
const LOCAL_CLIENT: &str = "palisade-local";

/// Local accounts: login, verification and reset tokens, local JWTs.
struct LocalAuth {
    login: LocalLogin<MemoryStore, MemorySingleUseStore>,
    tokens: Arc<SingleUseTokens<MemorySingleUseStore>>,
    jwt: LocalJwtIssuer,
    /// Stand-in for email in the demo: answers carry the mail they would have sent.
    outbox: bool,
}

type Local = Arc<LocalAuth>;

fn login_error(err: LoginError) -> axum::response::Response {
    let (kind, status) = match &err {
        LoginError::Disabled => (RejectionKind::NotFound, None),
        LoginError::TooManyAttempts => (RejectionKind::TooManyRequests, None),
        LoginError::Unavailable => (RejectionKind::Unavailable, None),
        LoginError::Password(_) => (
            RejectionKind::Forbidden,
            Some(StatusCode::UNPROCESSABLE_ENTITY),
        ),
        _ => (RejectionKind::Unauthenticated, None),
    };
    match status {
        // Policy answers are for the person choosing a password: say which rule.
        Some(code) => (code, Json(json!({ "error": err.to_string() }))).into_response(),
        None => Rejection::new(kind, err)
            .into_response::<axum::body::Body>()
            .into_response(),
    }
}

fn mail(local: &LocalAuth, token: &SingleUseToken) -> Value {
    if local.outbox {
        json!({ "mail": { "token": token.expose() } })
    } else {
        json!({})
    }
}

async fn signup(
    Extension(local): Extension<Local>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let (Some(email), Some(password)) = (body["email"].as_str(), body["password"].as_str()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match local.login.sign_up(email, password).await {
        // The same answer whether the address was free or taken: only its owner's mailbox
        // learns which.
        // (Production would queue the verification mail or the notice to the owner here.)
        Ok(SignUp::Created(token)) => {
            (StatusCode::ACCEPTED, Json(mail(&local, &token))).into_response()
        }
        Ok(_) => (StatusCode::ACCEPTED, Json(json!({}))).into_response(),
        Err(e) => login_error(e),
    }
}

async fn verify_email(
    Extension(local): Extension<Local>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    match local
        .login
        .verify_email(body["token"].as_str().unwrap_or(""))
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => login_error(e),
    }
}

async fn local_login(
    Extension(local): Extension<Local>,
    client: Option<Extension<ClientIp>>,
    headers: http::HeaderMap,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let (Some(email), Some(password), Some(device), Some(Extension(ClientIp(ip)))) = (
        body["email"].as_str(),
        body["password"].as_str(),
        device(&headers),
        client,
    ) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match local.login.login(email, password, ip, &device).await {
        Ok(done) => {
            let claims = LocalClaims::new(&done.user_id, ["api"])
                .authorized_party(LOCAL_CLIENT)
                .session_id(done.family.as_str())
                .amr(["pwd"]);
            match local.jwt.issue(&claims) {
                Ok(access) => Json(json!({
                    "access_token": access,
                    "refresh_token": done.refresh_token.expose(),
                    "family": done.family.as_str(),
                }))
                .into_response(),
                Err(_) => login_error(LoginError::Unavailable),
            }
        }
        Err(e) => login_error(e),
    }
}

async fn reset_request(
    Extension(local): Extension<Local>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    // Same answer whether the account exists or not; the mail goes only to real accounts (in
    // the demo, the outbox shows it).
    let email = body["email"].as_str().unwrap_or("").trim().to_lowercase();
    let token = if matches!(local.login.stored_hash(&email).await, Ok(Some(_))) {
        local
            .tokens
            .issue(&Purpose::password_reset(), &email)
            .await
            .ok()
    } else {
        None
    };
    let body = match &token {
        Some(t) => mail(&local, t),
        None => json!({}),
    };
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

async fn reset_confirm(
    Extension(local): Extension<Local>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let (Some(token), Some(password)) = (body["token"].as_str(), body["password"].as_str()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    // A refused password must not burn the link: check the policy before consuming the token.
    // (The account's address is only known after consuming; `set_password` checks it again.)
    if let Err(e) = check_password(password, "") {
        return login_error(LoginError::Password(e));
    }
    match local
        .tokens
        .consume(&Purpose::password_reset(), token)
        .await
    {
        Ok(email) => match local.login.set_password(&email, password).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            // Refused for containing the address (known only now): the link is spent, so a
            // fresh one goes to the mailbox.
            Err(LoginError::Password(e)) => {
                let fresh = match local.tokens.issue(&Purpose::password_reset(), &email).await {
                    Ok(token) => Some(token),
                    Err(err) => {
                        tracing::error!(%err, "could not re-issue a reset link");
                        None
                    }
                };
                let mut body = fresh
                    .as_ref()
                    .map_or_else(|| json!({}), |t| mail(&local, t));
                body["error"] = json!(LoginError::Password(e).to_string());
                (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
            }
            Err(e) => login_error(e),
        },
        Err(e) => login_error(LoginError::Token(e)),
    }
}

/// The device a refresh comes from: `X-Device-Id` plus the User-Agent as metadata.
fn device(headers: &http::HeaderMap) -> Option<DeviceBinding> {
    let id = headers
        .get("x-device-id")?
        .to_str()
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 128)?;
    let ua = headers
        .get(header::USER_AGENT)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    Some(DeviceBinding::new(id, ua))
}

fn session_error(err: SessionError) -> axum::response::Response {
    let kind = if err == SessionError::Unavailable {
        RejectionKind::Unavailable
    } else {
        RejectionKind::Unauthenticated
    };
    Rejection::new(kind, err)
        .into_response::<axum::body::Body>()
        .into_response()
}

/// Starts a refresh family for the authenticated caller on this device.
async fn start_session(
    Extension(identity): Extension<Identity>,
    Extension(sessions): Extension<Sessions>,
    headers: http::HeaderMap,
) -> axum::response::Response {
    let Some(device) = device(&headers) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    // An impersonation must not outlive its credential through a refresh family.
    if matches!(identity.method(), AuthMethod::Impersonation { .. }) {
        return StatusCode::FORBIDDEN.into_response();
    }
    match sessions.start(identity.subject(), &device).await {
        Ok((family, token)) => {
            Json(json!({ "family": family.as_str(), "refresh_token": token.expose() }))
                .into_response()
        }
        Err(e) => session_error(e),
    }
}

/// Rotates a refresh token: the presented one is spent, its successor returned.
async fn refresh(
    Extension(sessions): Extension<Sessions>,
    headers: http::HeaderMap,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let (Some(device), Some(token)) = (device(&headers), body["refresh_token"].as_str()) else {
        return session_error(SessionError::InvalidToken);
    };
    match sessions.refresh(token, &device).await {
        Ok(next) => {
            Json(json!({ "family": next.family.as_str(), "refresh_token": next.token.expose() }))
                .into_response()
        }
        Err(e) => session_error(e),
    }
}

/// Revokes the family of a refresh token.
async fn logout(
    Extension(sessions): Extension<Sessions>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let Some(token) = body["refresh_token"].as_str() else {
        return session_error(SessionError::InvalidToken);
    };
    match sessions.logout(token).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => session_error(e),
    }
}

/// Mints a single-use WebSocket ticket for the caller, bound to the page's Origin.
async fn ws_ticket(
    Extension(identity): Extension<Identity>,
    Extension(tickets): Extension<WsTickets>,
    headers: http::HeaderMap,
) -> Result<Json<Value>, StatusCode> {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .ok_or(StatusCode::BAD_REQUEST)?;
    let ticket = tickets
        .mint(&identity, origin)
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok(Json(json!({ "ticket": ticket, "expires_in": 30 })))
}

/// An echo socket that closes at the grant's deadline or after its idle limit.
async fn ws_upgrade(
    ws: WebSocketUpgrade,
    Extension(grant): Extension<WsGrant>,
    Extension(identity): Extension<Identity>,
) -> axum::response::Response {
    // A socket would outlive the end of an impersonation, its messages unaudited: refused.
    if matches!(identity.method(), AuthMethod::Impersonation { .. }) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let ws = match &grant.protocol {
        Some(p) => ws.protocols([p.clone()]),
        None => ws,
    };
    ws.on_upgrade(move |mut socket| async move {
        loop {
            let left = grant
                .deadline
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left.min(grant.idle_limit), socket.recv()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    if socket.send(Message::Text(text)).await.is_err() {
                        break;
                    }
                }
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => break,
                Ok(Some(Ok(_))) => {}
            }
        }
        let _ = socket.send(Message::Close(None)).await;
    })
}

async fn admin_user(Path(id): Path<String>) -> Json<Value> {
    Json(json!({ "admin": true, "user": id }))
}

async fn admin_status() -> Json<Value> {
    Json(json!({ "admin": true, "status": "ok" }))
}

/// A key ring from its setting; without one (or with one that does not parse), a throwaway
/// ring and a blocking finding (the build is refused in production, and warned about in
/// development).
fn key_ring(
    text: Option<&str>,
    (name, code): (&str, &'static str),
    posture: &mut Posture,
) -> Result<KeyRing, Box<dyn std::error::Error>> {
    // A ring that does not parse (a short key, bad base64) is a finding too, listed with the
    // others; the error names the key, never its material.
    let refused = match text.map(KeyRing::parse) {
        Some(Ok(ring)) => return Ok(ring),
        Some(Err(err)) => ("key-ring-invalid", format!("{name}: {err}")),
        None => (
            code,
            format!("{name} is not set: a throwaway key is generated"),
        ),
    };
    posture.record(Severity::Deny, refused.0, refused.1);
    let mut material = [0u8; 32];
    aws_lc_rs::rand::fill(&mut material).map_err(|_| "no randomness")?;
    use base64::Engine as _;
    Ok(KeyRing::parse(&format!(
        "dev 1 {}",
        base64::engine::general_purpose::STANDARD.encode(material)
    ))?)
}

/// Where the audit log goes: the setting, or (development only) a file in the temp directory.
/// Without the setting, a blocking finding.
fn audit_log_path(settings: &Settings, posture: &mut Posture) -> Option<std::path::PathBuf> {
    if let Some(path) = &settings.audit_log {
        return Some(path.into());
    }
    posture.record(
        Severity::Deny,
        "audit-log-missing",
        "PALISADE_DEMO_AUDIT_LOG is not set: the audit log goes to the temp directory",
    );
    // Refused in production: no file is made for a service that will not start.
    (!settings.profile.is_production()).then(|| {
        std::env::temp_dir().join(format!("palisade-demo-audit-{}.jsonl", std::process::id()))
    })
}

/// The audit sink: the log, or (a refused production configuration only) none, which fails
/// every write. Clones share the log.
#[derive(Clone, Debug)]
enum DemoAudit {
    Log(JsonlSink),
    Missing,
}

impl palisade::audit::AuditSink for DemoAudit {
    async fn append(
        &self,
        event: palisade::audit::Event,
    ) -> Result<palisade::audit::Record, palisade::audit::AuditError> {
        match self {
            Self::Log(log) => log.append(event).await,
            Self::Missing => Err(palisade::audit::AuditError::Event("no audit log")),
        }
    }

    async fn checkpoint(&self) -> Result<palisade::audit::Checkpoint, palisade::audit::AuditError> {
        match self {
            Self::Log(log) => log.checkpoint().await,
            Self::Missing => Err(palisade::audit::AuditError::Event("no audit log")),
        }
    }
}

/// The demo's users (a real service asks its user store).
fn demo_directory() -> StaticDirectory {
    let user = |id: &str, org: &str, is_admin: bool| DirectoryUser {
        id: id.to_owned(),
        org: org.to_owned(),
        roles: vec!["member".to_owned()],
        is_admin,
    };
    StaticDirectory::new()
        .with(user("alice", "org-1", false))
        .with(user("carol", "org-1", true))
        .with(user("bob", "org-2", false))
}

type Imp = Arc<Impersonator<StaticDirectory, DemoAudit>>;

/// The caller's request id (`x-request-id`, if short), for the audit record.
fn request_id(headers: &http::HeaderMap) -> &str {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .unwrap_or("")
}

/// Refusals answer one generic message per status; the audit record and the log name the
/// reason.
fn impersonation_error(err: ImpersonationError) -> axum::response::Response {
    let kind = match &err {
        ImpersonationError::Unavailable(_) | ImpersonationError::Issue(_) => {
            RejectionKind::Unavailable
        }
        ImpersonationError::NotActive => RejectionKind::NotFound,
        _ => RejectionKind::Forbidden,
    };
    Rejection::new(kind, err)
        .into_response::<axum::body::Body>()
        .into_response()
}

async fn impersonate(
    impersonator: &Imp,
    admin: &Identity,
    org: &str,
    user: &str,
    headers: &http::HeaderMap,
) -> axum::response::Response {
    match impersonator
        .start(admin, org, user, request_id(headers))
        .await
    {
        Ok(grant) => {
            use secrecy::ExposeSecret as _;
            let expires_at = grant
                .expires_at
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            (
                StatusCode::CREATED,
                [(header::CACHE_CONTROL, "no-store")],
                Json(json!({
                    "impersonation": grant.id,
                    "user": grant.user,
                    "access_token": grant.token.expose_secret(),
                    "expires_at": expires_at,
                })),
            )
                .into_response()
        }
        Err(err) => impersonation_error(err),
    }
}

/// A global admin starts impersonating `user` of `org`.
async fn start_impersonation(
    Extension(impersonator): Extension<Imp>,
    Extension(admin): Extension<Identity>,
    headers: http::HeaderMap,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let (Some(org), Some(user)) = (body["org"].as_str(), body["user"].as_str()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    impersonate(&impersonator, &admin, org, user, &headers).await
}

/// An org admin starts impersonating `user` of the org in the path (its own only).
async fn start_org_impersonation(
    Extension(impersonator): Extension<Imp>,
    Extension(admin): Extension<Identity>,
    Path(org): Path<String>,
    headers: http::HeaderMap,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let Some(user) = body["user"].as_str() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    impersonate(&impersonator, &admin, &org, user, &headers).await
}

async fn end(
    impersonator: &Imp,
    caller: &Identity,
    id: &str,
    headers: &http::HeaderMap,
) -> axum::response::Response {
    match impersonator.end(caller, id, request_id(headers)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => impersonation_error(err),
    }
}

/// The admin who started an impersonation ends it.
async fn end_impersonation(
    Extension(impersonator): Extension<Imp>,
    Extension(admin): Extension<Identity>,
    Path(id): Path<String>,
    headers: http::HeaderMap,
) -> axum::response::Response {
    end(&impersonator, &admin, &id, &headers).await
}

/// The org admin who started an impersonation ends it.
async fn end_org_impersonation(
    Extension(impersonator): Extension<Imp>,
    Extension(admin): Extension<Identity>,
    Path((_org, id)): Path<(String, String)>,
    headers: http::HeaderMap,
) -> axum::response::Response {
    end(&impersonator, &admin, &id, &headers).await
}

/// The impersonation credential ends its own impersonation.
async fn end_own_impersonation(
    Extension(impersonator): Extension<Imp>,
    Extension(caller): Extension<Identity>,
    headers: http::HeaderMap,
) -> axum::response::Response {
    let Some(id) = caller.session_id().map(str::to_owned) else {
        return impersonation_error(ImpersonationError::NotActive);
    };
    end(&impersonator, &caller, &id, &headers).await
}

/// A signed checkpoint of the audit log's head, for the caller to keep elsewhere: a later
/// `palisade-audit verify --checkpoint` finds records cut from the end.
async fn audit_checkpoint(Extension(audit): Extension<DemoAudit>) -> axum::response::Response {
    use palisade::audit::AuditSink as _;
    match audit.checkpoint().await {
        Ok(checkpoint) => (
            [(header::CACHE_CONTROL, "no-store")],
            Json(json!(checkpoint)),
        )
            .into_response(),
        Err(err) => {
            tracing::error!(%err, "audit checkpoint failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// The users of an org (the directory; impersonation never adds one).
async fn org_users(Path(org): Path<String>) -> Json<Value> {
    let users: Vec<_> = demo_directory()
        .users(&org)
        .into_iter()
        .map(|u| json!({ "id": u.id, "admin": u.is_admin }))
        .collect();
    Json(json!({ "org": org, "users": users }))
}
