//! What every signaling front end (WHIP/WHEP, the LiveKit protocol) does the same way when
//! it turns a negotiated session description into media-plane commands: random ICE
//! credentials and SSRCs, codec names, the published layers of an offered section, and
//! the remote transport parameters of a description.

use std::sync::atomic::{AtomicU64, Ordering};

use prism_proto::control as pb;

use crate::rtc::RtcError;
use crate::sdp::codecs::ext;
use crate::sdp::{
    Codec, CodecParams, MediaKind, MediaSection, SectionChoice, SessionOffer, SetupRole,
};

/// Ids of forwarder objects (rooms, transports, tracks, down tracks), unique across every
/// front end of this process so that they can share the media plane, and across nodes: a
/// room spanning nodes creates objects in another node's forwarder, beside that node's own.
/// Each process counts up from a random base (a multiple of 2^32 below 2^53, so ids stay
/// exact in JSON numbers), so two nodes' ids collide only if their bases are within as
/// many ids as one of them ever makes.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A fresh forwarder object id, never 0.
pub fn next_id() -> u64 {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    if id != 0 {
        return id;
    }
    // The first call: move the counter to a random base (and take its first id). Calls
    // racing with this one got 1, 2, ... which stay unique: the base is at least 2^32.
    let mut b = [0u8; 4];
    let r = if getrandom::fill(&mut b).is_ok() {
        u32::from_le_bytes(b)
    } else {
        std::process::id()
    };
    let base = (u64::from(r % (1 << 20)) + 1) << 32;
    NEXT_ID.fetch_add(base + 1, Ordering::Relaxed) + base
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    if getrandom::fill(&mut bytes).is_err() {
        // No entropy source: fall back to the clock and a counter, still unique per call.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            ^ u128::from(next_id());
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (t >> (i % 16 * 8)) as u8 ^ i as u8;
        }
    }
    bytes
}

fn random_from(alphabet: &[u8], len: usize) -> String {
    random_bytes(len)
        .iter()
        .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
        .collect()
}

/// Random characters from the ICE alphabet (RFC 8839 ice-char).
pub fn random_ice_string(len: usize) -> String {
    random_from(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        len,
    )
}

/// Random letters and digits (session ids, LiveKit sids).
pub fn random_alnum(len: usize) -> String {
    random_from(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        len,
    )
}

/// A random non-zero 32-bit value (SSRCs, SDP session ids).
pub fn random_u32() -> u32 {
    let b = random_bytes(4);
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) | 1
}

/// The SDP codec of a codec name, for the codecs Prism forwards.
pub fn sdp_codec(name: &str) -> Option<Codec> {
    match name.to_ascii_lowercase().as_str() {
        "opus" => Some(Codec::Opus),
        "vp8" => Some(Codec::Vp8),
        "vp9" => Some(Codec::Vp9),
        "h264" => Some(Codec::H264),
        "av1" => Some(Codec::Av1),
        _ => None,
    }
}

/// The media plane's codec kind of a codec name.
pub fn codec_kind(name: &str) -> Option<pb::CodecKind> {
    match name.to_ascii_lowercase().as_str() {
        "opus" => Some(pb::CodecKind::Opus),
        "vp8" => Some(pb::CodecKind::Vp8),
        "vp9" => Some(pb::CodecKind::Vp9),
        "h264" => Some(pb::CodecKind::H264),
        "av1" => Some(pb::CodecKind::Av1),
        _ => None,
    }
}

/// `kind/Name` as LiveKit writes MIME types ("audio/opus", "video/VP8").
pub fn mime_type(kind: MediaKind, codec: &CodecParams) -> String {
    let name = match codec.name.to_ascii_lowercase().as_str() {
        "opus" => "opus".to_owned(),
        "vp8" => "VP8".to_owned(),
        "vp9" => "VP9".to_owned(),
        "h264" => "H264".to_owned(),
        "av1" => "AV1".to_owned(),
        _ => codec.name.clone(),
    };
    let k = if kind == MediaKind::Video {
        "video"
    } else {
        "audio"
    };
    format!("{k}/{name}")
}

/// The peer's side of a WebRTC transport, from its offer or answer.
#[derive(Clone, Debug)]
pub struct RemoteTransport {
    pub ufrag: String,
    pub pwd: String,
    /// "sha-256 AB:CD:…", as the forwarder takes it.
    pub fingerprint: String,
    /// Whether we are the DTLS client: the peer said `a=setup:passive`.
    pub dtls_client: bool,
}

impl RemoteTransport {
    /// The command creating our side of the transport, with our ICE credentials.
    pub fn create(
        self,
        room_id: u64,
        transport_id: u64,
        local_ufrag: &str,
        local_pwd: &str,
    ) -> pb::CreateWebRtcTransport {
        pb::CreateWebRtcTransport {
            room_id,
            transport_id,
            local_ufrag: local_ufrag.to_owned(),
            local_pwd: local_pwd.to_owned(),
            remote_ufrag: self.ufrag,
            remote_pwd: self.pwd,
            remote_fingerprint: self.fingerprint,
            dtls_client: self.dtls_client,
        }
    }
}

