//! [`AdminHostLayer`]: the admin surface answers only on the admin hostname.
//!
//! - A request for the admin path prefix (default `/admin`) on any other host gets `404`.
//! - The admin host serves only admin paths: anything else there gets `404` too.
//! - Optionally, admin requests must also come from an allowlisted client IP (read from the
//!   [`ClientIp`] extension; without it the request is refused).
//!
//! Paths are read three ways (raw; percent-decoded; decoded with dot segments resolved), each
//! with case folding, backslash-to-slash, and empty segments, `;` parameters and trailing dots
//! dropped. On any other host, a path that *any* reading puts under the prefix is refused:
//! `/%61dmin`, `//admin`, `/api/..%2fadmin`, `/ADMIN`, `/admin;x` and also `/admin/..` (which a
//! router matching raw paths would send to an `/admin/{id}` route). On the admin host, a path is
//! served only if *every* reading puts it under the prefix.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use palisade_csp_headers::AdminHostLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = AdminHostLayer::builder("admin.example.com")?.build()?;
//! let svc = ServiceBuilder::new().layer(layer).service(service_fn(|_req: Request<()>| async {
//!     Ok::<_, Infallible>(Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
//! }));
//! let get = |host: &str, path: &str| Request::builder().uri(path).header("host", host).body(()).unwrap();
//! assert_eq!(svc.clone().oneshot(get("admin.example.com", "/admin/users")).await?.status(), 200);
//! assert_eq!(svc.clone().oneshot(get("api.example.com", "/admin/users")).await?.status(), 404);
//! assert_eq!(svc.clone().oneshot(get("api.example.com", "/%61dmin/users")).await?.status(), 404);
//! assert_eq!(svc.clone().oneshot(get("admin.example.com", "/api/orders")).await?.status(), 404);
//! assert_eq!(svc.oneshot(get("api.example.com", "/api/orders")).await?.status(), 200);
//! # Ok(()) }
//! ```

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use ipnet::IpNet;
use palisade_core::{
    ClientIp, Finding, Posture, Profile, Rejection, RejectionKind, ResponseBody, Severity,
    ShortCircuitFuture,
};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::{BuildError, ConfigError};
use crate::host::{normalize_config_host, request_host};

/// Why a request was hidden behind a 404.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminHostRejection {
    /// An admin path requested on a host other than the admin host.
    #[error("admin path requested on a non-admin host")]
    AdminPathOnOtherHost,
    /// A non-admin path requested on the admin host.
    #[error("non-admin path requested on the admin host")]
    OtherPathOnAdminHost,
    /// The host is missing, ambiguous or malformed.
    #[error("request host missing, ambiguous or malformed")]
    BadHost,
    /// The client address is not on the admin allowlist (or unknown).
    #[error("client address not on the admin allowlist")]
    ClientNotAllowed,
}

/// Builds an [`AdminHostLayer`].
#[derive(Clone, Debug)]
#[must_use]
pub struct AdminHostBuilder {
    profile: Profile,
    host: String,
    prefix: String,
    allow: Option<Vec<IpNet>>,
}

