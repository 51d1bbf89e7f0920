//! A typed Content-Security-Policy builder with per-response nonces.
//!
//! [`ContentSecurityPolicy::strict`] is a strict, nonce-based policy in the style recommended
//! by the CSP3 specification and Google's strict-CSP guidance:
//!
//! ```text
//! default-src 'none'; script-src 'nonce-…' 'strict-dynamic'; style-src 'self' 'nonce-…';
//! img-src 'self'; font-src 'self'; connect-src 'self'; manifest-src 'self';
//! object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self';
//! upgrade-insecure-requests
//! ```
//!
//! [`Source::NONCE`] stands for the nonce of the response being sent; the layer draws a fresh
//! one (128 bits from a CSPRNG) for every response and hands it to the
//! handler as a [`CspNonce`] request extension.
//!
//! ```
//! use palisade_csp_headers::csp::{ContentSecurityPolicy, Directive, Source};
//!
//! let policy = ContentSecurityPolicy::strict()
//!     .add(Directive::ImgSrc, Source::host("https://images.example.com")?)
//!     .report_to("csp")?;
//! let header = policy.render("abc123abc123abc123abc1");
//! assert!(header.contains("script-src 'nonce-abc123abc123abc123abc1' 'strict-dynamic'"));
//! assert!(header.contains("img-src 'self' https://images.example.com"));
//! assert!(header.ends_with("report-to csp"));
//! # Ok::<_, palisade_csp_headers::ConfigError>(())
//! ```

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use http::HeaderValue;
use palisade_core::{Posture, Severity};

use crate::error::ConfigError;

/// A CSP directive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Directive {
    /// `default-src`
    DefaultSrc,
    /// `script-src`
    ScriptSrc,
    /// `script-src-elem`
    ScriptSrcElem,
    /// `script-src-attr`
    ScriptSrcAttr,
    /// `style-src`
    StyleSrc,
    /// `style-src-elem`
    StyleSrcElem,
    /// `style-src-attr`
    StyleSrcAttr,
    /// `img-src`
    ImgSrc,
    /// `font-src`
    FontSrc,
    /// `connect-src`
    ConnectSrc,
    /// `media-src`
    MediaSrc,
    /// `object-src`
    ObjectSrc,
    /// `frame-src`
    FrameSrc,
    /// `child-src`
    ChildSrc,
    /// `worker-src`
    WorkerSrc,
    /// `manifest-src`
    ManifestSrc,
    /// `base-uri`
    BaseUri,
    /// `form-action`
    FormAction,
    /// `frame-ancestors`
    FrameAncestors,
}

impl Directive {
    /// The directive name.
    pub fn name(self) -> &'static str {
        match self {
            Self::DefaultSrc => "default-src",
            Self::ScriptSrc => "script-src",
            Self::ScriptSrcElem => "script-src-elem",
            Self::ScriptSrcAttr => "script-src-attr",
            Self::StyleSrc => "style-src",
            Self::StyleSrcElem => "style-src-elem",
            Self::StyleSrcAttr => "style-src-attr",
            Self::ImgSrc => "img-src",
            Self::FontSrc => "font-src",
            Self::ConnectSrc => "connect-src",
            Self::MediaSrc => "media-src",
            Self::ObjectSrc => "object-src",
            Self::FrameSrc => "frame-src",
            Self::ChildSrc => "child-src",
            Self::WorkerSrc => "worker-src",
            Self::ManifestSrc => "manifest-src",
            Self::BaseUri => "base-uri",
            Self::FormAction => "form-action",
            Self::FrameAncestors => "frame-ancestors",
        }
    }
}

