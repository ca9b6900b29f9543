//! Simulcast announced by RID only (what browsers send): the layers' SSRCs are unknown
//! until their first packets arrive carrying the sdes:mid and sdes:rtp-stream-id header
//! extensions. Each SSRC is bound to its layer from then on; a packet with another MID, or
//! a RID no layer has, binds nothing.

use std::net::SocketAddr;
use std::time::Instant;

use pb::command::Body;
use prism_forwarder::engine::{DropReason, Engine, EngineConfig};
use prism_forwarder::testing::{cmd, CollectEgress, SimulcastSource, Tag};
use prism_proto::control as pb;

const MID_EXT: u8 = 4;
const RID_EXT: u8 = 10;

/// Inserts a one-byte header extension block (RFC 8285) with MID and RID into `pkt`.
fn with_mid_rid(pkt: &[u8], mid: &str, rid: &str) -> Vec<u8> {
    let mut ext = Vec::new();
    for (id, v) in [(MID_EXT, mid), (RID_EXT, rid)] {
        ext.push((id << 4) | (v.len() as u8 - 1));
        ext.extend_from_slice(v.as_bytes());
    }
    while ext.len() % 4 != 0 {
        ext.push(0);
    }
    let mut out = pkt[..12].to_vec();
    out[0] |= 0x10;
    out.extend_from_slice(&[0xbe, 0xde]);
    out.extend_from_slice(&((ext.len() / 4) as u16).to_be_bytes());
    out.extend_from_slice(&ext);
    out.extend_from_slice(&pkt[12..]);
    out
}

fn ok(e: &mut Engine, body: Body) {
    let ev = e.handle_command(
        Instant::now(),
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
fn layers_are_bound_by_rid() {
    let now = Instant::now();
    let mut e = Engine::new(0, "127.0.0.1:9".parse().unwrap(), EngineConfig::default());
    let publisher: SocketAddr = "10.0.0.1:1".parse().unwrap();
    let subscriber: SocketAddr = "10.0.0.2:2".parse().unwrap();
    ok(&mut e, cmd::room(1));
    ok(&mut e, cmd::plain(1, 1, publisher));
    ok(&mut e, cmd::plain(1, 2, subscriber));
    ok(
        &mut e,
        Body::AddTrack(pb::AddTrack {
            room_id: 1,
            transport_id: 1,
            track_id: 1,
            kind: pb::MediaKind::Video as i32,
            codec: Some(pb::Codec {
                kind: pb::CodecKind::Vp8 as i32,
                payload_type: 96,
                clock_rate: 90_000,
            }),
            layers: ["q", "h", "f"]
                .iter()
                .enumerate()
                .map(|(i, r)| pb::Layer {
                    ssrc: 0,
                    rid: (*r).into(),
                    spatial: i as u32,
                    ..Default::default()
                })
                .collect(),
            nack: None,
            mid: "1".into(),
            mid_ext_id: u32::from(MID_EXT),
            rid_ext_id: u32::from(RID_EXT),
            ..Default::default()
        }),
    );
    ok(&mut e, cmd::down_track(1, 1, 1, 2, 77, 96, 1));
    let mut src = SimulcastSource::three_layers(0x500, 0);
    let mut eg = CollectEgress::default();
    let feed = |e: &mut Engine, eg: &mut CollectEgress, p: &[u8]| {
        eg.begin(p);
        e.handle_datagram(now, publisher, &mut p.to_vec(), eg);
    };
    // A wrong MID or an unknown RID binds nothing.
    let first = src.next_frame();
    feed(&mut e, &mut eg, &with_mid_rid(&first[0].1, "0", "q"));
    feed(&mut e, &mut eg, &with_mid_rid(&first[0].1, "1", "x"));
    assert_eq!(e.counters.dropped(DropReason::UnknownSsrc), 2);
    // The first frame with the extensions binds every layer (browsers send them until the
    // SSRC is known); later frames route by SSRC alone.
    for (layer, p) in &first {
        feed(
            &mut e,
            &mut eg,
            &with_mid_rid(p, "1", ["q", "h", "f"][*layer]),
        );
    }
    for _ in 0..5 {
        for (_, p) in src.next_frame() {
            feed(&mut e, &mut eg, &p);
        }
    }
    let out: Vec<_> = eg
        .take()
        .into_iter()
        .filter(|(to, _)| *to == subscriber)
        .collect();
    assert!(!out.is_empty());
    for (_, d) in &out {
        assert_eq!(Tag::read(d).unwrap().layer, 1, "only layer h (spatial 1)");
        assert_eq!(&d[8..12], &77u32.to_be_bytes());
    }
    // Layer h: 6 packets (keyframe ×3) then 2 per frame for 5 frames.
    assert_eq!(out.len(), 6 + 5 * 2);
    assert_eq!(e.counters.dropped(DropReason::UnknownSsrc), 2);
}
