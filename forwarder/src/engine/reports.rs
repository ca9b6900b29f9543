//! RTCP reports (RFC 3550 §6.4): receiver reports toward publishers, sender reports toward
//! subscribers.
//!
//! The forwarder terminates RTCP: what a publisher learns about this hop, and what a
//! subscriber learns about its sender, comes from here.
//! - **Receiver reports.** A publisher's encoder adapts to the loss and round-trip time it
//!   reads in receiver reports (libwebrtc's loss-based estimate; RTT from LSR/DLSR).
//!   [`ReceiveStats`] keeps, per published layer, what RFC 3550 appendix A.3 asks for
//!   (expected and lost packets, the fraction lost since the last report) and the
//!   interarrival jitter of A.8. Jitter is fed only by in-order arrivals: a retransmission's
//!   arrival time says nothing about the network's jitter. Every report interval each
//!   publishing transport gets one RR with a block per received layer.
//! - **Sender reports.** A subscriber lines audio up with video only through sender
//!   reports, which map each stream's RTP clock to one NTP clock. Timestamps are rewritten
//!   (one output timeline across simulcast switches), so the publisher's SRs cannot be
//!   relayed; they are translated. A down track's SR takes the NTP↔RTP pair of the last SR
//!   of the layer it forwards, carries both forward by the time elapsed since that SR
//!   arrived, and moves the RTP side into the down track's timeline with the offset its
//!   packets get. Audio and video of one publisher share the publisher's NTP clock, so the
//!   receiver lines them up as they were captured. There is no SR before such a pair is
//!   known, and one right after a switch, because the old layer's pair is wrong for the
//!   new one. Packet and octet counts are what that down track sent.
//!
//! Reports go out from the engine's timer, never from the packet path; nothing here
//! allocates. The first RR goes out on the first timer run after something was received,
//! then one per interval (`EngineConfig::report_interval`, [`REPORT_INTERVAL`] by
//! default).

use std::time::{Duration, Instant};

use super::egress::send_rtcp;
use super::routes::Objects;
use super::Engine;
use crate::egress::Egress;
use crate::ids::{ExtTimestamp, SeqNo, Ssrc};
use crate::wire::rtcp::{self, ReportBlockRepr, SenderInfo, SenderReport};

/// How often receiver and sender reports go out (RFC 3550 leaves it to the profile; 1 s
/// is what libwebrtc uses for video).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Report blocks one RR can carry (5-bit count).
const MAX_BLOCKS: usize = 31;

/// A sender report as received: NTP and RTP timestamps, and when it arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SrInfo {
    pub ntp: u64,
    pub rtp: u32,
    pub at: Instant,
}

/// Reception statistics of one published stream (RFC 3550 A.3, A.8).
#[derive(Clone, Copy, Debug, Default)]
pub struct ReceiveStats {
    /// Lowest and highest extended sequence numbers received.
    base: Option<u64>,
    max: u64,
    /// Distinct packets received.
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Interarrival jitter in timestamp units, times 16 (the integer form of A.8).
    jitter_q4: u64,
    last_transit: Option<i64>,
    /// Zero of the arrival clock used for jitter, in timestamp units.
    epoch: Option<Instant>,
    /// The stream's last sender report.
    pub last_sr: Option<SrInfo>,
}

