//! One recording, sans-IO: RTP and RTCP in, frames into a muxer, NACKs and PLIs out.
//!
//! The recorder is a subscriber like any other: the forwarder sends it one down track per
//! recorded track over a plain RTP transport on loopback, with its NACK cache, keyframe
//! requests and translated sender reports. Here:
//! - **Reordering.** Each stream holds packets in a jitter buffer keyed by extended
//!   sequence number and releases them in order. A gap is NACKed after
//!   [`NACK_GRACE`], again every [`NACK_EVERY`], and given up after [`JITTER_WINDOW`].
//! - **Frames** ([`super::depack`]): VP8 frames and H.264 access units are assembled from
//!   their packets. A frame with a lost packet is dropped, and so is everything after it
//!   until a keyframe, for which the forwarder is asked (PLI, every [`PLI_EVERY`] until
//!   one comes): the file never holds a frame that decodes corrupt. Opus packets are
//!   frames. HLS asks for a keyframe the same way when a segment is due.
//! - **Sync.** Each stream's RTP time maps to wall time through the first sender report
//!   (which the forwarder translates into the down track's timeline, so it survives
//!   simulcast switches); a stream with no report within [`SYNC_WAIT`] maps through its
//!   first packet's arrival. Nothing is written until every stream's mapping is fixed.
//! - **Writing** ([`super::output`]): frames of all streams go to the muxer in wall-time
//!   order. A file with video starts at its first keyframe, and audio before it is
//!   dropped.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

use prism_forwarder::ids::Ssrc;
use prism_forwarder::wire::rtcp::{self, RtcpPacket};
use prism_forwarder::wire::rtp::RtpPacket;

use super::depack::{Assembler, Frame, Packet};
use super::ogg::opus_samples;
pub use super::output::Container;
use super::output::{Output, Write};
use super::webm::Patch;

pub const JITTER_WINDOW: Duration = Duration::from_millis(600);
pub const NACK_GRACE: Duration = Duration::from_millis(10);
pub const NACK_EVERY: Duration = Duration::from_millis(50);
pub const PLI_EVERY: Duration = Duration::from_millis(500);
pub const SYNC_WAIT: Duration = Duration::from_secs(3);
/// Frames are held at most this long for a stream that has none queued (muted, stalled).
/// It must cover a stream's jitter buffer holding a gap ([`JITTER_WINDOW`]) on top of
/// how far its media times lag their arrival: an SDK's audio source buffers before it
/// sends (LiveKit's Python SDK about 0.5 s), so with 1 s, audio held for a lost packet
/// came out older than video already written, and the muxer had to stack it on one
/// timestamp (ffmpeg: "non monotonically increasing dts"; seen under 5 % loss).
const INTERLEAVE_WAIT: f64 = 2.0;
/// Packets a jitter buffer holds at most.
const MAX_BUFFERED: usize = 4096;
/// The recorder's own SSRC in the RTCP it sends.
const RECORDER_SSRC: u32 = 0x5052_4543;

/// The codecs the recorder writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaCodec {
    Vp8,
    H264,
    Opus,
}

impl MediaCodec {
    pub fn is_video(self) -> bool {
        matches!(self, MediaCodec::Vp8 | MediaCodec::H264)
    }
}

/// One recorded stream: the SSRC the forwarder sends it on and its codec.
#[derive(Clone, Copy, Debug)]
pub struct StreamSpec {
    pub ssrc: u32,
    pub codec: MediaCodec,
    pub clock_rate: u32,
}

/// Where bytes go: the file (or, for HLS, files), or a test's buffer.
pub trait Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    fn patch(&mut self, patch: &Patch) -> std::io::Result<()>;
    /// Writes a whole file (an HLS segment or playlist) so that readers see either the
    /// old one or the new one, never a part.
    fn file(&mut self, path: &Path, bytes: &[u8]) -> std::io::Result<()>;
}

/// What a finished recording reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    pub bytes: u64,
    /// From the first frame written to the end of the last, in seconds.
    pub duration: f64,
    pub frames: u64,
    /// Video frames dropped because a packet of theirs (or of a frame they depend on)
    /// was lost for good.
    pub dropped: u64,
    /// HLS: media segments written.
    pub segments: u64,
    pub error: Option<String>,
}

