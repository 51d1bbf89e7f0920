//! One type for every refusal: [`Rejection`].
//!
//! A rejection has a [`RejectionKind`] (which decides the status code and the generic message
//! the client sees) and a typed reason (which only the server sees). Turning it into a response
//! logs the reason, stores the whole rejection in the response extensions for outer layers and
//! tests, and sends an RFC 9457 `application/problem+json` document that says nothing about why.
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::{Rejection, RejectionKind};
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("org quota exhausted")]
//! struct Quota;
//!
//! let response = Rejection::new(RejectionKind::TooManyRequests, Quota)
//!     .with_retry_after(Duration::from_secs(7))
//!     .into_response::<http_body_util::Empty<bytes::Bytes>>();
//! assert_eq!(response.status(), 429);
//! assert_eq!(response.headers()["retry-after"], "7");
//! assert_eq!(response.headers()["content-type"], "application/problem+json");
//! ```

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use crate::body::ResponseBody;

/// The class of a refusal; it decides the status code and the generic message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// 401: no credentials, or credentials that did not verify.
    Unauthenticated,
    /// 403: authenticated, but not allowed.
    Forbidden,
    /// 404: hidden; the resource is not shown to this caller.
    NotFound,
    /// 421: the request was sent to the wrong host or over the wrong scheme.
    Misdirected,
    /// 429: too many requests.
    TooManyRequests,
    /// 503: a component the decision depends on is unavailable (fail closed).
    Unavailable,
}

impl RejectionKind {
    /// The HTTP status of this kind.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The problem document sent for this kind: the same for every reason.
    pub fn problem_document(self) -> &'static str {
        match self {
            Self::Unauthenticated => {
                r#"{"type":"about:blank","title":"Unauthorized","status":401,"detail":"Valid credentials are required."}"#
            }
            Self::Forbidden => {
                r#"{"type":"about:blank","title":"Forbidden","status":403,"detail":"The request is not allowed."}"#
            }
            Self::NotFound => {
                r#"{"type":"about:blank","title":"Not Found","status":404,"detail":"The resource was not found."}"#
            }
            Self::Misdirected => {
                r#"{"type":"about:blank","title":"Misdirected Request","status":421,"detail":"The request was sent to the wrong host or scheme."}"#
            }
            Self::TooManyRequests => {
                r#"{"type":"about:blank","title":"Too Many Requests","status":429,"detail":"Too many requests; retry later."}"#
            }
            Self::Unavailable => {
                r#"{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"The service is temporarily unavailable."}"#
            }
        }
    }
}

impl fmt::Display for RejectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.status(), f)
    }
}

/// A refusal with a typed, server-side reason.
///
/// Cheap to clone; the reason is shared.
#[derive(Clone)]
pub struct Rejection {
    kind: RejectionKind,
    reason: Arc<dyn Error + Send + Sync + 'static>,
    retry_after: Option<Duration>,
    www_authenticate: Option<HeaderValue>,
}

impl Rejection {
    /// A rejection of `kind` because of `reason`.
    pub fn new<E>(kind: RejectionKind, reason: E) -> Self
    where
        E: Error + Send + Sync + 'static,
    {
        Self {
            kind,
            reason: Arc::new(reason),
            retry_after: None,
            www_authenticate: None,
        }
    }

    /// Adds a `Retry-After` header (whole seconds, rounded up) to the response.
    #[must_use]
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Adds a `WWW-Authenticate` challenge to the response. It must not describe the reason.
    #[must_use]
    pub fn with_challenge(mut self, challenge: HeaderValue) -> Self {
        self.www_authenticate = Some(challenge);
        self
    }

    /// The class of this rejection.
    pub fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// The status code the client receives.
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// The server-side reason.
    pub fn reason(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.reason
    }

    /// The reason, if it is a `T`.
    pub fn reason_as<T: Error + 'static>(&self) -> Option<&T> {
        self.reason.downcast_ref::<T>()
    }

    /// The `Retry-After` delay, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Logs the reason and builds the response: a generic problem document, no-store caching,
    /// and this rejection in the response extensions.
    pub fn into_response<B>(self) -> Response<ResponseBody<B>> {
        self.log();
        let mut response = Response::new(ResponseBody::full(Bytes::from_static(
            self.kind.problem_document().as_bytes(),
        )));
        *response.status_mut() = self.kind.status();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(after) = self.retry_after {
            let secs = after
                .as_secs()
                .saturating_add(u64::from(after.subsec_nanos() > 0));
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(challenge) = &self.www_authenticate {
            headers.insert(WWW_AUTHENTICATE, challenge.clone());
        }
        response.extensions_mut().insert(self);
        response
    }

    fn log(&self) {
        let status = self.kind.status().as_u16();
        if self.kind == RejectionKind::Unavailable {
            tracing::error!(target: "palisade::rejection", status, reason = %self.reason, "request refused: dependency unavailable");
        } else {
            tracing::info!(target: "palisade::rejection", status, reason = %self.reason, "request refused");
        }
    }
}

impl fmt::Debug for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejection")
            .field("kind", &self.kind)
            .field("reason", &self.reason)
            .field("retry_after", &self.retry_after)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.reason)
    }
}

impl Error for Rejection {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};

    #[derive(Debug, thiserror::Error)]
    #[error("secret-reason-do-not-send")]
    struct Hidden;

    #[tokio::test]
    async fn every_kind_sends_a_generic_problem_document() {
        let kinds = [
            (RejectionKind::Unauthenticated, 401),
            (RejectionKind::Forbidden, 403),
            (RejectionKind::NotFound, 404),
            (RejectionKind::Misdirected, 421),
            (RejectionKind::TooManyRequests, 429),
            (RejectionKind::Unavailable, 503),
        ];
        for (kind, status) in kinds {
            let response = Rejection::new(kind, Hidden).into_response::<Empty<Bytes>>();
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
            assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
            let stored = response.extensions().get::<Rejection>().unwrap().clone();
            assert!(stored.reason_as::<Hidden>().is_some());
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let text = std::str::from_utf8(&body).unwrap();
            assert!(!text.contains("secret-reason"), "{text}");
            assert!(text.contains(&format!("\"status\":{status}")), "{text}");
        }
    }

    #[test]
    fn retry_after_saturates() {
        let response = Rejection::new(RejectionKind::TooManyRequests, Hidden)
            .with_retry_after(Duration::MAX)
            .into_response::<Empty<Bytes>>();
        assert_eq!(
            response.headers()[RETRY_AFTER],
            u64::MAX.to_string().as_str()
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        let response = Rejection::new(RejectionKind::TooManyRequests, Hidden)
            .with_retry_after(Duration::from_millis(1500))
            .into_response::<Empty<Bytes>>();
        assert_eq!(response.headers()[RETRY_AFTER], "2");
    }
}
