//! The response future of [`super::Authorize`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use palisade_core::{Rejection, RejectionKind, ResponseBody};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{AuthorizeRejection, Check};
use crate::AuthzError;

pin_project! {
    /// The response future of [`super::Authorize`]: the decision, then the inner service's
    /// future; or a refusal.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Checking { check: Check<B>, service: Option<S> },
        Calling { #[pin] future: S::Future },
        Refused { rejection: Option<Rejection> },
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
    pub(crate) fn refused(rejection: Rejection) -> Self {
        Self {
            state: State::Refused {
                rejection: Some(rejection),
            },
        }
    }

    pub(crate) fn checking(check: Check<B>, service: S) -> Self {
        Self {
            state: State::Checking {
                check,
                service: Some(service),
            },
        }
    }
}

/// The answer of a future polled again after it finished: a refusal, never a pass.
fn spent() -> Rejection {
    Rejection::new(
        RejectionKind::Unavailable,
        AuthorizeRejection::Undecided(AuthzError::Malformed),
    )
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let this = self.as_mut().project();
            match this.state.project() {
                StateProj::Checking { check, service } => {
                    let (outcome, request) = ready!(check.as_mut().poll(cx));
                    match (outcome, service.take()) {
                        (Ok(()), Some(mut service)) => {
                            let future = service.call(request);
                            self.as_mut().project().state.set(State::Calling { future });
                        }
                        (Err(rejection), _) => {
                            self.as_mut()
                                .project()
                                .state
                                .set(State::Refused { rejection: None });
                            return Poll::Ready(Ok(rejection.into_response()));
                        }
                        (Ok(()), None) => return Poll::Ready(Ok(spent().into_response())),
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
