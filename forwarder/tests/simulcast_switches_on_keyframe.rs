//! Deterministic engine test: three VP8 simulcast layers in virtual time, a subscriber
//! whose preferred layer moves up and down. The output must be one SSRC with sequence
//! numbers +1 per packet, monotonic timestamps, VP8 picture ids and TL0PICIDX continuous,
//! and layer switches exactly at the first keyframe of the target layer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pb::command::Body;
use prism_forwarder::codec::vp8;
use prism_forwarder::engine::{Engine, EngineConfig};
use prism_forwarder::testing::cmd::{self, expect_ok};
use prism_forwarder::testing::{CollectEgress, SimulcastSource, Tag};
use prism_forwarder::wire::rtp::RtpPacket;
use prism_proto::control as pb;

const PUB: &str = "127.0.0.1:5000";
const SUB: &str = "127.0.0.1:6000";
const OUT_SSRC: u32 = 0xfeed_0001;

fn cmd(engine: &mut Engine, now: Instant, body: Body) -> pb::Event {
    let ev = engine.handle_command(
        now,
        pb::Command {
            request_id: 1,
            body: Some(body),
        },
    );
    if let Some(pb::event::Body::Error(e)) = &ev.body {
        panic!("command failed: {}", e.message);
    }
    ev
}

fn setup(now: Instant, src: &SimulcastSource, preferred: u32) -> Engine {
    let mut e = Engine::new(
        0,
        "127.0.0.1:7000".parse().unwrap(),
        EngineConfig::default(),
    );
    expect_ok(&mut e, now, cmd::room(1));
    expect_ok(&mut e, now, cmd::plain(1, 10, PUB));
    expect_ok(&mut e, now, cmd::plain(1, 20, SUB));
    expect_ok(&mut e, now, cmd::vp8_track(1, 10, 100, &src.ssrcs()));
    expect_ok(
        &mut e,
        now,
        cmd::down_track(1, 100, 200, 20, OUT_SSRC, 101, preferred),
    );
    e
}

struct Out {
    frame_sent_at: u64,
    seq: u16,
    ts: u32,
    tag: Tag,
    keyframe: bool,
    picture_id: u16,
    tl0: u8,
}

#[test]
fn simulcast_switches_on_keyframe_with_continuous_numbering() {
    let t0 = Instant::now();
    let mut src = SimulcastSource::three_layers(0x1000, 32);
    let mut engine = setup(t0, &src, 0);
    let mut eg = CollectEgress::default();
    let publisher: SocketAddr = PUB.parse().unwrap();
    let subscriber: SocketAddr = SUB.parse().unwrap();

    // (frame at which the preference changes, new preferred layer)
    let plan = [(50u64, 2u32), (130, 1), (210, 0), (260, 2), (330, 0)];
    let mut outputs: Vec<Out> = Vec::new();
    let mut keyframes: Vec<Vec<u64>> = vec![Vec::new(); 3];
    let ssrcs = src.ssrcs();
    let mut plis = 0;
    let mut now = t0;
    for frame in 0..400u64 {
        if let Some(&(_, layer)) = plan.iter().find(|(f, _)| *f == frame) {
            cmd(
                &mut engine,
                now,
                Body::SetPreferredLayer(pb::SetPreferredLayer {
                    room_id: 1,
                    down_track_id: 200,
                    spatial: layer,
                    temporal: 2,
                }),
            );
        }
        for (layer, pkt) in src.next_frame() {
            let rtp = RtpPacket::new_checked(&pkt[..]).unwrap();
            if vp8::is_keyframe(rtp.payload()) {
                keyframes[layer].push(frame);
            }
            eg.begin(&pkt);
            let mut buf = pkt.clone();
            engine.handle_datagram(now, publisher, &mut buf, &mut eg);
            engine.handle_timeout(now, &mut eg);
        }
        for (to, bytes) in eg.take() {
            if to == publisher && bytes[1] == 201 {
                // A receiver report: nothing for the publisher to do here.
                continue;
            }
            if to == publisher {
                // A PLI (PT 206, FMT 1): the publisher answers with a keyframe, as an
                // encoder does.
                assert_eq!(
                    (bytes[0] & 0x1f, bytes[1]),
                    (1, 206),
                    "only PLIs and receiver reports go back"
                );
                let media = u32::from_be_bytes(bytes[8..12].try_into().unwrap());
                let layer = ssrcs.iter().position(|s| s.0 == media).expect("known SSRC");
                src.request_keyframe(layer);
                plis += 1;
                continue;
            }
            assert_eq!(to, subscriber);
            let p = RtpPacket::new_checked(&bytes[..]).expect("output parses as RTP");
            assert_eq!(p.ssrc().0, OUT_SSRC, "one output SSRC");
            assert_eq!(p.payload_type().0, 101, "output payload type");
            let d = vp8::parse_descriptor(p.payload()).expect("VP8 descriptor");
            outputs.push(Out {
                frame_sent_at: frame,
                seq: p.sequence_number(),
                ts: p.timestamp(),
                tag: Tag::read(&bytes).unwrap(),
                keyframe: vp8::is_keyframe(p.payload()),
                picture_id: d.picture_id.unwrap(),
                tl0: d.tl0picidx.unwrap(),
            });
        }
        now += Duration::from_millis(33);
    }

    assert!(outputs.len() > 500, "forwarded {}", outputs.len());
    // The very first packet is a keyframe start of layer 0.
    assert!(outputs[0].keyframe && outputs[0].tag.layer == 0);
    for w in outputs.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        assert_eq!(
            b.seq,
            a.seq.wrapping_add(1),
            "sequence +1 per forwarded packet"
        );
        let dts = b.ts.wrapping_sub(a.ts);
        assert!(dts < 1 << 31, "timestamps monotonic: {} -> {}", a.ts, b.ts);
        let same_picture = a.tag.layer == b.tag.layer && a.tag.frame == b.tag.frame;
        let dpid = b.picture_id.wrapping_sub(a.picture_id) & 0x7fff;
        if same_picture {
            assert_eq!(
                (dpid, dts),
                (0, 0),
                "one picture keeps its id and timestamp"
            );
        } else {
            assert_eq!(dpid, 1, "picture id +1 per picture, also across a switch");
            assert!(dts > 0);
        }
        let dtl0 = b.tl0.wrapping_sub(a.tl0);
        assert!(dtl0 <= 1, "TL0PICIDX continuous: {} -> {}", a.tl0, b.tl0);
        if a.tag.layer != b.tag.layer {
            assert!(
                b.keyframe && b.tag.index == 0,
                "switch only at a keyframe start"
            );
        }
    }
    // Each switch happens at the first keyframe of the target layer produced at or after
    // the frame where the preference changed.
    let mut current = 0u8;
    let mut switches = 0;
    for o in &outputs {
        assert_eq!(
            o.frame_sent_at, o.tag.frame,
            "forwarded in the turn it arrived"
        );
        if o.tag.layer == current {
            continue;
        }
        let (changed_at, target) = *plan
            .iter()
            .rev()
            .find(|(f, _)| *f <= o.tag.frame)
            .expect("a switch follows a change");
        assert_eq!(
            u32::from(o.tag.layer),
            target,
            "switched to the target layer"
        );
        let first_key = keyframes[o.tag.layer as usize]
            .iter()
            .find(|&&k| k >= changed_at)
            .copied();
        assert_eq!(
            Some(o.tag.frame),
            first_key,
            "switched at the first keyframe"
        );
        current = o.tag.layer;
        switches += 1;
    }
    assert_eq!(switches, plan.len(), "every preference change switched");
    assert!(plis >= 1, "keyframes were requested from the publisher");
    // One PLI per change: the answering keyframe arrives before the throttle expires.
    assert!(
        plis <= 2 * plan.len(),
        "keyframe requests are throttled ({plis})"
    );

    let dt = engine.down_track(200).unwrap();
    assert_eq!(dt.current_layer(), Some(0));
}

