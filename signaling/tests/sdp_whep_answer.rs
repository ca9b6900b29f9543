//! Answers that send: a WHEP viewer offers `recvonly` sections and the server attaches the
//! tracks it forwards. Each answer is parsed back and checked for direction, SSRC/msid
//! announcements, the offerer's payload types, header extensions and transport; the
//! [`SectionChoice`]s must agree with the text. Publisher answers are checked for what
//! the choices and the RTX / extension options change.

use std::net::SocketAddr;

use prism_signaling::sdp::codecs::ext;
use prism_signaling::sdp::{
    AnswerBuilder, AnswerTrack, Codec, Direction, MediaKind, SdpError, SectionChoice, ServerParams,
    SessionOffer, SetupRole,
};
use proptest::prelude::*;

/// Captured from aiortc 1.16.0: `addTransceiver("audio"/"video", direction="recvonly")`.
const WHEP: &str = include_str!("fixtures/aiortc_whep_offer.sdp");
/// aiortc publishing (sendonly audio + video, data channel).
const AIORTC: &str = include_str!("fixtures/aiortc_offer.sdp");
const CHROME: &str = include_str!("fixtures/chrome_simulcast_offer.sdp");

fn params() -> ServerParams {
    let cand: SocketAddr = "203.0.113.7:7880".parse().unwrap();
    ServerParams::new("prsm", "prism-ice-password-0123456", [0xAB; 32], vec![cand])
}

fn track(codec: Codec, ssrc: u32, rtx_ssrc: Option<u32>) -> AnswerTrack {
    AnswerTrack {
        ssrc,
        rtx_ssrc,
        cname: "prism-cname".into(),
        stream_id: "PA_alice".into(),
        track_id: format!("TR_{ssrc}"),
        codec,
    }
}

fn opus() -> AnswerTrack {
    track(Codec::Opus, 1111, None)
}

fn vp8() -> AnswerTrack {
    track(Codec::Vp8, 2222, Some(3333))
}

/// Builds with choices, checks that `build` gives the same text, parses the answer back.
fn run(b: &AnswerBuilder<'_>) -> (SessionOffer, String, Vec<SectionChoice>) {
    let (text, choices) = b.build_with_choices().expect("answer builds");
    assert_eq!(b.build().unwrap(), text);
    let ans = SessionOffer::parse(&text).expect("answer parses back");
    assert_eq!(choices.len(), ans.media.len());
    for (c, m) in choices.iter().zip(&ans.media) {
        assert_eq!(c.mid, m.mid);
        assert_eq!(c.kind, m.kind);
        if m.kind == MediaKind::Application || m.is_rejected() {
            continue;
        }
        assert_eq!(c.direction, m.direction, "mid {}", m.mid);
        assert_eq!(c.extmaps, m.extmaps, "mid {}", m.mid);
        if let Some(codec) = &c.codec {
            let answered = m.codec(codec.pt).expect("chosen codec is answered");
            assert_eq!(answered.name, codec.name);
        }
        if let Some(rtx) = c.rtx_pt {
            assert_eq!(m.rtx.get(&rtx), c.codec.as_ref().map(|c| &c.pt));
        }
    }
    (ans, text, choices)
}

/// ICE-lite, BUNDLE of the live mids, credentials, fingerprint and role in every section.
fn check_transport(offer: &SessionOffer, ans: &SessionOffer) {
    assert!(ans.ice_lite);
    let live: Vec<String> = ans
        .media
        .iter()
        .filter(|m| !m.is_rejected())
        .map(|m| m.mid.clone())
        .collect();
    let bundled: Vec<String> = offer
        .bundle
        .iter()
        .filter(|m| live.contains(m))
        .cloned()
        .collect();
    assert_eq!(ans.bundle, bundled);
    for m in ans.media.iter().filter(|m| !m.is_rejected()) {
        assert_eq!(m.port, 7880);
        assert_eq!(m.ice_ufrag.as_deref(), Some("prsm"));
        let fp = m.fingerprint.as_ref().unwrap();
        assert_eq!(
            (fp.algorithm.as_str(), fp.value.as_slice()),
            ("sha-256", &[0xAB; 32][..])
        );
        assert_eq!(m.setup, Some(SetupRole::Passive), "offer said actpass");
        assert_eq!(m.candidates, [("203.0.113.7".to_owned(), 7880)]);
        if m.kind != MediaKind::Application {
            assert!(m.rtcp_mux);
        }
    }
}

