//! Offers captured from (or modelled on) real clients are parsed, answered, and the answer
//! is parsed back and checked against every answering rule; server offers likewise; and
//! malformed input fails with an error, never a panic.

use std::net::SocketAddr;

use prism_signaling::sdp::codecs::ext;
use prism_signaling::sdp::{
    AnswerBuilder, Direction, MediaKind, OfferBuilder, OfferSection, RidDirection, SdpError,
    SendTrack, ServerParams, SessionOffer, SetupRole,
};
use proptest::prelude::*;

const CHROME: &str = include_str!("fixtures/chrome_simulcast_offer.sdp");
const FIREFOX: &str = include_str!("fixtures/firefox_offer.sdp");
const AIORTC: &str = include_str!("fixtures/aiortc_offer.sdp");

fn params() -> ServerParams {
    let cand: SocketAddr = "203.0.113.7:7880".parse().unwrap();
    let cand2: SocketAddr = "[2001:db8::7]:7881".parse().unwrap();
    let mut p = ServerParams::new(
        "prsm",
        "prism-ice-password-0123456",
        [0xAB; 32],
        vec![cand, cand2],
    );
    p.session_id = 42;
    p.session_version = 3;
    p
}

fn answer(offer_text: &str) -> (SessionOffer, SessionOffer, String) {
    let offer = SessionOffer::parse(offer_text).expect("offer parses");
    let p = params();
    let text = AnswerBuilder::new(&offer, &p)
        .build()
        .expect("answer builds");
    let ans = SessionOffer::parse(&text).expect("answer parses back");
    (offer, ans, text)
}

/// Rules common to every answer.
fn check_common(offer: &SessionOffer, ans: &SessionOffer) {
    let p = params();
    assert!(ans.ice_lite);
    assert_eq!(ans.media.len(), offer.media.len(), "one m-line per offered");
    for (o, a) in offer.media.iter().zip(&ans.media) {
        assert_eq!(o.mid, a.mid, "order and mids kept");
        assert_eq!(o.kind, a.kind);
        if a.is_rejected() {
            assert!(!ans.bundle.contains(&a.mid), "rejected mid not bundled");
            continue;
        }
        assert_eq!(a.port, 7880);
        assert_eq!(a.ice_ufrag.as_deref(), Some("prsm"));
        assert_eq!(a.ice_pwd.as_deref(), Some("prism-ice-password-0123456"));
        let fp = a.fingerprint.as_ref().unwrap();
        assert_eq!(fp.algorithm, "sha-256");
        assert_eq!(fp.value, vec![0xAB; 32]);
        let want = match o.setup {
            Some(SetupRole::Active) => SetupRole::Passive,
            Some(SetupRole::Passive) => SetupRole::Active,
            _ => SetupRole::Passive,
        };
        assert_eq!(a.setup, Some(want));
        assert_eq!(a.candidates.len(), p.candidates.len());
        assert_eq!(a.candidates[0], ("203.0.113.7".to_owned(), 7880));
        if a.kind == MediaKind::Application {
            assert_eq!(a.sctp_port, Some(5000));
            assert_eq!(a.max_message_size, Some(262_144));
            assert!(a.is_data_channel());
            continue;
        }
        assert!(a.rtcp_mux);
        assert_eq!(
            a.direction,
            Direction::RecvOnly,
            "publisher sends, we receive"
        );
        // Codecs: a subset of the offer, same payload types and order.
        let offered: Vec<u8> = o.codecs.iter().map(|c| c.pt).collect();
        let got: Vec<u8> = a.codecs.iter().map(|c| c.pt).collect();
        let mut in_order = offered.iter().filter(|pt| got.contains(pt)).copied();
        assert!(got.iter().all(|pt| in_order.next() == Some(*pt)), "{got:?}");
        for c in &a.codecs {
            let oc = o.codec(c.pt).unwrap();
            assert_eq!(oc.name, c.name);
            assert_eq!(oc.clock_rate, c.clock_rate);
            if c.is_rtx() {
                let apt = a.rtx.get(&c.pt).expect("rtx has apt");
                assert!(got.contains(apt), "rtx only for accepted codecs");
            } else {
                assert!(matches!(
                    c.name.to_ascii_lowercase().as_str(),
                    "opus" | "vp8" | "vp9" | "h264" | "av1"
                ));
            }
            for fb in &c.rtcp_fb {
                assert!(oc.rtcp_fb.contains(fb), "fb {fb} was offered");
            }
        }
        // Extmaps: offered ones only, same ids, supported uris only.
        for (id, uri) in &a.extmaps {
            assert!(o.extmaps.contains(&(*id, uri.clone())));
            assert!(
                [
                    ext::MID,
                    ext::RID,
                    ext::REPAIRED_RID,
                    ext::ABS_SEND_TIME,
                    ext::TRANSPORT_CC,
                    ext::AUDIO_LEVEL
                ]
                .contains(&uri.as_str()),
                "{uri}"
            );
        }
    }
    let accepted: Vec<&String> = ans
        .media
        .iter()
        .filter(|m| !m.is_rejected())
        .map(|m| &m.mid)
        .collect();
    let expected: Vec<&String> = offer
        .bundle
        .iter()
        .filter(|m| accepted.contains(m))
        .collect();
    assert_eq!(ans.bundle.iter().collect::<Vec<_>>(), expected);
}

