//! Frames from in-order RTP payloads, per codec, with the recorder's loss rule: a frame
//! with a lost packet is dropped, and so is everything after it until a keyframe, so a
//! file never holds a frame that would decode corrupt.
//!
//! The jitter buffer ([`super::session`]) hands packets over in sequence order and says
//! when it gave up on a gap ([`Assembler::lost`]). Here:
//! - **VP8** (RFC 7741): a frame runs from the packet with the start bit (partition 0) to
//!   the one with the marker; a keyframe is one whose header says so and carries a size.
//!   A gap given up between two frames is a loss only if their picture ids do not follow
//!   each other: otherwise it held only padding (probes the forwarder never received).
//! - **H.264** (RFC 6184, non-interleaved mode): single NAL unit packets, STAP-A
//!   aggregates and FU-A fragments are rebuilt into NAL units and written in AVCC form
//!   (each NAL unit after its 4-byte big-endian length), one access unit per RTP
//!   timestamp, ended by the marker (or by the next timestamp). An access unit is a
//!   keyframe if it holds an IDR slice and the stream's SPS and PPS (which arrive
//!   in-band, and are kept: the latest of each) are known. A fragment that does not
//!   continue an open FU-A, a truncated STAP-A and the interleaved packet types count
//!   as loss.
//! - **Opus**: every packet is a frame.

use std::collections::VecDeque;

use prism_forwarder::codec::vp8;

use super::avc::{self, ParamSets};
use super::session::MediaCodec;

/// A released RTP packet: extended timestamp, marker, payload.
#[derive(Debug)]
pub struct Packet {
    pub ts: u64,
    pub marker: bool,
    pub payload: Vec<u8>,
}

/// A whole frame (VP8 frame, H.264 access unit in AVCC form, Opus packet).
#[derive(Debug)]
pub struct Frame {
    pub ts: u64,
    pub keyframe: bool,
    pub data: Vec<u8>,
    /// H.264 keyframes: the parameter sets in force (a container's header needs them).
    pub params: Option<ParamSets>,
}

#[derive(Debug)]
struct Partial {
    ts: u64,
    key: bool,
    data: Vec<u8>,
    broken: bool,
    /// H.264: where the NAL unit an open FU-A writes to starts (its length prefix).
    fu_at: Option<usize>,
}

/// Frame assembly for one stream.
#[derive(Debug)]
pub struct Assembler {
    codec: MediaCodec,
    partial: Option<Partial>,
    /// Nothing but a keyframe can be written (at the start, and after a loss).
    pub need_keyframe: bool,
    /// Frames dropped for loss after the first one was delivered (drops before the
    /// first keyframe are the normal start, not losses).
    pub dropped: u64,
    frames_out: u64,
    params: ParamSets,
    /// VP8: a gap was given up between frames; the next frame's picture id tells whether
    /// it held a frame or only padding.
    gap: bool,
    /// VP8: the picture id of the last frame started, and whether it is 15 bits wide.
    last_picture: Option<(u16, bool)>,
}

/// Whether VP8 picture id `next` comes right after `last` (both known, the same width).
fn follows(last: Option<(u16, bool)>, next: Option<(u16, bool)>) -> bool {
    match (last, next) {
        (Some((l, lw)), Some((n, nw))) if lw == nw => {
            let mask = if nw { 0x7FFF } else { 0x7F };
            n == l.wrapping_add(1) & mask
        }
        _ => false,
    }
}

/// Width and height from a VP8 keyframe's header (RFC 6386 §9.1).
pub fn vp8_size(frame: &[u8]) -> Option<(u16, u16)> {
    if frame.len() < 10 || frame[0] & 1 != 0 || frame[3..6] != [0x9D, 0x01, 0x2A] {
        return None;
    }
    let w = u16::from_le_bytes([frame[6], frame[7]]) & 0x3FFF;
    let h = u16::from_le_bytes([frame[8], frame[9]]) & 0x3FFF;
    Some((w, h))
}

