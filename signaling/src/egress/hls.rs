//! HLS output (RFC 8216, LiveKit's `SegmentedFileOutput`), sans-IO: fragmented MP4
//! segments ([`super::mp4`]) and the playlists that list them.
//!
//! Why fMP4 segments rather than MPEG-TS: Opus and VP8 have no MPEG-TS mapping players
//! agree on, and the fMP4 muxer is already there for MP4 files. The init segment
//! (`ftyp` + `moov`) is written once as `<prefix>_init.mp4`; media segments are
//! `<prefix>_00000.m4s`, `<prefix>_00001.m4s`, …, each made of whole fragments. The
//! session cuts a segment at the first video keyframe once [`HlsSpec::segment_duration`]
//! has passed since the segment started (and asks the publisher for that keyframe, since
//! WebRTC publishers send none unasked); audio-only segments are cut at any frame.
//!
//! After each segment, the playlist (`EVENT` type, every segment) and, if asked for, the
//! live playlist (the last [`LIVE_WINDOW`] segments) are rewritten whole: the caller's
//! sink writes a temporary file and renames it, so a reader never sees half a playlist.
//! When the recording ends, both get `#EXT-X-ENDLIST`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Segments a live playlist lists.
pub const LIVE_WINDOW: usize = 5;

/// Where an HLS recording goes.
#[derive(Clone, Debug, PartialEq)]
pub struct HlsSpec {
    /// Segment paths are this with `_00000.m4s` (or `_init.mp4`) added.
    pub prefix: PathBuf,
    pub playlist: PathBuf,
    pub live_playlist: Option<PathBuf>,
    /// Seconds; a segment is cut at the first keyframe after this.
    pub segment_duration: f64,
}

#[derive(Clone, Debug, PartialEq)]
struct Segment {
    uri: String,
    duration: f64,
}

/// A file to write whole (temporary file, then rename).
pub type FileWrite = (PathBuf, Vec<u8>);

