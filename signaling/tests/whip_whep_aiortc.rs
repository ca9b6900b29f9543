//! WHIP and WHEP against aiortc, a real Python ICE/DTLS/SRTP stack: `prism serve --dev`
//! runs as a subprocess, and the clients in `tests/interop/` publish and view through it.
//!
//! What passing proves: a standard publisher connects over WHIP (RFC 9725) and is ended by
//! DELETE; viewers joining over WHEP decode its VP8 video and Opus audio; media survives
//! 5 % RTP loss between publisher and server, repaired through RTX (RFC 4588), while the
//! server sends the publisher receiver reports and the viewer sender reports; a late
//! viewer decodes its first frame within 1 s of connecting (so the server asks the
//! publisher for a keyframe); every packet a viewer gets carries its own negotiated header
//! extensions (mid, abs-send-time, audio level); bad tokens and bad
//! SDP are refused; a viewer of an emptied room does not crash the server.
//!
//! The clients run from the project venv (`scripts/setup.sh` makes it). Without it these
//! tests fail; `PRISM_SKIP_INTEROP=1` skips them. The tests share two cores, so they run
//! one at a time, each with its own server. Every subprocess has a timeout; the only timing
//! assertion is the 1 s first-frame requirement.

mod common;

use std::path::Path;
use std::thread;
use std::time::Duration;

use common::*;

const ROOM: &str = "interop";

fn publisher(py: &Path, server: &Server, seconds: &str, loss: Option<&str>) -> Client {
    let (url, tok) = (
        server.url(&format!("/whip/{ROOM}")),
        token(ROOM, "pub", &[]),
    );
    let mut args = vec!["--url", &url, "--token", &tok, "--seconds", seconds];
    if let Some(l) = loss {
        args.extend(["--relay-loss", l]);
    }
    client(py, "publisher", "whip_publish.py", &args)
}

fn viewer(py: &Path, server: &Server, name: &str, frames: &str, audio: &str) -> Client {
    let (url, tok) = (server.url(&format!("/whep/{ROOM}")), token(ROOM, name, &[]));
    let args = [
        "--url",
        &url,
        "--token",
        &tok,
        "--frames",
        frames,
        "--audio-frames",
        audio,
        "--timeout",
        "12",
    ];
    client(py, name, "whep_view.py", &args)
}

