//! VP9 RTP payload descriptor (RFC 9628 §4.2): parsing and keyframe/layer detection.
//!
//! Invariants: every field is read through a bounds-checked cursor, so a descriptor that
//! claims more than the packet holds is `Error::Truncated`, never a panic. The scalability
//! structure (`V=1`) is walked only to find where the descriptor ends — its contents are
//! not kept, so parsing never allocates and `header_len` is always exact.

use super::PayloadInfo;
use crate::wire::{Error, Result};

const I_BIT: u8 = 0x80;
const P_BIT: u8 = 0x40;
const L_BIT: u8 = 0x20;
const F_BIT: u8 = 0x10;
const B_BIT: u8 = 0x08;
const E_BIT: u8 = 0x04;
const V_BIT: u8 = 0x02;
const Z_BIT: u8 = 0x01;
const M_BIT: u8 = 0x80;
/// In flexible mode a picture references at most three earlier ones.
const MAX_P_DIFFS: usize = 3;

/// The fields of a VP9 payload descriptor. Optional fields are `None` when absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vp9Descriptor {
    /// `P`: the frame uses inter-picture prediction (not a keyframe).
    pub inter_picture: bool,
    /// `F`: flexible mode (reference P_DIFFs instead of TL0PICIDX).
    pub flexible: bool,
    /// `B`: first packet of a layer frame.
    pub start_of_frame: bool,
    /// `E`: last packet of a layer frame.
    pub end_of_frame: bool,
    /// `V`: a scalability structure follows (skipped, see module doc).
    pub scalability_structure: bool,
    /// `Z`: the frame is not used for inter-layer prediction by upper spatial layers.
    pub not_upper_ref: bool,
    pub picture_id: Option<u16>,
    pub picture_id_15bit: bool,
    /// Temporal layer id (`TID`), present when `L=1`.
    pub tid: Option<u8>,
    /// `U`: switching-up point (valid only with `tid`).
    pub switching_up: bool,
    /// Spatial layer id (`SID`), present when `L=1`.
    pub sid: Option<u8>,
    /// `D`: inter-layer dependency on the spatial layer below (valid only with `sid`).
    pub inter_layer_dep: bool,
    /// Present in non-flexible mode with `L=1`.
    pub tl0picidx: Option<u8>,
    /// Flexible-mode reference differences; only the first `p_diff_count` are set.
    pub p_diffs: [u8; MAX_P_DIFFS],
    pub p_diff_count: u8,
    /// Bytes of descriptor before the VP9 frame data.
    pub header_len: usize,
}

impl Vp9Descriptor {
    /// The first packet of a keyframe: an intra picture's first packet in the base spatial
    /// layer (or in a stream without layer indices).
    pub fn is_keyframe(&self) -> bool {
        !self.inter_picture && self.start_of_frame && self.sid.is_none_or(|s| s == 0)
    }
}

struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn u8(&mut self) -> Result<u8> {
        let b = self.data.get(self.at).copied().ok_or(Error::Truncated)?;
        self.at += 1;
        Ok(b)
    }

    fn skip(&mut self, n: usize) -> Result<()> {
        let end = self.at.checked_add(n).ok_or(Error::Truncated)?;
        if end > self.data.len() {
            return Err(Error::Truncated);
        }
        self.at = end;
        Ok(())
    }
}