fn pts(m: &prism_signaling::sdp::MediaSection) -> Vec<u8> {
    m.codecs.iter().map(|c| c.pt).collect()
}

#[test]
fn whep_offer_is_answered_sendonly_with_the_tracks() {
    let offer = SessionOffer::parse(WHEP).unwrap();
    assert!(offer
        .media
        .iter()
        .all(|m| m.direction == Direction::RecvOnly));
    let p = params();
    let b = AnswerBuilder::new(&offer, &p)
        .send("0", opus())
        .send("1", vp8());
    let (ans, text, choices) = run(&b);
    check_transport(&offer, &ans);
    assert_eq!(ans.bundle, ["0", "1"]);

    let a = &ans.media[0];
    assert_eq!(a.direction, Direction::SendOnly);
    assert_eq!(pts(a), [96], "only opus, under the viewer's payload type");
    assert_eq!(a.codecs[0].name, "opus");
    assert_eq!(a.codecs[0].channels, Some(2));
    assert_eq!(
        a.extmaps,
        [(1, ext::MID.to_owned()), (2, ext::AUDIO_LEVEL.to_owned())],
        "what the forwarder writes on egress"
    );
    assert_eq!(a.msid, Some(("PA_alice".into(), Some("TR_1111".into()))));
    assert_eq!(a.ssrcs.len(), 1);
    assert_eq!(a.ssrcs[0].ssrc, 1111);
    assert_eq!(a.ssrcs[0].cname.as_deref(), Some("prism-cname"));
    assert_eq!(a.ssrcs[0].msid.as_deref(), Some("PA_alice TR_1111"));
    assert!(a.ssrc_groups.is_empty());

    let v = &ans.media[1];
    assert_eq!(v.direction, Direction::SendOnly);
    assert_eq!(pts(v), [97, 98], "VP8 and its RTX, as offered");
    assert_eq!(v.rtx.get(&98), Some(&97));
    assert_eq!(
        v.extmaps,
        [(1, ext::MID.to_owned()), (3, ext::ABS_SEND_TIME.to_owned())]
    );
    assert_eq!(v.ssrc_groups.len(), 1);
    assert_eq!(v.ssrc_groups[0].semantics, "FID");
    assert_eq!(v.ssrc_groups[0].ssrcs, [2222, 3333]);
    let ssrcs: Vec<u32> = v.ssrcs.iter().map(|s| s.ssrc).collect();
    assert_eq!(ssrcs, [2222, 3333]);
    assert!(v
        .ssrcs
        .iter()
        .all(|s| s.cname.as_deref() == Some("prism-cname")
            && s.msid.as_deref() == Some("PA_alice TR_2222")));

    assert!(
        text.contains("a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n"),
        "{text}"
    );
    assert!(text.contains("a=ssrc-group:FID 2222 3333\r\n"));
    assert!(text.contains("a=ssrc:2222 msid:PA_alice TR_2222\r\n"));
    assert!(text.contains("a=msid:PA_alice TR_1111\r\n"));
    assert!(text.contains("a=ice-lite\r\n"));
    assert!(text.contains("a=group:BUNDLE 0 1\r\n"));

    assert_eq!(choices[0].direction, Direction::SendOnly);
    let c = choices[0].codec.as_ref().unwrap();
    assert_eq!((c.pt, c.name.as_str()), (96, "opus"));
    assert_eq!(choices[0].rtx_pt, None);
    assert_eq!(choices[0].extmaps, a.extmaps);
    let c = choices[1].codec.as_ref().unwrap();
    assert_eq!((c.pt, c.name.as_str()), (97, "VP8"));
    assert_eq!(choices[1].rtx_pt, Some(98));
    assert_eq!(choices[1].extmaps, v.extmaps);
}

