//! A fragmented MP4 (ISO/IEC 14496-12, CMAF-style) muxer for H.264, VP8 and Opus,
//! sans-IO: frames in, bytes out, and the patches that put the duration in the header
//! once the recording ends. The same muxer makes HLS's init and media segments.
//!
//! Why fragmented: a recording must be playable however it ends. The header (`ftyp`,
//! then `moov` with an empty sample table and `mvex`) is written first; samples follow
//! in fragments (`moof` + `mdat`), each written whole, so a file cut short by a full disk
//! or a crash still plays up to its last whole fragment, and nothing needs rewriting at
//! the end but four durations, patched in place ([`Mp4Muxer::finish`]).
//!
//! Layout: one `traf` per track that has samples in the fragment, with `tfdt` (the
//! track's decode time of its first sample) and a `trun` listing each sample's duration,
//! size and flags (sync or not). A fragment starts at a video keyframe when the caller
//! asks ([`Mp4Muxer::frame`]'s `boundary`), and at the latest after
//! [`MAX_FRAGMENT`] seconds. A sample's duration is the time to the track's next sample;
//! the last one before a boundary takes the time to the boundary (video) or its own
//! length (audio, from the Opus TOC). Video runs at 90 kHz, audio at 48 kHz.
//!
//! Codec bindings: `avc1` with `avcC` (ISO/IEC 14496-15), `vp08` with `vpcC` (the VP
//! codec ISO-BMFF binding, version 1), `Opus` with `dOps` (Opus in ISO-BMFF).

/// The longest a fragment gets when no boundary comes (audio only, rare keyframes).
pub const MAX_FRAGMENT: f64 = 2.0;

const VIDEO_TIMESCALE: u32 = 90_000;
const AUDIO_TIMESCALE: u32 = 48_000;
const MOVIE_TIMESCALE: u32 = 1_000;

/// Sample flags (§8.8.3.1): a sync sample depends on nothing; other video samples
/// depend on others and are not sync samples.
const SYNC: u32 = 0x0200_0000;
const NON_SYNC: u32 = 0x0101_0000;

/// One track of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mp4Track {
    /// H.264 with its `AVCDecoderConfigurationRecord`.
    Avc {
        width: u16,
        height: u16,
        avcc: Vec<u8>,
    },
    Vp8 {
        width: u16,
        height: u16,
    },
    /// Opus at 48 kHz.
    Opus {
        channels: u8,
    },
}

impl Mp4Track {
    fn is_video(&self) -> bool {
        !matches!(self, Mp4Track::Opus { .. })
    }

    fn timescale(&self) -> u32 {
        if self.is_video() {
            VIDEO_TIMESCALE
        } else {
            AUDIO_TIMESCALE
        }
    }
}

pub use super::webm::Patch;

#[derive(Debug)]
struct Sample {
    time: u64,
    duration: u32,
    flags: u32,
    data: Vec<u8>,
}

#[derive(Debug, Default)]
struct TrackState {
    /// The last sample, waiting for the next to know its duration, and its nominal
    /// duration (used if a boundary comes first).
    pending: Option<(Sample, u32)>,
    samples: Vec<Sample>,
    last_time: Option<u64>,
    /// End of the last sample, in the track's timescale.
    end: u64,
}

/// The muxer: [`Mp4Muxer::init`] first, then frames, then [`Mp4Muxer::finish`].
#[derive(Debug)]
pub struct Mp4Muxer {
    tracks: Vec<Mp4Track>,
    state: Vec<TrackState>,
    sequence: u32,
    fragment_start: Option<f64>,
    /// Offsets in the init segment of the durations to patch: (offset, timescale).
    duration_at: Vec<(u64, u32)>,
}

fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
    out
}

fn full(version: u8, flags: u32) -> Vec<u8> {
    let mut v = flags.to_be_bytes();
    v[0] = version;
    v.to_vec()
}

fn u16b(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_be_bytes());
}

fn u32b(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_be_bytes());
}

fn u64b(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_be_bytes());
}

const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// A box under construction, with the offsets (within its body) of durations to patch.
struct Built {
    bytes: Vec<u8>,
    durations: Vec<(usize, u32)>,
}

impl Built {
    fn wrap(kind: &[u8; 4], parts: Vec<Built>, head: &[u8]) -> Built {
        let mut body = head.to_vec();
        let mut durations = Vec::new();
        for p in parts {
            let at = body.len() + 8;
            durations.extend(p.durations.into_iter().map(|(o, ts)| (o + at, ts)));
            body.extend_from_slice(&p.bytes);
        }
        Built {
            bytes: boxed(kind, &body),
            durations,
        }
    }