/// Parses the payload descriptor at the start of `payload`.
pub fn parse_descriptor(payload: &[u8]) -> Result<Vp9Descriptor> {
    let mut c = Cursor {
        data: payload,
        at: 0,
    };
    let b0 = c.u8()?;
    let mut d = Vp9Descriptor {
        inter_picture: b0 & P_BIT != 0,
        flexible: b0 & F_BIT != 0,
        start_of_frame: b0 & B_BIT != 0,
        end_of_frame: b0 & E_BIT != 0,
        scalability_structure: b0 & V_BIT != 0,
        not_upper_ref: b0 & Z_BIT != 0,
        ..Vp9Descriptor::default()
    };
    if b0 & I_BIT != 0 {
        let p0 = c.u8()?;
        if p0 & M_BIT != 0 {
            let p1 = c.u8()?;
            d.picture_id = Some(u16::from(p0 & 0x7f) << 8 | u16::from(p1));
            d.picture_id_15bit = true;
        } else {
            d.picture_id = Some(u16::from(p0));
        }
    }
    if b0 & L_BIT != 0 {
        // TID(3) U(1) SID(3) D(1)
        let l = c.u8()?;
        d.tid = Some(l >> 5);
        d.switching_up = l & 0x10 != 0;
        d.sid = Some((l >> 1) & 0x07);
        d.inter_layer_dep = l & 0x01 != 0;
        if !d.flexible {
            d.tl0picidx = Some(c.u8()?);
        }
    }
    if d.flexible && d.inter_picture {
        // P_DIFF(7) N(1): N=1 means another P_DIFF follows.
        loop {
            let r = c.u8()?;
            if usize::from(d.p_diff_count) == MAX_P_DIFFS {
                return Err(Error::BadLength);
            }
            d.p_diffs[usize::from(d.p_diff_count)] = r >> 1;
            d.p_diff_count += 1;
            if r & 0x01 == 0 {
                break;
            }
        }
    }
    if d.scalability_structure {
        skip_scalability_structure(&mut c)?;
    }
    d.header_len = c.at;
    Ok(d)
}

/// Skips an SS: N_S(3) Y(1) G(1) RSV(3), then (N_S+1) × WIDTH/HEIGHT if Y, then N_G and
/// N_G picture descriptions of TID(3) U(1) R(2) RSV(2) followed by R P_DIFF bytes if G.
fn skip_scalability_structure(c: &mut Cursor<'_>) -> Result<()> {
    let h = c.u8()?;
    let spatial_layers = usize::from(h >> 5) + 1;
    if h & 0x10 != 0 {
        c.skip(spatial_layers * 4)?;
    }
    if h & 0x08 != 0 {
        let pictures = c.u8()?;
        for _ in 0..pictures {
            let p = c.u8()?;
            c.skip(usize::from((p >> 2) & 0x03))?;
        }
    }
    Ok(())
}

/// True for the first packet of a keyframe; malformed payloads are not keyframes.
pub fn is_keyframe(payload: &[u8]) -> bool {
    parse_descriptor(payload).is_ok_and(|d| d.is_keyframe())
}

