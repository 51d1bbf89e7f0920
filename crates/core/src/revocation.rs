//! [`SessionRevocation`]: lets an authenticating layer refuse access tokens whose session
//! (refresh family, carried as `sid`) was revoked, without depending on the session store.

use std::future::Future;
use std::pin::Pin;

/// A boxed future answering a revocation query.
pub type RevocationFuture<'a> =
    Pin<Box<dyn Future<Output = Result<bool, RevocationError>> + Send + 'a>>;

/// The store behind the check could not answer: callers fail closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("session revocation check unavailable")]
pub struct RevocationError;

/// Answers whether a session id is revoked (or unknown).
pub trait SessionRevocation: Send + Sync + 'static {
    /// Whether session `sid` is revoked or unknown.
    fn is_revoked<'a>(&'a self, sid: &'a str) -> RevocationFuture<'a>;
}
