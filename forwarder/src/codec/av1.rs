//! AV1 RTP payload inspection (AV1 RTP specification v1.0, §4.4–4.5): the aggregation
//! header, a safe walk over the OBU elements it announces, and keyframe/layer detection.
//!
//! Invariants: every LEB128 length is bounded (at most 8 bytes, value checked against the
//! bytes left) before it is used, and the walk honours `W` — with `W = 0` every element has
//! a length, otherwise only the first `W - 1` do and the last runs to the end of the packet.
//! A continuation fragment (`Z = 1`) has no OBU header and is never read as one. Nothing is
//! allocated.

use super::PayloadInfo;
use crate::wire::{Error, Result};

const Z_BIT: u8 = 0x80;
const Y_BIT: u8 = 0x40;
const N_BIT: u8 = 0x08;

const OBU_SEQUENCE_HEADER: u8 = 1;
const OBU_TEMPORAL_DELIMITER: u8 = 2;
const OBU_FRAME_HEADER: u8 = 3;
const OBU_METADATA: u8 = 5;
const OBU_FRAME: u8 = 6;

/// The aggregation header's fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggregationHeader {
    /// `Z`: the first OBU element continues a fragment from the previous packet.
    pub continues: bool,
    /// `Y`: the last OBU element continues in the next packet.
    pub will_continue: bool,
    /// `W`: number of OBU elements (0 = each has a length field, count unknown).
    pub element_count: u8,
    /// `N`: first packet of a coded video sequence.
    pub new_sequence: bool,
}

impl AggregationHeader {
    pub fn parse(byte: u8) -> Self {
        Self {
            continues: byte & Z_BIT != 0,
            will_continue: byte & Y_BIT != 0,
            element_count: (byte >> 4) & 0x03,
            new_sequence: byte & N_BIT != 0,
        }
    }
}

/// An OBU header (AV1 spec §5.3.2), with the extension's layer ids when present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObuHeader {
    pub obu_type: u8,
    pub temporal_id: Option<u8>,
    pub spatial_id: Option<u8>,
}

impl ObuHeader {
    /// Parses the header at the start of an OBU element.
    pub fn parse(obu: &[u8]) -> Result<Self> {
        let h = obu.first().copied().ok_or(Error::Truncated)?;
        if h & 0x80 != 0 {
            return Err(Error::BadField); // obu_forbidden_bit
        }
        let mut header = ObuHeader {
            obu_type: (h >> 3) & 0x0f,
            ..ObuHeader::default()
        };
        if h & 0x04 != 0 {
            let ext = obu.get(1).copied().ok_or(Error::Truncated)?;
            header.temporal_id = Some(ext >> 5);
            header.spatial_id = Some((ext >> 3) & 0x03);
        }
        Ok(header)
    }
}

/// Reads an unsigned LEB128 (AV1 spec §4.10.5): at most 8 bytes, value below 2^32.
/// Returns the value and the number of bytes it occupied.
fn leb128(data: &[u8]) -> Result<(usize, usize)> {
    let mut value: u64 = 0;
    for i in 0..8 {
        let b = data.get(i).copied().ok_or(Error::Truncated)?;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let value = u32::try_from(value).map_err(|_| Error::BadLength)?;
            return Ok((value as usize, i + 1));
        }
    }
    Err(Error::BadLength)
}

/// Calls `f(index, element)` for every OBU element in the packet, validating the layout
/// completely before returning `Ok`.
fn for_each_element(
    payload: &[u8],
    mut f: impl FnMut(usize, &[u8]) -> Result<()>,
) -> Result<AggregationHeader> {
    let agg = AggregationHeader::parse(payload.first().copied().ok_or(Error::Truncated)?);
    let mut rest = payload.get(1..).unwrap_or(&[]);
    let count = usize::from(agg.element_count);
    let mut index = 0;
    while !rest.is_empty() {
        let last = count != 0 && index + 1 == count;
        let element;
        if last {
            element = rest;
            rest = &[];
        } else {
            let (len, used) = leb128(rest)?;
            let body = rest.get(used..).unwrap_or(&[]);
            element = body.get(..len).ok_or(Error::Truncated)?;
            rest = body.get(len..).unwrap_or(&[]);
        }
        if element.is_empty() {
            return Err(Error::BadLength);
        }
        f(index, element)?;
        index += 1;
    }
    if index == 0 || (count != 0 && index < count) {
        return Err(Error::Truncated);
    }
    Ok(agg)
}