/// The forwarder's summary of one VP9 payload. `start_of_frame` is the `B` bit: the start
/// of a layer frame, in whichever spatial layer `spatial` names.
pub fn inspect(payload: &[u8]) -> Result<PayloadInfo> {
    let d = parse_descriptor(payload)?;
    Ok(PayloadInfo {
        keyframe: d.is_keyframe(),
        start_of_frame: d.start_of_frame,
        temporal: d.tid,
        spatial: d.sid,
        layer_sync: d.tid.is_some() && d.switching_up,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn non_flexible_keyframe_with_ss() {
        let payload = [
            // I=1 P=0 L=1 F=0 B=1 E=0 V=1 Z=0
            0xaa, //
            // M=1, picture id 0x0102
            0x81, 0x02, //
            // TID=0 U=0 SID=0 D=0
            0x00, //
            // TL0PICIDX 9
            0x09, //
            // SS: N_S=1 (two spatial layers) Y=1 G=1
            0x38, //
            // WIDTH/HEIGHT for two layers: 320x180, 640x360
            0x01, 0x40, 0x00, 0xb4, 0x02, 0x80, 0x01, 0x68, //
            // N_G=2: TID=0 U=0 R=1 + one P_DIFF; TID=1 U=1 R=0
            0x02, 0x04, 0x01, 0x30, //
            // frame data
            0x82, 0x49,
        ];
        let d = parse_descriptor(&payload).unwrap();
        assert_eq!(d.picture_id, Some(0x0102));
        assert!(d.picture_id_15bit);
        assert_eq!((d.tid, d.sid, d.tl0picidx), (Some(0), Some(0), Some(9)));
        assert!(d.scalability_structure && d.start_of_frame && !d.end_of_frame);
        assert_eq!(d.header_len, payload.len() - 2);
        assert!(d.is_keyframe());
        let info = inspect(&payload).unwrap();
        assert_eq!((info.temporal, info.spatial), (Some(0), Some(0)));
        assert!(info.keyframe && info.start_of_frame);
    }

    #[test]
    fn flexible_interframe_with_p_diffs() {
        let payload = [
            // I=1 P=1 L=1 F=1 B=1 E=1 V=0 Z=1
            0xfd, //
            // 7-bit picture id 0x33
            0x33, //
            // TID=2 U=1 SID=1 D=1
            0x53, //
            // P_DIFF=1 N=1, P_DIFF=2 N=1, P_DIFF=4 N=0
            0x03, 0x05, 0x08, //
            0xaa,
        ];
        let d = parse_descriptor(&payload).unwrap();
        assert_eq!(d.picture_id, Some(0x33));
        assert_eq!((d.tid, d.sid, d.tl0picidx), (Some(2), Some(1), None));
        assert!(d.switching_up && d.inter_layer_dep && d.not_upper_ref);
        assert_eq!((d.p_diff_count, d.p_diffs), (3, [1, 2, 4]));
        assert_eq!(d.header_len, 6);
        assert!(!d.is_keyframe());
        let info = inspect(&payload).unwrap();
        assert!(info.layer_sync && !info.keyframe);
        assert_eq!((info.temporal, info.spatial), (Some(2), Some(1)));
    }

    #[test]
    fn too_many_p_diffs_is_an_error() {
        // I=0 P=1 F=1 B=1: four P_DIFFs all with N=1.
        assert_eq!(
            parse_descriptor(&[0x58, 0x03, 0x03, 0x03, 0x03, 0x00]),
            Err(Error::BadLength)
        );
    }

    #[test]
    fn intra_upper_spatial_layer_is_not_keyframe_start() {
        // I=0 P=0 L=1 F=0 B=1 | TID=0 SID=1 | TL0PICIDX
        let d = parse_descriptor(&[0x28, 0x02, 0x00, 0x00]).unwrap();
        assert_eq!(d.sid, Some(1));
        assert!(!d.is_keyframe());
        // Same without B: a continuation.
        assert!(!is_keyframe(&[0x20, 0x00, 0x00, 0x00]));
        // Minimal one-byte descriptor, B=1 P=0.
        assert!(is_keyframe(&[0x08, 0x00]));
    }

    #[test]
    fn truncated_descriptors_are_errors() {
        assert_eq!(parse_descriptor(&[]), Err(Error::Truncated));
        assert_eq!(parse_descriptor(&[0x80]), Err(Error::Truncated));
        assert_eq!(parse_descriptor(&[0x80, 0x80]), Err(Error::Truncated));
        assert_eq!(parse_descriptor(&[0x20, 0x00]), Err(Error::Truncated));
        assert_eq!(parse_descriptor(&[0x50, 0x01]), Err(Error::Truncated));
        // SS with Y=1 but no dimensions.
        assert_eq!(parse_descriptor(&[0x02, 0x10]), Err(Error::Truncated));
        // SS with G=1, one picture that claims 3 P_DIFFs but has 1.
        assert_eq!(
            parse_descriptor(&[0x02, 0x08, 0x01, 0x0c, 0x01]),
            Err(Error::Truncated)
        );
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(d) = parse_descriptor(&data) {
                prop_assert!(d.header_len <= data.len());
                prop_assert!(usize::from(d.p_diff_count) <= MAX_P_DIFFS);
            }
            let _ = is_keyframe(&data);
            let _ = inspect(&data);
        }
    }
}
