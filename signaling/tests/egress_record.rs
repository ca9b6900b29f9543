//! Recording (LiveKit's Egress) against Prism: `prism serve --dev` as a subprocess, a
//! LiveKit Python SDK publisher (`lk_publisher.py`, VP8 simulcast and Opus), LiveKit's own
//! server API client (`livekit-api`, `tests/interop/lk_egress.py` and
//! `lk_egress_life.py`) starting and stopping the recordings, and ffprobe and ffmpeg
//! reading what was written.
//!
//! What passing proves:
//! - StartTrackEgress records the video track to WebM and the audio track to Ogg, and
//!   StartParticipantEgress records the publisher's audio and video into one WebM file;
//!   StopEgress answers once each file is final, with status EGRESS_COMPLETE, the file's
//!   name, size and duration;
//! - after 10 s, ffprobe reads every file: the video has at least 250 frames at the size
//!   of the top published simulcast layer, the audio lasts 10 s ± 0.5 s, and in the
//!   participant file audio and video start within 50 ms of each other; ffmpeg decodes
//!   every file with no error;
//! - with 5 % of the publisher's RTP dropped before the forwarder (`lossy_relay.py`), every
//!   file still decodes without an error, with video in it;
//! - a track egress ends (`EGRESS_COMPLETE`, file final) when its track is unpublished, a
//!   participant egress when its participant leaves;
//! - auto-egress (CreateRoom's `egress`, a token's `roomConfig.egress`) records every
//!   publisher and every track, listed by ListEgress, finalized when the room is deleted;
//!   a room composite auto-egress is refused at CreateRoom;
//! - room composite, web egress and streaming outputs are refused with Twirp
//!   `unimplemented` and a message saying so; an unknown track is `not_found`, stopping
//!   an unknown egress `not_found`, stopping a finished one `failed_precondition`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::MutexGuard;
use std::time::Duration;

use common::media::*;
use common::*;
use serde_json::Value;

/// The `dropped` counts of the server's "egress ended" log lines (video frames the
/// recorders dropped for loss).
fn recorder_drops(server: &Server) -> Vec<u64> {
    server
        .log_text()
        .lines()
        .filter(|l| l.contains("egress ended"))
        .filter_map(|l| {
            let v = l.split("dropped=").nth(1)?;
            v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
        .collect()
}

/// How a recording test is set up.
struct Setup<'a> {
    publisher_args: &'a [&'a str],
    /// Video frames each file must hold at least (that video is there at all). Without
    /// loss, a file must also hold nearly every frame the publisher sent on the recorded
    /// layer while it recorded: a busy machine lowers the encoder's rate, so that is
    /// measured against the publisher's own count, not a nominal 30 fps.
    min_frames: u64,
    /// The fraction of the publisher's RTP dropped before the forwarder: the publisher
    /// reaches Prism through `lossy_relay.py` on 127.0.0.2, the address Prism advertises
    /// (`--node-ip`), which forwards to the media port on 127.0.0.1.
    loss: Option<&'a str>,
}

