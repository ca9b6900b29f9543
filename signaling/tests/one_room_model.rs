//! One room model: WHIP and WHEP sessions are participants of the same rooms as LiveKit
//! clients. `prism serve --dev` runs as a subprocess; the WHIP publisher and WHEP viewers
//! are aiortc (`tests/interop/whip_publish.py`, `whep_view.py`), the LiveKit participants
//! LiveKit's Python SDK (`lk_watch.py` watches, `lk_publisher.py` publishes), and the
//! server API client is `livekit-api` (`lk_ingress_roomservice.py`).
//!
//! What passing proves:
//! - a WHIP publisher of audio and video is, for LiveKit SDK clients of its room, a remote
//!   participant named by its token's identity, of kind `INGRESS`, with one audio and one
//!   video track, both of which they subscribe to and decode; whether the SDK client was
//!   there first (the participant arrives) or joins later (it is in the JoinResponse);
//! - RoomService lists the WHIP participant (identity, kind, tracks) and removes it: the
//!   SDK clients see it leave, and its WHIP session is over (`DELETE` answers 404);
//! - a WHEP viewer decodes what SDK participants publish: the room's tracks
//!   (`POST /whep/{room}`), one participant's (`?participant=`) or one track
//!   (`?track=`), told apart by the colour of each publisher's video.
//!
//! The clients are driven step by step: each waits on the other's events (stdout lines),
//! never on a sleep. Every subprocess and every wait has a generous timeout; there is no
//! timing assertion.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use common::*;

/// How long to wait for a client's event: machines running these tests are loaded.
const EVENT: Duration = Duration::from_secs(60);
const WHIP_ID: &str = "whip-cam";

fn py() -> Option<PathBuf> {
    python("aiortc, av, livekit.rtc, livekit.api")
}

/// A WHIP publisher (aiortc, audio and video) that publishes until told `delete`.
fn whip_publisher(py: &Path, server: &Server, room: &str, identity: &str) -> Client {
    let (url, tok) = (
        server.url(&format!("/whip/{room}")),
        token(room, identity, &[]),
    );
    let args = [
        "--url",
        &url,
        "--token",
        &tok,
        "--until-told",
        "--seconds",
        "120",
        "--connect-timeout",
        "30",
    ];
    live_client(py, identity, "whip_publish.py", &args).timeout(Duration::from_secs(150))
}

/// Waits for a live client's event; on a timeout, fails with everything it printed.
fn expect_event(c: &mut Client, name: &str) -> Value {
    c.expect_event(name, EVENT)
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default()
}

/// "red", "blue" or "other": which of the test publishers' colours a mean RGB is.
fn colour(rgb: &Value) -> &'static str {
    match ints(rgb)[..] {
        [r, g, b] if r > b + 60 && r > g + 60 => "red",
        [r, g, b] if b > r + 60 && b > g + 60 => "blue",
        _ => "other",
    }
}

/// The watcher saw the WHIP publisher as an ingress participant with one audio and one
/// video track, subscribed to both and decoded them; `arrived` is "join" if it was in the
/// room when the watcher joined, "event" if it arrived later.
fn assert_sees_ingress(w: &Outcome, arrived: &str) {
    assert!(
        w.summary["connected"] == true,
        "{} did not connect:\n{w}",
        w.name
    );
    let p = &w.summary["participants"][WHIP_ID];
    assert!(
        p.is_object(),
        "{} never saw the WHIP publisher {WHIP_ID:?} as a participant of the room \
         (participants: {}):\n{w}",
        w.name,
        w.summary["participants"]
    );
    assert_eq!(
        p["kind_name"], "PARTICIPANT_KIND_INGRESS",
        "{}: the WHIP participant's kind:\n{w}",
        w.name
    );
    assert_eq!(
        p["arrived"], arrived,
        "{}: how the WHIP participant came into view:\n{w}",
        w.name
    );
    let tracks = tracks_of(&w.summary, WHIP_ID);
    let kinds: Vec<&str> = tracks.iter().map(|(k, _)| *k).collect();
    assert!(
        kinds.len() == 2 && kinds.contains(&"audio") && kinds.contains(&"video"),
        "{}: the WHIP participant's tracks are {kinds:?}, want one audio and one video:\n{w}",
        w.name
    );
    for (kind, t) in &tracks {
        assert_eq!(
            t["subscribed"], true,
            "{}: not subscribed to its {kind}:\n{w}",
            w.name
        );
    }
    let reached = w.summary["reached"]
        .as_array()
        .is_some_and(|r| r.iter().any(|i| i == WHIP_ID));
    assert!(
        reached,
        "{} did not decode enough of the WHIP participant's video and audio:\n{w}",
        w.name
    );
}

