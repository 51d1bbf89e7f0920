//! The catalogue of posture checks: every finding code a Palisade builder records, with a
//! stable id in the style of Django's `check --deploy` (`<area>.<level><number>`, the level
//! `E` for findings that refuse a production start, `W` for warnings, `I` for information),
//! a title and the fix. Ids never change meaning and are never reused; `docs/posture.md`
//! lists them all.
//!
//! ```
//! use palisade_core::checks;
//!
//! let check = checks::find("csp-unsafe-inline").expect("catalogued");
//! assert_eq!(check.id, "csp.E003");
//! assert!(check.fix.contains("nonce"));
//! ```

use crate::Severity;

/// One catalogued check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Check {
    /// The stable id (`csp.E003`).
    pub id: &'static str,
    /// The code builders record (`csp-unsafe-inline`).
    pub code: &'static str,
    /// What it finds.
    pub title: &'static str,
    /// How to fix it.
    pub fix: &'static str,
}

impl Check {
    /// The most severe level a finding of this check is recorded at (from the id's letter).
    pub fn level(&self) -> Severity {
        match self.id.split('.').nth(1).and_then(|n| n.chars().next()) {
            Some('E') => Severity::Deny,
            Some('W') => Severity::Warn,
            _ => Severity::Info,
        }
    }
}

macro_rules! checks {
    ($(($id:literal, $code:literal, $title:literal, $fix:literal),)*) => {
        /// Every check, in id order within each area.
        pub const CHECKS: &[Check] = &[$(Check { id: $id, code: $code, title: $title, fix: $fix },)*];
    };
}