    fn leaf(bytes: Vec<u8>) -> Built {
        Built {
            bytes,
            durations: Vec::new(),
        }
    }
}

fn mvhd(next_track: u32) -> Built {
    let mut b = full(1, 0);
    u64b(&mut b, 0);
    u64b(&mut b, 0);
    u32b(&mut b, MOVIE_TIMESCALE);
    let at = b.len();
    u64b(&mut b, 0); // duration, patched
    u32b(&mut b, 0x0001_0000); // rate
    u16b(&mut b, 0x0100); // volume
    b.extend_from_slice(&[0; 10]);
    MATRIX.iter().for_each(|m| u32b(&mut b, *m));
    b.extend_from_slice(&[0; 24]);
    u32b(&mut b, next_track);
    Built {
        bytes: boxed(b"mvhd", &b),
        durations: vec![(at + 8, MOVIE_TIMESCALE)],
    }
}

fn tkhd(id: u32, t: &Mp4Track) -> Built {
    let mut b = full(1, 3); // enabled, in movie
    u64b(&mut b, 0);
    u64b(&mut b, 0);
    u32b(&mut b, id);
    u32b(&mut b, 0);
    let at = b.len();
    u64b(&mut b, 0); // duration (movie timescale), patched
    b.extend_from_slice(&[0; 8]);
    u16b(&mut b, 0); // layer
    u16b(&mut b, 0); // alternate group
    u16b(&mut b, if t.is_video() { 0 } else { 0x0100 });
    u16b(&mut b, 0);
    MATRIX.iter().for_each(|m| u32b(&mut b, *m));
    let (w, h) = match t {
        Mp4Track::Avc { width, height, .. } | Mp4Track::Vp8 { width, height } => (*width, *height),
        Mp4Track::Opus { .. } => (0, 0),
    };
    u32b(&mut b, u32::from(w) << 16);
    u32b(&mut b, u32::from(h) << 16);
    Built {
        bytes: boxed(b"tkhd", &b),
        durations: vec![(at + 8, MOVIE_TIMESCALE)],
    }
}

fn mdhd(timescale: u32) -> Built {
    let mut b = full(1, 0);
    u64b(&mut b, 0);
    u64b(&mut b, 0);
    u32b(&mut b, timescale);
    let at = b.len();
    u64b(&mut b, 0); // duration, patched
    u16b(&mut b, 0x55C4); // "und"
    u16b(&mut b, 0);
    Built {
        bytes: boxed(b"mdhd", &b),
        durations: vec![(at + 8, timescale)],
    }
}

fn hdlr(video: bool) -> Vec<u8> {
    let mut b = full(0, 0);
    u32b(&mut b, 0);
    b.extend_from_slice(if video { b"vide" } else { b"soun" });
    b.extend_from_slice(&[0; 12]);
    b.extend_from_slice(if video { b"Video\0" } else { b"Audio\0" });
    boxed(b"hdlr", &b)
}

fn visual_entry(kind: &[u8; 4], width: u16, height: u16, config: Vec<u8>) -> Vec<u8> {
    let mut b = vec![0; 6];
    u16b(&mut b, 1); // data reference index
    b.extend_from_slice(&[0; 16]);
    u16b(&mut b, width);
    u16b(&mut b, height);
    u32b(&mut b, 0x0048_0000);
    u32b(&mut b, 0x0048_0000);
    u32b(&mut b, 0);
    u16b(&mut b, 1); // frame count
    b.extend_from_slice(&[0; 32]); // compressor name
    u16b(&mut b, 0x0018);
    u16b(&mut b, 0xFFFF);
    b.extend_from_slice(&config);
    boxed(kind, &b)
}

