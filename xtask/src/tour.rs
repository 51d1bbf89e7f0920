//! The attack tour: a scripted client that sends good and hostile requests to the running
//! demo and checks each answer. Every Palisade capability adds its rows here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, Method, Response, StatusCode, header};

use crate::harness::{ADMIN_HOST, ALLOWED_ORIGIN, PUBLIC_HOST};

/// Where the demo listens and which CA signed its certificate.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) https: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) ca_pem: String,
    /// Access tokens from the test OpenID provider, by persona.
    pub(crate) tokens: Tokens,
    /// The Cerbos PDP the demo asks (the tour stops it once, to show a 503), if any.
    pub(crate) pdp: Option<std::sync::Arc<std::sync::Mutex<crate::cerbos::Pdp>>>,
    /// The demo's audit log (the tour reads it, and verifies it with `palisade-audit`), if any.
    pub(crate) audit: Option<crate::harness::AuditLog>,
    /// The demo's Prometheus scrape endpoint (loopback), if any.
    pub(crate) metrics: Option<SocketAddr>,
}

/// Access tokens by persona (client id at the test OpenID provider).
pub(crate) type Tokens = std::collections::HashMap<String, String>;

/// The personas the tour needs tokens for.
pub(crate) const PERSONAS: [&str; 10] = [
    "api-user",
    "api-user-es",
    "api-user-ed",
    "no-aud",
    "admin-mfa",
    "admin-no-mfa",
    "org-admin",
    "other-tenant",
    "docs-user",
    "docs-user-mfa",
];

impl Target {
    fn bearer(&self, persona: &str) -> String {
        format!(
            "Bearer {}",
            self.tokens.get(persona).map_or("missing", String::as_str)
        )
    }
}

/// Secrets the tour was handed (tokens, access-key secrets, passwords): a test checks that
/// none of them appears in the demo's logs.
static SECRETS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Notes `secret` as one the demo must never log; answers it.
pub(crate) fn remember(secret: &str) -> String {
    if !secret.is_empty() {
        SECRETS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(secret.to_owned());
    }
    secret.to_owned()
}

/// Every secret noted so far.
pub(crate) fn secrets_seen() -> Vec<String> {
    SECRETS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// One line of the tour's table.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub(crate) attack: String,
    pub(crate) expected: String,
    pub(crate) got: String,
    pub(crate) pass: bool,
}

impl Row {
    pub(crate) fn new(attack: &str, expected: &str, got: impl Into<String>, pass: bool) -> Self {
        Self {
            attack: attack.to_owned(),
            expected: expected.to_owned(),
            got: got.into(),
            pass,
        }
    }
}

pub(crate) fn client(target: &Target) -> Result<Client, String> {
    client_with_alpn(target, b"http/1.1")
}

/// A client speaking HTTP/2, for rows where the server answers before reading a whole upload
/// (HTTP/1.1 would close the connection mid-upload and the client would see a reset).
pub(crate) fn client_h2(target: &Target) -> Result<Client, String> {
    client_with_alpn(target, b"h2")
}

fn client_with_alpn(target: &Target, alpn: &[u8]) -> Result<Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(target.ca_pem.as_bytes()) {
        let cert: rustls_pki_types::CertificateDer<'static> = cert.map_err(|e| e.to_string())?;
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // HTTP/1.1 by default, so that hostile Host headers reach the server as sent.
    tls.alpn_protocols = vec![alpn.to_vec()];
    Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .resolve(PUBLIC_HOST, target.https)
        .resolve(ADMIN_HOST, target.https)
        .timeout(Duration::from_secs(20))
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())
}

fn header_str(res: &Response, name: &str) -> String {
    res.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ")
}

fn status_row(attack: &str, want: StatusCode, res: &Result<Response, reqwest::Error>) -> Row {
    match res {
        Ok(r) => Row::new(
            attack,
            &want.as_u16().to_string(),
            r.status().as_u16().to_string(),
            r.status() == want,
        ),
        Err(e) => Row::new(
            attack,
            &want.as_u16().to_string(),
            format!("error: {e}"),
            false,
        ),
    }
}