impl AdminHostBuilder {
    /// The profile the configuration is checked against (default: production).
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// The admin path prefix (default `/admin`): `/` followed by segments of `a-z0-9-_`.
    pub fn path_prefix(mut self, prefix: &str) -> Result<Self, ConfigError> {
        let invalid = || ConfigError::InvalidPathPrefix {
            prefix: prefix.to_owned(),
        };
        let p = prefix.strip_suffix('/').unwrap_or(prefix);
        let ok = p.len() > 1
            && p.starts_with('/')
            && p[1..].split('/').all(|seg| {
                !seg.is_empty()
                    && seg.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                    })
            });
        if !ok {
            return Err(invalid());
        }
        self.prefix = p.to_owned();
        Ok(self)
    }

    /// Also requires admin requests to come from one of `nets` (addresses or CIDR blocks).
    pub fn allow_client_ips<I, S>(mut self, nets: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Vec::new();
        for n in nets {
            let n = n.as_ref();
            out.push(palisade_core::client_ip::parse_ip_net(n).ok_or_else(|| {
                ConfigError::InvalidIpNet {
                    entry: n.trim().to_owned(),
                }
            })?);
        }
        self.allow = Some(out);
        Ok(self)
    }

    /// The findings this configuration produces, without building.
    pub fn posture(&self) -> Posture {
        let mut posture = Posture::new(self.profile, "admin-host");
        if self.host == "localhost"
            || self.host.ends_with(".localhost")
            || self.host.parse::<IpAddr>().is_ok()
            || self.host.starts_with('[')
        {
            posture.record(
                Severity::Deny,
                "admin-host-not-a-name",
                format!("admin host {} is not a public DNS name", self.host),
            );
        }
        match &self.allow {
            None => posture.record(
                Severity::Info,
                "admin-no-ip-allowlist",
                "the admin surface is reachable from any client address",
            ),
            Some(nets) if nets.iter().any(|n| n.prefix_len() == 0) => posture.record(
                Severity::Warn,
                "admin-allowlist-everything",
                "the admin IP allowlist contains a /0 block",
            ),
            Some(_) => {}
        }
        posture
    }

    /// Builds the layer.
    pub fn build(self) -> Result<AdminHostLayer, BuildError> {
        let findings = self.posture().finish()?;
        Ok(AdminHostLayer {
            config: Arc::new(AdminConfig {
                host: self.host,
                prefix: self.prefix,
                allow: self.allow,
                profile: self.profile,
                findings,
            }),
        })
    }
}

#[derive(Debug)]
struct AdminConfig {
    host: String,
    prefix: String,
    allow: Option<Vec<IpNet>>,
    profile: Profile,
    findings: Vec<Finding>,
}

/// Confines the admin surface to the admin hostname.
#[derive(Clone, Debug)]
#[must_use]
pub struct AdminHostLayer {
    config: Arc<AdminConfig>,
}

impl AdminHostLayer {
    /// A builder for admin host `host` (for example from `ADMIN_HOSTNAME`).
    pub fn builder(host: &str) -> Result<AdminHostBuilder, ConfigError> {
        let host = normalize_config_host(host).ok_or_else(|| ConfigError::InvalidHost {
            host: host.to_owned(),
        })?;
        Ok(AdminHostBuilder {
            profile: Profile::Production,
            host,
            prefix: "/admin".to_owned(),
            allow: None,
        })
    }

    /// The non-blocking findings recorded when the layer was built.
    pub fn findings(&self) -> &[Finding] {
        &self.config.findings
    }

    /// The profile the layer was checked under when it was built.
    pub fn profile(&self) -> Profile {
        self.config.profile
    }
}

impl<S> Layer<S> for AdminHostLayer {
    type Service = AdminHost<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdminHost {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service of [`AdminHostLayer`].
#[derive(Clone, Debug)]
pub struct AdminHost<S> {
    inner: S,
    config: Arc<AdminConfig>,
}

crate::macros::inner_service_accessors!(AdminHost);

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AdminHost<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ShortCircuitFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        match check(&self.config, &req) {
            Ok(()) => ShortCircuitFuture::forward(self.inner.call(req)),
            Err(reason) => ShortCircuitFuture::answer(
                Rejection::new(RejectionKind::NotFound, reason).into_response(),
            ),
        }
    }
}

fn check<B>(config: &AdminConfig, req: &Request<B>) -> Result<(), AdminHostRejection> {
    let class = classify(req.uri().path(), &config.prefix);
    let host = request_host(req).map_err(|_| AdminHostRejection::BadHost)?;
    if host.name != config.host {
        // Any reading of the path that reaches the admin prefix is refused here.
        return if class.any {
            Err(AdminHostRejection::AdminPathOnOtherHost)
        } else {
            Ok(())
        };
    }
    // The admin host serves a path only if every reading of it is an admin path.
    if !class.all {
        return Err(AdminHostRejection::OtherPathOnAdminHost);
    }
    match &config.allow {
        None => Ok(()),
        Some(nets) => {
            let ip = req
                .extensions()
                .get::<ClientIp>()
                .ok_or(AdminHostRejection::ClientNotAllowed)?;
            if nets.iter().any(|n| n.contains(&ip.0)) {
                Ok(())
            } else {
                Err(AdminHostRejection::ClientNotAllowed)
            }
        }
    }
}

/// How a path relates to the admin prefix under every reading a router or proxy might give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PathClass {
    /// Some reading puts the path under the prefix (or the path cannot be read with certainty).
    pub(crate) any: bool,
    /// Every reading puts the path under the prefix.
    pub(crate) all: bool,
}