/// The sum over cores of a Prometheus counter from `GET /metrics`.
fn metric(server: &Server, name: &str) -> f64 {
    let (status, body) = http(server, "GET", "/metrics", None, None);
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn assert_published(p: &Outcome) {
    assert!(p.ok(), "the publisher failed:\n{p}");
    assert_eq!(p.summary["status"], 201, "{p}");
    assert!(p.summary["connected"] == true, "{p}");
}

fn assert_decoded(v: &Outcome, video: f64, audio: f64) {
    assert!(v.ok(), "{} did not reach its frame targets:\n{v}", v.name);
    assert!(v.num("video_frames") >= video, "{v}");
    assert!(v.num("audio_frames") >= audio, "{v}");
}

/// Every packet a viewer got carried the extensions it negotiated (aiortc: mid on both,
/// abs-send-time on video, audio level on audio), with its own mid for each section.
fn assert_viewer_extensions(v: &Outcome) {
    let ext = &v.summary["extensions"];
    for (kind, per_packet) in [("video", "abs_send_time"), ("audio", "audio_level")] {
        let e = &ext[kind];
        let packets = e["packets"].as_u64().unwrap_or(0);
        assert!(packets > 0, "no {kind} packets seen:\n{v}");
        assert_eq!(
            e["mids"],
            serde_json::json!([e["mid"].clone()]),
            "{kind} mid:\n{v}"
        );
        assert_eq!(
            e[per_packet].as_u64(),
            Some(packets),
            "{kind} {per_packet}:\n{v}"
        );
    }
}

#[test]
fn publisher_and_two_viewers_decode_video_and_audio() {
    let Some(py) = python("aiortc, av") else {
        return;
    };
    let _one_at_a_time = serial();
    let mut server = Server::start();

    let publisher = publisher(&py, &server, "15", None);
    thread::sleep(Duration::from_secs(2));
    let alice = viewer(&py, &server, "alice", "60", "50");
    let bob = viewer(&py, &server, "bob", "60", "50");
    let (alice, bob) = (alice.finish(), bob.finish());
    let publisher = publisher.finish();

    assert_published(&publisher);
    let deleted = publisher.num("delete_status");
    assert!(
        (200.0..300.0).contains(&deleted),
        "DELETE answered {deleted}:\n{publisher}"
    );
    for v in [&alice, &bob] {
        assert_decoded(v, 60.0, 50.0);
        assert_eq!(v.summary["width"], 320, "{v}");
        assert_eq!(v.summary["height"], 240, "{v}");
        assert_viewer_extensions(v);
    }
    server.assert_alive();
}

#[test]
fn viewer_decodes_through_five_percent_publisher_loss() {
    let Some(py) = python("aiortc, av") else {
        return;
    };
    let _one_at_a_time = serial();
    let mut server = Server::start();

    let publisher = publisher(&py, &server, "15", Some("0.05"));
    thread::sleep(Duration::from_secs(2));
    let carol = viewer(&py, &server, "carol", "60", "50").finish();
    let publisher = publisher.finish();

    assert_published(&publisher);
    let relay = &publisher.summary["relay"];
    println!("relay (RTP dropped, resent, by payload type): {relay}");
    // The answer accepts RTX, so retransmissions come with an RTX payload type, a third
    // one besides Opus and the video codec, and the server unwraps them into the stream.
    let rtx = relay["rtp_by_pt"].as_object().map_or(0, |pts| pts.len()) > 2;
    assert!(
        rtx,
        "the publisher sent no RTX: the server sent it no NACK, or refused RTX\n{publisher}"
    );
    let (received, recovered) = (
        metric(&server, "prism_rtx_received_total"),
        metric(&server, "prism_rtx_recovered_total"),
    );
    println!("RTX from the publisher: {received} unwrapped, {recovered} repaired a loss");
    assert!(recovered > 0.0, "no loss was repaired through RTX");
    assert!(metric(&server, "prism_receiver_reports_total") > 0.0);
    assert!(metric(&server, "prism_sender_reports_total") > 0.0);
    assert!(
        relay["dropped_rtp"].as_u64().unwrap_or(0) > 0,
        "the relay dropped nothing:\n{publisher}"
    );
    assert_decoded(&carol, 60.0, 50.0);
    server.assert_alive();
}

#[test]
fn late_viewer_decodes_first_frame_within_one_second() {
    let Some(py) = python("aiortc, av") else {
        return;
    };
    let _one_at_a_time = serial();
    let mut server = Server::start();

    let publisher = publisher(&py, &server, "14", None);
    thread::sleep(Duration::from_millis(5500));
    let dave = viewer(&py, &server, "dave", "30", "0").finish();
    let publisher = publisher.finish();

    assert_published(&publisher);
    assert_decoded(&dave, 30.0, 0.0);
    let first = dave.num("first_frame_after_connect_s");
    println!("late viewer: first decoded frame {first:.3} s after connected");
    // A frame can be decoded a few ms before the "connected" event is handled.
    assert!(
        (-0.05..1.0).contains(&first),
        "first frame {first} s after connected, want < 1.0 s:\n{dave}"
    );
    server.assert_alive();
}

#[test]
fn whip_refuses_bad_tokens_and_bad_sdp() {
    let _one_at_a_time = serial();
    let mut server = Server::start();
    let offer = include_str!("fixtures/aiortc_offer.sdp");
    let path = format!("/whip/{ROOM}");
    let cases: [(&str, Option<String>, &str, &[u16]); 5] = [
        ("no token", None, offer, &[401]),
        (
            "wrong secret",
            Some(token(ROOM, "eve", &["--api-secret", "wrong"])),
            offer,
            &[401],
        ),
        (
            "another room",
            Some(token("elsewhere", "eve", &[])),
            offer,
            &[401],
        ),
        (
            "--no-publish",
            Some(token(ROOM, "eve", &["--no-publish"])),
            offer,
            &[401, 403],
        ),
        (
            "malformed SDP",
            Some(token(ROOM, "eve", &[])),
            "this is not SDP\r\n",
            &[400],
        ),
    ];
    for (what, tok, body, want) in cases {
        let (status, resp) = http(&server, "POST", &path, tok.as_deref(), Some(body));
        println!("WHIP with {what}: {status}");
        assert!(
            want.contains(&status),
            "WHIP with {what}: {status}, want {want:?}\n{resp}"
        );
    }
    server.assert_alive();
}

#[test]
fn viewer_after_publisher_left_does_not_crash_the_server() {
    let Some(py) = python("aiortc, av") else {
        return;
    };
    let _one_at_a_time = serial();
    let mut server = Server::start();

    let publisher = publisher(&py, &server, "3", None).finish();
    assert_published(&publisher);
    let deleted = publisher.num("delete_status");
    assert!(
        (200.0..300.0).contains(&deleted),
        "DELETE answered {deleted}:\n{publisher}"
    );

    // No video is the right answer here (or a 404/409); only the server's health is asserted.
    let erin = viewer(&py, &server, "erin", "1", "0").finish();
    println!(
        "viewer of the emptied room: status {}, {} video frames",
        erin.summary["status"], erin.summary["video_frames"]
    );
    server.assert_alive();
}
