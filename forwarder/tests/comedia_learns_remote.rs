//! Comedia: a plain transport created without a remote address learns it from the first
//! datagram that carries one of its SSRCs (what ffmpeg or GStreamer behind NAT need), and
//! a subscriber-only transport learns it from its first RTCP. Datagrams from strangers, or
//! carrying SSRCs of other transports, bind nothing.

use std::net::SocketAddr;
use std::time::Instant;

use prism_forwarder::engine::{DropReason, Engine, EngineConfig};
use prism_forwarder::testing::cmd::{self, expect_ok};
use prism_forwarder::testing::{CollectEgress, SimulcastSource};
use prism_forwarder::wire::rtp::RtpPacket;

#[test]
fn comedia_transports_learn_their_remote() {
    let now = Instant::now();
    let mut e = Engine::new(0, "127.0.0.1:9".parse().unwrap(), EngineConfig::default());
    expect_ok(&mut e, now, cmd::room(1));
    expect_ok(&mut e, now, cmd::comedia(1, 1));
    expect_ok(&mut e, now, cmd::comedia(1, 2));
    let mut src = SimulcastSource::three_layers(0x100, 0);
    expect_ok(&mut e, now, cmd::vp8_track(1, 1, 1, &src.ssrcs()[..1]));
    expect_ok(&mut e, now, cmd::down_track(1, 1, 1, 2, 0xd00d, 96, 0));
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