/// Runs every row against `target`.
pub(crate) async fn run(target: &Target) -> Vec<Row> {
    let mut rows = Vec::new();
    let http = match client(target) {
        Ok(c) => c,
        Err(e) => return vec![Row::new("build the tour's HTTPS client", "ok", e, false)],
    };
    let api = |path: &str| format!("https://{PUBLIC_HOST}:{}{path}", target.https.port());
    let admin = |path: &str| format!("https://{ADMIN_HOST}:{}{path}", target.https.port());
    let plain = |path: &str| format!("http://{}{path}", target.http);

    // --- Security headers -------------------------------------------------------------
    let first = http.get(api("/")).send().await;
    let second = http.get(api("/")).send().await;
    match (first, second) {
        (Ok(a), Ok(b)) => {
            let csp_a = header_str(&a, "content-security-policy");
            let csp_b = header_str(&b, "content-security-policy");
            let nonce = csp_a
                .split("'nonce-")
                .nth(1)
                .and_then(|r| r.split('\'').next())
                .unwrap_or("")
                .to_owned();
            rows.push(Row::new(
                "page served over HTTPS",
                "200 text/html",
                format!("{} {}", a.status().as_u16(), header_str(&a, "content-type")),
                a.status() == 200,
            ));
            let strict = csp_a.contains("default-src 'none'")
                && csp_a.contains("'strict-dynamic'")
                && csp_a.contains("object-src 'none'")
                && csp_a.contains("base-uri 'none'")
                && csp_a.contains("frame-ancestors 'none'")
                && !csp_a.contains("unsafe-inline")
                && !csp_a.contains("unsafe-eval");
            rows.push(Row::new(
                "inject an inline script (CSP)",
                "strict nonce CSP, no unsafe-*",
                if strict {
                    "strict".to_owned()
                } else {
                    csp_a.clone()
                },
                strict,
            ));
            rows.push(Row::new(
                "replay a nonce from another response",
                "fresh nonce per response",
                if csp_a != csp_b && nonce.len() >= 22 {
                    format!("{}-char nonces differ", nonce.len())
                } else {
                    "same nonce".into()
                },
                csp_a != csp_b && nonce.len() >= 22,
            ));
            let hsts = header_str(&a, "strict-transport-security");
            let age_ok = hsts
                .split(';')
                .next()
                .and_then(|m| m.trim().strip_prefix("max-age="))
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|v| v >= 31_536_000);
            rows.push(Row::new(
                "downgrade to HTTP later (HSTS)",
                "max-age>=1y; includeSubDomains",
                hsts.clone(),
                age_ok && hsts.contains("includeSubDomains"),
            ));
            let fixed = [
                ("x-content-type-options", "nosniff"),
                ("referrer-policy", "no-referrer"),
                ("x-frame-options", "DENY"),
                ("cross-origin-opener-policy", "same-origin"),
                ("cross-origin-resource-policy", "same-origin"),
                ("cross-origin-embedder-policy", "require-corp"),
            ];
            let missing: Vec<&str> = fixed
                .iter()
                .filter(|(n, v)| header_str(&a, n) != *v)
                .map(|(n, _)| *n)
                .collect();
            rows.push(Row::new(
                "sniff, frame or embed the page",
                "nosniff, DENY, COOP/COEP/CORP, no-referrer",
                if missing.is_empty() {
                    "all set".to_owned()
                } else {
                    format!("missing {missing:?}")
                },
                missing.is_empty(),
            ));
            let leak = header_str(&a, "server") + &header_str(&a, "x-powered-by");
            rows.push(Row::new(
                "fingerprint the server",
                "no Server / X-Powered-By",
                if leak.is_empty() {
                    "none".into()
                } else {
                    leak.clone()
                },
                leak.is_empty(),
            ));
            let endpoints = header_str(&a, "reporting-endpoints");
            let ro = header_str(&a, "content-security-policy-report-only");
            let reporting = endpoints.starts_with("csp=\"https://")
                && csp_a.ends_with("report-to csp")
                && ro.contains("require-trusted-types-for 'script'");
            rows.push(Row::new(
                "violations go unnoticed",
                "report-to + Reporting-Endpoints + report-only trial",
                if reporting {
                    "all set".to_owned()
                } else {
                    format!("{endpoints} | {ro}")
                },
                reporting,
            ));
            let body = a.text().await.unwrap_or_default();
            let tagged = body.contains(&format!("<script nonce=\"{nonce}\">"));
            rows.push(Row::new(
                "handler reads the response's nonce",
                "inline script carries header nonce",
                if tagged { "matches" } else { "mismatch" },
                tagged && !nonce.is_empty(),
            ));
        }
        (Err(e), _) | (_, Err(e)) => rows.push(Row::new(
            "page served over HTTPS",
            "200",
            format!("error: {e}"),
            false,
        )),
    }

    // The reporting endpoint takes a report batch and refuses junk and oversized bodies.
    let report = r#"[{"type":"csp-violation","age":1,"url":"https://api.palisade.test/","body":{"effectiveDirective":"script-src-elem","blockedURL":"inline","disposition":"enforce"}}]"#;
    let ok = http
        .post(api("/csp-reports"))
        .header(header::CONTENT_TYPE, "application/reports+json")
        .body(report)
        .send()
        .await;
    let junk = http
        .post(api("/csp-reports"))
        .header(header::CONTENT_TYPE, "application/reports+json")
        .body("not json")
        .send()
        .await;
    let h2 = match client_h2(target) {
        Ok(c) => c,
        Err(e) => return vec![Row::new("build the tour's HTTP/2 client", "ok", e, false)],
    };
    let huge = h2
        .post(api("/csp-reports"))
        .header(header::CONTENT_TYPE, "application/reports+json")
        .body(vec![b'['; 200 * 1024])
        .send()
        .await;
    let codes: Vec<u16> = [ok, junk, huge]
        .iter()
        .map(|r| r.as_ref().map(|r| r.status().as_u16()).unwrap_or(0))
        .collect();
    rows.push(Row::new(
        "flood the CSP report endpoint",
        "204 report, 400 junk, 413 oversized",
        format!("{codes:?}"),
        codes == [204, 400, 413],
    ));

    // --- HTTPS enforcement --------------------------------------------------------------
    let res = http
        .get(plain("/api/hello?x=1"))
        .header(header::HOST, PUBLIC_HOST)
        .send()
        .await;
    let want_location = format!(
        "https://{PUBLIC_HOST}:{}/api/hello?x=1",
        target.https.port()
    );
    match res {
        Ok(r) => {
            let loc = header_str(&r, "location");
            rows.push(Row::new(
                "plain-HTTP GET",
                "301 to https://",
                format!("{} {loc}", r.status().as_u16()),
                r.status() == 301 && loc == want_location,
            ));
        }
        Err(e) => rows.push(Row::new(
            "plain-HTTP GET",
            "301",
            format!("error: {e}"),
            false,
        )),
    }
    let res = http
        .post(plain("/api/echo"))
        .header(header::HOST, PUBLIC_HOST)
        .body("{\"card\":\"4111\"}")
        .send()
        .await;
    rows.push(status_row(
        "plain-HTTP POST with a body",
        StatusCode::MISDIRECTED_REQUEST,
        &res,
    ));
    let res = http
        .get(plain("/api/hello"))
        .header(header::HOST, PUBLIC_HOST)
        .header("x-forwarded-proto", "https")
        .send()
        .await;
    rows.push(status_row(
        "spoof X-Forwarded-Proto: https over HTTP",
        StatusCode::MOVED_PERMANENTLY,
        &res,
    ));
    match http
        .get(plain("/"))
        .header(header::HOST, "evil.example")
        .send()
        .await
    {
        Ok(r) => {
            let loc = header_str(&r, "location");
            let ok = r.status() == 301 && loc.starts_with(&format!("https://{PUBLIC_HOST}:"));
            rows.push(Row::new(
                "open redirect via Host: evil.example",
                "redirect to canonical host",
                format!("{} {loc}", r.status().as_u16()),
                ok,
            ));
        }
        Err(e) => rows.push(Row::new(
            "open redirect via Host: evil.example",
            "redirect to canonical host",
            format!("error: {e}"),
            false,
        )),
    }
    let res = http
        .get(plain("/healthz"))
        .header(header::HOST, PUBLIC_HOST)
        .send()
        .await;
    let hsts_on_http = res
        .as_ref()
        .map(|r| r.headers().contains_key("strict-transport-security"))
        .unwrap_or(true);
    rows.push(Row::new(
        "HSTS over plain HTTP",
        "absent",
        if hsts_on_http { "present" } else { "absent" },
        !hsts_on_http,
    ));

    // --- CORS ---------------------------------------------------------------------------
    let preflight = |origin: &str| {
        http.request(Method::OPTIONS, api("/api/echo"))
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
            .send()
    };
    match preflight("https://evil.example").await {
        Ok(r) => {
            let acao = header_str(&r, "access-control-allow-origin");
            rows.push(Row::new(
                "CORS preflight from evil origin",
                "403, no CORS headers",
                format!("{} {acao}", r.status().as_u16()),
                r.status() == 403 && acao.is_empty(),
            ));
        }
        Err(e) => rows.push(Row::new(
            "CORS preflight from evil origin",
            "403",
            format!("error: {e}"),
            false,
        )),
    }
    match preflight(ALLOWED_ORIGIN).await {
        Ok(r) => {
            let acao = header_str(&r, "access-control-allow-origin");
            let vary = header_str(&r, "vary");
            let ok = r.status() == 204
                && acao == ALLOWED_ORIGIN
                && vary.contains("origin")
                && r.headers().contains_key("access-control-max-age");
            rows.push(Row::new(
                "CORS preflight from allowed origin",
                "204, exact origin, Vary, Max-Age",
                format!("{} {acao}", r.status().as_u16()),
                ok,
            ));
        }
        Err(e) => rows.push(Row::new(
            "CORS preflight from allowed origin",
            "204",
            format!("error: {e}"),
            false,
        )),
    }
    for (attack, origin) in [
        ("read API from evil origin", "https://evil.example"),
        (
            "suffix-match origin trick",
            "https://app.palisade.test.evil.example",
        ),
        ("null origin (sandboxed iframe)", "null"),
    ] {
        match http
            .get(api("/api/hello"))
            .header(header::ORIGIN, origin)
            .send()
            .await
        {
            Ok(r) => {
                let acao = header_str(&r, "access-control-allow-origin");
                let vary = header_str(&r, "vary");
                rows.push(Row::new(
                    attack,
                    "no Access-Control-Allow-Origin, Vary: origin",
                    if acao.is_empty() {
                        format!("none; vary {vary}")
                    } else {
                        acao.clone()
                    },
                    acao.is_empty() && vary.contains("origin"),
                ));
            }
            Err(e) => rows.push(Row::new(attack, "no ACAO", format!("error: {e}"), false)),
        }
    }

    // --- Admin surface ------------------------------------------------------------------
    // Refusals by the guard are problem documents; the router's own 404s are empty. Rows that
    // expect the guard check for the problem document, so a path that merely matches no route
    // cannot pass for a refusal.
    type Case<'a> = (&'a str, String, Option<(&'a str, &'a str)>, u16, bool);
    let cases: [Case<'_>; 9] = [
        (
            "admin path on the public host",
            api("/admin/status"),
            None,
            404,
            true,
        ),
        (
            "admin route with a parameter: /admin/users/..%2f..",
            api("/admin/users/..%2f.."),
            None,
            404,
            true,
        ),
        (
            "encoded admin path /%61dmin",
            api("/%61dmin/status"),
            None,
            404,
            true,
        ),
        (
            "dot-segment admin path /api/..%2fadmin",
            api("/api/..%2fadmin/status"),
            None,
            404,
            true,
        ),
        (
            "upper-case admin path /ADMIN",
            api("/ADMIN/status"),
            None,
            404,
            true,
        ),
        (
            "X-Forwarded-Host: admin host",
            api("/admin/status"),
            Some(("x-forwarded-host", ADMIN_HOST)),
            404,
            true,
        ),
        (
            "admin on the admin host",
            admin("/admin/status"),
            None,
            200,
            false,
        ),
        (
            "admin route with a parameter on the admin host",
            admin("/admin/users/42"),
            None,
            200,
            false,
        ),
        (
            "public API on the admin host",
            admin("/api/hello"),
            None,
            404,
            true,
        ),
    ];
    // Every request carries a valid admin token: the guard refuses regardless.
    for (attack, url, extra, want, by_guard) in cases {
        let mut req = http
            .get(url)
            .header(header::AUTHORIZATION, target.bearer("admin-mfa"));
        if let Some((k, v)) = extra {
            req = req.header(k, v);
        }
        let expected = if by_guard {
            format!("{want} problem+json")
        } else {
            want.to_string()
        };
        match req.send().await {
            Ok(r) => {
                let ctype = header_str(&r, "content-type");
                let guard = ctype == "application/problem+json";
                let got = format!(
                    "{} {}",
                    r.status().as_u16(),
                    if guard {
                        "problem+json"
                    } else {
                        ctype.as_str()
                    }
                );
                let pass = r.status().as_u16() == want && (!by_guard || guard);
                rows.push(Row::new(attack, &expected, got, pass));
            }
            Err(e) => rows.push(Row::new(attack, &expected, format!("error: {e}"), false)),
        }
    }
    rows.extend(auth_rows(target, &http).await);
    rows.extend(access_key_rows(target, &http).await);
    rows.extend(throttle_rows(target, &http).await);
    rows.extend(authz_rows(target, &http).await);
    rows.extend(impersonation_rows(target, &http).await);
    rows.extend(metrics_rows(target).await);

    // A refusal is a generic problem document; the reason stays in the server log.
    match http.get(api("/admin/status")).send().await {
        Ok(r) => {
            let ctype = header_str(&r, "content-type");
            let body = r.text().await.unwrap_or_default();
            let ok = ctype == "application/problem+json"
                && body.contains("\"status\":404")
                && !body.contains("admin");
            rows.push(Row::new(
                "learn why a request was refused",
                "generic problem+json",
                if ok { "generic".to_owned() } else { body },
                ok,
            ));
        }
        Err(e) => rows.push(Row::new(
            "learn why a request was refused",
            "generic problem+json",
            format!("error: {e}"),
            false,
        )),
    }
    rows
}