#[test]
fn chrome_simulcast_offer_is_answered() {
    let (offer, ans, text) = answer(CHROME);
    check_common(&offer, &ans);
    assert!(ans.extmap_allow_mixed);
    assert_eq!(ans.bundle, ["0", "1", "2"]);

    let audio = &ans.media[0];
    let names: Vec<&str> = audio.codecs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["opus"],
        "red, G722, PCMU, CN, telephone-event dropped"
    );
    assert_eq!(audio.codecs[0].pt, 111);
    assert_eq!(audio.codecs[0].rtcp_fb, ["transport-cc"]);
    assert_eq!(audio.codecs[0].fmtp_param("useinbandfec"), Some("1"));
    let uris: Vec<&str> = audio.extmaps.iter().map(|(_, u)| u.as_str()).collect();
    assert_eq!(
        uris,
        [
            ext::AUDIO_LEVEL,
            ext::ABS_SEND_TIME,
            ext::TRANSPORT_CC,
            ext::MID
        ]
    );
    assert!(audio.rtcp_rsize);

    let video = &ans.media[1];
    let pts: Vec<u8> = video.codecs.iter().map(|c| c.pt).collect();
    // VP8+rtx, VP9 profile 0+rtx, H264 42e01f mode 1 (106)+rtx, AV1+rtx; not VP9 profile 2,
    // not H264 42001f or mode 0, not red/ulpfec.
    assert_eq!(pts, [96, 97, 98, 99, 106, 107, 45, 46]);
    let h264 = video.codec(106).unwrap();
    assert_eq!(h264.fmtp_param("profile-level-id"), Some("42e01f"));
    assert_eq!(h264.fmtp_param("packetization-mode"), Some("1"));
    assert_eq!(video.rtx.get(&107), Some(&106));
    assert_eq!(
        video.codec(96).unwrap().rtcp_fb,
        ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]
    );
    let ids: Vec<u16> = video.extmaps.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        [2, 3, 4, 10, 11],
        "toffset, orientation, playout-delay… dropped"
    );
    // Simulcast mirrored.
    assert_eq!(
        video.rids,
        [
            ("q".to_owned(), RidDirection::Recv),
            ("h".to_owned(), RidDirection::Recv),
            ("f".to_owned(), RidDirection::Recv)
        ]
    );
    let sc = video.simulcast.as_ref().unwrap();
    assert!(sc.send.is_empty());
    let layers: Vec<&str> = sc.recv.iter().map(|alts| alts[0].0.as_str()).collect();
    assert_eq!(layers, ["q", "h", "f"]);
    assert!(text.contains("a=simulcast:recv q;h;f\r\n"), "{text}");

    let data = &ans.media[2];
    assert_eq!(data.kind, MediaKind::Application);
    assert!(text.contains("m=application 7880 UDP/DTLS/SCTP webrtc-datachannel\r\n"));
    assert!(text.contains("a=ice-lite\r\n"));
    assert!(text.contains("a=setup:passive\r\n"));
    assert!(!text.contains("a=setup:actpass"));
}