#[test]
fn h264_track_uses_the_offered_constrained_baseline_payload_type() {
    let offer = SessionOffer::parse(WHEP).unwrap();
    let p = params();
    let b = AnswerBuilder::new(&offer, &p).send("1", track(Codec::H264, 5, Some(6)));
    let (ans, _, choices) = run(&b);
    // 99 is H.264 42001f (not constrained baseline); 101 is 42e01f.
    assert_eq!(pts(&ans.media[1]), [101, 102]);
    assert_eq!(choices[1].codec.as_ref().unwrap().pt, 101);
    assert_eq!(choices[1].rtx_pt, Some(102));
}

#[test]
fn track_without_rtx_ssrc_answers_no_rtx() {
    let offer = SessionOffer::parse(WHEP).unwrap();
    let p = params();
    let b = AnswerBuilder::new(&offer, &p).send("1", track(Codec::Vp8, 2222, None));
    let (ans, text, choices) = run(&b);
    let v = &ans.media[1];
    assert_eq!(pts(v), [97]);
    assert!(v.ssrc_groups.is_empty());
    assert_eq!(v.ssrcs.len(), 1);
    assert_eq!(choices[1].rtx_pt, None);
    assert!(!text.contains("a=ssrc-group"));
}

#[test]
fn rtx_ssrc_is_not_announced_when_the_viewer_offered_no_rtx() {
    let no_rtx: String = WHEP
        .lines()
        .filter(|l| !l.contains("rtx/90000") && !l.contains(" apt="))
        .map(|l| format!("{l}\r\n"))
        .collect::<String>()
        .replace(
            "UDP/TLS/RTP/SAVPF 97 98 99 100 101 102",
            "UDP/TLS/RTP/SAVPF 97 99 101",
        );
    let offer = SessionOffer::parse(&no_rtx).unwrap();
    let p = params();
    let b = AnswerBuilder::new(&offer, &p).send("1", vp8());
    let (ans, _, choices) = run(&b);
    assert_eq!(pts(&ans.media[1]), [97]);
    assert!(ans.media[1].ssrc_groups.is_empty());
    assert_eq!(
        ans.media[1]
            .ssrcs
            .iter()
            .map(|s| s.ssrc)
            .collect::<Vec<_>>(),
        [2222],
        "no RTX SSRC without an RTX payload type"
    );
    assert_eq!(choices[1].rtx_pt, None);
}

#[test]
fn recvonly_section_without_a_track_stays_inactive() {
    let offer = SessionOffer::parse(WHEP).unwrap();
    let p = params();
    let b = AnswerBuilder::new(&offer, &p).send("0", opus());
    let (ans, _, choices) = run(&b);
    check_transport(&offer, &ans);
    assert_eq!(ans.media[0].direction, Direction::SendOnly);
    let v = &ans.media[1];
    assert_eq!(v.direction, Direction::Inactive);
    assert!(v.ssrcs.is_empty() && v.msid.is_none());
    assert_eq!(choices[1].direction, Direction::Inactive);
    assert_eq!(choices[1].codec, None);
    assert_eq!(choices[1].rtx_pt, None);
}

#[test]
fn track_in_a_codec_the_viewer_did_not_offer_is_not_sent() {
    let offer = SessionOffer::parse(WHEP).unwrap();
    let p = params();
    let b = AnswerBuilder::new(&offer, &p).send("1", track(Codec::Av1, 7, Some(8)));
    let (ans, text, choices) = run(&b);
    assert_eq!(ans.media[1].direction, Direction::Inactive);
    assert_eq!(choices[1].codec, None);
    assert!(!text.contains("a=ssrc:7 "), "{text}");
}

