//! Synthetic media and a collecting [`Egress`], for tests and benchmarks.
//!
//! [`SimulcastSource`] produces what a VP8 simulcast publisher sends: up to three layers
//! with their own SSRCs, sequence numbers, timestamps bases and picture ids, three temporal
//! layers (L1T3 pattern), keyframes at a set interval (staggered per layer, as real encoders
//! are not in lockstep) or on demand, and frames split into packets. Each payload ends with
//! a tag (layer, frame number, packet index) so a test can tell exactly which source packet
//! an output packet came from.
//!
//! [`veth::VethPair`] is two network namespaces joined by a veth pair, for the tests of
//! frame-level drivers (AF_XDP) that need a real link.

use std::net::SocketAddr;
use std::ops::Range;

use crate::egress::{Egress, MAX_DATAGRAM};
use crate::ids::{Pt, Ssrc};

#[path = "testing_veth.rs"]
pub mod veth;

/// Bytes at the end of each synthetic payload: layer (1), frame (8), packet index (2).
pub const TAG_LEN: usize = 11;

/// Which source packet a synthetic payload came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub layer: u8,
    pub frame: u64,
    pub index: u16,
}

impl Tag {
    /// Reads the tag at the end of an RTP packet's bytes (padding-free packets only).
    pub fn read(packet: &[u8]) -> Option<Tag> {
        let t = packet.get(packet.len().checked_sub(TAG_LEN)?..)?;
        let mut f = [0u8; 8];
        f.copy_from_slice(&t[1..9]);
        Some(Tag {
            layer: t[0],
            frame: u64::from_be_bytes(f),
            index: u16::from_be_bytes([t[9], t[10]]),
        })
    }
}

/// One synthetic simulcast layer.
#[derive(Clone, Debug)]
pub struct LayerSpec {
    pub ssrc: Ssrc,
    /// Packets per frame (delta frames); keyframes get three times as many.
    pub packets_per_frame: usize,
    /// Payload bytes per packet, tag included.
    pub payload_size: usize,
}

#[derive(Clone, Debug)]
struct LayerState {
    spec: LayerSpec,
    seq: u16,
    ts: u32,
    picture_id: u16,
    tl0: u8,
    force_key: bool,
}

/// A VP8 simulcast publisher.
#[derive(Clone, Debug)]
pub struct SimulcastSource {
    layers: Vec<LayerState>,
    pub payload_type: Pt,
    /// A keyframe every this many frames per layer (0: only on demand).
    pub keyframe_interval: u64,
    /// Timestamp ticks per frame (90 kHz / 30 fps).
    pub ticks_per_frame: u32,
    frame: u64,
}

impl SimulcastSource {
    /// Layers start from different sequence, timestamp and picture-id bases, chosen near
    /// their wrap points so that tests cross them.
    pub fn new(layers: Vec<LayerSpec>, keyframe_interval: u64) -> Self {
        let layers = layers
            .into_iter()
            .enumerate()
            .map(|(i, spec)| LayerState {
                spec,
                seq: 65_000u16.wrapping_add(i as u16 * 20_000),
                ts: (u32::MAX - 200_000).wrapping_add(i as u32 * 1_234_567),
                picture_id: 32_700u16.wrapping_add(i as u16 * 10_000) & 0x7fff,
                tl0: 250u8.wrapping_add(i as u8 * 100),
                force_key: true,
            })
            .collect();
        Self {
            layers,
            payload_type: Pt(96),
            keyframe_interval,
            ticks_per_frame: 3000,
            frame: 0,
        }
    }

    /// Three layers of 1, 2 and 4 packets per frame, 1200-byte payloads.
    pub fn three_layers(base_ssrc: u32, keyframe_interval: u64) -> Self {
        Self::new(
            (0..3)
                .map(|i| LayerSpec {
                    ssrc: Ssrc(base_ssrc + i),
                    packets_per_frame: 1 << i,
                    payload_size: 1200,
                })
                .collect(),
            keyframe_interval,
        )
    }

    pub fn ssrcs(&self) -> Vec<Ssrc> {
        self.layers.iter().map(|l| l.spec.ssrc).collect()
    }

    /// The next frame number to be produced.
    pub fn frame(&self) -> u64 {
        self.frame
    }

