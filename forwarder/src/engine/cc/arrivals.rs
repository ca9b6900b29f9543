//! Transport-wide CC feedback toward a peer that sends to us (a publisher): the arrival
//! time of each transport-wide sequence number it stamped, reported back in transport-cc
//! feedback (RTPFB FMT 15) so that its own estimator (GCC in every browser) can see the
//! queueing on the way to us and adapt its encoders.
//!
//! Recording is one store per packet into a fixed ring indexed by the extended sequence
//! number, so the ingress path pays a few nanoseconds. The timer path turns everything
//! received since the last report into one feedback packet every [`FEEDBACK_INTERVAL`],
//! written straight into the egress slot (no allocation; the deltas go through a fixed
//! scratch array). Numbers older than the ring or beyond [`MAX_STATUSES`] per report are
//! skipped rather than reported late: the sender's estimator only wants fresh timing.

use std::time::Duration;

use crate::ids::{SeqUnwrapper, Ssrc};
use crate::wire::rtcp::{self, FeedbackHeader};

/// How often feedback goes to the peer (libwebrtc's default interval is 100 ms too).
pub const FEEDBACK_INTERVAL: Duration = Duration::from_millis(100);
/// Arrival times remembered (a power of two): several reports' worth at any sane rate.
pub const RING: usize = 1024;
/// Most statuses in one feedback packet: keeps it well under an MTU (2 bytes of chunk per
/// 7 statuses at worst plus up to 2 bytes of delta each).
pub const MAX_STATUSES: usize = 300;

/// One reference-time unit of the feedback header, in µs.
const REFERENCE_US: u64 = 64_000;
/// Largest receive delta a feedback can carry (a signed 16-bit count of 250 µs).
const MAX_DELTA_US: i64 = i16::MAX as i64 * 250;

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// Extended sequence number stored here, + 1 (0: empty).
    seq: u64,
    arrival_us: u64,
}

/// Records arrivals of a peer's transport-wide sequence numbers and builds the feedback.
#[derive(Debug)]
pub struct ArrivalRecorder {
    unwrap: SeqUnwrapper,
    ring: Box<[Slot]>,
    /// First extended number not reported yet.
    next: Option<u64>,
    highest: Option<u64>,
    fb_count: u8,
    /// The SSRC of the latest media packet, named as media source of the feedback.
    media_ssrc: Ssrc,
    scratch: Box<[Option<i32>]>,
    pub sent: u64,
}

impl Default for ArrivalRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl ArrivalRecorder {
    pub fn new() -> Self {
        Self {
            unwrap: SeqUnwrapper::new(),
            ring: vec![Slot::default(); RING].into_boxed_slice(),
            next: None,
            highest: None,
            fb_count: 0,
            media_ssrc: Ssrc(0),
            scratch: vec![None; MAX_STATUSES].into_boxed_slice(),
            sent: 0,
        }
    }

    /// Notes that transport-wide number `seq` arrived at `arrival_us` (µs on our clock).
    pub fn on_packet(&mut self, seq: u16, arrival_us: u64, ssrc: Ssrc) {
        let ext = self.unwrap.unwrap(seq).0;
        self.media_ssrc = ssrc;
        let slot = &mut self.ring[(ext as usize) & (RING - 1)];
        if slot.seq == ext + 1 {
            return; // a duplicate keeps its first arrival
        }
        *slot = Slot {
            seq: ext + 1,
            arrival_us,
        };
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        match self.next {
            None => self.next = Some(ext),
            // Reordered before the first report: include it.
            Some(n) if ext < n && self.fb_count == 0 && self.sent == 0 => self.next = Some(ext),
            _ => {}
        }
    }

    fn arrival(&self, ext: u64) -> Option<u64> {
        let s = self.ring[(ext as usize) & (RING - 1)];
        (s.seq == ext + 1).then_some(s.arrival_us)
    }

    /// Whether anything arrived since the last report.
    pub fn pending(&self) -> bool {
        matches!((self.next, self.highest), (Some(n), Some(h)) if h >= n)
    }

