//! VP8 RTP payload descriptor (RFC 7741 §4.2): parsing, keyframe detection, in-place
//! rewriting of picture id / TL0PICIDX, and the munger that keeps them continuous for one
//! subscriber across simulcast switches.
//!
//! Invariants: parsing reads only the descriptor and the first payload-header byte, checks
//! every index, and never allocates. `rewrite` keeps every field's width (a 7-bit picture
//! id stays 7 bits), so the descriptor length — and every byte after it — is unchanged.
//! The munger works on extended (unwrapped) `i64` values; only its outputs are reduced to
//! wire width.

use super::PayloadInfo;
use crate::wire::{Error, Result};

const X_BIT: u8 = 0x80;
const N_BIT: u8 = 0x20;
const S_BIT: u8 = 0x10;
const PID_MASK: u8 = 0x07;
const I_BIT: u8 = 0x80;
const L_BIT: u8 = 0x40;
const T_BIT: u8 = 0x20;
const K_BIT: u8 = 0x10;
const M_BIT: u8 = 0x80;
const Y_BIT: u8 = 0x20;

/// Picture ids wrap at 2^15 on the wire when the M bit is set, 2^7 otherwise.
const PICTURE_ID_MOD_15: i64 = 1 << 15;
const PICTURE_ID_MOD_7: i64 = 1 << 7;
const TL0_MOD: i64 = 1 << 8;

/// The fields of a VP8 payload descriptor. Optional fields are `None` when absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// `S`: the packet starts a VP8 partition.
    pub start_of_partition: bool,
    /// `PID`: the partition index (0..=7).
    pub partition_id: u8,
    /// `N`: the frame can be discarded without affecting any other frame.
    pub non_reference: bool,
    pub picture_id: Option<u16>,
    /// The picture id is 15 bits wide (`M` bit set); otherwise 7.
    pub picture_id_15bit: bool,
    pub tl0picidx: Option<u8>,
    pub tid: Option<u8>,
    /// `Y`: this frame only depends on the base layer (valid only with `tid`).
    pub layer_sync: bool,
    pub key_idx: Option<u8>,
    /// Bytes of descriptor before the VP8 payload header.
    pub header_len: usize,
}

fn byte(payload: &[u8], at: usize) -> Result<u8> {
    payload.get(at).copied().ok_or(Error::Truncated)
}

/// Parses the payload descriptor at the start of `payload`.
pub fn parse_descriptor(payload: &[u8]) -> Result<Vp8Descriptor> {
    let b0 = byte(payload, 0)?;
    let mut d = Vp8Descriptor {
        start_of_partition: b0 & S_BIT != 0,
        partition_id: b0 & PID_MASK,
        non_reference: b0 & N_BIT != 0,
        ..Vp8Descriptor::default()
    };
    let mut at = 1;
    if b0 & X_BIT != 0 {
        let ext = byte(payload, at)?;
        at += 1;
        if ext & I_BIT != 0 {
            let p0 = byte(payload, at)?;
            if p0 & M_BIT != 0 {
                let p1 = byte(payload, at + 1)?;
                d.picture_id = Some(u16::from(p0 & 0x7f) << 8 | u16::from(p1));
                d.picture_id_15bit = true;
                at += 2;
            } else {
                d.picture_id = Some(u16::from(p0));
                at += 1;
            }
        }
        if ext & L_BIT != 0 {
            d.tl0picidx = Some(byte(payload, at)?);
            at += 1;
        }
        if ext & (T_BIT | K_BIT) != 0 {
            let b = byte(payload, at)?;
            at += 1;
            if ext & T_BIT != 0 {
                d.tid = Some(b >> 6);
                d.layer_sync = b & Y_BIT != 0;
            }
            if ext & K_BIT != 0 {
                d.key_idx = Some(b & 0x1f);
            }
        }
    }
    d.header_len = at;
    Ok(d)
}

