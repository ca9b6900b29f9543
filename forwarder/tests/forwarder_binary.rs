//! The `prism-forwarder` binary runs alone beside another signaling front end: started
//! with a Unix control socket, it is driven with protobuf frames from another process,
//! forwards media, reports stats, and stops cleanly on SIGTERM.

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pb::command::Body;
use prism_forwarder::control::socket::{ControlListen, SocketControlClient};
use prism_forwarder::testing::cmd;
use prism_forwarder::wire::rtp::RtpPacket;
use prism_proto::control as pb;

fn ok(c: &mut SocketControlClient, body: Body) -> pb::Event {
    let ev = c.request(body, Duration::from_secs(5)).expect("answer");
    assert!(
        !matches!(ev.body, Some(pb::event::Body::Error(_))),
        "{ev:?}"
    );
    ev
}

#[test]
fn binary_is_driven_over_its_control_socket() {
    let dir = std::env::temp_dir().join(format!("prism-fwd-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("control.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_prism-forwarder"))
        .args([
            "--control-unix",
            sock.to_str().unwrap(),
            "--cores",
            "0",
            "--no-pin",
        ])
        .args(["--log", "warn"])
        .stdout(Stdio::null())
        .spawn()
        .expect("prism-forwarder starts");
    let listen = ControlListen::Unix(sock.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut c = loop {
        match SocketControlClient::connect(&listen, None) {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("control socket never came up: {e}"),
        }
    };

    let publisher = UdpSocket::bind("127.0.0.1:0").unwrap();
    let subscriber = UdpSocket::bind("127.0.0.1:0").unwrap();
    subscriber
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    ok(&mut c, cmd::room(5));
    let created = ok(&mut c, cmd::comedia(5, 1));
    let Some(pb::event::Body::TransportCreated(t)) = created.body else {
        panic!("{created:?}")
    };
    let media: std::net::SocketAddr = t.local.parse().unwrap();
    ok(&mut c, cmd::plain(5, 2, subscriber.local_addr().unwrap()));
    ok(&mut c, cmd::opus_track(5, 1, 1, 0xa0d1));
    ok(&mut c, cmd::down_track(5, 1, 1, 2, 0xbeef, 100, 0));
    // One Opus packet from the (comedia) publisher.
    let mut pkt = vec![0x80, 111, 0x12, 0x34, 0, 0, 0x03, 0xc0, 0, 0, 0xa0, 0xd1];
    pkt.extend_from_slice(b"opus payload");
    publisher.send_to(&pkt, media).unwrap();
    let mut buf = [0u8; 1500];
    let n = subscriber.recv(&mut buf).expect("forwarded");
    let p = RtpPacket::new_checked(&buf[..n]).unwrap();
    assert_eq!(
        (p.ssrc().0, p.payload_type().0, p.payload()),
        (0xbeef, 100, &b"opus payload"[..])
    );

    let stats = ok(&mut c, Body::GetStats(pb::GetStats {}));
    let Some(pb::event::Body::Stats(s)) = stats.body else {
        panic!()
    };
    assert_eq!(s.cores.len(), 1);
    assert_eq!(s.cores[0].counters.as_ref().unwrap().packets_out, 1);

    // Bad commands get an error event, not a crash.
    let ev = c
        .request(
            Body::RemoveTrack(pb::RemoveTrack {
                room_id: 5,
                track_id: 99,
            }),
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(matches!(ev.body, Some(pb::event::Body::Error(_))));

    // SIGTERM stops it cleanly and removes the socket file.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(!sock.exists(), "control socket removed");
    let _ = std::fs::remove_dir_all(&dir);
}
