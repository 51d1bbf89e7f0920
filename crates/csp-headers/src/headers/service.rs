//! The service and response future of [`SecurityHeadersLayer`](super::SecurityHeadersLayer).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_REPORT_ONLY, CONTENT_TYPE,
    STRICT_TRANSPORT_SECURITY,
};
use http::{HeaderValue, Request, Response};
use palisade_core::RequestScheme;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{CspOverride, OverrideKind, Plan, SecurityHeadersLayer, draw_nonce};
use crate::csp::CspNonce;

impl<S> Layer<S> for SecurityHeadersLayer {
    type Service = SecurityHeaders<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SecurityHeaders {
            inner,
            plan: self.plan.clone(),
        }
    }
}

/// The service of [`SecurityHeadersLayer`](super::SecurityHeadersLayer).
#[derive(Clone, Debug)]
pub struct SecurityHeaders<S> {
    inner: S,
    plan: Arc<Plan>,
}

crate::macros::inner_service_accessors!(SecurityHeaders);

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SecurityHeaders<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let https = RequestScheme::of(req.extensions()) == Some(RequestScheme::Https);
        let nonce = draw_nonce(&self.plan);
        match &nonce {
            Some(n) => {
                req.extensions_mut().insert(n.clone());
            }
            None => {
                // Never let a handler see a nonce the response does not carry.
                req.extensions_mut().remove::<CspNonce>();
            }
        }
        ResponseFuture {
            inner: self.inner.call(req),
            plan: Some(self.plan.clone()),
            nonce,
            https,
        }
    }
}

pin_project! {
    /// Response future of [`SecurityHeaders`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        plan: Option<Arc<Plan>>,
        nonce: Option<CspNonce>,
        https: bool,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("https", &self.https)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        let plan = this.plan.take().expect("polled after completion");
        apply(&plan, &mut response, this.nonce.as_ref(), *this.https);
        Poll::Ready(Ok(response))
    }
}

fn apply<B>(plan: &Plan, response: &mut Response<B>, nonce: Option<&CspNonce>, https: bool) {
    let over = response.extensions_mut().remove::<CspOverride>();
    let headers = response.headers_mut();
    headers.reserve(plan.fixed.len() + 3);
    for name in &plan.remove {
        headers.remove(name);
    }
    for (name, value) in &plan.fixed {
        headers.insert(name.clone(), value.clone());
    }
    if https {
        if let Some(hsts) = &plan.hsts {
            headers.insert(STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
    } else {
        // Never over plain HTTP, whoever set it.
        headers.remove(STRICT_TRANSPORT_SECURITY);
    }
    let mut nonce_sent = false;
    match over.map(|o| o.0) {
        Some(OverrideKind::Disable) => {
            headers.remove(CONTENT_SECURITY_POLICY);
        }
        Some(OverrideKind::Replace(policy)) => {
            let late;
            let nonce = match nonce {
                Some(n) => Some(n),
                None if policy.uses_nonce() => {
                    late = CspNonce::generate();
                    late.as_ref()
                }
                None => None,
            };
            nonce_sent = policy.uses_nonce();
            headers.insert(CONTENT_SECURITY_POLICY, policy.header_value_or_deny(nonce));
        }
        None => {
            if let Some(policy) = &plan.csp {
                nonce_sent = policy.uses_nonce();
                headers.insert(CONTENT_SECURITY_POLICY, policy.header_value_or_deny(nonce));
            }
        }
    }
    // A shared cache must not hand one nonce to many visitors: HTML carrying a nonce is not
    // stored unless the handler chose a caching policy itself.
    let html = headers.get(CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes().len() >= 9 && v.as_bytes()[..9].eq_ignore_ascii_case(b"text/html")
    });
    if nonce_sent && html && !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if let Some(policy) = &plan.csp_report_only {
        headers.insert(
            CONTENT_SECURITY_POLICY_REPORT_ONLY,
            policy.header_value_or_deny(nonce),
        );
    }
}
