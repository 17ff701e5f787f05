//! The system clock, as the remittance engine's [`Clock`] port.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::remittance::ports::Clock;

/// Milliseconds since the Unix epoch (0 before it, `u64::MAX` far after).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The wall clock of this machine.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        now_ms()
    }
}
