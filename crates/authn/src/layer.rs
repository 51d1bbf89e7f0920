//! [`AuthnLayer`]: authenticates each request for one surface.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::header::{AUTHORIZATION, HeaderValue};
use http::{Request, Response};
use palisade_core::{Rejection, RejectionKind, ResponseBody};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument as _;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use palisade_core::{Identity, SessionRevocation};

use crate::cookie::CookieSource;
use crate::error::AuthnError;
use crate::surface::SurfacePolicy;
use crate::verifier::{Authenticator, Step};

/// Authenticates requests for one surface and puts the [`palisade_core::Identity`] in the
/// request extensions. Made by [`Authenticator::layer`].
#[derive(Clone, Debug)]
#[must_use]
pub struct AuthnLayer {
    auth: Authenticator,
    policy: Arc<SurfacePolicy>,
    cookie: Option<Arc<CookieSource>>,
    revocation: Option<Arc<Revocation>>,
}

/// Revocation checks for one issuer's sessions, with a bounded-staleness cache.
pub(crate) struct Revocation {
    issuer: String,
    checker: Arc<dyn SessionRevocation>,
    staleness: Duration,
    cache: Mutex<HashMap<String, (bool, SystemTime)>>,
}

/// Most sessions remembered by the revocation cache; beyond it the cache starts over.
const MAX_CACHED_SESSIONS: usize = 10_000;

impl std::fmt::Debug for Revocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocation")
            .field("issuer", &self.issuer)
            .field("staleness", &self.staleness)
            .finish_non_exhaustive()
    }
}

impl Revocation {
    /// `Some(revoked)` from a fresh cache entry; `None` when the store must be asked.
    fn cached(&self, sid: &str, now: SystemTime) -> Option<bool> {
        let cache = self.cache.lock().ok()?;
        let (revoked, at) = cache.get(sid)?;
        // A revocation is final: it never needs asking again.
        (*revoked || now.duration_since(*at).unwrap_or_default() <= self.staleness)
            .then_some(*revoked)
    }

    fn remember(&self, sid: &str, revoked: bool, now: SystemTime) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED_SESSIONS {
                cache.clear();
            }
            cache.insert(sid.to_owned(), (revoked, now));
        }
    }

    /// Whether this identity's session may go on: cache first, then the store.
    pub(crate) async fn check(
        &self,
        identity: &Identity,
        now: SystemTime,
    ) -> Result<(), AuthnError> {
        let Some(sid) = identity
            .session_id()
            .filter(|_| identity.issuer() == self.issuer)
        else {
            return Ok(());
        };
        let revoked = match self.cached(sid, now) {
            Some(revoked) => revoked,
            None => {
                let revoked = self
                    .checker
                    .is_revoked(sid)
                    .await
                    .map_err(|_| AuthnError::RevocationUnavailable)?;
                self.remember(sid, revoked, now);
                revoked
            }
        };
        if revoked {
            Err(AuthnError::SessionRevoked)
        } else {
            Ok(())
        }
    }

    /// The synchronous answer, if the cache has one (or the token is not checked).
    fn check_now(&self, identity: &Identity, now: SystemTime) -> Option<Result<(), AuthnError>> {
        let Some(sid) = identity
            .session_id()
            .filter(|_| identity.issuer() == self.issuer)
        else {
            return Some(Ok(()));
        };
        self.cached(sid, now).map(|revoked| {
            if revoked {
                Err(AuthnError::SessionRevoked)
            } else {
                Ok(())
            }
        })
    }
}

impl AuthnLayer {
    /// The profile its authenticator was checked under (see [`Authenticator::profile`]).
    pub fn profile(&self) -> palisade_core::Profile {
        self.auth.profile()
    }

    pub(crate) fn new(auth: Authenticator, policy: Arc<SurfacePolicy>) -> Self {
        Self {
            auth,
            policy,
            cookie: None,
            revocation: None,
        }
    }

