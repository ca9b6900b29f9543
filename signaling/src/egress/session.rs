//! One recording, sans-IO: RTP and RTCP in, frames into a muxer, NACKs and PLIs out.
//!
//! The recorder is a subscriber like any other: the forwarder sends it one down track per
//! recorded track over a plain RTP transport on loopback, with its NACK cache, keyframe
//! requests and translated sender reports. Here:
//! - **Reordering.** Each stream holds packets in a jitter buffer keyed by extended
//!   sequence number and releases them in order. A gap is NACKed after
//!   [`NACK_GRACE`], again every [`NACK_EVERY`], and given up after [`JITTER_WINDOW`].
//! - **Frames.** VP8 packets are joined into frames (start bit to marker). A frame with a
//!   lost packet is dropped, and so is everything after it until a keyframe, for which
//!   the forwarder is asked (PLI, every [`PLI_EVERY`] until one comes): the file never
//!   holds a frame that decodes corrupt. Opus packets are frames.
//! - **Sync.** Each stream's RTP time maps to wall time through the first sender report
//!   (which the forwarder translates into the down track's timeline, so it survives
//!   simulcast switches); a stream with no report within [`SYNC_WAIT`] maps through its
//!   first packet's arrival. Nothing is written until every stream's mapping is fixed.
//! - **Writing.** Frames of all streams go to the muxer in wall-time order. A file with
//!   video starts at its first keyframe, and audio before it is dropped.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use prism_forwarder::codec::vp8;
use prism_forwarder::ids::Ssrc;
use prism_forwarder::wire::rtcp::{self, RtcpPacket};
use prism_forwarder::wire::rtp::RtpPacket;

use super::ogg::{opus_samples, OggMuxer};
use super::webm::{Patch, TrackSpec, WebmMuxer};

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
    Opus,
}

impl MediaCodec {
    pub fn is_video(self) -> bool {
        matches!(self, MediaCodec::Vp8)
    }
}

/// One recorded stream: the SSRC the forwarder sends it on and its codec.
#[derive(Clone, Copy, Debug)]
pub struct StreamSpec {
    pub ssrc: u32,
    pub codec: MediaCodec,
    pub clock_rate: u32,
}

/// The container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    WebM,
    Ogg,
}

/// Where bytes go: the file, or a test's buffer.
pub trait Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    fn patch(&mut self, patch: &Patch) -> std::io::Result<()>;
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
    pub error: Option<String>,
}

#[derive(Debug)]
struct Buffered {
    ts: u64,
    marker: bool,
    payload: Vec<u8>,
}

#[derive(Debug)]
struct Missing {
    since: Instant,
    last_nack: Option<Instant>,
}