    /// Makes the next frame of `layer` a keyframe (as a PLI would).
    pub fn request_keyframe(&mut self, layer: usize) {
        if let Some(l) = self.layers.get_mut(layer) {
            l.force_key = true;
        }
    }

    /// Temporal layer of a frame in the L1T3 pattern 0, 2, 1, 2.
    pub fn temporal_of(frame: u64) -> u8 {
        [0, 2, 1, 2][(frame % 4) as usize]
    }

    /// Whether `layer` sends a keyframe in `frame` on schedule: layers are staggered by 8
    /// frames, and the interval is rounded up to a multiple of 4 so that scheduled
    /// keyframes fall on base-layer frames.
    pub fn scheduled_keyframe(&self, layer: usize, frame: u64) -> bool {
        let n = self.keyframe_interval.div_ceil(4) * 4;
        n > 0 && (frame + layer as u64 * 8) % n == 0
    }

    /// Produces every packet of the next frame on every layer, interleaved by layer, each
    /// as `(layer, bytes)`.
    pub fn next_frame(&mut self) -> Vec<(usize, Vec<u8>)> {
        let frame = self.frame;
        self.frame += 1;
        let mut out = Vec::new();
        for li in 0..self.layers.len() {
            let key = self.layers[li].force_key || self.scheduled_keyframe(li, frame);
            // A keyframe is always a base-layer picture.
            let tid = if key { 0 } else { Self::temporal_of(frame) };
            let l = &mut self.layers[li];
            l.force_key = false;
            if tid == 0 {
                l.tl0 = l.tl0.wrapping_add(1);
            }
            l.picture_id = (l.picture_id + 1) & 0x7fff;
            l.ts = l.ts.wrapping_add(self.ticks_per_frame);
            let n = if key {
                l.spec.packets_per_frame * 3
            } else {
                l.spec.packets_per_frame
            };
            for i in 0..n {
                let mut p = Vec::with_capacity(12 + l.spec.payload_size);
                p.push(0x80);
                p.push(self.payload_type.0 | if i + 1 == n { 0x80 } else { 0 });
                p.extend_from_slice(&l.seq.to_be_bytes());
                p.extend_from_slice(&l.ts.to_be_bytes());
                p.extend_from_slice(&l.spec.ssrc.0.to_be_bytes());
                l.seq = l.seq.wrapping_add(1);
                // VP8 payload descriptor: X, S on the first packet, PID 0.
                p.push(0x80 | if i == 0 { 0x10 } else { 0 });
                // I (picture id), L (TL0PICIDX), T (TID), no K.
                p.push(0x80 | 0x40 | 0x20);
                p.extend_from_slice(&(0x8000 | l.picture_id).to_be_bytes());
                p.push(l.tl0);
                // TID (2 bits), Y (layer sync) set on TID 1 frames, KEYIDX 0.
                p.push((tid << 6) | if tid == 1 { 0x20 } else { 0 });
                if i == 0 {
                    // VP8 frame tag: show_frame, P = 0 on keyframes; keyframes also carry
                    // the start code and a 1280x720 size.
                    p.extend_from_slice(&[if key { 0x10 } else { 0x11 }, 0x00, 0x00]);
                    if key {
                        p.extend_from_slice(&[0x9d, 0x01, 0x2a, 0x00, 0x05, 0xd0, 0x02]);
                    }
                }
                let fill = (12 + l.spec.payload_size).saturating_sub(p.len() + TAG_LEN);
                p.extend(std::iter::repeat_n((frame as u8) ^ (i as u8), fill));
                p.push(li as u8);
                p.extend_from_slice(&frame.to_be_bytes());
                p.extend_from_slice(&(i as u16).to_be_bytes());
                out.push((li, p));
            }
        }
        out
    }
}

/// `packet` (an RTP packet without extensions) with a one-byte-form extension block of
/// `elements` (ids 1..=14, values 1..=16 bytes) inserted after its fixed header.
pub fn with_extensions(packet: &[u8], elements: &[(u8, &[u8])]) -> Vec<u8> {
    let mut block = Vec::new();
    for (id, v) in elements {
        block.push((id << 4) | (v.len() as u8 - 1));
        block.extend_from_slice(v);
    }
    while block.len() % 4 != 0 {
        block.push(0);
    }
    let mut out = Vec::with_capacity(packet.len() + 4 + block.len());
    out.extend_from_slice(&packet[..12]);
    out[0] |= 0x10;
    out.extend_from_slice(&[0xbe, 0xde]);
    out.extend_from_slice(&((block.len() / 4) as u16).to_be_bytes());
    out.extend_from_slice(&block);
    out.extend_from_slice(&packet[12..]);
    out
}