#[test]
fn whip_publisher_is_an_ingress_participant_for_sdk_subscribers() {
    let Some(py) = py() else { return };
    let _one_at_a_time = serial();
    let mut server = Server::start();
    let room = "one-room-whip";
    let wait_frames = [
        "--expect",
        WHIP_ID,
        "--until",
        "frames",
        "--video-frames",
        "30",
        "--audio-frames",
        "50",
        "--timeout",
        "60",
    ];

    // The SDK subscriber is there first; the WHIP publisher arrives.
    let mut early = lk_watch(&py, &server, room, "early", &wait_frames);
    let joined = expect_event(&mut early, "connected");
    assert_eq!(joined["present"], serde_json::json!([]), "{joined}");
    let mut cam = whip_publisher(&py, &server, room, WHIP_ID);
    let cam_connected = cam.wait_event("connected", EVENT).is_some();
    // Another SDK subscriber joins a room the WHIP publisher is already in.
    let late = cam_connected.then(|| lk_watch(&py, &server, room, "late", &wait_frames));
    let early = early.finish();
    let late = late.map(Client::finish);
    cam.tell("delete");
    let cam = cam.finish();

    assert!(
        cam_connected && cam.summary["status"] == 201,
        "the WHIP publisher did not connect:\n{cam}"
    );
    assert_sees_ingress(&early, "event");
    assert_sees_ingress(&late.unwrap(), "join");
    let deleted = cam.num("delete_status");
    assert!(
        cam.summary["ended_by"] == "told" && (200.0..300.0).contains(&deleted),
        "the WHIP session ended by itself, or DELETE answered {deleted}:\n{cam}"
    );
    server.assert_alive();
}

