//! Time as a value. The core never reads a clock: callers pass `now`.

use std::time::Duration;

/// A point in time, in milliseconds since an arbitrary epoch chosen by the caller
/// (the data plane uses the moment the fabric started).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(d.as_millis().min(u64::MAX as u128) as u64),
        )
    }

    /// How long ago `earlier` was, zero if it lies in the future.
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}