impl fmt::Display for Directive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A source expression.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Source(SourceKind);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum SourceKind {
    Keyword(&'static str),
    Nonce,
    Text(Arc<str>),
}

impl Source {
    /// `'none'`: nothing is allowed. Alone in its directive.
    pub const NONE: Source = Source(SourceKind::Keyword("'none'"));
    /// `'self'`: the page's own origin.
    pub const SELF: Source = Source(SourceKind::Keyword("'self'"));
    /// `'strict-dynamic'`: scripts loaded by trusted scripts are trusted.
    pub const STRICT_DYNAMIC: Source = Source(SourceKind::Keyword("'strict-dynamic'"));
    /// The nonce of the response being sent: `'nonce-…'`.
    pub const NONCE: Source = Source(SourceKind::Nonce);
    /// `'report-sample'`: include a sample of the violating code in reports.
    pub const REPORT_SAMPLE: Source = Source(SourceKind::Keyword("'report-sample'"));
    /// `'wasm-unsafe-eval'`: allow WebAssembly compilation.
    pub const WASM_UNSAFE_EVAL: Source = Source(SourceKind::Keyword("'wasm-unsafe-eval'"));
    /// `'unsafe-hashes'`: allow hashed event handlers.
    pub const UNSAFE_HASHES: Source = Source(SourceKind::Keyword("'unsafe-hashes'"));
    /// `'unsafe-inline'`: **insecure** in script-src; refused there in production.
    pub const UNSAFE_INLINE: Source = Source(SourceKind::Keyword("'unsafe-inline'"));
    /// `'unsafe-eval'`: **insecure** in script-src; refused there in production.
    pub const UNSAFE_EVAL: Source = Source(SourceKind::Keyword("'unsafe-eval'"));

    /// A host source: `https://cdn.example.com`, `*.example.com`, `https://example.com:8443/js/`.
    pub fn host(expr: &str) -> Result<Source, ConfigError> {
        let invalid = |reason| ConfigError::InvalidSource {
            source_expr: expr.to_owned(),
            reason,
        };
        if expr.is_empty() || expr.len() > 512 {
            return Err(invalid("empty or longer than 512 bytes"));
        }
        if expr.starts_with('\'') {
            return Err(invalid("keywords are Source constants, not host sources"));
        }
        let ok = expr
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&()*+=%".contains(&b));
        if !ok {
            return Err(invalid(
                "host sources may not contain spaces, quotes, ',' or ';'",
            ));
        }
        if expr.ends_with(':') {
            return Err(invalid("scheme sources are made with Source::scheme"));
        }
        Ok(Source(SourceKind::Text(expr.into())))
    }

    /// A scheme source: `https:`, `data:`, `blob:`.
    pub fn scheme(expr: &str) -> Result<Source, ConfigError> {
        let name = expr.strip_suffix(':').unwrap_or(expr);
        let ok = name.len() <= 32
            && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !ok {
            return Err(ConfigError::InvalidSource {
                source_expr: expr.to_owned(),
                reason: "not a URL scheme",
            });
        }
        Ok(Source(SourceKind::Text(
            format!("{}:", name.to_ascii_lowercase()).into(),
        )))
    }

