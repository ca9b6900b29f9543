//! A WebM and Matroska muxer for VP8, VP9, AV1, H.264 and Opus, sans-IO: it turns frames into bytes
//! and says where to patch the header once the recording ends.
//!
//! Why this shape: a recording must be playable however it ends. Each cluster is written
//! whole (with its size known), so a file cut short by a full disk or a crash still
//! parses up to its last complete cluster; the segment starts with an unknown size and the
//! duration as 0, and [`WebmMuxer::finish`] returns the two patches that make the file
//! exact when the recording ends normally. No Cues: players seek by scanning clusters,
//! which is fine for files of this kind (LiveKit's own track egress writes none either).

/// Matroska element ids used here.
mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const EBML_VERSION: u32 = 0x4286;
    pub const EBML_READ_VERSION: u32 = 0x42F7;
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const DOC_TYPE_VERSION: u32 = 0x4287;
    pub const DOC_TYPE_READ_VERSION: u32 = 0x4285;
    pub const SEGMENT: u32 = 0x1853_8067;
    pub const INFO: u32 = 0x1549_A966;
    pub const TIMECODE_SCALE: u32 = 0x2A_D7B1;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;
    pub const DURATION: u32 = 0x4489;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const CODEC_ID: u32 = 0x86;
    pub const CODEC_PRIVATE: u32 = 0x63A2;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const AUDIO: u32 = 0xE1;
    pub const SAMPLING_FREQUENCY: u32 = 0xB5;
    pub const CHANNELS: u32 = 0x9F;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const TIMECODE: u32 = 0xE7;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
}

/// One track of the file.
#[derive(Clone, Debug, PartialEq)]
pub enum TrackSpec {
    /// `codec_id` is Matroska's (`V_VP8`, `V_VP9`, `V_AV1`, `V_MPEG4/ISO/AVC`).
    Video {
        codec_id: &'static str,
        width: u16,
        height: u16,
        private: Vec<u8>,
    },
    /// Opus at 48 kHz.
    Opus { channels: u8 },
}

/// A byte range of the file to overwrite once the recording ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Patch {
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// Longest span of one cluster: block times are 16-bit offsets from the cluster's.
const MAX_CLUSTER_MS: i64 = 5_000;

/// The muxer: [`WebmMuxer::header`] first, then frames, then [`WebmMuxer::finish`].
#[derive(Debug)]
pub struct WebmMuxer {
    tracks: Vec<TrackSpec>,
    doc_type: &'static str,
    /// Where the segment's size and the duration's value sit in the file.
    segment_size_at: u64,
    segment_data_at: u64,
    duration_at: u64,
    written: u64,
    cluster: Vec<u8>,
    cluster_ms: Option<i64>,
    last_ms: i64,
    /// Each video track's last block time: two frames never share a millisecond (a
    /// sender's capture clock can put two frames closer than that), since players take
    /// equal times as a broken stream.
    last_video_ms: Vec<Option<i64>>,
}

/// The OpusHead of RFC 7845 §5.1 (Matroska's CodecPrivate for `A_OPUS`, and the first
/// Ogg packet).
pub fn opus_head(channels: u8) -> Vec<u8> {
    let mut h = b"OpusHead".to_vec();
    h.push(1);
    h.push(channels);
    h.extend_from_slice(&0u16.to_le_bytes()); // pre-skip: WebRTC streams start decoded
    h.extend_from_slice(&48_000u32.to_le_bytes());
    h.extend_from_slice(&0i16.to_le_bytes());
    h.push(0);
    h
}

fn id_bytes(id: u32) -> Vec<u8> {
    let b = id.to_be_bytes();
    let skip = b.iter().take_while(|&&x| x == 0).count().min(3);
    b[skip..].to_vec()
}

/// An EBML size as the shortest variable-length integer (sizes here stay below 2^56 − 1).
fn size_bytes(n: u64) -> Vec<u8> {
    let mut len = 1;
    while len < 8 && n >= (1u64 << (7 * len)) - 1 {
        len += 1;
    }
    let v = n | (1u64 << (7 * len));
    v.to_be_bytes()[8 - len..].to_vec()
}

fn element(out: &mut Vec<u8>, id: u32, body: &[u8]) {
    out.extend_from_slice(&id_bytes(id));
    out.extend_from_slice(&size_bytes(body.len() as u64));
    out.extend_from_slice(body);
}

fn uint(out: &mut Vec<u8>, id: u32, v: u64) {
    let b = v.to_be_bytes();
    let skip = b.iter().take_while(|&&x| x == 0).count().min(7);
    element(out, id, &b[skip..]);
}

fn float(out: &mut Vec<u8>, id: u32, v: f64) {
    element(out, id, &v.to_be_bytes());
}

fn string(out: &mut Vec<u8>, id: u32, s: &str) {
    element(out, id, s.as_bytes());
}

