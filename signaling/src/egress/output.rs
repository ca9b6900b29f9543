//! The container side of a recording: which muxer, its header, where each frame's bytes
//! go, and how the file is finalized. The session ([`super::session`]) decides what to
//! write and when; this turns it into bytes and files, without I/O.
//!
//! A container is chosen per egress: WebM (VP8, Opus), Matroska (H.264, VP8, Opus; the
//! same EBML writer with DocType `matroska`), Ogg (Opus alone), MP4 (fragmented; H.264,
//! VP8, Opus) or HLS (the MP4 muxer's fragments gathered into segment files, with
//! playlists). The header needs the video's size (and H.264's parameter sets), so the
//! muxer is made at the first frame written, which in a file with video is a keyframe.

use std::path::PathBuf;

use super::avc;
use super::depack::{vp8_size, Frame};
use super::hls::{Hls, HlsSpec};
use super::mp4::{Mp4Muxer, Mp4Track};
use super::ogg::OggMuxer;
use super::session::MediaCodec;
use super::webm::{Patch, TrackSpec, WebmMuxer};

/// The container of a recording.
#[derive(Clone, Debug, PartialEq)]
pub enum Container {
    WebM,
    /// Matroska (`.mkv`): what WebM holds, and H.264.
    Mkv,
    Ogg,
    Mp4,
    Hls(HlsSpec),
}

impl Container {
    /// A file's extension for this container.
    pub fn ext(&self) -> &'static str {
        match self {
            Container::WebM => "webm",
            Container::Mkv => "mkv",
            Container::Ogg => "ogg",
            Container::Mp4 => "mp4",
            Container::Hls(_) => "m3u8",
        }
    }

    /// The container of a file egress of streams in `codecs`: the path's extension if it
    /// names one (`.mp4`, `.mkv`, `.webm`, `.ogg`), else the file type asked for (Ogg or
    /// MP4), else as LiveKit's track egress does: MP4 for H.264, WebM for VP8, Ogg for
    /// audio alone. A container that cannot hold the codecs is an error that says so.
    pub fn choose(
        codecs: &[MediaCodec],
        path: &str,
        want_ogg: bool,
        want_mp4: bool,
    ) -> Result<Container, String> {
        let h264 = codecs.contains(&MediaCodec::H264);
        let video = codecs.iter().any(|c| c.is_video());
        let ext = std::path::Path::new(path)
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        let c = match ext.as_deref() {
            Some("mp4") => Container::Mp4,
            Some("mkv") => Container::Mkv,
            Some("webm") => Container::WebM,
            Some("ogg") if !video => Container::Ogg,
            _ if want_mp4 => Container::Mp4,
            _ if !video && want_ogg => Container::Ogg,
            _ if h264 => Container::Mp4,
            _ if video => Container::WebM,
            _ => Container::Ogg,
        };
        if h264 && c == Container::WebM {
            return Err("WebM cannot hold H.264: use .mp4 or .mkv".into());
        }
        Ok(c)
    }
}

/// What to do with bytes: append them to the recording's file, or write a whole file.
#[derive(Debug, PartialEq)]
pub enum Write {
    Append(Vec<u8>),
    File(PathBuf, Vec<u8>),
}

#[derive(Debug)]
pub enum Output {
    WebM(WebmMuxer),
    Ogg(OggMuxer),
    Mp4(Mp4Muxer),
    Hls(Mp4Muxer, Hls),
}

fn append(bytes: Vec<u8>) -> Vec<Write> {
    if bytes.is_empty() {
        Vec::new()
    } else {
        vec![Write::Append(bytes)]
    }
}

/// The video's size and, for H.264, its decoder configuration, from a keyframe.
fn video_config(codec: MediaCodec, first: &Frame) -> (u16, u16, Vec<u8>) {
    match codec {
        MediaCodec::H264 => first
            .params
            .as_ref()
            .filter(|p| p.complete())
            .map(|p| {
                let (w, h) = avc::sps_size(&p.sps).unwrap_or((0, 0));
                (w, h, p.avcc())
            })
            .unwrap_or_default(),
        _ => {
            let (w, h) = vp8_size(&first.data).unwrap_or((0, 0));
            (w, h, Vec::new())
        }
    }
}

impl Output {
    /// The muxer for `container`, and its header. `codecs` are the streams' (in order);
    /// `first` is the first frame written (a keyframe of `first_codec` if it is video).
    pub fn start(
        container: &Container,
        codecs: &[MediaCodec],
        serial: u32,
        first_codec: MediaCodec,
        first: &Frame,
    ) -> (Output, Vec<Write>) {
        let (w, h, private) = if first_codec.is_video() {
            video_config(first_codec, first)
        } else {
            (0, 0, Vec::new())
        };
        match container {
            Container::Ogg => {
                let mut m = OggMuxer::new(serial);
                let head = m.header(2);
                (Output::Ogg(m), append(head))
            }
            Container::WebM | Container::Mkv => {
                let specs = codecs
                    .iter()
                    .map(|c| match c {
                        MediaCodec::Vp8 => TrackSpec::Video {
                            codec_id: "V_VP8",
                            width: w,
                            height: h,
                            private: Vec::new(),
                        },
                        MediaCodec::H264 => TrackSpec::Video {
                            codec_id: "V_MPEG4/ISO/AVC",
                            width: w,
                            height: h,
                            private: private.clone(),
                        },
                        MediaCodec::Opus => TrackSpec::Opus { channels: 2 },
                    })
                    .collect();
                let mut m = WebmMuxer::new(specs);
                if *container == Container::Mkv {
                    m.set_doc_type("matroska");
                }
                let head = m.header();
                (Output::WebM(m), append(head))
            }
            Container::Mp4 | Container::Hls(_) => {
                let tracks = codecs
                    .iter()
                    .map(|c| match c {
                        MediaCodec::Vp8 => Mp4Track::Vp8 {
                            width: w,
                            height: h,
                        },
                        MediaCodec::H264 => Mp4Track::Avc {
                            width: w,
                            height: h,
                            avcc: private.clone(),
                        },
                        MediaCodec::Opus => Mp4Track::Opus { channels: 2 },
                    })
                    .collect();
                let mut m = Mp4Muxer::new(tracks);
                let init = m.init();
                match container {
                    Container::Hls(spec) => {
                        let mut hls = Hls::new(spec.clone());
                        hls.bytes += init.len() as u64;
                        let write = vec![Write::File(hls.init_path(), init)];
                        (Output::Hls(m, hls), write)
                    }
                    _ => (Output::Mp4(m), append(init)),
                }
            }
        }
    }