/// An [`Egress`] that keeps every datagram queued, for tests. `send_split` bodies are read
/// from the copy of the current datagram given to [`CollectEgress::begin`], or, with
/// [`CollectEgress::feed`], from the datagram as the engine left it.
#[derive(Debug, Default)]
pub struct CollectEgress {
    current: Vec<u8>,
    pub sent: Vec<(SocketAddr, Vec<u8>)>,
    /// While [`CollectEgress::feed`] runs: the datagram's length, and the `send_split`
    /// bodies still to append (index in `sent`, range).
    deferred: Option<usize>,
    pending: Vec<(usize, Range<usize>)>,
}

impl CollectEgress {
    /// Sets the datagram that `send_split` bodies refer to.
    pub fn begin(&mut self, datagram: &[u8]) {
        self.current.clear();
        self.current.extend_from_slice(datagram);
    }

    /// Takes everything sent so far.
    pub fn take(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        std::mem::take(&mut self.sent)
    }

    /// Hands a copy of `datagram` from `from` to `engine`. Bodies of `send_split` are read
    /// from the datagram after the engine is done with it, as a driver's sends read the
    /// receive buffer: the engine may rewrite it in place (SRTP decryption, RTX
    /// unwrapping) before the sends go out.
    pub fn feed(
        &mut self,
        engine: &mut crate::engine::Engine,
        now: std::time::Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) {
        let mut buf = datagram.to_vec();
        self.deferred = Some(buf.len());
        engine.handle_datagram(now, from, &mut buf, self);
        self.deferred = None;
        for (i, range) in self.pending.drain(..) {
            if let (Some((_, d)), Some(body)) = (self.sent.get_mut(i), buf.get(range)) {
                d.extend_from_slice(body);
            }
        }
    }
}

impl Egress for CollectEgress {
    fn send_split(&mut self, to: SocketAddr, head: &[u8], body: Range<usize>) -> bool {
        if let Some(len) = self.deferred {
            if body.start > body.end || body.end > len {
                return false;
            }
            self.pending.push((self.sent.len(), body));
            self.sent.push((to, head.to_vec()));
            return true;
        }
        let Some(b) = self.current.get(body) else {
            return false;
        };
        let mut d = head.to_vec();
        d.extend_from_slice(b);
        self.sent.push((to, d));
        true
    }

    fn send_with(&mut self, to: SocketAddr, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        let mut d = vec![0u8; MAX_DATAGRAM];
        let n = fill(&mut d);
        if n == 0 || n > d.len() {
            return false;
        }
        d.truncate(n);
        self.sent.push((to, d));
        true
    }
}

/// Builders for the control commands tests and tools send most, so that a test says what
/// it sets up rather than spelling out every field.
pub mod cmd {
    use pb::command::Body;
    use prism_proto::control as pb;

    use crate::ids::Ssrc;

    pub fn room(room_id: u64) -> Body {
        Body::CreateRoom(pb::CreateRoom {
            room_id,
            ..Default::default()
        })
    }

    /// A plain transport to `remote` ("ip:port").
    pub fn plain(room_id: u64, transport_id: u64, remote: impl ToString) -> Body {
        Body::CreatePlainTransport(pb::CreatePlainTransport {
            room_id,
            transport_id,
            remote: remote.to_string(),
            comedia: false,
            srtp: None,
            relay: None,
        })
    }

    /// A plain transport that learns its remote from the first packet (comedia).
    pub fn comedia(room_id: u64, transport_id: u64) -> Body {
        Body::CreatePlainTransport(pb::CreatePlainTransport {
            room_id,
            transport_id,
            remote: String::new(),
            comedia: true,
            srtp: None,
            relay: None,
        })
    }

