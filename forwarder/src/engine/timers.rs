//! Periodic work, run from [`Engine::handle_timeout`] on the housekeeping tick
//! ([`TICK`](super::TICK)): layer activity and retargeting, NACKs toward publishers, RTCP
//! reports, transport-wide CC feedback, layer bitrates, speaker levels, bandwidth
//! allocation, and the ICE, DTLS and SCTP timers of WebRTC transports.
//!
//! None of this is on the packet path, but it runs every 20 ms on every core, so it does
//! not allocate either: the allocation's scratch vectors live in [`Timers`] and are reused.

use std::time::Instant;

use prism_proto::control as pb;

use super::cc::{self, micros};
use super::egress::send_rtcp;
use super::routes::Objects;
use super::{track, Engine, TICK};
use crate::egress::Egress;
use crate::wire::rtcp;

/// When each periodic job runs next, and the scratch the bandwidth allocation reuses.
#[derive(Debug, Default)]
pub struct Timers {
    pub(super) next_tick: Option<Instant>,
    /// WebRTC transports a command gave output to (data to send): pumped on the next
    /// `handle_timeout`, which the worker runs right after applying commands.
    pub(super) pending_pump: Vec<usize>,
    /// When receiver reports go out next.
    pub(super) next_report: Option<Instant>,
    /// When layer bitrates roll over next, speaker levels are reported next, and bandwidth
    /// is allocated next.
    pub(super) next_rate_roll: Option<Instant>,
    pub(super) next_speaker_roll: Option<Instant>,
    pub(super) next_allocation: Option<Instant>,
    /// Scratch for the allocation (reused, so the timer does not allocate).
    alloc_items: Vec<cc::Item>,
    alloc_dts: Vec<usize>,
}

impl Engine {
    /// Periodic work: layer activity and retargeting, NACKs toward publishers, RTCP
    /// reports, and the ICE, DTLS and SCTP timers of WebRTC transports.
    pub fn handle_timeout<E: Egress>(&mut self, now: Instant, eg: &mut E) {
        while let Some(t) = self.timers.pending_pump.pop() {
            self.pump_webrtc(now, t, eg);
        }
        if self.timers.next_tick.is_some_and(|t| now < t) {
            return;
        }
        self.timers.next_tick = Some(now + TICK);
        self.refresh_layers_and_nack(now, eg);
        self.send_reports(now, eg);
        self.cc_timers(now, eg);
        self.webrtc_timers(now, eg);
    }

    /// Marks layers that went quiet (or came back) and retargets their subscribers, then
    /// asks publishers for what is missing.
    fn refresh_layers_and_nack<E: Egress>(&mut self, now: Instant, eg: &mut E) {
        let Objects {
            tracks,
            down_tracks,
            transports,
            ..
        } = &mut self.objs;
        let counters = &mut self.counters;
        let sender = self.cfg.rtcp_ssrc;
        let mut lost = [0u16; 32];
        for (_, track) in tracks.iter_mut() {
            if track.refresh_active(now) {
                for &d in &track.subscribers {
                    if let Some(e) = down_tracks.get_mut(d) {
                        e.dt.retarget(track.active);
                    }
                }
            }
            if !track.nack {
                continue;
            }
            let Some(publisher) = transports.get_mut(track.transport) else {
                continue;
            };
            let sender = publisher.rtcp_ssrc.unwrap_or(sender);
            for l in &mut track.layers {
                let n = l.nack.due(now, &mut lost);
                if n == 0 {
                    continue;
                }
                let (media, seqs) = (l.ssrc, &lost[..n]);
                if send_rtcp(publisher, eg, &mut |slot: &mut [u8]| {
                    rtcp::emit_nack(slot, sender, media, seqs).unwrap_or(0)
                }) {
                    counters.nacks_sent += 1;
                    publisher.counters.nacks_sent += 1;
                }
            }
        }
    }

    /// The ICE, DTLS and SCTP timers of WebRTC transports that are due.
    fn webrtc_timers<E: Egress>(&mut self, now: Instant, eg: &mut E) {
        for i in 0..self.objs.transports.slots() {
            let due = self
                .objs
                .transports
                .get(i)
                .and_then(|t| t.webrtc.as_ref())
                .and_then(|w| w.poll_timeout())
                .is_some_and(|t| t <= now);
            if due {
                if let Some(w) = self
                    .objs
                    .transports
                    .get_mut(i)
                    .and_then(|t| t.webrtc.as_mut())
                {
                    w.handle_timeout(now);
                }
                self.pump_webrtc(now, i, eg);
            }
        }
    }

