//! [`RequireHttpsLayer`]: plain-HTTP requests are redirected (`GET`/`HEAD`) or refused
//! (`421`), never served.
//!
//! The scheme comes from [`RequestScheme`] (set by
//! [`ClientIpLayer`](palisade_core::ClientIpLayer) from the socket or a *trusted* proxy's
//! forwarded scheme), else from [`ConnectionInfo`](palisade_core::ConnectionInfo). When
//! nothing tells, the request counts as plain HTTP (fail closed).
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Method, Request, Response};
//! use palisade_core::ConnectionInfo;
//! use palisade_csp_headers::RequireHttpsLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = RequireHttpsLayer::builder().canonical_host("api.example.com")?.build()?;
//! let svc = ServiceBuilder::new().layer(layer).service(service_fn(|_req: Request<()>| async {
//!     Ok::<_, Infallible>(Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
//! }));
//! let mut req = Request::builder().uri("/orders?page=2").header("host", "api.example.com").body(())?;
//! req.extensions_mut().insert(ConnectionInfo::new("192.0.2.1:1234".parse()?, false));
//! let res = svc.clone().oneshot(req).await?;
//! assert_eq!(res.status(), 301);
//! assert_eq!(res.headers()["location"], "https://api.example.com/orders?page=2");
//!
//! let mut post = Request::builder().method(Method::POST).uri("/orders").body(())?;
//! post.extensions_mut().insert(ConnectionInfo::new("192.0.2.1:1234".parse()?, false));
//! assert_eq!(svc.oneshot(post).await?.status(), 421);
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{CACHE_CONTROL, LOCATION};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use palisade_core::{
    Finding, Posture, Profile, Rejection, RejectionKind, RequestScheme, ResponseBody, Severity,
    ShortCircuitFuture,
};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::{BuildError, ConfigError};
use crate::host::{normalize_config_host, request_host};

/// Why a plain-HTTP request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpsRejection {
    /// A method other than GET or HEAD over plain HTTP: its body may already have leaked, and
    /// redirecting would invite the client to resend it.
    #[error("plain-HTTP {0} request refused")]
    PlainHttp(&'static str),
    /// A GET/HEAD over plain HTTP whose host is missing, ambiguous or malformed, with no
    /// canonical host to redirect to.
    #[error("plain-HTTP request with an unusable Host header")]
    BadHost,
}

/// Builds a [`RequireHttpsLayer`].
#[derive(Clone, Debug)]
#[must_use]
pub struct RequireHttpsBuilder {
    profile: Profile,
    canonical_host: Option<String>,
    https_port: u16,
}

impl RequireHttpsBuilder {
    /// The profile the configuration is checked against (default: production).
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// Redirect to this host instead of the request's `Host` (recommended: the request's
    /// host is client-chosen, and a cache between could store a redirect elsewhere).
    pub fn canonical_host(mut self, host: &str) -> Result<Self, ConfigError> {
        self.canonical_host =
            Some(
                normalize_config_host(host).ok_or_else(|| ConfigError::InvalidHost {
                    host: host.to_owned(),
                })?,
            );
        Ok(self)
    }

    /// The HTTPS port to redirect to (default 443, which is left out of the URL).
    pub fn https_port(mut self, port: u16) -> Self {
        self.https_port = port;
        self
    }

    /// The findings this configuration produces, without building.
    pub fn posture(&self) -> Posture {
        let mut posture = Posture::new(self.profile, "require-https");
        if self.canonical_host.is_none() {
            posture.record(
                Severity::Warn,
                "https-redirect-to-request-host",
                "redirects go to the request's Host header; set a canonical host",
            );
        }
        posture
    }

    /// Builds the layer.
    pub fn build(self) -> Result<RequireHttpsLayer, BuildError> {
        let findings = self.posture().finish()?;
        Ok(RequireHttpsLayer {
            config: Arc::new(HttpsConfig {
                canonical_host: self.canonical_host,
                https_port: self.https_port,
                profile: self.profile,
                findings,
            }),
        })
    }
}

#[derive(Debug)]
struct HttpsConfig {
    canonical_host: Option<String>,
    https_port: u16,
    profile: Profile,
    findings: Vec<Finding>,
}

/// Redirects or refuses plain-HTTP requests.
#[derive(Clone, Debug)]
#[must_use]
pub struct RequireHttpsLayer {
    config: Arc<HttpsConfig>,
}

