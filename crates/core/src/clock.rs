//! Time as a dependency: [`SystemClock`] in production, [`ManualClock`] in tests.
//!
//! Every Palisade layer that compares timestamps takes a [`SharedClock`], so tests move time
//! forward explicitly instead of sleeping.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use palisade_core::{Clock, ManualClock};
//!
//! let clock = ManualClock::at_unix(1_700_000_000);
//! let before = clock.now();
//! clock.advance(Duration::from_secs(30));
//! assert_eq!(clock.now().duration_since(before).unwrap(), Duration::from_secs(30));
//! assert_eq!(clock.unix_seconds(), 1_700_000_030);
//! # let _ = UNIX_EPOCH;
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;

    /// The current time as whole seconds since the Unix epoch (0 before the epoch).
    fn unix_seconds(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// A clock shared between layers and stores.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl SystemClock {
    /// A [`SharedClock`] reading the system time.
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    nanos_since_epoch: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at `time` (clamped to the Unix epoch).
    pub fn new(time: SystemTime) -> Self {
        Self {
            nanos_since_epoch: Arc::new(AtomicU64::new(to_nanos(time))),
        }
    }

    /// A clock standing at `seconds` after the Unix epoch.
    pub fn at_unix(seconds: u64) -> Self {
        Self::new(UNIX_EPOCH + Duration::from_secs(seconds))
    }

    /// Moves the clock forward by `by` (saturating: it never wraps around to the past).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .nanos_since_epoch
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_add(by))
            });
    }

    /// Sets the clock to `time` (it may move backwards, to test clock skew).
    pub fn set(&self, time: SystemTime) {
        self.nanos_since_epoch
            .store(to_nanos(time), Ordering::SeqCst);
    }

    /// This clock as a [`SharedClock`]; the returned handle follows later `advance` calls.
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.nanos_since_epoch.load(Ordering::SeqCst))
    }
}

fn to_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_is_shared_between_clones() {
        let clock = ManualClock::at_unix(10);
        let shared = clock.shared();
        clock.advance(Duration::from_secs(5));
        assert_eq!(shared.unix_seconds(), 15);
        clock.set(UNIX_EPOCH + Duration::from_secs(3));
        assert_eq!(shared.unix_seconds(), 3);
    }

    #[test]
    fn advance_saturates() {
        let clock = ManualClock::at_unix(10);
        clock.advance(Duration::from_secs(u64::MAX));
        let far = clock.unix_seconds();
        clock.advance(Duration::from_secs(u64::MAX));
        assert_eq!(clock.unix_seconds(), far, "never wraps back");
        assert!(far > 10);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.unix_seconds() > 1_577_836_800);
    }
}
