//! The service and response future of [`CorsLayer`](super::CorsLayer).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use palisade_core::{Rejection, RejectionKind, ResponseBody};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{Config, CorsLayer};

/// Most header names read from one `Access-Control-Request-Headers`.
const MAX_REQUESTED_HEADERS: usize = 64;

/// Why a preflight was refused (server-side only; the client sees a generic 403).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorsRejection {
    /// The `Origin` is not listed, or several `Origin` headers were sent.
    #[error("CORS preflight from an origin that is not allowed")]
    OriginNotAllowed,
    /// The requested method is not allowed.
    #[error("CORS preflight for a method that is not allowed")]
    MethodNotAllowed,
    /// A requested header is not allowed, or the list is malformed or too long.
    #[error("CORS preflight for a header that is not allowed")]
    HeaderNotAllowed,
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Cors {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service of [`CorsLayer`](super::CorsLayer).
#[derive(Clone, Debug)]
pub struct Cors<S> {
    inner: S,
    config: Arc<Config>,
}

crate::macros::inner_service_accessors!(Cors);

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Cors<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let config = &self.config;
        let mut origins = req.headers().get_all(header::ORIGIN).iter();
        let first = origins.next();
        let single = first.filter(|_| origins.next().is_none());
        let allowed = single.filter(|o| config.origins.contains(*o)).cloned();

        let is_preflight = req.method() == Method::OPTIONS
            && first.is_some()
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if is_preflight {
            let response = match preflight(config, allowed, req.headers()) {
                Ok(response) => response,
                Err(reason) => {
                    let mut response =
                        Rejection::new(RejectionKind::Forbidden, reason).into_response();
                    add_vary(response.headers_mut(), PREFLIGHT_VARY);
                    response
                }
            };
            return ResponseFuture {
                kind: Kind::Answer {
                    response: Some(response),
                },
            };
        }
        ResponseFuture {
            kind: Kind::Forward {
                future: self.inner.call(req),
                config: Some(self.config.clone()),
                allowed,
            },
        }
    }
}

const PREFLIGHT_VARY: &[&str] = &[
    "origin",
    "access-control-request-method",
    "access-control-request-headers",
];

fn preflight<B>(
    config: &Config,
    allowed: Option<HeaderValue>,
    headers: &HeaderMap,
) -> Result<Response<ResponseBody<B>>, CorsRejection> {
    let origin = allowed.ok_or(CorsRejection::OriginNotAllowed)?;
    let method = headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or(CorsRejection::MethodNotAllowed)?;
    if !config.methods.contains(&method) {
        return Err(CorsRejection::MethodNotAllowed);
    }
    let mut count = 0;
    for value in headers.get_all(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        let text = value
            .to_str()
            .map_err(|_| CorsRejection::HeaderNotAllowed)?;
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            count += 1;
            if count > MAX_REQUESTED_HEADERS
                || !config
                    .headers
                    .iter()
                    .any(|h| h.as_str().eq_ignore_ascii_case(name))
            {
                return Err(CorsRejection::HeaderNotAllowed);
            }
        }
    }
    let mut out = HeaderMap::with_capacity(8);
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if config.credentials {
        out.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        config.methods_value.clone(),
    );
    out.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        config.headers_value.clone(),
    );
    out.insert(header::ACCESS_CONTROL_MAX_AGE, config.max_age_value.clone());
    add_vary(&mut out, PREFLIGHT_VARY);
    Ok(palisade_core::body::empty_response(
        StatusCode::NO_CONTENT,
        out,
    ))
}

/// Adds `names` to `Vary`, keeping what is there and never duplicating a name.
pub(crate) fn add_vary(headers: &mut HeaderMap, names: &[&str]) {
    let mut present: Vec<String> = Vec::new();
    for value in headers.get_all(header::VARY) {
        if let Ok(text) = value.to_str() {
            present.extend(text.split(',').map(|t| t.trim().to_ascii_lowercase()));
        }
    }
    if present.iter().any(|p| p == "*") {
        return;
    }
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !present.iter().any(|p| p == n))
        .collect();
    if missing.is_empty() {
        return;
    }
    if let Ok(value) = HeaderValue::try_from(missing.join(", ")) {
        headers.append(header::VARY, value);
    }
}

pin_project! {
    /// Response future of [`Cors`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Forward { #[pin] future: F, config: Option<Arc<Config>>, allowed: Option<HeaderValue> },
        Answer { response: Option<Response<ResponseBody<B>>> },
    }
}

impl<F, B> std::fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cors::ResponseFuture")
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Forward {
                future,
                config,
                allowed,
            } => {
                let mut response = ready!(future.poll(cx))?;
                let config = config.take().expect("polled after completion");
                let headers = response.headers_mut();
                add_vary(headers, &["origin"]);
                if let Some(origin) = allowed.take() {
                    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                    if config.credentials {
                        headers.insert(
                            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                            HeaderValue::from_static("true"),
                        );
                    }
                    if let Some(expose) = &config.expose_value {
                        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
                    }
                } else {
                    // The inner service must not grant what this layer did not.
                    for name in [
                        header::ACCESS_CONTROL_ALLOW_ORIGIN,
                        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                        header::ACCESS_CONTROL_EXPOSE_HEADERS,
                    ] {
                        headers.remove(name);
                    }
                }
                Poll::Ready(Ok(response.map(ResponseBody::new)))
            }
            KindProj::Answer { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
        }
    }
}
