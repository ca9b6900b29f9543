//! Comedia: a plain transport created without a remote address learns it from the first
//! datagram that carries one of its SSRCs (what ffmpeg or GStreamer behind NAT need), and
//! a subscriber-only transport learns it from its first RTCP. Datagrams from strangers, or
//! carrying SSRCs of other transports, bind nothing.

use std::net::SocketAddr;
use std::time::Instant;

use pb::command::Body;
use prism_forwarder::engine::{DropReason, Engine, EngineConfig};
use prism_forwarder::testing::{CollectEgress, SimulcastSource};
use prism_forwarder::wire::rtp::RtpPacket;
use prism_proto::control as pb;

fn ok(e: &mut Engine, now: Instant, body: Body) {
    let ev = e.handle_command(
        now,
        pb::Command {
            request_id: 1,
            body: Some(body),
        },
    );
    assert!(
        !matches!(ev.body, Some(pb::event::Body::Error(_))),
        "{ev:?}"
    );
}

#[test]
fn comedia_transports_learn_their_remote() {
    let now = Instant::now();
    let mut e = Engine::new(0, "127.0.0.1:9".parse().unwrap(), EngineConfig::default());
    ok(
        &mut e,
        now,
        Body::CreateRoom(pb::CreateRoom {
            room_id: 1,
            ..Default::default()
        }),
    );
    for t in [1, 2] {
        ok(
            &mut e,
            now,
            Body::CreatePlainTransport(pb::CreatePlainTransport {
                srtp: None,
                room_id: 1,
                transport_id: t,
                remote: String::new(),
                comedia: true,
            }),
        );
    }
    let mut src = SimulcastSource::three_layers(0x100, 0);
    ok(
        &mut e,
        now,
        Body::AddTrack(pb::AddTrack {
            mid: String::new(),
            mid_ext_id: 0,
            rid_ext_id: 0,
            nack: None,
            room_id: 1,
            transport_id: 1,
            track_id: 1,
            kind: pb::MediaKind::Video as i32,
            codec: Some(pb::Codec {
                kind: pb::CodecKind::Vp8 as i32,
                payload_type: 96,
                clock_rate: 90_000,
            }),
            layers: vec![pb::Layer {
                ssrc: src.ssrcs()[0].0,
                rid: String::new(),
                spatial: 0,
            }],
        }),
    );
    ok(
        &mut e,
        now,
        Body::AddDownTrack(pb::AddDownTrack {
            room_id: 1,
            track_id: 1,
            down_track_id: 1,
            transport_id: 2,
            ssrc: 0xd00d,
            payload_type: 96,
            preferred_spatial: 0,
            preferred_temporal: None,
        }),
    );
    let publisher: SocketAddr = "10.0.0.1:4000".parse().unwrap();
    let recorder: SocketAddr = "10.0.0.2:5000".parse().unwrap();
    let stranger: SocketAddr = "10.0.0.3:6000".parse().unwrap();
    let mut eg = CollectEgress::default();
    let frame = src.next_frame();
    let first = &frame[0].1;

    // The recorder has not spoken yet: the subscriber has nowhere to send.
    eg.begin(first);
    e.handle_datagram(now, publisher, &mut first.clone(), &mut eg);
    assert!(eg.take().is_empty());
    assert_eq!(
        e.transport_counters(2)
            .unwrap()
            .dropped(DropReason::NoRemote),
        1
    );
    assert_eq!(
        e.transport_counters(1).unwrap().packets_in,
        1,
        "publisher learnt"
    );

    // A stranger reusing the publisher's SSRC is not the publisher.
    eg.begin(first);
    e.handle_datagram(now, stranger, &mut first.clone(), &mut eg);
    assert_eq!(e.counters.dropped(DropReason::UnknownSource), 1);

    // The recorder's first RTCP (a receiver report about our SSRC) binds transport 2.
    let mut rr = vec![0x81, 201, 0, 7];
    rr.extend_from_slice(&0x4242u32.to_be_bytes());
    rr.extend_from_slice(&0xd00du32.to_be_bytes());
    rr.extend_from_slice(&[0u8; 20]);
    eg.begin(&rr);
    e.handle_datagram(now, recorder, &mut rr.clone(), &mut eg);
    assert_eq!(
        e.transport_counters(2).unwrap().packets_in,
        1,
        "recorder learnt"
    );

    // From now on media flows to the recorder's address.
    for (_, p) in frame.iter().skip(1).filter(|(l, _)| *l == 0) {
        eg.begin(p);
        e.handle_datagram(now, publisher, &mut p.clone(), &mut eg);
    }
    let next = src.next_frame();
    let p = &next[0].1;
    eg.begin(p);
    e.handle_datagram(now, publisher, &mut p.clone(), &mut eg);
    let sent: Vec<_> = eg
        .take()
        .into_iter()
        .filter(|(to, _)| *to == recorder)
        .collect();
    assert!(!sent.is_empty());
    for (_, b) in &sent {
        assert_eq!(RtpPacket::new_checked(&b[..]).unwrap().ssrc().0, 0xd00d);
    }
}