/// Records `alice` (published with `publisher_args`) for 10 s three ways and checks the
/// files; the video must have at least `min_frames` frames.
fn record_and_check(setup: Setup) {
    let Setup {
        publisher_args,
        min_frames,
        loss,
    } = setup;
    let _g = serial();
    let Some(py) = python("livekit.rtc, livekit.api") else {
        eprintln!("skipped: LiveKit's Python SDK is not installed (scripts/setup.sh)");
        return;
    };
    if !tools_present() {
        eprintln!("skipped: ffmpeg and ffprobe are not installed (scripts/setup.sh)");
        return;
    }
    let simulcast = publisher_args.contains(&"--simulcast");
    let dir = std::env::temp_dir().join(format!(
        "prism-egress-{}-{}{}",
        std::process::id(),
        if simulcast { "simulcast" } else { "single" },
        if loss.is_some() { "-lossy" } else { "" }
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (mut server, mut relay) = match loss {
        None => (Server::start(), None),
        Some(loss) => {
            let port = free_udp_port().to_string();
            let server = Server::start_with(&[
                "--udp-port",
                &port,
                "--media-ip",
                "127.0.0.1",
                "--node-ip",
                "127.0.0.2",
                "--tcp-port",
                "0",
            ]);
            let mut relay = live_client(
                &py,
                "relay",
                "lossy_relay.py",
                &[
                    "--upstream",
                    &format!("127.0.0.1:{port}"),
                    "--listen",
                    &format!("127.0.0.2:{port}"),
                    "--loss",
                    loss,
                ],
            )
            .timeout(Duration::from_secs(150));
            relay.expect_event("listening", Duration::from_secs(30));
            (server, Some(relay))
        }
    };
    let room = "egress-room";
    let mut publisher = lk_publisher(&py, &server, room, "alice", "30,160,60", publisher_args);
    publisher.expect_event("published", Duration::from_secs(60));
    let url = server.http.clone();
    let out_dir = dir.to_string_lossy().into_owned();
    let driver = client(
        &py,
        "egress",
        "lk_egress.py",
        &[
            "--url",
            &url,
            "--room",
            room,
            "--publisher",
            "alice",
            "--out",
            &out_dir,
            "--seconds",
            "10",
        ],
    )
    .timeout(Duration::from_secs(150))
    .finish();
    assert!(driver.ok(), "lk_egress.py: {driver}");
    let s = &driver.summary;
    assert_eq!(s["ok"], true, "{s:#}");
    server.assert_alive();
    // What the publisher's encoder sent per layer, and its bandwidth estimate (GetStats).
    publisher.tell("stats");
    let stats = publisher.wait_event("stats", Duration::from_secs(20));
    eprintln!("publisher stats: {stats:?}");
    publisher.tell("stop");
    let _ = publisher.finish();
    let drops = recorder_drops(&server);
    eprintln!("recorder: video frames dropped for loss, per egress: {drops:?}");
    if let Some(mut relay) = relay.take() {
        relay.tell("stop");
        let r = relay.finish();
        let lost = r.summary["dropped_rtp"].as_u64().unwrap_or(0);
        let sent = r.summary["to_server"].as_u64().unwrap_or(0);
        eprintln!(
            "relay: dropped {lost} RTP packets, passed {sent} datagrams, saw {} resent: {}",
            r.summary["resent_rtp"], r.summary
        );
        // Loss really happened (the test cannot pass by losing nothing): as a share of
        // what the relay carried, since a publisher on a busy machine may send at a
        // fraction of its usual rate (its bandwidth estimate falls with the relay's delay).
        assert!(
            lost >= 10 && lost * 100 >= 2 * (lost + sent),
            "{}",
            r.summary
        );
        // The recorders are the only subscribers: their NACKs (they see the gaps before
        // the publisher's retransmissions fill them) must reach the forwarder. They went
        // to the advertised address (the relay) once, where neither NACKs nor PLIs
        // counted, and a recording stalled at its first loss until the end.
        let nacks = metric(&server, "prism_nacks_received_total");
        assert!(
            nacks > 0.0,
            "no NACK from the recorders reached the forwarder"
        );
    }

    // Refusals, each saying why.
    for what in ["room_composite", "web", "rtmp"] {
        let e = &s["refused"][what];
        assert_eq!(e["code"], "unimplemented", "{what}: {e}");
        assert!(
            e["message"]
                .as_str()
                .unwrap_or("")
                .contains("not supported"),
            "{what}: {e}"
        );
    }
    assert_eq!(s["refused"]["no_track"]["code"], "not_found", "{s:#}");
    assert_eq!(s["refused"]["stop_unknown"]["code"], "not_found", "{s:#}");
    assert_eq!(s["stop_again"]["code"], "failed_precondition", "{s:#}");
    assert_eq!(s["active"].as_array().map(Vec::len), Some(3), "{s:#}");

    // StopEgress answered with the final file.
    let stopped = s["stopped"].as_array().unwrap();
    for i in stopped {
        assert_eq!(i["status"], "EGRESS_COMPLETE", "{i:#}");
        let f = &i["file_results"][0];
        let size: u64 = f["size"].as_str().unwrap_or("0").parse().unwrap();
        let duration: i64 = f["duration"].as_str().unwrap_or("0").parse().unwrap();
        let name = f["filename"].as_str().unwrap();
        assert_eq!(std::fs::metadata(name).unwrap().len(), size, "{i:#}");
        eprintln!("{name}: {duration} ns");
        // Under loss a video file may start a keyframe or two late (the first one's
        // first packet lost, say): what matters there is that it decodes.
        let floor = if loss.is_some() { 5e9 } else { 9e9 };
        assert!(duration as f64 > floor, "{i:#}");
    }
    for (_, status) in s["listed"].as_object().unwrap() {
        assert_eq!(status, "EGRESS_COMPLETE");
    }

    let layers: Vec<(u64, u64)> = s["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["width"].as_u64().unwrap(), l["height"].as_u64().unwrap()))
        .collect();
    let top = layers.iter().copied().max_by_key(|(w, h)| w * h);
    // Frames per second the publisher's encoder sent on each layer (its GetStats: frames
    // sent over the seconds it has been sending).
    let sent_fps = |w: u64, h: u64| -> Option<f64> {
        let layers = stats.as_ref()?["layers"].as_array()?;
        let l = layers
            .iter()
            .find(|l| l["width"].as_u64() == Some(w) && l["height"].as_u64() == Some(h))?;
        let secs: f64 = l["limited_s"]
            .as_object()?
            .values()
            .filter_map(Value::as_f64)
            .sum();
        Some(l["frames_sent"].as_f64()? / secs)
    };
    let check_video = |f: &StreamFacts, file: &str| {
        assert!(f.frames >= min_frames, "{file}: {f:?}");
        if loss.is_none() {
            let fps = sent_fps(f.width, f.height).expect("the publisher's stats for the layer");
            let expected = fps * (f.end - f.start);
            eprintln!(
                "{file}: {} frames, the publisher sent {expected:.0} in that time",
                f.frames
            );
            assert!(
                f.frames as f64 >= 0.9 * expected,
                "{file}: {} frames where the publisher sent {expected:.0}: {f:?}",
                f.frames
            );
        }
        // Without loss the publisher's bandwidth estimate allows every layer, and the
        // recorder (asking for the best) gets the top one.
        if loss.is_none() {
            assert_eq!(Some((f.width, f.height)), top, "{file}: not the top layer");
        }
        assert!(
            layers.contains(&(f.width, f.height)),
            "{file}: {}x{} is not a published layer {layers:?}",
            f.width,
            f.height
        );
    };
    let check_audio = |f: &StreamFacts, file: &str| {
        let d = f.end - f.start;
        assert!(
            (d - 10.0).abs() <= 0.5,
            "{file}: audio lasts {d:.3} s: {f:?}"
        );
    };

    let video = dir.join("video-track.webm");
    let v = facts(&video);
    eprintln!("video-track.webm: {v:?}");
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].kind, "video");
    check_video(&v[0], "video-track.webm");

    let audio = dir.join("audio-track.ogg");
    let a = facts(&audio);
    eprintln!("audio-track.ogg: {a:?}");
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].kind, "audio");
    check_audio(&a[0], "audio-track.ogg");

    let both = dir.join("participant.webm");
    let p = facts(&both);
    eprintln!("participant.webm: {p:?}");
    let pv = p
        .iter()
        .find(|f| f.kind == "video")
        .expect("a video stream");
    let pa = p
        .iter()
        .find(|f| f.kind == "audio")
        .expect("an audio stream");
    check_video(pv, "participant.webm");
    check_audio(pa, "participant.webm");
    assert!(
        (pv.start - pa.start).abs() <= 0.05,
        "audio and video start {:.3} s apart",
        pv.start - pa.start
    );

    for f in [&video, &audio, &both] {
        let errors = ffmpeg_decode_errors(f);
        assert!(errors.trim().is_empty(), "{f:?}: ffmpeg: {errors}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A 30 fps VP8 publisher (no CPU adaptation): every frame it sent while recording is in
/// the files.
#[test]
fn track_and_participant_egress_write_files_ffmpeg_reads() {
    record_and_check(Setup {
        publisher_args: &["--size", "640x480", "--fps", "30"],
        min_frames: 100,
        loss: None,
    });
}

/// A simulcast publisher whose RTP loses 5 % on its way to the forwarder: the forwarder
/// recovers what it can by NACK (the SDK retransmits over RTX), and the recorder drops
/// frames it could not get whole until a keyframe: every file still decodes without an
/// error, with video in it.
#[test]
fn egress_under_five_percent_loss_decodes_clean() {
    record_and_check(Setup {
        publisher_args: &["--simulcast", "--size", "640x480", "--fps", "30"],
        // Video must be there; how much depends on the rate the publisher holds through
        // the lossy relay, which a busy machine lowers (what is asserted is that it decodes).
        min_frames: 30,
        loss: Some("0.05"),
    });
}

/// A VP8 simulcast publisher (the Python SDK sends 640×480 at 30 fps as its `h` layer and
/// 480×360 at 20 fps as `q`, and offers `h` first): the recording is of the top layer,
/// with every frame sent on it while recording.
#[test]
fn egress_of_a_simulcast_publisher_records_one_layer() {
    record_and_check(Setup {
        publisher_args: &["--simulcast", "--size", "640x480", "--fps", "30"],
        min_frames: 100,
        loss: None,
    });
}

/// A small tmpfs of our own, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = std::env::temp_dir().join(format!("prism-egress-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            Some(Tmpfs(dir))
        } else {
            let _ = std::fs::remove_dir(&dir);
            None
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A recording whose disk fills up (a 256 KiB tmpfs) ends with `EGRESS_FAILED` and the
/// error, the file written so far is readable and decodes, and the room carries on (the
/// publisher is still there, the server healthy).
#[test]
fn a_full_disk_fails_the_egress_keeps_the_file_and_the_room() {
    let _g = serial();
    let Some(py) = python("livekit.rtc, livekit.api") else {
        return;
    };
    if !tools_present() {
        eprintln!("skipped: ffmpeg and ffprobe are not installed (scripts/setup.sh)");
        return;
    }
    let Some(fs) = Tmpfs::mount("256k") else {
        eprintln!("skipped: mounting a tmpfs needs root (CAP_SYS_ADMIN)");
        return;
    };
    let mut server = Server::start();
    let room = "egress-full";
    let mut publisher = lk_publisher(
        &py,
        &server,
        room,
        "bob",
        "160,60,30",
        &["--size", "640x480"],
    );
    publisher.expect_event("published", Duration::from_secs(60));
    let url = server.http.clone();
    let out_dir = fs.0.to_string_lossy().into_owned();
    let driver = client(
        &py,
        "egress-full",
        "lk_egress.py",
        &[
            "--url",
            &url,
            "--room",
            room,
            "--publisher",
            "bob",
            "--out",
            &out_dir,
            "--disk-full",
        ],
    )
    .timeout(Duration::from_secs(150))
    .finish();
    assert!(driver.ok(), "lk_egress.py: {driver}");
    let s = &driver.summary;
    assert_eq!(s["ok"], true, "{s:#}");
    assert_eq!(s["status"], "EGRESS_FAILED", "{s:#}");
    let error = s["ended"]["error"].as_str().unwrap_or("");
    assert!(error.contains("No space left"), "{s:#}");
    assert_eq!(s["participants_after"]["bob"], 2, "{s:#}");
    server.assert_alive();
    publisher.tell("stop");
    let _ = publisher.finish();

    let file = fs.0.join("full.webm");
    let f = facts(&file);
    eprintln!("full.webm: {f:?}");
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].frames > 0, "{f:?}");
    let errors = ffmpeg_decode_errors(&file);
    assert!(errors.trim().is_empty(), "ffmpeg: {errors}");
}