/// The ICE credentials, fingerprint and DTLS role of the first usable section.
pub fn remote_transport(desc: &SessionOffer) -> Result<RemoteTransport, RtcError> {
    let first = desc
        .media
        .iter()
        .find(|m| !m.is_rejected())
        .ok_or_else(|| RtcError::BadDescription("the description has no media".into()))?;
    let (Some(ufrag), Some(pwd), Some(fp)) = (&first.ice_ufrag, &first.ice_pwd, &first.fingerprint)
    else {
        return Err(RtcError::BadDescription(
            "the description lacks ICE credentials or a fingerprint".into(),
        ));
    };
    if !fp.algorithm.eq_ignore_ascii_case("sha-256") || fp.value.len() != 32 {
        return Err(RtcError::BadDescription(
            "only sha-256 certificate fingerprints are supported".into(),
        ));
    }
    let hex: Vec<String> = fp.value.iter().map(|b| format!("{b:02X}")).collect();
    Ok(RemoteTransport {
        ufrag: ufrag.clone(),
        pwd: pwd.clone(),
        fingerprint: format!("sha-256 {}", hex.join(":")),
        dtls_client: first.setup == Some(SetupRole::Passive),
    })
}

/// The `AddTrack` command for a section the peer sends on, as negotiated in `choice`:
/// simulcast layers announced by RID (browsers, libwebrtc SDKs; the forwarder learns their
/// SSRCs from the mid/rid header extensions), or one encoding with its SSRC announced
/// (aiortc, ffmpeg, OBS). `None` when the section carries nothing Prism forwards.
///
/// Where the answer accepted RTX for the codec (`choice.rtx_pt`), the forwarder is given
/// the RTX payload type, the RTX SSRC paired with the layer's by `a=ssrc-group:FID`, and
/// the repaired-rtp-stream-id extension id, from which it learns the RTX SSRCs of RID
/// layers.
pub fn add_track_for(
    section: &MediaSection,
    choice: &SectionChoice,
    room_id: u64,
    transport_id: u64,
    track_id: u64,
) -> Result<Option<pb::AddTrack>, RtcError> {
    if !choice.direction.receives() || !matches!(section.kind, MediaKind::Audio | MediaKind::Video)
    {
        return Ok(None);
    }
    let Some(codec) = choice.codec.as_ref() else {
        return Ok(None);
    };
    let Some(kind) = codec_kind(&codec.name) else {
        return Ok(None);
    };
    // (media, RTX) SSRC pairs.
    let fid: Vec<(u32, u32)> = section
        .ssrc_groups
        .iter()
        .filter(|g| g.semantics == "FID")
        .filter_map(|g| Some((*g.ssrcs.first()?, *g.ssrcs.get(1)?)))
        .collect();
    let rtx_of = |ssrc: u32| {
        choice
            .rtx_pt
            .and_then(|_| fid.iter().find(|(m, _)| *m == ssrc))
            .map_or(0, |(_, r)| *r)
    };
    let ext_id = |uri: &str| {
        choice
            .extmaps
            .iter()
            .find(|(_, u)| u == uri)
            .map_or(0, |(id, _)| u32::from(*id))
    };
    let rid_ext_id = ext_id("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id");
    let mid_ext_id = ext_id("urn:ietf:params:rtp-hdrext:sdes:mid");
    let repaired_rid_ext_id = choice.rtx_pt.map_or(0, |_| {
        ext_id("urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id")
    });
    let rids = spatial_order(section.send_rids().collect());
    let layers: Vec<pb::Layer> = if !rids.is_empty() && rid_ext_id != 0 {
        rids.iter()
            .enumerate()
            .map(|(i, r)| pb::Layer {
                ssrc: 0,
                rid: (*r).to_string(),
                spatial: i as u32,
                rtx_ssrc: 0,
            })
            .collect()
    } else if let Some(ssrc) = section
        .ssrcs
        .iter()
        .map(|s| s.ssrc)
        .find(|s| !fid.iter().any(|(_, r)| r == s))
    {
        vec![pb::Layer {
            ssrc,
            rid: String::new(),
            spatial: 0,
            rtx_ssrc: rtx_of(ssrc),
        }]
    } else {
        return Err(RtcError::BadDescription(format!(
            "section {} announces neither SSRCs nor RIDs with the rid extension",
            section.mid
        )));
    };
    Ok(Some(pb::AddTrack {
        mid: section.mid.clone(),
        mid_ext_id,
        rid_ext_id,
        room_id,
        transport_id,
        track_id,
        kind: if section.kind == MediaKind::Video {
            pb::MediaKind::Video as i32
        } else {
            pb::MediaKind::Audio as i32
        },
        codec: Some(pb::Codec {
            kind: kind as i32,
            payload_type: u32::from(codec.pt),
            clock_rate: codec.clock_rate,
        }),
        layers,
        nack: Some(codec.rtcp_fb.iter().any(|f| f == "nack")),
        rtx_payload_type: choice.rtx_pt.map_or(0, u32::from),
        repaired_rid_ext_id,
    }))
}

