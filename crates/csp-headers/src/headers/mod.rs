//! [`SecurityHeadersLayer`]: CSP with per-response nonces, HSTS, and the fixed hardening
//! headers, set on every response.
//!
//! Defaults are production values:
//!
//! | header | default |
//! |---|---|
//! | `Content-Security-Policy` | [`ContentSecurityPolicy::strict`], fresh nonce per response |
//! | `Strict-Transport-Security` | `max-age=31536000; includeSubDomains` (HTTPS responses only) |
//! | `X-Content-Type-Options` | `nosniff` |
//! | `Referrer-Policy` | `no-referrer` |
//! | `Permissions-Policy` | every powerful feature off |
//! | `Cross-Origin-Opener-Policy` | `same-origin` |
//! | `Cross-Origin-Embedder-Policy` | `require-corp` |
//! | `Cross-Origin-Resource-Policy` | `same-origin` |
//! | `X-Frame-Options` | `DENY` (alongside `frame-ancestors 'none'`) |
//! | removed | `Server`, `X-Powered-By`, `X-AspNet-Version`, `X-AspNetMvc-Version` |
//!
//! Handlers read the nonce from the [`CspNonce`] request extension. A route can replace or
//! switch off the CSP for its own responses with a [`CspOverride`] response extension.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use palisade_core::{ConnectionInfo, Profile};
//! use palisade_csp_headers::{CspNonce, SecurityHeadersLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = SecurityHeadersLayer::builder().profile(Profile::Production).build()?;
//! let svc = ServiceBuilder::new().layer(layer).service(service_fn(|req: Request<()>| async move {
//!     let nonce = req.extensions().get::<CspNonce>().unwrap().clone();
//!     Ok::<_, Infallible>(Response::new(format!("<script nonce=\"{nonce}\">go()</script>")))
//! }));
//! let mut req = Request::new(());
//! req.extensions_mut().insert(ConnectionInfo::new("192.0.2.1:443".parse()?, true));
//! let res = svc.oneshot(req).await?;
//! let csp = res.headers()["content-security-policy"].to_str()?;
//! assert!(csp.contains(&format!("'nonce-{}'", &res.body()[15..37])));
//! assert_eq!(res.headers()["strict-transport-security"], "max-age=31536000; includeSubDomains");
//! assert_eq!(res.headers()["x-content-type-options"], "nosniff");
//! # Ok(()) }
//! ```

mod service;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use palisade_core::{Finding, Posture, PostureError, Profile, Severity};

use crate::csp::{CompiledPolicy, ContentSecurityPolicy, CspNonce, is_token};
use crate::error::{BuildError, ConfigError};

pub use service::{ResponseFuture, SecurityHeaders};

/// One year, the minimum HSTS max-age accepted in production.
pub const ONE_YEAR: Duration = Duration::from_secs(31_536_000);

/// `Strict-Transport-Security` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hsts {
    max_age: Duration,
    include_subdomains: bool,
    preload: bool,
}

impl Hsts {
    /// `max-age` of `max_age`, with `includeSubDomains`, without `preload`.
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            include_subdomains: true,
            preload: false,
        }
    }

    /// Sets `includeSubDomains`.
    #[must_use]
    pub fn include_subdomains(mut self, on: bool) -> Self {
        self.include_subdomains = on;
        self
    }

    /// Sets `preload` (submit the domain to the browsers' preload list separately).
    #[must_use]
    pub fn preload(mut self, on: bool) -> Self {
        self.preload = on;
        self
    }

    fn header_value(self) -> HeaderValue {
        let mut v = format!("max-age={}", self.max_age.as_secs());
        if self.include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if self.preload {
            v.push_str("; preload");
        }
        HeaderValue::try_from(v).unwrap_or_else(|_| HeaderValue::from_static("max-age=31536000"))
    }
}

impl Default for Hsts {
    fn default() -> Self {
        Self::new(ONE_YEAR)
    }
}

macro_rules! header_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $value:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum $name { $($(#[$vdoc])* $variant,)+ }
        impl $name {
            /// The header value.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $value,)+ }
            }
        }
    };
}

header_enum!(
    /// `Referrer-Policy` values.
    ReferrerPolicy {
        /// `no-referrer`
        NoReferrer => "no-referrer",
        /// `same-origin`
        SameOrigin => "same-origin",
        /// `strict-origin`
        StrictOrigin => "strict-origin",
        /// `strict-origin-when-cross-origin`
        StrictOriginWhenCrossOrigin => "strict-origin-when-cross-origin",
        /// `no-referrer-when-downgrade` (weak)
        NoReferrerWhenDowngrade => "no-referrer-when-downgrade",
        /// `origin-when-cross-origin` (weak)
        OriginWhenCrossOrigin => "origin-when-cross-origin",
        /// `unsafe-url` (leaks full URLs)
        UnsafeUrl => "unsafe-url",
    }
);

