//! [`AuthorizeLayer`]: asks the policy (through an [`Authorizer`]) before each request.
//!
//! Per request: the [`Identity`] an authentication layer put in the extensions (none: 401), the
//! request's [`Target`] from a [`MapRequest`] (none: 403), the principal for the target's
//! tenant ([`principal_for`]), then one decision. Allowed: the request goes on. Denied: 403.
//! The PDP unreachable, timed out or answering nonsense: 503. Responses carry no policy
//! detail; the reason is logged server-side. The `x-request-id` header, when present and
//! plain, is sent to the PDP.
//!
//! ```no_run
//! use palisade_authz_cerbos::{AuthorizeLayer, Authorizer, PathPattern, PdpClient, Resource, Target, Tenant};
//!
//! # async fn run() -> Result<(), palisade_authz_cerbos::AuthzError> {
//! let pdp = PdpClient::builder("https://cerbos.internal:3593").build()?;
//! let docs = PathPattern::new("/api/orgs/{org}/documents/{id}");
//! let layer = AuthorizeLayer::new(
//!     Authorizer::builder(pdp).sensitive(["export", "delete"]).build(),
//!     move |parts: &http::request::Parts| {
//!         let c = docs.captures(parts.uri.path())?;
//!         let action = if parts.method == http::Method::GET { "read" } else { "update" };
//!         // The owning org comes from the store, never from the request's path.
//!         let owner = owning_org(&c["id"])?;
//!         Some(Target {
//!             tenant: Tenant::org(&c["org"]),
//!             resource: Resource::new("document", &c["id"]).attr("org", owner),
//!             action: action.to_owned(),
//!         })
//!     },
//! );
//! # let _ = layer;
//! # Ok(()) }
//! # fn owning_org(id: &str) -> Option<&'static str> { (id == "d1").then_some("org-1") }
//! ```

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use palisade_core::{Gate, GateFuture, Identity, Rejection, RejectionKind};
use tower_layer::Layer;
use tower_service::Service;

use crate::AuthzError;
use crate::cache::Authorizer;
use crate::principal::{PrincipalOptions, principal_for};
use crate::target::MapRequest;

#[cfg(doc)]
use crate::target::Target;

/// Why the layer refused a request (logged server-side, never sent).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorizeRejection {
    /// No authenticated identity in the request (the authentication layer must run first).
    #[error("no authenticated identity")]
    NoIdentity,
    /// The request could not be described as a target.
    #[error("the request does not map to a resource and action")]
    Unmapped,
    /// The policy denied the action.
    #[error("policy denied {action} on {kind}")]
    Denied {
        /// The action asked.
        action: String,
        /// The resource kind.
        kind: String,
    },
    /// No decision could be made (the PDP, or the tenant).
    #[error("no decision: {0}")]
    Undecided(#[from] AuthzError),
}

#[derive(Clone)]
struct Shared {
    authorizer: Authorizer,
    mapper: Arc<dyn MapRequest>,
    options: PrincipalOptions,
}

/// Authorizes each request through the policy (see the module docs).
#[derive(Clone)]
pub struct AuthorizeLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AuthorizeLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizeLayer").finish_non_exhaustive()
    }
}

impl AuthorizeLayer {
    /// A layer deciding with `authorizer` what `mapper` says each request does.
    pub fn new(authorizer: Authorizer, mapper: impl MapRequest) -> Self {
        Self {
            shared: Arc::new(Shared {
                authorizer,
                mapper: Arc::new(mapper),
                options: PrincipalOptions::default(),
            }),
        }
    }

    /// How principals are built (global roles, scopes, policy version).
    pub fn principal_options(mut self, options: PrincipalOptions) -> Self {
        Arc::make_mut(&mut self.shared).options = options;
        self
    }
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service of [`AuthorizeLayer`].
#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Authorize<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorize")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// The response future of [`Authorize`]: the decision, then the inner service's future; or
/// a refusal (the inner service is never called).
pub type ResponseFuture<S, B> = GateFuture<S, Request<B>>;

/// The request id to send to the PDP: the caller's `x-request-id` when it is plain and short.
fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        .unwrap_or("")
        .to_owned()
}

fn refusal(kind: RejectionKind, why: AuthorizeRejection) -> Rejection {
    Rejection::new(kind, why)
}

impl<S, B, ResBody> Service<Request<B>> for Authorize<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    B: Send + 'static,
{
    type Response = Response<palisade_core::ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The decision and every refusal (reason only) are logged inside this span.
        let span = palisade_core::request_span!("palisade.authz");
        if span.is_disabled() {
            return self.decide(request);
        }
        let future = {
            let _entered = span.enter();
            self.decide(request)
        };
        future.in_span(span)
    }
}

impl<S> Authorize<S> {
    fn decide<B, ResBody>(&mut self, request: Request<B>) -> ResponseFuture<S, B>
    where
        S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
        B: Send + 'static,
    {
        let (parts, body) = request.into_parts();
        let Some(identity) = parts.extensions.get::<Identity>() else {
            return ResponseFuture::refused(refusal(
                RejectionKind::Unauthenticated,
                AuthorizeRejection::NoIdentity,
            ));
        };
        let Some(target) = self.shared.mapper.target(&parts) else {
            return ResponseFuture::refused(refusal(
                RejectionKind::Forbidden,
                AuthorizeRejection::Unmapped,
            ));
        };
        let principal = match principal_for(identity, &target.tenant, &self.shared.options) {
            Ok(principal) => principal,
            Err(e) => {
                return ResponseFuture::refused(refusal(
                    RejectionKind::Forbidden,
                    AuthorizeRejection::Undecided(e),
                ));
            }
        };
        let request_id = request_id(&parts.headers);
        let request = Request::from_parts(parts, body);
        let authorizer = self.shared.authorizer.clone();
        let check: Gate<Request<B>> = Box::pin(async move {
            let answer = authorizer
                .check(&principal, &target.resource, &target.action, &request_id)
                .await;
            match answer {
                Ok(true) => Ok(request),
                Ok(false) => Err(refusal(
                    RejectionKind::Forbidden,
                    AuthorizeRejection::Denied {
                        action: target.action.clone(),
                        kind: target.resource.kind().to_owned(),
                    },
                )),
                // The question could not be asked as it stands: a deny, not an outage.
                Err(
                    e @ (AuthzError::InvalidTenant
                    | AuthzError::TooManyActions
                    | AuthzError::NoRole
                    | AuthzError::Pdp(tonic::Code::InvalidArgument)),
                ) => Err(refusal(
                    RejectionKind::Forbidden,
                    AuthorizeRejection::Undecided(e),
                )),
                Err(e) => Err(refusal(
                    RejectionKind::Unavailable,
                    AuthorizeRejection::Undecided(e),
                )),
            }
        });
        // The clone goes to the future; this service keeps the one that was made ready.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::gating(check, inner)
    }
}