    /// Refuses tokens of `issuer` whose session (`sid`: a refresh family of your own issuer,
    /// such as local JWTs) was revoked. Answers are cached for at most `staleness` (a
    /// revocation takes effect within that time; a revocation seen once is final); a checker
    /// that cannot answer makes the request fail with 503.
    pub fn with_revocation(
        mut self,
        issuer: &str,
        checker: Arc<dyn SessionRevocation>,
        staleness: Duration,
    ) -> Self {
        self.revocation = Some(Arc::new(Revocation {
            issuer: issuer.to_owned(),
            checker,
            staleness,
            cache: Mutex::new(HashMap::new()),
        }));
        self
    }

    /// Also accepts the token from a `__Host-` session cookie (for browser sessions), with
    /// the CSRF check described in [`crate::cookie`]. An `Authorization` header wins.
    pub fn with_cookie(mut self, source: CookieSource) -> Self {
        self.cookie = Some(Arc::new(source));
        self
    }
}

impl<S> Layer<S> for AuthnLayer {
    type Service = Authn<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authn {
            inner,
            auth: self.auth.clone(),
            policy: self.policy.clone(),
            cookie: self.cookie.clone(),
            revocation: self.revocation.clone(),
        }
    }
}

/// The service of [`AuthnLayer`].
#[derive(Clone, Debug)]
pub struct Authn<S> {
    inner: S,
    auth: Authenticator,
    policy: Arc<SurfacePolicy>,
    cookie: Option<Arc<CookieSource>>,
    revocation: Option<Arc<Revocation>>,
}

impl<S> Authn<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
    /// Consumes the layer's service, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The token of a request: exactly one `Authorization: Bearer <token>` header, else the session
/// cookie (after its CSRF check) when one is configured; never the query string.
pub(crate) fn request_token<'r, B>(
    req: &'r Request<B>,
    cookie: Option<&CookieSource>,
) -> Result<&'r str, AuthnError> {
    match bearer(req) {
        Err(AuthnError::MissingToken) => match cookie {
            Some(source) => source.token(req)?.ok_or(AuthnError::MissingToken),
            None => Err(AuthnError::MissingToken),
        },
        other => other,
    }
}

/// The bearer token of a request: exactly one `Authorization: Bearer <token>` header, and no
/// token in the query string.
pub(crate) fn bearer<B>(req: &Request<B>) -> Result<&str, AuthnError> {
    if let Some(query) = req.uri().query()
        && query
            .split('&')
            .any(|pair| is_access_token_param(pair.split('=').next().unwrap_or("")))
    {
        return Err(AuthnError::TokenInQuery);
    }
    let mut values = req.headers().get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthnError::MissingToken)?;
    if values.next().is_some() {
        return Err(AuthnError::MalformedAuthorization);
    }
    let text = value
        .to_str()
        .map_err(|_| AuthnError::MalformedAuthorization)?;
    let (scheme, token) = text
        .split_once(' ')
        .ok_or(AuthnError::MalformedAuthorization)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(AuthnError::MalformedAuthorization);
    }
    Ok(token)
}

/// Whether a query parameter name is RFC 6750's `access_token`, after percent-decoding.
pub(crate) fn is_access_token_param(name: &str) -> bool {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = name.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            decoded.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        decoded.push(bytes[i]);
        i += 1;
    }
    decoded.eq_ignore_ascii_case(b"access_token")
}