/// Authentication rows: Keycloak-shaped tokens from the real test provider, and forgeries.
async fn auth_rows(target: &Target, http: &Client) -> Vec<Row> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    let api = format!("https://{PUBLIC_HOST}:{}/api/hello", target.https.port());
    let admin = format!("https://{ADMIN_HOST}:{}/admin/status", target.https.port());
    let good = target.tokens.get("api-user").cloned().unwrap_or_default();
    let mut parts = good.splitn(3, '.');
    let (header_b64, payload_b64, sig) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let payload: serde_json::Value = B64
        .decode(payload_b64)
        .ok()
        .and_then(|p| serde_json::from_slice(&p).ok())
        .unwrap_or_default();
    let forge = |header: serde_json::Value, payload: &serde_json::Value, sig: &str| {
        format!(
            "{}.{}.{}",
            B64.encode(header.to_string()),
            B64.encode(payload.to_string()),
            sig
        )
    };
    let kid = B64
        .decode(header_b64)
        .ok()
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
        .and_then(|h| h["kid"].as_str().map(str::to_owned))
        .unwrap_or_default();
    // HS256 signed with the provider's public key bytes as the HMAC secret.
    let hs_header = serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": kid});
    let hs_input = format!("{}.{}", B64.encode(hs_header.to_string()), payload_b64);
    let hmac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, kid.as_bytes());
    let hs = format!(
        "{hs_input}.{}",
        B64.encode(aws_lc_rs::hmac::sign(&hmac_key, hs_input.as_bytes()).as_ref())
    );
    let mut escalated = payload.clone();
    escalated["realm_access"] = serde_json::json!({"roles": ["member", "admin"]});

    let cases: Vec<(&str, String, Option<String>, u16)> = vec![
        ("call the API without a token", api.clone(), None, 401),
        (
            "API with an RS256 token",
            api.clone(),
            Some(target.bearer("api-user")),
            200,
        ),
        (
            "API with an ES256 token",
            api.clone(),
            Some(target.bearer("api-user-es")),
            200,
        ),
        (
            "API with an EdDSA token",
            api.clone(),
            Some(target.bearer("api-user-ed")),
            200,
        ),
        (
            "alg: none",
            api.clone(),
            Some(format!(
                "Bearer {}",
                forge(
                    serde_json::json!({"alg": "none", "typ": "JWT", "kid": kid}),
                    &payload,
                    "AAAA"
                )
            )),
            401,
        ),
        (
            "RS256 to HS256 key confusion",
            api.clone(),
            Some(format!("Bearer {hs}")),
            401,
        ),
        (
            "escalate roles in the payload",
            api.clone(),
            Some(format!(
                "Bearer {}",
                forge(
                    serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": kid}),
                    &escalated,
                    sig
                )
            )),
            401,
        ),
        (
            "signature stripped",
            api.clone(),
            Some(format!("Bearer {header_b64}.{payload_b64}.")),
            401,
        ),
        (
            "kid path traversal",
            api.clone(),
            Some(format!(
                "Bearer {}",
                forge(
                    serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "../../../../dev/null"}),
                    &payload,
                    sig
                )
            )),
            401,
        ),
        (
            "jku pointing at the attacker's keys",
            api.clone(),
            Some(format!(
                "Bearer {}",
                forge(
                    serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": kid, "jku": "https://evil.example/jwks"}),
                    &payload,
                    sig
                )
            )),
            401,
        ),
        (
            "token without aud (no Keycloak audience mapper)",
            api.clone(),
            Some(target.bearer("no-aud")),
            401,
        ),
        (
            "token in the query string",
            format!("{api}?access_token={good}"),
            None,
            401,
        ),
        (
            "api token on the admin surface",
            admin.clone(),
            Some(target.bearer("api-user")),
            401,
        ),
        (
            "admin token without MFA",
            admin.clone(),
            Some(target.bearer("admin-no-mfa")),
            401,
        ),
        (
            "admin token with MFA",
            admin.clone(),
            Some(target.bearer("admin-mfa")),
            200,
        ),
        (
            "admin token on the API surface",
            api.clone(),
            Some(target.bearer("admin-mfa")),
            401,
        ),
    ];
    let mut rows = Vec::new();
    for (attack, url, auth, want) in cases {
        let mut req = http.get(&url);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let res = req.send().await;
        let mut row = status_row(
            attack,
            StatusCode::from_u16(want).unwrap_or(StatusCode::IM_A_TEAPOT),
            &res,
        );
        if attack == "admin token without MFA" {
            let challenge = res
                .as_ref()
                .map(|r| header_str(r, "www-authenticate"))
                .unwrap_or_default();
            row.pass &= challenge.contains("insufficient_user_authentication");
            row.expected = "401 insufficient_user_authentication".into();
        }
        rows.push(row);
    }
    rows.extend(websocket_rows(target, http, &good).await);
    rows.extend(session_rows(target, http).await);
    rows.extend(production_mail_rows(target, http).await);
    // The identity carries the tenant from the token.
    match http
        .get(&api)
        .header(header::AUTHORIZATION, target.bearer("other-tenant"))
        .send()
        .await
    {
        Ok(r) => {
            let body: serde_json::Value = r.json_or_default().await;
            let org = body["org"].as_str().unwrap_or("").to_owned();
            rows.push(Row::new(
                "another tenant's token",
                "identity scoped to org-2",
                format!("org {org}"),
                org == "org-2",
            ));
        }
        Err(e) => rows.push(Row::new(
            "another tenant's token",
            "identity scoped to org-2",
            format!("error: {e}"),
            false,
        )),
    }
    rows
}

/// WebSocket upgrades: bearer in Sec-WebSocket-Protocol, single-use tickets, no URL tokens.
async fn websocket_rows(target: &Target, http: &Client, good: &str) -> Vec<Row> {
    let port = target.https.port();
    let ws = format!("https://{PUBLIC_HOST}:{port}/api/ws");
    let upgrade = |url: &str| {
        http.get(url)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    };
    let mint = |origin: &'static str| {
        http.post(format!("https://{PUBLIC_HOST}:{port}/api/ws-ticket"))
            .header(header::AUTHORIZATION, target.bearer("api-user"))
            .header(header::ORIGIN, origin)
            .send()
    };
    let ticket_of = |res: Result<Response, reqwest::Error>| async move {
        match res {
            Ok(r) => r.json_or_default().await["ticket"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
            Err(_) => String::new(),
        }
    };
    let mut rows = Vec::new();
    // Bearer in the protocol list: 101, and only the application protocol is echoed.
    match upgrade(&ws)
        .header(
            "sec-websocket-protocol",
            format!("chat.v1, palisade.bearer.{good}"),
        )
        .send()
        .await
    {
        Ok(r) => {
            let echoed = header_str(&r, "sec-websocket-protocol");
            let ok = r.status() == StatusCode::SWITCHING_PROTOCOLS && echoed == "chat.v1";
            rows.push(Row::new(
                "WebSocket with a bearer protocol",
                "101, echoes chat.v1 only",
                format!("{} {echoed}", r.status().as_u16()),
                ok,
            ));
        }
        Err(e) => rows.push(Row::new(
            "WebSocket with a bearer protocol",
            "101",
            format!("error: {e}"),
            false,
        )),
    }
    let res = upgrade(&format!("{ws}?access_token={good}")).send().await;
    rows.push(status_row(
        "WebSocket with the token in the URL",
        StatusCode::UNAUTHORIZED,
        &res,
    ));
    let res = upgrade(&ws).send().await;
    rows.push(status_row(
        "WebSocket without credentials",
        StatusCode::UNAUTHORIZED,
        &res,
    ));

    let ticket = ticket_of(mint(ALLOWED_ORIGIN).await).await;
    let with_ticket = |t: &str, origin: &'static str| {
        upgrade(&format!("{ws}?ticket={t}"))
            .header(header::ORIGIN, origin)
            .send()
    };
    let first = with_ticket(&ticket, ALLOWED_ORIGIN).await;
    rows.push(status_row(
        "WebSocket with a fresh ticket",
        StatusCode::SWITCHING_PROTOCOLS,
        &first,
    ));
    let replay = with_ticket(&ticket, ALLOWED_ORIGIN).await;
    rows.push(status_row(
        "replay a used WebSocket ticket",
        StatusCode::UNAUTHORIZED,
        &replay,
    ));
    let stolen = ticket_of(mint(ALLOWED_ORIGIN).await).await;
    let res = with_ticket(&stolen, "https://evil.example").await;
    rows.push(status_row(
        "WebSocket ticket from another origin",
        StatusCode::UNAUTHORIZED,
        &res,
    ));
    rows
}