checks! {
    // Content-Security-Policy.
    ("csp.E001", "csp-missing", "No Content-Security-Policy", "Set a policy: `SecurityHeadersBuilder::csp(ContentSecurityPolicy::strict())` (a per-response nonce with 'strict-dynamic')."),
    ("csp.E002", "csp-no-script-src", "Neither script-src nor default-src", "Add script-src (or default-src); `ContentSecurityPolicy::strict()` sets both."),
    ("csp.E003", "csp-unsafe-inline", "'unsafe-inline' allowed for scripts", "Remove 'unsafe-inline' from script-src; give each inline script the response's nonce (`CspNonce`)."),
    ("csp.E004", "csp-unsafe-eval", "'unsafe-eval' allowed for scripts", "Remove 'unsafe-eval'; replace eval, new Function and string timers (use 'wasm-unsafe-eval' for WebAssembly only)."),
    ("csp.E005", "csp-broad-script-src", "Scripts allowed from any host or a whole scheme", "Drop host wildcards and bare schemes (https:, data:, blob:) from script-src, or pair them with 'strict-dynamic' and a nonce."),
    ("csp.E006", "csp-strict-dynamic-without-nonce", "'strict-dynamic' without a nonce or hash", "Add the response nonce (`Source::NONCE`) or a script hash next to 'strict-dynamic'."),
    ("csp.E007", "csp-no-object-src", "No object-src restriction", "Add `object-src 'none'`."),
    ("csp.E008", "csp-no-base-uri", "No base-uri restriction", "Add `base-uri 'none'` (or 'self')."),
    ("csp.E009", "report-endpoint-http", "A reporting endpoint over plain HTTP", "Use an https:// URL in `reporting_endpoint`."),
    ("csp.W001", "csp-no-frame-ancestors", "No frame-ancestors", "Add `frame-ancestors 'none'` (or the origins allowed to frame the pages)."),
    ("csp.W002", "report-to-undefined", "report-to names an undefined group", "Define the group with `reporting_endpoint(name, url)`, or drop report-to."),
    ("csp.I001", "csp-report-only", "A report-only policy is set", "Nothing to fix: it trials a stricter policy; enforce it once its reports are clean."),
    // Other security headers.
    ("headers.E001", "hsts-missing", "No Strict-Transport-Security", "Keep HSTS on (`Hsts::new` with at least one year; the default is two years with includeSubDomains)."),
    ("headers.E002", "hsts-short", "HSTS max-age under a year", "Raise max-age to at least 31536000 seconds."),
    ("headers.E003", "framing-allowed", "Pages can be framed (clickjacking)", "Keep `X-Frame-Options: DENY` or set frame-ancestors in the CSP."),
    ("headers.W001", "hsts-no-subdomains", "HSTS without includeSubDomains", "Add includeSubDomains once every subdomain serves HTTPS."),
    ("headers.W002", "referrer-leaky", "Referrer-Policy leaks full URLs", "Use `strict-origin-when-cross-origin` (the default) or `no-referrer`."),
    // CORS.
    ("cors.E001", "cors-http-origin", "A plain-HTTP origin is allowed", "List https:// origins only."),
    ("cors.E002", "cors-localhost-origin", "A localhost origin is allowed", "Remove localhost origins outside development."),
    ("cors.E003", "cors-wildcard-origin", "A wildcard CORS origin", "List the allowed https:// origins one by one: Palisade has no wildcard and never mirrors the request's Origin."),
    ("cors.I001", "cors-no-origins", "No origin is allowed", "Nothing to fix if no browser app calls the API from another origin."),
    ("cors.I002", "cors-max-age-capped", "Preflight max-age capped", "Nothing to fix: browsers cap it anyway (Chromium at 2 hours)."),
    // HTTPS enforcement.
    ("https.W001", "https-redirect-to-request-host", "HTTPS redirects go to the request's Host", "Set `RequireHttpsLayer::builder().canonical_host(...)`."),
    // Admin surface.
    ("admin.E001", "admin-host-not-a-name", "The admin hostname is not a DNS name of its own", "Set ADMIN_HOSTNAME to the admin surface's own name (not localhost, an address or the public host)."),
    ("admin.W001", "admin-allowlist-everything", "The admin client allow-list allows everyone", "Narrow `allow_client_ips` to the operators' networks."),
    ("admin.I001", "admin-no-ip-allowlist", "No admin client allow-list", "Consider `allow_client_ips` for the operators' networks."),
    // Forwarded headers.
    ("proxy.E001", "proxy-trusts-everyone", "Every peer is trusted as a proxy", "List only your proxies' addresses in `TrustedProxies`."),
    ("proxy.W001", "proxy-block-wide", "A very wide block of trusted proxies", "Narrow the trusted proxy blocks to the proxies themselves."),
    // Token authentication.
    ("authn.E001", "authn-no-issuer", "No issuer is trusted", "Add an `IssuerConfig` for the Keycloak realm (or the local issuer)."),
    ("authn.E002", "authn-http-issuer", "An issuer over plain HTTP", "Use the realm's https:// issuer URL."),
    ("authn.E003", "authn-http-jwks", "A JWKS URL over plain HTTP", "Use an https:// JWKS URL (or discovery from an https:// issuer)."),
    ("authn.E004", "authn-any-client", "A surface accepts any audience or client", "Set `SurfacePolicy::audiences` and `authorized_parties` for every surface."),
    ("authn.E005", "authn-admin-without-mfa", "An admin surface without MFA", "Call `SurfacePolicy::require_mfa(true)` on `global-admin` and `org-admin` surfaces (and `mfa_acr_values` for the realm's levels)."),
    ("authn.W001", "authn-no-max-age", "No maximum token age", "Set `IssuerConfig::max_age` (for example 1 hour)."),
    ("authn.W002", "authn-large-tokens", "Token size cap above 64 KiB", "Keep the token size cap at 64 KiB or below."),
    ("jwt.E001", "local-jwt-generated-key", "Local JWTs signed with a generated key", "Configure a key ring: `LocalJwtIssuer::builder(..).key_ring(..)`."),
    ("jwt.W001", "local-jwt-long-ttl", "Local access tokens live over an hour", "Keep local access tokens at an hour or less; refresh them."),
    // Access keys.
    ("aksk.E001", "aksk-window-too-long", "The signing window is too long", "Keep the window at 5 minutes or less (the default is 2)."),
    ("aksk.E002", "aksk-window-zero", "The signing window is zero", "Set a window (the default is 2 minutes)."),
    ("aksk.E003", "aksk-scope-invalid", "An invalid service or region", "Use 1 to 64 characters of A-Z, a-z, 0-9, '-' and '_'."),
    ("aksk.W001", "aksk-unsigned-payload-routes", "Unsigned payloads accepted on some routes", "Limit `allow_unsigned_payload_on` to routes whose bodies need no integrity."),
    ("aksk.W002", "aksk-any-host", "Signed requests accepted for any host", "Set `allowed_hosts` to the service's names."),
    ("aksk.W003", "aksk-no-body", "The body limit is zero", "Set a body limit that fits the API's requests."),
    ("aksk.I001", "aksk-streaming-payload-routes", "Streaming (aws-chunked) payloads on some routes", "Nothing to fix: chunks are verified as they arrive."),
    // Local password login.
    ("login.W001", "local-login-process-limits", "Password login's attempt limits are per process", "Behind several replicas, add a shared limit on the login route (a `palisade-throttle` rule with the Redis store), or keep local login off (`LOCAL_AUTH_ENABLED`)."),
    // Throttling.
    ("throttle.E001", "throttle-missing", "No rate limit in the stack", "Build a `palisade-throttle` `ThrottleLayer` through `Hardening` (an anonymous and a per-org or per-user rule), or call `Hardening::rate_limited_elsewhere` naming what limits requests."),
    ("throttle.W001", "throttle-fails-open", "A rule lets requests through when the store fails", "Keep `FailurePolicy::Closed` (the default) unless the route must stay up without its limit; alert on `palisade_store_errors_total`."),
    ("throttle.W002", "throttle-no-anonymous-rule", "No limit for anonymous callers", "Add a `Scope::Anonymous` rule (limited per client network)."),
    ("throttle.I001", "throttle-elsewhere", "Request rates are limited outside the stack", "Nothing to fix: keep that limit in place (an API gateway, a proxy)."),
    // Keys.
    ("keys.E001", "field-crypto-ephemeral-key", "Field encryption with a generated key", "Set FIELD_ENCRYPTION_KEYS (a key ring)."),
    ("keys.E002", "session-keys-missing", "No key ring for refresh tokens and single-use tokens", "Set the session key ring."),
    ("keys.E003", "impersonation-keys-missing", "No key ring for impersonation credentials", "Set the impersonation key ring."),
    ("keys.E004", "key-ring-invalid", "A key ring that does not parse (a key shorter than 32 bytes, bad base64, a duplicate id)", "Give every key at least 32 random bytes, base64-encoded: `<id> <version> <material>` per line."),
    ("audit.E001", "audit-signing-key-missing", "No audit signing key", "Set AUDIT_SIGNING_KEY (a key ring)."),
    ("audit.E002", "audit-log-missing", "No audit log configured", "Configure the audit sink (a JSON Lines file or PostgreSQL)."),
    ("audit.E003", "audit-log-unusable", "The audit log cannot be continued", "Give the keys that signed the log's last record (see the key-rotation runbook), or repair the log."),
    // Authorization.
    ("authz.E001", "authz-pdp-plaintext", "The Cerbos PDP is reached without TLS", "Serve the PDP over TLS and drop `insecure_plaintext_loopback` (verification is on by default; add the PDP's CA with `ca_certificate_pem`)."),
    // Debugging.
    ("debug.E001", "debug-switch-on", "A test or debugging switch is on", "Turn it off: test clocks, mail outboxes and debug endpoints are for development only."),
    // The assembly.
    ("posture.E001", "profile-mismatch", "A layer checked under another profile than the assembly", "Pass the assembly's profile (`Hardening::profile()`) to every builder, and build the client-IP layer with `ClientIpLayer::checked`."),
    // Stores.
    ("store.E001", "store-plaintext", "A store on another host without verified TLS", "Use rediss:// or PostgreSQL sslmode=verify-full for stores off the host."),
    ("store.E002", "store-url", "A store URL that cannot be checked", "Fix the URL (scheme, host and TLS mode)."),
}

/// The check recording `code`, if catalogued.
pub fn find(code: &str) -> Option<&'static Check> {
    CHECKS.iter().find(|c| c.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_codes_are_unique_and_well_formed() {
        let mut ids = std::collections::BTreeSet::new();
        let mut codes = std::collections::BTreeSet::new();
        for c in CHECKS {
            assert!(ids.insert(c.id), "duplicate id {}", c.id);
            assert!(codes.insert(c.code), "duplicate code {}", c.code);
            let (area, rest) = c.id.split_once('.').expect("area.level");
            assert!(!area.is_empty() && area.bytes().all(|b| b.is_ascii_lowercase()));
            let (level, number) = rest.split_at(1);
            assert!(["E", "W", "I"].contains(&level), "{}", c.id);
            assert!(number.len() == 3 && number.bytes().all(|b| b.is_ascii_digit()));
            assert!(!c.fix.is_empty() && !c.title.is_empty());
        }
    }
}
