//! RTMP ingress end to end: `prism serve --dev` as a subprocess (RTMP on a free port), an
//! ingress created with LiveKit's server API client (`livekit-api`, `lk_ingress_api.py`),
//! FFmpeg pushing H.264 and AAC to it over RTMP, and LiveKit's Python SDK subscribing
//! (`lk_watch.py`).
//!
//! What passing proves:
//! - CreateIngress (RTMP) gives an `rtmp://` URL on Prism's RTMP port and a stream key;
//!   FFmpeg publishing to `URL/KEY` becomes a participant of kind `INGRESS` with the
//!   ingress's identity, an H.264 track (passed through) and an Opus track (transcoded
//!   from AAC); the SDK subscriber decodes at least 100 video frames and receives audio;
//! - ListIngress shows the ingress `ENDPOINT_PUBLISHING` with its tracks and the input's
//!   video and audio; DeleteIngress ends the session (FFmpeg's connection is closed, the
//!   subscriber sees the participant leave) and the ingress is gone;
//! - a wrong stream key is refused (FFmpeg reports the server's reason), so is a second
//!   encoder on a key in use, each counted in `/metrics` by reason;
//! - bad input: garbage instead of a handshake and a truncated handshake are closed and
//!   counted; an unsupported codec (Sorenson H.263) puts the ingress in `ENDPOINT_ERROR`
//!   with the codec named; the server stays up throughout.
//!
//! Every wait is on an event (a client's line, a process exit, a closed socket) with a
//! generous limit; nothing is timed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

const EVENT: Duration = Duration::from_secs(90);

fn py() -> Option<PathBuf> {
    let py = python("livekit.rtc, livekit.api")?;
    let ok = Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ffmpeg is required (scripts/setup.sh installs it)");
    Some(py)
}

fn api(py: &Path, server: &Server) -> Client {
    let mut c = live_client(
        py,
        "ingress-api",
        "lk_ingress_api.py",
        &["--url", &server.http],
    )
    .timeout(Duration::from_secs(300));
    c.expect_event("ready", EVENT);
    c
}

