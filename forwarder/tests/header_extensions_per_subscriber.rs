//! Header extensions are rewritten per subscriber transport: each copy carries exactly the
//! extensions its transport negotiated, under its ids (its mid, a fresh abs-send-time, its
//! own transport-wide sequence number, the publisher's audio level), and nothing else.
//! The publisher's transport-wide numbers come back to it as transport-cc feedback that
//! parses to the arrival times.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pb::command::Body;
use prism_forwarder::engine::{Engine, EngineConfig};
use prism_forwarder::testing::cmd::{self, expect_ok};
use prism_forwarder::testing::{with_extensions, CollectEgress, Tag};
use prism_forwarder::wire::rtcp::{RtcpPacket, Twcc};
use prism_forwarder::wire::rtp::RtpPacket;
use prism_forwarder::{ids::Ssrc, wire::rtcp};
use prism_proto::control as pb;

const PUB: &str = "127.0.0.1:5000";
const SUB_A: &str = "127.0.0.1:6000";
const SUB_B: &str = "127.0.0.1:6001";

/// An Opus packet and a VP8 keyframe packet (one packet per frame), tagged like
/// `SimulcastSource` payloads so the output can be traced back.
fn media(ssrc: u32, seq: u16, video: bool) -> Vec<u8> {
    let mut p = vec![0x80, if video { 96 } else { 111 }];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    if video {
        // VP8 descriptor (S, no extensions), keyframe tag and start code.
        p.extend_from_slice(&[0x10, 0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0, 5, 0xd0, 2]);
    }
    p.extend_from_slice(&[0x55; 40]);
    p.push(u8::from(video));
    p.extend_from_slice(&u64::from(seq).to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes());
    p
}