    /// A hash source: `algorithm` is `sha256`, `sha384` or `sha512`, `digest` the standard
    /// base64 of the digest.
    pub fn hash(algorithm: &str, digest: &str) -> Result<Source, ConfigError> {
        let invalid = |reason| ConfigError::InvalidSource {
            source_expr: format!("{algorithm}-{digest}"),
            reason,
        };
        let want = match algorithm {
            "sha256" => 32,
            "sha384" => 48,
            "sha512" => 64,
            _ => return Err(invalid("hash algorithm must be sha256, sha384 or sha512")),
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(digest)
            .map_err(|_| invalid("digest is not standard base64"))?;
        if bytes.len() != want {
            return Err(invalid("digest length does not match the algorithm"));
        }
        Ok(Source(SourceKind::Text(
            format!("'{algorithm}-{digest}'").into(),
        )))
    }

    fn write(&self, out: &mut String, nonce: &str) {
        match &self.0 {
            SourceKind::Keyword(k) => out.push_str(k),
            SourceKind::Nonce => {
                out.push_str("'nonce-");
                out.push_str(nonce);
                out.push('\'');
            }
            SourceKind::Text(t) => out.push_str(t),
        }
    }

    fn is_scheme(&self, scheme: &str) -> bool {
        matches!(&self.0, SourceKind::Text(t) if t.eq_ignore_ascii_case(scheme))
    }

    /// `*`, `https://*`, `*.com`, `http://*:443/js`: a wildcard that covers a whole TLD or
    /// every host.
    fn is_broad_host(&self) -> bool {
        let SourceKind::Text(t) = &self.0 else {
            return false;
        };
        let rest = t.split_once("://").map_or(&**t, |(_, r)| r);
        let host = rest.split(['/', ':']).next().unwrap_or("");
        host == "*"
            || host
                .strip_prefix("*.")
                .is_some_and(|tld| !tld.contains('.'))
    }

    fn is_hash(&self) -> bool {
        matches!(&self.0, SourceKind::Text(t) if t.starts_with("'sha"))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    Sources(Directive, Vec<Source>),
    ReportTo(String),
    UpgradeInsecureRequests,
    RequireTrustedTypesForScript,
}

/// A Content-Security-Policy (enforced or report-only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentSecurityPolicy {
    entries: Vec<Entry>,
}

impl ContentSecurityPolicy {
    /// A policy without directives (it restricts nothing); build it up with [`Self::set`].
    pub fn empty() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// The strict nonce-based default (see the module docs).
    pub fn strict() -> Self {
        use Directive::*;
        Self::empty()
            .set(DefaultSrc, [Source::NONE])
            .set(ScriptSrc, [Source::NONCE, Source::STRICT_DYNAMIC])
            .set(StyleSrc, [Source::SELF, Source::NONCE])
            .set(ImgSrc, [Source::SELF])
            .set(FontSrc, [Source::SELF])
            .set(ConnectSrc, [Source::SELF])
            .set(ManifestSrc, [Source::SELF])
            .set(ObjectSrc, [Source::NONE])
            .set(BaseUri, [Source::NONE])
            .set(FrameAncestors, [Source::NONE])
            .set(FormAction, [Source::SELF])
            .upgrade_insecure_requests(true)
    }

    /// A policy for JSON APIs that never render HTML: everything `'none'`.
    pub fn api() -> Self {
        Self::empty()
            .set(Directive::DefaultSrc, [Source::NONE])
            .set(Directive::BaseUri, [Source::NONE])
            .set(Directive::FrameAncestors, [Source::NONE])
            .set(Directive::FormAction, [Source::NONE])
    }

    /// Sets `directive` to `sources`, replacing earlier values. `'none'` alongside other
    /// sources is dropped (browsers would ignore it).
    #[must_use]
    pub fn set(mut self, directive: Directive, list: impl IntoIterator<Item = Source>) -> Self {
        let mut sources: Vec<Source> = Vec::new();
        for s in list {
            if !sources.contains(&s) {
                sources.push(s);
            }
        }
        if sources.len() > 1 {
            sources.retain(|s| *s != Source::NONE);
        }
        match self.position(directive) {
            Some(i) => self.entries[i] = Entry::Sources(directive, sources),
            None => self.entries.push(Entry::Sources(directive, sources)),
        }
        self
    }

    /// Adds `source` to `directive` (creating it; replacing a lone `'none'`).
    #[must_use]
    pub fn add(self, directive: Directive, source: Source) -> Self {
        let mut current = self
            .sources(directive)
            .map(<[Source]>::to_vec)
            .unwrap_or_default();
        current.retain(|s| *s != Source::NONE);
        current.push(source);
        self.set(directive, current)
    }

    /// Removes `directive`.
    #[must_use]
    pub fn remove(mut self, directive: Directive) -> Self {
        if let Some(i) = self.position(directive) {
            self.entries.remove(i);
        }
        self
    }

    fn position(&self, directive: Directive) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| matches!(e, Entry::Sources(d, _) if *d == directive))
    }

    /// The sources of `directive`, if it is set.
    pub fn sources(&self, directive: Directive) -> Option<&[Source]> {
        self.entries.iter().find_map(|e| match e {
            Entry::Sources(d, s) if *d == directive => Some(s.as_slice()),
            _ => None,
        })
    }

    /// Sends violation reports to the `Reporting-Endpoints` group `group`.
    pub fn report_to(mut self, group: &str) -> Result<Self, ConfigError> {
        if !is_token(group) {
            return Err(ConfigError::InvalidEndpoint {
                name: group.to_owned(),
                reason: "endpoint names are 1 to 64 characters of A-Za-z0-9-_",
            });
        }
        self.entries.retain(|e| !matches!(e, Entry::ReportTo(_)));
        self.entries.push(Entry::ReportTo(group.to_owned()));
        Ok(self)
    }

