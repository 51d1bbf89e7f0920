//! The response future of [`super::Throttle`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use palisade_core::{Rejection, RejectionKind, ResponseBody};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{Check, Refusal, ThrottleError};
use crate::headers::RateHeaders;
use crate::store::StoreError;

pin_project! {
    /// The response future of [`super::Throttle`]: the inner service's future (with the
    /// rate-limit fields to add), a refusal, or the boxed check of the slow path.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
        span: tracing::Span,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Checking { check: Check<B>, service: Option<S> },
        Calling { #[pin] future: S::Future, headers: Option<Box<RateHeaders>> },
        Refused { refusal: Option<Box<Refusal>> },
    }
}

impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn calling(future: S::Future, headers: Option<Box<RateHeaders>>) -> Self {
        Self {
            state: State::Calling { future, headers },
            span: tracing::Span::none(),
        }
    }

    pub(crate) fn refused(refusal: Box<Refusal>) -> Self {
        Self {
            state: State::Refused {
                refusal: Some(refusal),
            },
            span: tracing::Span::none(),
        }
    }

    pub(crate) fn checking(check: Check<B>, service: S) -> Self {
        Self {
            state: State::Checking {
                check,
                service: Some(service),
            },
            span: tracing::Span::none(),
        }
    }

    /// Polls inside `span` (refusals are logged there).
    pub(crate) fn in_span(mut self, span: tracing::Span) -> Self {
        self.span = span;
        self
    }
}

/// The refusal of a future polled again after it finished: never served.
fn spent() -> Box<Refusal> {
    Refusal::new(Rejection::new(
        RejectionKind::Unavailable,
        ThrottleError::Store(StoreError::new(
            "throttle future polled after completion",
            None,
        )),
    ))
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
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

impl<S, B, ResBody> ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    fn poll_state(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<ResponseBody<ResBody>>, S::Error>> {
        loop {
            let this = self.as_mut().project();
            match this.state.project() {
                StateProj::Checking { check, service } => {
                    let (outcome, request) = ready!(check.as_mut().poll(cx));
                    match (outcome, service.take()) {
                        (Ok(headers), Some(mut service)) => {
                            let future = service.call(request);
                            self.as_mut()
                                .project()
                                .state
                                .set(State::Calling { future, headers });
                        }
                        (Err(refusal), _) => {
                            // Polled again, the future answers "spent", never resumes the check.
                            self.as_mut()
                                .project()
                                .state
                                .set(State::Refused { refusal: None });
                            return Poll::Ready(Ok(refusal.into_response()));
                        }
                        (Ok(_), None) => return Poll::Ready(Ok(spent().into_response())),
                    }
                }
                StateProj::Calling { future, headers } => {
                    let mut response = ready!(future.poll(cx))?;
                    if let Some(headers) = headers.take() {
                        headers.apply(response.headers_mut());
                    }
                    return Poll::Ready(Ok(response.map(ResponseBody::new)));
                }
                StateProj::Refused { refusal } => {
                    let refusal = refusal.take().unwrap_or_else(spent);
                    return Poll::Ready(Ok(refusal.into_response()));
                }
            }
        }
    }
}
