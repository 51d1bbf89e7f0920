//! [`AuditImpersonationLayer`]: every request made while impersonating is written to the audit
//! sink before it is handled; when the write fails, the request is refused (503) and not
//! executed. Made by [`Impersonator::audit_layer`](crate::Impersonator::audit_layer), it also
//! refuses (401) the credentials of impersonations that ended.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use palisade_audit::{AuditSink, Event, Outcome};
use palisade_core::{
    AuthMethod, Gate, GateFuture, Identity, Rejection, RejectionKind, ResponseBody, SharedClock,
};

use crate::grants::Grants;
use tower_layer::Layer;
use tower_service::Service;

/// Why a request made while impersonating was refused (logged server-side).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditRefusal {
    /// The audit record could not be written.
    #[error("audit write failed: {0}")]
    Audit(String),
    /// The impersonation ended (or expired, or is unknown to this process).
    #[error("impersonation not in progress")]
    Ended,
}

/// What the layer knows of impersonations in progress.
#[derive(Debug)]
struct Tracking {
    grants: Arc<Grants>,
    issuer: String,
    clock: SharedClock,
    /// Impersonations whose refused credential was recorded already: one record each, so
    /// that a replayed ended credential cannot flood the log (bounded; forgotten when full).
    refused: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// How many refused impersonations [`Tracking`] remembers.
const MAX_REFUSED_REMEMBERED: usize = 4_096;

impl Tracking {
    /// Whether a refusal of `identity`'s credential is to be recorded (its first).
    fn first_refusal(&self, identity: &Identity) -> bool {
        let mut seen = self
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= MAX_REFUSED_REMEMBERED {
            seen.clear();
        }
        seen.insert(identity.session_id().unwrap_or_default().to_owned())
    }

    /// Whether `identity` (impersonating for `actor`) holds a credential of an impersonation
    /// in progress: its `sid`, issuer, user, org and admin all those of the grant.
    fn live(&self, identity: &Identity, actor: &Identity) -> bool {
        identity.issuer() == self.issuer
            && identity.session_id().is_some_and(|id| {
                self.grants.is_live_for(
                    id,
                    self.clock.now(),
                    identity.subject(),
                    identity.org(),
                    (actor.issuer(), actor.subject()),
                )
            })
    }
}

/// Audits requests made with an impersonation credential (see the module docs).
#[derive(Debug)]
pub struct AuditImpersonationLayer<A> {
    audit: Arc<A>,
    tracking: Option<Arc<Tracking>>,
}

impl<A> Clone for AuditImpersonationLayer<A> {
    fn clone(&self) -> Self {
        Self {
            audit: Arc::clone(&self.audit),
            tracking: self.tracking.clone(),
        }
    }
}

impl<A: AuditSink> AuditImpersonationLayer<A> {
    /// A layer writing to `audit`, that knows nothing of ends: an ended impersonation's
    /// credential keeps working (audited) until it expires. Prefer
    /// [`Impersonator::audit_layer`](crate::Impersonator::audit_layer). Put it after the
    /// authentication layer (it reads the verified `Identity`).
    pub fn new(audit: A) -> Self {
        Self {
            audit: Arc::new(audit),
            tracking: None,
        }
    }

    pub(crate) fn tracking(
        audit: Arc<A>,
        grants: Arc<Grants>,
        issuer: &str,
        clock: SharedClock,
    ) -> Self {
        Self {
            audit,
            tracking: Some(Arc::new(Tracking {
                grants,
                issuer: issuer.to_owned(),
                clock,
                refused: Default::default(),
            })),
        }
    }
}

impl<S, A> Layer<S> for AuditImpersonationLayer<A> {
    type Service = AuditImpersonation<S, A>;

    fn layer(&self, inner: S) -> Self::Service {
        AuditImpersonation {
            inner,
            audit: Arc::clone(&self.audit),
            tracking: self.tracking.clone(),
        }
    }
}

/// The service of [`AuditImpersonationLayer`].
#[derive(Debug)]
pub struct AuditImpersonation<S, A> {
    inner: S,
    audit: Arc<A>,
    tracking: Option<Arc<Tracking>>,
}

impl<S: Clone, A> Clone for AuditImpersonation<S, A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            audit: Arc::clone(&self.audit),
            tracking: self.tracking.clone(),
        }
    }
}