header_enum!(
    /// `X-Frame-Options` values.
    FrameOptions {
        /// `DENY`
        Deny => "DENY",
        /// `SAMEORIGIN`
        SameOrigin => "SAMEORIGIN",
    }
);

header_enum!(
    /// `Cross-Origin-Opener-Policy` values.
    OpenerPolicy {
        /// `same-origin`
        SameOrigin => "same-origin",
        /// `same-origin-allow-popups`
        SameOriginAllowPopups => "same-origin-allow-popups",
        /// `unsafe-none`
        UnsafeNone => "unsafe-none",
    }
);

header_enum!(
    /// `Cross-Origin-Embedder-Policy` values.
    EmbedderPolicy {
        /// `require-corp`
        RequireCorp => "require-corp",
        /// `credentialless`
        Credentialless => "credentialless",
        /// `unsafe-none`
        UnsafeNone => "unsafe-none",
    }
);

header_enum!(
    /// `Cross-Origin-Resource-Policy` values.
    ResourcePolicy {
        /// `same-origin`
        SameOrigin => "same-origin",
        /// `same-site`
        SameSite => "same-site",
        /// `cross-origin`
        CrossOrigin => "cross-origin",
    }
);

/// Every powerful feature switched off.
pub const DEFAULT_PERMISSIONS_POLICY: &str = "accelerometer=(), autoplay=(), camera=(), \
display-capture=(), encrypted-media=(), fullscreen=(), geolocation=(), gyroscope=(), hid=(), \
idle-detection=(), magnetometer=(), microphone=(), midi=(), payment=(), picture-in-picture=(), \
publickey-credentials-get=(), screen-wake-lock=(), serial=(), usb=(), xr-spatial-tracking=()";

/// Headers that reveal the server software; removed from every response by default.
pub const LEAKY_HEADERS: [&str; 4] = [
    "server",
    "x-powered-by",
    "x-aspnet-version",
    "x-aspnetmvc-version",
];

/// Per-route CSP choice, put in a response's extensions by a handler or route layer.
///
/// ```
/// use palisade_core::Profile;
/// use palisade_csp_headers::{CspOverride, csp::{ContentSecurityPolicy, Directive, Source}};
///
/// // A route that embeds images from a CDN.
/// let policy = ContentSecurityPolicy::strict().add(Directive::ImgSrc, Source::host("https://cdn.example.com")?);
/// let over = CspOverride::replace(policy, Profile::Production)?;
/// // Weak per-route policies are refused in production, like global ones.
/// let weak = ContentSecurityPolicy::strict().add(Directive::ScriptSrc, Source::UNSAFE_INLINE);
/// assert!(CspOverride::replace(weak, Profile::Production).is_err());
/// # let _ = over;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct CspOverride(OverrideKind);

#[derive(Clone, Debug)]
enum OverrideKind {
    Replace(CompiledPolicy),
    Disable,
}

impl CspOverride {
    /// Replaces the enforced CSP on this response. The policy is checked like a global one.
    pub fn replace(policy: ContentSecurityPolicy, profile: Profile) -> Result<Self, PostureError> {
        let mut posture = Posture::new(profile, "csp");
        policy.check("per-route", &mut posture);
        posture.finish()?;
        Ok(Self(OverrideKind::Replace(policy.compile())))
    }

    /// Sends no enforced CSP on this response (for example a file download). Use sparingly:
    /// responses rendered as HTML must keep a policy.
    pub fn disable() -> Self {
        Self(OverrideKind::Disable)
    }
}

#[derive(Clone, Debug)]
struct Endpoint {
    name: String,
    url: String,
    plain_http: bool,
    local: bool,
}

/// Builds a [`SecurityHeadersLayer`].
#[derive(Clone, Debug)]
#[must_use]
pub struct SecurityHeadersBuilder {
    profile: Profile,
    csp: Option<ContentSecurityPolicy>,
    csp_report_only: Option<ContentSecurityPolicy>,
    reporting_endpoints: Vec<Endpoint>,
    hsts: Option<Hsts>,
    referrer_policy: Option<ReferrerPolicy>,
    permissions_policy: Option<String>,
    frame_options: Option<FrameOptions>,
    coop: Option<OpenerPolicy>,
    coep: Option<EmbedderPolicy>,
    corp: Option<ResourcePolicy>,
    remove: Vec<HeaderName>,
}