impl Assembler {
    pub fn new(codec: MediaCodec) -> Self {
        Self {
            codec,
            partial: None,
            need_keyframe: codec.is_video(),
            dropped: 0,
            frames_out: 0,
            params: ParamSets::default(),
            gap: false,
            last_picture: None,
        }
    }

    pub fn frames_out(&self) -> u64 {
        self.frames_out
    }

    /// The jitter buffer gave up on a gap.
    pub fn lost(&mut self) {
        if let Some(p) = self.partial.as_mut() {
            p.broken = true;
        } else if self.codec == MediaCodec::Vp8 {
            // The gap may have held a whole frame (then what follows cannot decode), or
            // only padding: the next frame's picture id tells (`push_vp8`).
            self.gap = true;
        } else if self.codec.is_video() {
            // The gap may have held a whole access unit: what follows cannot decode.
            self.need_keyframe = true;
        }
    }

    /// The next packet in sequence order; finished frames go to `out`.
    pub fn push(&mut self, p: Packet, out: &mut VecDeque<Frame>) {
        match self.codec {
            MediaCodec::Opus => {
                if !p.payload.is_empty() {
                    self.frames_out += 1;
                    out.push_back(Frame {
                        ts: p.ts,
                        keyframe: true,
                        data: p.payload,
                        params: None,
                    });
                }
            }
            MediaCodec::Vp8 => self.push_vp8(p, out),
            MediaCodec::H264 => self.push_h264(p, out),
        }
    }

    fn push_vp8(&mut self, p: Packet, out: &mut VecDeque<Frame>) {
        let Ok(d) = vp8::parse_descriptor(&p.payload) else {
            self.lost();
            return;
        };
        let body = &p.payload[d.header_len.min(p.payload.len())..];
        if d.start_of_partition && d.partition_id == 0 {
            if self.partial.take().is_some() {
                // The previous frame never ended: its marker packet was lost.
                self.need_keyframe = true;
            }
            let picture = d.picture_id.map(|p| (p, d.picture_id_15bit));
            if std::mem::take(&mut self.gap) && !follows(self.last_picture, picture) {
                // A frame may have been lost in the gap.
                self.need_keyframe = true;
            }
            self.last_picture = picture;
            let key = body.first().is_some_and(|h| h & 1 == 0);
            self.partial = Some(Partial {
                ts: p.ts,
                key,
                data: Vec::new(),
                broken: false,
                fu_at: None,
            });
        }
        let Some(partial) = self.partial.as_mut() else {
            return;
        };
        if partial.ts != p.ts {
            self.partial = None;
            self.need_keyframe = true;
            return;
        }
        partial.data.extend_from_slice(body);
        if p.marker {
            if let Some(f) = self.partial.take() {
                self.finish(f, out);
            }
        }
    }