/// Classifies `path` against `prefix` (lowercase, clean) under three readings: the raw path,
/// the percent-decoded path, and the decoded path with dot segments resolved. Each reading
/// folds case, treats `\` as `/`, skips empty segments, drops `;` parameters and trailing
/// dots, NULs and spaces of a segment. A path whose encoding does not settle after several
/// decoding rounds counts as admin under `any` and not under `all`.
pub(crate) fn classify(path: &str, prefix: &str) -> PathClass {
    let want: Vec<&str> = prefix[1..].split('/').collect();
    let raw = under(path, &want, false);
    match percent_decode_settled(path.as_bytes()) {
        Some(decoded) => {
            let plain = under(&decoded, &want, false);
            let resolved = under(&decoded, &want, true);
            PathClass {
                any: raw || plain || resolved,
                all: raw && plain && resolved,
            }
        }
        None => PathClass {
            any: true,
            all: false,
        },
    }
}

/// Whether `path`, read with or without dot-segment resolution, lies under `want`.
#[cfg(test)]
pub(crate) fn is_under_prefix(path: &str, prefix: &str) -> bool {
    classify(path, prefix).any
}

fn under(path: &str, want: &[&str], resolve_dots: bool) -> bool {
    let mut segments: Vec<&str> = Vec::new();
    for raw in path.split(['/', '\\']) {
        let seg = raw.split(';').next().unwrap_or("");
        let seg = seg.trim_matches(|c: char| c == '\0' || c.is_whitespace());
        match seg {
            "" => {}
            "." if resolve_dots => {}
            ".." if resolve_dots => {
                segments.pop();
            }
            s => segments.push(s),
        }
        if segments.len() >= want.len() && !resolve_dots {
            break;
        }
    }
    segments.len() >= want.len()
        && segments.iter().zip(want).all(|(got, want)| {
            let got = if matches!(*got, "." | "..") {
                got
            } else {
                got.trim_end_matches('.')
            };
            got.eq_ignore_ascii_case(want)
        })
}

