//! Security headers, CORS, HTTPS enforcement and the admin-host guard, as Tower layers.
//!
//! | layer | what it does |
//! |---|---|
//! | [`SecurityHeadersLayer`] | strict CSP with a fresh nonce per response, report-only policy and `Reporting-Endpoints`, HSTS on HTTPS responses, `nosniff`, `Referrer-Policy`, `Permissions-Policy`, COOP/COEP/CORP, `X-Frame-Options`; strips `Server`-style leaks |
//! | [`CspLayer`], [`HstsLayer`] | the CSP and HSTS parts alone |
//! | [`CorsLayer`] | CORS for explicit origins only; `Vary: Origin`; 403 for disallowed preflights |
//! | [`RequireHttpsLayer`] | plain-HTTP `GET`/`HEAD` redirected to HTTPS, other methods refused with 421 |
//! | [`AdminHostLayer`] | the admin path prefix answers only on `ADMIN_HOSTNAME` (and optionally an IP allowlist); the admin host serves nothing else |
//!
//! Every builder starts from production defaults and checks its configuration against a
//! [`Profile`](palisade_core::Profile): in production, insecure settings make `build()` fail
//! with a [`BuildError::Posture`] listing every finding.
//!
//! The HTTPS and HSTS decisions, and the admin IP allowlist, read the scheme and client
//! address that [`palisade_core::ClientIpLayer`] resolves; put it outermost.
//!
//! # Example: the recommended stack
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use palisade_core::{ClientIpLayer, ConnectionInfo, Profile, TrustedProxies};
//! use palisade_csp_headers::{AdminHostLayer, CorsLayer, RequireHttpsLayer, SecurityHeadersLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let profile = Profile::Production;
//! let svc = ServiceBuilder::new()
//!     .layer(ClientIpLayer::new(TrustedProxies::none()))
//!     .layer(SecurityHeadersLayer::builder().profile(profile).build()?)
//!     .layer(RequireHttpsLayer::builder().profile(profile).canonical_host("api.example.com")?.build()?)
//!     .layer(AdminHostLayer::builder("admin.example.com")?.profile(profile).build()?)
//!     .layer(CorsLayer::builder().profile(profile).allow_origin("https://app.example.com")?.build()?)
//!     .service(service_fn(|_req: Request<()>| async {
//!         Ok::<_, Infallible>(Response::new(http_body_util::Full::new(bytes::Bytes::from("ok"))))
//!     }));
//! let mut req = Request::builder().uri("/api/x").header("host", "api.example.com").body(())?;
//! req.extensions_mut().insert(ConnectionInfo::new("198.51.100.7:50000".parse()?, true));
//! let res = svc.oneshot(req).await?;
//! assert_eq!(res.status(), 200);
//! assert!(res.headers().contains_key("content-security-policy"));
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod admin;
pub mod cors;
pub mod csp;
mod error;
pub mod headers;
mod host;
pub mod https;
mod macros;

pub use admin::{AdminHostBuilder, AdminHostLayer, AdminHostRejection};
pub use cors::{CorsBuilder, CorsLayer, CorsRejection};
pub use csp::{ContentSecurityPolicy, CspNonce};
pub use error::{BuildError, ConfigError};
pub use headers::{
    CspLayer, CspOverride, Hsts, HstsLayer, SecurityHeadersBuilder, SecurityHeadersLayer,
};
pub use https::{HttpsRejection, RequireHttpsBuilder, RequireHttpsLayer};

#[cfg(test)]
mod send_sync {
    //! Layers, services and futures are `Send + Sync` whenever what they wrap is.
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[allow(dead_code)]
    struct NotSendSync(std::rc::Rc<()>);

    #[test]
    fn layers_services_and_futures() {
        assert_send_sync::<SecurityHeadersLayer>();
        assert_send_sync::<CorsLayer>();
        assert_send_sync::<RequireHttpsLayer>();
        assert_send_sync::<AdminHostLayer>();
        assert_send_sync::<headers::SecurityHeaders<()>>();
        assert_send_sync::<cors::Cors<()>>();
        assert_send_sync::<https::RequireHttps<()>>();
        assert_send_sync::<admin::AdminHost<()>>();
        assert_send_sync::<headers::ResponseFuture<std::future::Ready<()>>>();
        assert_send_sync::<cors::ResponseFuture<std::future::Ready<()>, ()>>();
        assert_send_sync::<palisade_core::ShortCircuitFuture<std::future::Ready<()>, ()>>();
        assert_send_sync::<palisade_core::ResponseBody<()>>();
    }
}
