//! The response future of [`super::AccessKey`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use palisade_core::{Rejection, ResponseBody};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::body::VerifiedBody;

/// The boxed authentication step: the only allocation of the layer's own, around the store
/// calls and the body read.
pub(crate) type Authenticate<B> =
    Pin<Box<dyn Future<Output = Result<Request<VerifiedBody<B>>, Rejection>> + Send>>;

pin_project! {
    /// The response future of [`super::AccessKey`].
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<VerifiedBody<B>>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<VerifiedBody<B>>>,
    {
        Authenticating { authenticate: Authenticate<B>, service: Option<S> },
        Inner { #[pin] future: S::Future },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<VerifiedBody<B>>>,
{
    pub(crate) fn authenticating(authenticate: Authenticate<B>, service: S) -> Self {
        Self {
            state: State::Authenticating {
                authenticate,
                service: Some(service),
            },
        }
    }

    pub(crate) fn inner(future: S::Future) -> Self {
        Self {
            state: State::Inner { future },
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<VerifiedBody<B>>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let this = self.as_mut().project();
            match this.state.project() {
                StateProj::Authenticating {
                    authenticate,
                    service,
                } => match ready!(authenticate.as_mut().poll(cx)) {
                    Ok(request) => {
                        // The service is taken once, as the state moves on to `Inner`: it is
                        // always here. Were it not, the request is refused, not served.
                        let Some(mut service) = service.take() else {
                            let reason = crate::VerifyError::Unavailable(crate::StoreError::new(
                                "access-key future polled after completion",
                                None,
                            ));
                            tracing::error!(%reason, "access-key request refused");
                            return Poll::Ready(Ok(Rejection::new(
                                palisade_core::RejectionKind::Unavailable,
                                reason,
                            )
                            .into_response()));
                        };
                        let future = service.call(request);
                        self.as_mut().project().state.set(State::Inner { future });
                    }
                    Err(rejection) => return Poll::Ready(Ok(rejection.into_response())),
                },
                StateProj::Inner { future } => {
                    let response = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(response.map(ResponseBody::new)));
                }
            }
        }
    }
}