fn sample_entry(t: &Mp4Track) -> Vec<u8> {
    match t {
        Mp4Track::Avc {
            width,
            height,
            avcc,
        } => visual_entry(b"avc1", *width, *height, boxed(b"avcC", avcc)),
        Mp4Track::Vp8 { width, height } => {
            // Profile 0, level 0 (undefined), 8-bit 4:2:0, BT.709, limited range.
            let mut c = full(1, 0);
            c.extend_from_slice(&[0, 0, (8 << 4) | (1 << 1), 1, 1, 1]);
            u16b(&mut c, 0);
            visual_entry(b"vp08", *width, *height, boxed(b"vpcC", &c))
        }
        Mp4Track::Opus { channels } => {
            let mut b = vec![0; 6];
            u16b(&mut b, 1);
            b.extend_from_slice(&[0; 8]);
            u16b(&mut b, u16::from(*channels));
            u16b(&mut b, 16);
            b.extend_from_slice(&[0; 4]);
            u32b(&mut b, AUDIO_TIMESCALE << 16);
            let mut d = vec![0, *channels];
            u16b(&mut d, 0); // pre-skip: WebRTC streams start decoded
            u32b(&mut d, 48_000);
            u16b(&mut d, 0); // output gain
            d.push(0); // channel mapping family
            b.extend_from_slice(&boxed(b"dOps", &d));
            boxed(b"Opus", &b)
        }
    }
}

fn stbl(t: &Mp4Track) -> Vec<u8> {
    let mut stsd = full(0, 0);
    u32b(&mut stsd, 1);
    stsd.extend_from_slice(&sample_entry(t));
    let empty = |kind: &[u8; 4]| {
        let mut b = full(0, 0);
        u32b(&mut b, 0);
        boxed(kind, &b)
    };
    let mut stsz = full(0, 0);
    u32b(&mut stsz, 0);
    u32b(&mut stsz, 0);
    let mut body = boxed(b"stsd", &stsd);
    body.extend_from_slice(&empty(b"stts"));
    body.extend_from_slice(&empty(b"stsc"));
    body.extend_from_slice(&boxed(b"stsz", &stsz));
    body.extend_from_slice(&empty(b"stco"));
    boxed(b"stbl", &body)
}

fn trak(id: u32, t: &Mp4Track) -> Built {
    let video = t.is_video();
    let header = if video {
        let mut v = full(0, 1);
        v.extend_from_slice(&[0; 8]);
        boxed(b"vmhd", &v)
    } else {
        let mut s = full(0, 0);
        s.extend_from_slice(&[0; 4]);
        boxed(b"smhd", &s)
    };
    let mut dref = full(0, 0);
    u32b(&mut dref, 1);
    dref.extend_from_slice(&boxed(b"url ", &full(0, 1)));
    let dinf = boxed(b"dinf", &boxed(b"dref", &dref));
    let minf = Built::leaf(boxed(b"minf", &[header, dinf, stbl(t)].concat()));
    let mdia = Built::wrap(
        b"mdia",
        vec![mdhd(t.timescale()), Built::leaf(hdlr(video)), minf],
        &[],
    );
    Built::wrap(b"trak", vec![tkhd(id, t), mdia], &[])
}

impl Mp4Muxer {
    pub fn new(tracks: Vec<Mp4Track>) -> Self {
        let state = tracks.iter().map(|_| TrackState::default()).collect();
        Self {
            tracks,
            state,
            sequence: 0,
            fragment_start: None,
            duration_at: Vec::new(),
        }
    }

    /// The init segment: `ftyp` and `moov` (durations 0 until [`Mp4Muxer::finish`]).
    pub fn init(&mut self) -> Vec<u8> {
        let mut ftyp = b"iso6".to_vec();
        u32b(&mut ftyp, 0);
        for brand in [b"iso6", b"cmfc", b"isom", b"mp41"] {
            ftyp.extend_from_slice(brand);
        }
        let ftyp = boxed(b"ftyp", &ftyp);
        let n = self.tracks.len() as u32;
        let mut parts = vec![mvhd(n + 1)];
        for (i, t) in self.tracks.iter().enumerate() {
            parts.push(trak(i as u32 + 1, t));
        }
        let mut mehd = full(1, 0);
        let mehd_at = mehd.len();
        u64b(&mut mehd, 0);
        let mehd = Built {
            bytes: boxed(b"mehd", &mehd),
            durations: vec![(mehd_at + 8, MOVIE_TIMESCALE)],
        };
        let mut mvex = vec![mehd];
        for i in 0..n {
            let mut trex = full(0, 0);
            for v in [i + 1, 1, 0, 0, 0] {
                u32b(&mut trex, v);
            }
            mvex.push(Built::leaf(boxed(b"trex", &trex)));
        }
        parts.push(Built::wrap(b"mvex", mvex, &[]));
        let moov = Built::wrap(b"moov", parts, &[]);
        let base = ftyp.len() as u64;
        self.duration_at = moov
            .durations
            .iter()
            .map(|&(o, ts)| (base + o as u64, ts))
            .collect();
        [ftyp, moov.bytes].concat()
    }