impl ReceiveStats {
    /// Counts one distinct packet. `in_order`: no later packet arrived before it, so its
    /// arrival time measures the network's jitter.
    pub fn on_packet(
        &mut self,
        seq: SeqNo,
        ts: ExtTimestamp,
        now: Instant,
        clock_rate: u32,
        in_order: bool,
    ) {
        self.received += 1;
        self.base = Some(self.base.map_or(seq.0, |b| b.min(seq.0)));
        self.max = self.max.max(seq.0);
        if !in_order {
            return;
        }
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = ticks(now.saturating_duration_since(epoch), clock_rate);
        let transit = arrival as i64 - ts.0 as i64;
        if let Some(last) = self.last_transit {
            // A jump of more than 2^31 ticks is a stream restart, not jitter.
            let d = (transit - last).unsigned_abs().min(1 << 31);
            self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    /// Notes a sender report from the stream's source.
    pub fn on_sender_report(&mut self, ntp: u64, rtp: u32, now: Instant) {
        self.last_sr = Some(SrInfo { ntp, rtp, at: now });
    }

    /// Interarrival jitter in timestamp units.
    pub fn jitter(&self) -> u32 {
        (self.jitter_q4 >> 4).min(u64::from(u32::MAX)) as u32
    }

    /// The report block on `ssrc` at `now`, starting a new interval for the fraction lost.
    /// `None` before the first packet.
    pub fn block(&mut self, ssrc: Ssrc, now: Instant) -> Option<ReportBlockRepr> {
        let base = self.base?;
        let expected = self.max - base + 1;
        let lost = expected as i64 - self.received as i64;
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        let (lsr, dlsr) = match self.last_sr {
            Some(sr) => (
                (sr.ntp >> 16) as u32,
                to_dlsr(now.saturating_duration_since(sr.at)),
            ),
            None => (0, 0),
        };
        Some(ReportBlockRepr {
            ssrc,
            fraction_lost,
            cumulative_lost: lost.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
            // Cycles counted from the cycle of the first packet, as the source counts them.
            ext_highest_seq: (self.max - (base & !0xffff)) as u32,
            jitter: self.jitter(),
            lsr,
            dlsr,
        })
    }
}

/// What a down track sent, for its sender reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct SendStats {
    /// RTP packets and payload octets sent (RFC 3550: both wrap at 2^32).
    pub packets: u32,
    pub octets: u32,
    last_report: Option<Instant>,
    /// The down track's switch count when the last SR went out.
    reported_switches: u64,
}

impl SendStats {
    pub fn on_sent(&mut self, payload_len: usize) {
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload_len as u32);
    }

    /// Whether an SR is due: none sent yet, `interval` is over, or the forwarded layer
    /// changed since the last one (`switches` is the down track's switch count).
    pub fn due(&self, now: Instant, switches: u64, interval: Duration) -> bool {
        switches != self.reported_switches
            || self
                .last_report
                .is_none_or(|t| now.saturating_duration_since(t) >= interval)
    }

    fn sent(&mut self, now: Instant, switches: u64) {
        self.last_report = Some(now);
        self.reported_switches = switches;
    }
}

/// `d` in units of `clock_rate` Hz.
pub fn ticks(d: Duration, clock_rate: u32) -> u64 {
    (d.as_nanos() * u128::from(clock_rate) / 1_000_000_000) as u64
}