    /// A VP8 video track (payload type 96) with one layer per SSRC, lowest first.
    pub fn vp8_track(room_id: u64, transport_id: u64, track_id: u64, ssrcs: &[Ssrc]) -> Body {
        Body::AddTrack(pb::AddTrack {
            room_id,
            transport_id,
            track_id,
            kind: pb::MediaKind::Video as i32,
            codec: Some(pb::Codec {
                kind: pb::CodecKind::Vp8 as i32,
                payload_type: 96,
                clock_rate: 90_000,
            }),
            layers: ssrcs
                .iter()
                .enumerate()
                .map(|(i, s)| pb::Layer {
                    ssrc: s.0,
                    rid: String::new(),
                    spatial: i as u32,
                    rtx_ssrc: 0,
                })
                .collect(),
            ..Default::default()
        })
    }

    /// An Opus audio track (payload type 111).
    pub fn opus_track(room_id: u64, transport_id: u64, track_id: u64, ssrc: u32) -> Body {
        Body::AddTrack(pb::AddTrack {
            room_id,
            transport_id,
            track_id,
            kind: pb::MediaKind::Audio as i32,
            codec: Some(pb::Codec {
                kind: pb::CodecKind::Opus as i32,
                payload_type: 111,
                clock_rate: 48_000,
            }),
            layers: vec![pb::Layer {
                ssrc,
                rid: String::new(),
                spatial: 0,
                rtx_ssrc: 0,
            }],
            ..Default::default()
        })
    }

    /// A subscription to `track_id` on `transport_id`, sent as `ssrc`/`payload_type`
    /// (0: the track's), preferring spatial layer `spatial` and every temporal layer.
    pub fn down_track(
        room_id: u64,
        track_id: u64,
        down_track_id: u64,
        transport_id: u64,
        ssrc: u32,
        payload_type: u32,
        spatial: u32,
    ) -> Body {
        Body::AddDownTrack(pb::AddDownTrack {
            room_id,
            track_id,
            down_track_id,
            transport_id,
            ssrc,
            payload_type,
            preferred_spatial: spatial,
            preferred_temporal: None,
            rtx_ssrc: 0,
            rtx_payload_type: 0,
            mid: String::new(),
            header_extensions: None,
            pinned: false,
        })
    }

    /// Header extension ids for a transport (0: not negotiated), with transport-cc
    /// feedback toward the peer when `feedback`.
    pub fn header_extensions(
        room_id: u64,
        transport_id: u64,
        ids: pb::RtpHeaderExtensions,
        feedback: bool,
    ) -> Body {
        Body::SetHeaderExtensions(pb::SetHeaderExtensions {
            room_id,
            transport_id,
            ids: Some(ids),
            transport_cc_feedback: feedback,
        })
    }

    /// A down track like [`down_track`] whose copies carry `mid` in the sdes:mid extension.
    #[allow(clippy::too_many_arguments)]
    pub fn down_track_with_mid(
        room_id: u64,
        track_id: u64,
        down_track_id: u64,
        transport_id: u64,
        ssrc: u32,
        payload_type: u32,
        spatial: u32,
        mid: &str,
    ) -> Body {
        match down_track(
            room_id,
            track_id,
            down_track_id,
            transport_id,
            ssrc,
            payload_type,
            spatial,
        ) {
            Body::AddDownTrack(mut d) => {
                d.mid = mid.to_owned();
                Body::AddDownTrack(d)
            }
            other => other,
        }
    }

    /// Sends `body` to a running forwarder and returns its answer, panicking when it does
    /// not answer within 5 s or answers with an error.
    pub fn request(fwd: &crate::runtime::Forwarder, body: Body) -> pb::Event {
        let ev = fwd
            .client()
            .request(body, std::time::Duration::from_secs(5))
            .expect("forwarder answers");
        if let Some(pb::event::Body::Error(e)) = &ev.body {
            panic!("command failed: {}", e.message);
        }
        ev
    }

    /// Applies `body` to `engine` and returns the answer, panicking on an error answer.
    pub fn expect_ok(
        engine: &mut crate::engine::Engine,
        now: std::time::Instant,
        body: Body,
    ) -> pb::event::Body {
        let ev = engine.handle_command(
            now,
            pb::Command {
                request_id: 1,
                body: Some(body),
            },
        );
        match ev.body {
            Some(pb::event::Body::Error(e)) => panic!("command failed: {}", e.message),
            Some(b) => b,
            None => panic!("empty answer"),
        }
    }
}