    fn push_h264(&mut self, p: Packet, out: &mut VecDeque<Frame>) {
        if self.partial.as_ref().is_some_and(|f| f.ts != p.ts) {
            // A new access unit without the previous one's marker: the sender left it
            // off (a lost packet would have been reported by `lost`).
            if let Some(f) = self.partial.take() {
                self.finish(f, out);
            }
        }
        let mut f = self.partial.take().unwrap_or(Partial {
            ts: p.ts,
            key: false,
            data: Vec::new(),
            broken: false,
            fu_at: None,
        });
        let pl = &p.payload[..];
        match avc::nal_type(pl) {
            1..=23 => {
                f.fu_at = None;
                self.nal(&mut f, pl);
            }
            24 => {
                f.fu_at = None;
                let mut rest = &pl[1..];
                while !rest.is_empty() {
                    let Some(len) = rest
                        .get(..2)
                        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                    else {
                        f.broken = true;
                        break;
                    };
                    let Some(nal) = rest.get(2..2 + len) else {
                        f.broken = true;
                        break;
                    };
                    self.nal(&mut f, nal);
                    rest = &rest[2 + len..];
                }
            }
            28 if pl.len() >= 2 => {
                let fu = pl[1];
                if fu & 0x80 != 0 {
                    let at = f.data.len();
                    f.data.extend_from_slice(&[0; 4]);
                    f.data.push((pl[0] & 0xE0) | (fu & 0x1F));
                    f.fu_at = Some(at);
                } else if f.fu_at.is_none() {
                    f.broken = true;
                }
                if let Some(at) = f.fu_at {
                    f.data.extend_from_slice(&pl[2..]);
                    let len = (f.data.len() - at - 4) as u32;
                    f.data[at..at + 4].copy_from_slice(&len.to_be_bytes());
                    if fu & 0x40 != 0 {
                        f.fu_at = None;
                        let nal = f.data[at + 4..].to_vec();
                        self.note(&mut f, &nal);
                    }
                }
            }
            // Empty, FU-A without its header, STAP-B, MTAP, FU-B.
            _ => f.broken = true,
        }
        if p.marker {
            self.finish(f, out);
        } else {
            self.partial = Some(f);
        }
    }

    /// A whole NAL unit of the access unit being built.
    fn nal(&mut self, f: &mut Partial, nal: &[u8]) {
        if nal.is_empty() {
            return;
        }
        f.data.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        f.data.extend_from_slice(nal);
        self.note(f, nal);
    }

    fn note(&mut self, f: &mut Partial, nal: &[u8]) {
        match avc::nal_type(nal) {
            avc::NAL_IDR => f.key = true,
            avc::NAL_SPS => self.params.sps = nal.to_vec(),
            avc::NAL_PPS => self.params.pps = nal.to_vec(),
            _ => {}
        }
    }

