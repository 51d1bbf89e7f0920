//! The clock the in-process store and the layer's caches read.

use std::time::{SystemTime, UNIX_EPOCH};

use palisade_core::SharedClock;

/// Where the time comes from, in nanoseconds.
#[derive(Clone)]
pub(crate) enum Time {
    /// A monotonic clock read from the CPU's counter (`quanta`): cheap, and immune to the wall
    /// clock being stepped. Nanoseconds since the clock was made, plus a year so that no
    /// decision sees a time near zero.
    Monotonic {
        clock: quanta::Clock,
        start: quanta::Instant,
    },
    /// An injected clock (tests, simulations).
    Clock(SharedClock),
}

impl std::fmt::Debug for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Monotonic { .. } => f.write_str("Monotonic"),
            Self::Clock(clock) => f.debug_tuple("Clock").field(clock).finish(),
        }
    }
}

impl Time {
    pub(crate) fn monotonic() -> Self {
        let clock = quanta::Clock::new();
        let start = clock.now();
        Self::Monotonic { clock, start }
    }

    #[inline]
    pub(crate) fn nanos(&self) -> u64 {
        match self {
            Self::Monotonic { clock, start } => {
                const OFFSET: u64 = 366 * 24 * 3600 * 1_000_000_000;
                let elapsed = clock.now().saturating_duration_since(*start).as_nanos();
                OFFSET.saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
            }
            Self::Clock(clock) => nanos(clock.now()),
        }
    }
}

/// Nanoseconds since the Unix epoch (0 before it).
pub(crate) fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