/// Refresh-token sessions: rotation, reuse detection, device binding, logout.
async fn session_rows(target: &Target, http: &Client) -> Vec<Row> {
    let base = format!("https://{PUBLIC_HOST}:{}", target.https.port());
    let start = |device: &'static str| {
        http.post(format!("{base}/api/session"))
            .header(header::AUTHORIZATION, target.bearer("api-user"))
            .header("x-device-id", device)
            .header(header::USER_AGENT, "palisade-tour/1")
            .send()
    };
    let refresh = |token: String, device: &'static str| {
        http.post(format!("{base}/auth/refresh"))
            .header("x-device-id", device)
            .header(header::USER_AGENT, "palisade-tour/1")
            .header(header::CONTENT_TYPE, "application/json")
            .body(serde_json::json!({ "refresh_token": token }).to_string())
            .send()
    };
    let token_of = |res: Result<Response, reqwest::Error>| async move {
        match res {
            Ok(r) if r.status() == StatusCode::OK => remember(
                r.json_or_default().await["refresh_token"]
                    .as_str()
                    .unwrap_or(""),
            ),
            _ => String::new(),
        }
    };
    let status = |res: &Result<Response, reqwest::Error>| {
        res.as_ref().map(|r| r.status().as_u16()).unwrap_or(0)
    };
    let mut rows = Vec::new();

    let first = token_of(start("phone").await).await;
    let second = token_of(refresh(first.clone(), "phone").await).await;
    let rotated = !first.is_empty() && !second.is_empty() && first != second;
    rows.push(Row::new(
        "refresh a session",
        "200, a new refresh token",
        if rotated { "rotated" } else { "no rotation" },
        rotated,
    ));
    let replay = refresh(first.clone(), "phone").await;
    let newest = refresh(second.clone(), "phone").await;
    let (a, b) = (status(&replay), status(&newest));
    rows.push(Row::new(
        "replay a spent refresh token",
        "401, and the newest token dies too",
        format!("{a} then {b}"),
        a == 401 && b == 401,
    ));

    let third = token_of(start("phone").await).await;
    let stolen = refresh(third.clone(), "laptop").await;
    let owner = refresh(third, "phone").await;
    let (a, b) = (status(&stolen), status(&owner));
    rows.push(Row::new(
        "refresh from another device",
        "401 (owner's device still 200)",
        format!("{a} / {b}"),
        a == 401 && b == 200,
    ));

    // The family id is no secret (it is the access token's `sid`): a made-up secret with it
    // must not log the owner out.
    let owned = token_of(start("phone").await).await;
    let forged = match owned.rsplit_once('.') {
        Some((family, _)) => format!("{family}.{}", "A".repeat(43)),
        None => String::new(),
    };
    let out = http
        .post(format!("{base}/auth/logout"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(serde_json::json!({ "refresh_token": forged }).to_string())
        .send()
        .await;
    let after = refresh(owned, "phone").await;
    let (a, b) = (status(&out), status(&after));
    rows.push(Row::new(
        "log a session out with its family id and a made-up secret",
        "204 (no oracle), owner still refreshes: 200",
        format!("{a}, then {b}"),
        !forged.is_empty() && a == 204 && b == 200,
    ));

    let fourth = token_of(start("phone").await).await;
    let out = http
        .post(format!("{base}/auth/logout"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(serde_json::json!({ "refresh_token": fourth }).to_string())
        .send()
        .await;
    let after = refresh(fourth, "phone").await;
    let (a, b) = (status(&out), status(&after));
    rows.push(Row::new(
        "refresh after logout",
        "204 logout, then 401",
        format!("{a} then {b}"),
        a == 204 && b == 401,
    ));
    rows
}

/// Local accounts: password policy, email verification, login, reset tokens.
async fn local_account_rows(target: &Target, http: &Client) -> Vec<Row> {
    let base = format!("https://{PUBLIC_HOST}:{}", target.https.port());
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{base}{path}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-device-id", "laptop")
            .header(header::USER_AGENT, "palisade-tour/1")
            .body(body.to_string())
            .send()
    };
    let status = |res: &Result<Response, reqwest::Error>| {
        res.as_ref().map(|r| r.status().as_u16()).unwrap_or(0)
    };
    let json = |res: Result<Response, reqwest::Error>| async move {
        match res {
            Ok(r) => r.json_or_default().await,
            Err(_) => serde_json::Value::Null,
        }
    };
    let email = format!("tour-{}@example.com", std::process::id());
    let password = remember("correct horse battery staple");
    let password = password.as_str();
    let mut rows = Vec::new();

    let common = post(
        "/auth/signup",
        serde_json::json!({"email": email, "password": "Password1234!"}),
    )
    .await;
    rows.push(Row::new(
        "sign up with a common password",
        "422",
        status(&common).to_string(),
        status(&common) == 422,
    ));

    let signed = json(
        post(
            "/auth/signup",
            serde_json::json!({"email": email, "password": password}),
        )
        .await,
    )
    .await;
    let verification = remember(signed["mail"]["token"].as_str().unwrap_or(""));
    let early = post(
        "/auth/login",
        serde_json::json!({"email": email, "password": password}),
    )
    .await;
    rows.push(Row::new(
        "log in before verifying the email",
        "401",
        status(&early).to_string(),
        status(&early) == 401,
    ));

    let verified = post("/auth/verify", serde_json::json!({"token": verification})).await;
    let again = post("/auth/verify", serde_json::json!({"token": verification})).await;
    let (a, b) = (status(&verified), status(&again));
    rows.push(Row::new(
        "reuse a spent verification link",
        "204 then 401",
        format!("{a} then {b}"),
        a == 204 && b == 401,
    ));

    let logged = json(
        post(
            "/auth/login",
            serde_json::json!({"email": email, "password": password}),
        )
        .await,
    )
    .await;
    let access = remember(logged["access_token"].as_str().unwrap_or(""));
    let refresh = remember(logged["refresh_token"].as_str().unwrap_or(""));
    let hello = http
        .get(format!("{base}/api/hello"))
        .header(header::AUTHORIZATION, format!("Bearer {access}"))
        .send()
        .await;
    rows.push(Row::new(
        "local login, then the API with its local JWT",
        "200",
        status(&hello).to_string(),
        !access.is_empty() && status(&hello) == 200,
    ));

    let wrong = post(
        "/auth/login",
        serde_json::json!({"email": email, "password": "not the password!"}),
    )
    .await;
    let unknown = post(
        "/auth/login",
        serde_json::json!({"email": "nobody-at-all@example.com", "password": "not the password!"}),
    )
    .await;
    let (a, b) = (status(&wrong), status(&unknown));
    let (wa, wb) = (json(wrong).await, json(unknown).await);
    rows.push(Row::new(
        "tell existing accounts from unknown ones",
        "same 401, same body",
        format!("{a} / {b}"),
        a == 401 && b == 401 && wa == wb,
    ));

    let reset = json(post("/auth/reset/request", serde_json::json!({"email": email})).await).await;
    let mut reset_token = remember(reset["mail"]["token"].as_str().unwrap_or(""));
    let new_password = "a different long passphrase";
    let weak = post(
        "/auth/reset/confirm",
        serde_json::json!({"token": reset_token, "password": "abcdefghijkl"}),
    )
    .await;
    rows.push(Row::new(
        "reset to a guessable password (the link must survive)",
        "422",
        status(&weak).to_string(),
        status(&weak) == 422,
    ));
    // Containing the address is only known once the link names its account: the link is
    // spent, and a fresh one goes to the mailbox.
    let name = email.split('@').next().unwrap_or_default();
    let spent = post(
        "/auth/reset/confirm",
        serde_json::json!({"token": reset_token, "password": format!("my {name} passphrase")}),
    )
    .await;
    let spent_status = status(&spent);
    let fresh = remember(json(spent).await["mail"]["token"].as_str().unwrap_or(""));
    rows.push(Row::new(
        "reset to a password containing the address",
        "422, and a fresh link mailed",
        format!(
            "{spent_status}, {}",
            if fresh.is_empty() {
                "no link"
            } else {
                "new link"
            }
        ),
        spent_status == 422 && !fresh.is_empty() && fresh != reset_token,
    ));
    reset_token = fresh;
    let first = post(
        "/auth/reset/confirm",
        serde_json::json!({"token": reset_token, "password": new_password}),
    )
    .await;
    let second = post(
        "/auth/reset/confirm",
        serde_json::json!({"token": reset_token, "password": "yet another passphrase!"}),
    )
    .await;
    let (a, b) = (status(&first), status(&second));
    rows.push(Row::new(
        "use a password-reset token twice",
        "204 then 401",
        format!("{a} then {b}"),
        a == 204 && b == 401,
    ));

    let stale = post(
        "/auth/refresh",
        serde_json::json!({"refresh_token": refresh}),
    )
    .await;
    rows.push(Row::new(
        "refresh a session after a password reset",
        "401 (logged out everywhere)",
        status(&stale).to_string(),
        status(&stale) == 401,
    ));
    rows
}

trait JsonOrDefault {
    async fn json_or_default(self) -> serde_json::Value;
}

impl JsonOrDefault for Response {
    async fn json_or_default(self) -> serde_json::Value {
        let bytes = self.bytes().await.unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or_default()
    }
}

/// Rows that need time to pass, against a development demo with a test clock.
pub(crate) async fn run_with_clock(target: &Target) -> Vec<Row> {
    let http = match client(target) {
        Ok(c) => c,
        Err(e) => return vec![Row::new("build the tour's HTTPS client", "ok", e, false)],
    };
    let base = format!("https://{PUBLIC_HOST}:{}", target.https.port());
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{base}{path}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
    };
    let json = |res: Result<Response, reqwest::Error>| async move {
        match res {
            Ok(r) => r.json_or_default().await,
            Err(_) => serde_json::Value::Null,
        }
    };
    // Local accounts need the mail outbox, which production refuses: they run here.
    let mut rows = local_account_rows(target, &http).await;
    let email = format!("clock-{}@example.com", std::process::id());
    let signed = json(
        post(
            "/auth/signup",
            serde_json::json!({"email": email, "password": "correct horse battery staple"}),
        )
        .await,
    )
    .await;
    let _ = post(
        "/auth/verify",
        serde_json::json!({"token": signed["mail"]["token"]}),
    )
    .await;
    let reset = json(post("/auth/reset/request", serde_json::json!({"email": email})).await).await;
    let token = reset["mail"]["token"].as_str().unwrap_or("").to_owned();
    let advanced = post(
        "/demo/clock/advance",
        serde_json::json!({"seconds": 61 * 60}),
    )
    .await;
    let res = post(
        "/auth/reset/confirm",
        serde_json::json!({"token": token, "password": "a different long passphrase"}),
    )
    .await;
    let (a, b) = (
        advanced.as_ref().map(|r| r.status().as_u16()).unwrap_or(0),
        res.as_ref().map(|r| r.status().as_u16()).unwrap_or(0),
    );
    rows.push(Row::new(
        "use a reset token after it expired",
        "401 (61 minutes later)",
        format!("{b} (clock {a})"),
        !token.is_empty() && a == 204 && b == 401,
    ));
    rows
}

/// A minimal SigV4 signer written for the tour alone (aws-lc-rs digests, no Palisade code), so
/// the rows also show that an independent client interoperates. It covers what the rows send:
/// ASCII paths and already-sorted unreserved queries.
struct TourSigner {
    key_id: String,
    secret: String,
}

/// What one signed request looks like on the wire, and what it signed.
struct Signed {
    headers: Vec<(&'static str, String)>,
}

const AKSK_SERVICE: &str = "palisade-demo";
const AKSK_REGION: &str = "local";

fn amz_date(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

impl TourSigner {
    /// Signs `method host path?query` (the query already sorted) with `body` at `unix`; `sign_nonce` false leaves the
    /// nonce header out of the signed list (it is still sent).
    fn sign(
        &self,
        method: &str,
        host: &str,
        path_query: &str,
        body: &[u8],
        unix: u64,
        sign_nonce: bool,
    ) -> Signed {
        let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
        use aws_lc_rs::{digest, hmac};
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let date = amz_date(unix);
        let payload = hex(digest::digest(&digest::SHA256, body).as_ref());
        let mut nonce = [0u8; 16];
        let _ = aws_lc_rs::rand::fill(&mut nonce);
        let nonce = hex(&nonce);
        let mut headers = vec![
            ("content-type", "application/json".to_owned()),
            ("host", host.to_owned()),
            ("x-amz-content-sha256", payload.clone()),
            ("x-amz-date", date.clone()),
            ("x-palisade-nonce", nonce),
        ];
        let signed: Vec<&(&str, String)> = headers
            .iter()
            .filter(|(n, _)| sign_nonce || *n != "x-palisade-nonce")
            .collect();
        let list = signed.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(";");
        let canonical_headers: String = signed.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
        let creq = format!("{method}\n{path}\n{query}\n{canonical_headers}\n{list}\n{payload}");
        let scope = format!("{}/{AKSK_REGION}/{AKSK_SERVICE}/aws4_request", &date[..8]);
        let sts = format!(
            "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
            hex(digest::digest(&digest::SHA256, creq.as_bytes()).as_ref())
        );
        let mut key = format!("AWS4{}", self.secret).into_bytes();
        for part in [&date[..8], AKSK_REGION, AKSK_SERVICE, "aws4_request"] {
            let k = hmac::Key::new(hmac::HMAC_SHA256, &key);
            key = hmac::sign(&k, part.as_bytes()).as_ref().to_vec();
        }
        let signature =
            hex(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), sts.as_bytes()).as_ref());
        headers.push((
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={list}, Signature={signature}",
                self.key_id
            ),
        ));
        Signed { headers }
    }
}