#[derive(Debug)]
struct Missing {
    since: Instant,
    last_nack: Option<Instant>,
}

#[derive(Debug)]
struct Stream {
    spec: StreamSpec,
    /// Highest extended sequence number seen, and the next one to release.
    max_seq: Option<u64>,
    next_seq: u64,
    /// Whether a packet has been released (before that, an earlier packet may still
    /// move the start back).
    released: bool,
    last_ts: Option<u64>,
    buffer: BTreeMap<u64, Packet>,
    arrived: BTreeMap<u64, Instant>,
    missing: BTreeMap<u64, Missing>,
    asm: Assembler,
    /// A keyframe is wanted without anything being dropped (an HLS segment is due).
    want_keyframe: bool,
    last_pli: Option<Instant>,
    frames: VecDeque<Frame>,
    /// (wall seconds, extended RTP timestamp) of the last sender report.
    sr: Option<(f64, u64)>,
    /// (wall seconds, extended RTP timestamp) of the first packet's arrival.
    first: Option<(f64, u64, Instant)>,
    /// The fixed mapping used for writing.
    mapping: Option<(f64, u64)>,
    /// The next expected Opus timestamp (for gaps in Ogg).
    next_audio_ts: Option<u64>,
}

/// Extends a 16- or 32-bit counter to 64 bits, nearest to `reference`.
fn extend(reference: Option<u64>, value: u64, bits: u32) -> u64 {
    let Some(r) = reference else {
        return value + (1 << bits);
    };
    let m = 1u64 << bits;
    let base = r & !(m - 1);
    let candidates = [base.wrapping_sub(m), base, base + m];
    candidates
        .into_iter()
        .map(|c| c.wrapping_add(value))
        .filter(|&c| c >= m)
        .min_by_key(|&c| c.abs_diff(r))
        .unwrap_or(value + m)
}

fn ntp_secs(ntp: u64) -> f64 {
    (ntp >> 32) as f64 + (ntp & 0xFFFF_FFFF) as f64 / 4_294_967_296.0
}

impl Stream {
    fn new(spec: StreamSpec) -> Self {
        Self {
            spec,
            max_seq: None,
            next_seq: 0,
            released: false,
            last_ts: None,
            buffer: BTreeMap::new(),
            arrived: BTreeMap::new(),
            missing: BTreeMap::new(),
            asm: Assembler::new(spec.codec),
            want_keyframe: false,
            last_pli: None,
            frames: VecDeque::new(),
            sr: None,
            first: None,
            mapping: None,
            next_audio_ts: None,
        }
    }

    fn wall_of(&self, ts: u64) -> Option<f64> {
        let (wall, rtp) = self.mapping?;
        Some(wall + (ts as f64 - rtp as f64) / f64::from(self.spec.clock_rate))
    }

    fn on_rtp(&mut self, now: Instant, wall: f64, pkt: &RtpPacket<&[u8]>) {
        let seq = extend(self.max_seq, u64::from(pkt.sequence_number()), 16);
        let ts = extend(self.last_ts, u64::from(pkt.timestamp()), 32);
        if self.first.is_none() {
            self.first = Some((wall, ts, now));
            self.next_seq = seq;
        }
        if seq < self.next_seq && !self.released && self.next_seq - seq < 64 {
            // Reordered before anything was released: start earlier.
            self.next_seq = seq;
        }
        if seq < self.next_seq || self.buffer.contains_key(&seq) {
            return;
        }
        self.missing.remove(&seq);
        match self.max_seq {
            Some(m) if seq > m + 1 => {
                for s in (m + 1)..seq.min(m + 1 + 512) {
                    self.missing.insert(
                        s,
                        Missing {
                            since: now,
                            last_nack: None,
                        },
                    );
                }
            }
            _ => {}
        }
        if self.max_seq.is_none_or(|m| seq > m) {
            self.max_seq = Some(seq);
            self.last_ts = Some(ts);
        }
        if self.buffer.len() >= MAX_BUFFERED {
            return;
        }
        self.buffer.insert(
            seq,
            Packet {
                ts,
                marker: pkt.marker(),
                payload: pkt.payload().to_vec(),
            },
        );
        self.arrived.insert(seq, now);
    }