#[test]
fn firefox_offer_is_answered() {
    let (offer, ans, _) = answer(FIREFOX);
    // Session-level fingerprint and media-level credentials are resolved per section.
    assert!(offer.media.iter().all(|m| m.fingerprint.is_some()));
    assert_eq!(offer.media[1].ssrc_groups[0].semantics, "FID");
    assert_eq!(
        offer.media[0].msid.as_ref().unwrap().0,
        "{4e1c0e55-0a48-4c6e-9a3d-2b7c6f1d8e90}"
    );
    assert_eq!(offer.media[0].direction, Direction::SendRecv);
    check_common(&offer, &ans);
    assert_eq!(
        ans.media[0].codecs.iter().map(|c| c.pt).collect::<Vec<_>>(),
        [109]
    );
    // VP8 120+124, VP9 121+125, H264 126 (mode 1)+127; not 97 (mode 0), red, ulpfec.
    assert_eq!(
        ans.media[1].codecs.iter().map(|c| c.pt).collect::<Vec<_>>(),
        [120, 124, 121, 125, 126, 127]
    );
    // Firefox's recvonly csrc-audio-level and playout-delay extensions are not answered.
    assert!(ans
        .media
        .iter()
        .all(|m| m.extmaps.iter().all(|(id, _)| *id != 2 && *id != 6)));
}

#[test]
fn aiortc_offer_is_answered() {
    let (offer, ans, _) = answer(AIORTC);
    assert_eq!(offer.media.len(), 3);
    assert_eq!(offer.media[0].fingerprints.len(), 3);
    let v = &offer.media[1];
    assert_eq!(v.ssrcs.len(), 2);
    assert!(v.ssrcs.iter().all(|s| s.cname.is_some()));
    assert_eq!(v.ssrc_groups[0].semantics, "FID");
    assert_eq!(v.rtx.get(&98), Some(&97));
    check_common(&offer, &ans);
    assert_eq!(
        ans.media[0]
            .codecs
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["opus"]
    );
    // aiortc offers H264 42001f first and 42e01f second; only the latter is accepted.
    assert_eq!(
        ans.media[1].codecs.iter().map(|c| c.pt).collect::<Vec<_>>(),
        [97, 98, 101, 102]
    );
    assert!(ans.media[2].is_data_channel());
}

#[test]
fn unsupported_sections_are_rejected_in_place() {
    // Audio with only PCMU, and a text m-line: both rejected with port 0, order kept.
    let sdp = CHROME
        .replace(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
            "m=audio 9 UDP/TLS/RTP/SAVPF 0",
        )
        .replace("a=group:BUNDLE 0 1 2", "a=group:BUNDLE 0 1 2 3")
        + "m=text 9 UDP/TLS/RTP/SAVPF 98\r\nc=IN IP4 0.0.0.0\r\na=mid:3\r\n\
           a=ice-ufrag:Qb3x\r\na=ice-pwd:Dx2oxGf+G9rK1zv6E5bT3nR1\r\n\
           a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:\
           1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n";
    let (offer, ans, text) = answer(&sdp);
    check_common(&offer, &ans);
    assert_eq!(ans.media.len(), 4);
    assert!(ans.media[0].is_rejected());
    assert_eq!(ans.media[0].mid, "0");
    assert!(text.contains("m=audio 0 UDP/TLS/RTP/SAVPF"));
    assert!(ans.media[3].is_rejected());
    assert_eq!(
        ans.bundle,
        ["1", "2"],
        "the first accepted mid leads the group"
    );
}

#[test]
fn setup_roles_follow_rfc_5763() {
    for (offered, answered) in [("active", "passive"), ("passive", "active")] {
        let sdp = CHROME.replace("a=setup:actpass", &format!("a=setup:{offered}"));
        let (_, _, text) = answer(&sdp);
        assert!(
            text.contains(&format!("a=setup:{answered}\r\n")),
            "{offered}"
        );
    }
    let mut p = params();
    p.setup_when_actpass = SetupRole::Active;
    let offer = SessionOffer::parse(CHROME).unwrap();
    let text = AnswerBuilder::new(&offer, &p).build().unwrap();
    assert!(text.contains("a=setup:active\r\n"));
}