/// True for the first packet of a keyframe: `S=1`, `PID=0`, and the VP8 payload header's
/// inverse key frame bit `P` is 0 (RFC 7741 §4.3). Malformed payloads are not keyframes.
pub fn is_keyframe(payload: &[u8]) -> bool {
    match parse_descriptor(payload) {
        Ok(d) => keyframe_of(payload, &d),
        Err(_) => false,
    }
}

fn keyframe_of(payload: &[u8], d: &Vp8Descriptor) -> bool {
    d.start_of_partition
        && d.partition_id == 0
        && payload.get(d.header_len).is_some_and(|h| h & 0x01 == 0)
}

/// The forwarder's summary of one VP8 payload.
pub fn inspect(payload: &[u8]) -> Result<PayloadInfo> {
    let d = parse_descriptor(payload)?;
    Ok(info_of(payload, &d))
}

/// The summary of a payload whose descriptor `d` was already parsed (one parse per packet
/// on the forwarding path).
pub fn info_of(payload: &[u8], d: &Vp8Descriptor) -> PayloadInfo {
    PayloadInfo {
        keyframe: keyframe_of(payload, d),
        start_of_frame: d.start_of_partition && d.partition_id == 0,
        temporal: d.tid,
        spatial: None,
        layer_sync: d.tid.is_some() && d.layer_sync,
    }
}

/// Rewrite picture id and TL0PICIDX in place, keeping field widths (7-bit ids wrap at 128,
/// 15-bit at 32768). Fields absent from the payload are left alone.
///
/// `desc` must describe `payload`: the payload is re-parsed and a layout mismatch is
/// `Error::BadField`, so a stale descriptor can never make this write the wrong bytes.
pub fn rewrite(
    payload: &mut [u8],
    desc: &Vp8Descriptor,
    picture_id: u16,
    tl0picidx: u8,
) -> Result<()> {
    let actual = parse_descriptor(payload)?;
    if actual.header_len != desc.header_len
        || actual.picture_id.is_some() != desc.picture_id.is_some()
        || actual.picture_id_15bit != desc.picture_id_15bit
        || actual.tl0picidx.is_some() != desc.tl0picidx.is_some()
    {
        return Err(Error::BadField);
    }
    rewrite_fields(payload, &actual, picture_id, tl0picidx)
}

/// Writes picture id and TL0PICIDX where `desc` says they are, without re-parsing: for
/// callers whose `desc` was parsed from these very bytes (the forwarder rewrites a copy of
/// the header it parsed, once per subscriber). Writes stay bounds-checked.
pub fn rewrite_fields(
    payload: &mut [u8],
    desc: &Vp8Descriptor,
    picture_id: u16,
    tl0picidx: u8,
) -> Result<()> {
    // Picture id, when present, always starts right after the X byte.
    let mut at = 2;
    if desc.picture_id.is_some() {
        if desc.picture_id_15bit {
            let [hi, lo] = (picture_id & 0x7fff).to_be_bytes();
            let field = payload.get_mut(at..at + 2).ok_or(Error::Truncated)?;
            field.copy_from_slice(&[M_BIT | hi, lo]);
            at += 2;
        } else {
            *payload.get_mut(at).ok_or(Error::Truncated)? = (picture_id & 0x7f) as u8;
            at += 1;
        }
    }
    if desc.tl0picidx.is_some() {
        *payload.get_mut(at).ok_or(Error::Truncated)? = tl0picidx;
    }
    Ok(())
}

/// Places `v` (a value modulo `modulus`) on the extended line nearest to `last`.
fn unwrap_near(last: i64, v: i64, modulus: i64) -> i64 {
    let mut c = last - last.rem_euclid(modulus) + v;
    let diff = c - last;
    if diff > modulus / 2 {
        c -= modulus;
    } else if diff <= -modulus / 2 {
        c += modulus;
    }
    c
}

/// One munged field: maps the current source layer's extended values onto the output line
/// with a constant offset, re-anchoring at `last output + 1` on a switch.
#[derive(Clone, Copy, Debug, Default)]
struct FieldMap {
    started: bool,
    /// Wire modulus of the current source (changes count as a re-anchor).
    modulus: i64,
    src_last: i64,
    offset: i64,
    out_last: i64,
}

