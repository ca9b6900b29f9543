//! RTP from publishers: the forwarding fast path.
//!
//! [`Engine::on_rtp`] runs once per received media packet, in steps:
//! 1. read the publisher's header extensions (transport-wide number, audio level) and
//!    record the arrival for transport-cc feedback, before any drop;
//! 2. find the (track, layer) by SSRC, or divert an RTX packet (`rtx`), or learn an SSRC
//!    from its RID;
//! 3. record the packet on its layer: extended numbers, NACK and reception state, the
//!    retransmission cache, bitrate and layer activity; drop a duplicate;
//! 4. read the codec payload once (keyframe, layers, VP8 descriptor);
//! 5. fan out: each subscriber's down track decides, and the copy is sent (`egress`);
//! 6. send the keyframe requests the subscribers raised.
//!
//! Nothing here allocates or locks; the maps are only read, and the header scratch is on
//! the stack.

use std::time::Instant;

use super::cc::micros;
use super::downtrack::{Decision, Incoming};
use super::egress::{request_keyframe, send_to_subscriber, Layout, OutCopy, Report, Source};
use super::hdrext::Ingress;
use super::routes::Objects;
use super::slab::Slab;
use super::{DownTrackEntry, DropReason, Engine, Track, Transport};
use crate::codec::vp8::Vp8Descriptor;
use crate::codec::{self, vp8, Codec, PayloadInfo};
use crate::egress::{Egress, HEAD_CAP};
use crate::ids::{ExtTimestamp, SeqNo};
use crate::wire::rtp::RtpPacket;

use super::stats::Counters;

/// A packet's place in its layer's numbering, from step 3.
#[derive(Clone, Copy, Debug)]
struct Arrival {
    seq: SeqNo,
    ts: ExtTimestamp,
    /// No later packet of the layer arrived before this one.
    newest: bool,
}

/// A received packet ready to fan out: what each down track decides on, and what each
/// copy is made from.
#[derive(Clone, Copy, Debug)]
struct Received<'a> {
    incoming: Incoming,
    src: Source<'a>,
    payload_len: usize,
}

impl Engine {
    pub(super) fn on_rtp<E: Egress>(
        &mut self,
        now: Instant,
        transport: usize,
        buf: &mut [u8],
        eg: &mut E,
    ) {
        let pkt = match RtpPacket::new_checked(&buf[..]) {
            Ok(p) => p,
            Err(e) => return self.count_drop(Some(transport), e.into()),
        };
        let ingress = self.read_ingress(now, transport, &pkt);
        let found = match self.routes.by_ssrc.get(&(transport, pkt.ssrc())) {
            Some(&f) => Some(f),
            None => {
                if let Some(stream) = self.rtx_stream(transport, &pkt) {
                    return self.on_rtx(now, transport, stream, buf, eg);
                }
                self.learn_rid(transport, &pkt)
            }
        };
        let Some((ti, layer)) = found else {
            return self.count_drop(Some(transport), DropReason::UnknownSsrc);
        };
        let Objects {
            tracks,
            down_tracks,
            transports,
            ..
        } = &mut self.objs;
        let counters = &mut self.counters;
        let Some(track) = tracks.get_mut(ti) else {
            return;
        };
        let li = usize::from(layer);
        if li >= track.layers.len() {
            return;
        }
        let Some(arrival) = record_arrival(track, li, &pkt, now, down_tracks) else {
            counters.drop(DropReason::Duplicate);
            if let Some(t) = transports.get_mut(transport) {
                t.counters.drop(DropReason::Duplicate);
            }
            return;
        };
        if let (false, Some(level)) = (track.video, ingress.audio_level) {
            track.meter.observe(level);
        }
        let payload = pkt.payload();
        let (info, vp8d) = inspect_payload(track.codec, payload);
        let header_len = pkt.header_len();
        let rx = Received {
            incoming: Incoming {
                now,
                layer,
                seq: arrival.seq,
                ts: arrival.ts,
                info,
                vp8: vp8d,
                newest: arrival.newest,
            },
            src: Source {
                bytes: &buf[..],
                layout: Layout {
                    csrc_end: 12 + 4 * usize::from(pkt.csrc_count()),
                    header_len,
                    head_len: header_len + vp8d.map_or(0, |d| d.header_len),
                    total: buf.len(),
                    received: true,
                },
                vp8: vp8d.as_ref(),
                audio_level: if track.video {
                    None
                } else {
                    ingress.audio_level
                },
            },
            payload_len: payload.len(),
        };
        if track.video && payload.is_empty() {
            // Padding-only probes carry nothing a subscriber needs. Browsers send them by
            // the hundred while probing bandwidth; each down track on this layer closes the
            // gap, so that its subscriber sees no loss and sends no NACK for them.
            for &di in &track.subscribers {
                if let Some(entry) = down_tracks.get_mut(di) {
                    entry.dt.skip_padding(&rx.incoming);
                }
            }
            counters.drop(DropReason::Padding);
            return;
        }
        fan_out(track, &rx, down_tracks, transports, counters, eg);
        let mut report = Report {
            counters,
            outbox: &mut self.outbox,
        };
        let sender = self.cfg.rtcp_ssrc;
        for li in 0..track.layers.len() {
            request_keyframe(track, li, now, sender, transports, &mut report, eg);
        }
    }