impl RequireHttpsLayer {
    /// A builder: redirect to the request's host on port 443.
    pub fn builder() -> RequireHttpsBuilder {
        RequireHttpsBuilder {
            profile: Profile::Production,
            canonical_host: None,
            https_port: 443,
        }
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

impl<S> Layer<S> for RequireHttpsLayer {
    type Service = RequireHttps<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireHttps {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service of [`RequireHttpsLayer`].
#[derive(Clone, Debug)]
pub struct RequireHttps<S> {
    inner: S,
    config: Arc<HttpsConfig>,
}

crate::macros::inner_service_accessors!(RequireHttps);

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireHttps<S>
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
        if RequestScheme::of(req.extensions()) == Some(RequestScheme::Https) {
            return ShortCircuitFuture::forward(self.inner.call(req));
        }
        ShortCircuitFuture::answer(match redirect(&self.config, &req) {
            Ok(location) => {
                let mut headers = HeaderMap::with_capacity(2);
                headers.insert(LOCATION, location);
                headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                palisade_core::body::empty_response(StatusCode::MOVED_PERMANENTLY, headers)
            }
            Err(reason) => Rejection::new(RejectionKind::Misdirected, reason).into_response(),
        })
    }
}

fn redirect<B>(config: &HttpsConfig, req: &Request<B>) -> Result<HeaderValue, HttpsRejection> {
    let method = req.method();
    if method != Method::GET && method != Method::HEAD {
        let name = match *method {
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::PATCH => "PATCH",
            Method::DELETE => "DELETE",
            Method::OPTIONS => "OPTIONS",
            _ => "non-GET",
        };
        return Err(HttpsRejection::PlainHttp(name));
    }
    let host = match &config.canonical_host {
        Some(h) => h.clone(),
        None => request_host(req).map_err(|_| HttpsRejection::BadHost)?.name,
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    // An origin-form target always starts with '/'; anything else (authority-form, '*') gets
    // the root, so the Location can never point at another host.
    let path = if path.starts_with('/') && !path.starts_with("//") {
        path
    } else {
        "/"
    };
    let location = if config.https_port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{}{path}", config.https_port)
    };
    HeaderValue::try_from(location).map_err(|_| HttpsRejection::BadHost)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::header::HOST;
    use http_body_util::Empty;
    use palisade_core::ConnectionInfo;
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    use super::*;

    async fn send(
        layer: RequireHttpsLayer,
        req: Request<()>,
    ) -> Response<ResponseBody<Empty<Bytes>>> {
        ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(|_req: Request<()>| async {
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            }))
            .oneshot(req)
            .await
            .unwrap()
    }

    fn req(
        method: Method,
        uri: &str,
        host: Option<&str>,
        scheme: Option<RequestScheme>,
    ) -> Request<()> {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(h) = host {
            b = b.header(HOST, h);
        }
        let mut r = b.body(()).unwrap();
        r.extensions_mut()
            .insert(ConnectionInfo::new("192.0.2.1:1".parse().unwrap(), false));
        if let Some(s) = scheme {
            r.extensions_mut().insert(s);
        }
        r
    }

    #[tokio::test]
    async fn redirect_table() {
        let by_host = RequireHttpsLayer::builder().build().unwrap();
        let canonical = RequireHttpsLayer::builder()
            .canonical_host("API.example.com.")
            .unwrap()
            .https_port(8443)
            .build()
            .unwrap();
        let cases: Vec<(RequireHttpsLayer, Request<()>, u16, Option<&str>)> = vec![
            (
                by_host.clone(),
                req(Method::GET, "/a?b=c", Some("shop.example.com"), None),
                301,
                Some("https://shop.example.com/a?b=c"),
            ),
            (
                by_host.clone(),
                req(Method::HEAD, "/", Some("shop.example.com:80"), None),
                301,
                Some("https://shop.example.com/"),
            ),
            (
                by_host.clone(),
                req(Method::GET, "/", Some("evil.com/@x"), None),
                421,
                None,
            ),
            (
                by_host.clone(),
                req(Method::GET, "/", None, None),
                421,
                None,
            ),
            (
                by_host.clone(),
                req(Method::POST, "/", Some("shop.example.com"), None),
                421,
                None,
            ),
            (
                by_host.clone(),
                req(Method::DELETE, "/", Some("shop.example.com"), None),
                421,
                None,
            ),
            // A trusted proxy's scheme decides.
            (
                by_host.clone(),
                req(
                    Method::POST,
                    "/",
                    Some("shop.example.com"),
                    Some(RequestScheme::Https),
                ),
                200,
                None,
            ),
            (
                by_host.clone(),
                req(
                    Method::GET,
                    "/",
                    Some("shop.example.com"),
                    Some(RequestScheme::Http),
                ),
                301,
                Some("https://shop.example.com/"),
            ),
            (
                canonical.clone(),
                req(Method::GET, "/x", Some("evil.example"), None),
                301,
                Some("https://api.example.com:8443/x"),
            ),
            // Absolute-form targets cannot steer the redirect elsewhere.
            (
                canonical.clone(),
                req(Method::GET, "http://evil.example//x", None, None),
                301,
                Some("https://api.example.com:8443/"),
            ),
        ];
        for (layer, request, status, location) in cases {
            let desc = format!(
                "{} {} {:?}",
                request.method(),
                request.uri(),
                request.headers().get(HOST)
            );
            let res = send(layer, request).await;
            assert_eq!(res.status().as_u16(), status, "{desc}");
            assert_eq!(
                res.headers().get(LOCATION).map(|v| v.to_str().unwrap()),
                location,
                "{desc}"
            );
        }
    }

    #[tokio::test]
    async fn unknown_scheme_is_plain_http() {
        let layer = RequireHttpsLayer::builder()
            .canonical_host("api.example.com")
            .unwrap()
            .build()
            .unwrap();
        let res = send(layer, Request::builder().uri("/").body(()).unwrap()).await;
        assert_eq!(res.status(), 301);
    }
}
