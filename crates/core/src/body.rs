//! A response body that is either the inner service's body or a short fixed body, and the
//! future that layers return when they may answer on their own.
//!
//! Layers that refuse requests (CORS preflights, HTTPS enforcement, authentication) answer
//! with a body of their own without forcing a concrete body type on the application: their
//! responses carry [`ResponseBody<B>`] around the inner body `B`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The body of a response that passed through a Palisade layer.
    ///
    /// It is either the inner service's body, untouched, or a complete body the layer wrote
    /// (a problem document, or nothing).
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { data: Option<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    /// Wraps the inner service's body.
    pub fn new(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// A complete body holding `data`.
    pub fn full(data: Bytes) -> Self {
        let data = if data.is_empty() { None } else { Some(data) };
        Self {
            kind: Kind::Full { data },
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full { data: None },
        }
    }
}

impl<B> Default for ResponseBody<B> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("ResponseBody::Inner"),
            Kind::Full { data } => f
                .debug_struct("ResponseBody::Full")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Data: From<Bytes>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Full { data } => {
                Poll::Ready(data.take().map(|d| Ok(Frame::data(B::Data::from(d)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

pin_project! {
    /// Response future of a layer that either forwards to the inner service or answers at
    /// once with a response of its own.
    pub struct ShortCircuitFuture<F, B> {
        #[pin]
        kind: FutureKind<F, B>,
    }
}

pin_project! {
    #[project = FutureKindProj]
    enum FutureKind<F, B> {
        Forward { #[pin] future: F },
        Answer { response: Option<Response<ResponseBody<B>>> },
    }
}

impl<F, B> ShortCircuitFuture<F, B> {
    /// Forwards to the inner service's future.
    pub fn forward(future: F) -> Self {
        Self {
            kind: FutureKind::Forward { future },
        }
    }

    /// Answers with `response` without calling the inner service.
    pub fn answer(response: Response<ResponseBody<B>>) -> Self {
        Self {
            kind: FutureKind::Answer {
                response: Some(response),
            },
        }
    }
}

impl<F, B> fmt::Debug for ShortCircuitFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let arm = match &self.kind {
            FutureKind::Forward { .. } => "Forward",
            FutureKind::Answer { .. } => "Answer",
        };
        f.debug_tuple("ShortCircuitFuture").field(&arm).finish()
    }
}

impl<F, B, E> Future for ShortCircuitFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            FutureKindProj::Forward { future } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(ResponseBody::new)))
            }
            FutureKindProj::Answer { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
        }
    }
}

/// Builds an empty response with `status` and `headers`, in a layer's body type.
pub fn empty_response<B>(
    status: http::StatusCode,
    headers: HeaderMap,
) -> Response<ResponseBody<B>> {
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn full_body_yields_its_data_once() {
        let body: ResponseBody<Full<Bytes>> = ResponseBody::full(Bytes::from_static(b"hi"));
        assert_eq!(body.size_hint().exact(), Some(2));
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"hi");
    }

    #[tokio::test]
    async fn inner_body_passes_through() {
        let body = ResponseBody::new(Full::new(Bytes::from_static(b"inner")));
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"inner");
    }

    #[test]
    fn empty_body_is_end_of_stream() {
        let body: ResponseBody<Full<Bytes>> = ResponseBody::empty();
        assert!(body.is_end_stream());
    }
}
