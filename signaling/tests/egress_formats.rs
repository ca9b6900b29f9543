//! Recording to MP4, Matroska and HLS against Prism: `prism serve --dev` as a
//! subprocess, LiveKit's server API client (`livekit-api`, `tests/interop/lk_egress_live.py`)
//! driving the Egress (and Ingress) service step by step, real publishers, and ffprobe
//! and ffmpeg reading what was written.
//!
//! What passing proves:
//! - **H.264** (FFmpeg pushing x264 at 640×360, 30 fps, and AAC over RTMP into Prism's
//!   ingress, which passes the H.264 through): StartTrackEgress of the video to `.mp4`,
//!   to `.mkv` and to a path without an extension (MP4, as LiveKit defaults for H.264)
//!   each gives a file ffprobe reads as H.264 at 640×360 with the duration in its header
//!   and about 30 frames a second of it, and that ffmpeg decodes with no error; a `.webm`
//!   path is `invalid_argument`.
//! - **HLS** (LiveKit's Python SDK publishing VP8 and Opus): a participant egress with a
//!   SegmentedFileOutput of 2 s segments and a live playlist. While it runs, ffmpeg plays
//!   the growing playlist (at least 60 video frames decoded); after StopEgress the
//!   playlist ends with `#EXT-X-ENDLIST`, every segment but the last lasts at least 2 s,
//!   ffmpeg decodes the whole playlist (audio and video) with no error, and
//!   `segment_results` carries the playlist, the segment count and the duration the
//!   playlist lists.
//! - HLS to S3, another segmented protocol, and a file with segments in one request are
//!   refused (`unimplemented`, `invalid_argument`) with a message saying why.
//! - **MP4 of VP8 and Opus**: a participant egress with file type MP4 of the same
//!   publisher at the same time: ffprobe reads VP8 at 640×480 and Opus, with the
//!   duration in the header, and ffmpeg decodes it with no error.
//!
//! Waits are on events (a client's line, a file's contents) with generous limits; the
//! recordings last a fixed few seconds, which is what the frame counts are measured over.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::media::*;
use common::*;

const EVENT: Duration = Duration::from_secs(90);
/// How long each recording runs.
const RECORD: Duration = Duration::from_secs(8);

fn api(py: &Path, server: &Server) -> Client {
    let mut c = live_client(
        py,
        "egress-api",
        "lk_egress_live.py",
        &["--url", &server.http],
    )
    .timeout(Duration::from_secs(300));
    c.expect_event("ready", EVENT);
    c
}

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("prism-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts an egress with `command`; its info.
fn start(api: &mut Client, command: &str) -> Value {
    api.tell(command);
    let v = api
        .wait_event_where("started", EVENT, |_| true)
        .unwrap_or_else(|| panic!("{command}: no answer"));
    v["info"].clone()
}

fn stop(api: &mut Client, id: &str) -> Value {
    api.tell(&format!("stop {id}"));
    let v = api.expect_event("stopped", EVENT);
    let info = v["info"].clone();
    assert_eq!(info["status"], "EGRESS_COMPLETE", "{info:#}");
    info
}

fn int(v: &Value) -> i64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or(v.as_i64())
        .unwrap_or(0)
}

/// The file of a stopped file egress: its size matches the answer's, and its duration.
fn file_of(info: &Value) -> (PathBuf, f64) {
    let f = &info["file_results"][0];
    let path = PathBuf::from(f["filename"].as_str().unwrap());
    let size = int(&f["size"]) as u64;
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size, "{info:#}");
    (path, int(&f["duration"]) as f64 / 1e9)
}