impl WebmMuxer {
    pub fn new(tracks: Vec<TrackSpec>) -> Self {
        let n = tracks.len();
        Self {
            last_video_ms: vec![None; n],
            tracks,
            doc_type: "webm",
            segment_size_at: 0,
            segment_data_at: 0,
            duration_at: 0,
            written: 0,
            cluster: Vec::new(),
            cluster_ms: None,
            last_ms: 0,
        }
    }

    /// The EBML DocType: `webm` (the default) or `matroska` (for H.264).
    pub fn set_doc_type(&mut self, doc_type: &'static str) {
        self.doc_type = doc_type;
    }

    /// The file's start: EBML header, segment (size unknown), info and tracks.
    pub fn header(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut ebml = Vec::new();
        uint(&mut ebml, id::EBML_VERSION, 1);
        uint(&mut ebml, id::EBML_READ_VERSION, 1);
        uint(&mut ebml, id::EBML_MAX_ID_LENGTH, 4);
        uint(&mut ebml, id::EBML_MAX_SIZE_LENGTH, 8);
        string(&mut ebml, id::DOC_TYPE, self.doc_type);
        uint(&mut ebml, id::DOC_TYPE_VERSION, 4);
        uint(&mut ebml, id::DOC_TYPE_READ_VERSION, 2);
        element(&mut out, id::EBML, &ebml);
        out.extend_from_slice(&id_bytes(id::SEGMENT));
        self.segment_size_at = out.len() as u64;
        out.extend_from_slice(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        self.segment_data_at = out.len() as u64;
        let mut info = Vec::new();
        uint(&mut info, id::TIMECODE_SCALE, 1_000_000);
        string(&mut info, id::MUXING_APP, "prism");
        string(&mut info, id::WRITING_APP, "prism");
        // Duration last, so its offset is the info's end minus 8.
        float(&mut info, id::DURATION, 0.0);
        element(&mut out, id::INFO, &info);
        self.duration_at = out.len() as u64 - 8;
        let mut tracks = Vec::new();
        for (i, t) in self.tracks.iter().enumerate() {
            let mut e = Vec::new();
            let n = i as u64 + 1;
            uint(&mut e, id::TRACK_NUMBER, n);
            uint(&mut e, id::TRACK_UID, n);
            match t {
                TrackSpec::Video {
                    codec_id,
                    width,
                    height,
                    private,
                } => {
                    uint(&mut e, id::TRACK_TYPE, 1);
                    string(&mut e, id::CODEC_ID, codec_id);
                    if !private.is_empty() {
                        element(&mut e, id::CODEC_PRIVATE, private);
                    }
                    let mut v = Vec::new();
                    uint(&mut v, id::PIXEL_WIDTH, u64::from(*width));
                    uint(&mut v, id::PIXEL_HEIGHT, u64::from(*height));
                    element(&mut e, id::VIDEO, &v);
                }
                TrackSpec::Opus { channels } => {
                    uint(&mut e, id::TRACK_TYPE, 2);
                    string(&mut e, id::CODEC_ID, "A_OPUS");
                    element(&mut e, id::CODEC_PRIVATE, &opus_head(*channels));
                    let mut a = Vec::new();
                    float(&mut a, id::SAMPLING_FREQUENCY, 48_000.0);
                    uint(&mut a, id::CHANNELS, u64::from(*channels));
                    element(&mut e, id::AUDIO, &a);
                }
            }
            element(&mut tracks, id::TRACK_ENTRY, &e);
        }
        element(&mut out, id::TRACKS, &tracks);
        self.written = out.len() as u64;
        out
    }

    /// Adds a frame of track `track` (index into the specs) at `ms` since the file's
    /// start. Frames must come in time order (across tracks). Returns the bytes of a
    /// cluster that this frame closed, if any.
    pub fn frame(&mut self, track: usize, ms: i64, keyframe: bool, data: &[u8]) -> Vec<u8> {
        let is_video = matches!(self.tracks.get(track), Some(TrackSpec::Video { .. }));
        let mut ms = ms.max(self.last_ms);
        if is_video {
            if let Some(last) = self.last_video_ms.get_mut(track) {
                if let Some(l) = *last {
                    ms = ms.max(l + 1);
                }
                *last = Some(ms);
            }
        }
        self.last_ms = ms;
        let mut out = Vec::new();
        let restart = match self.cluster_ms {
            None => true,
            Some(c) => (keyframe && is_video && ms > c) || ms - c >= MAX_CLUSTER_MS,
        };
        if restart {
            out = self.close_cluster();
            self.cluster_ms = Some(ms);
        }
        let rel = (ms - self.cluster_ms.unwrap_or(ms)) as i16;
        let mut block = Vec::with_capacity(data.len() + 4);
        block.extend_from_slice(&size_bytes(track as u64 + 1));
        block.extend_from_slice(&rel.to_be_bytes());
        block.push(if keyframe || !is_video { 0x80 } else { 0 });
        block.extend_from_slice(data);
        element(&mut self.cluster, id::SIMPLE_BLOCK, &block);
        out
    }

    /// The current cluster as bytes (empty if it has no blocks); the next frame starts a
    /// new one.
    pub fn close_cluster(&mut self) -> Vec<u8> {
        let Some(c) = self.cluster_ms.take() else {
            return Vec::new();
        };
        if self.cluster.is_empty() {
            return Vec::new();
        }
        let mut body = Vec::new();
        uint(&mut body, id::TIMECODE, c as u64);
        body.append(&mut self.cluster);
        let mut out = Vec::new();
        element(&mut out, id::CLUSTER, &body);
        self.written += out.len() as u64;
        out
    }

    /// Bytes written so far (header and closed clusters).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Ends the file: the last cluster's bytes, and the patches (segment size, duration)
    /// to apply once they are written. `duration_ms` is the recording's length.
    pub fn finish(&mut self, duration_ms: f64) -> (Vec<u8>, Vec<Patch>) {
        let tail = self.close_cluster();
        let segment = self.written - self.segment_data_at;
        let mut size = [0u8; 8];
        size.copy_from_slice(&(segment | (1u64 << 56)).to_be_bytes());
        let patches = vec![
            Patch {
                offset: self.segment_size_at,
                bytes: size.to_vec(),
            },
            Patch {
                offset: self.duration_at,
                bytes: duration_ms.to_be_bytes().to_vec(),
            },
        ];
        (tail, patches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_shortest_vints() {
        assert_eq!(size_bytes(0), vec![0x80]);
        assert_eq!(size_bytes(126), vec![0xFE]);
        // 127 is all ones in one byte (reserved for "unknown"), so it takes two.
        assert_eq!(size_bytes(127), vec![0x40, 0x7F]);
        assert_eq!(size_bytes(300), vec![0x41, 0x2C]);
    }

    #[test]
    fn ids_keep_their_marker_bits() {
        assert_eq!(id_bytes(id::EBML), vec![0x1A, 0x45, 0xDF, 0xA3]);
        assert_eq!(id_bytes(id::SIMPLE_BLOCK), vec![0xA3]);
        assert_eq!(id_bytes(id::TIMECODE_SCALE), vec![0x2A, 0xD7, 0xB1]);
    }

    #[test]
    fn clusters_start_on_video_keyframes_and_patches_point_at_the_header() {
        let mut m = WebmMuxer::new(vec![
            TrackSpec::Video {
                codec_id: "V_VP8",
                width: 320,
                height: 240,
                private: Vec::new(),
            },
            TrackSpec::Opus { channels: 2 },
        ]);
        let head = m.header();
        assert_eq!(&head[..4], &[0x1A, 0x45, 0xDF, 0xA3]);
        assert!(m.frame(0, 0, true, b"key").is_empty());
        assert!(m.frame(1, 10, false, b"a").is_empty());
        assert!(m.frame(0, 33, false, b"delta").is_empty());
        let closed = m.frame(0, 2000, true, b"key2");
        assert_eq!(&closed[..4], &[0x1F, 0x43, 0xB6, 0x75]);
        // Audio-only spans are cut every few seconds.
        assert!(m.frame(1, 2010, false, b"a").is_empty());
        let second = m.frame(1, 2010 + MAX_CLUSTER_MS, false, b"a");
        assert!(!second.is_empty());
        let (tail, patches) = m.finish(7010.0);
        assert!(!tail.is_empty());
        let at = patches[0].offset as usize;
        assert_eq!(&head[at - 4..at], &[0x18, 0x53, 0x80, 0x67]);
        assert_eq!(head[patches[1].offset as usize - 1], 0x88);
        assert_eq!(
            &head[patches[1].offset as usize..patches[1].offset as usize + 8],
            &0f64.to_be_bytes()
        );
        let total = (head.len() + closed.len() + second.len() + tail.len()) as u64;
        assert_eq!(m.written(), total);
    }

    #[test]
    fn video_frames_never_share_a_millisecond() {
        let mut m = WebmMuxer::new(vec![TrackSpec::Video {
            codec_id: "V_VP8",
            width: 2,
            height: 2,
            private: Vec::new(),
        }]);
        m.header();
        m.frame(0, 100, true, b"a");
        m.frame(0, 100, false, b"b");
        let (tail, _) = m.finish(0.0);
        // Relative times 0 and 1: [81 00 00 80 'a'] and [81 00 01 00 'b'].
        assert!(
            tail.windows(5).any(|w| w == [0x81, 0, 0, 0x80, b'a']),
            "{tail:02x?}"
        );
        assert!(
            tail.windows(5).any(|w| w == [0x81, 0, 1, 0, b'b']),
            "{tail:02x?}"
        );
    }

    #[test]
    fn block_times_never_go_back() {
        let mut m = WebmMuxer::new(vec![TrackSpec::Opus { channels: 2 }]);
        m.header();
        m.frame(0, 100, false, b"a");
        m.frame(0, 90, false, b"b");
        let (tail, _) = m.finish(0.0);
        // Both blocks have relative time 0: [A3 size 81 00 00 80 ..].
        let pos: Vec<usize> = tail
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w == &[0x81, 0x00])
            .map(|(i, _)| i)
            .collect();
        assert_eq!(pos.len(), 2, "{tail:02x?}");
    }
}