impl FieldMap {
    fn map(&mut self, v: u16, modulus: i64, switched: bool) -> i64 {
        let v = i64::from(v);
        if !self.started || switched || modulus != self.modulus {
            // One cycle up, so a packet reordered before this one still unwraps cleanly.
            let src = v + modulus;
            let out = if self.started { self.out_last + 1 } else { v };
            *self = FieldMap {
                started: true,
                modulus,
                src_last: src,
                offset: out - src,
                out_last: out,
            };
            return out;
        }
        let src = unwrap_near(self.src_last, v, modulus);
        self.src_last = self.src_last.max(src);
        let out = src + self.offset;
        self.out_last = self.out_last.max(out);
        out
    }
}

/// Continuity state for one subscriber's down track: maps each source layer's picture ids and
/// TL0PICIDX onto one continuous output sequence across simulcast switches.
///
/// Within a layer the mapping is a constant offset (`out = src + offset mod 2^15`), so
/// packets of the same picture, retransmissions and reordered packets all map consistently,
/// and a gap in the source (loss) stays visible as a gap. On a switch, the new layer's first
/// picture becomes `last output + 1`, and likewise for TL0PICIDX.
#[derive(Clone, Copy, Debug, Default)]
pub struct Vp8Munger {
    picture_id: FieldMap,
    tl0picidx: FieldMap,
}