#[test]
fn room_service_lists_and_removes_a_whip_participant() {
    let Some(py) = py() else { return };
    let _one_at_a_time = serial();
    let mut server = Server::start();
    let room = "one-room-api";
    let mut watching = lk_watch(
        &py,
        &server,
        room,
        "watcher",
        &["--expect", WHIP_ID, "--until", "left", "--timeout", "120"],
    );
    expect_event(&mut watching, "connected");
    let mut cam = whip_publisher(&py, &server, room, WHIP_ID);
    let cam_connected = cam.wait_event("connected", EVENT).is_some();
    let api = cam_connected.then(|| {
        client(
            &py,
            "roomservice",
            "lk_ingress_roomservice.py",
            &[
                "--url",
                &server.http,
                "--room",
                room,
                "--identity",
                WHIP_ID,
                "--wait",
                "30",
            ],
        )
        .timeout(Duration::from_secs(90))
        .finish()
    });
    // Removed by the server API, the WHIP participant leaves the room: the watcher sees it
    // go before the publisher is told to DELETE its session.
    let removed = api.as_ref().is_some_and(Outcome::ok);
    let left = if removed {
        watching.wait_event_where("participant_disconnected", EVENT, |v| {
            v["identity"] == WHIP_ID
        })
    } else {
        None
    };
    cam.tell("delete");
    let cam = cam.finish();
    watching.tell("stop");
    let watching = watching.finish();

    assert!(
        cam_connected && cam.summary["status"] == 201,
        "the WHIP publisher did not connect:\n{cam}"
    );
    let api = api.unwrap();
    assert!(
        api.ok(),
        "RoomService could not list and remove the WHIP participant:\n{api}"
    );
    let p = &api.summary["participant"];
    assert_eq!(p["identity"], WHIP_ID, "{api}");
    assert_eq!(p["kind_name"], "INGRESS", "{api}");
    let mut types: Vec<&str> = p["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["type"].as_str())
        .collect();
    types.sort_unstable();
    assert_eq!(types, ["AUDIO", "VIDEO"], "the listed tracks:\n{api}");
    assert_eq!(api.summary["got"]["identity"], WHIP_ID, "{api}");
    let after = api.summary["after_remove"].as_array().unwrap();
    assert!(
        !after.iter().any(|i| i == WHIP_ID),
        "still listed after RemoveParticipant:\n{api}"
    );
    assert!(
        left.is_some(),
        "the watcher did not see the removed WHIP participant leave:\n{watching}"
    );
    assert_eq!(
        watching.summary["participants"][WHIP_ID]["kind_name"], "PARTICIPANT_KIND_INGRESS",
        "{watching}"
    );
    println!(
        "WHIP publisher after removal: {} (connection {})",
        cam.summary["ended_by"], cam.summary["state_before_delete"]
    );
    assert_eq!(
        cam.summary["delete_status"], 404,
        "DELETE of a removed WHIP session's Location:\n{cam}"
    );
    server.assert_alive();
}

/// A WHEP viewer (aiortc) of `/whep/{room}{query}`: video and, unless `audio` is "0",
/// audio frames to decode.
fn whep(py: &Path, server: &Server, room: &str, name: &str, query: &str, audio: &str) -> Outcome {
    let (url, tok) = (
        server.url(&format!("/whep/{room}{query}")),
        token(room, name, &[]),
    );
    let args = [
        "--url",
        &url,
        "--token",
        &tok,
        "--frames",
        "30",
        "--audio-frames",
        audio,
        "--timeout",
        "40",
    ];
    client(py, name, "whep_view.py", &args)
        .timeout(Duration::from_secs(90))
        .finish()
}

fn assert_whep_decoded(v: &Outcome, what: &str, want_colour: Option<&str>) {
    assert_eq!(
        v.summary["status"], 201,
        "WHEP {what}: the POST was not answered 201 Created:\n{v}"
    );
    assert!(v.ok(), "WHEP {what}: did not decode enough:\n{v}");
    if let Some(want) = want_colour {
        assert_eq!(
            colour(&v.summary["rgb"]),
            want,
            "WHEP {what}: the decoded video has mean colour {}:\n{v}",
            v.summary["rgb"]
        );
    }
}

#[test]
fn whep_viewer_decodes_sdk_tracks_by_room_participant_and_track() {
    let Some(py) = py() else { return };
    let _one_at_a_time = serial();
    let mut server = Server::start();
    let room = "one-room-whep";
    // Two SDK publishers, told apart by their video's colour.
    let mut a = lk_publisher(&py, &server, room, "a", "200,40,40", &[]);
    let mut b = lk_publisher(&py, &server, room, "b", "40,40,200", &[]);
    let a_tracks = expect_event(&mut a, "published");
    expect_event(&mut b, "published");
    let a_video = a_tracks["video"].as_str().unwrap().to_string();

    // Their media flows through the server: an SDK participant decodes both, and sees
    // which colour is whose (which also checks the colour measurement).
    let w = lk_watch(
        &py,
        &server,
        room,
        "w",
        &[
            "--expect",
            "a",
            "--expect",
            "b",
            "--until",
            "frames",
            "--video-frames",
            "10",
            "--audio-frames",
            "10",
        ],
    )
    .finish();

    let by_room = whep(&py, &server, room, "v-room", "", "20");
    let by_participant = whep(&py, &server, room, "v-b", "?participant=b", "20");
    let by_track = whep(
        &py,
        &server,
        room,
        "v-track",
        &format!("?track={a_video}"),
        "0",
    );
    a.tell("stop");
    b.tell("stop");
    let (a, b) = (a.finish(), b.finish());

    assert!(a.summary["publish_error"] == "", "{a}");
    assert!(b.summary["publish_error"] == "", "{b}");
    for (who, want) in [("a", "red"), ("b", "blue")] {
        let video: Vec<&Value> = tracks_of(&w.summary, who)
            .into_iter()
            .filter(|(k, _)| *k == "video")
            .map(|(_, t)| t)
            .collect();
        assert!(
            video.len() == 1 && video[0]["frames"].as_u64().unwrap_or(0) >= 10,
            "the SDK watcher did not decode {who}'s video:\n{w}"
        );
        assert_eq!(colour(&video[0]["rgb"]), want, "{who}'s colour:\n{w}");
    }

    assert_whep_decoded(&by_room, &format!("/whep/{room}"), None);
    let c = colour(&by_room.summary["rgb"]);
    assert!(
        c == "red" || c == "blue",
        "WHEP by room decoded neither publisher's video:\n{by_room}"
    );
    assert_whep_decoded(&by_participant, "?participant=b", Some("blue"));
    assert_whep_decoded(&by_track, &format!("?track={a_video}"), Some("red"));
    assert_eq!(
        by_track.num("audio_frames"),
        0.0,
        "?track= a video track also brought audio:\n{by_track}"
    );
    server.assert_alive();
}
