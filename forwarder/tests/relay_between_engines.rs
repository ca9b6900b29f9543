//! Relay transports between two forwarders, in virtual time: what a room spanning two
//! nodes runs on. An origin engine forwards each simulcast layer of a publisher's track on
//! its own pinned relay down track, SRTP-protected, to a remote engine, where the relay's
//! track fans out to a subscriber that chooses its layer as usual.
//!
//! Shown here: two rooms' relays share one pair of cores (routed by SSRC, not address);
//! 5 % of the relayed packets are lost and the remote's NACKs repair every one of them from
//! the origin's history; a subscriber's PLI crosses the relay back to the publisher; the
//! publisher's sender report reaches the subscriber translated twice; a forged packet is
//! dropped by SRTP and one with an unknown SSRC is counted, neither disturbing the relay.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pb::command::Body;
use prism_forwarder::engine::{DropReason, Engine, EngineConfig};
use prism_forwarder::ids::Ssrc;
use prism_forwarder::testing::{cmd, CollectEgress, SimulcastSource, Tag};
use prism_forwarder::wire::rtcp::{emit_pli, emit_sr, SenderInfo};
use prism_proto::control as pb;

const ORIGIN: &str = "127.0.0.1:7000";
const REMOTE: &str = "127.0.0.1:8000";
const PUBLISHER: &str = "10.0.0.1:5000";
const PUBLISHER2: &str = "10.0.0.2:5000";
const SUBSCRIBER: &str = "10.0.0.9:6000";
const SUBSCRIBER2: &str = "10.0.0.9:6001";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn keys(send: u8, recv: u8) -> pb::SrtpParams {
    pb::SrtpParams {
        profile: "AEAD_AES_128_GCM".into(),
        send_key: vec![send; 16],
        send_salt: vec![send + 1; 12],
        recv_key: vec![recv; 16],
        recv_salt: vec![recv + 1; 12],
    }
}

fn relay(
    room: u64,
    transport: u64,
    remote: &str,
    srtp: pb::SrtpParams,
    local: u32,
    peer: u32,
) -> Body {
    Body::CreatePlainTransport(pb::CreatePlainTransport {
        room_id: room,
        transport_id: transport,
        remote: remote.into(),
        comedia: false,
        srtp: Some(srtp),
        relay: Some(pb::RelayParams {
            local_rtcp_ssrc: local,
            peer_rtcp_ssrc: peer,
        }),
    })
}

fn pinned(room: u64, track: u64, dt: u64, transport: u64, ssrc: u32, layer: u32) -> Body {
    match cmd::down_track(room, track, dt, transport, ssrc, 0, layer) {
        Body::AddDownTrack(mut d) => {
            d.pinned = true;
            Body::AddDownTrack(d)
        }
        other => other,
    }
}

fn opus(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xfc; 40]);
    p
}

fn is_rtcp_type(d: &[u8], pt: u8, fmt: Option<u8>) -> bool {
    d.len() >= 8 && d[1] == pt && fmt.is_none_or(|f| d[0] & 0x1f == f)
}

/// Two engines and the wire between them; every `relay_lost`-th RTP datagram from the
/// origin to the remote is lost.
struct Net {
    origin: Engine,
    remote: Engine,
    now: Instant,
    relayed: u64,
    lost: u64,
    /// What reached each outside address, in order.
    to_publisher: Vec<Vec<u8>>,
    to_subscriber: Vec<Vec<u8>>,
    to_subscriber2: Vec<Vec<u8>>,
}

impl Net {
    /// Delivers everything both engines sent, until nothing moves.
    fn settle(
        &mut self,
        mut from_origin: Vec<(SocketAddr, Vec<u8>)>,
        mut from_remote: Vec<(SocketAddr, Vec<u8>)>,
    ) {
        while !from_origin.is_empty() || !from_remote.is_empty() {
            let mut eg = CollectEgress::default();
            for (to, d) in from_origin.drain(..) {
                if to == addr(REMOTE) {
                    let rtp = d.len() > 1 && !(192..=223).contains(&d[1]);
                    if rtp {
                        self.relayed += 1;
                        if self.relayed % 20 == 7 {
                            self.lost += 1;
                            continue;
                        }
                    }
                    eg.feed(&mut self.remote, self.now, addr(ORIGIN), &d);
                } else if to == addr(PUBLISHER) || to == addr(PUBLISHER2) {
                    self.to_publisher.push(d);
                }
            }
            from_remote.extend(eg.take());
            let mut eg = CollectEgress::default();
            for (to, d) in from_remote.drain(..) {
                if to == addr(ORIGIN) {
                    eg.feed(&mut self.origin, self.now, addr(REMOTE), &d);
                } else if to == addr(SUBSCRIBER) {
                    self.to_subscriber.push(d);
                } else if to == addr(SUBSCRIBER2) {
                    self.to_subscriber2.push(d);
                }
            }
            from_origin.extend(eg.take());
        }
    }