#[test]
fn unknown_fmtp_parameters_survive_the_round_trip() {
    let sdp = CHROME.replace(
        "a=fmtp:98 profile-id=0",
        "a=fmtp:98 profile-id=0;x-foo=1;x-bar=2",
    );
    let (_, ans, text) = answer(&sdp);
    let vp9 = ans.media[1].codec(98).unwrap();
    assert_eq!(vp9.fmtp_param("x-bar"), Some("2"));
    assert!(
        text.contains("a=fmtp:98 profile-id=0;x-foo=1;x-bar=2\r\n"),
        "{text}"
    );
}

#[test]
fn recvonly_offer_is_answered_inactive() {
    let sdp = AIORTC.replace("a=sendonly", "a=recvonly");
    let (_, ans, _) = answer(&sdp);
    assert_eq!(ans.media[0].direction, Direction::Inactive);
}

#[test]
fn offers_missing_transport_attributes_are_refused() {
    let no_mid = CHROME.replace("a=mid:1\n", "");
    let offer = SessionOffer::parse(&no_mid).unwrap();
    let p = params();
    assert_eq!(
        AnswerBuilder::new(&offer, &p).build(),
        Err(SdpError::MissingMid { index: 1 })
    );
    let no_fp: String = AIORTC
        .lines()
        .filter(|l| !l.starts_with("a=fingerprint"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let offer = SessionOffer::parse(&no_fp).unwrap();
    assert_eq!(
        AnswerBuilder::new(&offer, &p).build(),
        Err(SdpError::MissingFingerprint { mid: "0".into() })
    );
    let no_ice: String = AIORTC
        .lines()
        .filter(|l| !l.starts_with("a=ice-pwd"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let offer = SessionOffer::parse(&no_ice).unwrap();
    assert!(matches!(
        AnswerBuilder::new(&offer, &p).build(),
        Err(SdpError::MissingIceCredentials { .. })
    ));
    let mut bad = params();
    bad.candidates.clear();
    let offer = SessionOffer::parse(CHROME).unwrap();
    assert!(matches!(
        AnswerBuilder::new(&offer, &bad).build(),
        Err(SdpError::BadServerParams(_))
    ));
}

#[test]
fn malformed_sdp_gives_a_clear_error() {
    for bad in [
        "",
        "hello",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video notaport UDP/TLS/RTP/SAVPF 96\r\n",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n",
    ] {
        let e = SessionOffer::parse(bad).unwrap_err();
        assert!(matches!(e, SdpError::Syntax { .. }), "{bad:?}");
        assert!(e.to_string().starts_with("invalid SDP"), "{e}");
    }
    let e = SessionOffer::parse(&CHROME.replace("a=rtpmap:96 VP8/90000", "a=rtpmap:96 VP8"))
        .unwrap_err();
    assert!(e.to_string().contains("line"), "{e}");
}

fn track(mid: &str, kind: MediaKind, ssrc: u32, rtx: Option<u32>) -> SendTrack {
    SendTrack {
        mid: mid.into(),
        kind,
        stream_id: "PA_alice".into(),
        track_id: format!("TR_{mid}"),
        cname: "prism-cname".into(),
        ssrc,
        rtx_ssrc: rtx,
        codecs: Vec::new(),
    }
}

#[test]
fn server_offer_for_a_subscriber() {
    let p = params();
    let text = OfferBuilder::new(&p)
        .track(track("0", MediaKind::Audio, 1111, None))
        .track(track("1", MediaKind::Video, 2222, Some(3333)))
        .section(OfferSection::Inactive {
            mid: "2".into(),
            kind: MediaKind::Video,
        })
        .data_channel("3")
        .build()
        .unwrap();
    let o = SessionOffer::parse(&text).expect("our offer parses");
    assert!(o.ice_lite);
    assert_eq!(o.bundle, ["0", "1", "2", "3"]);
    assert!(o.validate().is_ok());
    assert!(o.media.iter().all(|m| m.setup == Some(SetupRole::ActPass)));

    let a = &o.media[0];
    assert_eq!(a.direction, Direction::SendOnly);
    assert_eq!(a.codecs[0].name, "opus");
    assert_eq!(a.codecs[0].channels, Some(2));
    assert_eq!(a.ssrcs[0].ssrc, 1111);
    assert_eq!(a.ssrcs[0].cname.as_deref(), Some("prism-cname"));
    assert_eq!(a.ssrcs[0].msid.as_deref(), Some("PA_alice TR_0"));
    assert_eq!(a.msid, Some(("PA_alice".into(), Some("TR_0".into()))));

    let v = &o.media[1];
    assert_eq!(v.direction, Direction::SendOnly);
    assert_eq!(v.ssrc_groups[0].semantics, "FID");
    assert_eq!(v.ssrc_groups[0].ssrcs, [2222, 3333]);
    assert_eq!(v.ssrcs.len(), 2);
    let names: Vec<&str> = v
        .codecs
        .iter()
        .filter(|c| !c.is_rtx())
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["VP8", "VP9", "H264", "AV1"]);
    assert_eq!(v.rtx.len(), 4, "an RTX payload type for every video codec");
    // What the forwarder writes, with the same id in every section (BUNDLE); RID is
    // only read from publishers.
    let uris = |m: &prism_signaling::sdp::MediaSection| -> Vec<(u16, String)> { m.extmaps.clone() };
    assert_eq!(
        uris(v),
        [
            (2, ext::ABS_SEND_TIME.to_owned()),
            (3, ext::TRANSPORT_CC.to_owned()),
            (4, ext::MID.to_owned())
        ]
    );
    assert!(uris(a).contains(&(1, ext::AUDIO_LEVEL.to_owned())));
    assert!(uris(a).contains(&(3, ext::TRANSPORT_CC.to_owned())));
    assert!(v
        .codec(96)
        .unwrap()
        .rtcp_fb
        .contains(&"transport-cc".to_owned()));
    assert!(v
        .codec(96)
        .unwrap()
        .rtcp_fb
        .contains(&"nack pli".to_owned()));

    assert_eq!(o.media[2].direction, Direction::Inactive);
    let d = &o.media[3];
    assert!(d.is_data_channel());
    assert_eq!(d.sctp_port, Some(5000));
    assert!(text.contains("m=application 7880 UDP/DTLS/SCTP webrtc-datachannel\r\n"));
    assert!(text.contains("a=sctp-port:5000\r\n"));

    // Duplicate mids are refused.
    let dup = OfferBuilder::new(&p)
        .data_channel("0")
        .track(track("0", MediaKind::Audio, 1, None))
        .build();
    assert_eq!(dup, Err(SdpError::DuplicateMid("0".into())));
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        // Real lines from the fixtures, shuffled in.
        proptest::sample::select(CHROME.lines().map(str::to_owned).collect::<Vec<_>>()),
        // Real prefixes with random values.
        (
            proptest::sample::select(vec![
                "a=rtpmap:",
                "a=fmtp:",
                "a=rtcp-fb:",
                "a=extmap:",
                "a=ssrc:",
                "a=ssrc-group:",
                "a=rid:",
                "a=simulcast:",
                "a=fingerprint:",
                "a=setup:",
                "a=candidate:",
                "a=group:",
                "a=msid:",
                "a=sctp-port:",
                "m=",
                "c=",
                "o=",
                "t=",
            ]),
            "[ -~]{0,40}"
        )
            .prop_map(|(p, v)| format!("{p}{v}")),
        "[ -~]{0,60}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn random_lines_never_panic(lines in proptest::collection::vec(line(), 0..40),
                                keep_header in any::<bool>()) {
        let mut text = String::new();
        if keep_header {
            text.push_str("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n");
        }
        for l in lines {
            text.push_str(&l);
            text.push_str("\r\n");
        }
        if let Ok(offer) = SessionOffer::parse(&text) {
            let p = params();
            if let Ok(ans) = AnswerBuilder::new(&offer, &p).build() {
                // Whatever we answer must itself parse.
                prop_assert!(SessionOffer::parse(&ans).is_ok(), "{}", ans);
            }
        }
    }

    /// Deleting any one line of a real offer never panics anywhere.
    #[test]
    fn truncated_offers_never_panic(skip in 0usize..200) {
        let text: String = CHROME
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, l)| format!("{l}\r\n"))
            .collect();
        if let Ok(offer) = SessionOffer::parse(&text) {
            let p = params();
            let _ = AnswerBuilder::new(&offer, &p).build();
        }
    }
}

#[test]
#[ignore = "prints an answer for eyeballing: cargo test -- --ignored --nocapture"]
fn print_chrome_answer() {
    let (_, _, text) = answer(CHROME);
    println!("{text}");
}
