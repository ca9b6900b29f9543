//! A WebRTC session over the AF_XDP driver: `prism serve --driver af_xdp` in one network
//! namespace, aiortc clients in another, a veth pair between them. Signaling (HTTP over
//! TCP) goes through the kernel, which the XDP program passes; every media datagram
//! (STUN, DTLS, SRTP, SRTCP) goes through the AF_XDP socket.
//!
//! What passing proves: an aiortc publisher connects over WHIP and a viewer over WHEP
//! (ICE, DTLS and SRTP all complete on the AF_XDP path) and decodes its VP8 video and Opus
//! audio, the server reports the af_xdp driver, and its receive batches (counted on the
//! AF_XDP ring only) show the media came that way. Asked for `--xdp-bind auto`, it runs in
//! copy mode (veth has no zero-copy) and `/metrics` says so, with the frame-level
//! counters of the driver.
//!
//! Needs root (namespaces, XDP) and the project venv; skips with the reason otherwise.

mod common;

use std::time::Duration;

use common::netns::{veth, Netns, NsServer};
use common::{client_under, python, serial, token};

const SERVER_IP: &str = "10.78.0.2";
const ROOM: &str = "xdp";

#[test]
fn whip_publisher_and_whep_viewer_over_af_xdp() {
    if let Some(why) = Netns::available() {
        eprintln!("skipped: {why}");
        return;
    }
    let Some(py) = python("aiortc, av") else {
        return;
    };
    let _one_at_a_time = serial();
    let clients = Netns::new("xdp-c");
    let server = Netns::new("xdp-s");
    veth(
        &clients,
        "c0",
        "10.78.0.1/24",
        &server,
        "s0",
        &format!("{SERVER_IP}/24"),
    );
    let prism = NsServer::start(
        &server,
        &[
            "--driver",
            "af_xdp",
            "--interface",
            "s0",
            "--media-ip",
            SERVER_IP,
            "--tcp-port",
            "0",
            "--xdp-bind",
            "auto",
        ],
    );
    assert!(
        prism.listening.contains("driver af_xdp"),
        "{}",
        prism.listening
    );

    let base = format!("http://{SERVER_IP}:7880");
    // aiortc's one host candidate: the client namespace's address.
    let mut under = clients.prefix();
    under.extend(["env".to_string(), "PRISM_ICE_HOST=10.78.0.1".to_string()]);
    let (whip, pub_token) = (format!("{base}/whip/{ROOM}"), token(ROOM, "pub", &[]));
    let publisher = client_under(
        &under,
        &py,
        "publisher",
        "whip_publish.py",
        &["--url", &whip, "--token", &pub_token, "--seconds", "12"],
    );
    std::thread::sleep(Duration::from_secs(2));
    let (whep, view_token) = (format!("{base}/whep/{ROOM}"), token(ROOM, "viewer", &[]));
    let viewer = client_under(
        &under,
        &py,
        "viewer",
        "whep_view.py",
        &[
            "--url",
            &whep,
            "--token",
            &view_token,
            "--frames",
            "60",
            "--audio-frames",
            "50",
            "--timeout",
            "12",
        ],
    )
    .finish();
    // Receive batches are counted on the AF_XDP ring only (datagrams the kernel delivers
    // to the media socket instead are not batched): media came through the bypass.
    let metrics = clients.exec(&["curl", "-sf", &format!("{base}/metrics")]);
    let text = String::from_utf8_lossy(&metrics.stdout);
    for line in [
        "prism_xdp_zero_copy{core=\"0\",interface=\"s0\",queue=\"0\"} 0",
        "prism_xdp_kernel_path_total{core=\"0\",direction=\"received\"}",
        "prism_xdp_socket_drops_total{core=\"0\",reason=\"rx_ring_full\"}",
    ] {
        assert!(text.contains(line), "/metrics has {line}:\n{text}");
    }
    let batches: f64 = text
        .lines()
        .filter(|l| l.starts_with("prism_recv_batches_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(batches > 100.0, "AF_XDP receive batches: {batches}");
    let publisher = publisher.finish();
    assert!(publisher.ok(), "the publisher failed:\n{publisher}");
    assert_eq!(publisher.summary["status"], 201, "{publisher}");
    assert!(viewer.ok(), "the viewer did not decode:\n{viewer}");
    assert!(viewer.num("video_frames") >= 60.0, "{viewer}");
    assert!(viewer.num("audio_frames") >= 50.0, "{viewer}");
}
