//! The request body the inner service receives.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// A boxed body error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project! {
    /// The body of a request that passed the access-key layer: the verified bytes (the body was
    /// read, hashed and compared before the inner service ran), or, on a route that opted into
    /// `UNSIGNED-PAYLOAD` or a request another authenticator handles, the original stream.
    pub struct VerifiedBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Verified { data: Option<Bytes> },
        Unverified { #[pin] body: B, remaining: u64, over: bool },
    }
}

fn over_limit() -> BoxError {
    BoxError::from("the unsigned body is larger than the limit")
}

impl<B> std::fmt::Debug for VerifiedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedBody").finish_non_exhaustive()
    }
}

impl<B> VerifiedBody<B> {
    /// A verified, complete body.
    pub fn verified(data: Bytes) -> Self {
        Self {
            kind: Kind::Verified {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    /// The original stream, not checked against the signature, cut off with an error after
    /// `limit` bytes.
    pub fn unverified(body: B, limit: u64) -> Self {
        Self {
            kind: Kind::Unverified {
                body,
                remaining: limit,
                over: false,
            },
        }
    }

    /// Whether the bytes were checked against the signed hash.
    pub fn is_verified(&self) -> bool {
        matches!(self.kind, Kind::Verified { .. })
    }
}

impl<B> Body for VerifiedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Verified { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Unverified {
                body,
                remaining,
                over,
            } => {
                // Refused once, refused for good: no later (smaller) frame gets through.
                if *over {
                    return Poll::Ready(Some(Err(over_limit())));
                }
                let frame = std::task::ready!(body.poll_frame(cx));
                Poll::Ready(frame.map(|frame| {
                    let frame = frame.map_err(Into::into)?;
                    if let Some(data) = frame.data_ref() {
                        let len = data.len() as u64;
                        if len > *remaining {
                            // Refused while the handler reads: counted like a refusal at
                            // the gate.
                            metrics::counter!(
                                "palisade_aksk_failures_total",
                                "reason" => "body_too_large"
                            )
                            .increment(1);
                            tracing::warn!(target: "palisade::aksk", "unsigned body over its limit: refused while read");
                            *over = true;
                            return Err(over_limit());
                        }
                        *remaining -= len;
                    }
                    Ok(frame)
                }))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Verified { data } => data.is_none(),
            Kind::Unverified { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Verified { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Unverified { body, .. } => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use http_body_util::BodyExt as _;

    use super::*;

    /// A body of the given frames, one per poll.
    struct Frames(VecDeque<Bytes>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test]
    async fn an_unsigned_body_over_its_limit_stays_refused() {
        let frames = ["12345", "1234567890", "1"].map(|s| Bytes::from_static(s.as_bytes()));
        let mut body = VerifiedBody::unverified(Frames(frames.into()), 8);
        let first = body
            .frame()
            .await
            .expect("frame")
            .expect("within the limit");
        assert_eq!(first.into_data().ok(), Some(Bytes::from_static(b"12345")));
        assert!(
            body.frame().await.expect("frame").is_err(),
            "over the limit"
        );
        // The next frame would fit what remained: still refused.
        assert!(
            body.frame().await.expect("frame").is_err(),
            "refused for good"
        );
    }
}