    /// The loss rule, for a frame that ended.
    fn finish(&mut self, f: Partial, out: &mut VecDeque<Frame>) {
        let usable_key = f.key
            && match self.codec {
                MediaCodec::Vp8 => vp8_size(&f.data).is_some(),
                MediaCodec::H264 => {
                    self.params.complete() && avc::sps_size(&self.params.sps).is_some()
                }
                MediaCodec::Opus => true,
            };
        if (f.broken || (self.need_keyframe && !usable_key)) && self.frames_out > 0 {
            self.dropped += 1;
        }
        if f.broken {
            self.need_keyframe = true;
            return;
        }
        if usable_key {
            self.need_keyframe = false;
        }
        if self.need_keyframe || f.data.is_empty() {
            return;
        }
        self.frames_out += 1;
        let params = (usable_key && self.codec == MediaCodec::H264).then(|| self.params.clone());
        out.push_back(Frame {
            ts: f.ts,
            keyframe: usable_key,
            data: f.data,
            params,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[
        0x67, 0x42, 0xC0, 0x1E, 0xD9, 0x00, 0xA0, 0x2F, 0xF9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00,
        0x01, 0x00, 0x00, 0x03, 0x00, 0x3C, 0x0F, 0x16, 0x2E, 0x48,
    ];
    const PPS: &[u8] = &[0x68, 0xCB, 0x83, 0xCB, 0x20];

    fn pkt(ts: u64, marker: bool, payload: Vec<u8>) -> Packet {
        Packet {
            ts,
            marker,
            payload,
        }
    }

    fn stap(nals: &[&[u8]]) -> Vec<u8> {
        let mut p = vec![24];
        for n in nals {
            p.extend_from_slice(&(n.len() as u16).to_be_bytes());
            p.extend_from_slice(n);
        }
        p
    }

    fn avcc(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for n in nals {
            v.extend_from_slice(&(n.len() as u32).to_be_bytes());
            v.extend_from_slice(n);
        }
        v
    }

    /// A VP8 frame of two packets, its descriptor carrying picture id `pid` (15 bits) or
    /// none.
    fn vp8_frame(
        a: &mut Assembler,
        out: &mut VecDeque<Frame>,
        ts: u64,
        pid: Option<u16>,
        key: bool,
    ) {
        for first in [true, false] {
            let mut p = vec![if first { 0x10 } else { 0x00 }];
            if let Some(pid) = pid {
                p[0] |= 0x80;
                p.push(0x80);
                p.extend_from_slice(&(0x8000 | pid).to_be_bytes());
            }
            if first && key {
                p.extend_from_slice(&[0x00, 0x00, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00]);
            } else if first {
                p.extend_from_slice(&[0x01, 0x00, 0x00]);
            } else {
                p.extend_from_slice(&[0xAB; 8]);
            }
            a.push(pkt(ts, !first, p), out);
        }
    }

    #[test]
    fn vp8_a_gap_between_consecutive_pictures_is_padding_and_a_missing_picture_a_loss() {
        let mut a = Assembler::new(MediaCodec::Vp8);
        let mut out = VecDeque::new();
        // Delta frames before the first keyframe are the normal start, not drops.
        vp8_frame(&mut a, &mut out, 0, Some(9), false);
        assert!(out.is_empty() && a.need_keyframe);
        assert_eq!(a.dropped, 0);
        vp8_frame(&mut a, &mut out, 3000, Some(10), true);
        vp8_frame(&mut a, &mut out, 6000, Some(11), false);
        assert_eq!(out.len(), 2);
        // A gap given up, and the next picture follows: only padding was lost.
        a.lost();
        vp8_frame(&mut a, &mut out, 9000, Some(12), false);
        assert_eq!(out.len(), 3);
        assert!(!a.need_keyframe);
        assert_eq!(a.dropped, 0);
        // A gap that held picture 13: dropped until a keyframe.
        a.lost();
        vp8_frame(&mut a, &mut out, 15000, Some(14), false);
        vp8_frame(&mut a, &mut out, 18000, Some(15), false);
        assert_eq!(out.len(), 3);
        assert!(a.need_keyframe);
        assert_eq!(a.dropped, 2);
        vp8_frame(&mut a, &mut out, 21000, Some(16), true);
        assert_eq!(out.len(), 4);
        assert!(out[3].keyframe && !a.need_keyframe);
        // Without picture ids a gap between frames cannot be told from a lost frame.
        a.lost();
        vp8_frame(&mut a, &mut out, 24000, None, false);
        assert_eq!(out.len(), 4);
        assert_eq!(a.dropped, 3);
    }

    #[test]
    fn picture_ids_follow_across_their_wrap_and_only_at_one_width() {
        assert!(follows(Some((0x7FFF, true)), Some((0, true))));
        assert!(follows(Some((0x7F, false)), Some((0, false))));
        assert!(follows(Some((5, true)), Some((6, true))));
        assert!(!follows(Some((5, true)), Some((7, true))));
        assert!(!follows(Some((5, false)), Some((6, true))));
        assert!(!follows(None, Some((0, true))));
        assert!(!follows(Some((0, true)), None));
    }

    #[test]
    fn h264_access_units_from_stap_a_fu_a_and_single_nals() {
        let mut a = Assembler::new(MediaCodec::H264);
        let mut out = VecDeque::new();
        // A delta frame before any keyframe is not written.
        a.push(pkt(0, true, vec![0x41, 1, 2]), &mut out);
        assert!(out.is_empty());
        // SPS and PPS aggregated, then an IDR in three FU-A fragments.
        a.push(pkt(3000, false, stap(&[SPS, PPS])), &mut out);
        a.push(pkt(3000, false, vec![0x7C, 0x85, 0xAA]), &mut out);
        a.push(pkt(3000, false, vec![0x7C, 0x05, 0xBB]), &mut out);
        a.push(pkt(3000, true, vec![0x7C, 0x45, 0xCC]), &mut out);
        let f = out.pop_front().expect("the keyframe");
        assert!(f.keyframe);
        assert_eq!(f.data, avcc(&[SPS, PPS, &[0x65, 0xAA, 0xBB, 0xCC]]));
        let params = f.params.expect("parameter sets");
        assert_eq!((params.sps.as_slice(), params.pps.as_slice()), (SPS, PPS));
        // Two slices of one frame as single NAL units; the marker ends it.
        a.push(pkt(6000, false, vec![0x41, 7]), &mut out);
        a.push(pkt(6000, true, vec![0x41, 8]), &mut out);
        let f = out.pop_front().expect("a delta frame");
        assert!(!f.keyframe && f.params.is_none());
        assert_eq!(f.data, avcc(&[&[0x41, 7], &[0x41, 8]]));
        assert_eq!(a.frames_out(), 2);
    }

    #[test]
    fn h264_loss_drops_until_an_idr() {
        let mut a = Assembler::new(MediaCodec::H264);
        let mut out = VecDeque::new();
        a.push(pkt(0, true, stap(&[SPS, PPS, &[0x65, 1]])), &mut out);
        assert_eq!(out.len(), 1);
        // An FU-A whose start was lost: broken, and so is the next frame.
        a.push(pkt(3000, true, vec![0x7C, 0x41, 9]), &mut out);
        a.push(pkt(6000, true, vec![0x41, 2]), &mut out);
        assert_eq!(out.len(), 1);
        assert!(a.need_keyframe);
        assert_eq!(a.dropped, 2);
        // A truncated STAP-A is loss too, and an IDR restarts.
        a.push(pkt(9000, true, vec![24, 0, 9, 0x65]), &mut out);
        assert_eq!(out.len(), 1);
        a.push(pkt(12000, true, vec![0x65, 3]), &mut out);
        assert_eq!(out.len(), 2);
        assert!(out[1].keyframe && !a.need_keyframe);
        // A lost packet inside an access unit.
        a.push(pkt(15000, false, vec![0x41, 4]), &mut out);
        a.lost();
        a.push(pkt(15000, true, vec![0x41, 5]), &mut out);
        assert_eq!(out.len(), 2);
        assert!(a.need_keyframe);
    }

    #[test]
    fn an_idr_without_parameter_sets_is_not_a_start() {
        let mut a = Assembler::new(MediaCodec::H264);
        let mut out = VecDeque::new();
        a.push(pkt(0, true, vec![0x65, 1]), &mut out);
        assert!(out.is_empty() && a.need_keyframe);
        a.push(pkt(3000, true, stap(&[SPS, PPS, &[0x65, 1]])), &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn garbage_payloads_never_panic() {
        let mut x = 0x1234_5678u32;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for codec in [MediaCodec::H264, MediaCodec::Vp8] {
            let mut a = Assembler::new(codec);
            let mut out = VecDeque::new();
            for i in 0..5000u64 {
                let len = (rnd() % 40) as usize;
                let payload: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
                a.push(pkt(i / 3 * 3000, rnd() % 3 == 0, payload), &mut out);
            }
            // Whatever came out is whole AVCC for H.264: lengths add up.
            if codec == MediaCodec::H264 {
                for f in &out {
                    let mut at = 0;
                    while at + 4 <= f.data.len() {
                        at +=
                            4 + u32::from_be_bytes(f.data[at..at + 4].try_into().unwrap()) as usize;
                    }
                    assert_eq!(at, f.data.len());
                }
            }
        }
    }

    #[test]
    fn a_new_timestamp_ends_an_access_unit_without_a_marker() {
        let mut a = Assembler::new(MediaCodec::H264);
        let mut out = VecDeque::new();
        a.push(pkt(0, false, stap(&[SPS, PPS, &[0x65, 1]])), &mut out);
        a.push(pkt(3000, true, vec![0x41, 2]), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].ts, 0);
        assert_eq!(out[1].ts, 3000);
    }
}
