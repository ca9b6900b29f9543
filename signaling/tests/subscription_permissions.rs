//! Who may subscribe to a track, and what its publisher is told about its subscribers, with
//! LiveKit's Python SDK on both ends: `prism serve --dev` as a subprocess, publishers from
//! `tests/interop/lk_publisher.py`, subscribers from `lk_watch.py`, driven step by step.
//!
//! What passing proves:
//! - a publisher that allows only `b` to subscribe
//!   (`set_track_subscription_permissions(allow_all_participants=False, …)`, the
//!   `SubscriptionPermission` request) is received and decoded by `b`, while `c`, in the
//!   room and told about the tracks, is not subscribed to them; once the publisher allows
//!   everyone, `c` gets them and decodes them;
//! - a publisher's SDK is told (`local_track_subscribed`, from the server's
//!   `TrackSubscribed`) when each of its tracks gets its first subscriber.
//!
//! The clients wait on each other's events, never on a sleep. "`c` is not subscribed" is
//! checked once `b`, who joined with `c`, has decoded frames: a server that ignored the
//! permissions would have subscribed both by then. Every wait has a generous timeout; there
//! is no timing assertion.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use common::*;

const EVENT: Duration = Duration::from_secs(60);

fn py() -> Option<PathBuf> {
    python("livekit.rtc")
}

#[test]
fn only_allowed_participants_receive_a_track_until_all_are_allowed() {
    let Some(py) = py() else { return };
    let _one_at_a_time = serial();
    let mut server = Server::start();
    let room = "permissions";
    let mut a = lk_publisher(&py, &server, room, "a", "200,40,40", &["--allow-only", "b"]);
    let published = a.expect_event("published", EVENT);
    let expect_a = [
        "--expect",
        "a",
        "--video-frames",
        "30",
        "--audio-frames",
        "20",
        "--timeout",
        "120",
    ];
    let mut b = lk_watch(
        &py,
        &server,
        room,
        "b",
        &[&expect_a[..], &["--until", "frames"]].concat(),
    );
    let mut c = lk_watch(
        &py,
        &server,
        room,
        "c",
        &[&expect_a[..], &["--until", "told"]].concat(),
    );
    // Both joined after a published: a's tracks are in their JoinResponse.
    c.expect_event("connected", EVENT);
    let b_decoded = b.wait_event("frames", EVENT);
    c.tell("report");
    let c_before = c.expect_event("report", EVENT);

    a.tell("allow-all");
    // (A server that ignored the permissions had c decode a's media already.)
    let early = c_before["reached"]
        .as_array()
        .is_some_and(|r| r.contains(&"a".into()));
    let c_decoded = if early {
        Some(Value::Null)
    } else {
        c.wait_event("frames", EVENT)
    };
    c.tell("stop");
    a.tell("stop");
    let (b, c) = (b.finish(), c.finish());
    let a = a.finish();

    assert!(a.summary["publish_error"] == "", "{a}");
    assert!(
        b_decoded.is_some(),
        "b, whom a allows, did not decode a's tracks:\n{b}\n{a}"
    );
    let told: Vec<&Value> = tracks_of(&c_before, "a").into_iter().map(|t| t.1).collect();
    assert_eq!(
        told.len(),
        2,
        "c was not told about a's two tracks ({published}): {c_before}"
    );
    let subscribed: Vec<&Value> = told
        .iter()
        .copied()
        .filter(|t| t["subscribed"] == true)
        .collect();
    println!(
        "c, while only b was allowed: subscription failures {}",
        c_before["subscription_failures"]
    );
    assert!(
        subscribed.is_empty(),
        "c was subscribed to a's tracks though a allows only b: {}\n{c}",
        Value::from(subscribed.into_iter().cloned().collect::<Vec<_>>())
    );
    assert!(
        told.iter().all(|t| t["frames"] == 0),
        "c decoded a's media though a allows only b: {c_before}"
    );
    assert!(
        c_decoded.is_some(),
        "c did not get a's tracks once a allowed everyone:\n{c}\n{a}"
    );
    server.assert_alive();
}

#[test]
fn publisher_is_told_when_its_tracks_get_a_first_subscriber() {
    let Some(py) = py() else { return };
    let _one_at_a_time = serial();
    let mut server = Server::start();
    let room = "track-subscribed";
    let mut a = lk_publisher(&py, &server, room, "a", "200,40,40", &[]);
    let published = a.expect_event("published", EVENT);
    let mut sids = vec![
        published["video"].as_str().unwrap().to_string(),
        published["audio"].as_str().unwrap().to_string(),
    ];
    let mut b = lk_watch(
        &py,
        &server,
        room,
        "b",
        &[
            "--expect",
            "a",
            "--until",
            "frames",
            "--video-frames",
            "10",
            "--audio-frames",
            "10",
        ],
    );
    let b_decoded = b.wait_event("frames", EVENT);
    // b has a's media: the server has subscribed it, and tells a once per track.
    let mut told = Vec::new();
    while !sids.is_empty() {
        let Some(ev) = a.wait_event("local_track_subscribed", EVENT) else {
            break;
        };
        let sid = ev["sid"].as_str().unwrap_or("").to_string();
        sids.retain(|s| *s != sid);
        told.push(sid);
    }
    a.tell("stop");
    let (a, b) = (a.finish(), b.finish());

    assert!(
        b_decoded.is_some(),
        "b did not decode a's tracks:\n{b}\n{a}"
    );
    assert!(
        sids.is_empty(),
        "a's SDK was not told that {sids:?} got a subscriber (told: {told:?}):\n{a}"
    );
    server.assert_alive();
}