impl Default for SecurityHeadersBuilder {
    fn default() -> Self {
        Self {
            profile: Profile::Production,
            csp: Some(ContentSecurityPolicy::strict()),
            csp_report_only: None,
            reporting_endpoints: Vec::new(),
            hsts: Some(Hsts::default()),
            referrer_policy: Some(ReferrerPolicy::NoReferrer),
            permissions_policy: Some(DEFAULT_PERMISSIONS_POLICY.to_owned()),
            frame_options: Some(FrameOptions::Deny),
            coop: Some(OpenerPolicy::SameOrigin),
            coep: Some(EmbedderPolicy::RequireCorp),
            corp: Some(ResourcePolicy::SameOrigin),
            remove: LEAKY_HEADERS
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect(),
        }
    }
}

impl SecurityHeadersBuilder {
    /// The profile the configuration is checked against (default: production).
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// The enforced CSP (default [`ContentSecurityPolicy::strict`]).
    pub fn csp(mut self, policy: ContentSecurityPolicy) -> Self {
        self.csp = Some(policy);
        self
    }

    /// Sends no enforced CSP. Refused in production.
    pub fn without_csp_insecure(mut self) -> Self {
        self.csp = None;
        self
    }

    /// A report-only policy sent alongside the enforced one, to trial a stricter policy.
    pub fn csp_report_only(mut self, policy: ContentSecurityPolicy) -> Self {
        self.csp_report_only = Some(policy);
        self
    }

    /// Adds a `Reporting-Endpoints` entry `name="url"`; `url` must be `https://` (or
    /// `http://localhost` in development).
    ///
    /// ```
    /// use palisade_csp_headers::SecurityHeadersLayer;
    /// let b = SecurityHeadersLayer::builder().reporting_endpoint("csp", "https://example.com/csp-reports")?;
    /// assert!(SecurityHeadersLayer::builder().reporting_endpoint("csp", "https://e.com/\"x").is_err());
    /// # let _ = b;
    /// # Ok::<_, palisade_csp_headers::ConfigError>(())
    /// ```
    pub fn reporting_endpoint(mut self, name: &str, url: &str) -> Result<Self, ConfigError> {
        let invalid = |reason| ConfigError::InvalidEndpoint {
            name: name.to_owned(),
            reason,
        };
        if !is_token(name) {
            return Err(invalid(
                "endpoint names are 1 to 64 characters of A-Za-z0-9-_",
            ));
        }
        let uri: http::Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        let scheme = uri.scheme_str().map(str::to_ascii_lowercase);
        let host = uri.host().map(str::to_ascii_lowercase);
        let (Some(scheme @ ("https" | "http")), Some(host)) = (scheme.as_deref(), host) else {
            return Err(invalid("the URL must be absolute http(s)"));
        };
        let plain_http = scheme == "http";
        let local = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if url.len() > 2048
            || url
                .bytes()
                .any(|b| b == b'"' || b == b'\\' || !b.is_ascii_graphic())
        {
            return Err(invalid("the URL has characters that cannot be quoted"));
        }
        self.reporting_endpoints.retain(|e| e.name != name);
        self.reporting_endpoints.push(Endpoint {
            name: name.to_owned(),
            url: url.to_owned(),
            plain_http,
            local,
        });
        Ok(self)
    }

    /// HSTS settings (sent on HTTPS responses only).
    pub fn hsts(mut self, hsts: Hsts) -> Self {
        self.hsts = Some(hsts);
        self
    }

    /// Sends no HSTS. Refused in production.
    pub fn without_hsts_insecure(mut self) -> Self {
        self.hsts = None;
        self
    }

    /// `Referrer-Policy` (default `no-referrer`).
    pub fn referrer_policy(mut self, policy: ReferrerPolicy) -> Self {
        self.referrer_policy = Some(policy);
        self
    }

    /// `Permissions-Policy` value (default [`DEFAULT_PERMISSIONS_POLICY`]).
    pub fn permissions_policy(mut self, value: &str) -> Result<Self, ConfigError> {
        HeaderValue::from_str(value).map_err(|_| ConfigError::InvalidHeaderValue {
            header: "permissions-policy",
        })?;
        self.permissions_policy = Some(value.to_owned());
        Ok(self)
    }

    /// `X-Frame-Options` (default `DENY`); `None` omits it.
    pub fn frame_options(mut self, value: Option<FrameOptions>) -> Self {
        self.frame_options = value;
        self
    }

    /// `Cross-Origin-Opener-Policy` (default `same-origin`); `None` omits it.
    pub fn cross_origin_opener_policy(mut self, value: Option<OpenerPolicy>) -> Self {
        self.coop = value;
        self
    }