/// Simulcast rids, lowest resolution first: spatial layer `i` is the `i`-th. Subscribers
/// (and recordings) ask for layer 2 as "the best", and the forwarder settles for the
/// closest lower layer, so indices must grow with resolution. LiveKit's SDKs name their
/// layers `q`, `h` and `f` (quarter, half and full resolution) but do not all offer them
/// in that order: libwebrtc in the Rust SDK (under the Python SDK) offers `h` before `q`,
/// which once made the lower layer look like the higher one. Those names are ranked by
/// what they mean; other rids keep the offer's order (browsers list them lowest first).
pub(crate) fn spatial_order(mut rids: Vec<&str>) -> Vec<&str> {
    const LIVEKIT: [&str; 3] = ["q", "h", "f"];
    let rank = |r: &str| LIVEKIT.iter().position(|l| *l == r);
    if rids.iter().all(|r| rank(r).is_some()) {
        rids.sort_by_key(|r| rank(r));
    }
    rids
}

/// The transport's header extension ids from what an answer chose (one id per extension
/// across the bundle, which the answer guarantees), and whether the peer takes
/// transport-cc feedback: it negotiated the extension and `a=rtcp-fb:… transport-cc` on
/// a section it sends on.
pub fn header_extensions(
    room_id: u64,
    transport_id: u64,
    choices: &[SectionChoice],
) -> pb::SetHeaderExtensions {
    let ids = extension_ids(choices.iter().flat_map(|c| &c.extmaps));
    let feedback = choices.iter().any(|c| {
        c.direction.receives()
            && c.extmaps.iter().any(|(_, u)| u == ext::TRANSPORT_CC)
            && c.codec
                .as_ref()
                .is_some_and(|k| k.rtcp_fb.iter().any(|f| f == "transport-cc"))
    });
    pb::SetHeaderExtensions {
        room_id,
        transport_id,
        ids: Some(ids),
        transport_cc_feedback: feedback,
    }
}

/// The control form of a list of `(id, uri)` extmaps (the first id of each extension).
pub fn extension_ids<'a>(
    extmaps: impl Iterator<Item = &'a (u16, String)> + Clone,
) -> pb::RtpHeaderExtensions {
    let id = |uri: &str| {
        extmaps
            .clone()
            .find(|(_, u)| u == uri)
            .map_or(0, |(id, _)| u32::from(*id))
    };
    pb::RtpHeaderExtensions {
        mid: id(ext::MID),
        rid: id(ext::RID),
        repaired_rid: id(ext::REPAIRED_RID),
        abs_send_time: id(ext::ABS_SEND_TIME),
        transport_cc: id(ext::TRANSPORT_CC),
        audio_level: id(ext::AUDIO_LEVEL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::Direction;

    #[test]
    fn livekit_rids_are_ordered_by_resolution_others_as_offered() {
        // The Python (Rust) SDK offers its half-resolution layer first.
        assert_eq!(spatial_order(vec!["h", "q"]), ["q", "h"]);
        assert_eq!(spatial_order(vec!["f", "h", "q"]), ["q", "h", "f"]);
        assert_eq!(spatial_order(vec!["q", "h", "f"]), ["q", "h", "f"]);
        assert_eq!(spatial_order(vec!["hi", "lo"]), ["hi", "lo"]);
        assert_eq!(spatial_order(vec!["2", "0", "1"]), ["2", "0", "1"]);
    }

    fn choice(direction: Direction, fb: &[&str], extmaps: &[(u16, &str)]) -> SectionChoice {
        SectionChoice {
            mid: "0".into(),
            kind: MediaKind::Video,
            direction,
            codec: Some(CodecParams {
                pt: 96,
                name: "VP8".into(),
                clock_rate: 90000,
                channels: None,
                fmtp: String::new(),
                rtcp_fb: fb.iter().map(|s| (*s).to_owned()).collect(),
            }),
            rtx_pt: None,
            extmaps: extmaps.iter().map(|(i, u)| (*i, (*u).to_owned())).collect(),
        }
    }

    #[test]
    fn feedback_needs_the_extension_and_rtcp_fb_on_a_receiving_section() {
        let both = [
            (2, ext::ABS_SEND_TIME),
            (3, ext::TRANSPORT_CC),
            (4, ext::MID),
        ];
        let c = header_extensions(
            1,
            2,
            &[choice(Direction::RecvOnly, &["transport-cc"], &both)],
        );
        let ids = c.ids.unwrap();
        assert_eq!((ids.abs_send_time, ids.transport_cc, ids.mid), (2, 3, 4));
        assert_eq!((ids.rid, ids.audio_level), (0, 0));
        assert!(c.transport_cc_feedback);
        // No rtcp-fb: the publisher would not read our feedback.
        let c = header_extensions(1, 2, &[choice(Direction::RecvOnly, &["nack"], &both)]);
        assert!(!c.transport_cc_feedback);
        // A viewer: we send, it gives feedback; we give none.
        let c = header_extensions(
            1,
            2,
            &[choice(Direction::SendOnly, &["transport-cc"], &both)],
        );
        assert!(!c.transport_cc_feedback);
        assert_eq!(c.ids.unwrap().transport_cc, 3);
    }
}
