//! What one publisher sends: Opus-like audio or VP8 video (one layer or three simulcast
//! layers), a frame at a time, each packet stamped with the bench trailer.
//!
//! Video reuses the forwarder's [`SimulcastSource`] so the packets are the VP8 the forwarder
//! parses in its own tests (payload descriptors, temporal layers, keyframe bursts three
//! times a normal frame); the bench overwrites the source's tag with its trailer.

use prism_forwarder::ids::Ssrc;
use prism_forwarder::testing::{LayerSpec, SimulcastSource};

use crate::payload::{Trailer, TRAILER_LEN};

/// RTP payload type of the generated audio.
pub const AUDIO_PT: u8 = 111;
/// RTP payload type of the generated video.
pub const VIDEO_PT: u8 = 96;
/// Datagram size of an audio packet (RTP header included).
pub const AUDIO_PACKET: usize = 100;
/// Datagram size of a small-relay packet (RTP header included): the relay of many small
/// streams, where per-packet cost dominates.
pub const SMALL_PACKET: usize = 200;
/// RTP payload size of a video packet (about 1200 B on the wire with the header).
pub const VIDEO_PAYLOAD: usize = 1188;
/// Video keyframe every this many frames (two seconds at 30 fps).
pub const KEYFRAME_INTERVAL: u64 = 60;
/// Packets per frame of each simulcast layer, lowest first.
pub const LAYER_PACKETS: [usize; 3] = [1, 2, 4];

/// The shape of a publisher's media.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Media {
    /// 50 packets/s of [`AUDIO_PACKET`] bytes.
    Audio,
    /// 50 packets/s of [`SMALL_PACKET`] bytes (Opus-like, the small-packet relay).
    SmallAudio,
    /// One 720p VP8 layer at 30 fps, [`LAYER_PACKETS`]`[2]` packets per frame.
    Video,
    /// Three VP8 simulcast layers at 30 fps.
    Simulcast,
}

impl Media {
    /// Frames (audio: packets) per second at load factor 1.
    pub fn base_fps(self) -> f64 {
        match self {
            Media::Audio | Media::SmallAudio => 50.0,
            _ => 30.0,
        }
    }

    pub fn layers(self) -> usize {
        match self {
            Media::Simulcast => 3,
            _ => 1,
        }
    }

    /// Packets per frame of `layer`, on average over a keyframe interval.
    pub fn mean_packets_per_frame(self, layer: usize) -> f64 {
        let p = match self {
            Media::Audio | Media::SmallAudio => return 1.0,
            Media::Video => LAYER_PACKETS[2],
            Media::Simulcast => LAYER_PACKETS[layer.min(2)],
        } as f64;
        let k = KEYFRAME_INTERVAL.div_ceil(4) * 4;
        p * (k as f64 + 2.0) / k as f64
    }
}

/// One publisher's packet factory.
#[derive(Debug)]
pub struct Source {
    pub media: Media,
    /// Bench stream id of each layer.
    pub streams: Vec<u32>,
    /// RTP SSRC of each layer.
    pub ssrcs: Vec<u32>,
    next_seq: Vec<u64>,
    video: Option<SimulcastSource>,
    audio_seq: u16,
    audio_ts: u32,
}

impl Source {
    /// `streams[i]` and `ssrcs[i]` name layer `i`.
    pub fn new(media: Media, streams: Vec<u32>, ssrcs: Vec<u32>) -> Self {
        assert_eq!(streams.len(), media.layers());
        assert_eq!(ssrcs.len(), media.layers());
        let video = match media {
            Media::Audio | Media::SmallAudio => None,
            Media::Video => Some(vec![LAYER_PACKETS[2]]),
            Media::Simulcast => Some(LAYER_PACKETS.to_vec()),
        }
        .map(|packets| {
            let specs = packets
                .iter()
                .zip(&ssrcs)
                .map(|(&p, &ssrc)| LayerSpec {
                    ssrc: Ssrc(ssrc),
                    packets_per_frame: p,
                    payload_size: VIDEO_PAYLOAD,
                })
                .collect();
            SimulcastSource::new(specs, KEYFRAME_INTERVAL)
        });
        Self {
            media,
            next_seq: vec![0; streams.len()],
            streams,
            ssrcs,
            video,
            audio_seq: 1,
            audio_ts: 0,
        }
    }

    /// Makes the next frame of the layer sent with `ssrc` a keyframe (a PLI arrived).
    pub fn request_keyframe(&mut self, ssrc: u32) {
        if let (Some(v), Some(layer)) =
            (&mut self.video, self.ssrcs.iter().position(|&s| s == ssrc))
        {
            v.request_keyframe(layer);
        }
    }

    /// Produces the next frame's datagrams, stamped with `sent_ns`, into `out` as
    /// `(layer, bytes)`; returns how many.
    pub fn next_frame(&mut self, sent_ns: u64, out: &mut Vec<(usize, Vec<u8>)>) -> usize {
        let start = out.len();
        match &mut self.video {
            Some(v) => out.extend(v.next_frame()),
            None => {
                let size = match self.media {
                    Media::SmallAudio => SMALL_PACKET,
                    _ => AUDIO_PACKET,
                };
                let mut p = vec![0u8; size];
                p[0] = 0x80;
                p[1] = AUDIO_PT;
                p[2..4].copy_from_slice(&self.audio_seq.to_be_bytes());
                p[4..8].copy_from_slice(&self.audio_ts.to_be_bytes());
                p[8..12].copy_from_slice(&self.ssrcs[0].to_be_bytes());
                p[12] = 0xfc; // an Opus TOC byte
                self.audio_seq = self.audio_seq.wrapping_add(1);
                self.audio_ts = self.audio_ts.wrapping_add(960);
                out.push((0, p));
            }
        }
        for (layer, d) in &mut out[start..] {
            let seq = &mut self.next_seq[*layer];
            debug_assert!(d.len() >= 12 + TRAILER_LEN);
            Trailer {
                stream: self.streams[*layer],
                seq: *seq,
                sent_ns,
            }
            .write(d);
            *seq += 1;
        }
        out.len() - start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_carry_sizes_ssrcs_and_consecutive_trailers() {
        let mut s = Source::new(Media::Simulcast, vec![10, 11, 12], vec![0xa0, 0xa1, 0xa2]);
        let mut out = Vec::new();
        for _ in 0..8 {
            s.next_frame(5, &mut out);
        }
        let mut next = [0u64; 3];
        for (layer, d) in &out {
            assert_eq!(d.len(), 12 + VIDEO_PAYLOAD);
            assert_eq!(
                u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
                0xa0 + *layer as u32
            );
            let t = Trailer::read(d).unwrap();
            assert_eq!(t.stream, 10 + *layer as u32);
            assert_eq!(t.seq, next[*layer]);
            next[*layer] += 1;
        }
        // The first frame is a keyframe (3x packets), then 7 delta frames.
        assert_eq!(next, [3 + 7, 6 + 14, 12 + 28]);

        let mut a = Source::new(Media::Audio, vec![1], vec![0xb0]);
        out.clear();
        assert_eq!(a.next_frame(0, &mut out), 1);
        assert_eq!(out[0].1.len(), AUDIO_PACKET);
        let mut b = Source::new(Media::SmallAudio, vec![2], vec![0xb1]);
        out.clear();
        assert_eq!(b.next_frame(0, &mut out), 1);
        assert_eq!(out[0].1.len(), SMALL_PACKET);
    }
}