    /// `Cross-Origin-Embedder-Policy` (default `require-corp`); `None` omits it.
    pub fn cross_origin_embedder_policy(mut self, value: Option<EmbedderPolicy>) -> Self {
        self.coep = value;
        self
    }

    /// `Cross-Origin-Resource-Policy` (default `same-origin`); `None` omits it.
    pub fn cross_origin_resource_policy(mut self, value: Option<ResourcePolicy>) -> Self {
        self.corp = value;
        self
    }

    /// Also removes `header` from every response.
    pub fn remove_header(mut self, header: HeaderName) -> Self {
        if !self.remove.contains(&header) {
            self.remove.push(header);
        }
        self
    }

    /// The findings this configuration produces, without building.
    pub fn posture(&self) -> Posture {
        let mut posture = Posture::new(self.profile, "security-headers");
        match &self.csp {
            Some(policy) => policy.check("enforced", &mut posture),
            None => posture.record(
                Severity::Deny,
                "csp-missing",
                "no Content-Security-Policy: injected scripts run freely",
            ),
        }
        if let Some(policy) = &self.csp_report_only {
            let mut ro = Posture::new(self.profile, "security-headers");
            policy.check("report-only", &mut ro);
            for f in ro.findings() {
                posture.record(Severity::Info, "csp-report-only", f.message().to_owned());
            }
        }
        match self.hsts {
            None => posture.record(
                Severity::Deny,
                "hsts-missing",
                "no Strict-Transport-Security: first visits can be downgraded to HTTP",
            ),
            Some(h) => {
                if h.max_age < ONE_YEAR {
                    posture.record(
                        Severity::Deny,
                        "hsts-short",
                        format!("HSTS max-age {}s is under one year", h.max_age.as_secs()),
                    );
                }
                if !h.include_subdomains {
                    posture.record(
                        Severity::Warn,
                        "hsts-no-subdomains",
                        "HSTS without includeSubDomains leaves sibling hosts downgradable",
                    );
                }
            }
        }
        if let Some(
            ReferrerPolicy::UnsafeUrl
            | ReferrerPolicy::NoReferrerWhenDowngrade
            | ReferrerPolicy::OriginWhenCrossOrigin,
        ) = self.referrer_policy
        {
            posture.record(
                Severity::Warn,
                "referrer-leaky",
                "Referrer-Policy sends full URLs to other origins",
            );
        }
        let frame_ancestors = self
            .csp
            .as_ref()
            .and_then(|p| p.sources(crate::csp::Directive::FrameAncestors))
            .is_some();
        if self.frame_options.is_none() && !frame_ancestors {
            posture.record(
                Severity::Deny,
                "framing-allowed",
                "neither X-Frame-Options nor frame-ancestors: pages can be framed (clickjacking)",
            );
        }
        for e in &self.reporting_endpoints {
            if e.plain_http {
                let severity = if e.local {
                    Severity::Warn
                } else {
                    Severity::Deny
                };
                posture.record(
                    severity,
                    "report-endpoint-http",
                    format!("reporting endpoint {} is plain HTTP", e.name),
                );
            }
        }
        for policy in [&self.csp, &self.csp_report_only].into_iter().flatten() {
            if policy
                .report_to_group()
                .is_some_and(|g| !self.reporting_endpoints.iter().any(|e| e.name == g))
            {
                posture.record(
                    Severity::Warn,
                    "report-to-undefined",
                    "a CSP report-to group has no Reporting-Endpoints entry: no report is sent",
                );
            }
        }
        posture
    }

