//! RTCP from peers. The forwarder terminates RTCP rather than relaying it: each message is
//! answered or acted on here, on behalf of the other side.
//!
//! - NACK from a subscriber: retransmit from the publisher layer's cache (`egress`).
//! - PLI / FIR from a subscriber: flag the layer it receives and ask that layer's publisher
//!   for a keyframe, throttled per layer.
//! - Sender report from a publisher: remembered for the sender reports we write
//!   (`reports`).
//! - Transport-cc feedback from a subscriber: fed to that transport's estimator (`cc`).
//!
//! A compound packet is handled up to its first malformed part, which is counted as a drop.

use std::time::Instant;

use super::cc::micros;
use super::egress::{request_keyframe, Report};
use super::routes::Objects;
use super::{DropReason, Engine};
use crate::egress::Egress;
use crate::ids::Ssrc;
use crate::wire::rtcp::{self, RtcpPacket};

impl Engine {
    pub(super) fn on_rtcp<E: Egress>(
        &mut self,
        now: Instant,
        transport: usize,
        buf: &mut [u8],
        eg: &mut E,
    ) {
        for pkt in rtcp::packets(buf) {
            let pkt = match pkt {
                Ok(p) => p,
                Err(e) => return self.count_drop(Some(transport), e.into()),
            };
            match pkt {
                RtcpPacket::Nack(n) => {
                    self.counters.nacks_received += 1;
                    if let Some(t) = self.objs.transports.get_mut(transport) {
                        t.counters.nacks_received += 1;
                    }
                    let Some(&di) = self.routes.by_out_ssrc.get(&(transport, n.media_ssrc()))
                    else {
                        self.count_drop(Some(transport), DropReason::UnknownSsrc);
                        continue;
                    };
                    for seq in n.lost() {
                        self.retransmit(now, di, seq, eg);
                    }
                }
                RtcpPacket::Pli(p) => self.on_keyframe_feedback(now, transport, p.media_ssrc(), eg),
                RtcpPacket::SenderReport(sr) => self.on_sender_report(now, transport, &sr),
                RtcpPacket::Twcc(fb) => {
                    if let Some(t) = self.objs.transports.get_mut(transport) {
                        let at = micros(t.epoch, now);
                        if let Some(s) = t.twcc_out.as_mut() {
                            s.on_feedback(&fb, at);
                        }
                    }
                }
                RtcpPacket::Fir(f) => {
                    for entry in f.entries() {
                        self.on_keyframe_feedback(now, transport, entry.ssrc, eg);
                    }
                }
                _ => {}
            }
        }
    }

    /// A subscriber asked for a keyframe (PLI or FIR): ask the publisher of the layer it
    /// receives, throttled per layer.
    fn on_keyframe_feedback<E: Egress>(
        &mut self,
        now: Instant,
        transport: usize,
        media: Ssrc,
        eg: &mut E,
    ) {
        let Some(&di) = self.routes.by_out_ssrc.get(&(transport, media)) else {
            return self.count_drop(Some(transport), DropReason::UnknownSsrc);
        };
        let Objects {
            tracks,
            down_tracks,
            transports,
            ..
        } = &mut self.objs;
        let Some(entry) = down_tracks.get(di) else {
            return;
        };
        let layer = entry.dt.current_layer().unwrap_or(entry.dt.target_layer());
        let Some(track) = tracks.get_mut(entry.track) else {
            return;
        };
        if let Some(l) = track.layers.get_mut(usize::from(layer)) {
            l.keyframe_wanted = true;
        }
        let mut report = Report {
            counters: &mut self.counters,
            outbox: &mut self.outbox,
        };
        let sender = self.cfg.rtcp_ssrc;
        request_keyframe(
            track,
            usize::from(layer),
            now,
            sender,
            transports,
            &mut report,
            eg,
        );
    }
}