impl TourSigner {
    /// Signs a streaming (aws-chunked) PUT of `data` to `path` in chunks of `chunk` bytes:
    /// the request signature, then each chunk's, chained from it. Answers the headers and
    /// the encoded body.
    fn sign_stream(
        &self,
        host: &str,
        path: &str,
        data: &[u8],
        chunk: usize,
        unix: u64,
    ) -> (Signed, Vec<u8>) {
        use aws_lc_rs::{digest, hmac};
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let sha = |b: &[u8]| hex(digest::digest(&digest::SHA256, b).as_ref());
        let date = amz_date(unix);
        let mut nonce = [0u8; 16];
        let _ = aws_lc_rs::rand::fill(&mut nonce);
        let payload = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
        let mut headers = vec![
            ("content-encoding", "aws-chunked".to_owned()),
            ("content-type", "application/octet-stream".to_owned()),
            ("host", host.to_owned()),
            ("x-amz-content-sha256", payload.to_owned()),
            ("x-amz-date", date.clone()),
            ("x-amz-decoded-content-length", data.len().to_string()),
            ("x-palisade-nonce", hex(&nonce)),
        ];
        let list = headers
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(";");
        let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
        let creq = format!("PUT\n{path}\n\n{canonical_headers}\n{list}\n{payload}");
        let scope = format!("{}/{AKSK_REGION}/{AKSK_SERVICE}/aws4_request", &date[..8]);
        let sts = format!(
            "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
            sha(creq.as_bytes())
        );
        let mut key = format!("AWS4{}", self.secret).into_bytes();
        for part in [&date[..8], AKSK_REGION, AKSK_SERVICE, "aws4_request"] {
            let k = hmac::Key::new(hmac::HMAC_SHA256, &key);
            key = hmac::sign(&k, part.as_bytes()).as_ref().to_vec();
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
        let mut previous = hex(hmac::sign(&key, sts.as_bytes()).as_ref());
        headers.push((
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={list}, Signature={previous}",
                self.key_id
            ),
        ));
        let mut body = Vec::new();
        for piece in data.chunks(chunk).chain(std::iter::once(&[][..])) {
            let chunk_sts = format!(
                "AWS4-HMAC-SHA256-PAYLOAD\n{date}\n{scope}\n{previous}\n{}\n{}",
                sha(b""),
                sha(piece)
            );
            previous = hex(hmac::sign(&key, chunk_sts.as_bytes()).as_ref());
            body.extend_from_slice(
                format!("{:x};chunk-signature={previous}\r\n", piece.len()).as_bytes(),
            );
            body.extend_from_slice(piece);
            body.extend_from_slice(b"\r\n");
        }
        (Signed { headers }, body)
    }
}