    /// Releases what is in order, skipping gaps older than the jitter window.
    fn release(&mut self, now: Instant, flush: bool) {
        loop {
            if let Some(p) = self.buffer.remove(&self.next_seq) {
                self.arrived.remove(&self.next_seq);
                self.next_seq += 1;
                self.released = true;
                self.asm.push(p, &mut self.frames);
                continue;
            }
            let Some((&oldest, &at)) = self.arrived.iter().next() else {
                return;
            };
            if !flush && now.saturating_duration_since(at) < JITTER_WINDOW {
                return;
            }
            // Give up on the gap: whatever frame it was in is lost.
            for s in self.next_seq..oldest {
                self.missing.remove(&s);
            }
            self.next_seq = oldest;
            self.asm.lost();
        }
    }
}

/// One recording.
pub struct Session<S: Sink> {
    streams: Vec<Stream>,
    container: Container,
    sink: S,
    output: Option<Output>,
    created: Instant,
    synced: bool,
    /// Wall time of the file's zero, and of the end of the last frame written.
    origin: Option<f64>,
    end: f64,
    frames: u64,
    bytes: u64,
    error: Option<String>,
    transmit: Vec<Vec<u8>>,
}

impl<S: Sink> std::fmt::Debug for Session<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl<S: Sink> Session<S> {
    pub fn new(now: Instant, streams: &[StreamSpec], container: Container, sink: S) -> Self {
        Self {
            streams: streams.iter().copied().map(Stream::new).collect(),
            container,
            sink,
            output: None,
            created: now,
            synced: false,
            origin: None,
            end: 0.0,
            frames: 0,
            bytes: 0,
            error: None,
            transmit: Vec::new(),
        }
    }

    /// The first write error, which ends the recording.
    pub fn failed(&self) -> Option<&str> {
        self.error.as_deref()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// RTCP to send to the forwarder.
    pub fn drain_transmit(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.transmit)
    }

    /// A datagram from the forwarder: RTP, or RTCP (RFC 5761 demultiplexing).
    pub fn on_datagram(&mut self, now: Instant, wall: f64, buf: &[u8]) {
        if buf.len() < 2 {
            return;
        }
        if (200..=206).contains(&buf[1]) {
            for p in rtcp::packets(buf) {
                let Ok(RtcpPacket::SenderReport(sr)) = p else {
                    continue;
                };
                let ssrc = sr.ssrc().0;
                if let Some(s) = self.streams.iter_mut().find(|s| s.spec.ssrc == ssrc) {
                    let ts = extend(s.last_ts, u64::from(sr.rtp_timestamp()), 32);
                    s.sr = Some((ntp_secs(sr.ntp_timestamp()), ts));
                }
            }
            return;
        }
        let Ok(pkt) = RtpPacket::new_checked(buf) else {
            return;
        };
        let ssrc = pkt.ssrc().0;
        if let Some(s) = self.streams.iter_mut().find(|s| s.spec.ssrc == ssrc) {
            s.on_rtp(now, wall, &pkt);
        }
    }

    /// Timer work and writing; call after every datagram and at least every 20 ms.
    pub fn poll(&mut self, now: Instant, wall: f64) {
        for s in &mut self.streams {
            s.release(now, false);
        }
        self.feedback(now);
        self.sync(now);
        self.write(wall, false);
    }

    fn feedback(&mut self, now: Instant) {
        for s in &mut self.streams {
            let media = s.spec.ssrc;
            let due: Vec<u16> = s
                .missing
                .iter_mut()
                .filter(|(_, m)| {
                    now.saturating_duration_since(m.since) >= NACK_GRACE
                        && m.last_nack
                            .is_none_or(|t| now.saturating_duration_since(t) >= NACK_EVERY)
                })
                .map(|(seq, m)| {
                    m.last_nack = Some(now);
                    *seq as u16
                })
                .take(64)
                .collect();
            if !due.is_empty() {
                let mut buf = vec![0u8; rtcp::nack_buffer_len(&due)];
                if let Ok(n) = rtcp::emit_nack(&mut buf, Ssrc(RECORDER_SSRC), Ssrc(media), &due) {
                    buf.truncate(n);
                    self.transmit.push(buf);
                }
            }
            if (s.asm.need_keyframe || s.want_keyframe)
                && s.first.is_some()
                && s.last_pli
                    .is_none_or(|t| now.saturating_duration_since(t) >= PLI_EVERY)
            {
                s.last_pli = Some(now);
                let mut buf = vec![0u8; 12];
                if let Ok(n) = rtcp::emit_pli(&mut buf, Ssrc(RECORDER_SSRC), Ssrc(media)) {
                    buf.truncate(n);
                    self.transmit.push(buf);
                }
            }
        }
    }

