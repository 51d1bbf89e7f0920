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
        /// The clock's raw reading when it was made.
        start: u64,
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
    /// The process's monotonic clock: every store and layer made with it reads the same time
    /// scale, so a layer can hand its reading to the store.
    pub(crate) fn monotonic() -> Self {
        static BASE: std::sync::OnceLock<(quanta::Clock, u64)> = std::sync::OnceLock::new();
        let (clock, start) = BASE.get_or_init(|| {
            let clock = quanta::Clock::new();
            let start = clock.raw();
            (clock, start)
        });
        Self::Monotonic {
            clock: clock.clone(),
            start: *start,
        }
    }

    /// Whether this is the process's monotonic clock.
    pub(crate) fn is_monotonic(&self) -> bool {
        matches!(self, Self::Monotonic { .. })
    }

    #[inline]
    pub(crate) fn nanos(&self) -> u64 {
        match self {
            Self::Monotonic { clock, start } => {
                const OFFSET: u64 = 366 * 24 * 3600 * 1_000_000_000;
                // A raw reading scaled once (no `Duration` in between); zero if the counter
                // reads earlier than the start.
                OFFSET.saturating_add(clock.delta_as_nanos(*start, clock.raw()))
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
