//! The error every Palisade store answers with.

use std::sync::Arc;

/// A store failed (unreachable, timed out, full, corrupt). Whatever depended on it fails
/// closed (or, where a rule says so explicitly, open); the message is for server-side logs.
///
/// ```
/// use palisade_core::StoreError;
///
/// let err = StoreError::new("nonce insert failed", None);
/// assert_eq!(err.to_string(), "store error: nonce insert failed");
/// ```
#[derive(Clone, Debug, thiserror::Error)]
#[error("store error: {message}")]
pub struct StoreError {
    message: String,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// A store error with a message and the backend's error.
    pub fn new(
        message: impl Into<String>,
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            message: message.into(),
            source,
        }
    }
}