/// What the recording tests start with: one at a time, LiveKit's Python SDK and ffmpeg
/// present (else skipped, saying why), and a fresh output directory named after `tag`.
fn recording_test(tag: &str) -> Option<(MutexGuard<'static, ()>, PathBuf, PathBuf)> {
    let g = serial();
    let py = python("livekit.rtc, livekit.api")?;
    if !tools_present() {
        eprintln!("skipped: ffmpeg and ffprobe are not installed (scripts/setup.sh)");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("prism-egress-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Some((g, py, dir))
}

/// SIGTERM with recordings running: the server finalizes the file before it exits
/// (nothing lost: the header says how long it is, every frame written decodes), and an
/// HLS recording's playlist ends with `#EXT-X-ENDLIST` and plays to the end.
#[test]
fn sigterm_finalizes_a_running_recording() {
    let Some((_g, py, dir)) = recording_test("term") else {
        return;
    };
    let mut server = Server::start();
    let room = "egress-term";
    let mut publisher = lk_publisher(
        &py,
        &server,
        room,
        "dave",
        "60,60,200",
        &["--size", "320x240"],
    );
    publisher.expect_event("published", Duration::from_secs(60));
    let url = server.http.clone();
    let out_dir = dir.to_string_lossy().into_owned();
    let driver = client(
        &py,
        "egress-term",
        "lk_egress.py",
        &[
            "--url",
            &url,
            "--room",
            room,
            "--publisher",
            "dave",
            "--out",
            &out_dir,
            "--start-only",
        ],
    )
    .timeout(Duration::from_secs(120))
    .finish();
    assert!(driver.ok(), "lk_egress.py: {driver}");
    assert_eq!(driver.summary["ok"], true, "{}", driver.summary);
    // Wait until the recorder has written a few clusters (keyframes come every few
    // seconds at most, and a cluster is written whole when the next one starts).
    let file = dir.join("sigterm.webm");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&file).map_or(0, |m| m.len()) < 60_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the recording never grew"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = server.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "prism serve still running 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "prism serve exited with {status}");
    publisher.kill();
    let format = ffprobe(&file, &["-show_entries", "format=duration"]);
    let duration: f64 = format["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    let f = facts(&file);
    eprintln!("sigterm.webm: {f:?}, duration {duration}");
    let v = f
        .iter()
        .find(|s| s.kind == "video")
        .expect("a video stream");
    assert!(v.frames > 0, "{f:?}");
    // The header's duration was patched in, and covers what was written.
    assert!(
        duration > 0.5 && (duration - v.end).abs() < 0.2,
        "{duration} vs {f:?}"
    );
    let errors = ffmpeg_decode_errors(&file);
    assert!(errors.trim().is_empty(), "ffmpeg: {errors}");
    // The HLS recording got its last segment and a closed playlist.
    let playlist = dir.join("hls/index.m3u8");
    let text = std::fs::read_to_string(&playlist).unwrap_or_default();
    assert!(
        text.ends_with("#EXT-X-ENDLIST\n") && text.contains("seg_00000.m4s"),
        "{text}"
    );
    let errors = ffmpeg_decode_errors(&playlist);
    assert!(errors.trim().is_empty(), "ffmpeg (HLS): {errors}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits (at most a minute) until `file` holds at least `bytes`.
fn wait_for_size(file: &Path, bytes: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(file).map_or(0, |m| m.len()) < bytes {
        assert!(
            std::time::Instant::now() < deadline,
            "{file:?} never reached {bytes} bytes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A recording ends with what it records, as LiveKit's do: a track egress when its track
/// is unpublished (the participant egress of the same publisher carries on), a
/// participant egress when the participant leaves. Both end `EGRESS_COMPLETE` with the
/// file finalized, and the files decode.
#[test]
fn egresses_end_with_their_track_and_their_participant() {
    let Some((_g, py, dir)) = recording_test("subject") else {
        return;
    };
    let mut server = Server::start();
    let room = "egress-subject";
    let mut publisher = lk_publisher(
        &py,
        &server,
        room,
        "erin",
        "200,200,40",
        &["--size", "320x240"],
    );
    publisher.expect_event("published", Duration::from_secs(60));
    let url = server.http.clone();
    let out_dir = dir.to_string_lossy().into_owned();
    let mut driver = live_client(
        &py,
        "egress-life",
        "lk_egress_life.py",
        &[
            "--url",
            &url,
            "--mode",
            "subject",
            "--room",
            room,
            "--publisher",
            "erin",
            "--out",
            &out_dir,
        ],
    )
    .timeout(Duration::from_secs(150));
    driver.expect_event("started", Duration::from_secs(60));
    // Some video written (a cluster is written whole when the next starts) before the
    // track goes.
    let track_file = dir.join("until-unpublished.webm");
    wait_for_size(&track_file, 20_000);
    publisher.tell("unpublish video");
    publisher.expect_event("unpublished", Duration::from_secs(30));
    driver.tell("wait-track-end");
    let ended = driver.expect_event("track_ended", Duration::from_secs(90));
    eprintln!("track egress ended: {ended:#}");
    assert_eq!(ended["track"]["status"], "EGRESS_COMPLETE", "{ended:#}");
    assert_eq!(
        ended["participant"]["status"], "EGRESS_ACTIVE",
        "the participant egress carries on: {ended:#}"
    );

    let part_file = dir.join("until-left.webm");
    publisher.tell("stop");
    let _ = publisher.finish();
    driver.tell("wait-participant-end");
    let ended = driver.expect_event("participant_ended", Duration::from_secs(90));
    eprintln!("participant egress ended: {ended:#}");
    let p = &ended["participant"];
    assert_eq!(p["status"], "EGRESS_COMPLETE", "{ended:#}");
    driver.tell("stop");
    let outcome = driver.finish();
    assert_eq!(outcome.summary["ok"], true, "{outcome}");
    server.assert_alive();

    for (file, info) in [(&track_file, &ended_track_info(&outcome)), (&part_file, p)] {
        let size: u64 = info["file_results"][0]["size"]
            .as_str()
            .unwrap_or("0")
            .parse()
            .unwrap();
        assert_eq!(std::fs::metadata(file).unwrap().len(), size, "{info:#}");
        let f = facts(file);
        eprintln!("{file:?}: {f:?}");
        let v = f
            .iter()
            .find(|s| s.kind == "video")
            .expect("a video stream");
        assert!(v.frames > 0, "{f:?}");
        let errors = ffmpeg_decode_errors(file);
        assert!(errors.trim().is_empty(), "{file:?}: ffmpeg: {errors}");
    }
    let f = facts(&part_file);
    assert!(f.iter().any(|s| s.kind == "audio"), "{f:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The track egress's info when it ended, from the driver's summary.
fn ended_track_info(outcome: &Outcome) -> Value {
    outcome.summary["track_ended"]["track"].clone()
}

/// Auto-egress: a room created (RoomService CreateRoom, `livekit-api`) with
/// `egress.participant` and `egress.tracks` records its publisher into one file and each
/// of its tracks into another, all listed by ListEgress while they run, and all finalized
/// when the room is deleted; a room created by a join whose token's `roomConfig.egress`
/// asks for tracks records them too. A room composite auto-egress is refused at
/// CreateRoom, saying why.
#[test]
fn auto_egress_from_create_room_and_from_the_token_records_every_track() {
    let Some((_g, py, dir)) = recording_test("auto") else {
        return;
    };
    let mut server = Server::start();
    let (room, token_room) = ("auto-room", "auto-token-room");
    let url = server.http.clone();
    let out_dir = dir.to_string_lossy().into_owned();
    let mut driver = live_client(
        &py,
        "egress-auto",
        "lk_egress_life.py",
        &[
            "--url",
            &url,
            "--mode",
            "auto",
            "--room",
            room,
            "--token-room",
            token_room,
            "--publisher",
            "fay",
            "--out",
            &out_dir,
        ],
    )
    .timeout(Duration::from_secs(150));
    let created = driver.expect_event("created", Duration::from_secs(60));
    let refused = &created["refused"];
    assert_eq!(refused["code"], "unimplemented", "{created:#}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or("")
            .contains("auto room composite egress (egress.room) is not supported"),
        "{created:#}"
    );
    let mut fay = lk_publisher(
        &py,
        &server,
        room,
        "fay",
        "40,40,200",
        &["--size", "320x240"],
    );
    // A join that creates its room with the token's roomConfig.
    let token = created["token"].as_str().unwrap().to_owned();
    let ws = ws_url(&server);
    let mut gus = live_client(
        &py,
        "gus",
        "lk_publisher.py",
        &[
            "--url",
            &ws,
            "--token",
            &token,
            "--size",
            "160x120",
            "--duration",
            "140",
        ],
    )
    .timeout(Duration::from_secs(150));
    fay.expect_event("published", Duration::from_secs(60));
    gus.expect_event("published", Duration::from_secs(60));
    driver.tell(&format!("wait-active 3 {room}"));
    let active = driver.expect_event("active", Duration::from_secs(90));
    driver.tell(&format!("wait-active 2 {token_room}"));
    let token_active = driver.expect_event("active", Duration::from_secs(90));
    eprintln!("active: {active:#}\n{token_active:#}");
    let items = active["items"].as_array().unwrap();
    let kinds: Vec<&str> = items
        .iter()
        .map(|i| {
            if i.get("participant").is_some() {
                "participant"
            } else {
                "track"
            }
        })
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "participant").count(),
        1,
        "{active:#}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "track").count(),
        2,
        "{active:#}"
    );
    // Some media written into the participant's file before the room goes.
    let part_file = dir.join(format!("{room}-fay.webm"));
    wait_for_size(&part_file, 20_000);

    let mut files = Vec::new();
    for r in [room, token_room] {
        driver.tell(&format!("delete {r}"));
        let ended = driver.expect_event("ended", Duration::from_secs(90));
        eprintln!("ended: {ended:#}");
        for i in ended["items"].as_array().unwrap() {
            assert_eq!(i["status"], "EGRESS_COMPLETE", "{i:#}");
            files.push(std::path::PathBuf::from(
                i["file_results"][0]["filename"].as_str().unwrap(),
            ));
        }
    }
    driver.tell("stop");
    let outcome = driver.finish();
    assert_eq!(outcome.summary["ok"], true, "{outcome}");
    server.assert_alive();
    fay.kill();
    gus.kill();

    assert_eq!(files.len(), 5, "{files:?}");
    let mut kinds = Vec::new();
    for file in &files {
        let f = facts(file);
        eprintln!("{file:?}: {f:?}");
        assert!(!f.is_empty(), "{file:?}");
        kinds.push(
            f.iter()
                .map(|s| s.kind.clone())
                .collect::<Vec<_>>()
                .join("+"),
        );
        for s in &f {
            assert!(s.frames > 0 || s.kind == "audio", "{file:?}: {f:?}");
        }
        let errors = ffmpeg_decode_errors(file);
        assert!(errors.trim().is_empty(), "{file:?}: ffmpeg: {errors}");
    }
    kinds.sort();
    // fay: her participant file (video and audio), a video file and an audio file; gus:
    // a video file and an audio file.
    assert_eq!(
        kinds,
        ["audio", "audio", "video", "video", "video+audio"],
        "{files:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