    /// The `report-to` group, if set.
    pub fn report_to_group(&self) -> Option<&str> {
        self.entries.iter().find_map(|e| match e {
            Entry::ReportTo(g) => Some(g.as_str()),
            _ => None,
        })
    }

    /// Adds or removes `upgrade-insecure-requests`.
    #[must_use]
    pub fn upgrade_insecure_requests(mut self, on: bool) -> Self {
        self.entries
            .retain(|e| !matches!(e, Entry::UpgradeInsecureRequests));
        if on {
            self.entries.push(Entry::UpgradeInsecureRequests);
        }
        self
    }

    /// Adds or removes `require-trusted-types-for 'script'`.
    #[must_use]
    pub fn require_trusted_types_for_script(mut self, on: bool) -> Self {
        self.entries
            .retain(|e| !matches!(e, Entry::RequireTrustedTypesForScript));
        if on {
            self.entries.push(Entry::RequireTrustedTypesForScript);
        }
        self
    }

    /// Whether any directive uses the per-response nonce.
    pub fn uses_nonce(&self) -> bool {
        self.entries.iter().any(|e| match e {
            Entry::Sources(_, s) => s.contains(&Source::NONCE),
            _ => false,
        })
    }

    /// The header value with `nonce` in place of [`Source::NONCE`].
    pub fn render(&self, nonce: &str) -> String {
        let mut out = String::with_capacity(256);
        for entry in &self.entries {
            if !out.is_empty() {
                out.push_str("; ");
            }
            match entry {
                Entry::Sources(d, sources) => {
                    out.push_str(d.name());
                    if sources.is_empty() {
                        out.push_str(" 'none'");
                    }
                    for s in sources {
                        out.push(' ');
                        s.write(&mut out, nonce);
                    }
                }
                Entry::ReportTo(group) => {
                    out.push_str("report-to ");
                    out.push_str(group);
                }
                Entry::UpgradeInsecureRequests => out.push_str("upgrade-insecure-requests"),
                Entry::RequireTrustedTypesForScript => {
                    out.push_str("require-trusted-types-for 'script'");
                }
            }
        }
        out
    }

    /// Precomputes the header so that each response only splices in its nonce.
    pub fn compile(&self) -> CompiledPolicy {
        const MARK: &str = "\u{0}";
        let rendered = self.render(MARK);
        CompiledPolicy {
            pieces: rendered.split(MARK).map(Into::into).collect(),
            len: rendered.len(),
        }
    }