    /// Fixes every stream's wall-clock mapping once each has a sender report, or once
    /// [`SYNC_WAIT`] has passed.
    fn sync(&mut self, now: Instant) {
        if self.synced {
            return;
        }
        let all_sr = self.streams.iter().all(|s| s.sr.is_some());
        let single = self.streams.len() == 1 && self.streams[0].first.is_some();
        let waited = now.saturating_duration_since(self.created) >= SYNC_WAIT
            && self.streams.iter().any(|s| s.first.is_some());
        if !(all_sr || single || waited) {
            return;
        }
        for s in &mut self.streams {
            s.mapping = s.sr.or(s.first.map(|(w, t, _)| (w, t)));
        }
        if self.streams.iter().any(|s| s.mapping.is_none()) && !waited {
            return;
        }
        self.synced = true;
    }

    /// Moves frames to the muxer in wall-time order.
    fn write(&mut self, wall: f64, flush: bool) {
        if !self.synced || self.error.is_some() {
            return;
        }
        loop {
            // The earliest queued frame across streams.
            let mut best: Option<(usize, f64)> = None;
            let mut someone_empty = false;
            for (i, s) in self.streams.iter().enumerate() {
                match s.frames.front() {
                    Some(f) => {
                        let t = s.wall_of(f.ts).unwrap_or(wall);
                        if best.is_none_or(|(_, b)| t < b) {
                            best = Some((i, t));
                        }
                    }
                    None => someone_empty |= s.mapping.is_some() || s.first.is_none(),
                }
            }
            let Some((i, t)) = best else {
                return;
            };
            if someone_empty && !flush && t > wall - INTERLEAVE_WAIT {
                return;
            }
            let Some(f) = self.streams[i].frames.pop_front() else {
                return;
            };
            self.emit(i, t, f);
            if self.error.is_some() {
                return;
            }
        }
    }

    fn has_video(&self) -> bool {
        self.streams.iter().any(|s| s.spec.codec.is_video())
    }

    fn emit(&mut self, i: usize, t: f64, f: Frame) {
        let codec = self.streams[i].spec.codec;
        let has_video = self.has_video();
        if self.output.is_none() {
            if has_video && !(codec.is_video() && f.keyframe) {
                return;
            }
            let codecs: Vec<MediaCodec> = self.streams.iter().map(|s| s.spec.codec).collect();
            let (output, head) = Output::start(
                &self.container,
                &codecs,
                self.streams[i].spec.ssrc,
                codec,
                &f,
            );
            self.output = Some(output);
            self.origin = Some(t);
            self.put(head);
        }
        let origin = self.origin.unwrap_or(t);
        if t < origin - 0.005 {
            return;
        }
        let dur = match codec {
            MediaCodec::Opus => f64::from(opus_samples(&f.data).unwrap_or(960)) / 48_000.0,
            _ => 0.0,
        };
        let gap = {
            let s = &mut self.streams[i];
            if codec == MediaCodec::Opus {
                let gap = s.next_audio_ts.map_or(0, |n| {
                    f.ts.saturating_sub(n) * 48_000 / u64::from(s.spec.clock_rate)
                });
                let samples = u64::from(opus_samples(&f.data).unwrap_or(960));
                s.next_audio_ts = Some(f.ts + samples * u64::from(s.spec.clock_rate) / 48_000);
                gap
            } else {
                0
            }
        };
        if codec.is_video() && f.keyframe {
            self.streams[i].want_keyframe = false;
        }
        let Some(output) = self.output.as_mut() else {
            return;
        };
        let writes = output.frame(i, t - origin, codec, &f, has_video, gap);
        if output.wants_keyframe(t - origin) {
            for s in &mut self.streams {
                s.want_keyframe |= s.spec.codec.is_video();
            }
        }
        self.frames += 1;
        self.end = self.end.max(t - origin + dur);
        self.put(writes);
    }