#[test]
fn temporal_preference_filters_and_keeps_numbering() {
    let t0 = Instant::now();
    let mut src = SimulcastSource::three_layers(0x2000, 32);
    let mut engine = setup(t0, &src, 1);
    cmd(
        &mut engine,
        t0,
        Body::SetPreferredLayer(pb::SetPreferredLayer {
            room_id: 1,
            down_track_id: 200,
            spatial: 1,
            temporal: 0,
        }),
    );
    let publisher: SocketAddr = PUB.parse().unwrap();
    let mut eg = CollectEgress::default();
    let mut now = t0;
    let mut last: Option<u16> = None;
    let mut n = 0;
    for _ in 0..120 {
        for (_, pkt) in src.next_frame() {
            eg.begin(&pkt);
            engine.handle_datagram(now, publisher, &mut pkt.clone(), &mut eg);
        }
        for (to, bytes) in eg.take() {
            if to == publisher {
                continue;
            }
            let p = RtpPacket::new_checked(&bytes[..]).unwrap();
            let d = vp8::parse_descriptor(p.payload()).unwrap();
            assert_eq!(d.tid, Some(0), "only the base temporal layer");
            if let Some(l) = last {
                assert_eq!(p.sequence_number(), l.wrapping_add(1));
            }
            last = Some(p.sequence_number());
            n += 1;
        }
        now += Duration::from_millis(33);
    }
    assert!(n > 40, "forwarded {n}");
}

#[test]
fn nack_is_answered_with_the_subscribers_numbering() {
    let t0 = Instant::now();
    let mut src = SimulcastSource::three_layers(0x3000, 32);
    let mut engine = setup(t0, &src, 2);
    let publisher: SocketAddr = PUB.parse().unwrap();
    let subscriber: SocketAddr = SUB.parse().unwrap();
    let mut eg = CollectEgress::default();
    let mut sent = Vec::new();
    let mut now = t0;
    for _ in 0..60 {
        for (_, pkt) in src.next_frame() {
            eg.begin(&pkt);
            engine.handle_datagram(now, publisher, &mut pkt.clone(), &mut eg);
        }
        sent.extend(eg.take().into_iter().filter(|(to, _)| *to == subscriber));
        now += Duration::from_millis(33);
    }
    assert!(sent.len() > 50);
    let (_, original) = &sent[sent.len() - 20];
    let seq = RtpPacket::new_checked(&original[..])
        .unwrap()
        .sequence_number();
    // Generic NACK (RFC 4585): V=2, FMT=1, PT=205, length 3, sender, media, PID, BLP=0.
    let mut nack = vec![0x81, 205, 0, 3];
    nack.extend_from_slice(&0x1111u32.to_be_bytes());
    nack.extend_from_slice(&OUT_SSRC.to_be_bytes());
    nack.extend_from_slice(&seq.to_be_bytes());
    nack.extend_from_slice(&[0, 0]);
    eg.begin(&nack);
    engine.handle_datagram(now, subscriber, &mut nack.clone(), &mut eg);
    let got = eg.take();
    assert_eq!(got.len(), 1, "one retransmission");
    assert_eq!(got[0].0, subscriber);
    assert_eq!(
        &got[0].1, original,
        "byte-identical to what the subscriber was sent"
    );
    let stats = engine.transport_counters(20).unwrap();
    assert_eq!((stats.nacks_received, stats.retransmits_sent), (1, 1));
}