#[test]
fn sendrecv_offer_with_a_track_is_answered_sendonly_unless_also_receiving() {
    let sdp = AIORTC.replace("a=sendonly", "a=sendrecv");
    let offer = SessionOffer::parse(&sdp).unwrap();
    let p = params();

    // No track: receive as before.
    let (ans, _, _) = run(&AnswerBuilder::new(&offer, &p));
    assert_eq!(ans.media[1].direction, Direction::RecvOnly);

    let b = AnswerBuilder::new(&offer, &p)
        .send("0", opus())
        .send("1", vp8());
    let (ans, _, choices) = run(&b);
    check_transport(&offer, &ans);
    assert_eq!(ans.media[0].direction, Direction::SendOnly);
    assert_eq!(ans.media[1].direction, Direction::SendOnly);
    assert_eq!(pts(&ans.media[1]), [97, 98]);
    assert_eq!(
        ans.media[1].extmaps,
        [(1, ext::MID.to_owned()), (3, ext::ABS_SEND_TIME.to_owned())]
    );
    assert!(ans.media[2].is_data_channel());
    assert_eq!(choices[2].direction, Direction::SendRecv);
    assert_eq!(choices[2].codec, None);

    let b = AnswerBuilder::new(&offer, &p)
        .send("1", vp8())
        .also_receive("1");
    let (ans, _, choices) = run(&b);
    let v = &ans.media[1];
    assert_eq!(v.direction, Direction::SendRecv);
    assert_eq!(
        pts(v),
        [97, 98, 101, 102],
        "every accepted codec, to receive"
    );
    assert_eq!(
        v.extmaps,
        [(1, ext::MID.to_owned()), (3, ext::ABS_SEND_TIME.to_owned())],
        "receiving keeps the extensions"
    );
    assert_eq!(v.ssrc_groups[0].ssrcs, [2222, 3333]);
    assert_eq!(choices[1].codec.as_ref().unwrap().pt, 97);
    assert_eq!(choices[1].rtx_pt, Some(98));
}

#[test]
fn sending_sections_answer_the_extensions_the_forwarder_writes() {
    // Chrome as a viewer: it offers RID and others the forwarder does not write.
    let sdp: String = CHROME
        .lines()
        .filter(|l| !l.starts_with("a=rid:") && !l.starts_with("a=simulcast:"))
        .map(|l| format!("{l}\r\n"))
        .collect::<String>()
        .replace("a=sendonly", "a=recvonly");
    let offer = SessionOffer::parse(&sdp).unwrap();
    let p = params();
    let b = AnswerBuilder::new(&offer, &p)
        .send("0", opus())
        .send("1", track(Codec::Vp8, 9, None));
    let (ans, _, _) = run(&b);
    assert_eq!(
        ans.media[1].extmaps,
        [
            (2, ext::ABS_SEND_TIME.to_owned()),
            (3, ext::TRANSPORT_CC.to_owned()),
            (4, ext::MID.to_owned())
        ],
        "no RID, no unknown extensions"
    );
    assert!(ans.media[0]
        .extmaps
        .contains(&(1, ext::AUDIO_LEVEL.to_owned())));
    // `with` keeps the receive-only ones too.
    let (ans, _, _) = run(&b.with_header_extensions_for("1"));
    assert!(ans.media[1].extmaps.iter().any(|(_, u)| u == ext::RID));

    // `without` wins, and also applies where the server receives.
    let offer = SessionOffer::parse(WHEP).unwrap();
    let b = AnswerBuilder::new(&offer, &p)
        .send("0", opus())
        .with_header_extensions_for("0")
        .without_header_extensions_for("0");
    let (ans, _, _) = run(&b);
    assert!(ans.media[0].extmaps.is_empty());

    let publisher = SessionOffer::parse(AIORTC).unwrap();
    let b = AnswerBuilder::new(&publisher, &p).without_header_extensions_for("1");
    let (ans, _, _) = run(&b);
    assert_eq!(
        ans.media[0].extmaps,
        [(1, ext::MID.to_owned()), (2, ext::AUDIO_LEVEL.to_owned())],
        "unchanged"
    );
    assert!(ans.media[1].extmaps.is_empty());
}

