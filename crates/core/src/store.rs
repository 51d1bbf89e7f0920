//! The error every Palisade store answers with.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

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

/// The health of one kind of store, as metrics: `palisade_store_up{store}` (a gauge, 1 when
/// the last call to a store of this kind succeeded, 0 when it failed) and
/// `palisade_store_errors_total{store}` (failed calls). Keep one in a `static` per store
/// kind; a success costs one atomic load while the store stays up. The gauge is set when the
/// state changes, so install the metrics recorder before the first store call; all stores
/// of one kind share its series.
///
/// ```
/// use palisade_core::StoreHealth;
///
/// static NONCES: StoreHealth = StoreHealth::new("nonces");
/// NONCES.failed();
/// assert_eq!(NONCES.is_up(), Some(false));
/// NONCES.ok();
/// assert_eq!(NONCES.is_up(), Some(true));
/// ```
#[derive(Debug)]
pub struct StoreHealth {
    store: &'static str,
    state: AtomicU8,
    /// Orders state and gauge updates, so that the gauge ends where the state does (they
    /// change together, under this lock, and only on a transition).
    update: Mutex<()>,
}

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

impl StoreHealth {
    /// Health for stores labelled `store` (a fixed name such as `throttle`).
    pub const fn new(store: &'static str) -> Self {
        Self {
            store,
            state: AtomicU8::new(UNKNOWN),
            update: Mutex::new(()),
        }
    }

    /// A call succeeded.
    pub fn ok(&self) {
        if self.state.load(Ordering::Acquire) != UP {
            self.set(UP);
        }
    }

    /// A call failed.
    pub fn failed(&self) {
        metrics::counter!("palisade_store_errors_total", "store" => self.store).increment(1);
        // Like `ok`, only on a change: during an outage, failing calls take no lock.
        if self.state.load(Ordering::Acquire) != DOWN {
            self.set(DOWN);
        }
    }

    /// Whether the last call succeeded (`None` before the first).
    pub fn is_up(&self) -> Option<bool> {
        match self.state.load(Ordering::Acquire) {
            UP => Some(true),
            DOWN => Some(false),
            _ => None,
        }
    }

    fn set(&self, state: u8) {
        let _order = self
            .update
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.state.store(state, Ordering::Release);
        let up = if state == UP { 1.0 } else { 0.0 };
        metrics::gauge!("palisade_store_up", "store" => self.store).set(up);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauge_follows_the_last_outcome_and_failures_are_counted() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let health = StoreHealth::new("test-store");
        metrics::with_local_recorder(&recorder, || {
            health.ok();
            assert!(
                handle
                    .render()
                    .contains("palisade_store_up{store=\"test-store\"} 1")
            );
            health.failed();
            health.failed();
            let text = handle.render();
            assert!(
                text.contains("palisade_store_up{store=\"test-store\"} 0"),
                "{text}"
            );
            assert!(
                text.contains("palisade_store_errors_total{store=\"test-store\"} 2"),
                "{text}"
            );
            health.ok();
            assert!(
                handle
                    .render()
                    .contains("palisade_store_up{store=\"test-store\"} 1")
            );
        });
        assert_eq!(health.is_up(), Some(true));
    }
}