    /// Congestion control on the timer: transport-cc feedback toward peers that send to
    /// us, speaker levels, layer bitrates, and fitting down tracks into each transport's
    /// estimate.
    fn cc_timers<E: Egress>(&mut self, now: Instant, eg: &mut E) {
        self.send_twcc_feedback(now, eg);
        if self.timers.next_speaker_roll.is_none_or(|t| now >= t) {
            self.timers.next_speaker_roll = Some(now + track::SPEAKER_INTERVAL);
            self.report_audio_levels();
        }
        if self.timers.next_rate_roll.is_none_or(|t| now >= t) {
            self.timers.next_rate_roll = Some(now + cc::RATE_BUCKET);
            for (_, track) in self.objs.tracks.iter_mut() {
                for l in &mut track.layers {
                    l.rate.roll();
                }
            }
        }
        if self.timers.next_allocation.is_none_or(|t| now >= t) {
            self.timers.next_allocation = Some(now + cc::allocate::ALLOCATION_INTERVAL);
            self.allocate_bandwidth(now);
        }
    }

    /// Transport-cc feedback toward every peer with arrivals to report, at most once per
    /// feedback interval.
    fn send_twcc_feedback<E: Egress>(&mut self, now: Instant, eg: &mut E) {
        let sender = self.cfg.rtcp_ssrc;
        for (_, t) in self.objs.transports.iter_mut() {
            let due = t.twcc_in.as_ref().is_some_and(|r| r.pending())
                && t.last_twcc_feedback.is_none_or(|at| {
                    now.saturating_duration_since(at) >= cc::arrivals::FEEDBACK_INTERVAL
                });
            if !due {
                continue;
            }
            let Some(mut rec) = t.twcc_in.take() else {
                continue;
            };
            send_rtcp(t, eg, &mut |slot: &mut [u8]| rec.build(slot, sender));
            t.twcc_in = Some(rec);
            t.last_twcc_feedback = Some(now);
        }
    }

    /// Reports the speaking state of audio tracks whose meter rolled over.
    fn report_audio_levels(&mut self) {
        for (_, track) in self.objs.tracks.iter_mut() {
            if track.video {
                continue;
            }
            if let Some((speaking, level)) = track.meter.roll() {
                // The outbox is preallocated; when full the report waits for the next
                // change (speaking state is advisory).
                self.outbox
                    .emit_body(pb::event::Body::AudioLevel(pb::AudioLevel {
                        track_id: track.id,
                        speaking,
                        level,
                    }));
            }
        }
    }

    /// Caps the simulcast layer of each down track so that what a transport sends fits
    /// its bandwidth estimate (`cc::allocate`). Tracks without layers (audio, single
    /// encodings) are a fixed reserve. Transports without an estimate are left alone.
    fn allocate_bandwidth(&mut self, now: Instant) {
        let Objects {
            transports,
            down_tracks,
            tracks,
            ..
        } = &mut self.objs;
        let Timers {
            alloc_items,
            alloc_dts,
            ..
        } = &mut self.timers;
        for (_, t) in transports.iter_mut() {
            let Some(estimate) = t.twcc_out.as_ref().and_then(|s| s.estimator.estimate_bps())
            else {
                continue;
            };
            alloc_items.clear();
            alloc_dts.clear();
            let mut reserve = 0;
            for &di in &t.down_tracks {
                let Some(e) = down_tracks.get(di) else {
                    continue;
                };
                let Some(tr) = tracks.get(e.track) else {
                    continue;
                };
                if e.dt.paused() {
                    continue;
                }
                if !tr.video || tr.layers.len() < 2 {
                    reserve += tr.layers.first().map_or(0, |l| l.rate.bps());
                    continue;
                }
                let mut rates = [0u64; 8];
                for (r, l) in rates.iter_mut().zip(&tr.layers) {
                    *r = l.rate.bps();
                }
                alloc_items.push(cc::Item {
                    rates,
                    active: tr.active,
                    preferred: e.dt.params.preferred_spatial,
                    cap: e.dt.cap(),
                });
                alloc_dts.push(di);
            }
            if alloc_items.is_empty()
                || !t
                    .allocator
                    .run(micros(t.epoch, now), estimate, reserve, alloc_items)
            {
                continue;
            }
            for (&di, item) in alloc_dts.iter().zip(alloc_items.iter()) {
                let Some(e) = down_tracks.get_mut(di) else {
                    continue;
                };
                if e.dt.cap() != item.cap {
                    let active = tracks.get(e.track).map_or(0, |t| t.active);
                    tracing::debug!(
                        transport = t.id,
                        down_track = e.id,
                        cap = item.cap,
                        estimate,
                        "bandwidth cap"
                    );
                    e.dt.set_cap(item.cap, active);
                }
            }
        }
    }
}