    fn put(&mut self, writes: Vec<Write>) {
        for w in writes {
            if self.error.is_some() {
                return;
            }
            let (r, n) = match &w {
                Write::Append(b) if b.is_empty() => continue,
                Write::Append(b) => (self.sink.write(b), b.len()),
                Write::File(p, b) => (self.sink.file(p, b), b.len()),
            };
            match r {
                Ok(()) => self.bytes += n as u64,
                Err(e) => self.error = Some(format!("writing the recording failed: {e}")),
            }
        }
    }

    /// Ends the recording: everything buffered is written, and the file is finalized.
    pub fn finish(mut self, wall: f64) -> (Outcome, S) {
        for s in &mut self.streams {
            s.release(Instant::now(), true);
        }
        if !self.synced {
            for s in &mut self.streams {
                s.mapping = s.sr.or(s.first.map(|(w, t, _)| (w, t)));
            }
            self.synced = true;
        }
        self.write(wall, true);
        let mut segments = 0;
        let mut bytes = None;
        if let Some(output) = self.output.as_mut() {
            // A failed write leaves the last whole cluster, fragment or page as the end
            // of the file.
            let (tail, patches) = output.finish(self.end);
            // After a failed write only what is patched in place is patched: a WebM
            // segment keeps its unknown size.
            let apply = match (&self.error, &output) {
                (Some(_), Output::WebM(_)) => &patches[1..],
                _ => &patches[..],
            };
            let apply = apply.to_vec();
            segments = output.segments();
            bytes = output.media_bytes();
            if self.error.is_none() {
                self.put(tail);
            }
            for p in &apply {
                if let Err(e) = self.sink.patch(p) {
                    self.error
                        .get_or_insert(format!("finalizing the recording failed: {e}"));
                }
            }
        }
        let outcome = Outcome {
            bytes: bytes.unwrap_or(self.bytes),
            duration: self.end,
            frames: self.frames,
            dropped: self.streams.iter().map(|s| s.asm.dropped).sum(),
            segments,
            error: self.error.clone(),
        };
        (outcome, self.sink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Mem {
        data: Vec<u8>,
        limit: Option<usize>,
        files: Vec<(std::path::PathBuf, Vec<u8>)>,
    }

    impl Sink for Mem {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            if self
                .limit
                .is_some_and(|l| self.data.len() + bytes.len() > l)
            {
                return Err(std::io::Error::other("No space left on device"));
            }
            self.data.extend_from_slice(bytes);
            Ok(())
        }
        fn patch(&mut self, p: &Patch) -> std::io::Result<()> {
            let at = p.offset as usize;
            self.data[at..at + p.bytes.len()].copy_from_slice(&p.bytes);
            Ok(())
        }
        fn file(&mut self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
            self.files.push((path.to_path_buf(), bytes.to_vec()));
            Ok(())
        }
    }

    fn rtp(ssrc: u32, seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0x80, if marker { 0x80 | 96 } else { 96 }];
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&ts.to_be_bytes());
        b.extend_from_slice(&ssrc.to_be_bytes());
        b.extend_from_slice(payload);
        b
    }

    /// A VP8 payload: descriptor (S bit on the first packet) and a frame header.
    fn vp8(first: bool, key: bool) -> Vec<u8> {
        let mut p = vec![if first { 0x10 } else { 0x00 }];
        if first && key {
            p.extend_from_slice(&[0x00, 0x00, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00]);
        } else if first {
            p.extend_from_slice(&[0x01, 0x00, 0x00]);
        } else {
            p.extend_from_slice(&[0xAB; 20]);
        }
        p
    }

    const V: u32 = 1;

    fn video_session() -> (Instant, Session<Mem>) {
        let now = Instant::now();
        let s = Session::new(
            now,
            &[StreamSpec {
                ssrc: V,
                codec: MediaCodec::Vp8,
                clock_rate: 90_000,
            }],
            Container::WebM,
            Mem::default(),
        );
        (now, s)
    }

    #[test]
    fn a_lost_packet_drops_frames_until_a_keyframe_and_asks_for_one() {
        let (t0, mut s) = video_session();
        let mut seq = 0u16;
        let mut send = |s: &mut Session<Mem>, at: Instant, frame: u32, key: bool, skip: bool| {
            for k in 0..2 {
                let p = rtp(V, seq, frame * 3000, k == 1, &vp8(k == 0, key));
                if !(skip && k == 1) {
                    s.on_datagram(at, 0.0, &p);
                }
                seq += 1;
            }
            s.poll(at, 0.0);
        };
        send(&mut s, t0, 0, true, false);
        send(&mut s, t0, 1, false, false);
        send(&mut s, t0, 2, false, true); // loses its second packet
        let later = t0 + NACK_GRACE;
        send(&mut s, later, 3, false, false);
        s.poll(later + NACK_GRACE, 0.0);
        let rtcp = s.drain_transmit();
        assert!(
            rtcp.iter().any(|p| p[1] == 205),
            "a NACK is sent: {rtcp:02x?}"
        );
        // Past the jitter window the gap is given up: frames 2 and 3 are dropped.
        let gone = later + JITTER_WINDOW;
        s.poll(gone, 0.0);
        send(&mut s, gone, 4, false, false);
        let rtcp = s.drain_transmit();
        assert!(
            rtcp.iter().any(|p| p[1] == 206),
            "a PLI is sent: {rtcp:02x?}"
        );
        send(&mut s, gone, 5, true, false);
        let (out, sink) = s.finish(0.0);
        // Frames 0, 1 and the keyframe 5.
        assert_eq!(out.frames, 3, "{out:?}");
        assert!(out.error.is_none());
        assert_eq!(&sink.data[..4], &[0x1A, 0x45, 0xDF, 0xA3]);
    }

    /// A VP8 payload whose descriptor carries a 15-bit picture id.
    fn vp8_pid(first: bool, key: bool, pid: u16) -> Vec<u8> {
        let mut p = vec![if first { 0x90 } else { 0x80 }, 0x80];
        p.extend_from_slice(&(0x8000 | pid).to_be_bytes());
        p.extend_from_slice(&vp8(first, key)[1..]);
        p
    }

    /// Frames of two packets with picture ids `pids` (the first a keyframe), one sequence
    /// number skipped before the third frame; the frames written.
    fn gap_before_third_frame(pids: &[u16]) -> u64 {
        let (t0, mut s) = video_session();
        let mut seq = 0u16;
        for (i, &pid) in pids.iter().enumerate() {
            if i == 2 {
                seq += 1; // lost before the forwarder, never numbered
            }
            for k in 0..2 {
                let p = rtp(
                    V,
                    seq,
                    i as u32 * 3000,
                    k == 1,
                    &vp8_pid(k == 0, i == 0, pid),
                );
                s.on_datagram(t0, 0.0, &p);
                seq += 1;
            }
            s.poll(t0, 0.0);
        }
        s.poll(t0 + JITTER_WINDOW, 0.0);
        let (out, _) = s.finish(0.0);
        out.frames
    }

    #[test]
    fn a_gap_between_consecutive_pictures_loses_nothing_but_a_missing_picture_does() {
        // Padding lost before the forwarder: the pictures follow each other.
        assert_eq!(gap_before_third_frame(&[10, 11, 12, 13]), 4);
        // A whole frame (picture 12) lost: nothing decodes until a keyframe.
        assert_eq!(gap_before_third_frame(&[10, 11, 13, 14]), 2);
    }

    #[test]
    fn reordered_packets_are_put_back_in_order() {
        let (t0, mut s) = video_session();
        let a = rtp(V, 10, 0, false, &vp8(true, true));
        let b = rtp(V, 11, 0, true, &vp8(false, true));
        s.on_datagram(t0, 0.0, &b);
        s.on_datagram(t0, 0.0, &a);
        s.poll(t0, 0.0);
        let (out, _) = s.finish(0.0);
        assert_eq!(out.frames, 1);
    }

    #[test]
    fn a_full_disk_ends_the_recording_with_an_error() {
        let now = Instant::now();
        let mut s = Session::new(
            now,
            &[StreamSpec {
                ssrc: 2,
                codec: MediaCodec::Opus,
                clock_rate: 48_000,
            }],
            Container::Ogg,
            Mem {
                limit: Some(2000),
                ..Mem::default()
            },
        );
        for i in 0..500u16 {
            let p = rtp(
                2,
                i,
                u32::from(i) * 960,
                true,
                &[31 << 3, 1, 2, 3, 4, 5, 6, 7],
            );
            s.on_datagram(now, 0.0, &p);
            s.poll(now, 100.0);
        }
        assert!(s.failed().is_some());
        let (out, sink) = s.finish(100.0);
        assert!(out.error.unwrap().contains("No space"));
        assert!(sink.data.len() <= 2000);
        assert_eq!(&sink.data[..4], b"OggS");
    }

    #[test]
    fn hls_asks_for_a_keyframe_when_a_segment_is_due_and_cuts_there() {
        use super::super::hls::HlsSpec;
        let now = Instant::now();
        let spec = HlsSpec {
            prefix: "/r/seg".into(),
            playlist: "/r/index.m3u8".into(),
            live_playlist: None,
            segment_duration: 2.0,
        };
        let mut s = Session::new(
            now,
            &[StreamSpec {
                ssrc: V,
                codec: MediaCodec::Vp8,
                clock_rate: 90_000,
            }],
            Container::Hls(spec),
            Mem::default(),
        );
        let mut seq = 0u16;
        let mut pli_at = None;
        // 30 fps for 3 s; the publisher answers a PLI with a keyframe 100 ms later.
        for frame in 0..90u32 {
            let at = now + Duration::from_millis(u64::from(frame) * 1000 / 30);
            let key = frame == 0 || pli_at.is_some_and(|p| frame == p + 3);
            for k in 0..2 {
                let p = rtp(V, seq, frame * 3000, k == 1, &vp8(k == 0, key));
                s.on_datagram(at, 100.0, &p);
                seq = seq.wrapping_add(1);
            }
            s.poll(at, 100.0);
            let asked = s.drain_transmit().iter().any(|p| p[1] == 206);
            if asked && pli_at.is_none() {
                pli_at = Some(frame);
            }
        }
        // Due at 2 s (frame 60); asked for in the poll after that frame was written.
        let p = pli_at.expect("a PLI when the segment is due");
        assert!((60..=62).contains(&p), "PLI after frame {p}");
        let (out, sink) = s.finish(100.0);
        assert_eq!(out.segments, 2, "{out:?}");
        let names: Vec<String> = sink
            .files
            .iter()
            .map(|(p, _)| p.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "/r/seg_init.mp4",
                "/r/seg_00000.m4s",
                "/r/index.m3u8",
                "/r/seg_00001.m4s",
                "/r/index.m3u8"
            ]
        );
        assert!(sink.data.is_empty(), "nothing appended to a single file");
        let first = String::from_utf8_lossy(&sink.files[2].1).into_owned();
        // The first segment runs from 0 to the keyframe (frame p + 3).
        let expected = format!("#EXTINF:{:.3},\nseg_00000.m4s\n", f64::from(p + 3) / 30.0);
        assert!(first.contains(&expected), "{first}");
        assert!(!first.contains("ENDLIST"));
        let last = String::from_utf8_lossy(&sink.files[4].1).into_owned();
        assert!(last.ends_with("seg_00001.m4s\n#EXT-X-ENDLIST\n"), "{last}");
        let segment = &sink.files[3].1;
        assert_eq!(&segment[4..8], b"moof");
        let size: usize = sink
            .files
            .iter()
            .filter(|(p, _)| !p.to_string_lossy().ends_with("m3u8"))
            .map(|(_, b)| b.len())
            .sum();
        assert_eq!(out.bytes, size as u64);
    }

    #[test]
    fn counters_extend_across_wraps() {
        assert_eq!(extend(None, 5, 16), 65_541);
        assert_eq!(extend(Some(65_535 + 65_536), 2, 16), 2 * 65_536 + 2);
        assert_eq!(extend(Some(2 * 65_536 + 2), 65_535, 16), 65_536 + 65_535);
    }
}
