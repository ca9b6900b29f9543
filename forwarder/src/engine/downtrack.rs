//! One subscriber's copy of a published track: layer selection and header rewriting.
//!
//! A down track turns the packets of up to three simulcast layers, each with its own SSRC,
//! sequence space and timestamp base, into one stream with one SSRC and payload type that a
//! decoder cannot tell apart from a single encoder's output:
//! - sequence numbers advance by exactly one per forwarded packet, across packets this
//!   track chose to drop and across layer switches (a gap appears only where the publisher
//!   itself lost packets, so the subscriber's NACKs still mean something);
//! - timestamps continue across a switch, advanced by the wall time since the last packet;
//! - a switch happens only on the first packet of a keyframe of the target layer;
//! - VP8 picture ids and TL0PICIDX continue across switches ([`Vp8Munger`]).
//!
//! The work is split in two: [`DownTrack::decide`] updates the state and returns a small
//! `Copy` [`Decision`]; [`apply`] writes a forwarded decision into a header buffer. The
//! decision is also kept in a fixed history ring so that a NACK for an output sequence
//! number can be answered from the track's cache with the very same rewrite.

use std::time::Instant;

use crate::codec::vp8::{self, Vp8Descriptor, Vp8Munger};
use crate::codec::PayloadInfo;
use crate::engine::stats::DropReason;
use crate::ids::{ExtTimestamp, Pt, SeqNo, Ssrc};
use crate::wire::rtp;

/// Number of sent packets remembered for answering NACKs (a power of two).
pub const HISTORY: usize = 512;

/// How the down track was configured by control.
#[derive(Clone, Copy, Debug)]
pub struct DownTrackParams {
    pub ssrc: Ssrc,
    pub payload_type: Pt,
    pub clock_rate: u32,
    /// Video waits for a keyframe before it starts or switches; audio does not.
    pub video: bool,
    pub preferred_spatial: u8,
    pub preferred_temporal: u8,
    /// Only `preferred_spatial` is ever forwarded (a relay stream carries one layer).
    pub pinned: bool,
}

/// What to write into one forwarded packet's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    pub seq: u16,
    pub ts: u32,
    pub ssrc: Ssrc,
    pub pt: Pt,
    /// First packet after a layer switch (or the first packet ever).
    pub switched: bool,
    /// VP8 picture id and TL0PICIDX to write, when the payload carries them.
    pub vp8: Option<(u16, u8)>,
}

/// The outcome of [`DownTrack::decide`] for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Drop(DropReason),
    Forward(Forward),
}

/// One incoming packet as the down track sees it.
#[derive(Clone, Copy, Debug)]
pub struct Incoming {
    pub now: Instant,
    /// Spatial layer (index into the track's layers).
    pub layer: u8,
    pub seq: SeqNo,
    pub ts: ExtTimestamp,
    pub info: PayloadInfo,
    pub vp8: Option<Vp8Descriptor>,
    /// No later packet of this layer arrived before this one. A keyframe start that arrives
    /// late (a retransmission) cannot start a stream: the rest of its frame has already
    /// gone by.
    pub newest: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct Sent {
    /// Extended output sequence number; `u64::MAX` marks an empty entry.
    out: u64,
    layer: u8,
    src: u64,
    ts: u32,
    vp8: Option<(u16, u8)>,
}

/// Sequence-number mapping `out = src - offset`, rebased at every switch.
#[derive(Clone, Copy, Debug, Default)]
struct SeqMap {
    offset: i64,
    highest_src: Option<u64>,
    last_out: Option<u64>,
    /// First output number under the current offset: an older packet mapping below it
    /// would collide with a number already used.
    rebase_out: u64,
}

impl SeqMap {
    fn rebase(&mut self, src: SeqNo) -> u64 {
        let out = self.last_out.map_or(src.0, |o| o + 1);
        self.offset = src.0 as i64 - out as i64;
        self.highest_src = Some(src.0);
        self.last_out = Some(out);
        self.rebase_out = out;
        out
    }