impl Vp8Munger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Called for every forwarded packet; `switched` is true for the first packet forwarded
    /// after a layer switch (a keyframe). Returns the (picture_id, tl0picidx) to write.
    ///
    /// A field the descriptor lacks is passed through: its state is untouched and 0 is
    /// returned for it, which [`rewrite`] ignores because it only writes fields present.
    pub fn next(&mut self, desc: &Vp8Descriptor, switched: bool) -> (u16, u8) {
        let pid = match desc.picture_id {
            Some(p) => {
                let modulus = if desc.picture_id_15bit {
                    PICTURE_ID_MOD_15
                } else {
                    PICTURE_ID_MOD_7
                };
                // Reduce first so a hand-built descriptor cannot exceed its field width.
                let out = self.picture_id.map(p % modulus as u16, modulus, switched);
                out.rem_euclid(PICTURE_ID_MOD_15) as u16
            }
            None => 0,
        };
        let tl0 = match desc.tl0picidx {
            Some(t) => {
                let out = self.tl0picidx.map(u16::from(t), TL0_MOD, switched);
                out.rem_euclid(TL0_MOD) as u8
            }
            None => 0,
        };
        (pid, tl0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // X=1 S=1 PID=0 | I=1 L=1 T=1 K=1 | M=1 picture id 0x1234 | TL0PICIDX 0x56 |
    // TID=2 Y=1 KEYIDX=5 | VP8 header with P=0 (keyframe).
    const FULL_15: [u8; 10] = [0x90, 0xf0, 0x92, 0x34, 0x56, 0xa5, 0x9c, 0x01, 0x2a, 0xff];
    // X=1 N=1 S=1 PID=0 | I=1 L=1 | 7-bit picture id 0x55 | TL0PICIDX 7 | VP8 header P=1.
    const SHORT_7: [u8; 6] = [0xb0, 0xc0, 0x55, 0x07, 0x01, 0x00];

    #[test]
    fn parses_full_descriptor() {
        let d = parse_descriptor(&FULL_15).unwrap();
        assert_eq!(
            d,
            Vp8Descriptor {
                start_of_partition: true,
                partition_id: 0,
                non_reference: false,
                picture_id: Some(0x1234),
                picture_id_15bit: true,
                tl0picidx: Some(0x56),
                tid: Some(2),
                layer_sync: true,
                key_idx: Some(5),
                header_len: 6,
            }
        );
        assert!(is_keyframe(&FULL_15));
        let info = inspect(&FULL_15).unwrap();
        assert!(info.keyframe && info.start_of_frame && info.layer_sync);
        assert_eq!(info.temporal, Some(2));
    }

    #[test]
    fn parses_short_descriptor() {
        let d = parse_descriptor(&SHORT_7).unwrap();
        assert!(d.non_reference && d.start_of_partition);
        assert_eq!(d.picture_id, Some(0x55));
        assert!(!d.picture_id_15bit);
        assert_eq!(d.tl0picidx, Some(7));
        assert_eq!((d.tid, d.key_idx, d.header_len), (None, None, 4));
        // P bit set: an interframe.
        assert!(!is_keyframe(&SHORT_7));
    }

    #[test]
    fn minimal_and_non_start_packets() {
        // No X: one-byte descriptor. S=1 PID=0 with P=0 is a keyframe.
        assert_eq!(parse_descriptor(&[0x10, 0x00]).unwrap().header_len, 1);
        assert!(is_keyframe(&[0x10, 0x00]));
        // S=0: a continuation packet is never the keyframe start.
        assert!(!is_keyframe(&[0x00, 0x00]));
        // S=1 but PID=1: a later partition.
        assert!(!is_keyframe(&[0x11, 0x00]));
        // Descriptor with no payload header byte: parses, but is no keyframe.
        assert!(!is_keyframe(&[0x10]));
    }

    #[test]
    fn truncated_descriptors_are_errors() {
        assert_eq!(parse_descriptor(&[]), Err(Error::Truncated));
        assert_eq!(parse_descriptor(&[0x80]), Err(Error::Truncated));
        assert_eq!(parse_descriptor(&[0x80, 0x80]), Err(Error::Truncated));
        assert_eq!(parse_descriptor(&[0x80, 0x80, 0x80]), Err(Error::Truncated));
        assert_eq!(parse_descriptor(&[0x80, 0x40]), Err(Error::Truncated));
        assert_eq!(parse_descriptor(&[0x80, 0x20]), Err(Error::Truncated));
    }

    #[test]
    fn rewrite_round_trip_15bit() {
        let mut buf = FULL_15;
        let d = parse_descriptor(&buf).unwrap();
        rewrite(&mut buf, &d, 0x7abc, 0x99).unwrap();
        let r = parse_descriptor(&buf).unwrap();
        assert_eq!(r.picture_id, Some(0x7abc));
        assert_eq!(r.tl0picidx, Some(0x99));
        assert_eq!(
            Vp8Descriptor {
                picture_id: d.picture_id,
                tl0picidx: d.tl0picidx,
                ..r
            },
            d
        );
        // Only bytes 2..5 changed.
        assert_eq!(buf[..2], FULL_15[..2]);
        assert_eq!(buf[5..], FULL_15[5..]);
        // Values beyond 15 bits wrap.
        rewrite(&mut buf, &d, 0x8001, 0).unwrap();
        assert_eq!(parse_descriptor(&buf).unwrap().picture_id, Some(1));
    }

    #[test]
    fn rewrite_round_trip_7bit_keeps_width() {
        let mut buf = SHORT_7;
        let d = parse_descriptor(&buf).unwrap();
        rewrite(&mut buf, &d, 200, 3).unwrap();
        let r = parse_descriptor(&buf).unwrap();
        assert_eq!(r.picture_id, Some(200 % 128));
        assert!(!r.picture_id_15bit);
        assert_eq!(r.tl0picidx, Some(3));
        assert_eq!(r.header_len, d.header_len);
        assert_eq!(buf[..2], SHORT_7[..2]);
        assert_eq!(buf[4..], SHORT_7[4..]);
    }

    #[test]
    fn rewrite_without_fields_is_a_no_op() {
        let mut buf = [0x10, 0x00, 0x9d];
        let d = parse_descriptor(&buf).unwrap();
        rewrite(&mut buf, &d, 77, 77).unwrap();
        assert_eq!(buf, [0x10, 0x00, 0x9d]);
    }

    #[test]
    fn rewrite_rejects_stale_descriptor() {
        let mut buf = SHORT_7;
        let d = parse_descriptor(&FULL_15).unwrap();
        assert_eq!(rewrite(&mut buf, &d, 1, 1), Err(Error::BadField));
        assert_eq!(buf, SHORT_7);
    }

    fn desc(pid: u16, wide: bool, tl0: u8) -> Vp8Descriptor {
        Vp8Descriptor {
            picture_id: Some(pid),
            picture_id_15bit: wide,
            tl0picidx: Some(tl0),
            ..Vp8Descriptor::default()
        }
    }

    #[test]
    fn munger_same_picture_same_output() {
        let mut m = Vp8Munger::new();
        let a = m.next(&desc(10, true, 3), false);
        let b = m.next(&desc(10, true, 3), false);
        let c = m.next(&desc(11, true, 3), false);
        assert_eq!(a, b);
        assert_eq!(c, (a.0 + 1, a.1));
    }

    #[test]
    fn munger_three_layers_switch_up_and_down() {
        // Three simulcast layers with unrelated bases; layer 1 uses 7-bit ids near the wrap,
        // layer 2 uses 15-bit ids near the wrap.
        let bases: [(u16, bool, u8); 3] = [(1000, true, 10), (120, false, 250), (32760, true, 0)];
        let mut m = Vp8Munger::new();
        let mut expect: Option<(u16, u8)> = None;
        let mut layer = 0usize;
        let plan = [
            0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 1, 1,
        ];
        for (frame, &target) in plan.iter().enumerate() {
            let switched = target != layer;
            layer = target;
            let (base, wide, tl0_base) = bases[layer];
            let modulus: u32 = if wide { 1 << 15 } else { 1 << 7 };
            let src = ((u32::from(base) + frame as u32) % modulus) as u16;
            // TL0PICIDX advances every other picture (two temporal layers).
            let tl0 = tl0_base.wrapping_add((frame / 2) as u8);
            // Two packets per picture.
            let first = m.next(&desc(src, wide, tl0), switched);
            let second = m.next(&desc(src, wide, tl0), false);
            assert_eq!(first, second, "frame {frame}");
            if let Some((pid, _)) = expect {
                assert_eq!(first.0, (pid + 1) % (1 << 15), "frame {frame}");
            }
            expect = Some(first);
        }
    }

    #[test]
    fn munger_tl0_advances_once_per_new_value_and_on_switch() {
        let mut m = Vp8Munger::new();
        let (_, t0) = m.next(&desc(5, true, 255), false);
        let (_, t1) = m.next(&desc(6, true, 255), false);
        let (_, t2) = m.next(&desc(7, true, 0), false);
        assert_eq!((t1, t2), (t0, t0.wrapping_add(1)));
        // Switch to a layer whose tl0 is far away.
        let (_, t3) = m.next(&desc(500, true, 100), true);
        let (_, t4) = m.next(&desc(501, true, 100), false);
        let (_, t5) = m.next(&desc(502, true, 101), false);
        assert_eq!(
            (t3, t4, t5),
            (t2.wrapping_add(1), t2.wrapping_add(1), t2.wrapping_add(2))
        );
    }

    #[test]
    fn munger_maps_reordered_packets_with_same_offset() {
        let mut m = Vp8Munger::new();
        m.next(&desc(1, true, 0), false);
        let (a, _) = m.next(&desc(2, true, 0), true);
        let (b, _) = m.next(&desc(3, true, 0), false);
        let (c, _) = m.next(&desc(5, true, 0), false);
        // A late packet of picture 4, and a retransmission of picture 3.
        let (late, _) = m.next(&desc(4, true, 0), false);
        let (rtx, _) = m.next(&desc(3, true, 0), false);
        assert_eq!((b, c, late, rtx), (a + 1, a + 3, a + 2, a + 1));
        // A reorder across the 7-bit wrap.
        let mut m = Vp8Munger::new();
        let (x, _) = m.next(&desc(127, false, 0), false);
        let (y, _) = m.next(&desc(1, false, 0), false);
        let (z, _) = m.next(&desc(0, false, 0), false);
        assert_eq!((y, z), ((x + 2) % 32768, (x + 1) % 32768));
    }

    #[test]
    fn munger_passes_through_missing_fields() {
        let mut m = Vp8Munger::new();
        let (p0, _) = m.next(&desc(9, true, 1), false);
        let bare = Vp8Descriptor::default();
        assert_eq!(m.next(&bare, false), (0, 0));
        let (p1, _) = m.next(&desc(10, true, 1), false);
        assert_eq!(p1, p0 + 1);
    }

    proptest! {
        #[test]
        fn parse_and_rewrite_never_panic(data in proptest::collection::vec(any::<u8>(), 0..32),
                                         pid in any::<u16>(), tl0 in any::<u8>()) {
            let _ = is_keyframe(&data);
            let _ = inspect(&data);
            let mut copy = data.clone();
            if let Ok(d) = parse_descriptor(&data) {
                prop_assert!(d.header_len <= data.len());
                rewrite(&mut copy, &d, pid, tl0).unwrap();
                prop_assert_eq!(copy.len(), data.len());
                prop_assert_eq!(&copy[d.header_len..], &data[d.header_len..]);
                let r = parse_descriptor(&copy).unwrap();
                prop_assert_eq!(r.header_len, d.header_len);
            }
            // A descriptor that does not match must never write out of bounds.
            let _ = rewrite(&mut copy, &Vp8Descriptor { header_len: 5, picture_id: Some(1),
                                                        ..Default::default() }, pid, tl0);
        }

        /// Three layers advance in lockstep; the subscriber switches at random pictures,
        /// and occasionally a stale packet of the current layer is re-sent. The output must
        /// step by exactly one per new picture and map repeats to their first output.
        #[test]
        fn munger_output_is_continuous(
            bases in proptest::array::uniform3((any::<u16>(), any::<bool>(), any::<u8>())),
            steps in proptest::collection::vec((0usize..3, 1usize..4, 0u8..4), 1..200),
        ) {
            let mut m = Vp8Munger::new();
            let mut layer = 0usize;
            let mut last: Option<(u16, u8)> = None;
            // (frame, output) of pictures forwarded since the last switch.
            let mut seen: Vec<(usize, (u16, u8))> = Vec::new();
            for (frame, &(target, packets, rtx)) in steps.iter().enumerate() {
                let switched = frame > 0 && target != layer;
                layer = target;
                if switched {
                    seen.clear();
                }
                let (base, wide, tl0_base) = bases[layer];
                let modulus: usize = if wide { 1 << 15 } else { 1 << 7 };
                let src = ((usize::from(base) + frame) % modulus) as u16;
                let tl0 = tl0_base.wrapping_add((frame / 3) as u8);
                let d = desc(src, wide, tl0);
                let out = m.next(&d, switched);
                for _ in 1..packets {
                    prop_assert_eq!(m.next(&d, false), out);
                }
                if let Some((pid, t)) = last {
                    prop_assert_eq!(out.0, (pid + 1) % (1 << 15));
                    let new_tl0 = switched || frame % 3 == 0;
                    prop_assert_eq!(out.1, if new_tl0 { t.wrapping_add(1) } else { t });
                }
                seen.push((frame, out));
                // Re-send a packet of an earlier picture in this layer.
                if rtx > 0 && seen.len() > usize::from(rtx) {
                    let (old_frame, old_out) = seen[seen.len() - 1 - usize::from(rtx)];
                    let old_src = ((usize::from(base) + old_frame) % modulus) as u16;
                    let old_tl0 = tl0_base.wrapping_add((old_frame / 3) as u8);
                    prop_assert_eq!(m.next(&desc(old_src, wide, old_tl0), false), old_out);
                }
                last = Some(out);
            }
        }
    }
}
