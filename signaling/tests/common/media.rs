//! Reading media files in tests: ffprobe's facts about a file's streams, and ffmpeg
//! decoding a whole file (or playlist) to report its errors.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

pub fn ffprobe(path: &Path, args: &[&str]) -> Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(path)
        .output()
        .expect("running ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {path:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe's JSON")
}

/// Decodes the whole file; the errors ffmpeg printed (empty if none). The null output
/// keeps the file's millisecond timestamps (`-enc_time_base 1:1000`): with ffmpeg's
/// default, a time base from the guessed frame rate, two frames of a variable-rate
/// stream can round to one output tick, which the null muxer reports as an error that
/// says nothing about the file.
pub fn ffmpeg_decode_errors(path: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-enc_time_base", "1:1000", "-f", "null", "-"])
        .output()
        .expect("running ffmpeg");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        err
    } else {
        format!("exit {:?}: {err}", out.status)
    }
}

/// Per stream of a file: (codec type, frames decoded, first pts, last pts + duration).
#[derive(Debug)]
pub struct StreamFacts {
    pub kind: String,
    pub codec: String,
    pub width: u64,
    pub height: u64,
    pub frames: u64,
    pub start: f64,
    pub end: f64,
}

pub fn facts(path: &Path) -> Vec<StreamFacts> {
    let v = ffprobe(
        path,
        &[
            "-count_frames",
            "-show_entries",
            "stream=index,codec_type,codec_name,width,height,nb_read_frames",
        ],
    );
    let p = ffprobe(
        path,
        &[
            "-show_entries",
            "packet=stream_index,pts_time,duration_time",
        ],
    );
    let streams = v["streams"].as_array().cloned().unwrap_or_default();
    let packets = p["packets"].as_array().cloned().unwrap_or_default();
    let num = |x: &Value| {
        x.as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .or(x.as_f64())
    };
    streams
        .iter()
        .map(|s| {
            let idx = s["index"].as_u64().unwrap();
            let mine: Vec<&Value> = packets
                .iter()
                .filter(|p| p["stream_index"].as_u64() == Some(idx))
                .collect();
            let start = mine
                .iter()
                .filter_map(|p| num(&p["pts_time"]))
                .fold(f64::INFINITY, f64::min);
            let end = mine
                .iter()
                .filter_map(|p| {
                    Some(num(&p["pts_time"])? + num(&p["duration_time"]).unwrap_or(0.0))
                })
                .fold(f64::NEG_INFINITY, f64::max);
            StreamFacts {
                kind: s["codec_type"].as_str().unwrap_or("").to_owned(),
                codec: s["codec_name"].as_str().unwrap_or("").to_owned(),
                width: s["width"].as_u64().unwrap_or(0),
                height: s["height"].as_u64().unwrap_or(0),
                frames: num(&s["nb_read_frames"]).unwrap_or(0.0) as u64,
                start,
                end,
            }
        })
        .collect()
}

pub fn tools_present() -> bool {
    ["ffprobe", "ffmpeg"].iter().all(|t| {
        Command::new(t)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// The duration in the file's header (ffprobe's `format=duration`), 0 if none.
pub fn header_duration(path: &Path) -> f64 {
    let f = ffprobe(path, &["-show_entries", "format=duration"]);
    f["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0)
}

/// ffprobe's name of the file's format (`mov,mp4,m4a,3gp,3g2,mj2`, `matroska,webm`, …).
pub fn format_name(path: &Path) -> String {
    let f = ffprobe(path, &["-show_entries", "format=format_name"]);
    f["format"]["format_name"].as_str().unwrap_or("").to_owned()
}