    fn map(&mut self, src: SeqNo) -> Result<u64, DropReason> {
        let Some(highest) = self.highest_src else {
            return Ok(self.rebase(src));
        };
        let out = (src.0 as i64 - self.offset) as u64;
        if src.0 > highest {
            self.highest_src = Some(src.0);
            self.last_out = Some(out);
            Ok(out)
        } else if out < self.rebase_out {
            Err(DropReason::TooLate)
        } else {
            Ok(out)
        }
    }

    /// A packet of the forwarded layer that this down track drops on purpose: close the
    /// gap it would leave by shifting the offset, when it is the newest packet.
    fn skip(&mut self, src: SeqNo) {
        if let Some(highest) = self.highest_src {
            if src.0 > highest {
                self.offset += (src.0 - highest) as i64;
                self.highest_src = Some(src.0);
                self.rebase_out = self.last_out.map_or(0, |o| o + 1);
            }
        }
    }
}

/// Timestamp mapping `out = src - offset`, rebased at every switch.
#[derive(Clone, Copy, Debug, Default)]
struct TsMap {
    offset: i64,
    last_out: Option<u64>,
    last_at: Option<Instant>,
}

impl TsMap {
    fn rebase(&mut self, src: ExtTimestamp, now: Instant, clock_rate: u32) -> u64 {
        let out = match (self.last_out, self.last_at) {
            (Some(last), Some(at)) => {
                let elapsed = now.saturating_duration_since(at);
                let ticks = (elapsed.as_secs_f64() * f64::from(clock_rate)) as u64;
                last + ticks.max(1)
            }
            _ => src.0,
        };
        self.offset = src.0 as i64 - out as i64;
        out
    }

    fn map(&mut self, src: ExtTimestamp, now: Instant) -> u64 {
        let out = (src.0 as i64 - self.offset) as u64;
        if self.last_out.is_none_or(|l| out >= l) {
            self.last_out = Some(out);
            self.last_at = Some(now);
        }
        out
    }
}

/// One subscriber's view of a published track.
#[derive(Debug)]
pub struct DownTrack {
    pub params: DownTrackParams,
    paused: bool,
    /// Layer being forwarded.
    current: Option<u8>,
    /// Layer wanted (the preference, bounded by what the publisher sends and by the
    /// bandwidth cap).
    target: u8,
    /// Highest spatial layer the transport's bandwidth estimate allows
    /// (`cc::UNCAPPED`: no limit).
    cap: u8,
    /// Temporal layers up to this one are forwarded.
    temporal: u8,
    /// Set when the target layer needs a keyframe; the track collects and clears it.
    pub keyframe_needed: bool,
    seq: SeqMap,
    ts: TsMap,
    vp8: Vp8Munger,
    history: Box<[Sent]>,
    pub forwarded: u64,
    pub switches: u64,
}

impl DownTrack {
    pub fn new(params: DownTrackParams) -> Self {
        let empty = Sent {
            out: u64::MAX,
            ..Sent::default()
        };
        Self {
            params,
            paused: false,
            current: None,
            target: params.preferred_spatial,
            cap: crate::engine::cc::UNCAPPED,
            temporal: params.preferred_temporal,
            keyframe_needed: false,
            seq: SeqMap::default(),
            ts: TsMap::default(),
            vp8: Vp8Munger::default(),
            history: vec![empty; HISTORY].into_boxed_slice(),
            forwarded: 0,
            switches: 0,
        }
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Pauses or resumes forwarding. A paused video track forgets its layer, so that on
    /// resume it waits for a keyframe (the decoder lost its reference pictures); sequence
    /// numbers still continue from the last one sent.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
        if paused && self.params.video {
            self.current = None;
        }
    }

    /// The layer being forwarded, if any.
    pub fn current_layer(&self) -> Option<u8> {
        self.current
    }

    pub fn target_layer(&self) -> u8 {
        self.target
    }

    pub fn set_preferred(&mut self, spatial: u8, temporal: u8) {
        self.params.preferred_spatial = spatial;
        self.params.preferred_temporal = temporal;
    }

