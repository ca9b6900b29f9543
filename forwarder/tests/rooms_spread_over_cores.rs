//! Rooms are placed on the least-loaded core, each core answers on its own UDP port, and
//! media flows on whichever core holds the room; stats cover every core.

use std::net::UdpSocket;
use std::time::Duration;

use pb::command::Body;
use prism_forwarder::io::DriverKind;
use prism_forwarder::runtime::{Forwarder, ForwarderConfig};
use prism_forwarder::testing::cmd;
use prism_proto::control as pb;

fn req(fwd: &Forwarder, body: Body) -> pb::event::Body {
    let ev = fwd.client().request(body, Duration::from_secs(5)).unwrap();
    match ev.body.unwrap() {
        pb::event::Body::Error(e) => panic!("{}", e.message),
        b => b,
    }
}

#[test]
fn rooms_are_spread_and_forward_on_their_core() {
    let fwd = Forwarder::start(ForwarderConfig {
        cores: vec![0, 1],
        pin: false,
        driver: DriverKind::Auto,
        ..Default::default()
    })
    .unwrap();
    let addrs = fwd.core_addrs();
    assert_eq!(addrs.len(), 2);
    assert_ne!(addrs[0].port(), addrs[1].port(), "a port per core");

    let mut cores = Vec::new();
    for room in 1..=4u64 {
        let pb::event::Body::RoomCreated(r) = req(&fwd, cmd::room(room)) else {
            panic!()
        };
        cores.push(r.core);
        // Give each room a publisher so the load is visible.
        req(
            &fwd,
            cmd::plain(room, room * 10, format!("127.0.0.1:{}", 40000 + room)),
        );
    }
    assert_eq!(cores.iter().filter(|&&c| c == 0).count(), 2, "{cores:?}");
    assert_eq!(cores.iter().filter(|&&c| c == 1).count(), 2, "{cores:?}");

    // A room on core 1 forwards through core 1's socket.
    let room = 1 + cores.iter().position(|&c| c == 1).unwrap() as u64;
    let publisher = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sub = UdpSocket::bind("127.0.0.1:0").unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let pb::event::Body::TransportCreated(t) = req(
        &fwd,
        cmd::plain(room, 1000, publisher.local_addr().unwrap()),
    ) else {
        panic!()
    };
    assert_eq!(t.local, addrs[1].to_string());
    req(&fwd, cmd::plain(room, 1001, sub.local_addr().unwrap()));
    req(&fwd, cmd::opus_track(room, 1000, 1, 77));
    req(&fwd, cmd::down_track(room, 1, 1, 1001, 88, 0, 0));
    let pkt = [0x80, 111, 0, 1, 0, 0, 0, 1, 0, 0, 0, 77, 0xaa, 0xbb];
    publisher.send_to(&pkt, addrs[1]).unwrap();
    let mut buf = [0u8; 64];
    let n = sub.recv(&mut buf).unwrap();
    assert_eq!(&buf[8..12], &88u32.to_be_bytes());
    assert_eq!(&buf[12..n], &[0xaa, 0xbb]);
    // The same packet sent to core 0 belongs to no transport there.
    publisher.send_to(&pkt, addrs[0]).unwrap();

    // A command for an unknown room is refused by the router.
    let ev = fwd
        .client()
        .request(
            Body::CloseRoom(pb::CloseRoom { room_id: 999 }),
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(matches!(ev.body, Some(pb::event::Body::Error(_))));

    std::thread::sleep(Duration::from_millis(100));
    let pb::event::Body::Stats(s) = req(&fwd, Body::GetStats(pb::GetStats {})) else {
        panic!()
    };
    assert_eq!(
        s.cores.iter().map(|c| c.core).collect::<Vec<_>>(),
        vec![0, 1]
    );
    let out: Vec<u64> = s
        .cores
        .iter()
        .map(|c| c.counters.as_ref().unwrap().packets_out)
        .collect();
    assert_eq!(out, vec![0, 1]);
    let unknown = s.cores[0].counters.as_ref().unwrap();
    assert_eq!(
        prism_forwarder::engine::stats::proto_drop(
            unknown,
            prism_forwarder::engine::DropReason::UnknownSource
        ),
        1
    );
    assert_eq!(s.cores.iter().map(|c| c.rooms).sum::<u32>(), 4);

    // Closing a room frees it on its core.
    req(&fwd, Body::CloseRoom(pb::CloseRoom { room_id: room }));
    let pb::event::Body::Stats(s) = req(&fwd, Body::GetStats(pb::GetStats {})) else {
        panic!()
    };
    assert_eq!(s.cores.iter().map(|c| c.rooms).sum::<u32>(), 3);
    assert_eq!(s.cores[1].tracks + s.cores[1].down_tracks, 0);
    fwd.shutdown();
}