#[test]
fn each_subscriber_gets_its_own_extensions_and_the_publisher_gets_feedback() {
    let t0 = Instant::now();
    let mut e = Engine::new(
        0,
        "127.0.0.1:7000".parse().unwrap(),
        EngineConfig::default(),
    );
    expect_ok(&mut e, t0, cmd::room(1));
    expect_ok(&mut e, t0, cmd::plain(1, 10, PUB));
    expect_ok(&mut e, t0, cmd::plain(1, 20, SUB_A));
    expect_ok(&mut e, t0, cmd::plain(1, 30, SUB_B));
    // The publisher: audio level 1, transport-cc 5, mid 3; it sends id 12 too, which
    // nobody negotiated.
    let pub_ids = pb::RtpHeaderExtensions {
        mid: 3,
        audio_level: 1,
        transport_cc: 5,
        ..Default::default()
    };
    expect_ok(&mut e, t0, cmd::header_extensions(1, 10, pub_ids, true));
    // Subscriber A negotiated everything, under other ids; B only the mid, with the id
    // the publisher uses for transport-cc.
    let a_ids = pb::RtpHeaderExtensions {
        mid: 9,
        abs_send_time: 7,
        transport_cc: 8,
        audio_level: 6,
        ..Default::default()
    };
    expect_ok(&mut e, t0, cmd::header_extensions(1, 20, a_ids, true));
    let b_ids = pb::RtpHeaderExtensions {
        mid: 5,
        ..Default::default()
    };
    expect_ok(&mut e, t0, cmd::header_extensions(1, 30, b_ids, false));
    expect_ok(&mut e, t0, cmd::opus_track(1, 10, 100, 0xa0));
    expect_ok(&mut e, t0, cmd::vp8_track(1, 10, 101, &[Ssrc(0xb0)]));
    let dts = [
        (200, 100, 20, 0xa1, "0"),
        (201, 101, 20, 0xa2, "1"),
        (300, 100, 30, 0xb1, "audio"),
        (301, 101, 30, 0xb2, "video"),
    ];
    for (id, track, transport, ssrc, mid) in dts {
        let mut body = cmd::down_track_with_mid(1, track, id, transport, ssrc, 0, 0, mid);
        if id == 200 {
            // A's audio section negotiated no abs-send-time.
            if let Body::AddDownTrack(d) = &mut body {
                d.header_extensions = Some(pb::RtpHeaderExtensions {
                    mid: 9,
                    transport_cc: 8,
                    audio_level: 6,
                    ..Default::default()
                });
            }
        }
        expect_ok(&mut e, t0, body);
    }
    // A section's ids must be its transport's (BUNDLE).
    let mut bad = cmd::down_track_with_mid(1, 100, 202, 20, 0xa3, 0, 0, "2");
    if let Body::AddDownTrack(d) = &mut bad {
        d.header_extensions = Some(pb::RtpHeaderExtensions {
            mid: 4,
            ..Default::default()
        });
    }
    let ev = e.handle_command(
        t0,
        pb::Command {
            request_id: 1,
            body: Some(bad),
        },
    );
    assert!(matches!(ev.body, Some(pb::event::Body::Error(_))), "{ev:?}");

    let publisher: SocketAddr = PUB.parse().unwrap();
    let (sub_a, sub_b): (SocketAddr, SocketAddr) = (SUB_A.parse().unwrap(), SUB_B.parse().unwrap());
    let mut eg = CollectEgress::default();
    let mut arrivals = BTreeMap::new();
    let mut now = t0;
    // Publisher transport-wide numbers 65530.. (wrapping); number 65533 is lost.
    for i in 0..12u16 {
        let tseq = 65530u16.wrapping_add(i);
        let video = i % 2 == 1;
        let base = if video {
            media(0xb0, i, true)
        } else {
            media(0xa0, i, false)
        };
        let pkt = with_extensions(
            &base,
            &[
                (3, b"m0"),
                (1, &[0x80 | 42]),
                (5, &tseq.to_be_bytes()),
                (12, b"x"),
            ],
        );
        now = t0 + Duration::from_micros(1_000 * u64::from(i) + 250);
        if tseq == 65533 {
            continue;
        }
        arrivals.insert(tseq, now);
        eg.begin(&pkt);
        let mut buf = pkt.clone();
        e.handle_datagram(now, publisher, &mut buf, &mut eg);
    }
    let mut a_tseq = vec![];
    let mut abs = vec![];
    let mut a_video = None;
    for (to, bytes) in eg.take() {
        let p = RtpPacket::new_checked(&bytes[..]).expect("RTP out");
        let tag = Tag::read(&bytes).expect("payload intact");
        let video = tag.layer == 1;
        let ids: Vec<u8> = p.extensions().map(|(id, _)| id).collect();
        if to == sub_a {
            let mid = p.extension(9).expect("A's mid");
            assert_eq!(mid, if video { &b"1"[..] } else { &b"0"[..] });
            let t = p.extension(8).expect("A's transport-wide number");
            a_tseq.push(u16::from_be_bytes([t[0], t[1]]));
            if video {
                a_video.get_or_insert_with(|| bytes.clone());
                abs.push(p.extension(7).expect("abs-send-time").to_vec());
                assert_eq!(ids.len(), 3, "no audio level on video: {ids:?}");
            } else {
                assert_eq!(p.extension(6), Some(&[0x80 | 42][..]), "audio level kept");
                assert_eq!(
                    ids.len(),
                    3,
                    "the audio section has no abs-send-time: {ids:?}"
                );
            }
        } else {
            assert_eq!(to, sub_b);
            let mid = p.extension(5).expect("B's mid");
            assert_eq!(mid, if video { &b"video"[..] } else { &b"audio"[..] });
            assert_eq!(
                ids,
                vec![5],
                "only the mid: the publisher's numbers are not leaked"
            );
        }
    }
    assert_eq!(a_tseq.len(), 11);
    for w in a_tseq.windows(2) {
        assert_eq!(
            w[1],
            w[0].wrapping_add(1),
            "one sequence across the transport"
        );
    }
    assert!(
        abs.windows(2).all(|w| w[0] <= w[1]),
        "abs-send-time advances"
    );

    // A NACK from A: the retransmission is the same packet with fresh extensions (the
    // transport's next number, a later send time).
    let first = a_video.unwrap();
    let orig = RtpPacket::new_checked(&first[..]).unwrap();
    let mut nack = [0u8; 64];
    let n = rtcp::emit_nack(&mut nack, Ssrc(1), Ssrc(0xa2), &[orig.sequence_number()]).unwrap();
    now += Duration::from_millis(5);
    e.handle_datagram(now, sub_a, &mut nack[..n], &mut eg);
    let sent = eg.take();
    assert_eq!(sent.len(), 1);
    let (to, bytes) = &sent[0];
    assert_eq!(*to, sub_a);
    let re = RtpPacket::new_checked(&bytes[..]).unwrap();
    assert_eq!(re.sequence_number(), orig.sequence_number());
    assert_eq!(re.payload(), orig.payload());
    assert_eq!(re.extension(9), Some(&b"1"[..]));
    let t = re.extension(8).unwrap();
    assert_eq!(
        u16::from_be_bytes([t[0], t[1]]),
        a_tseq.last().unwrap().wrapping_add(1)
    );
    assert!(re.extension(7).unwrap() > orig.extension(7).unwrap());

    // After the feedback interval, the publisher gets transport-cc feedback.
    now += Duration::from_millis(120);
    e.handle_timeout(now, &mut eg);
    // (NACKs for the publisher's media gaps go there too; keep the transport-cc ones.)
    let feedback: Vec<_> = eg
        .take()
        .into_iter()
        .filter(|(to, b)| *to == publisher && b[0] & 0x1f == 15 && b[1] == 205)
        .collect();
    assert_eq!(feedback.len(), 1);
    let bytes = &feedback[0].1;
    let mut reported = BTreeMap::new();
    for p in rtcp::packets(bytes) {
        let RtcpPacket::Twcc(fb) = p.unwrap() else {
            continue;
        };
        let fb: Twcc<&[u8]> = fb;
        assert_eq!(fb.media_ssrc(), Ssrc(0xb0), "the latest media SSRC");
        let mut at = fb.reference_time_us();
        for s in fb.statuses() {
            match s.delta_us {
                Some(d) => {
                    at += i64::from(d);
                    reported.insert(s.seq, at);
                }
                None => assert_eq!(s.seq, 65533, "only the lost one is missing"),
            }
        }
    }
    assert_eq!(reported.len(), arrivals.len());
    let (first_seq, first_at) = arrivals.iter().next().map(|(s, t)| (*s, *t)).unwrap();
    for (seq, at) in &arrivals {
        let us = |t: &Instant| t.duration_since(t0).as_micros() as i64;
        let want = us(at) - us(&first_at);
        let got = reported[seq] - reported[&first_seq];
        assert_eq!(got, want, "arrival of {seq}");
    }
    let stats = e.stats(now);
    let pub_stats = stats
        .transports
        .iter()
        .find(|t| t.transport_id == 10)
        .unwrap();
    assert_eq!(pub_stats.twcc_feedback_sent, 1);
}