    /// The bandwidth cap on the spatial layer.
    pub fn cap(&self) -> u8 {
        self.cap
    }

    /// Caps the spatial layer (bandwidth allocation) and retargets. The switch itself
    /// still waits for a keyframe of the new layer.
    pub fn set_cap(&mut self, cap: u8, active: u8) {
        self.cap = cap;
        self.retarget(active);
    }

    /// Chooses the target layer: the preferred one (bounded by the bandwidth cap) if the
    /// publisher sends it, else the closest active layer below it, else the lowest active
    /// one. `active` has bit `i` set when layer `i` is being received.
    pub fn retarget(&mut self, active: u8) {
        if self.params.pinned {
            self.target = self.params.preferred_spatial;
            return;
        }
        let pref = self.params.preferred_spatial.min(self.cap).min(7);
        let below = (0..=pref).rev().find(|l| active & (1 << l) != 0);
        let any = (0..8).find(|l| active & (1 << l) != 0);
        if let Some(t) = below.or(any) {
            self.target = t;
        }
    }

    /// A padding-only packet (a bandwidth probe) of the layer this down track forwards:
    /// never sent, but its number must not leave a gap, or the subscriber counts it lost
    /// and asks for it again.
    pub fn skip_padding(&mut self, p: &Incoming) {
        if !self.paused && self.current == Some(p.layer) {
            self.seq.skip(p.seq);
        }
    }

    /// Decides what to do with one packet and updates the state accordingly.
    pub fn decide(&mut self, p: &Incoming) -> Decision {
        if self.paused {
            return Decision::Drop(DropReason::Paused);
        }
        let mut switched = false;
        if self.current != Some(p.layer) {
            if p.layer != self.target {
                return Decision::Drop(DropReason::LayerNotSelected);
            }
            let can_start =
                !self.params.video || (p.info.keyframe && p.info.start_of_frame && p.newest);
            if !can_start {
                self.keyframe_needed = true;
                return Decision::Drop(if self.current.is_none() {
                    DropReason::WaitingForKeyframe
                } else {
                    DropReason::LayerNotSelected
                });
            }
            self.current = Some(p.layer);
            self.seq.rebase(p.seq);
            self.ts.rebase(p.ts, p.now, self.params.clock_rate);
            self.temporal = self.params.preferred_temporal;
            self.keyframe_needed = false;
            self.switches += 1;
            switched = true;
        } else if let Some(t) = p.info.temporal {
            // Move to a new temporal preference only where the decoder can follow: on a
            // base-layer picture or a layer-sync point.
            if t == 0 || p.info.layer_sync {
                self.temporal = self.params.preferred_temporal;
            }
            if t > self.temporal {
                self.seq.skip(p.seq);
                return Decision::Drop(DropReason::TemporalFiltered);
            }
        }
        let out = match self.seq.map(p.seq) {
            Ok(o) => o,
            Err(r) => return Decision::Drop(r),
        };
        let slot = (out as usize) & (HISTORY - 1);
        if !switched && self.history[slot].out == out {
            return Decision::Drop(DropReason::Duplicate);
        }
        let ts = self.ts.map(p.ts, p.now);
        let vp8 = p.vp8.map(|d| self.vp8.next(&d, switched));
        let f = Forward {
            seq: out as u16,
            ts: ts as u32,
            ssrc: self.params.ssrc,
            pt: self.params.payload_type,
            switched,
            vp8,
        };
        self.history[slot] = Sent {
            out,
            layer: p.layer,
            src: p.seq.0,
            ts: f.ts,
            vp8,
        };
        self.forwarded += 1;
        Decision::Forward(f)
    }

    /// The output timestamp that source timestamp `src` of `layer` maps to, while `layer`
    /// is the one forwarded: what a sender report needs to carry the publisher's NTP↔RTP
    /// mapping into this down track's timeline. `None` for any other layer, whose offset
    /// is only fixed at the switch to it.
    pub fn output_timestamp(&self, layer: u8, src: ExtTimestamp) -> Option<u32> {
        if self.current != Some(layer) {
            return None;
        }
        Some((src.0 as i64 - self.ts.offset) as u32)
    }

