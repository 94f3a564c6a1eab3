//! Time as the application sees it. Every operation asks the clock in the app state, so
//! tests move a [`ManualClock`] instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Microseconds since the Unix epoch, UTC: the unit of every timestamp Bouncer stores.
pub type Micros = i64;

pub const MICROS_PER_SECOND: i64 = 1_000_000;

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Micros;
}

pub type SharedClock = Arc<dyn Clock>;

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Micros {
        chrono::Utc::now().timestamp_micros()
    }
}

/// A clock that stands still until told to move; starts at the real time.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new() -> Arc<Self> {
        Arc::new(ManualClock(AtomicI64::new(SystemClock.now())))
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_micros() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Micros {
        self.0.load(Ordering::SeqCst)
    }
}

/// RFC 3339 with microseconds and `Z`, as AWX writes timestamps.
pub fn rfc3339(t: Micros) -> String {
    chrono::DateTime::from_timestamp_micros(t).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Whole seconds from `now` until `end`, rounded up and never negative.
pub fn seconds_until(now: Micros, end: Micros) -> i64 {
    ((end - now).max(0) + MICROS_PER_SECOND - 1) / MICROS_PER_SECOND
}