    /// Records what is insecure in this policy. `label` names it in findings
    /// (`"enforced"`, `"report-only"`, a route name).
    pub fn check(&self, label: &str, posture: &mut Posture) {
        let default = self.sources(Directive::DefaultSrc);
        let script = self.sources(Directive::ScriptSrc).or(default);
        if script.is_none() {
            posture.record(
                Severity::Deny,
                "csp-no-script-src",
                format!("{label} CSP sets neither script-src nor default-src: any script may run"),
            );
        }
        // script-src-elem and script-src-attr fall back to script-src, then default-src.
        let mut recorded: Vec<&'static str> = Vec::new();
        let mut record = |posture: &mut Posture, code: &'static str, message: String| {
            if !recorded.contains(&code) {
                recorded.push(code);
                posture.record(Severity::Deny, code, message);
            }
        };
        for (d, sources) in [
            (Directive::ScriptSrc, script),
            (
                Directive::ScriptSrcElem,
                self.sources(Directive::ScriptSrcElem).or(script),
            ),
            (
                Directive::ScriptSrcAttr,
                self.sources(Directive::ScriptSrcAttr).or(script),
            ),
        ] {
            let Some(sources) = sources else { continue };
            if sources.contains(&Source::UNSAFE_INLINE) {
                record(
                    posture,
                    "csp-unsafe-inline",
                    format!(
                        "{label} CSP allows 'unsafe-inline' for {d}: injected inline scripts run"
                    ),
                );
            }
            if sources.contains(&Source::UNSAFE_EVAL) {
                record(
                    posture,
                    "csp-unsafe-eval",
                    format!("{label} CSP allows 'unsafe-eval' for {d}: strings become code"),
                );
            }
            let strict = sources.contains(&Source::STRICT_DYNAMIC);
            let broad = sources.iter().any(|s| {
                s.is_broad_host()
                    || s.is_scheme("http:")
                    || s.is_scheme("https:")
                    || s.is_scheme("data:")
                    || s.is_scheme("blob:")
            });
            if broad && !strict {
                record(
                    posture,
                    "csp-broad-script-src",
                    format!("{label} CSP {d} allows scripts from any host or a whole scheme"),
                );
            }
            let pinned = sources.contains(&Source::NONCE) || sources.iter().any(Source::is_hash);
            if strict && !pinned {
                record(
                    posture,
                    "csp-strict-dynamic-without-nonce",
                    format!(
                        "{label} CSP {d} uses 'strict-dynamic' without a nonce or hash: no script can run"
                    ),
                );
            }
        }
        let default_none = self.sources(Directive::DefaultSrc) == Some(&[Source::NONE][..]);
        if self.sources(Directive::ObjectSrc).is_none() && !default_none {
            posture.record(
                Severity::Deny,
                "csp-no-object-src",
                format!("{label} CSP lacks object-src 'none': plugins can bypass script-src"),
            );
        }
        if self.sources(Directive::BaseUri).is_none() {
            posture.record(
                Severity::Deny,
                "csp-no-base-uri",
                format!("{label} CSP lacks base-uri: an injected <base> retargets nonced scripts"),
            );
        }
        if self.sources(Directive::FrameAncestors).is_none() {
            posture.record(
                Severity::Warn,
                "csp-no-frame-ancestors",
                format!("{label} CSP lacks frame-ancestors: clickjacking relies on X-Frame-Options alone"),
            );
        }
    }
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A policy rendered once, with gaps for the nonce.
#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    pieces: Arc<[Box<str>]>,
    len: usize,
}

impl CompiledPolicy {
    /// The header value for a response whose nonce is `nonce`. Without a nonce (the operating
    /// system gave no randomness) a nonce-based policy fails closed to `default-src 'none'`.
    pub fn header_value_or_deny(&self, nonce: Option<&CspNonce>) -> HeaderValue {
        match nonce {
            Some(n) => self.header_value(n),
            None if self.uses_nonce() => HeaderValue::from_static("default-src 'none'"),
            None => self.header_value(&CspNonce(Arc::from(""))),
        }
    }

    /// The header value for a response whose nonce is `nonce`.
    pub fn header_value(&self, nonce: &CspNonce) -> HeaderValue {
        let mut out = String::with_capacity(self.len + self.pieces.len() * nonce.0.len());
        let mut pieces = self.pieces.iter();
        if let Some(first) = pieces.next() {
            out.push_str(first);
        }
        for piece in pieces {
            out.push_str(&nonce.0);
            out.push_str(piece);
        }
        // Sources are validated to visible ASCII and the nonce is base64url, so this holds.
        HeaderValue::from_maybe_shared(bytes::Bytes::from(out))
            .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
    }

    /// Whether the policy contains a nonce.
    pub fn uses_nonce(&self) -> bool {
        self.pieces.len() > 1
    }
}

/// The nonce of the current response, inserted into request extensions for handlers.
///
/// 128 bits from a CSPRNG (`rand`'s thread-local ChaCha12 generator, seeded from and
/// periodically reseeded by the operating system), base64url without padding (22 characters).
/// Put it in the `nonce` attribute of inline `<script>` and `<style>` elements.
#[derive(Clone, PartialEq, Eq)]
pub struct CspNonce(Arc<str>);

impl CspNonce {
    /// Draws a fresh nonce, or `None` if no randomness could be had (the layer then fails
    /// closed).
    pub fn generate() -> Option<Self> {
        use rand::TryRngCore as _;
        let mut bytes = [0u8; 16];
        rand::rng().try_fill_bytes(&mut bytes).ok()?;
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        Some(Self(text.into()))
    }

    /// The nonce text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CspNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CspNonce").field(&&*self.0).finish()
    }
}

impl fmt::Display for CspNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests;