    /// Adds a frame of track `track` at `t` seconds since the file's start (frames in
    /// time order across tracks). `boundary` asks for a new fragment to start with this
    /// frame. Returns the bytes of the fragment this frame closed, if any.
    pub fn frame(
        &mut self,
        track: usize,
        t: f64,
        keyframe: bool,
        data: &[u8],
        boundary: bool,
    ) -> Vec<u8> {
        let Some(spec) = self.tracks.get(track) else {
            return Vec::new();
        };
        let video = spec.is_video();
        let scale = f64::from(spec.timescale());
        let mut time = (t.max(0.0) * scale).round() as u64;
        let st = &mut self.state[track];
        if let Some(last) = st.last_time {
            // Decode times strictly increase within a track.
            time = time.max(last + 1);
        }
        let nominal = if video {
            (scale / 30.0) as u32
        } else {
            super::ogg::opus_samples(data).unwrap_or(960)
        };
        let long = self.fragment_start.is_some_and(|s| t - s >= MAX_FRAGMENT);
        let out = if boundary || long {
            // The pending video sample of this track ends where this one starts.
            if let Some((mut p, _)) = self.state[track].pending.take() {
                p.duration = (time - p.time) as u32;
                self.state[track].samples.push(p);
            }
            self.fragment()
        } else {
            Vec::new()
        };
        let st = &mut self.state[track];
        if let Some((mut p, _)) = st.pending.take() {
            p.duration = (time - p.time).max(1) as u32;
            st.samples.push(p);
        }
        st.last_time = Some(time);
        let flags = if keyframe || !video { SYNC } else { NON_SYNC };
        st.pending = Some((
            Sample {
                time,
                duration: nominal,
                flags,
                data: data.to_vec(),
            },
            nominal,
        ));
        if self.fragment_start.is_none() {
            self.fragment_start = Some(t);
        }
        out
    }

    /// Closes the current fragment: every pending sample takes its nominal duration.
    /// Empty if there are no samples.
    pub fn fragment(&mut self) -> Vec<u8> {
        for st in &mut self.state {
            if let Some((mut p, nominal)) = st.pending.take() {
                p.duration = nominal;
                st.samples.push(p);
            }
        }
        self.fragment_start = None;
        if self.state.iter().all(|s| s.samples.is_empty()) {
            return Vec::new();
        }
        self.sequence += 1;
        let mut mfhd = full(0, 0);
        u32b(&mut mfhd, self.sequence);
        let mut trafs = Vec::new();
        // (offset in moof of the trun's data_offset field, bytes of data before it)
        let mut offsets = Vec::new();
        let mut mdat = Vec::new();
        for (i, st) in self.state.iter_mut().enumerate() {
            if st.samples.is_empty() {
                continue;
            }
            let mut tfhd = full(0, 0x02_0000); // default-base-is-moof
            u32b(&mut tfhd, i as u32 + 1);
            let mut tfdt = full(1, 0);
            u64b(&mut tfdt, st.samples[0].time);
            let mut trun = full(0, 0x0701); // data offset; duration, size, flags
            u32b(&mut trun, st.samples.len() as u32);
            let data_offset_in_trun = trun.len();
            u32b(&mut trun, 0);
            for s in &st.samples {
                u32b(&mut trun, s.duration);
                u32b(&mut trun, s.data.len() as u32);
                u32b(&mut trun, s.flags);
            }
            let head = [boxed(b"tfhd", &tfhd), boxed(b"tfdt", &tfdt)].concat();
            // traf header (8) + tfhd + tfdt + trun header (8) + field offset.
            let at_in_traf = 8 + head.len() + 8 + data_offset_in_trun;
            let traf = boxed(b"traf", &[head, boxed(b"trun", &trun)].concat());
            offsets.push((trafs.len() + at_in_traf, mdat.len()));
            trafs.extend_from_slice(&traf);
            for s in st.samples.drain(..) {
                st.end = s.time + u64::from(s.duration);
                mdat.extend_from_slice(&s.data);
            }
        }
        let mfhd = boxed(b"mfhd", &mfhd);
        let mut moof = boxed(b"moof", &[mfhd.clone(), trafs].concat());
        let moof_len = moof.len();
        for (at, before) in offsets {
            let at = 8 + mfhd.len() + at;
            let off = (moof_len + 8 + before) as u32;
            moof[at..at + 4].copy_from_slice(&off.to_be_bytes());
        }
        moof.extend_from_slice(&boxed(b"mdat", &mdat));
        moof
    }