/// FFmpeg pushing test video (H.264 baseline, 30 fps, a keyframe a second) and a sine
/// (AAC) in real time to `url`, for at most `seconds`.
fn ffmpeg_push(url: &str, seconds: u32, video_codec: &[&str], audio: bool) -> Child {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"]);
    if audio {
        cmd.args(["-f", "lavfi", "-i", "sine=f=440"]);
    }
    cmd.args(video_codec);
    if audio {
        cmd.args(["-c:a", "aac"]);
    } else {
        cmd.arg("-an");
    }
    cmd.args(["-t", &seconds.to_string(), "-f", "flv", url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning ffmpeg")
}

const H264: &[&str] = &[
    "-c:v",
    "libx264",
    "-profile:v",
    "baseline",
    "-tune",
    "zerolatency",
    "-preset",
    "ultrafast",
    "-g",
    "30",
];

/// Waits for `child` to exit (at most `within`); its status and stderr. Killed if late.
fn wait_exit(mut child: Child, within: Duration) -> (Option<std::process::ExitStatus>, String) {
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status, err)
}

fn metric(server: &Server, reason: &str) -> u64 {
    let (status, body) = http(server, "GET", "/metrics", None, None);
    assert_eq!(status, 200, "{body}");
    let key = format!("prism_ingress_refused_total{{reason=\"{reason}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn status_of(info: &Value) -> &str {
    // Protobuf's JSON mapping leaves out the default (ENDPOINT_INACTIVE).
    info["state"]["status"]
        .as_str()
        .unwrap_or("ENDPOINT_INACTIVE")
}

#[test]
fn ffmpeg_over_rtmp_is_an_ingress_participant_that_sdks_decode() {
    let Some(py) = py() else { return };
    let mut server = Server::start();
    let rtmp = rtmp_addr(&server);
    let mut api = api(&py, &server);

    api.tell("create rtmp-room obs-cam");
    let info = api.expect_event("created", EVENT)["info"].clone();
    let (id, key, url) = (
        info["ingress_id"].as_str().unwrap().to_string(),
        info["stream_key"].as_str().unwrap().to_string(),
        info["url"].as_str().unwrap().to_string(),
    );
    assert_eq!(url, format!("rtmp://{rtmp}/live"), "{info}");
    assert!(key.len() >= 12, "{info}");
    assert_eq!(info["participant_identity"], "obs-cam");
    assert_eq!(status_of(&info), "ENDPOINT_INACTIVE");

    // A wrong key is refused with the reason, and counted.
    let (status, err) = wait_exit(
        ffmpeg_push(&format!("{url}/not-the-key"), 5, H264, true),
        EVENT,
    );
    assert!(
        status.is_some_and(|s| !s.success()),
        "ffmpeg with a wrong key: {status:?}\n{err}"
    );
    assert!(err.contains("no ingress has this stream key"), "{err}");
    assert_eq!(metric(&server, "bad_stream_key"), 1);

    let mut watcher = lk_watch(
        &py,
        &server,
        "rtmp-room",
        "viewer",
        &[
            "--expect",
            "obs-cam",
            "--video-frames",
            "100",
            "--audio-frames",
            "50",
            "--until",
            "left",
            "--timeout",
            "150",
        ],
    );
    watcher.expect_event("connected", EVENT);
    let ffmpeg = ffmpeg_push(&format!("{url}/{key}"), 150, H264, true);
    let reached = watcher.expect_event("frames", EVENT);
    assert!(reached["video"].as_u64().unwrap() >= 100, "{reached}");

    // While it publishes: the state, and a second encoder on the same key is refused.
    api.tell("list rtmp-room");
    let listed = api.expect_event("listed", EVENT);
    let item = &listed["items"][0];
    assert_eq!(item["ingress_id"], id.as_str());
    assert_eq!(status_of(item), "ENDPOINT_PUBLISHING", "{item}");
    let st = &item["state"];
    assert_eq!(st["tracks"].as_array().map(Vec::len), Some(2), "{st}");
    assert_eq!(st["video"]["width"], 640, "{st}");
    assert_eq!(st["audio"]["sample_rate"], 44100, "{st}");
    let (status, err) = wait_exit(ffmpeg_push(&format!("{url}/{key}"), 5, H264, true), EVENT);
    assert!(status.is_some_and(|s| !s.success()), "{err}");
    assert!(err.contains("another encoder is publishing"), "{err}");
    assert_eq!(metric(&server, "already_publishing"), 1);

    // Deleting the ingress ends the session: FFmpeg's connection closes, the participant
    // leaves.
    api.tell(&format!("delete {id}"));
    api.expect_event("deleted", EVENT);
    let (status, err) = wait_exit(ffmpeg, EVENT);
    assert!(
        status.is_some(),
        "ffmpeg still running after DeleteIngress\n{err}"
    );
    let w = watcher.finish();
    assert!(w.ok(), "{w}");
    let p = &w.summary["participants"]["obs-cam"];
    assert_eq!(p["kind_name"], "PARTICIPANT_KIND_INGRESS", "{w}");
    assert_eq!(p["left"], true, "{w}");
    let tracks = tracks_of(&w.summary, "obs-cam");
    let video = tracks
        .iter()
        .find(|(k, _)| *k == "video")
        .expect("a video track")
        .1;
    let audio = tracks
        .iter()
        .find(|(k, _)| *k == "audio")
        .expect("an audio track")
        .1;
    assert_eq!(video["mime"], "video/H264", "{w}");
    assert_eq!(audio["mime"], "audio/opus", "{w}");
    assert!(video["frames"].as_u64().unwrap() >= 100, "{w}");
    assert!(audio["frames"].as_u64().unwrap() >= 50, "{w}");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(640), Some(360))
    );

    api.tell("list");
    let listed = api.expect_event("listed", EVENT);
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );
    api.tell("stop");
    assert!(api.finish().ok());
    server.assert_alive();
}

