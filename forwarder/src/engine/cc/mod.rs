//! Congestion control on WebRTC transports, both directions.
//!
//! - Toward publishers ([`arrivals`]): we are the receiver. We record when each of the
//!   publisher's transport-wide sequence numbers arrived and send that back as
//!   transport-cc feedback, so the publisher's own estimator (GCC in browsers) can adapt
//!   its encoders to the path into the SFU.
//! - Toward subscribers ([`send_side`], [`estimator`], [`allocate`]): we are the sender.
//!   Each packet we send takes the transport's next transport-wide number; the
//!   subscriber's feedback on those numbers drives a delay- and loss-based estimate of the
//!   path out of the SFU, and the estimate caps each down track's simulcast layer.
//!
//! An SFU cannot make an encoder slower for one subscriber; what it can do is pick a
//! lower simulcast layer. So the estimate is used only to choose layers, never to pace
//! or drop packets. docs/bandwidth-estimation.md has the algorithm and its constants.
//!
//! Everything here is sized when a transport negotiates transport-cc (control path) and
//! then only read and written in place: the per-packet work is one ring store on each
//! side, and feedback is parsed and emitted without allocation.

pub mod allocate;
pub mod arrivals;
pub mod estimator;
pub mod send_side;

use std::time::{Duration, Instant};

pub use allocate::{Allocator, Item, UNCAPPED};
pub use arrivals::ArrivalRecorder;
pub use estimator::{DelayState, Estimator};
pub use send_side::SendSide;

/// Microseconds from `epoch` to `now` (0 if `now` is earlier).
pub fn micros(epoch: Instant, now: Instant) -> u64 {
    now.saturating_duration_since(epoch).as_micros() as u64
}

/// How often layer bitrates are rolled over.
pub const RATE_BUCKET: Duration = Duration::from_millis(250);
const RATE_BUCKETS: usize = 4;

/// The recent bitrate of one received layer: bytes per [`RATE_BUCKET`] over the last
/// second. Per packet it is one addition; the timer rolls the buckets.
#[derive(Clone, Copy, Debug, Default)]
pub struct RateMeter {
    current: u64,
    buckets: [u64; RATE_BUCKETS],
    at: usize,
    filled: usize,
}

impl RateMeter {
    pub fn add(&mut self, bytes: usize) {
        self.current += bytes as u64;
    }

    /// Closes the current bucket (call every [`RATE_BUCKET`]).
    pub fn roll(&mut self) {
        self.buckets[self.at] = self.current;
        self.current = 0;
        self.at = (self.at + 1) % RATE_BUCKETS;
        self.filled = (self.filled + 1).min(RATE_BUCKETS);
    }

    /// Bits per second over the closed buckets (0 before the first roll).
    pub fn bps(&self) -> u64 {
        if self.filled == 0 {
            return 0;
        }
        let bytes: u64 = self.buckets.iter().sum();
        let span_ms = RATE_BUCKET.as_millis() as u64 * self.filled as u64;
        bytes * 8 * 1000 / span_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_meter_averages_the_last_second() {
        let mut r = RateMeter::default();
        assert_eq!(r.bps(), 0);
        r.add(1000);
        r.roll();
        assert_eq!(r.bps(), 32_000, "1000 bytes in 250 ms");
        for _ in 0..4 {
            r.add(500);
            r.roll();
        }
        assert_eq!(r.bps(), 16_000);
    }
}