#[test]
fn one_id_per_extension_across_the_bundle() {
    // The video section offers mid under another id, and reuses id 2 for abs-send-time,
    // which audio gave to the audio level: both are left out of the video answer.
    let sdp = WHEP.replacen(
        "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=extmap:3",
        "a=extmap:5 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=extmap:2",
        1,
    );
    assert_ne!(sdp, WHEP);
    // Only the video section has mid followed by abs-send-time.
    let offer = SessionOffer::parse(&sdp).unwrap();
    assert_eq!(offer.media[1].extmaps.len(), 2);
    let p = params();
    let b = AnswerBuilder::new(&offer, &p)
        .send("0", opus())
        .send("1", vp8());
    let (ans, _, choices) = AnswerBuilder::build_with_choices(&b)
        .map(|(t, c)| (SessionOffer::parse(&t).unwrap(), t, c))
        .unwrap();
    assert_eq!(
        ans.media[0].extmaps,
        [(1, ext::MID.to_owned()), (2, ext::AUDIO_LEVEL.to_owned())]
    );
    assert!(
        ans.media[1].extmaps.is_empty(),
        "{:?}",
        ans.media[1].extmaps
    );
    assert!(choices[1].extmaps.is_empty());
}

#[test]
fn accept_rtx_false_removes_rtx_from_the_answer() {
    let p = params();
    for fixture in [AIORTC, CHROME] {
        let offer = SessionOffer::parse(fixture).unwrap();
        let (with, _, _) = run(&AnswerBuilder::new(&offer, &p));
        assert!(!with.media[1].rtx.is_empty());

        let b = AnswerBuilder::new(&offer, &p).accept_rtx(false);
        let (ans, text, choices) = run(&b);
        check_transport(&offer, &ans);
        assert!(ans.media.iter().all(|m| m.rtx.is_empty()));
        assert!(ans
            .media
            .iter()
            .flat_map(|m| &m.codecs)
            .all(|c| !c.is_rtx()));
        assert!(!text.contains("rtx/90000"));
        assert!(choices.iter().all(|c| c.rtx_pt.is_none()));
        let primaries: Vec<u8> = with.media[1]
            .codecs
            .iter()
            .filter(|c| !c.is_rtx())
            .map(|c| c.pt)
            .collect();
        assert_eq!(pts(&ans.media[1]), primaries);
    }
}

#[test]
fn publisher_choices_report_payload_types_and_extension_ids() {
    let p = params();
    let offer = SessionOffer::parse(CHROME).unwrap();
    let (_, _, choices) = run(&AnswerBuilder::new(&offer, &p));
    let a = &choices[0];
    assert_eq!((a.mid.as_str(), a.kind), ("0", MediaKind::Audio));
    assert_eq!(a.direction, Direction::RecvOnly);
    assert_eq!(a.codec.as_ref().unwrap().pt, 111);
    let v = &choices[1];
    assert_eq!(v.direction, Direction::RecvOnly);
    let c = v.codec.as_ref().unwrap();
    assert_eq!((c.pt, c.name.as_str()), (96, "VP8"));
    assert_eq!(v.rtx_pt, Some(97));
    let id = |uri: &str| v.extmaps.iter().find(|(_, u)| u == uri).map(|(id, _)| *id);
    assert_eq!(id(ext::MID), Some(4));
    assert_eq!(id(ext::RID), Some(10));
    assert_eq!(id(ext::REPAIRED_RID), Some(11));
    assert_eq!(id(ext::ABS_SEND_TIME), Some(2));
    assert_eq!(id(ext::TRANSPORT_CC), Some(3));
    assert_eq!(choices[2].kind, MediaKind::Application);

    let offer = SessionOffer::parse(AIORTC).unwrap();
    let (_, _, choices) = run(&AnswerBuilder::new(&offer, &p));
    assert_eq!(choices[0].codec.as_ref().unwrap().pt, 96);
    let v = &choices[1];
    assert_eq!(v.codec.as_ref().unwrap().pt, 97);
    assert_eq!(v.rtx_pt, Some(98));
    assert_eq!(
        v.extmaps,
        [(1, ext::MID.to_owned()), (3, ext::ABS_SEND_TIME.to_owned())]
    );
}