#[derive(Debug)]
struct Frame {
    ts: u64,
    keyframe: bool,
    data: Vec<u8>,
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
    buffer: BTreeMap<u64, Buffered>,
    arrived: BTreeMap<u64, Instant>,
    missing: BTreeMap<u64, Missing>,
    /// The frame being assembled: its timestamp, keyframe flag, bytes, and whether a
    /// packet of it was lost.
    partial: Option<(u64, bool, Vec<u8>, bool)>,
    need_keyframe: bool,
    /// A gap was given up between frames: the next frame's picture id tells whether it
    /// held a frame or only padding (a probe the forwarder never received).
    gap: bool,
    /// The picture id of the last frame started, and whether it is 15 bits wide.
    last_picture: Option<(u16, bool)>,
    dropped: u64,
    last_pli: Option<Instant>,
    frames: VecDeque<Frame>,
    frames_out: u64,
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
            partial: None,
            need_keyframe: spec.codec.is_video(),
            gap: false,
            last_picture: None,
            dropped: 0,
            last_pli: None,
            frames: VecDeque::new(),
            frames_out: 0,
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
            Buffered {
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
                self.depacketize(p);
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
            self.lost();
        }
    }

    /// 1 once the stream has delivered a frame (drops before the first keyframe are the
    /// normal start, not losses), else 0.
    fn released_frames(&self) -> u8 {
        u8::from(self.frames_out > 0)
    }

    fn lost(&mut self) {
        if let Some(p) = self.partial.as_mut() {
            p.3 = true;
        } else if self.spec.codec.is_video() {
            // The gap may have held a whole frame (then what follows cannot decode), or
            // only padding: the next frame's picture id tells (`depacketize`).
            self.gap = true;
        }
    }

    fn depacketize(&mut self, p: Buffered) {
        match self.spec.codec {
            MediaCodec::Opus => {
                if !p.payload.is_empty() {
                    self.frames.push_back(Frame {
                        ts: p.ts,
                        keyframe: true,
                        data: p.payload,
                    });
                }
            }
            MediaCodec::Vp8 => {
                let Ok(d) = vp8::parse_descriptor(&p.payload) else {
                    self.lost();
                    return;
                };
                let body = &p.payload[d.header_len.min(p.payload.len())..];
                let starts = d.start_of_partition && d.partition_id == 0;
                if starts {
                    if self.partial.take().is_some() {
                        // The previous frame never ended: its marker packet was lost.
                        self.need_keyframe = true;
                    }
                    let picture = d.picture_id.map(|p| (p, d.picture_id_15bit));
                    if std::mem::take(&mut self.gap) && !follows(self.last_picture, picture) {
                        // A frame may have been lost in the gap.
                        self.need_keyframe = true;
                    }
                    self.last_picture = picture;
                    let key = body.first().is_some_and(|h| h & 1 == 0);
                    self.partial = Some((p.ts, key, Vec::new(), false));
                }
                let Some(partial) = self.partial.as_mut() else {
                    return;
                };
                if partial.0 != p.ts {
                    self.partial = None;
                    self.need_keyframe = true;
                    return;
                }
                partial.2.extend_from_slice(body);
                if p.marker {
                    let Some((ts, key, data, broken)) = self.partial.take() else {
                        return;
                    };
                    if broken || (self.need_keyframe && !key) {
                        self.dropped += u64::from(self.released_frames());
                    }
                    if broken {
                        self.need_keyframe = true;
                    } else if key || !self.need_keyframe {
                        if key && vp8_size(&data).is_some() {
                            self.need_keyframe = false;
                        }
                        if !self.need_keyframe {
                            self.frames_out += 1;
                            self.frames.push_back(Frame {
                                ts,
                                keyframe: key,
                                data,
                            });
                        }
                    }
                }
            }
        }
    }
}

/// Whether picture id `next` comes right after `last` (both known, the same width).
fn follows(last: Option<(u16, bool)>, next: Option<(u16, bool)>) -> bool {
    match (last, next) {
        (Some((l, lw)), Some((n, nw))) if lw == nw => {
            let mask = if nw { 0x7FFF } else { 0x7F };
            n == (l + 1) & mask
        }
        _ => false,
    }
}

/// Width and height from a VP8 keyframe's header (RFC 6386 §9.1).
pub fn vp8_size(frame: &[u8]) -> Option<(u16, u16)> {
    if frame.len() < 10 || frame[0] & 1 != 0 || frame[3..6] != [0x9D, 0x01, 0x2A] {
        return None;
    }
    let w = u16::from_le_bytes([frame[6], frame[7]]) & 0x3FFF;
    let h = u16::from_le_bytes([frame[8], frame[9]]) & 0x3FFF;
    Some((w, h))
}

#[derive(Debug)]
enum Mux {
    WebM(WebmMuxer),
    Ogg(OggMuxer),
}

