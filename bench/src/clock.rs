//! One monotonic time base for the generator and the sinks.
//!
//! Both live in the same process, so a send timestamp can be nanoseconds since a shared
//! [`Instant`] epoch (CLOCK_MONOTONIC underneath) without any raw clock call or `unsafe`.

use std::sync::OnceLock;
use std::time::Instant;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process's bench epoch.
pub fn now_ns() -> u64 {
    nanos_at(Instant::now())
}

/// Nanoseconds since the bench epoch at `t` (0 for instants before it).
pub fn nanos_at(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}