#[test]
fn chrome_recvonly_offer_gets_the_viewers_payload_types() {
    // Chrome's offer turned into a viewer's: recvonly, no simulcast.
    let sdp: String = CHROME
        .lines()
        .filter(|l| !l.starts_with("a=rid:") && !l.starts_with("a=simulcast:"))
        .map(|l| format!("{l}\r\n"))
        .collect::<String>()
        .replace("a=sendonly", "a=recvonly");
    let offer = SessionOffer::parse(&sdp).unwrap();
    let p = params();
    let b = AnswerBuilder::new(&offer, &p)
        .send("0", opus())
        .send("1", track(Codec::Vp9, 9, Some(10)));
    let (ans, _, choices) = run(&b);
    check_transport(&offer, &ans);
    assert_eq!(pts(&ans.media[0]), [111]);
    assert_eq!(pts(&ans.media[1]), [98, 99], "VP9 profile 0 and its RTX");
    assert!(ans.media[..2]
        .iter()
        .all(|m| m.extmaps.iter().all(|(_, u)| u != ext::RID)
            && m.direction == Direction::SendOnly
            && m.rids.is_empty()
            && m.simulcast.is_none()));
    assert!(ans.extmap_allow_mixed);
    assert_eq!(
        choices[1].codec.as_ref().unwrap().fmtp_param("profile-id"),
        Some("0")
    );
}

#[test]
fn tracks_that_do_not_fit_their_section_are_refused() {
    let offer = SessionOffer::parse(AIORTC).unwrap();
    let p = params();
    let e = AnswerBuilder::new(&offer, &p).send("9", opus()).build();
    assert!(matches!(e, Err(SdpError::BadTrack { ref mid, .. }) if mid == "9"));
    let e = AnswerBuilder::new(&offer, &p).send("1", opus()).build();
    assert!(matches!(e, Err(SdpError::BadTrack { ref mid, .. }) if mid == "1"));
    let e = AnswerBuilder::new(&offer, &p)
        .send("2", vp8())
        .build_with_choices();
    assert!(matches!(e, Err(SdpError::BadTrack { ref mid, .. }) if mid == "2"));
    assert!(e.unwrap_err().to_string().contains("cannot send"));
}

#[test]
fn a_later_send_to_the_same_mid_replaces_the_track() {
    let offer = SessionOffer::parse(WHEP).unwrap();
    let p = params();
    let b = AnswerBuilder::new(&offer, &p)
        .send("1", vp8())
        .send("1", track(Codec::Vp8, 4444, None));
    let (ans, _, _) = run(&b);
    assert_eq!(
        ans.media[1]
            .ssrcs
            .iter()
            .map(|s| s.ssrc)
            .collect::<Vec<_>>(),
        [4444]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Deleting any one line of the WHEP offer, with tracks attached, never panics, and
    /// whatever is answered parses back.
    #[test]
    fn truncated_whep_offers_never_panic(skip in 0usize..80, rtx in any::<bool>()) {
        let text: String = WHEP
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, l)| format!("{l}\r\n"))
            .collect();
        if let Ok(offer) = SessionOffer::parse(&text) {
            let p = params();
            let b = AnswerBuilder::new(&offer, &p)
                .send("0", opus())
                .send("1", vp8())
                .accept_rtx(rtx);
            if let Ok((ans, _)) = b.build_with_choices() {
                prop_assert!(SessionOffer::parse(&ans).is_ok(), "{}", ans);
            }
        }
    }
}