    /// Builds the layer, or explains why the configuration is refused.
    pub fn build(self) -> Result<SecurityHeadersLayer, BuildError> {
        let findings = self.posture().finish()?;
        let mut fixed: Vec<(HeaderName, HeaderValue)> = vec![(
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        )];
        let mut push = |name: &'static str, value: &str| -> Result<(), ConfigError> {
            let value = HeaderValue::from_str(value)
                .map_err(|_| ConfigError::InvalidHeaderValue { header: name })?;
            fixed.push((HeaderName::from_static(name), value));
            Ok(())
        };
        if let Some(v) = self.referrer_policy {
            push("referrer-policy", v.as_str())?;
        }
        if let Some(v) = &self.permissions_policy {
            push("permissions-policy", v)?;
        }
        if let Some(v) = self.frame_options {
            push("x-frame-options", v.as_str())?;
        }
        if let Some(v) = self.coop {
            push("cross-origin-opener-policy", v.as_str())?;
        }
        if let Some(v) = self.coep {
            push("cross-origin-embedder-policy", v.as_str())?;
        }
        if let Some(v) = self.corp {
            push("cross-origin-resource-policy", v.as_str())?;
        }
        if !self.reporting_endpoints.is_empty() {
            let value = self
                .reporting_endpoints
                .iter()
                .map(|e| format!("{}=\"{}\"", e.name, e.url))
                .collect::<Vec<_>>()
                .join(", ");
            push("reporting-endpoints", &value)?;
        }
        let csp = self.csp.as_ref().map(ContentSecurityPolicy::compile);
        let csp_report_only = self
            .csp_report_only
            .as_ref()
            .map(ContentSecurityPolicy::compile);
        Ok(SecurityHeadersLayer {
            plan: Arc::new(Plan {
                csp,
                csp_report_only,
                hsts: self.hsts.map(Hsts::header_value),
                fixed,
                remove: self.remove,
                profile: self.profile,
                findings,
            }),
        })
    }
}

/// Everything the service needs, computed once when the layer is built.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) csp: Option<CompiledPolicy>,
    pub(crate) csp_report_only: Option<CompiledPolicy>,
    pub(crate) hsts: Option<HeaderValue>,
    pub(crate) fixed: Vec<(HeaderName, HeaderValue)>,
    pub(crate) remove: Vec<HeaderName>,
    pub(crate) profile: Profile,
    pub(crate) findings: Vec<Finding>,
}

/// Sets CSP (with a fresh nonce), HSTS and the hardening headers on every response.
#[derive(Clone, Debug)]
#[must_use]
pub struct SecurityHeadersLayer {
    pub(crate) plan: Arc<Plan>,
}

impl SecurityHeadersLayer {
    /// A builder with production defaults.
    pub fn builder() -> SecurityHeadersBuilder {
        SecurityHeadersBuilder::default()
    }

    /// The non-blocking findings recorded when the layer was built.
    pub fn findings(&self) -> &[Finding] {
        &self.plan.findings
    }

    /// The profile the layer was checked under when it was built.
    pub fn profile(&self) -> Profile {
        self.plan.profile
    }
}

/// Only the CSP part of [`SecurityHeadersLayer`]: `Content-Security-Policy` (and optionally
/// report-only) with a fresh nonce per response.
#[derive(Clone, Debug)]
#[must_use]
pub struct CspLayer;

impl CspLayer {
    /// A layer sending `policy`, checked against `profile`.
    pub fn from_policy(
        policy: ContentSecurityPolicy,
        profile: Profile,
    ) -> Result<SecurityHeadersLayer, BuildError> {
        let mut posture = Posture::new(profile, "csp");
        policy.check("enforced", &mut posture);
        let findings = posture.finish()?;
        Ok(SecurityHeadersLayer {
            plan: Arc::new(Plan {
                csp: Some(policy.compile()),
                csp_report_only: None,
                hsts: None,
                fixed: Vec::new(),
                remove: Vec::new(),
                profile,
                findings,
            }),
        })
    }
}

/// Only the HSTS part of [`SecurityHeadersLayer`]: `Strict-Transport-Security` on HTTPS
/// responses.
#[derive(Clone, Debug)]
#[must_use]
pub struct HstsLayer;

impl HstsLayer {
    /// A layer sending `hsts`, checked against `profile`.
    pub fn from_hsts(hsts: Hsts, profile: Profile) -> Result<SecurityHeadersLayer, BuildError> {
        let builder = SecurityHeadersBuilder {
            profile,
            hsts: Some(hsts),
            ..SecurityHeadersBuilder::default()
        };
        let all = builder.posture();
        let mut posture = Posture::new(profile, "hsts");
        for f in all
            .findings()
            .iter()
            .filter(|f| f.code().starts_with("hsts"))
        {
            posture.record(f.severity(), f.code(), f.message().to_owned());
        }
        let findings = posture.finish()?;
        Ok(SecurityHeadersLayer {
            plan: Arc::new(Plan {
                csp: None,
                csp_report_only: None,
                hsts: Some(hsts.header_value()),
                fixed: Vec::new(),
                remove: Vec::new(),
                profile,
                findings,
            }),
        })
    }
}

pub(crate) fn draw_nonce(plan: &Plan) -> Option<CspNonce> {
    let needed = plan.csp.as_ref().is_some_and(CompiledPolicy::uses_nonce)
        || plan
            .csp_report_only
            .as_ref()
            .is_some_and(CompiledPolicy::uses_nonce);
    if needed { CspNonce::generate() } else { None }
}

#[cfg(test)]
mod tests;
