//! What Prism forwards: codecs, RTX, RTCP feedback and RTP header extensions, and the rules
//! that decide whether an offered payload type or extension is one of them.
//!
//! An SFU never decodes, so "supported" means: the forwarder can find keyframes and layers
//! in the payload (`forwarder/src/codec`), and the feedback it needs (NACK, PLI/FIR,
//! transport-wide CC) is there. H.264 is limited to packetization-mode 1 and the
//! constrained-baseline profile (`42e0xx`), which every browser can decode; RTX is
//! accepted only for a payload type that is itself accepted.

use super::model::{CodecParams, MediaKind};

/// Header extension URIs (RFC 8285 registrations and WebRTC's experiments).
pub mod ext {
    pub const MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
    pub const RID: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
    pub const REPAIRED_RID: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";
    pub const ABS_SEND_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
    pub const TRANSPORT_CC: &str =
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
    pub const AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
}

/// The media codecs Prism forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    Opus,
    Vp8,
    Vp9,
    H264,
    Av1,
}

impl Codec {
    pub fn kind(self) -> MediaKind {
        match self {
            Codec::Opus => MediaKind::Audio,
            _ => MediaKind::Video,
        }
    }
}

/// Whether the header extension `uri` is negotiated for `kind`.
pub fn extension_supported(kind: MediaKind, uri: &str) -> bool {
    match kind {
        MediaKind::Audio => matches!(
            uri,
            ext::MID | ext::AUDIO_LEVEL | ext::ABS_SEND_TIME | ext::TRANSPORT_CC
        ),
        MediaKind::Video => matches!(
            uri,
            ext::MID | ext::RID | ext::REPAIRED_RID | ext::ABS_SEND_TIME | ext::TRANSPORT_CC
        ),
        MediaKind::Application | MediaKind::Other => false,
    }
}

/// Whether the forwarder writes header extension `uri` into what it sends for `kind`:
/// the subscriber's mid, abs-send-time, its transport-wide sequence number, and for audio
/// the publisher's audio level. RID and repaired RID are only read on ingress.
pub fn extension_sendable(kind: MediaKind, uri: &str) -> bool {
    match kind {
        MediaKind::Audio => matches!(
            uri,
            ext::MID | ext::AUDIO_LEVEL | ext::ABS_SEND_TIME | ext::TRANSPORT_CC
        ),
        MediaKind::Video => matches!(uri, ext::MID | ext::ABS_SEND_TIME | ext::TRANSPORT_CC),
        MediaKind::Application | MediaKind::Other => false,
    }
}

/// Whether an `a=rtcp-fb` value (`nack`, `nack pli`, `ccm fir`, `goog-remb`,
/// `transport-cc`) is one Prism acts on for `kind`.
pub fn feedback_supported(kind: MediaKind, fb: &str) -> bool {
    let fb = fb.trim();
    match kind {
        MediaKind::Audio => fb == "transport-cc",
        MediaKind::Video => matches!(
            fb,
            "nack" | "nack pli" | "ccm fir" | "goog-remb" | "transport-cc"
        ),
        MediaKind::Application | MediaKind::Other => false,
    }
}

/// The Prism codec an offered payload type is, if Prism forwards it as offered.
pub fn classify(kind: MediaKind, c: &CodecParams) -> Option<Codec> {
    let name = c.name.to_ascii_lowercase();
    let codec = match (kind, name.as_str(), c.clock_rate) {
        (MediaKind::Audio, "opus", 48000) if c.channels.unwrap_or(2) == 2 => Codec::Opus,
        (MediaKind::Video, "vp8", 90000) => Codec::Vp8,
        (MediaKind::Video, "vp9", 90000) if c.fmtp_param("profile-id").is_none_or(|p| p == "0") => {
            Codec::Vp9
        }
        (MediaKind::Video, "h264", 90000) if h264_ok(c) => Codec::H264,
        (MediaKind::Video, "av1", 90000) if c.fmtp_param("profile").is_none_or(|p| p == "0") => {
            Codec::Av1
        }
        _ => return None,
    };
    Some(codec)
}

fn h264_ok(c: &CodecParams) -> bool {
    let mode_one = c.fmtp_param("packetization-mode") == Some("1");
    let constrained_baseline = c.fmtp_param("profile-level-id").is_some_and(|p| {
        p.len() == 6 && p.get(..4).is_some_and(|h| h.eq_ignore_ascii_case("42e0"))
    });
    mode_one && constrained_baseline
}

/// Whether `c` is an RTX payload type (`rtx/90000` or `rtx/48000`).
pub fn is_rtx(c: &CodecParams) -> bool {
    c.is_rtx()
}