    /// One frame of stream `i` at `t` seconds since the file's start; `has_video` says
    /// whether the recording has a video stream, `ogg_gap` how many 48 kHz samples are
    /// missing before an Ogg packet.
    pub fn frame(
        &mut self,
        i: usize,
        t: f64,
        codec: MediaCodec,
        f: &Frame,
        has_video: bool,
        ogg_gap: u64,
    ) -> Vec<Write> {
        let key = f.keyframe && codec.is_video();
        match self {
            Output::WebM(m) => {
                let ms = (t * 1000.0).round() as i64;
                append(m.frame(i, ms, key, &f.data))
            }
            Output::Ogg(m) => append(m.packet(&f.data, ogg_gap)),
            Output::Mp4(m) => append(m.frame(i, t, f.keyframe, &f.data, key)),
            Output::Hls(m, hls) => {
                // A segment ends before a video keyframe (any frame, without video)
                // once it has lasted its duration.
                let cut = hls.due(t) && (key || !has_video);
                let bytes = m.frame(i, t, f.keyframe, &f.data, cut || key);
                if cut {
                    let w = hls.cut(t, &bytes, false);
                    hls.add(t, &[]);
                    w.into_iter().map(|(p, b)| Write::File(p, b)).collect()
                } else {
                    hls.add(t, &bytes);
                    Vec::new()
                }
            }
        }
    }

    /// Whether a keyframe should be asked for at `t`: an HLS segment is due.
    pub fn wants_keyframe(&self, t: f64) -> bool {
        matches!(self, Output::Hls(_, hls) if hls.due(t))
    }

    /// HLS: segments written so far.
    pub fn segments(&self) -> u64 {
        match self {
            Output::Hls(_, hls) => hls.segment_count(),
            _ => 0,
        }
    }

    /// HLS: the bytes of the init and media segments (playlists are rewritten, so the
    /// bytes written say less).
    pub fn media_bytes(&self) -> Option<u64> {
        match self {
            Output::Hls(_, hls) => Some(hls.bytes),
            _ => None,
        }
    }

    /// Ends the recording, which lasted `end` seconds: the last bytes, and the patches
    /// to apply to the file once they are written (and, after a failed write, the
    /// patches that need no space: the first one is dropped).
    pub fn finish(&mut self, end: f64) -> (Vec<Write>, Vec<Patch>) {
        match self {
            Output::WebM(m) => {
                let (tail, patches) = m.finish(end * 1000.0);
                (append(tail), patches)
            }
            Output::Ogg(m) => (append(m.finish()), Vec::new()),
            Output::Mp4(m) => {
                let (tail, patches) = m.finish(end);
                (append(tail), patches)
            }
            Output::Hls(m, hls) => {
                let last = m.fragment();
                let w = hls.cut(end, &last, true);
                (
                    w.into_iter().map(|(p, b)| Write::File(p, b)).collect(),
                    Vec::new(),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MediaCodec::{Opus, Vp8, H264};

    #[test]
    fn the_container_follows_the_path_then_the_file_type_then_the_codec() {
        let c = |codecs: &[MediaCodec], path: &str, ogg: bool, mp4: bool| {
            Container::choose(codecs, path, ogg, mp4)
        };
        assert_eq!(c(&[H264], "a", false, false), Ok(Container::Mp4));
        assert_eq!(c(&[H264], "a.mkv", false, false), Ok(Container::Mkv));
        assert_eq!(c(&[H264, Opus], "a.MP4", false, false), Ok(Container::Mp4));
        assert!(c(&[H264], "a.webm", false, false).is_err());
        assert_eq!(c(&[Vp8, Opus], "a", false, false), Ok(Container::WebM));
        assert_eq!(c(&[Vp8, Opus], "a", false, true), Ok(Container::Mp4));
        assert_eq!(c(&[Vp8], "a.mp4", false, false), Ok(Container::Mp4));
        assert_eq!(c(&[Opus], "a", false, false), Ok(Container::Ogg));
        assert_eq!(c(&[Opus], "a.webm", false, false), Ok(Container::WebM));
        assert_eq!(c(&[Opus], "a.mp4", true, false), Ok(Container::Mp4));
        assert_eq!(c(&[Vp8], "a.ogg", true, false), Ok(Container::WebM));
    }
}