/// The forwarder's summary of one AV1 payload.
///
/// `keyframe`: `N = 1` (a new coded video sequence), `Z = 0`, and the packet carries a
/// sequence header or its first OBU starts a frame (`OBU_FRAME` / `OBU_FRAME_HEADER`).
/// `start_of_frame`: `Z = 0` and the first OBU is one that precedes or opens a frame.
/// `temporal`/`spatial` come from the first OBU with an extension header.
pub fn inspect(payload: &[u8]) -> Result<PayloadInfo> {
    let mut first_type: Option<u8> = None;
    let mut seq_header = false;
    let mut layers: Option<ObuHeader> = None;
    let continues = payload.first().is_some_and(|b| b & Z_BIT != 0);
    let agg = for_each_element(payload, |index, element| {
        if index == 0 && continues {
            return Ok(()); // a fragment's tail has no OBU header
        }
        let h = ObuHeader::parse(element)?;
        first_type.get_or_insert(h.obu_type);
        seq_header |= h.obu_type == OBU_SEQUENCE_HEADER;
        if layers.is_none() && h.temporal_id.is_some() {
            layers = Some(h);
        }
        Ok(())
    })?;
    let first_is_frame = matches!(first_type, Some(OBU_FRAME | OBU_FRAME_HEADER));
    let opens_frame = first_is_frame
        || matches!(
            first_type,
            Some(OBU_SEQUENCE_HEADER | OBU_TEMPORAL_DELIMITER | OBU_METADATA)
        );
    Ok(PayloadInfo {
        keyframe: agg.new_sequence && !agg.continues && (seq_header || first_is_frame),
        start_of_frame: !agg.continues && opens_frame,
        temporal: layers.and_then(|h| h.temporal_id),
        spatial: layers.and_then(|h| h.spatial_id),
        layer_sync: false,
    })
}

/// True when `payload` starts a keyframe; malformed payloads are not keyframes.
pub fn is_keyframe(payload: &[u8]) -> bool {
    inspect(payload).is_ok_and(|i| i.keyframe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // OBU headers: type << 3, plus 0x04 when an extension byte follows.
    const SEQ: u8 = OBU_SEQUENCE_HEADER << 3; // 0x08
    const FRAME: u8 = OBU_FRAME << 3; // 0x30
    const TILE_GROUP: u8 = 4 << 3; // 0x20

    #[test]
    fn keyframe_with_w2_seq_header_and_frame() {
        let payload = [
            0x28, // Z=0 Y=0 W=2 N=1
            0x03,
            SEQ,
            0x00,
            0x00, // element 1: LEB128 length 3
            FRAME | 0x04,
            0x28,
            0x10,
            0x00, // element 2 (no length): ext T=1 S=1
        ];
        let info = inspect(&payload).unwrap();
        assert!(info.keyframe && info.start_of_frame);
        assert_eq!((info.temporal, info.spatial), (Some(1), Some(1)));
    }

    #[test]
    fn w0_elements_all_have_lengths() {
        let payload = [
            0x08, // Z=0 Y=0 W=0 N=1
            0x02, SEQ, 0x00, // length 2
            0x02, FRAME, 0x00, // length 2
        ];
        assert!(is_keyframe(&payload));
        // W=0 but the second length runs past the end.
        assert_eq!(
            inspect(&[0x08, 0x02, SEQ, 0x00, 0x05, FRAME]),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn frame_without_new_sequence_is_not_keyframe() {
        // Z=0 Y=0 W=1 N=0: one OBU_FRAME.
        let info = inspect(&[0x10, FRAME, 0x00]).unwrap();
        assert!(!info.keyframe && info.start_of_frame);
        assert_eq!(info.temporal, None);
    }

    #[test]
    fn continuation_is_not_a_start() {
        // Z=1 Y=1 W=1 N=1: the only element is a fragment tail; its first byte would
        // look like a sequence header but must not be read as one.
        let info = inspect(&[0xd8, SEQ, 0x00]).unwrap();
        assert!(!info.keyframe && !info.start_of_frame);
        // Z=1 W=2: tail of a fragment, then a tile group with ext T=2 S=0.
        let info = inspect(&[0xa0, 0x01, 0xff, TILE_GROUP | 0x04, 0x40]).unwrap();
        assert!(!info.start_of_frame);
        assert_eq!((info.temporal, info.spatial), (Some(2), Some(0)));
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert_eq!(inspect(&[]), Err(Error::Truncated));
        // Aggregation header only.
        assert_eq!(inspect(&[0x10]), Err(Error::Truncated));
        // W=3 but only one element.
        assert_eq!(inspect(&[0x30, 0x01, FRAME]), Err(Error::Truncated));
        // Forbidden bit set in the OBU header.
        assert_eq!(inspect(&[0x10, 0x80]), Err(Error::BadField));
        // Extension flag without the extension byte.
        assert_eq!(inspect(&[0x10, FRAME | 0x04]), Err(Error::Truncated));
        // Zero-length element.
        assert_eq!(inspect(&[0x00, 0x00]), Err(Error::BadLength));
        // LEB128 longer than 8 bytes.
        assert_eq!(
            inspect(&[0x00, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(Error::BadLength)
        );
    }

    #[test]
    fn leb128_multi_byte() {
        assert_eq!(leb128(&[0x80, 0x01]), Ok((128, 2)));
        assert_eq!(
            leb128(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
            Ok((u32::MAX as usize, 5))
        );
        assert_eq!(
            leb128(&[0x80, 0x80, 0x80, 0x80, 0x10]),
            Err(Error::BadLength)
        );
        assert_eq!(leb128(&[0x80]), Err(Error::Truncated));
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = inspect(&data);
            let _ = is_keyframe(&data);
            if let Some(&b) = data.first() {
                let _ = AggregationHeader::parse(b);
            }
            let _ = ObuHeader::parse(&data);
        }
    }
}