/// One codec of a server-side offer: its payload type, rtpmap, fmtp and feedback, and the
/// payload type of its RTX stream (video only). Payload types follow Chrome's numbering so
/// that a forwarded stream rarely needs its payload type rewritten.
fn entry(pt: u8, name: &str, rate: u32, ch: Option<u32>, fmtp: &str, video: bool) -> CodecParams {
    let rtcp_fb = if video {
        ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    } else {
        vec!["transport-cc".to_owned()]
    };
    CodecParams {
        pt,
        name: name.to_owned(),
        clock_rate: rate,
        channels: ch,
        fmtp: fmtp.to_owned(),
        rtcp_fb,
    }
}

fn rtx(pt: u8, apt: u8) -> CodecParams {
    CodecParams {
        pt,
        name: "rtx".to_owned(),
        clock_rate: 90000,
        channels: None,
        fmtp: format!("apt={apt}"),
        rtcp_fb: Vec::new(),
    }
}

/// Every codec Prism offers for `kind`, RTX right after the codec it repairs.
pub fn default_codecs(kind: MediaKind) -> Vec<CodecParams> {
    match kind {
        MediaKind::Audio => vec![entry(
            111,
            "opus",
            48000,
            Some(2),
            "minptime=10;useinbandfec=1",
            false,
        )],
        MediaKind::Video => vec![
            entry(96, "VP8", 90000, None, "", true),
            rtx(97, 96),
            entry(98, "VP9", 90000, None, "profile-id=0", true),
            rtx(99, 98),
            entry(
                106,
                "H264",
                90000,
                None,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
                true,
            ),
            rtx(107, 106),
            entry(45, "AV1", 90000, None, "", true),
            rtx(46, 45),
        ],
        MediaKind::Application | MediaKind::Other => Vec::new(),
    }
}

/// The header extensions Prism offers on a section it sends on: [`default_extmaps`]
/// without the receive-only ones (RID, repaired RID).
pub fn sending_extmaps(kind: MediaKind) -> Vec<(u16, String)> {
    let mut list = default_extmaps(kind);
    list.retain(|(_, uri)| extension_sendable(kind, uri));
    list
}

/// The header extensions Prism offers for `kind`, with Chrome's ids. An id names the same
/// extension in every kind, as BUNDLE requires.
pub fn default_extmaps(kind: MediaKind) -> Vec<(u16, String)> {
    let list: &[(u16, &str)] = match kind {
        MediaKind::Audio => &[
            (1, ext::AUDIO_LEVEL),
            (2, ext::ABS_SEND_TIME),
            (3, ext::TRANSPORT_CC),
            (4, ext::MID),
        ],
        MediaKind::Video => &[
            (2, ext::ABS_SEND_TIME),
            (3, ext::TRANSPORT_CC),
            (4, ext::MID),
            (10, ext::RID),
            (11, ext::REPAIRED_RID),
        ],
        MediaKind::Application | MediaKind::Other => &[],
    };
    list.iter().map(|(id, u)| (*id, (*u).to_owned())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, rate: u32, fmtp: &str) -> CodecParams {
        CodecParams {
            pt: 100,
            name: name.into(),
            clock_rate: rate,
            channels: None,
            fmtp: fmtp.into(),
            rtcp_fb: vec![],
        }
    }

    #[test]
    fn classification() {
        let v = MediaKind::Video;
        assert_eq!(classify(v, &c("VP8", 90000, "")), Some(Codec::Vp8));
        assert_eq!(classify(v, &c("vp9", 90000, "profile-id=2")), None);
        assert_eq!(
            classify(
                v,
                &c(
                    "H264",
                    90000,
                    "profile-level-id=42e01f;packetization-mode=1"
                )
            ),
            Some(Codec::H264)
        );
        assert_eq!(
            classify(
                v,
                &c(
                    "H264",
                    90000,
                    "profile-level-id=42e01f;packetization-mode=0"
                )
            ),
            None
        );
        assert_eq!(
            classify(
                v,
                &c(
                    "H264",
                    90000,
                    "profile-level-id=64001f;packetization-mode=1"
                )
            ),
            None
        );
        assert_eq!(
            classify(v, &c("AV1", 90000, "level-idx=5;profile=0;tier=0")),
            Some(Codec::Av1)
        );
        assert_eq!(
            classify(MediaKind::Audio, &c("opus", 48000, "")),
            Some(Codec::Opus)
        );
        assert_eq!(classify(MediaKind::Audio, &c("PCMU", 8000, "")), None);
        assert_eq!(classify(MediaKind::Audio, &c("VP8", 90000, "")), None);
    }
}