fn ffmpeg_push(url: &str) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=f=440"])
        .args([
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-tune",
            "zerolatency",
        ])
        .args(["-preset", "ultrafast", "-g", "30", "-c:a", "aac"])
        .args(["-t", "120", "-f", "flv", url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning ffmpeg")
}

/// Checks one H.264 recording: codec, size, frames for its duration, header duration,
/// clean decode.
fn check_h264(path: &Path, duration: f64) {
    let f = facts(path);
    eprintln!("{path:?}: {f:?}, {duration:.3} s");
    assert_eq!(f.len(), 1, "{f:?}");
    let v = &f[0];
    assert_eq!(
        (v.codec.as_str(), v.width, v.height),
        ("h264", 640, 360),
        "{v:?}"
    );
    // 30 fps from the first keyframe: the count matches the duration within 10%.
    let expected = duration * 30.0;
    assert!(
        (v.frames as f64 - expected).abs() <= expected * 0.1 + 2.0,
        "{} frames in {duration:.3} s",
        v.frames
    );
    assert!(duration > RECORD.as_secs_f64() - 2.5, "{duration}");
    let header = header_duration(path);
    assert!(
        (header - v.end).abs() < 0.2 && header > 1.0,
        "header says {header}, the stream ends at {}",
        v.end
    );
    let errors = ffmpeg_decode_errors(path);
    assert!(errors.trim().is_empty(), "{path:?}: ffmpeg: {errors}");
}

#[test]
fn h264_track_egress_writes_mp4_and_matroska() {
    let _g = serial();
    let Some(py) = python("livekit.rtc, livekit.api") else {
        return;
    };
    assert!(tools_present(), "ffmpeg and ffprobe (scripts/setup.sh)");
    let dir = out_dir("egress-h264");
    let server = Server::start();
    let mut api = api(&py, &server);
    api.tell("ingress h264-room cam");
    let info = api.expect_event("ingress", EVENT)["info"].clone();
    let url = format!(
        "{}/{}",
        info["url"].as_str().unwrap(),
        info["stream_key"].as_str().unwrap()
    );
    let mut ffmpeg = ffmpeg_push(&url);
    api.tell("tracks h264-room cam");
    let tracks = api.expect_event("tracks", EVENT);
    assert_eq!(tracks["video_mime"], "video/H264", "{tracks}");
    let video = tracks["video"].as_str().unwrap().to_owned();

    // H.264 does not fit WebM.
    api.tell(&format!(
        "track h264-room {video} {}",
        dir.join("x.webm").display()
    ));
    let e = api.expect_event("failed", EVENT);
    assert_eq!(e["code"], "invalid_argument", "{e}");
    assert!(e["message"].as_str().unwrap().contains("H.264"), "{e}");

    let mut ids = Vec::new();
    for name in ["video.mp4", "video.mkv", "no-extension"] {
        let cmd = format!("track h264-room {video} {}", dir.join(name).display());
        let info = start(&mut api, &cmd);
        ids.push(info["egress_id"].as_str().unwrap().to_owned());
    }
    std::thread::sleep(RECORD);
    let stopped: Vec<Value> = ids.iter().map(|id| stop(&mut api, id)).collect();
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    api.tell("quit");
    let _ = api.finish();

    let (mp4, d) = file_of(&stopped[0]);
    assert!(format_name(&mp4).contains("mp4"), "{mp4:?}");
    check_h264(&mp4, d);
    let (mkv, d) = file_of(&stopped[1]);
    assert!(format_name(&mkv).contains("matroska"), "{mkv:?}");
    check_h264(&mkv, d);
    let (default, _) = file_of(&stopped[2]);
    assert_eq!(default.extension().unwrap(), "mp4", "{default:?}");
    assert!(format_name(&default).contains("mp4"), "{default:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a playlist lists: (EXTINF durations, whether it has ENDLIST).
fn playlist(path: &Path) -> (Vec<f64>, bool) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let durations = text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .filter_map(|l| l.trim_end_matches(',').parse().ok())
        .collect();
    (durations, text.contains("#EXT-X-ENDLIST"))
}

/// ffmpeg playing an HLS playlist from its first segment, stopping after `frames` video
/// frames: (exit success, frames decoded, errors).
fn play(playlist: &Path, frames: u32) -> (bool, u64, String) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-live_start_index", "0", "-i"])
        .arg(playlist)
        .args(["-map", "0:v", "-frames:v", &frames.to_string()])
        .args(["-f", "null", "-", "-progress", "pipe:1", "-nostats"])
        .output()
        .expect("running ffmpeg");
    let decoded = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix("frame="))
        .find_map(|n| n.trim().parse().ok())
        .unwrap_or(0);
    (
        out.status.success(),
        decoded,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn vp8_participant_egress_to_hls_and_mp4() {
    let _g = serial();
    let Some(py) = python("livekit.rtc, livekit.api") else {
        return;
    };
    assert!(tools_present(), "ffmpeg and ffprobe (scripts/setup.sh)");
    let dir = out_dir("egress-hls");
    let server = Server::start();
    let mut publisher = lk_publisher(
        &py,
        &server,
        "hls-room",
        "alice",
        "30,160,60",
        &["--size", "640x480", "--fps", "30"],
    );
    publisher.expect_event("published", EVENT);
    let mut api = api(&py, &server);
    api.tell("tracks hls-room alice");
    api.expect_event("tracks", EVENT);

    // Still refused, each saying why.
    api.tell("refusals hls-room alice");
    let refused = api.expect_event("refused", EVENT);
    assert_eq!(refused["s3"]["code"], "unimplemented", "{refused}");
    assert!(refused["s3"]["message"].as_str().unwrap().contains("S3"));
    assert_eq!(refused["protocol"]["code"], "invalid_argument", "{refused}");
    assert_eq!(refused["two"]["code"], "invalid_argument", "{refused}");
    assert!(refused["two"]["message"]
        .as_str()
        .unwrap()
        .contains("exactly one output"));

    let prefix = dir.join("hls/seg");
    let hls = start(
        &mut api,
        &format!(
            "hls hls-room alice {} index.m3u8 live.m3u8 2",
            prefix.display()
        ),
    );
    let seg = &hls["segment_results"][0];
    let index = PathBuf::from(seg["playlist_location"].as_str().unwrap());
    let live = PathBuf::from(seg["live_playlist_location"].as_str().unwrap());
    assert_eq!(index, dir.join("hls/index.m3u8"), "{hls:#}");
    assert_eq!(live, dir.join("hls/live.m3u8"), "{hls:#}");
    let mp4 = start(
        &mut api,
        &format!(
            "participant hls-room alice {} mp4",
            dir.join("both").display()
        ),
    );

    // The playlist is playable while it grows: wait for two segments, then play.
    let deadline = Instant::now() + EVENT;
    while playlist(&index).0.len() < 2 {
        assert!(Instant::now() < deadline, "no two segments in {index:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (listed, ended) = playlist(&index);
    assert!(!ended, "ENDLIST while running");
    let (ok, decoded, errors) = play(&index, 60);
    assert!(ok && decoded >= 60, "live: {decoded} frames: {errors}");
    let (ok, decoded, errors) = play(&live, 30);
    assert!(
        ok && decoded >= 30,
        "live playlist: {decoded} frames: {errors}"
    );
    eprintln!("while running: {listed:?}, played {decoded} frames");

    let until = Instant::now() + RECORD.saturating_sub(Duration::from_secs(4));
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    let hls_id = hls["egress_id"].as_str().unwrap().to_owned();
    let mp4_id = mp4["egress_id"].as_str().unwrap().to_owned();
    let hls_done = stop(&mut api, &hls_id);
    let mp4_done = stop(&mut api, &mp4_id);
    api.tell("quit");
    let _ = api.finish();
    publisher.tell("stop");
    let _ = publisher.finish();

    // HLS: the final playlist and the answer agree.
    let (durations, ended) = playlist(&index);
    eprintln!("segments: {durations:?}");
    assert!(ended, "no ENDLIST after StopEgress");
    let r = &hls_done["segment_results"][0];
    assert_eq!(int(&r["segment_count"]) as usize, durations.len(), "{r:#}");
    let total: f64 = durations.iter().sum();
    let answered = int(&r["duration"]) as f64 / 1e9;
    assert!((total - answered).abs() < 0.1, "{total} vs {answered}");
    assert!(durations.len() >= 3, "{durations:?}");
    for d in &durations[..durations.len() - 1] {
        assert!(
            *d >= 2.0 - 0.05 && *d < 8.0,
            "a segment of {d} s: {durations:?}"
        );
    }
    let on_disk: u64 = std::fs::read_dir(dir.join("hls"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".m3u8"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert_eq!(int(&r["size"]) as u64, on_disk, "{r:#}");
    let (live_durations, live_ended) = playlist(&live);
    assert!(
        live_ended && live_durations.len() <= 5,
        "{live_durations:?}"
    );
    let f = facts(&index);
    eprintln!("{index:?}: {f:?}");
    let v = f.iter().find(|s| s.kind == "video").expect("video");
    assert_eq!((v.codec.as_str(), v.width, v.height), ("vp8", 640, 480));
    assert!(
        v.frames as f64 >= total * 20.0,
        "{} frames in {total} s",
        v.frames
    );
    let a = f.iter().find(|s| s.kind == "audio").expect("audio");
    assert_eq!(a.codec, "opus");
    let errors = ffmpeg_decode_errors(&index);
    assert!(errors.trim().is_empty(), "ffmpeg: {errors}");

    // MP4 of VP8 and Opus.
    let (path, d) = file_of(&mp4_done);
    assert_eq!(path.extension().unwrap(), "mp4");
    let f = facts(&path);
    eprintln!("{path:?}: {f:?}, {d:.3} s");
    let v = f.iter().find(|s| s.kind == "video").expect("video");
    assert_eq!((v.codec.as_str(), v.width, v.height), ("vp8", 640, 480));
    assert!(v.frames as f64 >= d * 20.0, "{} frames in {d} s", v.frames);
    let a = f.iter().find(|s| s.kind == "audio").expect("audio");
    assert_eq!(a.codec, "opus");
    assert!((a.end - a.start - d).abs() < 0.5, "audio {a:?} in {d} s");
    assert!((v.start - a.start).abs() <= 0.05, "{v:?} {a:?}");
    let header = header_duration(&path);
    assert!((header - d).abs() < 0.3, "header {header} vs {d}");
    let errors = ffmpeg_decode_errors(&path);
    assert!(errors.trim().is_empty(), "ffmpeg: {errors}");
    let _ = std::fs::remove_dir_all(&dir);
}
