//! Loss, duplicate, reordering and latency accounting of what the sinks receive.
//!
//! A [`StreamTracker`] follows one generator stream as seen by one subscriber. It needs no
//! knowledge of what was sent: the span from the lowest to the highest sequence number seen
//! is what should have arrived, so losses inside the span are counted exactly, while losses
//! before the first or after the last packet received are invisible to it. Where the sender
//! knows what it sent (the runner does, for every subscription that keeps its layer),
//! [`Tally::expected_loss`]
//! compares the unique packets received with that instead, which sees those tails too.
//!
//! A packet that arrives more than [`LATE_NS`] after it was sent is timed but counted as
//! lost: media that late is useless to a real-time receiver, and without the rule a
//! forwarder that queues seconds of backlog in its socket buffer would pass with no loss.
//! Packets sent before the tally's start (left over from an earlier trial) are ignored.
//!
//! Duplicates are recognised within a window of [`WINDOW`] sequence numbers below the
//! highest seen; an older packet is counted as late (reordered) and as unique.

use std::collections::HashMap;

use hdrhistogram::Histogram;

/// Packets older than this on arrival count as lost (nanoseconds).
pub const LATE_NS: u64 = 250_000_000;

/// Sequence numbers remembered below the highest seen, for duplicate detection.
pub const WINDOW: u64 = 4096;
const WORDS: usize = (WINDOW / 64) as usize;

/// Continuity of one stream at one subscriber.
#[derive(Clone, Debug)]
pub struct StreamTracker {
    first: u64,
    highest: u64,
    started: bool,
    /// Bit `s % WINDOW` set: `s` was received (for `s` within the window).
    seen: Box<[u64; WORDS]>,
    pub unique: u64,
    pub duplicates: u64,
    /// Packets that arrived after a higher sequence number had.
    pub reordered: u64,
}

impl Default for StreamTracker {
    fn default() -> Self {
        Self {
            first: 0,
            highest: 0,
            started: false,
            seen: Box::new([0; WORDS]),
            unique: 0,
            duplicates: 0,
            reordered: 0,
        }
    }
}

impl StreamTracker {
    fn bit(seq: u64) -> (usize, u64) {
        let i = seq % WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    fn test_and_set(&mut self, seq: u64) -> bool {
        let (w, b) = Self::bit(seq);
        let was = self.seen[w] & b != 0;
        self.seen[w] |= b;
        was
    }

    fn clear(&mut self, seq: u64) {
        let (w, b) = Self::bit(seq);
        self.seen[w] &= !b;
    }

    /// Accounts one received sequence number.
    pub fn record(&mut self, seq: u64) {
        if !self.started {
            self.started = true;
            self.first = seq;
            self.highest = seq;
            self.test_and_set(seq);
            self.unique = 1;
            return;
        }
        if seq > self.highest {
            if seq - self.highest >= WINDOW {
                self.seen.fill(0);
            } else {
                for s in self.highest + 1..seq {
                    self.clear(s);
                }
            }
            self.highest = seq;
            self.test_and_set(seq);
            self.unique += 1;
            return;
        }
        if self.highest - seq >= WINDOW {
            // Too old to tell a duplicate from a late packet: call it late.
            self.reordered += 1;
            self.unique += 1;
            self.first = self.first.min(seq);
            return;
        }
        if self.test_and_set(seq) {
            self.duplicates += 1;
        } else {
            self.unique += 1;
            self.reordered += 1;
            self.first = self.first.min(seq);
        }
    }

    /// Packets missing between the lowest and the highest sequence number received.
    pub fn lost(&self) -> u64 {
        if !self.started {
            return 0;
        }
        (self.highest - self.first + 1).saturating_sub(self.unique)
    }
}

/// Everything the sinks counted during one trial.
#[derive(Debug)]
pub struct Tally {
    /// Per (subscriber, stream).
    pub streams: HashMap<(u32, u32), StreamTracker>,
    /// One-way latency, nanoseconds.
    pub latency: Histogram<u64>,
    /// Datagrams received, trailer or not.
    pub datagrams: u64,
    /// Datagrams without a bench trailer (RTCP from the forwarder, strays).
    pub foreign: u64,
    /// Datagrams that arrived more than [`LATE_NS`] after they were sent.
    pub late: u64,
    /// Datagrams sent before `since_ns` (ignored).
    pub stale: u64,
    /// Start of this tally on [`crate::clock`].
    pub since_ns: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Self::new()
    }
}

/// Totals over all streams of a [`Tally`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub unique: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Losses inside each stream's received span.
    pub gap_lost: u64,
}

impl Tally {
    pub fn new() -> Self {
        Self {
            streams: HashMap::new(),
            latency: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds"),
            datagrams: 0,
            foreign: 0,
            late: 0,
            stale: 0,
            since_ns: 0,
        }
    }

    /// A tally that ignores packets sent before `since_ns`.
    pub fn since(since_ns: u64) -> Self {
        Self {
            since_ns,
            ..Self::new()
        }
    }

