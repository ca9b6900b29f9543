//! What every room of the node shares: the lifetimes a room gets when its creator does not
//! say, and the counters `/metrics` reports. Counters are atomics, so rooms (each its own
//! task) count without talking to each other.

use std::sync::atomic::{AtomicU64, Ordering};

/// Room lifetimes, in seconds, when the room's creator does not say (LiveKit's defaults).
#[derive(Clone, Copy, Debug)]
pub struct RoomDefaults {
    /// A room nobody has joined yet closes after this long.
    pub empty_timeout: u32,
    /// A room closes this long after its last participant left.
    pub departure_timeout: u32,
}

impl Default for RoomDefaults {
    fn default() -> Self {
        Self {
            empty_timeout: 300,
            departure_timeout: 20,
        }
    }
}

/// What the rooms have done, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub joins: AtomicU64,
    pub leaves: AtomicU64,
    pub refused_data: AtomicU64,
    pub malformed_data: AtomicU64,
    pub data_relayed: AtomicU64,
    pub slow_sessions: AtomicU64,
    pub media_errors: AtomicU64,
}

impl Counters {
    pub fn bump(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}