pub(crate) fn reject<B>(reason: AuthnError) -> Response<ResponseBody<B>> {
    metrics::counter!("palisade_authn_failures_total", "reason" => reason.reason()).increment(1);
    let rejection = match reason {
        AuthnError::KeysUnavailable | AuthnError::RevocationUnavailable => {
            Rejection::new(RejectionKind::Unavailable, reason)
        }
        AuthnError::MfaRequired => Rejection::new(RejectionKind::Unauthenticated, reason)
            .with_challenge(HeaderValue::from_static(
                "Bearer error=\"insufficient_user_authentication\"",
            )),
        AuthnError::MissingToken => Rejection::new(RejectionKind::Unauthenticated, reason)
            .with_challenge(HeaderValue::from_static("Bearer")),
        other => Rejection::new(RejectionKind::Unauthenticated, other)
            .with_challenge(HeaderValue::from_static("Bearer error=\"invalid_token\"")),
    };
    rejection.into_response()
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Authn<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // Refusals decided here are logged (reason only, never the token) inside this span.
        let _span = palisade_core::request_span!("palisade.authn", surface = %self.policy.surface)
            .entered();
        // Nothing upstream may pre-authenticate the request.
        req.extensions_mut().remove::<palisade_core::Identity>();
        let token = match request_token(&req, self.cookie.as_deref()) {
            Ok(token) => token,
            Err(reason) => return ResponseFuture::answer(reject(reason)),
        };
        match self.auth.verify_now(token, &self.policy, true) {
            Step::Done(Ok(identity)) => {
                let now = self.auth.now();
                match self
                    .revocation
                    .as_ref()
                    .map(|r| (r.check_now(&identity, now), r))
                {
                    None | Some((Some(Ok(())), _)) => {
                        req.extensions_mut().insert(identity);
                        ResponseFuture::forward(self.inner.call(req))
                    }
                    Some((Some(Err(reason)), _)) => ResponseFuture::answer(reject(reason)),
                    Some((None, revocation)) => {
                        // Not cached: ask the store (slow path).
                        let revocation = revocation.clone();
                        let clone = self.inner.clone();
                        let mut inner = std::mem::replace(&mut self.inner, clone);
                        ResponseFuture::slow(Box::pin(
                            async move {
                                match revocation.check(&identity, now).await {
                                    Ok(()) => {
                                        req.extensions_mut().insert(identity);
                                        inner.call(req).await.map(|r| r.map(ResponseBody::new))
                                    }
                                    Err(reason) => Ok(reject(reason)),
                                }
                            }
                            .instrument(tracing::Span::current()),
                        ))
                    }
                }
            }
            Step::Done(Err(reason)) => ResponseFuture::answer(reject(reason)),
            Step::Refresh {
                issuer,
                requested_at,
            } => {
                // Slow path (unknown kid or stale keys): refresh once, then verify again. The
                // ready inner service moves into the future; a clone takes its place.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let auth = self.auth.clone();
                let policy = self.policy.clone();
                let revocation = self.revocation.clone();
                let token = token.to_owned();
                ResponseFuture::slow(Box::pin(
                    async move {
                        let verified = auth.finish(&token, &policy, &issuer, requested_at).await;
                        let checked = match (verified, revocation) {
                            (Ok(identity), Some(r)) => {
                                r.check(&identity, auth.now()).await.map(|()| identity)
                            }
                            (other, _) => other,
                        };
                        match checked {
                            Ok(identity) => {
                                req.extensions_mut().insert(identity);
                                inner.call(req).await.map(|r| r.map(ResponseBody::new))
                            }
                            Err(reason) => Ok(reject(reason)),
                        }
                    }
                    .instrument(tracing::Span::current()),
                ))
            }
        }
    }
}

pin_project! {
    /// Response future of [`Authn`].
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E> {
        Forward { #[pin] future: F },
        Answer { response: Option<Response<ResponseBody<B>>> },
        Slow { future: BoxFuture<Result<Response<ResponseBody<B>>, E>> },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    pub(crate) fn forward(future: F) -> Self {
        Self {
            kind: Kind::Forward { future },
        }
    }
    pub(crate) fn answer(response: Response<ResponseBody<B>>) -> Self {
        Self {
            kind: Kind::Answer {
                response: Some(response),
            },
        }
    }
    pub(crate) fn slow(future: BoxFuture<Result<Response<ResponseBody<B>>, E>>) -> Self {
        Self {
            kind: Kind::Slow { future },
        }
    }
}

impl<F, B, E> std::fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("authn::ResponseFuture")
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Forward { future } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(ResponseBody::new)))
            }
            KindProj::Answer { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
            KindProj::Slow { future } => future.as_mut().poll(cx),
        }
    }
}