    /// Accounts one datagram received by `subscriber` at `now_ns`.
    pub fn record(&mut self, subscriber: u32, datagram: &[u8], now_ns: u64) {
        self.datagrams += 1;
        let Some(t) = crate::payload::Trailer::read(datagram) else {
            self.foreign += 1;
            return;
        };
        if t.sent_ns < self.since_ns {
            self.stale += 1;
            return;
        }
        let ns = now_ns.saturating_sub(t.sent_ns).max(1);
        if ns > LATE_NS {
            self.late += 1;
            self.latency.saturating_record(ns);
            return;
        }
        let tracker = self.streams.entry((subscriber, t.stream)).or_default();
        let dups = tracker.duplicates;
        tracker.record(t.seq);
        if tracker.duplicates == dups {
            self.latency.saturating_record(ns);
        }
    }

    pub fn totals(&self) -> Totals {
        self.streams
            .values()
            .fold(Totals::default(), |a, s| Totals {
                unique: a.unique + s.unique,
                duplicates: a.duplicates + s.duplicates,
                reordered: a.reordered + s.reordered,
                gap_lost: a.gap_lost + s.lost(),
            })
    }

    /// Fraction lost against `expected` unique packets (what the generator sent times the
    /// subscribers of each stream).
    pub fn expected_loss(&self, expected: u64) -> f64 {
        if expected == 0 {
            return 0.0;
        }
        expected.saturating_sub(self.totals().unique) as f64 / expected as f64
    }

    /// Fraction lost inside the received spans.
    pub fn gap_loss(&self) -> f64 {
        let t = self.totals();
        let span = t.unique + t.gap_lost;
        if span == 0 {
            return 0.0;
        }
        t.gap_lost as f64 / span as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Trailer;

    fn datagram(stream: u32, seq: u64, sent_ns: u64) -> Vec<u8> {
        let mut d = vec![0u8; 100];
        Trailer {
            stream,
            seq,
            sent_ns,
        }
        .write(&mut d);
        d
    }

    #[test]
    fn in_order_stream_has_no_loss() {
        let mut t = StreamTracker::default();
        (10..1010).for_each(|s| t.record(s));
        assert_eq!(
            (t.unique, t.lost(), t.duplicates, t.reordered),
            (1000, 0, 0, 0)
        );
    }

    #[test]
    fn lossy_reordering_duplicating_stream_gives_known_figures() {
        // 0..100 with 5 lost, 3 adjacent pairs swapped, 2 packets delivered twice (once
        // right away, once much later).
        let lost = [7u64, 8, 40, 77, 98];
        let mut order: Vec<u64> = (0..100).filter(|s| !lost.contains(s)).collect();
        for at in [10usize, 20, 30] {
            order.swap(at, at + 1);
        }
        order.insert(50, order[49]);
        order.push(3);
        let mut t = StreamTracker::default();
        order.iter().for_each(|&s| t.record(s));
        assert_eq!(t.unique, 95);
        assert_eq!(t.lost(), 5);
        assert_eq!(t.duplicates, 2);
        assert_eq!(t.reordered, 3);
    }

    #[test]
    fn late_packet_below_the_first_widens_the_span() {
        let mut t = StreamTracker::default();
        [5u64, 6, 7, 3].iter().for_each(|&s| t.record(s));
        assert_eq!((t.unique, t.lost(), t.reordered), (4, 1, 1));
    }

    #[test]
    fn jumps_beyond_the_window_count_as_loss_not_duplicates() {
        let mut t = StreamTracker::default();
        t.record(0);
        t.record(WINDOW * 3);
        t.record(WINDOW * 3 + 1);
        assert_eq!(t.lost(), WINDOW * 3 - 1);
        assert_eq!(t.duplicates, 0);
        // A packet far below the window is late, not a duplicate.
        t.record(1);
        assert_eq!((t.reordered, t.duplicates), (1, 0));
    }

    #[test]
    fn tally_counts_per_subscriber_and_latency() {
        let mut tally = Tally::new();
        // Two subscribers of stream 1; subscriber 0 misses seq 2, subscriber 1 gets seq 0
        // twice. Latency is 1 ms for every packet.
        for seq in 0..5 {
            let d = datagram(1, seq, 1_000_000 * seq);
            if seq != 2 {
                tally.record(0, &d, 1_000_000 * seq + 1_000_000);
            }
            tally.record(1, &d, 1_000_000 * seq + 1_000_000);
        }
        tally.record(1, &datagram(1, 0, 0), 9_000_000);
        tally.record(1, &[0x80, 200, 0, 0], 0);
        let t = tally.totals();
        assert_eq!(t.unique, 9);
        assert_eq!(t.duplicates, 1);
        assert_eq!(t.gap_lost, 1);
        assert_eq!(tally.foreign, 1);
        assert_eq!(tally.datagrams, 11);
        assert!((tally.expected_loss(10) - 0.1).abs() < 1e-9);
        assert!((tally.gap_loss() - 0.1).abs() < 1e-9);
        // Duplicates are not timed.
        assert_eq!(tally.latency.len(), 9);
        let p50 = tally.latency.value_at_quantile(0.5);
        assert!((999_000..=1_001_000).contains(&p50), "p50 {p50}");

        // Late packets are timed but lost; stale ones are ignored.
        let mut tally = Tally::since(1_000);
        tally.record(0, &datagram(2, 0, 500), 2_000);
        tally.record(0, &datagram(2, 1, 2_000), 2_000 + LATE_NS + 1);
        tally.record(0, &datagram(2, 2, 3_000), 4_000);
        assert_eq!((tally.stale, tally.late), (1, 1));
        assert_eq!(tally.totals().unique, 1);
        assert_eq!(tally.latency.len(), 2);
    }
}