    /// Where the packet sent as output number `seq` came from: (layer, source extended
    /// sequence number) and how it was rewritten, if it is still in the history.
    pub fn lookup_sent(&self, seq: u16) -> Option<(u8, SeqNo, Forward)> {
        let last = self.seq.last_out?;
        // Extend the 16-bit number relative to the newest output.
        let delta = seq.wrapping_sub(last as u16) as i16;
        let out = last.checked_add_signed(i64::from(delta))?;
        let s = self.history[(out as usize) & (HISTORY - 1)];
        if s.out != out {
            return None;
        }
        Some((
            s.layer,
            SeqNo(s.src),
            Forward {
                seq,
                ts: s.ts,
                ssrc: self.params.ssrc,
                pt: self.params.payload_type,
                switched: false,
                vp8: s.vp8,
            },
        ))
    }
}

/// Rewrites a packet in place according to `f`: `buf` holds at least the RTP header
/// (`header_len` bytes) and, when `vp8` is given, the VP8 payload descriptor after it,
/// which `vp8` was parsed from (so it is not parsed again per subscriber).
pub fn apply(
    buf: &mut [u8],
    header_len: usize,
    f: &Forward,
    vp8: Option<&Vp8Descriptor>,
) -> Result<(), crate::wire::Error> {
    rtp::write_sequence_number(buf, f.seq)?;
    rtp::write_timestamp(buf, f.ts)?;
    rtp::write_ssrc(buf, f.ssrc)?;
    rtp::write_payload_type(buf, f.pt)?;
    if let (Some(d), Some((pid, tl0))) = (vp8, f.vp8) {
        let desc = buf
            .get_mut(header_len..)
            .ok_or(crate::wire::Error::Truncated)?;
        vp8::rewrite_fields(desc, d, pid, tl0)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn params(video: bool) -> DownTrackParams {
        DownTrackParams {
            ssrc: Ssrc(0xabcd),
            payload_type: Pt(96),
            clock_rate: 90_000,
            video,
            preferred_spatial: 0,
            preferred_temporal: 2,
            pinned: false,
        }
    }

    fn pkt(now: Instant, layer: u8, seq: u64, ts: u64, key: bool) -> Incoming {
        Incoming {
            now,
            layer,
            seq: SeqNo(seq),
            ts: ExtTimestamp(ts),
            info: PayloadInfo {
                keyframe: key,
                start_of_frame: true,
                ..PayloadInfo::default()
            },
            vp8: None,
            newest: true,
        }
    }

    fn fwd(d: Decision) -> Forward {
        match d {
            Decision::Forward(f) => f,
            Decision::Drop(r) => panic!("dropped: {r:?}"),
        }
    }

    #[test]
    fn video_waits_for_keyframe_then_forwards_contiguously() {
        let t0 = Instant::now();
        let mut dt = DownTrack::new(params(true));
        assert_eq!(
            dt.decide(&pkt(t0, 0, 100, 1000, false)),
            Decision::Drop(DropReason::WaitingForKeyframe)
        );
        assert!(dt.keyframe_needed);
        let a = fwd(dt.decide(&pkt(t0, 0, 101, 4000, true)));
        assert!(a.switched && !dt.keyframe_needed);
        let b = fwd(dt.decide(&pkt(t0, 0, 102, 4000, false)));
        assert_eq!(b.seq, a.seq.wrapping_add(1));
        assert_eq!(b.ts, a.ts);
    }

    #[test]
    fn switch_keeps_sequence_and_timestamps_continuous() {
        let t0 = Instant::now();
        let mut dt = DownTrack::new(params(true));
        let a = fwd(dt.decide(&pkt(t0, 0, 5000, 90_000, true)));
        dt.set_preferred(1, 2);
        dt.retarget(0b11);
        // Layer 1 without a keyframe: not yet.
        assert_eq!(
            dt.decide(&pkt(t0, 1, 60_000, 7_000_000, false)),
            Decision::Drop(DropReason::LayerNotSelected)
        );
        assert!(dt.keyframe_needed);
        let b = fwd(dt.decide(&pkt(t0, 0, 5001, 93_000, false)));
        let t1 = t0 + Duration::from_millis(33);
        let c = fwd(dt.decide(&pkt(t1, 1, 60_001, 7_003_000, true)));
        assert_eq!(dt.current_layer(), Some(1));
        assert_eq!((b.seq, c.seq), (a.seq + 1, a.seq + 2));
        assert!(c.ts > b.ts && c.ts - b.ts <= 3000, "{} -> {}", b.ts, c.ts);
        // Old layer is no longer forwarded.
        assert_eq!(
            dt.decide(&pkt(t1, 0, 5002, 96_000, false)),
            Decision::Drop(DropReason::LayerNotSelected)
        );
    }

    #[test]
    fn temporal_filtering_closes_the_gap() {
        let t0 = Instant::now();
        let mut p = params(true);
        p.preferred_temporal = 0;
        let mut dt = DownTrack::new(p);
        let mut inc = pkt(t0, 0, 10, 0, true);
        inc.info.temporal = Some(0);
        let a = fwd(dt.decide(&inc));
        let mut t1 = pkt(t0, 0, 11, 3000, false);
        t1.info.temporal = Some(1);
        assert_eq!(dt.decide(&t1), Decision::Drop(DropReason::TemporalFiltered));
        let mut t2 = pkt(t0, 0, 12, 6000, false);
        t2.info.temporal = Some(0);
        let b = fwd(dt.decide(&t2));
        assert_eq!(b.seq, a.seq + 1);
        // The skipped packet arriving again (or a late one before the skip) has no slot.
        assert_eq!(
            dt.decide(&pkt(t0, 0, 10, 0, false)),
            Decision::Drop(DropReason::TooLate)
        );
    }

    #[test]
    fn padding_leaves_no_gap() {
        let t0 = Instant::now();
        let mut dt = DownTrack::new(params(true));
        let a = fwd(dt.decide(&pkt(t0, 0, 10, 0, true)));
        // Padding before the stream starts on another layer changes nothing.
        dt.skip_padding(&pkt(t0, 1, 500, 0, false));
        dt.skip_padding(&pkt(t0, 0, 11, 0, false));
        dt.skip_padding(&pkt(t0, 0, 12, 0, false));
        let b = fwd(dt.decide(&pkt(t0, 0, 13, 3000, false)));
        assert_eq!(b.seq, a.seq + 1);
    }

    #[test]
    fn reordered_packet_keeps_its_number_and_duplicates_are_dropped() {
        let t0 = Instant::now();
        let mut dt = DownTrack::new(params(false));
        let a = fwd(dt.decide(&pkt(t0, 0, 1, 0, false)));
        let c = fwd(dt.decide(&pkt(t0, 0, 3, 0, false)));
        let b = fwd(dt.decide(&pkt(t0, 0, 2, 0, false)));
        assert_eq!((b.seq, c.seq), (a.seq + 1, a.seq + 2));
        assert_eq!(
            dt.decide(&pkt(t0, 0, 2, 0, false)),
            Decision::Drop(DropReason::Duplicate)
        );
        let (layer, src, f) = dt.lookup_sent(b.seq).unwrap();
        assert_eq!((layer, src, f.seq), (0, SeqNo(2), b.seq));
        assert!(dt.lookup_sent(a.seq.wrapping_add(100)).is_none());
    }

    #[test]
    fn a_late_keyframe_start_does_not_start_the_stream() {
        let t0 = Instant::now();
        let mut dt = DownTrack::new(params(true));
        let mut late = pkt(t0, 0, 10, 0, true);
        late.newest = false;
        assert_eq!(
            dt.decide(&late),
            Decision::Drop(DropReason::WaitingForKeyframe)
        );
        assert!(dt.keyframe_needed, "asks for a fresh keyframe instead");
        fwd(dt.decide(&pkt(t0, 0, 20, 3000, true)));
    }

    #[test]
    fn paused_drops_and_resume_waits_for_keyframe_on_video() {
        let t0 = Instant::now();
        let mut dt = DownTrack::new(params(false));
        fwd(dt.decide(&pkt(t0, 0, 1, 0, false)));
        dt.set_paused(true);
        assert_eq!(
            dt.decide(&pkt(t0, 0, 2, 0, false)),
            Decision::Drop(DropReason::Paused)
        );
        dt.set_paused(false);
        let f = fwd(dt.decide(&pkt(t0, 0, 3, 0, false)));
        assert!(!f.switched);

        let mut v = DownTrack::new(params(true));
        let a = fwd(v.decide(&pkt(t0, 0, 1, 0, true)));
        v.set_paused(true);
        v.set_paused(false);
        assert_eq!(
            v.decide(&pkt(t0, 0, 2, 0, false)),
            Decision::Drop(DropReason::WaitingForKeyframe)
        );
        let b = fwd(v.decide(&pkt(t0, 0, 3, 3000, true)));
        assert_eq!(b.seq, a.seq + 1);
    }

    proptest::proptest! {
        /// Whatever the switch pattern, loss, reordering and wrap-around of the sources,
        /// the output has no duplicate sequence numbers, forwarded in-order packets get
        /// consecutive numbers, and timestamps never go backwards across a switch.
        #[test]
        fn output_stays_continuous(
            bases in proptest::collection::vec((proptest::prelude::any::<u16>(),
                                                proptest::prelude::any::<u32>()), 3),
            steps in proptest::collection::vec((0u8..3, 0u8..8, 0u8..10), 1..600),
        ) {
            let t0 = Instant::now();
            let mut dt = DownTrack::new(params(true));
            let mut seq: Vec<u64> = bases.iter().map(|b| u64::from(b.0) + (1 << 16)).collect();
            let mut ts: Vec<u64> = bases.iter().map(|b| u64::from(b.1) + (1 << 32)).collect();
            let mut seen = std::collections::HashSet::new();
            let mut last: Option<Forward> = None;
            for (i, (layer_pref, event, kind)) in steps.into_iter().enumerate() {
                let now = t0 + Duration::from_millis(i as u64 * 10);
                if event == 0 {
                    dt.set_preferred(layer_pref, 2);
                    dt.retarget(0b111);
                }
                for l in 0..3usize {
                    // kind: 0 = lost packet (skip a number), 1 = keyframe, else delta.
                    if kind == 0 {
                        seq[l] += 1;
                    }
                    seq[l] += 1;
                    ts[l] += 3000;
                    let p = pkt(now, l as u8, seq[l], ts[l], kind == 1);
                    if let Decision::Forward(f) = dt.decide(&p) {
                        proptest::prop_assert!(seen.insert(f.seq), "duplicate {}", f.seq);
                        if let Some(prev) = last {
                            let dseq = f.seq.wrapping_sub(prev.seq);
                            proptest::prop_assert!((1..=3).contains(&dseq), "gap {dseq}");
                            if f.switched {
                                proptest::prop_assert_eq!(dseq, 1);
                            }
                            let dts = f.ts.wrapping_sub(prev.ts);
                            proptest::prop_assert!(dts < 1 << 31, "ts backwards");
                        }
                        last = Some(f);
                    }
                }
            }
        }
    }

    #[test]
    fn retarget_falls_back_to_active_layers() {
        let mut p = params(true);
        p.preferred_spatial = 2;
        let mut dt = DownTrack::new(p);
        dt.retarget(0b011);
        assert_eq!(dt.target_layer(), 1);
        dt.retarget(0b100);
        assert_eq!(dt.target_layer(), 2);
        dt.set_preferred(0, 2);
        dt.retarget(0b110);
        assert_eq!(dt.target_layer(), 1);
    }
}