    /// Ends the file: the last fragment's bytes, and the patches (the movie's, each
    /// track's and the fragments' duration) to apply to the init segment's bytes, which
    /// start at `base` in the file. `duration` is the recording's length in seconds.
    pub fn finish(&mut self, duration: f64) -> (Vec<u8>, Vec<Patch>) {
        let tail = self.fragment();
        let patches = self
            .duration_at
            .iter()
            .map(|&(offset, ts)| Patch {
                offset,
                bytes: ((duration.max(0.0) * f64::from(ts)).round() as u64)
                    .to_be_bytes()
                    .to_vec(),
            })
            .collect();
        (tail, patches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The boxes at the top of `b`: (type, offset, size).
    fn boxes(b: &[u8]) -> Vec<(String, usize, usize)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 8 <= b.len() {
            let size = u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
            assert!(size >= 8 && at + size <= b.len(), "box at {at}: {size}");
            out.push((
                String::from_utf8_lossy(&b[at + 4..at + 8]).into_owned(),
                at,
                size,
            ));
            at += size;
        }
        assert_eq!(at, b.len(), "trailing bytes");
        out
    }

    /// The body of the box at `path` (each name looked up in its parent's body), from
    /// `skip` bytes in.
    fn child<'a>(b: &'a [u8], path: &[&str], skip: usize) -> &'a [u8] {
        let mut body = b;
        for name in path {
            let (_, at, size) = boxes(body)
                .into_iter()
                .find(|(t, _, _)| t == name)
                .unwrap_or_else(|| panic!("no {name}"));
            body = &body[at + 8..at + size];
        }
        &body[skip..]
    }

    fn muxer() -> Mp4Muxer {
        Mp4Muxer::new(vec![
            Mp4Track::Avc {
                width: 640,
                height: 360,
                avcc: vec![1, 0x42, 0xC0, 0x1E, 0xFF, 0xE1, 0, 1, 0x67, 1, 0, 1, 0x68],
            },
            Mp4Track::Opus { channels: 2 },
        ])
    }

    #[test]
    fn the_init_segment_nests_and_sizes_its_boxes() {
        let mut m = muxer();
        let init = m.init();
        let top: Vec<String> = boxes(&init).into_iter().map(|b| b.0).collect();
        assert_eq!(top, ["ftyp", "moov"]);
        let moov = child(&init, &["moov"], 0);
        let kinds: Vec<String> = boxes(moov).into_iter().map(|b| b.0).collect();
        assert_eq!(kinds, ["mvhd", "trak", "trak", "mvex"]);
        let stsd = child(moov, &["trak", "mdia", "minf", "stbl", "stsd"], 8);
        let entry: Vec<String> = boxes(stsd).into_iter().map(|b| b.0).collect();
        assert_eq!(entry, ["avc1"]);
        // avc1: 78 bytes of visual sample entry, then avcC.
        let avc1 = &stsd[8..];
        let inner: Vec<String> = boxes(&avc1[78..]).into_iter().map(|b| b.0).collect();
        assert_eq!(inner, ["avcC"]);
        assert_eq!(u16::from_be_bytes([avc1[24], avc1[25]]), 640);
        let mvex = child(moov, &["mvex"], 0);
        let kinds: Vec<String> = boxes(mvex).into_iter().map(|b| b.0).collect();
        assert_eq!(kinds, ["mehd", "trex", "trex"]);
        // Six durations to patch: mvhd, tkhd and mdhd of each track, mehd.
        assert_eq!(m.duration_at.len(), 6);
        let (_, patches) = m.finish(2.5);
        for p in &patches {
            let at = p.offset as usize;
            assert_eq!(&init[at..at + 8], &[0; 8], "patched field is zero before");
        }
        let mdhd_video = patches
            .iter()
            .find(|p| p.bytes == 225_000u64.to_be_bytes())
            .expect("90 kHz duration");
        assert!(mdhd_video.offset > 0);
        assert!(patches.iter().any(|p| p.bytes == 120_000u64.to_be_bytes()));
        assert!(patches.iter().any(|p| p.bytes == 2_500u64.to_be_bytes()));
    }

    #[test]
    fn fragments_start_at_boundaries_and_times_add_up() {
        let mut m = muxer();
        m.init();
        assert!(m.frame(0, 0.0, true, b"key", true).is_empty());
        assert!(m.frame(1, 0.005, true, &[0xFC, 1], false).is_empty());
        assert!(m.frame(0, 1.0 / 30.0, false, b"p1", false).is_empty());
        assert!(m.frame(1, 0.025, true, &[0xFC, 2], false).is_empty());
        let frag = m.frame(0, 2.0 / 30.0, true, b"key2", true);
        let top: Vec<String> = boxes(&frag).into_iter().map(|b| b.0).collect();
        assert_eq!(top, ["moof", "mdat"]);
        let moof = child(&frag, &["moof"], 0);
        let trafs: Vec<(String, usize, usize)> = boxes(moof).into_iter().collect();
        assert_eq!(trafs[0].0, "mfhd");
        assert_eq!(trafs.len(), 3);
        // Video: tfdt 0, samples of 3000 ticks (the last ends at the boundary), flags.
        let vtraf = &moof[trafs[1].1 + 8..trafs[1].1 + trafs[1].2];
        let vt: Vec<String> = boxes(vtraf).into_iter().map(|b| b.0).collect();
        assert_eq!(vt, ["tfhd", "tfdt", "trun"]);
        let b = boxes(vtraf);
        let trun = &vtraf[b[2].1 + 8..b[2].1 + b[2].2];
        assert_eq!(u32::from_be_bytes(trun[4..8].try_into().unwrap()), 2);
        let off = u32::from_be_bytes(trun[8..12].try_into().unwrap()) as usize;
        assert_eq!(&frag[off..off + 3], b"key", "data offset points into mdat");
        let s = |i: usize, f: usize| {
            let at = 12 + i * 12 + f * 4;
            u32::from_be_bytes(trun[at..at + 4].try_into().unwrap())
        };
        assert_eq!((s(0, 0), s(0, 1), s(0, 2)), (3000, 3, SYNC));
        assert_eq!((s(1, 0), s(1, 1), s(1, 2)), (3000, 2, NON_SYNC));
        // Audio: tfdt at 5 ms (240 ticks at 48 kHz), the last sample its TOC length.
        let atraf = &moof[trafs[2].1 + 8..trafs[2].1 + trafs[2].2];
        let b = boxes(atraf);
        let tfdt = &atraf[b[1].1 + 12..b[1].1 + b[1].2];
        assert_eq!(u64::from_be_bytes(tfdt.try_into().unwrap()), 240);
        let trun = &atraf[b[2].1 + 8..b[2].1 + b[2].2];
        let off = u32::from_be_bytes(trun[8..12].try_into().unwrap()) as usize;
        assert_eq!(&frag[off..off + 2], &[0xFC, 1]);
        let dur = |i: usize| u32::from_be_bytes(trun[12 + i * 12..16 + i * 12].try_into().unwrap());
        assert_eq!((dur(0), dur(1)), (960, 960));
        // The next fragment starts with the keyframe at 6000 and is numbered 2.
        let (tail, _) = m.finish(1.0);
        let moof = child(&tail, &["moof"], 0);
        let mfhd = &moof[8..boxes(moof)[0].2];
        assert_eq!(u32::from_be_bytes(mfhd[4..8].try_into().unwrap()), 2);
        let traf = &moof[boxes(moof)[1].1 + 8..];
        let b = boxes(&traf[..boxes(moof)[1].2 - 8]);
        let tfdt = &traf[b[1].1 + 12..b[1].1 + b[1].2];
        assert_eq!(u64::from_be_bytes(tfdt.try_into().unwrap()), 6000);
    }

    #[test]
    fn long_fragments_are_cut_and_video_times_increase() {
        let mut m = Mp4Muxer::new(vec![Mp4Track::Vp8 {
            width: 2,
            height: 2,
        }]);
        let init = m.init();
        assert!(init.windows(4).any(|w| w == b"vpcC"));
        m.frame(0, 0.0, true, b"k", true);
        m.frame(0, 0.0, false, b"d", false); // same time: moved one tick on
        let mut cut = Vec::new();
        for i in 1..=70 {
            cut.extend(m.frame(0, f64::from(i) / 30.0, false, b"d", false));
        }
        assert!(!cut.is_empty(), "a fragment closes after {MAX_FRAGMENT} s");
        let moof = child(&cut, &["moof"], 0);
        let traf = &moof[boxes(moof)[1].1 + 8..boxes(moof)[1].1 + boxes(moof)[1].2];
        let b = boxes(traf);
        let trun = &traf[b[2].1 + 8..b[2].1 + b[2].2];
        assert_eq!(u32::from_be_bytes(trun[12..16].try_into().unwrap()), 1);
    }
}