/// The segmenter's state.
#[derive(Debug)]
pub struct Hls {
    spec: HlsSpec,
    segments: Vec<Segment>,
    current: Vec<u8>,
    started: Option<f64>,
    pub bytes: u64,
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `path` as a URI relative to the playlist's directory (absolute if not under it).
fn uri(playlist: &Path, path: &Path) -> String {
    let dir = playlist.parent().unwrap_or(Path::new(""));
    path.strip_prefix(dir)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

impl Hls {
    pub fn new(spec: HlsSpec) -> Self {
        Self {
            spec,
            segments: Vec::new(),
            current: Vec::new(),
            started: None,
            bytes: 0,
        }
    }

    pub fn init_path(&self) -> PathBuf {
        with_suffix(&self.spec.prefix, "_init.mp4")
    }

    pub fn segment_count(&self) -> u64 {
        self.segments.len() as u64
    }

    /// Whether a segment that started has lasted its duration at `t` (seconds).
    pub fn due(&self, t: f64) -> bool {
        self.started
            .is_some_and(|s| t - s >= self.spec.segment_duration)
    }

    /// A frame at `t` goes into the current segment (starting it if needed); `bytes`
    /// are fragments the muxer closed before it.
    pub fn add(&mut self, t: f64, bytes: &[u8]) {
        self.current.extend_from_slice(bytes);
        if self.started.is_none() {
            self.started = Some(t);
        }
    }

    /// Closes the current segment at `end` (seconds) with its last `bytes`: the
    /// segment file and the playlists to write. Nothing if the segment is empty.
    pub fn cut(&mut self, end: f64, bytes: &[u8], ended: bool) -> Vec<FileWrite> {
        self.current.extend_from_slice(bytes);
        let mut out = Vec::new();
        if let (Some(start), false) = (self.started, self.current.is_empty()) {
            let path = with_suffix(
                &self.spec.prefix,
                &format!("_{:05}.m4s", self.segments.len()),
            );
            self.segments.push(Segment {
                uri: uri(&self.spec.playlist, &path),
                duration: (end - start).max(0.001),
            });
            let data = std::mem::take(&mut self.current);
            self.bytes += data.len() as u64;
            out.push((path, data));
        }
        self.started = None;
        if !out.is_empty() || ended {
            out.push((
                self.spec.playlist.clone(),
                self.playlist(ended).into_bytes(),
            ));
            if let Some(live) = &self.spec.live_playlist {
                out.push((live.clone(), self.live_playlist(ended).into_bytes()));
            }
        }
        out
    }

    fn render(&self, event: bool, first: usize, ended: bool, playlist: &Path) -> String {
        let shown = &self.segments[first..];
        let longest = shown
            .iter()
            .map(|s| s.duration.round() as u64)
            .max()
            .unwrap_or(0);
        let target = longest.max(self.spec.segment_duration.ceil() as u64).max(1);
        let mut p = String::from("#EXTM3U\n#EXT-X-VERSION:7\n");
        if event {
            p.push_str("#EXT-X-PLAYLIST-TYPE:EVENT\n");
        }
        let _ = writeln!(p, "#EXT-X-TARGETDURATION:{target}");
        let _ = writeln!(p, "#EXT-X-MEDIA-SEQUENCE:{first}");
        p.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        let _ = writeln!(p, "#EXT-X-MAP:URI=\"{}\"", uri(playlist, &self.init_path()));
        for s in shown {
            let _ = writeln!(p, "#EXTINF:{:.3},\n{}", s.duration, s.uri);
        }
        if ended {
            p.push_str("#EXT-X-ENDLIST\n");
        }
        p
    }

    /// The playlist: every segment so far.
    pub fn playlist(&self, ended: bool) -> String {
        self.render(true, 0, ended, &self.spec.playlist)
    }

    /// The live playlist: the last few segments.
    pub fn live_playlist(&self, ended: bool) -> String {
        let first = self.segments.len().saturating_sub(LIVE_WINDOW);
        let at = self
            .spec
            .live_playlist
            .clone()
            .unwrap_or_else(|| self.spec.playlist.clone());
        self.render(false, first, ended, &at)
    }

    /// The sum of the segments' durations, in seconds.
    pub fn duration(&self) -> f64 {
        self.segments.iter().map(|s| s.duration).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hls() -> Hls {
        Hls::new(HlsSpec {
            prefix: PathBuf::from("/r/room/seg"),
            playlist: PathBuf::from("/r/room/index.m3u8"),
            live_playlist: Some(PathBuf::from("/r/room/live.m3u8")),
            segment_duration: 2.0,
        })
    }

    #[test]
    fn segments_are_cut_after_their_duration_and_listed() {
        let mut h = hls();
        assert!(!h.due(100.0), "nothing started");
        h.add(0.0, b"");
        assert!(!h.due(1.9));
        assert!(h.due(2.0));
        let w = h.cut(2.1, b"frag1", false);
        let names: Vec<&Path> = w.iter().map(|(p, _)| p.as_path()).collect();
        assert_eq!(
            names,
            [
                Path::new("/r/room/seg_00000.m4s"),
                Path::new("/r/room/index.m3u8"),
                Path::new("/r/room/live.m3u8")
            ]
        );
        assert_eq!(w[0].1, b"frag1");
        let p = String::from_utf8(w[1].1.clone()).unwrap();
        assert_eq!(
            p,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-TARGETDURATION:2\n\
             #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-MAP:URI=\"seg_init.mp4\"\n#EXTINF:2.100,\nseg_00000.m4s\n"
        );
        for i in 1..7 {
            h.add(2.1 * f64::from(i), b"x");
            h.cut(2.1 * f64::from(i) + 3.6, b"", false);
        }
        assert_eq!(h.segment_count(), 7);
        let live = h.live_playlist(false);
        assert!(live.contains("#EXT-X-MEDIA-SEQUENCE:2\n"), "{live}");
        assert!(!live.contains("seg_00001.m4s") && live.contains("seg_00006.m4s"));
        assert!(!live.contains("PLAYLIST-TYPE") && !live.contains("ENDLIST"));
        // 3.6 s segments round to 4: the target duration covers them.
        assert!(live.contains("#EXT-X-TARGETDURATION:4\n"), "{live}");
        let end = h.cut(20.0, b"", true);
        assert_eq!(end.len(), 2, "the playlists only: {end:?}");
        let last = String::from_utf8(end[0].1.clone()).unwrap();
        assert!(last.ends_with("#EXT-X-ENDLIST\n"), "{last}");
        assert_eq!(last.matches("#EXTINF").count(), 7);
        assert!((h.duration() - (2.1 + 6.0 * 3.6)).abs() < 1e-9);
    }
}
