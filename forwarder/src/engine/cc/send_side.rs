//! What one transport remembers of the packets it sent with a transport-wide sequence
//! number, and how the peer's feedback on them reaches the estimator.
//!
//! Every packet sent on a transport that negotiated transport-cc takes the transport's next
//! number; its send time and size go into a fixed ring ([`HISTORY`] entries, 16 bytes
//! each) indexed by the number, so recording is one store. Feedback names 16-bit numbers;
//! an entry answers only for the number it holds, and only once, so a repeated or stale
//! report is ignored. The ring covers about two seconds at 1000 packets per second, more
//! than feedback takes to come back.

use crate::wire::rtcp::Twcc;

use super::estimator::Estimator;

/// Sent packets remembered per transport (a power of two).
pub const HISTORY: usize = 2048;

#[derive(Clone, Copy, Debug)]
struct Sent {
    /// µs on the transport's clock; `u64::MAX` when the entry is empty or already reported.
    at_us: u64,
    size: u16,
    seq: u16,
}

/// Send history and estimator of one transport.
#[derive(Debug)]
pub struct SendSide {
    next: u64,
    history: Box<[Sent]>,
    pub estimator: Estimator,
    /// Feedback entries that named a number we do not know (never sent, or too old).
    pub unknown: u64,
}

impl Default for SendSide {
    fn default() -> Self {
        Self::new()
    }
}

impl SendSide {
    pub fn new() -> Self {
        let empty = Sent {
            at_us: u64::MAX,
            size: 0,
            seq: 0,
        };
        Self {
            next: 0,
            history: vec![empty; HISTORY].into_boxed_slice(),
            estimator: Estimator::default(),
            unknown: 0,
        }
    }

    /// The number the next packet sent gets.
    pub fn next_seq(&self) -> u16 {
        self.next as u16
    }

    /// Records that the packet numbered [`Self::next_seq`] went out at `at_us` with `size`
    /// bytes on the wire; the next packet gets the next number.
    pub fn record(&mut self, at_us: u64, size: usize) {
        self.history[(self.next as usize) & (HISTORY - 1)] = Sent {
            at_us,
            size: size.min(usize::from(u16::MAX)) as u16,
            seq: self.next as u16,
        };
        self.next += 1;
    }

    /// Feeds one transport-cc feedback from the peer, received at `now_us`.
    pub fn on_feedback<T: AsRef<[u8]>>(&mut self, fb: &Twcc<T>, now_us: u64) {
        let mut arrival = fb.reference_time_us();
        for s in fb.statuses() {
            let slot = &mut self.history[usize::from(s.seq) & (HISTORY - 1)];
            if let Some(d) = s.delta_us {
                arrival += i64::from(d);
            }
            if slot.seq != s.seq || slot.at_us == u64::MAX {
                self.unknown += 1;
                continue;
            }
            match s.delta_us {
                Some(_) => {
                    self.estimator
                        .on_packet(slot.at_us, arrival, u32::from(slot.size));
                    slot.at_us = u64::MAX;
                }
                // A loss may still be reported received by a later feedback: keep it.
                None => self.estimator.on_lost(),
            }
        }
        self.estimator.on_feedback(now_us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Ssrc;
    use crate::wire::rtcp::TwccRepr;

    #[test]
    fn feedback_matches_numbers_once_and_ignores_unknown_ones() {
        let mut s = SendSide::new();
        for i in 0..10u64 {
            assert_eq!(s.next_seq(), i as u16);
            s.record(i * 1000, 1000);
        }
        let packets: Vec<(u16, Option<i32>)> =
            (0..12u16).map(|i| (i, (i != 3).then_some(1000))).collect();
        let repr = TwccRepr::from_packets(Ssrc(1), Ssrc(2), 10, 0, &packets).unwrap();
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut buf).unwrap();
        let fb = Twcc::new_checked(&buf[..]).unwrap();
        s.on_feedback(&fb, 100_000);
        assert_eq!(s.unknown, 2, "10 and 11 were never sent");
        s.on_feedback(&fb, 200_000);
        assert_eq!(s.unknown, 2 + 9 + 2, "received ones are matched only once");
        assert_eq!(s.estimator.feedbacks, 2);
    }
}