/// Decodes `%XX` until nothing changes (double encoding included); `None` if it has not settled
/// after eight rounds.
fn percent_decode_settled(input: &[u8]) -> Option<String> {
    let mut current = input.to_vec();
    for _ in 0..8 {
        let mut out = Vec::with_capacity(current.len());
        let mut i = 0;
        let mut changed = false;
        while i < current.len() {
            if current[i] == b'%' && i + 2 < current.len() {
                let hex = |b: u8| (b as char).to_digit(16);
                if let (Some(h), Some(l)) = (hex(current[i + 1]), hex(current[i + 2])) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    changed = true;
                    continue;
                }
            }
            out.push(current[i]);
            i += 1;
        }
        if !changed {
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        current = out;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn classification_table() {
        // (path, any, all)
        let cases = [
            ("/admin/users", true, true),
            ("/admin/..", true, false),
            ("/admin/users/%2e%2e%2f%2e%2e", true, false),
            ("/admin/x%5c..%5c..", true, false),
            ("/api/..%2fadmin", true, false),
            ("/api/x", false, false),
            ("/admin.", true, true),
            ("/admin%00/x", true, false),
            ("/%25252525252525252561dmin", true, false),
        ];
        for (path, any, all) in cases {
            assert_eq!(classify(path, "/admin"), PathClass { any, all }, "{path}");
        }
    }

    #[test]
    fn prefix_table() {
        let yes = [
            "/admin",
            "/admin/",
            "/admin/users",
            "//admin",
            "/ADMIN/x",
            "/%61dmin",
            "/%2561dmin",
            "/api/../admin",
            "/./admin",
            "/admin;jsessionid=1",
            "\\admin",
            "/%2fadmin",
            "/admin%2fusers",
            "/ admin",
            "/admin/..",
            "/admin.",
        ];
        for p in yes {
            assert!(is_under_prefix(p, "/admin"), "{p}");
        }
        let no = [
            "/",
            "/api",
            "/administrator",
            "/api/admin",
            "/adm",
            "/adminx/..",
            "/admin.json",
            "/%zzadmin",
        ];
        for p in no {
            assert!(!is_under_prefix(p, "/admin"), "{p}");
        }
        assert!(is_under_prefix("/ops/admin/x", "/ops/admin"));
        assert!(!is_under_prefix("/ops/x", "/ops/admin"));
    }

    #[test]
    fn prefix_validation() {
        let b = AdminHostLayer::builder("admin.example.com").unwrap();
        assert!(b.clone().path_prefix("/ops/admin/").is_ok());
        for bad in ["", "/", "admin", "/Admin", "/a//b", "/a/../b", "/a%2f"] {
            assert!(b.clone().path_prefix(bad).is_err(), "{bad}");
        }
        assert!(AdminHostLayer::builder("admin example").is_err());
        assert!(AdminHostLayer::builder("admin.example.com:443").is_err());
    }

    async fn send(layer: AdminHostLayer, host: &[&str], path: &str, ip: Option<&str>) -> u16 {
        use tower::{ServiceBuilder, ServiceExt, service_fn};
        let mut b = Request::builder().uri(path);
        for h in host {
            b = b.header(http::header::HOST, *h);
        }
        let mut req = b.body(()).unwrap();
        if let Some(ip) = ip {
            req.extensions_mut().insert(ClientIp(ip.parse().unwrap()));
        }
        ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(|_req: Request<()>| async {
                Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Empty::<
                    bytes::Bytes,
                >::new()))
            }))
            .oneshot(req)
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    #[tokio::test]
    #[allow(clippy::type_complexity)]
    async fn allowlist_and_host_table() {
        let open = AdminHostLayer::builder("admin.example.com")
            .unwrap()
            .build()
            .unwrap();
        let listed = AdminHostLayer::builder("admin.example.com")
            .unwrap()
            .allow_client_ips(["10.0.0.0/8", "2001:db8::1"])
            .unwrap()
            .build()
            .unwrap();
        let cases: Vec<(&AdminHostLayer, Vec<&str>, &str, Option<&str>, u16)> = vec![
            (&open, vec!["admin.example.com"], "/admin", None, 200),
            (&open, vec!["ADMIN.example.com.:443"], "/admin/x", None, 200),
            (
                &open,
                vec!["admin.example.com", "api.example.com"],
                "/admin",
                None,
                404,
            ),
            (&open, vec![], "/admin", None, 404),
            (
                &open,
                vec!["admin.example.com.evil.com"],
                "/admin",
                None,
                404,
            ),
            (
                &listed,
                vec!["admin.example.com"],
                "/admin",
                Some("10.1.2.3"),
                200,
            ),
            (
                &listed,
                vec!["admin.example.com"],
                "/admin",
                Some("2001:db8::1"),
                200,
            ),
            (
                &listed,
                vec!["admin.example.com"],
                "/admin",
                Some("203.0.113.9"),
                404,
            ),
            (&listed, vec!["admin.example.com"], "/admin", None, 404),
            // The allowlist guards the admin surface only.
            (
                &listed,
                vec!["api.example.com"],
                "/api",
                Some("203.0.113.9"),
                200,
            ),
        ];
        for (layer, host, path, ip, want) in cases {
            assert_eq!(
                send(layer.clone(), &host, path, ip).await,
                want,
                "{host:?} {path} {ip:?}"
            );
        }
        assert!(
            AdminHostLayer::builder("admin.example.com")
                .unwrap()
                .allow_client_ips(["nope"])
                .is_err()
        );
    }

    proptest! {
        /// Prepending dot segments, empty segments or encoding letters never hides an admin path.
        #[test]
        fn encodings_of_admin_paths_are_caught(junk in prop::collection::vec(prop_oneof![Just("/"), Just("/."), Just("/x/.."), Just("//")], 0..4), encode in prop::collection::vec(any::<bool>(), 5), upper in any::<bool>(), rest in "[a-z/]{0,10}") {
            let mut path: String = junk.concat();
            path.push('/');
            for (c, e) in "admin".chars().zip(encode) {
                let c = if upper { c.to_ascii_uppercase() } else { c };
                if e { path.push_str(&format!("%{:02X}", c as u8)); } else { path.push(c); }
            }
            if !rest.is_empty() { path.push('/'); path.push_str(&rest); }
            prop_assert!(is_under_prefix(&path, "/admin"), "{}", path);
        }

        #[test]
        fn arbitrary_paths_never_panic(p in "\\PC{0,80}") {
            let _ = is_under_prefix(&p, "/admin");
        }
    }
}
