//! Recording (LiveKit's Egress) against Prism: `prism serve --dev` as a subprocess, a
//! LiveKit Python SDK publisher (`lk_publisher.py`, VP8 simulcast and Opus), LiveKit's own
//! server API client (`livekit-api`, `tests/interop/lk_egress.py`) starting and stopping
//! the recordings, and ffprobe and ffmpeg reading what was written.
//!
//! What passing proves:
//! - StartTrackEgress records the video track to WebM and the audio track to Ogg, and
//!   StartParticipantEgress records the publisher's audio and video into one WebM file;
//!   StopEgress answers once each file is final, with status EGRESS_COMPLETE, the file's
//!   name, size and duration;
//! - after 10 s, ffprobe reads every file: the video has at least 250 frames at the size
//!   of a published simulcast layer, the audio lasts 10 s ± 0.5 s, and in the participant
//!   file audio and video start within 50 ms of each other; ffmpeg decodes every file with
//!   no error;
//! - room composite, web egress and streaming outputs are refused with Twirp
//!   `unimplemented` and a message saying so; an unknown track is `not_found`, stopping
//!   an unknown egress `not_found`, stopping a finished one `failed_precondition`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::media::*;
use common::*;

/// Records `alice` (published with `publisher_args`) for 10 s three ways and checks the
/// files; the video must have at least `min_frames` frames.
fn record_and_check(publisher_args: &[&str], min_frames: u64) {
    let _g = serial();
    let Some(py) = python("livekit.rtc, livekit.api") else {
        eprintln!("skipped: LiveKit's Python SDK is not installed (scripts/setup.sh)");
        return;
    };
    if !tools_present() {
        eprintln!("skipped: ffmpeg and ffprobe are not installed (scripts/setup.sh)");
        return;
    }
    let dir =
        std::env::temp_dir().join(format!("prism-egress-{}-{min_frames}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut server = Server::start();
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
    publisher.tell("stop");
    let _ = publisher.finish();

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
        assert!(duration > 9_000_000_000, "{i:#}");
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
    let check_video = |f: &StreamFacts, file: &str| {
        assert!(f.frames >= min_frames, "{file}: {f:?}");
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

/// A 30 fps VP8 publisher (no CPU adaptation): at least 250 frames in 10 s.
#[test]
fn track_and_participant_egress_write_files_ffmpeg_reads() {
    record_and_check(&["--size", "640x480", "--fps", "30"], 250);
}

/// A VP8 simulcast publisher: the recording is at the size of one of its layers. The SDK
/// sends its lower layers at 15 or 20 fps, and on a busy machine libwebrtc sends only
/// those, so the frame floor is 15 fps.
#[test]
fn egress_of_a_simulcast_publisher_records_one_layer() {
    record_and_check(&["--simulcast", "--size", "640x480", "--fps", "30"], 150);
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

/// SIGTERM with recordings running: the server finalizes the file before it exits
/// (nothing lost: the header says how long it is, every frame written decodes), and an
/// HLS recording's playlist ends with `#EXT-X-ENDLIST` and plays to the end.
#[test]
fn sigterm_finalizes_a_running_recording() {
    let _g = serial();
    let Some(py) = python("livekit.rtc, livekit.api") else {
        return;
    };
    if !tools_present() {
        eprintln!("skipped: ffmpeg and ffprobe are not installed (scripts/setup.sh)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("prism-egress-term-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
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