/// Access keys: an admin issues one (the secret is printed once), a machine client signs with
/// it, and every hostile variation is refused.
async fn access_key_rows(target: &Target, http: &Client) -> Vec<Row> {
    let port = target.https.port();
    let host = format!("{PUBLIC_HOST}:{port}");
    let admin = |path: &str| format!("https://{ADMIN_HOST}:{port}{path}");
    let mut rows = Vec::new();
    let issued = http
        .post(admin("/admin/orgs/acme/access-keys"))
        .header(header::AUTHORIZATION, target.bearer("admin-mfa"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{"subject":"svc:tour","roles":["reporter"],"description":"tour client"}"#)
        .send()
        .await;
    let (status, issued) = match issued {
        Ok(r) => (r.status().as_u16(), r.json_or_default().await),
        Err(_) => (0, serde_json::Value::Null),
    };
    let key_id = issued["key_id"].as_str().unwrap_or_default().to_owned();
    let secret = remember(issued["secret"].as_str().unwrap_or_default());
    if !secret.is_empty() {
        println!("  access key issued: {key_id} / {secret} (the secret is shown once)");
    }
    rows.push(Row::new(
        "issue an access key (admin with MFA)",
        "201, secret shown once",
        format!("{status}, {}-character secret", secret.len()),
        status == 201 && secret.len() == 40,
    ));
    let listed = http
        .get(admin("/admin/orgs/acme/access-keys"))
        .header(header::AUTHORIZATION, target.bearer("admin-mfa"))
        .send()
        .await;
    let listed = match listed {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => e.to_string(),
    };
    rows.push(Row::new(
        "list access keys",
        "metadata only, no secret",
        if listed.contains(&secret) {
            "secret listed"
        } else {
            "metadata only"
        },
        !secret.is_empty() && listed.contains(&key_id) && !listed.contains(&secret),
    ));

    let signer = TourSigner {
        key_id: key_id.clone(),
        secret,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let send = |method: Method, path_query: String, signed: &Signed, body: &'static str| {
        let mut req = http.request(method, format!("https://{host}{path_query}"));
        for (name, value) in &signed.headers {
            req = req.header(*name, value);
        }
        req.body(body).send()
    };
    let status =
        |res: Result<Response, reqwest::Error>| res.map(|r| r.status().as_u16()).unwrap_or(0);

    // A valid signed GET: the identity is the key's service account in its org.
    let signed = signer.sign("GET", &host, "/api/hello?view=full", b"", now, true);
    let res = send(Method::GET, "/api/hello?view=full".into(), &signed, "").await;
    let (code, body) = match res {
        Ok(r) => (r.status().as_u16(), r.json_or_default().await),
        Err(_) => (0, serde_json::Value::Null),
    };
    rows.push(Row::new(
        "access-key signed request (SigV4 + nonce)",
        "200 as svc:tour of acme",
        format!("{code} as {} of {}", body["hello"], body["org"]),
        code == 200 && body["hello"] == "svc:tour" && body["org"] == "acme",
    ));

    // The same POST, sent twice.
    let body = r#"{"order":42}"#;
    let signed = signer.sign("POST", &host, "/api/echo", body.as_bytes(), now, true);
    let first = status(send(Method::POST, "/api/echo".into(), &signed, body).await);
    let again = status(send(Method::POST, "/api/echo".into(), &signed, body).await);
    rows.push(Row::new(
        "replay a signed request",
        "401 (first 200)",
        format!("{again} (first {first})"),
        first == 200 && again == 401,
    ));

    let signed = signer.sign("POST", &host, "/api/echo", body.as_bytes(), now, true);
    let got = status(
        send(
            Method::POST,
            "/api/echo".into(),
            &signed,
            r#"{"order":4200}"#,
        )
        .await,
    );
    rows.push(Row::new(
        "tamper with a signed body",
        "401",
        got.to_string(),
        got == 401,
    ));

    let signed = signer.sign("GET", &host, "/api/hello?view=full", b"", now, true);
    let got = status(send(Method::GET, "/api/hello?view=admin".into(), &signed, "").await);
    rows.push(Row::new(
        "tamper with a signed query",
        "401",
        got.to_string(),
        got == 401,
    ));

    let signed = signer.sign("GET", &host, "/api/hello", b"", now - 600, true);
    let got = status(send(Method::GET, "/api/hello".into(), &signed, "").await);
    rows.push(Row::new(
        "sign with a clock 10 minutes behind",
        "401",
        got.to_string(),
        got == 401,
    ));

    let signed = signer.sign("GET", &host, "/api/hello", b"", now, false);
    let got = status(send(Method::GET, "/api/hello".into(), &signed, "").await);
    rows.push(Row::new(
        "leave the nonce unsigned",
        "401",
        got.to_string(),
        got == 401,
    ));

    // A signed streaming upload (aws-chunked): every chunk verified before the handler runs.
    let data: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let put_stream = |signed: &Signed, body: Vec<u8>| {
        let mut req = http.put(format!("https://{host}/api/streams/report.csv"));
        for (name, value) in &signed.headers {
            req = req.header(*name, value);
        }
        req.body(body).send()
    };
    let (signed, body) = signer.sign_stream(&host, "/api/streams/report.csv", &data, 8192, now);
    let (code, answer) = match put_stream(&signed, body).await {
        Ok(r) => (r.status().as_u16(), r.json_or_default().await),
        Err(_) => (0, serde_json::Value::Null),
    };
    rows.push(Row::new(
        "signed streaming upload (aws-chunked, 3 chunks of up to 8 KiB)",
        "200, 20000 bytes decoded",
        format!("{code}, {} bytes decoded", answer["bytes"]),
        code == 200 && answer["bytes"] == 20_000,
    ));
    let (signed, mut body) = signer.sign_stream(&host, "/api/streams/report.csv", &data, 8192, now);
    let last_data = body.len() - 200;
    body[last_data] ^= 1;
    let got = status(put_stream(&signed, body).await);
    rows.push(Row::new(
        "tamper with one chunk of a streaming upload",
        "401",
        got.to_string(),
        got == 401,
    ));

    let disabled = http
        .post(admin(&format!("/admin/access-keys/{key_id}/disable")))
        .header(header::AUTHORIZATION, target.bearer("admin-mfa"))
        .send()
        .await;
    let disabled = status(disabled);
    let signed = signer.sign("GET", &host, "/api/hello", b"", now, true);
    let got = status(send(Method::GET, "/api/hello".into(), &signed, "").await);
    rows.push(Row::new(
        "use a disabled access key",
        "401 (disable 204)",
        format!("{got} (disable {disabled})"),
        disabled == 204 && got == 401,
    ));
    rows
}

/// In production, tokens go to the mailbox only: sign-up and reset answer 202 with nothing in
/// the body, whether or not the address has an account.
async fn production_mail_rows(target: &Target, http: &Client) -> Vec<Row> {
    let base = format!("https://{PUBLIC_HOST}:{}", target.https.port());
    let email = format!("prod-{}@example.com", std::process::id());
    let mut answers = Vec::new();
    for (path, body) in [
        (
            "/auth/signup",
            serde_json::json!({"email": email, "password": "correct horse battery staple"}),
        ),
        (
            "/auth/signup",
            serde_json::json!({"email": email, "password": "another long passphrase"}),
        ),
        ("/auth/reset/request", serde_json::json!({"email": email})),
        (
            "/auth/reset/request",
            serde_json::json!({"email": "nobody-here@example.com"}),
        ),
    ] {
        let res = http
            .post(format!("{base}{path}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await;
        answers.push(match res {
            Ok(r) => {
                let status = r.status().as_u16();
                format!("{status} {}", r.text().await.unwrap_or_default())
            }
            Err(e) => format!("error: {e}"),
        });
    }
    let pass = answers.iter().all(|a| a == "202 {}");
    vec![Row::new(
        "production sign-up (new, taken) and reset (known, unknown): no token in any answer",
        "202 {} four times",
        answers.join(" | "),
        pass,
    )]
}

/// Rows against a demo behind a proxy (see `harness::proxied_demo_env`): this client plays the
/// trusted proxy and appends the "real" client address, as nginx's
/// `$proxy_add_x_forwarded_for` does; 192.0.2.0/24 and the proxy may use the admin surface.
pub(crate) async fn run_behind_proxy(target: &Target) -> Vec<Row> {
    let http = match client(target) {
        Ok(c) => c,
        Err(e) => return vec![Row::new("build the tour's HTTPS client", "ok", e, false)],
    };
    let url = format!("https://{ADMIN_HOST}:{}/admin/status", target.https.port());
    let cases = [
        (
            "via proxy: admin from an allowlisted client",
            &b"192.0.2.5"[..],
            200,
        ),
        (
            "via proxy: spoofed leftmost X-Forwarded-For",
            &b"192.0.2.5, 203.0.113.9"[..],
            404,
        ),
        (
            "via proxy: non-UTF-8 bytes before the proxy's entry",
            &b"192.0.2.5\xff\xfe, 203.0.113.9"[..],
            404,
        ),
        (
            "via proxy: malformed entry from the proxy",
            &b"192.0.2.5, not-an-ip"[..],
            404,
        ),
    ];
    let mut rows = Vec::new();
    for (attack, xff, want) in cases {
        let value = match reqwest::header::HeaderValue::from_bytes(xff) {
            Ok(v) => v,
            Err(e) => {
                rows.push(Row::new(
                    attack,
                    &want.to_string(),
                    format!("error: {e}"),
                    false,
                ));
                continue;
            }
        };
        let res = http
            .get(&url)
            .header("x-forwarded-for", value)
            .header(header::AUTHORIZATION, target.bearer("admin-mfa"))
            .send()
            .await;
        rows.push(status_row(
            attack,
            StatusCode::from_u16(want).unwrap_or(StatusCode::IM_A_TEAPOT),
            &res,
        ));
    }
    rows
}

/// Throttling after authentication: a user's burst then 429 with the IETF fields, a claimed
/// org that is not the token's, spoofed forwarding headers, an unlimited org.
/// Documents authorized through the real Cerbos PDP (policies/document.yaml). `docs-user`
/// is a member of org-1 and an admin of org-2 (group paths); `docs-user-mfa` is the same with
/// a second factor. Document d1 belongs to org-1.
async fn authz_rows(target: &Target, http: &Client) -> Vec<Row> {
    let api = |path: &str| format!("https://{PUBLIC_HOST}:{}{path}", target.https.port());
    let mut rows = Vec::new();
    let call = |post: bool, persona: &str, path: &str| {
        let builder = if post {
            http.post(api(path))
        } else {
            http.get(api(path))
        };
        builder
            .header(header::AUTHORIZATION, target.bearer(persona))
            .send()
    };
    let status = |r: Result<reqwest::Response, reqwest::Error>| match r {
        Ok(r) => r.status().as_u16().to_string(),
        Err(e) => format!("error: {e}"),
    };
    let got = status(call(false, "docs-user", "/api/orgs/org-1/documents/d1").await);
    rows.push(Row::new(
        "read a document of one's own org (Cerbos)",
        "200",
        got.clone(),
        got == "200",
    ));
    let got = status(call(false, "docs-user-mfa", "/api/orgs/org-2/documents/d1").await);
    rows.push(Row::new(
        "read org-1's document as org-2 (admin there, member of org-1)",
        "403 (org-2's roles never reach org-1's document)",
        got.clone(),
        got == "403",
    ));
    let without = status(call(true, "docs-user", "/api/orgs/org-1/documents/d1/export").await);
    let with = status(call(true, "docs-user-mfa", "/api/orgs/org-1/documents/d1/export").await);
    rows.push(Row::new(
        "export a document without MFA (MFA-gated action)",
        "403 without MFA, 200 with",
        format!("{without} without, {with} with"),
        without == "403" && with == "200",
    ));
    let Some(pdp) = &target.pdp else {
        rows.push(Row::new("PDP stopped", "503", "no PDP in this run", false));
        return rows;
    };
    let stopped = pdp.lock().map(|mut p| p.stop()).is_ok();
    let got = status(call(true, "docs-user-mfa", "/api/orgs/org-1/documents/d1/export").await);
    let restarted = pdp
        .lock()
        .map_err(|e| e.to_string())
        .and_then(|mut p| p.restart());
    rows.push(Row::new(
        "PDP stopped, then export (never cached)",
        "503, not 200",
        format!(
            "{got}{}",
            if restarted.is_ok() {
                ""
            } else {
                " (PDP did not restart)"
            }
        ),
        stopped && got == "503" && restarted.is_ok(),
    ));
    rows
}

async fn throttle_rows(target: &Target, http: &Client) -> Vec<Row> {
    let api = |path: &str| format!("https://{PUBLIC_HOST}:{}{path}", target.https.port());
    let mut rows = Vec::new();

    // The demo's user quota is 8 a minute: eight go through, the ninth is refused with the
    // standard fields naming the user rule and when to come back.
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..9 {
        match http
            .get(api("/api/orgs/org-1/usage"))
            .header(header::AUTHORIZATION, target.bearer("api-user"))
            .send()
            .await
        {
            Ok(res) => {
                statuses.push(res.status().as_u16());
                last = Some(res);
            }
            Err(e) => {
                rows.push(Row::new(
                    "burst past the user quota",
                    "8 x 200, then 429",
                    format!("error: {e}"),
                    false,
                ));
                return rows;
            }
        }
    }
    let (retry, policy, state) = last
        .as_ref()
        .map(|r| {
            (
                header_str(r, "retry-after"),
                header_str(r, "ratelimit-policy"),
                header_str(r, "ratelimit"),
            )
        })
        .unwrap_or_default();
    let retry_secs: u64 = retry.parse().unwrap_or(0);
    let pass = statuses[..8].iter().all(|s| *s == 200)
        && statuses[8] == 429
        && (1..=8).contains(&retry_secs)
        && policy == "\"user\";q=8;w=60"
        && state == format!("\"user\";r=0;t={retry_secs}");
    rows.push(Row::new(
        "burst past the user quota",
        "8 x 200, then 429 + Retry-After + RateLimit fields",
        format!("{statuses:?} retry-after={retry} policy={policy} ratelimit={state}"),
        pass,
    ));

    // A token of org-1 naming org-2, in the path or in a header: refused before counting.
    let res = http
        .get(api("/api/orgs/org-2/usage"))
        .header(header::AUTHORIZATION, target.bearer("other-tenant"))
        .header("x-org-id", "org-1")
        .send()
        .await;
    rows.push(status_row(
        "claim another org in x-org-id",
        StatusCode::FORBIDDEN,
        &res,
    ));
    let res = http
        .get(api("/api/orgs/org-1/usage"))
        .header(header::AUTHORIZATION, target.bearer("other-tenant"))
        .send()
        .await;
    rows.push(status_row(
        "claim another org in the path",
        StatusCode::FORBIDDEN,
        &res,
    ));

    // Anonymous callers are counted by the connection's address: a new X-Forwarded-For (or
    // Forwarded) per request does not buy a new bucket (5 a minute).
    let mut statuses = Vec::new();
    for i in 0..7 {
        let res = http
            .get(api("/public/status"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .header("forwarded", format!("for=198.51.100.{i}"))
            .send()
            .await;
        statuses.push(res.map_or(0, |r| r.status().as_u16()));
    }
    rows.push(Row::new(
        "rotate X-Forwarded-For to reset the anonymous limit",
        "5 x 200, then 429",
        format!("{statuses:?}"),
        statuses == [200, 200, 200, 200, 200, 429, 429],
    ));

    // org-2 carries the unlimited flag: well past every quota, never refused.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let res = http
            .get(api("/api/orgs/org-2/usage"))
            .header(header::AUTHORIZATION, target.bearer("other-tenant"))
            .send()
            .await;
        statuses.push(res.map_or(0, |r| r.status().as_u16()));
    }
    rows.push(Row::new(
        "an org flagged unlimited, 20 requests",
        "20 x 200",
        format!("{} x 200", statuses.iter().filter(|s| **s == 200).count()),
        statuses.iter().all(|s| *s == 200),
    ));
    rows
}

/// Prints the table; returns whether every row passed.
pub(crate) fn print(rows: &[Row]) -> bool {
    let w_attack = rows
        .iter()
        .map(|r| r.attack.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let w_expected = rows
        .iter()
        .map(|r| r.expected.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let w_got = rows
        .iter()
        .map(|r| r.got.len().min(60))
        .max()
        .unwrap_or(3)
        .max(3);
    println!(
        "{:<w_attack$}  {:<w_expected$}  {:<w_got$}  result",
        "attack", "expected", "got"
    );
    println!("{}", "-".repeat(w_attack + w_expected + w_got + 12));
    for r in rows {
        let got: String = r.got.chars().take(60).collect();
        println!(
            "{:<w_attack$}  {:<w_expected$}  {:<w_got$}  {}",
            r.attack,
            r.expected,
            got,
            if r.pass { "pass" } else { "FAIL" }
        );
    }
    let failed = rows.iter().filter(|r| !r.pass).count();
    println!(
        "{} rows: {} passed, {} failed",
        rows.len(),
        rows.len() - failed,
        failed
    );
    failed == 0
}

/// The demo's audit records (one JSON object per line; unparsable lines are skipped: the
/// verifier row judges the file).
fn audit_records(log: &crate::harness::AuditLog) -> Vec<serde_json::Value> {
    std::fs::read_to_string(&log.path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Runs `palisade-audit verify --file path [--checkpoint file]`: its exit status and first
/// line of output.
fn verify_log(
    log: &crate::harness::AuditLog,
    path: &std::path::Path,
    checkpoint: Option<&std::path::Path>,
) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(&log.cli);
    cmd.args(["verify", "--file"]).arg(path);
    if let Some(cp) = checkpoint {
        cmd.arg("--checkpoint").arg(cp);
    }
    match cmd.env("AUDIT_SIGNING_KEY", &log.keys).output() {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            (
                out.status.code(),
                text.lines().next().unwrap_or_default().to_owned(),
            )
        }
        Err(e) => (None, format!("{}: {e}", log.cli.display())),
    }
}

/// Impersonation: MFA-gated, of existing users of the admin's org only, every request audited
/// before it runs, the log verifiable with `palisade-audit verify`.
async fn impersonation_rows(target: &Target, http: &Client) -> Vec<Row> {
    let port = target.https.port();
    let admin = |path: &str| format!("https://{ADMIN_HOST}:{port}{path}");
    let api = |path: &str| format!("https://{PUBLIC_HOST}:{port}{path}");
    let mut rows = Vec::new();
    let start = |persona: &str, path: &str, body: serde_json::Value| {
        http.post(admin(path))
            .header(header::AUTHORIZATION, target.bearer(persona))
            .header("x-request-id", format!("tour-start-{persona}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
    };
    let answer = |res: Result<Response, reqwest::Error>| async move {
        match res {
            Ok(r) => (r.status().as_u16(), r.json_or_default().await),
            Err(_) => (0, serde_json::Value::Null),
        }
    };

    // Without a second factor: refused by the admin surface, nothing issued.
    let (status, body) = answer(
        start(
            "admin-no-mfa",
            "/admin/impersonation",
            serde_json::json!({"org": "org-1", "user": "alice"}),
        )
        .await,
    )
    .await;
    rows.push(Row::new(
        "impersonate a user without MFA",
        "401, no credential",
        status.to_string(),
        status == 401 && body["access_token"].is_null(),
    ));

    // A user of another org: an org admin of org-1 naming org-2, and a global admin naming
    // org-2's user under org-1.
    let (by_org_admin, _) = answer(
        start(
            "org-admin",
            "/admin/orgs/org-2/impersonation",
            serde_json::json!({"user": "bob"}),
        )
        .await,
    )
    .await;
    let (by_global_admin, _) = answer(
        start(
            "admin-mfa",
            "/admin/impersonation",
            serde_json::json!({"org": "org-1", "user": "bob"}),
        )
        .await,
    )
    .await;
    rows.push(Row::new(
        "impersonate a user of another org",
        "403 (org admin), 403 (user not in the org)",
        format!("{by_org_admin}, {by_global_admin}"),
        by_org_admin == 403 && by_global_admin == 403,
    ));

    // The same org admin in its own org: allowed (and ended at once).
    let (own, grant) = answer(
        start(
            "org-admin",
            "/admin/orgs/org-1/impersonation",
            serde_json::json!({"user": "alice"}),
        )
        .await,
    )
    .await;
    let id = grant["impersonation"].as_str().unwrap_or_default();
    let ended = match http
        .post(admin(&format!("/admin/orgs/org-1/impersonation/{id}/end")))
        .header(header::AUTHORIZATION, target.bearer("org-admin"))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    };
    rows.push(Row::new(
        "org admin impersonates a user of its own org, then ends it",
        "201, 204",
        format!("{own}, {ended}"),
        own == 201 && ended == 204,
    ));

    // A user that does not exist: refused, and no user appears.
    let (status, _) = answer(
        start(
            "admin-mfa",
            "/admin/impersonation",
            serde_json::json!({"org": "org-1", "user": "mallory"}),
        )
        .await,
    )
    .await;
    let listed = match http
        .get(admin("/admin/orgs/org-1/users"))
        .header(header::AUTHORIZATION, target.bearer("admin-mfa"))
        .send()
        .await
    {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => e.to_string(),
    };
    let created = listed.contains("mallory");
    rows.push(Row::new(
        "impersonate a user that does not exist",
        "403, no user created",
        format!(
            "{status}, {}",
            if created {
                "user created"
            } else {
                "no user created"
            }
        ),
        status == 403 && listed.contains("alice") && !created,
    ));

    // Another admin: refused by default.
    let (status, _) = answer(
        start(
            "admin-mfa",
            "/admin/impersonation",
            serde_json::json!({"org": "org-1", "user": "carol"}),
        )
        .await,
    )
    .await;
    rows.push(Row::new(
        "impersonate another admin",
        "403",
        status.to_string(),
        status == 403,
    ));

    // A real impersonation: every request made with it is in the audit log, written before
    // the request ran.
    let (status, grant) = answer(
        start(
            "admin-mfa",
            "/admin/impersonation",
            serde_json::json!({"org": "org-1", "user": "alice"}),
        )
        .await,
    )
    .await;
    let token = remember(grant["access_token"].as_str().unwrap_or_default());
    let id = grant["impersonation"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let acted = match http
        .get(api("/api/hello"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header("x-request-id", "tour-impersonated-hello")
        .send()
        .await
    {
        Ok(r) => (r.status().as_u16(), r.json_or_default().await),
        Err(_) => (0, serde_json::Value::Null),
    };
    let audited = target.audit.as_ref().is_some_and(|log| {
        audit_records(log).iter().any(|r| {
            r["action"] == "impersonation.request"
                && r["target"] == "alice"
                && r["org"] == "org-1"
                && r["request_id"] == "tour-impersonated-hello"
                && r["details"]["path"] == "/api/hello"
                && r["actor"]
                    .as_str()
                    .is_some_and(|a| !a.is_empty() && a != "alice")
        })
    });
    rows.push(Row::new(
        "act while impersonating",
        "201, 200 as the user, in the audit log",
        format!(
            "{status}, {} as {}, {}",
            acted.0,
            acted.1["hello"].as_str().unwrap_or("?"),
            if audited { "audited" } else { "not audited" }
        ),
        status == 201 && acted.0 == 200 && acted.1["hello"] == "alice" && audited,
    ));

    // A WebSocket would outlive the impersonation's end, its messages unaudited: refused.
    let socket = match http
        .get(api("/api/ws"))
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header(
            "sec-websocket-protocol",
            format!("chat.v1, palisade.bearer.{token}"),
        )
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    };
    rows.push(Row::new(
        "open a WebSocket while impersonating",
        "403",
        socket.to_string(),
        socket == 403,
    ));

    // The admin ends it: the credential is refused from then on, and the end is recorded.
    let ended = match http
        .post(admin(&format!("/admin/impersonation/{id}/end")))
        .header(header::AUTHORIZATION, target.bearer("admin-mfa"))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    };
    let after = match http
        .get(api("/api/hello"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    };
    let recorded = target.audit.as_ref().is_some_and(|log| {
        audit_records(log).iter().any(|r| {
            r["action"] == "impersonation.end"
                && r["details"]["impersonation"] == id.as_str()
                && r["details"]["reason"] == "ended"
        })
    });
    rows.push(Row::new(
        "use an impersonation after it ended",
        "204 end (recorded), then 401",
        format!(
            "{ended} end ({}), then {after}",
            if recorded { "recorded" } else { "not recorded" }
        ),
        ended == 204 && recorded && after == 401,
    ));

    // The log verifies; one changed byte is found.
    let Some(log) = &target.audit else {
        rows.push(Row::new(
            "verify the audit log",
            "palisade-audit verify: ok",
            "no audit log configured",
            false,
        ));
        return rows;
    };
    // The admin takes a signed checkpoint of the head (to keep elsewhere).
    let checkpoint = match http
        .post(admin("/admin/audit/checkpoint"))
        .header(header::AUTHORIZATION, target.bearer("admin-mfa"))
        .send()
        .await
    {
        Ok(r) if r.status() == StatusCode::OK => r.text().await.unwrap_or_default(),
        _ => String::new(),
    };
    let cp = log.path.with_extension("checkpoint.json");
    let have_cp = !checkpoint.is_empty() && std::fs::write(&cp, &checkpoint).is_ok();
    let (code, line) = verify_log(log, &log.path, have_cp.then_some(cp.as_path()));
    rows.push(Row::new(
        "verify the demo's audit log (palisade-audit verify)",
        "exit 0 (against a signed checkpoint)",
        format!(
            "exit {}: {line}{}",
            code.unwrap_or(-1),
            if have_cp { "" } else { " (no checkpoint)" }
        ),
        code == Some(0) && have_cp,
    ));
    let copy = log.path.with_extension("tampered.jsonl");
    let tampered = std::fs::read(&log.path).ok().and_then(|mut bytes| {
        // One byte of the first record naming the impersonated user: "alice" becomes "alicf".
        let at = bytes.windows(7).position(|w| w == b"\"alice\"")?;
        bytes[at + 5] = b'f';
        std::fs::write(&copy, bytes).ok()
    });
    let (code, line) = match tampered {
        Some(()) => verify_log(log, &copy, None),
        None => (None, "could not make the tampered copy".to_owned()),
    };
    rows.push(Row::new(
        "change one byte of the audit log",
        "palisade-audit verify: exit 1",
        format!("exit {}: {line}", code.unwrap_or(-1)),
        code == Some(1),
    ));
    // The last records cut off: found against the checkpoint.
    let cut = std::fs::read_to_string(&log.path).ok().and_then(|text| {
        let lines: Vec<&str> = text.lines().collect();
        let keep = lines.len().checked_sub(2)?;
        let head: String = lines[..keep].iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&copy, head).ok()
    });
    let (code, line) = match cut {
        Some(()) if have_cp => verify_log(log, &copy, Some(&cp)),
        _ => (None, "could not make the cut copy".to_owned()),
    };
    let _ = std::fs::remove_file(&copy);
    let _ = std::fs::remove_file(&cp);
    rows.push(Row::new(
        "cut the last records off the audit log",
        "palisade-audit verify --checkpoint: exit 1",
        format!("exit {}: {line}", code.unwrap_or(-1)),
        code == Some(1),
    ));
    rows
}

/// The metric families the tour's traffic must have produced.
const METRICS: [&str; 12] = [
    "palisade_authn_failures_total{reason=\"missing_token\"}",
    "palisade_authn_failures_total{reason=\"bad_signature\"}",
    "palisade_aksk_failures_total{reason=\"replay\"}",
    "palisade_throttle_decisions_total{decision=\"limited\"}",
    "palisade_throttle_limited_total{",
    "palisade_authz_cache_total{result=\"miss\"}",
    "palisade_authz_pdp_seconds",
    "palisade_audit_writes_total{sink=\"jsonl\",outcome=\"ok\"}",
    // Store health: every store the tour used answered its last call.
    "palisade_store_up{store=\"throttle\"} 1",
    "palisade_store_up{store=\"access-keys\"} 1",
    "palisade_store_up{store=\"nonces\"} 1",
    "palisade_store_up{store=\"sessions\"} 1",
];

/// Metrics: the demo's loopback scrape endpoint reports what the tour did.
async fn metrics_rows(target: &Target) -> Vec<Row> {
    let attack = "read the layers' metrics (Prometheus, loopback)";
    let Some(addr) = target.metrics else {
        return vec![Row::new(attack, "a scrape endpoint", "none", false)];
    };
    let text = match reqwest::Client::builder().no_proxy().build() {
        Ok(c) => match c.get(format!("http://{addr}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    let missing: Vec<&str> = METRICS
        .iter()
        .copied()
        .filter(|m| !text.contains(m))
        .collect();
    vec![Row::new(
        attack,
        &format!("{} metric series, on {}", METRICS.len(), addr.ip()),
        if missing.is_empty() {
            "all".to_owned()
        } else {
            format!("missing {missing:?}")
        },
        missing.is_empty() && addr.ip().is_loopback(),
    )]
}