    /// Writes one feedback packet covering what arrived since the last one into `buf`;
    /// returns its length (0: nothing to report, or `buf` too small).
    pub fn build(&mut self, buf: &mut [u8], sender: Ssrc) -> usize {
        let (Some(mut from), Some(highest)) = (self.next, self.highest) else {
            return 0;
        };
        if highest < from {
            return 0;
        }
        // Too old to be in the ring, or more than one packet can say: start later.
        let span = (RING as u64).min(MAX_STATUSES as u64);
        if highest - from >= span {
            from = highest + 1 - span;
        }
        // The reference time comes from the first number that arrived; numbers before it
        // are reported lost (the highest number always arrived).
        let Some(first) = (from..=highest).find_map(|s| self.arrival(s)) else {
            self.next = Some(highest + 1);
            return 0;
        };
        let reference = first / REFERENCE_US;
        let mut prev = reference * REFERENCE_US;
        let mut n = 0;
        let mut last = from;
        for ext in from..=highest {
            let d = match self.arrival(ext) {
                None => None,
                Some(at) => {
                    let delta = at as i64 - prev as i64;
                    if !(-MAX_DELTA_US..=MAX_DELTA_US).contains(&delta) {
                        break; // left for the next report, with its own reference time
                    }
                    prev = at;
                    Some(delta as i32)
                }
            };
            self.scratch[n] = d;
            n += 1;
            last = ext;
        }
        // Trailing losses are not reported yet: they may still arrive.
        while n > 0 && self.scratch[n - 1].is_none() {
            n -= 1;
            last -= 1;
        }
        let header = FeedbackHeader {
            sender_ssrc: sender,
            media_ssrc: self.media_ssrc,
            base_seq: from as u16,
            // The reference time wraps in 24 signed bits; the receiver unwraps it.
            reference_time: (reference % (1 << 23)) as i32,
            fb_pkt_count: self.fb_count,
        };
        let len = rtcp::emit_twcc(buf, header, &self.scratch[..n]).unwrap_or(0);
        if len > 0 {
            self.fb_count = self.fb_count.wrapping_add(1);
            self.next = Some(last + 1);
            self.sent += 1;
        }
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rtcp::{Twcc, TwccRepr};

    #[test]
    fn feedback_parses_back_to_the_arrival_times() {
        let mut r = ArrivalRecorder::new();
        // 65534, 65535, 0 (wrap), 2 (1 lost), then 3 arrives 70 ms later (large delta).
        let arrivals = [
            (65534u16, 1_000_000u64),
            (65535, 1_000_500),
            (0, 1_004_000),
            (2, 1_004_250),
            (3, 1_074_250),
        ];
        for (s, at) in arrivals {
            r.on_packet(s, at, Ssrc(9));
        }
        let mut buf = [0u8; 1500];
        let n = r.build(&mut buf, Ssrc(1));
        let fb = Twcc::new_checked(&buf[..n]).unwrap();
        assert_eq!(fb.base_seq(), 65534);
        assert_eq!(fb.media_ssrc(), Ssrc(9));
        let mut at = fb.reference_time_us();
        let mut got = vec![];
        for s in fb.statuses() {
            if let Some(d) = s.delta_us {
                at += i64::from(d);
                got.push((s.seq, at as u64));
            } else {
                assert_eq!(s.seq, 1, "only 1 is lost");
            }
        }
        assert_eq!(got, arrivals.to_vec());
        assert!(!r.pending());
        assert_eq!(r.build(&mut buf, Ssrc(1)), 0, "nothing new");
        // The next report starts after the last one, with the next count.
        r.on_packet(4, 1_080_000, Ssrc(9));
        let n = r.build(&mut buf, Ssrc(1));
        let repr = TwccRepr::parse(&Twcc::new_checked(&buf[..n]).unwrap());
        assert_eq!((repr.base_seq, repr.fb_pkt_count), (4, 1));
        assert_eq!(repr.deltas_us.len(), 1);
    }

    #[test]
    fn a_long_gap_is_reported_from_its_recent_end() {
        let mut r = ArrivalRecorder::new();
        r.on_packet(10, 0, Ssrc(1));
        r.on_packet(5000, 10_000, Ssrc(1));
        let mut buf = [0u8; 1500];
        let n = r.build(&mut buf, Ssrc(1));
        let fb = Twcc::new_checked(&buf[..n]).unwrap();
        assert_eq!(
            (fb.base_seq(), fb.status_count()),
            (5000 + 1 - MAX_STATUSES as u16, MAX_STATUSES as u16)
        );
        assert_eq!(fb.statuses().filter(|s| s.delta_us.is_some()).count(), 1);
    }

    #[test]
    fn losses_before_the_first_arrival_of_a_report_are_reported() {
        let mut r = ArrivalRecorder::new();
        let mut buf = [0u8; 1500];
        r.on_packet(1, 0, Ssrc(1));
        assert!(r.build(&mut buf, Ssrc(1)) > 0);
        // 2 and 3 never arrive.
        r.on_packet(4, 100_000, Ssrc(1));
        let n = r.build(&mut buf, Ssrc(1));
        let repr = TwccRepr::parse(&Twcc::new_checked(&buf[..n]).unwrap());
        assert_eq!(repr.base_seq, 2);
        assert_eq!(repr.deltas_us[..2], [None, None]);
        assert!(repr.deltas_us[2].is_some());
    }
}