    /// Step 1: the publisher's header extensions. Every packet with a transport-wide
    /// number is recorded for feedback, before any drop: the sender's estimator counts
    /// what we do not report as lost.
    fn read_ingress(&mut self, now: Instant, transport: usize, pkt: &RtpPacket<&[u8]>) -> Ingress {
        let Some(t) = self.objs.transports.get_mut(transport) else {
            return Ingress::default();
        };
        let Some(ids) = t.ext else {
            return Ingress::default();
        };
        let ing = Ingress::read(&ids, pkt.extensions());
        if let (Some(s), Some(r)) = (ing.transport_seq, t.twcc_in.as_mut()) {
            r.on_packet(s, micros(t.epoch, now), pkt.ssrc());
        }
        ing
    }

    /// An unknown SSRC on a transport that publishes layers announced by RID only: if the
    /// packet's RID (and MID) extensions name such a layer, it is that layer from now on.
    fn learn_rid(&mut self, transport: usize, pkt: &RtpPacket<&[u8]>) -> Option<(usize, u8)> {
        let tr = self.objs.transports.get(transport)?;
        let tracks = &self.objs.tracks;
        let (ti, li) = tr.tracks.iter().find_map(|&ti| {
            let t = tracks.get(ti)?;
            if !t.awaits_rids() {
                return None;
            }
            let rid = pkt.extension(t.rid_ext)?;
            let mid = if t.mid_ext != 0 {
                pkt.extension(t.mid_ext)
            } else {
                None
            };
            t.match_rid(mid, rid).map(|li| (ti, li))
        })?;
        let ssrc = pkt.ssrc();
        let layer = self.objs.tracks.get_mut(ti)?.layers.get_mut(li)?;
        layer.ssrc = ssrc;
        self.routes
            .by_ssrc
            .insert((transport, ssrc), (ti, li as u8));
        tracing::debug!(transport, track = ti, layer = li, %ssrc, "SSRC learnt from its RID");
        Some((ti, li as u8))
    }
}

/// Step 3: the packet on layer `li` of `track`: extended numbers, NACK and reception
/// state, the retransmission cache, bitrate, and the layer's activity (a layer that comes
/// back retargets the track's down tracks). `None` for a duplicate, which changes only
/// the layer's arrival time and counts.
fn record_arrival(
    track: &mut Track,
    li: usize,
    pkt: &RtpPacket<&[u8]>,
    now: Instant,
    down_tracks: &mut Slab<DownTrackEntry>,
) -> Option<Arrival> {
    let l = track.layers.get_mut(li)?;
    let newest = l
        .seq
        .last()
        .is_none_or(|h| l.seq.peek(pkt.sequence_number()) > h);
    let seq = l.seq.unwrap(pkt.sequence_number());
    let ts = l.ts.unwrap(pkt.timestamp());
    l.last_packet = Some(now);
    l.packets += 1;
    l.nack.on_packet(seq.0, now);
    if l.cache.contains(seq) {
        return None;
    }
    l.cache.store(seq, pkt.as_bytes());
    l.recv.on_packet(seq, ts, now, track.clock_rate, newest);
    l.rate.add(pkt.as_bytes().len());
    if track.active & (1 << li) == 0 {
        track.active |= 1 << li;
        for &d in &track.subscribers {
            if let Some(e) = down_tracks.get_mut(d) {
                e.dt.retarget(track.active);
            }
        }
    }
    Some(Arrival { seq, ts, newest })
}

/// Step 4: what the payload says (keyframe, layers), and its VP8 descriptor, which the
/// down tracks rewrite.
fn inspect_payload(codec: Codec, payload: &[u8]) -> (PayloadInfo, Option<Vp8Descriptor>) {
    if codec == Codec::Vp8 {
        match vp8::parse_descriptor(payload) {
            Ok(d) => (vp8::info_of(payload, &d), Some(d)),
            Err(_) => (Default::default(), None),
        }
    } else {
        (codec::inspect(codec, payload).unwrap_or_default(), None)
    }
}

/// Step 5: each subscriber's down track decides on the packet; forwarded copies are sent
/// and counted, drops counted with their reason. A down track waiting for a keyframe
/// flags its target layer, for step 6.
fn fan_out<E: Egress>(
    track: &mut Track,
    rx: &Received<'_>,
    down_tracks: &mut Slab<DownTrackEntry>,
    transports: &mut Slab<Transport>,
    counters: &mut Counters,
    eg: &mut E,
) {
    let total = rx.src.layout.total as u64;
    let mut scratch = [0u8; HEAD_CAP];
    for &di in &track.subscribers {
        let Some(entry) = down_tracks.get_mut(di) else {
            continue;
        };
        let decision = entry.dt.decide(&rx.incoming);
        if entry.dt.keyframe_needed {
            entry.dt.keyframe_needed = false;
            if let Some(tl) = track.layers.get_mut(usize::from(entry.dt.target_layer())) {
                tl.keyframe_wanted = true;
            }
        }
        let Some(out) = transports.get_mut(entry.transport) else {
            continue;
        };
        let f = match decision {
            Decision::Forward(f) => f,
            Decision::Drop(r) => {
                counters.drop(r);
                out.counters.drop(r);
                continue;
            }
        };
        if let Err(r) = out.ready_to_send() {
            counters.drop(r);
            out.counters.drop(r);
            continue;
        }
        let copy = OutCopy {
            src: rx.src,
            forward: &f,
            rtx: None,
        };
        let wire = send_to_subscriber(rx.incoming.now, entry, out, &copy, eg, &mut scratch);
        if wire > 0 {
            entry.report.on_sent(rx.payload_len);
            counters.packets_out += 1;
            counters.bytes_out += total;
            out.counters.packets_out += 1;
            out.counters.bytes_out += total;
        } else {
            counters.drop(DropReason::QueueFull);
            out.counters.drop(DropReason::QueueFull);
        }
    }
}