    fn publish(&mut self, from: &str, d: &[u8]) {
        let mut eg = CollectEgress::default();
        eg.feed(&mut self.origin, self.now, addr(from), d);
        self.settle(eg.take(), Vec::new());
    }

    fn subscriber_sends(&mut self, from: &str, d: &[u8]) {
        let mut eg = CollectEgress::default();
        eg.feed(&mut self.remote, self.now, addr(from), d);
        self.settle(Vec::new(), eg.take());
    }

    fn tick(&mut self, step: Duration) {
        self.now += step;
        let mut a = CollectEgress::default();
        self.origin.handle_timeout(self.now, &mut a);
        let mut b = CollectEgress::default();
        self.remote.handle_timeout(self.now, &mut b);
        self.settle(a.take(), b.take());
    }
}

#[test]
fn relay_carries_layers_between_engines_and_repairs_loss() {
    let t0 = Instant::now();
    let mut origin = Engine::new(0, addr(ORIGIN), EngineConfig::default());
    let mut remote = Engine::new(0, addr(REMOTE), EngineConfig::default());
    let ok = |e: &mut Engine, b: Body| {
        cmd::expect_ok(e, t0, b);
    };

    // Room 1 on the origin: a three-layer VP8 publisher, each layer relayed pinned.
    let mut src = SimulcastSource::three_layers(0x1000, 90);
    let pub_ssrcs = src.ssrcs();
    let relay_ssrcs = [0xA000_0001u32, 0xA000_0002, 0xA000_0003];
    ok(&mut origin, cmd::room(1));
    ok(&mut origin, cmd::plain(1, 11, PUBLISHER));
    ok(&mut origin, cmd::vp8_track(1, 11, 12, &pub_ssrcs));
    ok(
        &mut origin,
        relay(1, 13, REMOTE, keys(1, 3), 0xC001, 0xD001),
    );
    for (i, s) in relay_ssrcs.iter().enumerate() {
        ok(&mut origin, pinned(1, 12, 20 + i as u64, 13, *s, i as u32));
    }
    // Room 2 on the origin: an audio publisher, relayed over the same pair of cores.
    ok(&mut origin, cmd::room(2));
    ok(&mut origin, cmd::plain(2, 31, PUBLISHER2));
    ok(&mut origin, cmd::opus_track(2, 31, 32, 0x2000));
    ok(
        &mut origin,
        relay(2, 33, REMOTE, keys(5, 7), 0xC002, 0xD002),
    );
    ok(&mut origin, pinned(2, 32, 34, 33, 0xB000_0001, 0));

    // Their copies on the remote: relay tracks with the relay SSRCs, and a subscriber each.
    let relay_ssrcs_typed: Vec<Ssrc> = relay_ssrcs.iter().map(|s| Ssrc(*s)).collect();
    ok(&mut remote, cmd::room(101));
    ok(
        &mut remote,
        relay(101, 113, ORIGIN, keys(3, 1), 0xD001, 0xC001),
    );
    ok(
        &mut remote,
        cmd::vp8_track(101, 113, 112, &relay_ssrcs_typed),
    );
    ok(&mut remote, cmd::plain(101, 114, SUBSCRIBER));
    ok(
        &mut remote,
        cmd::down_track(101, 112, 115, 114, 0x5555, 0, 2),
    );
    ok(&mut remote, cmd::room(102));
    ok(
        &mut remote,
        relay(102, 133, ORIGIN, keys(7, 5), 0xD002, 0xC002),
    );
    ok(&mut remote, cmd::opus_track(102, 133, 132, 0xB000_0001));
    ok(&mut remote, cmd::plain(102, 134, SUBSCRIBER2));
    ok(
        &mut remote,
        cmd::down_track(102, 132, 135, 134, 0x6666, 0, 0),
    );

    // Refusals: a relay SSRC already routed, and a relay without SSRCs.
    let dup = remote.handle_command(
        t0,
        pb::Command {
            request_id: 9,
            body: Some(relay(102, 140, ORIGIN, keys(9, 9), 0xD009, 0xC002)),
        },
    );
    assert!(
        matches!(&dup.body, Some(pb::event::Body::Error(e)) if e.message.contains("relay")),
        "{dup:?}"
    );
    let bad = remote.handle_command(
        t0,
        pb::Command {
            request_id: 10,
            body: Some(relay(102, 141, ORIGIN, keys(9, 9), 0, 0)),
        },
    );
    assert!(
        matches!(&bad.body, Some(pb::event::Body::Error(_))),
        "{bad:?}"
    );

    let mut net = Net {
        origin,
        remote,
        now: t0,
        relayed: 0,
        lost: 0,
        to_publisher: Vec::new(),
        to_subscriber: Vec::new(),
        to_subscriber2: Vec::new(),
    };
    let mut sent_top = Vec::new();
    for frame in 0..300u64 {
        for (layer, p) in src.next_frame() {
            if layer == 2 {
                sent_top.push(Tag::read(&p).unwrap());
            }
            net.publish(PUBLISHER, &p);
        }
        net.publish(PUBLISHER2, &opus(0x2000, frame as u16));
        if frame == 10 {
            // The publisher's sender report for its top layer.
            let mut b = [0u8; 64];
            let info = SenderInfo {
                ssrc: pub_ssrcs[2],
                ntp_timestamp: 0xE000_0000_8000_0000,
                rtp_timestamp: 123_456,
                packet_count: 1,
                octet_count: 1,
            };
            let n = emit_sr(&mut b, &info, &[]).unwrap();
            net.publish(PUBLISHER, &b[..n]);
        }
        if frame == 200 {
            // Steady state: any PLI the publisher gets from now on comes from this one.
            net.to_publisher.clear();
            let mut b = [0u8; 32];
            let n = emit_pli(&mut b, Ssrc(0x7777), Ssrc(0x5555)).unwrap();
            net.subscriber_sends(SUBSCRIBER, &b[..n]);
            let pli_to_top = net
                .to_publisher
                .iter()
                .any(|d| is_rtcp_type(d, 206, Some(1)) && d[8..12] == pub_ssrcs[2].0.to_be_bytes());
            assert!(
                pli_to_top,
                "the subscriber's PLI reached the publisher's top layer"
            );
        }
        if frame == 250 {
            // A forged datagram with a relay SSRC (fails SRTP) and one with an unknown SSRC,
            // from the origin's address: dropped and counted, the relay carries on.
            let mut forged = opus(0xA000_0003, 7);
            forged.extend_from_slice(&[0; 16]);
            let mut eg = CollectEgress::default();
            eg.feed(&mut net.remote, net.now, addr(ORIGIN), &forged);
            eg.feed(
                &mut net.remote,
                net.now,
                addr(ORIGIN),
                &opus(0x0BAD_0BAD, 7),
            );
            assert!(eg.take().is_empty());
        }
        for _ in 0..3 {
            net.tick(Duration::from_millis(11));
        }
    }
    for _ in 0..50 {
        net.tick(Duration::from_millis(20));
    }

    // Every top-layer packet from the subscriber's first one on arrived, losses repaired.
    let got: std::collections::HashSet<(u64, u16)> = net
        .to_subscriber
        .iter()
        .filter(|d| d.len() > 12 && d[1] & 0x7f == 96)
        .filter_map(|d| Tag::read(d))
        .filter(|t| t.layer == 2)
        .map(|t| (t.frame, t.index))
        .collect();
    let first = got
        .iter()
        .map(|t| t.0)
        .min()
        .expect("the subscriber got video");
    assert!(first < 100, "the subscriber started at frame {first}");
    let missing: Vec<_> = sent_top
        .iter()
        .filter(|t| t.frame >= first && !got.contains(&(t.frame, t.index)))
        .collect();
    assert!(net.lost > 100, "{} relayed packets lost", net.lost);
    assert!(
        missing.is_empty(),
        "{} of {} top-layer packets missing: {:?}",
        missing.len(),
        sent_top.len(),
        &missing[..missing.len().min(5)]
    );

    // The sender report crossed, in the subscriber's stream.
    assert!(
        net.to_subscriber
            .iter()
            .any(|d| is_rtcp_type(d, 200, None) && d[4..8] == 0x5555u32.to_be_bytes()),
        "a sender report reached the subscriber"
    );
    // The other room's audio arrived over the same pair of cores.
    let audio = net
        .to_subscriber2
        .iter()
        .filter(|d| d.len() > 12 && d[1] & 0x7f == 111)
        .count();
    assert!(audio > 250, "{audio} audio packets in the second room");

    let stats = net.remote.counters;
    assert!(stats.nacks_sent > 0);
    assert_eq!(
        stats.dropped(DropReason::UnknownSource),
        1,
        "the unknown SSRC"
    );
    assert!(
        stats.dropped(DropReason::SrtpAuthFailed) >= 1,
        "the forged packet"
    );
    assert!(net.origin.counters.retransmits_sent >= net.lost);
}
