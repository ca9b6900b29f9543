//! H.264 RTP payload inspection (RFC 6184 §5): keyframe and frame-start detection for the
//! packetization modes browsers use (single NAL unit, STAP-A, FU-A).
//!
//! Invariants: only NAL unit headers are read — never slice data — and every aggregated NAL
//! size is checked against the remaining bytes, so a malformed STAP-A is an error rather than
//! an out-of-bounds read. STAP-B, MTAP16/24 and FU-B (interleaved mode, which WebRTC does not
//! negotiate) are accepted as "not a keyframe" without being walked.

use super::PayloadInfo;
use crate::wire::{Error, Result};

const NAL_TYPE_MASK: u8 = 0x1f;
const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const STAP_A: u8 = 24;
const STAP_B: u8 = 25;
const MTAP16: u8 = 26;
const MTAP24: u8 = 27;
const FU_A: u8 = 28;
const FU_B: u8 = 29;
const FU_START: u8 = 0x80;

/// A NAL type that starts a decodable sequence: an IDR slice, or the SPS sent before it.
fn is_key_nal(nal_type: u8) -> bool {
    nal_type == NAL_IDR || nal_type == NAL_SPS
}

/// The forwarder's summary of one H.264 payload.
///
/// `keyframe` is true when the packet carries an IDR slice or an SPS (a single NAL unit, any
/// NAL inside a STAP-A, or the start fragment of an FU-A). `start_of_frame` is best effort:
/// true for a single NAL unit, a STAP-A, or an FU-A start fragment. H.264 has no temporal
/// or spatial layer fields in these modes, so both stay `None`.
pub fn inspect(payload: &[u8]) -> Result<PayloadInfo> {
    let header = payload.first().copied().ok_or(Error::Truncated)?;
    let (keyframe, start_of_frame) = match header & NAL_TYPE_MASK {
        STAP_A => (stap_a_has_key_nal(payload.get(1..).unwrap_or(&[]))?, true),
        FU_A => {
            let fu = payload.get(1).copied().ok_or(Error::Truncated)?;
            let start = fu & FU_START != 0;
            (start && is_key_nal(fu & NAL_TYPE_MASK), start)
        }
        STAP_B | MTAP16 | MTAP24 | FU_B => (false, false),
        nal => (is_key_nal(nal), true),
    };
    Ok(PayloadInfo {
        keyframe,
        start_of_frame,
        ..PayloadInfo::default()
    })
}

/// True when `payload` starts a keyframe; malformed payloads are not keyframes.
pub fn is_keyframe(payload: &[u8]) -> bool {
    inspect(payload).is_ok_and(|i| i.keyframe)
}

/// Walks STAP-A aggregation units (16-bit size, then the NAL unit) after the STAP-A header.
/// Every unit is validated, so a packet whose tail is corrupt is an error even if an
/// earlier unit was an IDR.
fn stap_a_has_key_nal(mut units: &[u8]) -> Result<bool> {
    if units.is_empty() {
        return Err(Error::Truncated);
    }
    let mut key = false;
    while !units.is_empty() {
        let [hi, lo, rest @ ..] = units else {
            return Err(Error::Truncated);
        };
        let size = usize::from(u16::from_be_bytes([*hi, *lo]));
        if size == 0 {
            return Err(Error::BadLength);
        }
        let nal = rest.get(..size).ok_or(Error::Truncated)?;
        key |= nal.first().is_some_and(|h| is_key_nal(h & NAL_TYPE_MASK));
        units = rest.get(size..).unwrap_or(&[]);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn single_nal_units() {
        // NRI=3 type 5 (IDR slice).
        let idr = inspect(&[0x65, 0x88, 0x84]).unwrap();
        assert!(idr.keyframe && idr.start_of_frame);
        // NRI=3 type 7 (SPS).
        assert!(is_keyframe(&[0x67, 0x42, 0xc0, 0x1f]));
        // NRI=2 type 1 (non-IDR slice).
        let p = inspect(&[0x41, 0x9a]).unwrap();
        assert!(!p.keyframe && p.start_of_frame);
        // PPS (type 8) alone is not a keyframe start.
        assert!(!is_keyframe(&[0x68, 0xce]));
        assert_eq!((p.temporal, p.spatial), (None, None));
    }

    #[test]
    fn stap_a_with_sps_pps_idr() {
        let payload = [
            0x78, // STAP-A, NRI=3
            0x00, 0x04, 0x67, 0x42, 0xc0, 0x1f, // SPS, 4 bytes
            0x00, 0x02, 0x68, 0xce, // PPS, 2 bytes
            0x00, 0x03, 0x65, 0x88, 0x84, // IDR, 3 bytes
        ];
        let info = inspect(&payload).unwrap();
        assert!(info.keyframe && info.start_of_frame);
        // Only PPS and a non-IDR slice: not a keyframe.
        let payload = [0x78, 0x00, 0x02, 0x68, 0xce, 0x00, 0x02, 0x41, 0x9a];
        assert!(!inspect(&payload).unwrap().keyframe);
    }

    #[test]
    fn stap_a_malformed() {
        // Size runs past the end.
        assert_eq!(
            inspect(&[0x78, 0x00, 0x05, 0x65, 0x88]),
            Err(Error::Truncated)
        );
        // Dangling single size byte after a good unit.
        assert_eq!(
            inspect(&[0x78, 0x00, 0x01, 0x65, 0x00]),
            Err(Error::Truncated)
        );
        // Zero-size unit.
        assert_eq!(inspect(&[0x78, 0x00, 0x00]), Err(Error::BadLength));
        // No units at all.
        assert_eq!(inspect(&[0x78]), Err(Error::Truncated));
    }

    #[test]
    fn fu_a_fragments() {
        // FU indicator NRI=3 type 28; FU header S=1 type 5.
        let start = inspect(&[0x7c, 0x85, 0x88]).unwrap();
        assert!(start.keyframe && start.start_of_frame);
        // Middle fragment of the same IDR.
        let mid = inspect(&[0x7c, 0x05, 0x00]).unwrap();
        assert!(!mid.keyframe && !mid.start_of_frame);
        // End fragment (E=1).
        assert!(!is_keyframe(&[0x7c, 0x45, 0x00]));
        // Start of a non-IDR slice.
        let p = inspect(&[0x5c, 0x81, 0x9a]).unwrap();
        assert!(!p.keyframe && p.start_of_frame);
        assert_eq!(inspect(&[0x7c]), Err(Error::Truncated));
    }

    #[test]
    fn interleaved_mode_types_are_not_keyframes() {
        for t in [STAP_B, MTAP16, MTAP24, FU_B] {
            let info = inspect(&[0x60 | t, 0x00, 0x00, 0x00, 0x00]).unwrap();
            assert!(!info.keyframe, "type {t}");
        }
        assert_eq!(inspect(&[]), Err(Error::Truncated));
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = inspect(&data);
            let _ = is_keyframe(&data);
        }
    }
}