/// `ntp` (NTP 32.32 fixed point) advanced by `d`.
pub fn ntp_add(ntp: u64, d: Duration) -> u64 {
    let frac = (u128::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    ntp.wrapping_add(d.as_secs() << 32)
        .wrapping_add(frac as u64)
}

/// `d` in the 1/65536 s units of DLSR, saturating.
fn to_dlsr(d: Duration) -> u32 {
    (d.as_nanos() * 65_536 / 1_000_000_000).min(u128::from(u32::MAX)) as u32
}

impl Engine {
    /// A sender report from a publisher: remembered on the layer it describes. SRs on
    /// SSRCs that are not media layers (libwebrtc reports on its RTX streams too) are
    /// ignored.
    pub(super) fn on_sender_report(
        &mut self,
        now: Instant,
        transport: usize,
        sr: &SenderReport<&[u8]>,
    ) {
        let Some(&(ti, li)) = self.routes.by_ssrc.get(&(transport, sr.ssrc())) else {
            return;
        };
        if let Some(l) = self
            .objs
            .tracks
            .get_mut(ti)
            .and_then(|t| t.layers.get_mut(usize::from(li)))
        {
            l.recv
                .on_sender_report(sr.ntp_timestamp(), sr.rtp_timestamp(), now);
        }
    }

    /// Timer work: receiver reports once per interval, sender reports when due.
    pub(super) fn send_reports<E: Egress>(&mut self, now: Instant, eg: &mut E) {
        let due = self.timers.next_report.is_none_or(|t| now >= t);
        if due && self.send_receiver_reports(now, eg) {
            self.timers.next_report = Some(now + self.cfg.report_interval);
        }
        self.send_sender_reports(now, eg);
    }

    /// One RR per publishing transport (more if it receives over 31 streams), a block per
    /// layer that has received a packet. True if any was sent.
    fn send_receiver_reports<E: Egress>(&mut self, now: Instant, eg: &mut E) -> bool {
        let Objects {
            transports, tracks, ..
        } = &mut self.objs;
        let counters = &mut self.counters;
        let sender = self.cfg.rtcp_ssrc;
        let mut blocks = [ReportBlockRepr::default(); MAX_BLOCKS];
        let mut any = false;
        for (_, t) in transports.iter_mut() {
            let can_send = t.remote.is_some() && (t.webrtc.is_none() || t.srtp.is_some());
            if t.tracks.is_empty() || !can_send {
                continue;
            }
            let mut n = 0;
            for k in 0..t.tracks.len() {
                let Some(track) = tracks.get_mut(t.tracks[k]) else {
                    continue;
                };
                for l in &mut track.layers {
                    let Some(b) = l.recv.block(l.ssrc, now) else {
                        continue;
                    };
                    blocks[n] = b;
                    n += 1;
                    if n == MAX_BLOCKS {
                        any |= send_rr(t, eg, sender, &blocks[..n], counters);
                        n = 0;
                    }
                }
            }
            if n > 0 {
                any |= send_rr(t, eg, sender, &blocks[..n], counters);
            }
        }
        any
    }

    /// An SR for each down track that is due one and whose forwarded layer's NTP↔RTP
    /// mapping is known.
    fn send_sender_reports<E: Egress>(&mut self, now: Instant, eg: &mut E) {
        let Objects {
            transports,
            tracks,
            down_tracks,
            ..
        } = &mut self.objs;
        let (counters, cfg) = (&mut self.counters, &self.cfg);
        for (_, e) in down_tracks.iter_mut() {
            if !e.report.due(now, e.dt.switches, cfg.report_interval) {
                continue;
            }
            let Some(layer) = e.dt.current_layer() else {
                continue;
            };
            let Some(track) = tracks.get(e.track) else {
                continue;
            };
            let Some(l) = track.layers.get(usize::from(layer)) else {
                continue;
            };
            let Some(sr) = l.recv.last_sr else {
                continue;
            };
            let elapsed = now.saturating_duration_since(sr.at);
            let src = ExtTimestamp(l.ts.peek(sr.rtp).0 + ticks(elapsed, track.clock_rate));
            let Some(rtp_timestamp) = e.dt.output_timestamp(layer, src) else {
                continue;
            };
            let info = SenderInfo {
                ssrc: e.dt.params.ssrc,
                ntp_timestamp: ntp_add(sr.ntp, elapsed),
                rtp_timestamp,
                packet_count: e.report.packets,
                octet_count: e.report.octets,
            };
            let Some(t) = transports.get_mut(e.transport) else {
                continue;
            };
            if send_rtcp(t, eg, &mut |slot: &mut [u8]| {
                rtcp::emit_sr(slot, &info, &[]).unwrap_or(0)
            }) {
                e.report.sent(now, e.dt.switches);
                counters.sender_reports_sent += 1;
                t.counters.sender_reports_sent += 1;
            }
        }
    }
}

fn send_rr<E: Egress>(
    t: &mut super::Transport,
    eg: &mut E,
    sender: Ssrc,
    blocks: &[ReportBlockRepr],
    counters: &mut super::Counters,
) -> bool {
    let sender = t.rtcp_ssrc.unwrap_or(sender);
    let sent = send_rtcp(t, eg, &mut |slot: &mut [u8]| {
        rtcp::emit_rr(slot, sender, blocks).unwrap_or(0)
    });
    if sent {
        counters.receiver_reports_sent += 1;
        t.counters.receiver_reports_sent += 1;
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_fraction_follow_rfc3550() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::default();
        assert!(s.block(Ssrc(1), t0).is_none(), "nothing received yet");
        // 0x1fff0.. with every 4th packet lost: 101 expected, 76 received.
        let base = 0x1_fff0u64;
        for i in 0..101u64 {
            if i % 4 != 3 {
                s.on_packet(SeqNo(base + i), ExtTimestamp(i * 3000), t0, 90_000, true);
            }
        }
        let b = s.block(Ssrc(7), t0).unwrap();
        assert_eq!(b.ssrc, Ssrc(7));
        assert_eq!(b.cumulative_lost, 25);
        assert_eq!(b.fraction_lost, (25 * 256 / 101) as u8);
        // Base 0xfff0 in cycle 1 of the unwrapper: highest 0xfff0 + 100 crosses one wrap.
        assert_eq!(b.ext_highest_seq, 0xfff0 + 100);
        // Next interval: 10 more, none lost; cumulative stays, fraction resets.
        for i in 101..111u64 {
            s.on_packet(SeqNo(base + i), ExtTimestamp(i * 3000), t0, 90_000, true);
        }
        let b = s.block(Ssrc(7), t0).unwrap();
        assert_eq!((b.cumulative_lost, b.fraction_lost), (25, 0));
        // A late arrival of a lost one lowers the cumulative count.
        s.on_packet(SeqNo(base + 3), ExtTimestamp(9000), t0, 90_000, false);
        let b = s.block(Ssrc(7), t0).unwrap();
        assert_eq!((b.cumulative_lost, b.fraction_lost), (24, 0));
    }

    #[test]
    fn jitter_converges_to_the_mean_deviation() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::default();
        // 90 kHz, a packet every 20 ms, arriving alternately 0 and 2 ms late: |D| is
        // 180 ticks every time, so J tends to 180.
        for i in 0..2000u64 {
            let late = if i % 2 == 0 { 0 } else { 2 };
            let at = t0 + Duration::from_millis(i * 20 + late);
            s.on_packet(SeqNo(1 << 16 | i), ExtTimestamp(i * 1800), at, 90_000, true);
        }
        assert!((175..=180).contains(&s.jitter()), "{}", s.jitter());
        // Out-of-order arrivals do not feed it.
        let before = s.jitter();
        s.on_packet(
            SeqNo(1 << 16),
            ExtTimestamp(0),
            t0 + Duration::from_secs(99),
            90_000,
            false,
        );
        assert_eq!(s.jitter(), before);
    }

    #[test]
    fn lsr_and_dlsr_come_from_the_last_sender_report() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::default();
        s.on_packet(SeqNo(1 << 16), ExtTimestamp(0), t0, 48_000, true);
        s.on_sender_report(0x1234_5678_9abc_def0, 42, t0);
        let b = s.block(Ssrc(1), t0 + Duration::from_millis(500)).unwrap();
        assert_eq!(b.lsr, 0x5678_9abc);
        assert_eq!(b.dlsr, 32_768);
    }

    #[test]
    fn ntp_and_tick_arithmetic() {
        assert_eq!(
            ntp_add(5 << 32, Duration::from_millis(1500)),
            (6 << 32) | (1 << 31)
        );
        assert_eq!(ticks(Duration::from_millis(20), 48_000), 960);
        assert_eq!(ticks(Duration::from_millis(1), 90_000), 90);
    }
}