/// One recording.
pub struct Session<S: Sink> {
    streams: Vec<Stream>,
    container: Container,
    sink: S,
    mux: Option<Mux>,
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
            mux: None,
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
            if s.need_keyframe
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
        if self.mux.is_none() {
            if self.has_video() && !(codec.is_video() && f.keyframe) {
                return;
            }
            let (mux, head) = match self.container {
                Container::Ogg => {
                    let mut m = OggMuxer::new(self.streams[i].spec.ssrc);
                    let h = m.header(2);
                    (Mux::Ogg(m), h)
                }
                Container::WebM => {
                    let (w, h) = vp8_size(&f.data).unwrap_or((0, 0));
                    let specs = self
                        .streams
                        .iter()
                        .map(|s| match s.spec.codec {
                            MediaCodec::Vp8 => TrackSpec::Video {
                                codec_id: "V_VP8",
                                width: w,
                                height: h,
                                private: Vec::new(),
                            },
                            MediaCodec::Opus => TrackSpec::Opus { channels: 2 },
                        })
                        .collect();
                    let mut m = WebmMuxer::new(specs);
                    let head = m.header();
                    (Mux::WebM(m), head)
                }
            };
            self.mux = Some(mux);
            self.origin = Some(t);
            self.put(&head);
        }
        let origin = self.origin.unwrap_or(t);
        if t < origin - 0.005 {
            return;
        }
        let dur = match codec {
            MediaCodec::Opus => f64::from(opus_samples(&f.data).unwrap_or(960)) / 48_000.0,
            MediaCodec::Vp8 => 0.0,
        };
        let bytes = match self.mux.as_mut() {
            Some(Mux::WebM(m)) => {
                let ms = ((t - origin) * 1000.0).round() as i64;
                m.frame(i, ms, f.keyframe && codec.is_video(), &f.data)
            }
            Some(Mux::Ogg(m)) => {
                let s = &mut self.streams[i];
                let gap = s.next_audio_ts.map_or(0, |n| {
                    f.ts.saturating_sub(n) * 48_000 / u64::from(s.spec.clock_rate)
                });
                let samples = u64::from(opus_samples(&f.data).unwrap_or(960));
                s.next_audio_ts = Some(f.ts + samples * u64::from(s.spec.clock_rate) / 48_000);
                m.packet(&f.data, gap)
            }
            None => Vec::new(),
        };
        self.frames += 1;
        self.end = self.end.max(t - origin + dur);
        self.put(&bytes);
    }

    fn put(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || self.error.is_some() {
            return;
        }
        match self.sink.write(bytes) {
            Ok(()) => self.bytes += bytes.len() as u64,
            Err(e) => self.error = Some(format!("writing the recording failed: {e}")),
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
        let tail = match self.mux.as_mut() {
            Some(Mux::WebM(m)) => {
                // A failed write leaves the last whole cluster as the end of the file.
                let (tail, patches) = m.finish(self.end * 1000.0);
                if self.error.is_none() {
                    self.put(&tail);
                }
                // After a failed write only the duration is patched (in place, so it
                // needs no space): the segment keeps its unknown size.
                let apply = if self.error.is_none() {
                    &patches[..]
                } else {
                    &patches[1..]
                };
                for p in apply {
                    if let Err(e) = self.sink.patch(p) {
                        self.error
                            .get_or_insert(format!("finalizing the recording failed: {e}"));
                    }
                }
                Vec::new()
            }
            Some(Mux::Ogg(m)) => m.finish(),
            None => Vec::new(),
        };
        self.put(&tail);
        let outcome = Outcome {
            bytes: self.bytes,
            duration: self.end,
            frames: self.frames,
            dropped: self.streams.iter().map(|s| s.dropped).sum(),
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
        assert!(follows(Some((0x7FFF, true)), Some((0, true))));
        assert!(!follows(None, Some((0, true))));
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
                data: Vec::new(),
                limit: Some(2000),
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
    fn counters_extend_across_wraps() {
        assert_eq!(extend(None, 5, 16), 65_541);
        assert_eq!(extend(Some(65_535 + 65_536), 2, 16), 2 * 65_536 + 2);
        assert_eq!(extend(Some(2 * 65_536 + 2), 65_535, 16), 65_536 + 65_535);
    }
}