/// Asks ListIngress until the room's first ingress has `status` (at most `EVENT`); fails
/// with the last answer otherwise.
fn wait_status(api: &mut Client, room: &str, status: &str) {
    let deadline = Instant::now() + EVENT;
    loop {
        api.tell(&format!("list {room}"));
        let listed = api.expect_event("listed", EVENT);
        if status_of(&listed["items"][0]) == status {
            return;
        }
        assert!(Instant::now() < deadline, "never {status}: {listed}");
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn bad_rtmp_input_is_refused_counted_and_harmless() {
    let Some(py) = py() else { return };
    let mut server = Server::start();
    let rtmp = rtmp_addr(&server);
    let mut api = api(&py, &server);
    api.tell("create bad-room cam");
    let info = api.expect_event("created", EVENT)["info"].clone();
    let (id, key, url) = (
        info["ingress_id"].as_str().unwrap().to_string(),
        info["stream_key"].as_str().unwrap().to_string(),
        info["url"].as_str().unwrap().to_string(),
    );

    // Garbage instead of a handshake: closed at once.
    let mut s = TcpStream::connect(&rtmp).unwrap();
    s.set_read_timeout(Some(EVENT)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 64];
    assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)), "not closed");
    // A handshake cut short by the client: closed and counted.
    let mut s = TcpStream::connect(&rtmp).unwrap();
    let mut hello = vec![3u8];
    hello.extend_from_slice(&[0u8; 700]);
    s.write_all(&hello).unwrap();
    drop(s);

    // An unsupported codec: the ingress reports it, naming the codec.
    let (status, err) = wait_exit(
        ffmpeg_push(&format!("{url}/{key}"), 10, &["-c:v", "flv1"], false),
        EVENT,
    );
    assert!(status.is_some(), "{err}");
    let deadline = Instant::now() + EVENT;
    let item = loop {
        api.tell("list bad-room");
        let listed = api.expect_event("listed", EVENT);
        let item = listed["items"][0].clone();
        if status_of(&item) == "ENDPOINT_ERROR" || Instant::now() > deadline {
            break item;
        }
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status_of(&item), "ENDPOINT_ERROR", "{item}");
    let error = item["state"]["error"].as_str().unwrap_or("");
    assert!(error.contains("Sorenson H.263"), "{item}");

    let deadline = Instant::now() + EVENT;
    while metric(&server, "truncated_handshake") == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric(&server, "truncated_handshake"), 1);
    assert_eq!(metric(&server, "bad_handshake"), 1);
    assert_eq!(metric(&server, "unsupported_codec"), 1);

    // RoomService's RemoveParticipant on a live ingress ends its session.
    api.tell("create rm-room rm-cam");
    let rm = api.expect_event("created", EVENT)["info"].clone();
    let ffmpeg = ffmpeg_push(
        &format!(
            "{}/{}",
            rm["url"].as_str().unwrap(),
            rm["stream_key"].as_str().unwrap()
        ),
        150,
        H264,
        true,
    );
    wait_status(&mut api, "rm-room", "ENDPOINT_PUBLISHING");
    api.tell("remove rm-room rm-cam");
    api.expect_event("removed", EVENT);
    let (status, err) = wait_exit(ffmpeg, EVENT);
    assert!(
        status.is_some(),
        "ffmpeg still running after RemoveParticipant\n{err}"
    );
    wait_status(&mut api, "rm-room", "ENDPOINT_INACTIVE");

    // UpdateIngress and the other input types through the same client.
    api.tell(&format!("update {id} other-room"));
    let updated = api.expect_event("updated", EVENT)["info"].clone();
    assert_eq!(updated["room_name"], "other-room");
    api.tell("create whip-room whip-cam whip");
    let whip = api.expect_event("created", EVENT)["info"].clone();
    assert!(
        whip["url"].as_str().unwrap().ends_with("/whip/whip-room"),
        "{whip}"
    );
    api.tell("delete IN_nope");
    let failed = api.expect_event("failed", EVENT);
    assert_eq!(failed["code"], "not_found", "{failed}");
    api.tell("stop");
    assert!(api.finish().ok());
    server.assert_alive();
}

#[test]
fn a_whip_ingress_key_publishes_through_the_whip_endpoint() {
    let Some(py) = py() else { return };
    if python("aiortc, av").is_none() {
        return;
    }
    let server = Server::start();
    let mut api = api(&py, &server);
    api.tell("create whip-room whip-cam whip");
    let info = api.expect_event("created", EVENT)["info"].clone();
    let (url, key) = (
        info["url"].as_str().unwrap().to_string(),
        info["stream_key"].as_str().unwrap().to_string(),
    );
    assert_eq!(url, server.url("/whip/whip-room"), "{info}");
    let mut watcher = lk_watch(
        &py,
        &server,
        "whip-room",
        "viewer",
        &[
            "--expect",
            "whip-cam",
            "--video-frames",
            "30",
            "--timeout",
            "120",
        ],
    );
    watcher.expect_event("connected", EVENT);
    // aiortc's WHIP client, with the stream key as its bearer token.
    let args = [
        "--url",
        &url,
        "--token",
        &key,
        "--until-told",
        "--seconds",
        "120",
        "--connect-timeout",
        "30",
    ];
    let mut whip = live_client(&py, "whip-ingress", "whip_publish.py", &args)
        .timeout(Duration::from_secs(150));
    watcher.expect_event("frames", EVENT);
    whip.tell("delete");
    let w = watcher.finish();
    let p = &w.summary["participants"]["whip-cam"];
    assert_eq!(p["kind_name"], "PARTICIPANT_KIND_INGRESS", "{w}");
    // The key ends the session too (DELETE answered 200).
    let o = whip.finish();
    assert_eq!(o.summary["delete_status"], 200, "{o}");
    api.tell("stop");
    assert!(api.finish().ok());
}
