//! [`GateFuture`]: the response future of a layer that must wait for a decision (a store, a
//! policy decision point, an audit write) before it may call the inner service.
//!
//! The decision is one boxed future (`Gate`) that owns the request and hands back the
//! request to serve, or a [`Rejection`]. Until it answers, the inner service is not called;
//! when it refuses, the service is never called.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::{Rejection, RejectionKind, ResponseBody};

/// The decision of a [`GateFuture`]: the request to serve (the same one, or one it changed),
/// or a refusal.
pub type Gate<R> = Pin<Box<dyn Future<Output = Result<R, Rejection>> + Send>>;

pin_project! {
    /// The response future of a gating layer (see the module docs).
    pub struct GateFuture<S, R>
    where
        S: Service<R>,
    {
        #[pin]
        state: State<S, R>,
        span: tracing::Span,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, R>
    where
        S: Service<R>,
    {
        Gating { gate: Gate<R>, service: Option<S> },
        Calling { #[pin] future: S::Future },
        Refused { rejection: Option<Rejection> },
    }
}

impl<S: Service<R>, R> fmt::Debug for GateFuture<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateFuture").finish_non_exhaustive()
    }
}

/// Why a gate future answered after it had finished (never served).
#[derive(Debug, thiserror::Error)]
#[error("a gated response future was polled after it completed")]
struct Spent;

fn spent() -> Rejection {
    Rejection::new(RejectionKind::Unavailable, Spent)
}

impl<S: Service<R>, R> GateFuture<S, R> {
    /// Waits for `gate`, then calls `service` with the request it answers.
    pub fn gating(gate: Gate<R>, service: S) -> Self {
        Self {
            state: State::Gating {
                gate,
                service: Some(service),
            },
            span: tracing::Span::none(),
        }
    }

    /// Calls no gate: the inner service's future, as it is.
    pub fn calling(future: S::Future) -> Self {
        Self {
            state: State::Calling { future },
            span: tracing::Span::none(),
        }
    }

    /// Answers `rejection` without calling the service.
    pub fn refused(rejection: Rejection) -> Self {
        Self {
            state: State::Refused {
                rejection: Some(rejection),
            },
            span: tracing::Span::none(),
        }
    }

    /// Runs the decision, the refusal (whose reason is logged) and the inner call inside
    /// `span` (for example `tracing::debug_span!("palisade.aksk")`).
    pub fn in_span(mut self, span: tracing::Span) -> Self {
        self.span = span;
        self
    }
}

impl<S, R, ResBody> Future for GateFuture<S, R>
where
    S: Service<R, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Entered only when there is a span: a disabled one costs nothing per poll.
        if self.span.is_disabled() {
            return self.poll_state(cx);
        }
        let span = self.span.clone();
        let _entered = span.enter();
        self.poll_state(cx)
    }
}

impl<S, R, ResBody> GateFuture<S, R>
where
    S: Service<R, Response = Response<ResBody>>,
{
    fn poll_state(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<ResponseBody<ResBody>>, S::Error>> {
        loop {
            let this = self.as_mut().project();
            match this.state.project() {
                StateProj::Gating { gate, service } => {
                    let decided = ready!(gate.as_mut().poll(cx));
                    match (decided, service.take()) {
                        (Ok(request), Some(mut service)) => {
                            let future = service.call(request);
                            self.as_mut().project().state.set(State::Calling { future });
                        }
                        (Err(rejection), _) => {
                            // Polled again, the future answers "spent", never serves.
                            self.as_mut()
                                .project()
                                .state
                                .set(State::Refused { rejection: None });
                            return Poll::Ready(Ok(rejection.into_response()));
                        }
                        (Ok(_), None) => return Poll::Ready(Ok(spent().into_response())),
                    }
                }
                StateProj::Calling { future } => {
                    let response = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(response.map(ResponseBody::new)));
                }
                StateProj::Refused { rejection } => {
                    let rejection = rejection.take().unwrap_or_else(spent);
                    return Poll::Ready(Ok(rejection.into_response()));
                }
            }
        }
    }
}

/// Whether layers should make their per-request spans: a `tracing` subscriber (global or
/// scoped) was set at some point. Without one a span does nothing, yet building a disabled
/// one still costs about 20 ns on a layer's hot path (more with `tracing`'s `log` bridge).
#[inline]
pub fn spans_wanted() -> bool {
    tracing::dispatcher::has_been_set()
}

/// A layer's per-request debug span (same arguments as `tracing::debug_span!`), or
/// `Span::none()` without building one when no subscriber was ever set
/// ([`spans_wanted`]). Check `is_disabled()` before entering it on a hot path.
///
/// ```
/// let span = palisade_core::request_span!("palisade.example", surface = "api");
/// assert!(span.is_disabled()); // no subscriber in this test
/// ```
#[macro_export]
macro_rules! request_span {
    ($($arg:tt)+) => {
        if $crate::gate::spans_wanted() {
            $crate::__private::tracing::debug_span!($($arg)+)
        } else {
            $crate::__private::tracing::Span::none()
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    type Body = ();

    fn now<F: Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(out) = future
                .as_mut()
                .poll(&mut Context::from_waker(std::task::Waker::noop()))
            {
                return out;
            }
        }
    }

    #[derive(Clone)]
    struct Count(Arc<AtomicUsize>);

    impl Service<u32> for Count {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: u32) -> Self::Future {
            self.0.fetch_add(request as usize, Ordering::SeqCst);
            std::future::ready(Ok(Response::new(())))
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("no")]
    struct No;

    #[test]
    fn a_refusing_gate_never_calls_the_service_and_an_admitting_one_passes_its_request() {
        let calls = Arc::new(AtomicUsize::new(0));
        let refused: GateFuture<Count, u32> = GateFuture::gating(
            Box::pin(async { Err(Rejection::new(RejectionKind::Forbidden, No)) }),
            Count(calls.clone()),
        );
        let response = now(refused).map(|r| r.status());
        assert_eq!(response.ok(), Some(http::StatusCode::FORBIDDEN));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        let admitted: GateFuture<Count, u32> =
            GateFuture::gating(Box::pin(async { Ok(7) }), Count(calls.clone()));
        assert_eq!(
            now(admitted).map(|r| r.status()).ok(),
            Some(http::StatusCode::OK)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 7);
    }
}