/// The longest path recorded (longer ones are cut at a character boundary, and marked so);
/// under the audit log's limit for one field.
const MAX_PATH: usize = 1_000;

fn bounded(path: &str) -> String {
    if path.len() <= MAX_PATH {
        return path.to_owned();
    }
    let mut end = MAX_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end])
}

/// The record of one request made while impersonating: who acted, as whom, what was asked
/// (method and path; never the query, headers or body, which may carry secrets), under which
/// impersonation. `Success` means the request was admitted (authenticated, and recorded
/// before authorization and handling); `Denied`, that the credential was refused.
fn event<B>(
    request: &Request<B>,
    identity: &Identity,
    actor: &Identity,
    outcome: Outcome,
) -> Event {
    let mut event = Event::new(
        crate::clip(actor.subject()),
        "impersonation.request",
        crate::clip(identity.subject()),
        outcome,
    )
    .detail("method", crate::clip(request.method().as_str()))
    .detail("path", bounded(request.uri().path()))
    .detail("actor_issuer", crate::clip(actor.issuer()));
    if let Some(org) = identity.org() {
        event = event.org(crate::clip(org));
    }
    if let Some(id) = identity.session_id() {
        event = event.detail("impersonation", crate::clip(id));
    }
    if let Some(id) = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
    {
        event = event.request_id(id);
    }
    event
}

/// The response future of [`AuditImpersonation`]: the audit write, then the inner service's
/// future (the service is not called when the write fails).
pub type ResponseFuture<S, B> = GateFuture<S, Request<B>>;

impl<S, A, B, ResBody> Service<Request<B>> for AuditImpersonation<S, A>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    A: AuditSink,
    B: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let Some(identity) = request.extensions().get::<Identity>() else {
            return GateFuture::calling(self.inner.call(request));
        };
        let AuthMethod::Impersonation { actor } = identity.method() else {
            return GateFuture::calling(self.inner.call(request));
        };
        let ended = || Rejection::new(RejectionKind::Unauthenticated, AuditRefusal::Ended);
        // The audit write and every refusal (reason only) are logged inside this span.
        let span = palisade_core::request_span!("palisade.impersonation");
        let _entered = span.enter();
        let audit = Arc::clone(&self.audit);
        if let Some(tracking) = &self.tracking
            && !tracking.live(identity, actor)
        {
            // The first attempt with each ended credential is recorded (best effort); the
            // credential is refused either way.
            if !tracking.first_refusal(identity) {
                return GateFuture::refused(ended()).in_span(span.clone());
            }
            let record = event(&request, identity, actor, Outcome::Denied)
                .detail("reason", "impersonation not in progress");
            let gate: Gate<Request<B>> = Box::pin(async move {
                let _ = audit.append(record).await;
                Err(ended())
            });
            return GateFuture::gating(gate, self.inner.clone()).in_span(span.clone());
        }
        let record = event(&request, identity, actor, Outcome::Success);
        let tracking = self.tracking.clone();
        let gate: Gate<Request<B>> = Box::pin(async move {
            if let Err(e) = audit.append(record).await {
                // Not audited, not executed.
                return Err(Rejection::new(
                    RejectionKind::Unavailable,
                    AuditRefusal::Audit(e.to_string()),
                ));
            }
            // Ended while the record was written: not executed (the end came first), and a
            // second record says so (best effort).
            if let Some(tracking) = tracking {
                let late =
                    request.extensions().get::<Identity>().and_then(|identity| {
                        match identity.method() {
                            AuthMethod::Impersonation { actor }
                                if !tracking.live(identity, actor) =>
                            {
                                Some(
                                    event(&request, identity, actor, Outcome::Denied)
                                        .detail("reason", "ended while the request was recorded"),
                                )
                            }
                            _ => None,
                        }
                    });
                if let Some(late) = late {
                    let _ = audit.append(late).await;
                    return Err(ended());
                }
            }
            Ok(request)
        });
        // The clone goes to the future; this service keeps the one that was made ready.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        GateFuture::gating(gate, inner).in_span(span.clone())
    }
}
