//! Codec payload inspection: keyframe and layer detection, and the in-place rewriting a
//! decoder needs to see one continuous stream across a simulcast switch. Nothing here
//! decodes media; it reads payload descriptors and the first bytes of NAL/OBU units.
//!
//! Inputs are RTP *payloads*: the bytes after the RTP header and extensions, with padding
//! already removed. Every parser is bounds-checked, allocation-free and total: malformed
//! input yields a [`crate::wire::Error`], never a panic.

pub mod av1;
pub mod h264;
pub mod vp8;
pub mod vp9;

use crate::wire::Result;

/// The payload formats the forwarder distinguishes. `Other` covers anything it forwards
/// without looking inside (e.g. RED, G.711).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Opus,
    Vp8,
    Vp9,
    H264,
    Av1,
    Other,
}

/// What the forwarder needs to know about one packet's payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PayloadInfo {
    /// The packet is the first packet of a keyframe: a decoder can start here.
    pub keyframe: bool,
    /// The packet begins a (layer) frame, keyframe or not.
    pub start_of_frame: bool,
    /// Temporal layer id, when the payload carries one.
    pub temporal: Option<u8>,
    /// Spatial layer id, when the payload carries one.
    pub spatial: Option<u8>,
    /// The packet is a point where a receiver may switch up to this temporal layer
    /// (VP8 `Y`, VP9 `U`).
    pub layer_sync: bool,
}

/// Inspects one RTP payload of `codec`.
///
/// Audio (`Opus`) and `Other` return the default: every audio frame decodes on its own, so
/// audio never waits for a keyframe and `keyframe` stays `false`; the engine must not gate
/// such tracks on it.
pub fn inspect(codec: Codec, payload: &[u8]) -> Result<PayloadInfo> {
    match codec {
        Codec::Opus | Codec::Other => Ok(PayloadInfo::default()),
        Codec::Vp8 => vp8::inspect(payload),
        Codec::Vp9 => vp9::inspect(payload),
        Codec::H264 => h264::inspect(payload),
        Codec::Av1 => av1::inspect(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn audio_never_keyframe() {
        let info = inspect(Codec::Opus, &[0xfc, 0xff, 0xfe]).unwrap();
        assert_eq!(info, PayloadInfo::default());
        assert_eq!(inspect(Codec::Other, &[]).unwrap(), PayloadInfo::default());
    }

    #[test]
    fn dispatches_to_video_parsers() {
        // VP8: S=1, PID=0, no extension; VP8 header P bit 0 -> keyframe.
        let vp8 = inspect(Codec::Vp8, &[0x10, 0x00, 0x9d, 0x01, 0x2a]).unwrap();
        assert!(vp8.keyframe && vp8.start_of_frame);
        // VP9: B=1, P=0, no L -> keyframe.
        let vp9 = inspect(Codec::Vp9, &[0x08, 0x00]).unwrap();
        assert!(vp9.keyframe);
        // H.264: single NAL IDR (type 5, NRI 3).
        assert!(inspect(Codec::H264, &[0x65, 0x88]).unwrap().keyframe);
        // AV1: N=1, W=1, one sequence header OBU.
        assert!(inspect(Codec::Av1, &[0x18, 0x08, 0x00]).unwrap().keyframe);
        // Truncated inputs surface as errors, not panics.
        assert!(inspect(Codec::Vp8, &[]).is_err());
        assert!(inspect(Codec::H264, &[]).is_err());
    }

    proptest! {
        #[test]
        fn inspect_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            for codec in [Codec::Opus, Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1,
                          Codec::Other] {
                let _ = inspect(codec, &data);
            }
        }
    }
}
