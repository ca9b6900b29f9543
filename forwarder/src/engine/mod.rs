//! The sans-IO forwarding engine of one core.
//!
//! An [`Engine`] owns every room, transport, published track and down track placed on its
//! core. It is driven from outside with the time and the bytes: [`Engine::handle_datagram`]
//! for each received datagram, [`Engine::handle_timeout`] when [`Engine::poll_timeout`]
//! says so, and [`Engine::handle_command`] for control. It owns no socket, thread or clock;
//! what it sends goes into an [`Egress`], what it reports into an event outbox. That is
//! what lets the tests run it deterministically in virtual time.
//!
//! Per datagram the work is: demultiplex (RFC 7983 first byte, then the source address to
//! a transport, then the SSRC to a track layer), cache, read the codec payload once, and
//! for each subscriber decide and apply (`downtrack`). Nothing on that path allocates,
//! locks, or logs above `trace`.

pub mod cache;
pub mod cc;
pub mod downtrack;
pub mod hdrext;
pub mod reports;
pub mod rtx;
pub mod slab;
pub mod stats;
pub mod track;

mod command;
mod transport;
pub mod webrtc;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use prism_proto::control as pb;

use crate::codec::vp8::Vp8Descriptor;
use crate::codec::{self, vp8, Codec};
use crate::dtls::DtlsCert;
use crate::ice::{self, IceOutcome};
use crate::ids::Ssrc;
use crate::io::{Egress, HEAD_CAP, MAX_DATAGRAM};
use crate::srtp::MAX_OVERHEAD;
use crate::wire::demux::{self, PacketKind};
use crate::wire::rtcp::{self, RtcpPacket};
use crate::wire::rtp::RtpPacket;

use cc::micros;
use hdrext::{ExtIds, ExtValues, Ingress};

pub use downtrack::{Decision, DownTrack, DownTrackParams, Forward};
pub use slab::{FastMap, Slab};
pub use stats::{Counters, DropReason};
pub use track::Track;
pub use transport::{SrtpPair, Transport};

/// How often the housekeeping timer runs (layer activity, retargeting, NACKs toward
/// publishers, ICE/DTLS/SCTP timers).
pub const TICK: Duration = Duration::from_millis(20);

/// Engine settings fixed at creation.
#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    /// Packets kept per video layer for retransmission.
    pub video_cache: usize,
    /// Packets kept per audio track for retransmission.
    pub audio_cache: usize,
    /// The SSRC the forwarder uses as sender of its own RTCP (PLI, FIR).
    pub rtcp_ssrc: Ssrc,
    /// How often receiver and sender reports go out.
    pub report_interval: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            video_cache: 1024,
            audio_cache: 128,
            rtcp_ssrc: Ssrc(0x5052_4953), // "PRIS"
            report_interval: reports::REPORT_INTERVAL,
        }
    }
}

/// A down track with its wiring.
#[derive(Debug)]
pub struct DownTrackEntry {
    pub id: u64,
    pub room: u64,
    pub track: usize,
    pub transport: usize,
    /// The subscriber's mid, for the sdes:mid header extension.
    pub mid: Option<crate::ids::Mid>,
    /// The extensions negotiated on the subscriber's section, if fewer than the
    /// transport's.
    pub ext: Option<ExtIds>,
    pub dt: DownTrack,
    /// The RTX stream NACKs are answered on, when the subscriber negotiated RTX.
    pub rtx: Option<rtx::RtxSender>,
    /// What this down track sent, for its sender reports.
    pub report: reports::SendStats,
}

#[derive(Debug, Default)]
pub struct Room {
    pub transports: Vec<usize>,
}

/// One core's forwarding state.
#[derive(Debug)]
pub struct Engine {
    pub core: u32,
    pub local: SocketAddr,
    cfg: EngineConfig,
    pub counters: Counters,
    rooms: FastMap<u64, Room>,
    transports: Slab<Transport>,
    tracks: Slab<Track>,
    down_tracks: Slab<DownTrackEntry>,
    transport_ids: FastMap<u64, usize>,
    track_ids: FastMap<u64, usize>,
    down_track_ids: FastMap<u64, usize>,
    /// Remote address → transport.
    by_addr: FastMap<SocketAddr, usize>,
    /// (transport, SSRC) → (track, layer) for incoming media.
    by_ssrc: FastMap<(usize, Ssrc), (usize, u8)>,
    /// (transport, RTX SSRC) → (track, layer) for RTX packets from publishers.
    by_rtx_ssrc: FastMap<(usize, Ssrc), (usize, u8)>,
    /// (transport, output SSRC) → down track, for feedback from subscribers.
    by_out_ssrc: FastMap<(usize, Ssrc), usize>,
    /// SSRC → comedia transport still waiting for its first packet.
    comedia: FastMap<Ssrc, usize>,
    /// Local ICE ufrag → WebRTC transport, to route a first check from a new address.
    by_ufrag: FastMap<Vec<u8>, usize>,
    /// The DTLS certificate of this core's WebRTC transports, made on first use.
    cert: Option<DtlsCert>,
    outbox: Vec<pb::Event>,
    next_tick: Option<Instant>,
    /// WebRTC transports a command gave output to (data to send): pumped on the next
    /// `handle_timeout`, which the worker runs right after applying commands.
    pending_pump: Vec<usize>,
    /// When receiver reports go out next.
    next_report: Option<Instant>,
    /// When layer bitrates roll over next, and when bandwidth is allocated next.
    next_rate_roll: Option<Instant>,
    next_speaker_roll: Option<Instant>,
    next_allocation: Option<Instant>,
    /// Scratch for the allocation (reused, so the timer does not allocate).
    alloc_items: Vec<cc::Item>,
    alloc_dts: Vec<usize>,
}

impl Engine {
    pub fn new(core: u32, local: SocketAddr, cfg: EngineConfig) -> Self {
        Self {
            core,
            local,
            cfg,
            counters: Counters::default(),
            rooms: FastMap::default(),
            transports: Slab::default(),
            tracks: Slab::default(),
            down_tracks: Slab::default(),
            transport_ids: FastMap::default(),
            track_ids: FastMap::default(),
            down_track_ids: FastMap::default(),
            by_addr: FastMap::default(),
            by_ssrc: FastMap::default(),
            by_rtx_ssrc: FastMap::default(),
            by_out_ssrc: FastMap::default(),
            comedia: FastMap::default(),
            by_ufrag: FastMap::default(),
            cert: None,
            outbox: Vec::with_capacity(1024),
            next_tick: None,
            pending_pump: Vec::new(),
            next_report: None,
            next_rate_roll: None,
            next_speaker_roll: None,
            next_allocation: None,
            alloc_items: Vec::new(),
            alloc_dts: Vec::new(),
        }
    }

    /// Rough load of this core, used to place new rooms: every room, transport, track and
    /// down track it holds. Down tracks dominate in practice (each one costs a send per
    /// packet); counting rooms too spreads new, still empty rooms across cores.
    pub fn load(&self) -> usize {
        self.rooms.len() + self.transports.len() + self.tracks.len() + self.down_tracks.len()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn transport_count(&self) -> usize {
        self.transports.len()
    }

    pub fn track_count(&self) -> usize {
        self.tracks.len()
    }

    pub fn down_track_count(&self) -> usize {
        self.down_tracks.len()
    }

    /// Counters of the transport with control id `id`.
    pub fn transport_counters(&self, id: u64) -> Option<&Counters> {
        let i = *self.transport_ids.get(&id)?;
        self.transports.get(i).map(|t| &t.counters)
    }

    pub fn down_track(&self, id: u64) -> Option<&DownTrack> {
        let i = *self.down_track_ids.get(&id)?;
        self.down_tracks.get(i).map(|d| &d.dt)
    }

    /// Events produced since the last call (keyframe requests, closed transports).
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, pb::Event> {
        self.outbox.drain(..)
    }

    /// Pushes an event without growing the outbox on the fast path: when it is full the
    /// event is dropped (events from the fast path are advisory and repeat).
    fn emit(&mut self, ev: pb::Event) {
        if self.outbox.len() < self.outbox.capacity() {
            self.outbox.push(ev);
        }
    }

    /// When [`Engine::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }

    /// Periodic work: layer activity and retargeting, NACKs toward publishers, RTCP
    /// reports, and the ICE, DTLS and SCTP timers of WebRTC transports.
    pub fn handle_timeout<E: Egress>(&mut self, now: Instant, eg: &mut E) {
        while let Some(t) = self.pending_pump.pop() {
            self.pump_webrtc(now, t, eg);
        }
        if self.next_tick.is_some_and(|t| now < t) {
            return;
        }
        self.next_tick = Some(now + TICK);
        let Engine {
            tracks,
            down_tracks,
            transports,
            counters,
            cfg,
            ..
        } = self;
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
            for l in &mut track.layers {
                let n = l.nack.due(now, &mut lost);
                if n == 0 {
                    continue;
                }
                let (sender, media, seqs) = (cfg.rtcp_ssrc, l.ssrc, &lost[..n]);
                if send_rtcp(publisher, eg, &mut |slot: &mut [u8]| {
                    rtcp::emit_nack(slot, sender, media, seqs).unwrap_or(0)
                }) {
                    counters.nacks_sent += 1;
                    publisher.counters.nacks_sent += 1;
                }
            }
        }
        self.send_reports(now, eg);
        self.cc_timers(now, eg);
        for i in 0..self.transports.slots() {
            let due = self
                .transports
                .get(i)
                .and_then(|t| t.webrtc.as_ref())
                .and_then(|w| w.poll_timeout())
                .is_some_and(|t| t <= now);
            if due {
                if let Some(w) = self.transports.get_mut(i).and_then(|t| t.webrtc.as_mut()) {
                    w.handle_timeout(now);
                }
                self.pump_webrtc(now, i, eg);
            }
        }
    }

    /// Congestion control on the timer: transport-cc feedback toward peers that send to
    /// us, layer bitrates, and fitting down tracks into each transport's estimate.
    fn cc_timers<E: Egress>(&mut self, now: Instant, eg: &mut E) {
        let sender = self.cfg.rtcp_ssrc;
        for (_, t) in self.transports.iter_mut() {
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
        if self.next_speaker_roll.is_none_or(|t| now >= t) {
            self.next_speaker_roll = Some(now + track::SPEAKER_INTERVAL);
            let Engine { tracks, outbox, .. } = self;
            for (_, track) in tracks.iter_mut() {
                if track.video {
                    continue;
                }
                if let Some((speaking, level)) = track.meter.roll() {
                    // The outbox is preallocated; when full the report waits for the
                    // next change (speaking state is advisory).
                    if outbox.len() < outbox.capacity() {
                        outbox.push(pb::Event {
                            request_id: 0,
                            body: Some(pb::event::Body::AudioLevel(pb::AudioLevel {
                                track_id: track.id,
                                speaking,
                                level,
                            })),
                        });
                    }
                }
            }
        }
        if self.next_rate_roll.is_none_or(|t| now >= t) {
            self.next_rate_roll = Some(now + cc::RATE_BUCKET);
            for (_, track) in self.tracks.iter_mut() {
                for l in &mut track.layers {
                    l.rate.roll();
                }
            }
        }
        if self.next_allocation.is_none_or(|t| now >= t) {
            self.next_allocation = Some(now + cc::allocate::ALLOCATION_INTERVAL);
            self.allocate_bandwidth(now);
        }
    }

    /// Caps the simulcast layer of each down track so that what a transport sends fits
    /// its bandwidth estimate (`cc::allocate`). Tracks without layers (audio, single
    /// encodings) are a fixed reserve. Transports without an estimate are left alone.
    fn allocate_bandwidth(&mut self, now: Instant) {
        let Engine {
            transports,
            down_tracks,
            tracks,
            alloc_items,
            alloc_dts,
            ..
        } = self;
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

    /// Runs a WebRTC transport's layers until quiet; closes the transport if it died.
    fn pump_webrtc<E: Egress>(&mut self, now: Instant, t: usize, eg: &mut E) {
        let Engine {
            transports, outbox, ..
        } = self;
        let Some(tr) = transports.get_mut(t) else {
            return;
        };
        let (id, remote) = (tr.id, tr.remote);
        let Some(w) = tr.webrtc.as_mut() else {
            return;
        };
        let health = w.pump(now, id, remote, eg, outbox);
        if let Some(keys) = w.take_srtp() {
            tr.srtp = Some(Box::new(keys));
        }
        if let webrtc::Health::Dead(why) = health {
            tracing::info!(transport = id, why, "closing WebRTC transport");
            self.close_transport(t, why);
        }
    }

    fn count_drop(&mut self, transport: Option<usize>, r: DropReason) {
        self.counters.drop(r);
        if let Some(t) = transport.and_then(|t| self.transports.get_mut(t)) {
            t.counters.drop(r);
        }
        tracing::trace!(reason = r.name(), "drop");
    }

    /// Handles one received datagram. `buf` may be modified in place.
    pub fn handle_datagram<E: Egress>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
        egress: &mut E,
    ) {
        self.counters.packets_in += 1;
        self.counters.bytes_in += buf.len() as u64;
        if self.next_tick.is_none() {
            self.next_tick = Some(now);
        }
        let kind = demux::classify(buf);
        let transport = match self.by_addr.get(&from) {
            Some(&t) => t,
            None if kind == PacketKind::Stun => return self.on_stun(now, None, from, buf, egress),
            None => match self.learn_comedia(from, kind, buf) {
                Some(t) => t,
                None => {
                    let r = if kind == PacketKind::Rtp || kind == PacketKind::Rtcp {
                        DropReason::UnknownSource
                    } else {
                        unknown_kind_reason(buf)
                    };
                    return self.count_drop(None, r);
                }
            },
        };
        let Some(t) = self.transports.get_mut(transport) else {
            return;
        };
        t.counters.packets_in += 1;
        t.counters.bytes_in += buf.len() as u64;
        let webrtc = t.webrtc.is_some();
        match kind {
            PacketKind::Rtp | PacketKind::Rtcp => {
                let n = match t.srtp.as_mut() {
                    None if webrtc => {
                        return self.count_drop(Some(transport), DropReason::NotConnected)
                    }
                    None => buf.len(),
                    Some(s) => {
                        let r = if kind == PacketKind::Rtp {
                            s.inbound.unprotect_rtp(buf)
                        } else {
                            s.inbound.unprotect_rtcp(buf)
                        };
                        match r {
                            Ok(n) => n,
                            Err(e) => return self.count_drop(Some(transport), e.into()),
                        }
                    }
                };
                let plain = &mut buf[..n];
                if kind == PacketKind::Rtp {
                    self.on_rtp(now, transport, plain, egress)
                } else {
                    self.on_rtcp(now, transport, plain, egress)
                }
            }
            PacketKind::Stun if webrtc => self.on_stun(now, Some(transport), from, buf, egress),
            PacketKind::Dtls if webrtc => {
                let rejected = t
                    .webrtc
                    .as_mut()
                    .is_some_and(|w| w.dtls.handle_datagram(now, buf).is_err());
                if rejected {
                    self.count_drop(Some(transport), DropReason::DtlsRejected);
                }
                self.pump_webrtc(now, transport, egress);
            }
            _ => self.count_drop(Some(transport), unknown_kind_reason(buf)),
        }
    }

    /// A STUN message: an ICE check for a WebRTC transport, found by address or, from a new
    /// address, by the local ufrag in its USERNAME.
    fn on_stun<E: Egress>(
        &mut self,
        now: Instant,
        known: Option<usize>,
        from: SocketAddr,
        buf: &[u8],
        eg: &mut E,
    ) {
        let t = match known {
            Some(t) => t,
            None => {
                let found = ice::username_of(buf).and_then(|(local, _)| self.by_ufrag.get(local));
                match found {
                    Some(&t) => t,
                    None => return self.count_drop(None, DropReason::UnknownSource),
                }
            }
        };
        let Some(tr) = self.transports.get_mut(t) else {
            return;
        };
        if known.is_none() {
            tr.counters.packets_in += 1;
            tr.counters.bytes_in += buf.len() as u64;
        }
        let Some(w) = tr.webrtc.as_mut() else {
            return self.count_drop(Some(t), DropReason::UnknownProtocol);
        };
        let mut reply = [0u8; 512];
        match w.ice.handle_stun(now, from, buf, &mut reply) {
            IceOutcome::Reply { len, .. } => {
                send_bytes(eg, from, &reply[..len.min(reply.len())]);
            }
            IceOutcome::Dropped(d) => {
                tracing::trace!(reason = ?d, %from, "ICE check refused");
                return self.count_drop(Some(t), DropReason::IceRejected);
            }
        }
        let selected = w.ice.selected();
        if selected != tr.remote {
            if let Some(old) = tr.remote {
                self.by_addr.remove(&old);
            }
            tr.remote = selected;
            if let Some(a) = selected {
                tracing::debug!(transport = tr.id, remote = %a, "ICE selected a remote");
                self.by_addr.insert(a, t);
            }
        }
        self.pump_webrtc(now, t, eg);
    }

    /// A datagram from an unknown address: bind it to a comedia transport if it carries one
    /// of that transport's SSRCs.
    fn learn_comedia(&mut self, from: SocketAddr, kind: PacketKind, buf: &[u8]) -> Option<usize> {
        if self.comedia.is_empty() {
            return None;
        }
        let ssrc = match kind {
            PacketKind::Rtp => RtpPacket::new_checked(buf).ok()?.ssrc(),
            PacketKind::Rtcp => rtcp_reference_ssrc(buf)?,
            _ => return None,
        };
        let t = *self.comedia.get(&ssrc)?;
        self.comedia.retain(|_, v| *v != t);
        let tr = self.transports.get_mut(t)?;
        tr.remote = Some(from);
        self.by_addr.insert(from, t);
        tracing::debug!(transport = tr.id, %from, "comedia: remote learnt");
        Some(t)
    }

    fn on_rtp<E: Egress>(&mut self, now: Instant, transport: usize, buf: &mut [u8], eg: &mut E) {
        let pkt = match RtpPacket::new_checked(&buf[..]) {
            Ok(p) => p,
            Err(e) => return self.count_drop(Some(transport), e.into()),
        };
        // Every packet with a transport-wide number is recorded for feedback, before any
        // drop: the sender's estimator counts what we do not report as lost.
        let ingress = match self.transports.get_mut(transport) {
            Some(t) => match t.ext {
                Some(ids) => {
                    let ing = Ingress::read(&ids, pkt.extensions());
                    if let (Some(s), Some(r)) = (ing.transport_seq, t.twcc_in.as_mut()) {
                        r.on_packet(s, micros(t.epoch, now), pkt.ssrc());
                    }
                    ing
                }
                None => Ingress::default(),
            },
            None => Ingress::default(),
        };
        let found = match self.by_ssrc.get(&(transport, pkt.ssrc())) {
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
        let Engine {
            tracks,
            down_tracks,
            transports,
            counters,
            outbox,
            cfg,
            ..
        } = self;
        let Some(track) = tracks.get_mut(ti) else {
            return;
        };
        let li = usize::from(layer);
        let Some(l) = track.layers.get_mut(li) else {
            return;
        };
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
            counters.drop(DropReason::Duplicate);
            if let Some(t) = transports.get_mut(transport) {
                t.counters.drop(DropReason::Duplicate);
            }
            return;
        }
        l.cache.store(seq, pkt.as_bytes());
        l.recv.on_packet(seq, ts, now, track.clock_rate, newest);
        l.rate.add(buf.len());
        if track.active & (1 << li) == 0 {
            track.active |= 1 << li;
            for &d in &track.subscribers {
                if let Some(e) = down_tracks.get_mut(d) {
                    e.dt.retarget(track.active);
                }
            }
        }

        if let (false, Some(level)) = (track.video, ingress.audio_level) {
            track.meter.observe(level);
        }
        let payload = pkt.payload();
        let (info, vp8d) = if track.codec == Codec::Vp8 {
            match vp8::parse_descriptor(payload) {
                Ok(d) => (vp8::info_of(payload, &d), Some(d)),
                Err(_) => (Default::default(), None),
            }
        } else {
            (
                codec::inspect(track.codec, payload).unwrap_or_default(),
                None,
            )
        };
        let header_len = pkt.header_len();
        let head_len = header_len + vp8d.map_or(0, |d| d.header_len);
        let total = buf.len();
        let incoming = downtrack::Incoming {
            now,
            layer,
            seq,
            ts,
            info,
            vp8: vp8d,
            newest,
        };
        if track.video && payload.is_empty() {
            // Padding-only probes carry nothing a subscriber needs. Browsers send them by
            // the hundred while probing bandwidth; each down track on this layer closes the
            // gap, so that its subscriber sees no loss and sends no NACK for them.
            for &di in &track.subscribers {
                if let Some(entry) = down_tracks.get_mut(di) {
                    entry.dt.skip_padding(&incoming);
                }
            }
            counters.drop(DropReason::BadPayload);
            return;
        }
        let mut head = [0u8; HEAD_CAP];
        for &di in &track.subscribers {
            let Some(entry) = down_tracks.get_mut(di) else {
                continue;
            };
            let decision = entry.dt.decide(&incoming);
            if entry.dt.keyframe_needed {
                entry.dt.keyframe_needed = false;
                if let Some(tl) = track.layers.get_mut(usize::from(entry.dt.target_layer())) {
                    tl.keyframe_wanted = true;
                }
            }
            let Some(out_t) = transports.get_mut(entry.transport) else {
                continue;
            };
            let f = match decision {
                Decision::Forward(f) => f,
                Decision::Drop(r) => {
                    counters.drop(r);
                    out_t.counters.drop(r);
                    continue;
                }
            };
            let Some(remote) = out_t.remote else {
                counters.drop(DropReason::NoRemote);
                out_t.counters.drop(DropReason::NoRemote);
                continue;
            };
            if out_t.webrtc.is_some() && out_t.srtp.is_none() {
                counters.drop(DropReason::NotConnected);
                out_t.counters.drop(DropReason::NotConnected);
                continue;
            }
            let ext = out_t.ext.map(|t| entry.ext.unwrap_or(t));
            let tcc = ext
                .filter(|ids| ids.transport_cc != 0)
                .and(out_t.twcc_out.as_ref())
                .map(|s| s.next_seq());
            let values = ExtValues {
                mid: entry.mid.as_ref().map(|m| m.0.as_bytes()),
                abs_send_time: Some(hdrext::abs_send_time(
                    now.saturating_duration_since(out_t.epoch),
                )),
                transport_seq: tcc,
                audio_level: if track.video {
                    None
                } else {
                    ingress.audio_level
                },
            };
            let layout = Layout {
                csrc_end: 12 + 4 * usize::from(pkt.csrc_count()),
                header_len,
                head_len,
                total,
                received: true,
            };
            let wire = send_copy(
                eg,
                remote,
                out_t.srtp.as_deref_mut(),
                &buf[..],
                layout,
                ext.as_ref(),
                &values,
                &f,
                vp8d.as_ref(),
                None,
                &mut head,
            );
            if wire > 0 {
                entry.report.on_sent(payload.len());
                if let (Some(_), Some(s)) = (tcc, out_t.twcc_out.as_mut()) {
                    s.record(micros(out_t.epoch, now), wire);
                }
                counters.packets_out += 1;
                counters.bytes_out += total as u64;
                out_t.counters.packets_out += 1;
                out_t.counters.bytes_out += total as u64;
            } else {
                counters.drop(DropReason::QueueFull);
                out_t.counters.drop(DropReason::QueueFull);
            }
        }
        for li in 0..track.layers.len() {
            request_keyframe(track, li, now, transports, counters, outbox, cfg, eg);
        }
    }

    /// An unknown SSRC on a transport that publishes layers announced by RID only: if the
    /// packet's RID (and MID) extensions name such a layer, it is that layer from now on.
    fn learn_rid(&mut self, transport: usize, pkt: &RtpPacket<&[u8]>) -> Option<(usize, u8)> {
        let tr = self.transports.get(transport)?;
        let (ti, li) = tr.tracks.iter().find_map(|&ti| {
            let t = self.tracks.get(ti)?;
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
        let layer = self.tracks.get_mut(ti)?.layers.get_mut(li)?;
        layer.ssrc = ssrc;
        self.by_ssrc.insert((transport, ssrc), (ti, li as u8));
        tracing::debug!(transport, track = ti, layer = li, %ssrc, "SSRC learnt from its RID");
        Some((ti, li as u8))
    }

    fn on_rtcp<E: Egress>(&mut self, now: Instant, transport: usize, buf: &mut [u8], eg: &mut E) {
        for pkt in rtcp::packets(buf) {
            let pkt = match pkt {
                Ok(p) => p,
                Err(e) => return self.count_drop(Some(transport), e.into()),
            };
            match pkt {
                RtcpPacket::Nack(n) => {
                    self.counters.nacks_received += 1;
                    if let Some(t) = self.transports.get_mut(transport) {
                        t.counters.nacks_received += 1;
                    }
                    let Some(&di) = self.by_out_ssrc.get(&(transport, n.media_ssrc())) else {
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
                    if let Some(t) = self.transports.get_mut(transport) {
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
        let Some(&di) = self.by_out_ssrc.get(&(transport, media)) else {
            return self.count_drop(Some(transport), DropReason::UnknownSsrc);
        };
        let Engine {
            tracks,
            down_tracks,
            transports,
            counters,
            outbox,
            cfg,
            ..
        } = self;
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
        request_keyframe(
            track,
            usize::from(layer),
            now,
            transports,
            counters,
            outbox,
            cfg,
            eg,
        );
    }

    /// Answers a NACK for output number `seq` of down track `di` from the cache, rewritten
    /// exactly as it was the first time, and sent as RTX where the subscriber negotiated
    /// it (`rtx`). Header extensions are written afresh: the retransmission is a new
    /// packet on the wire (new send time, new transport-wide number).
    fn retransmit<E: Egress>(&mut self, now: Instant, di: usize, seq: u16, eg: &mut E) {
        let Some(entry) = self.down_tracks.get(di) else {
            return;
        };
        let transport = entry.transport;
        let rtx = entry.rtx;
        let found = entry.dt.lookup_sent(seq).and_then(|(layer, src, f)| {
            let track = self.tracks.get(entry.track)?;
            let bytes = track.layers.get(usize::from(layer))?.cache.get(src)?;
            Some((bytes, f, track.codec, track.video, track.transport))
        });
        let pub_ext = found
            .and_then(|(.., publisher)| self.transports.get(publisher))
            .and_then(|t| t.ext);
        let Some(tr) = self.transports.get_mut(transport) else {
            return;
        };
        let (Some((bytes, f, codec, video, _)), Some(remote)) = (found, tr.remote) else {
            self.counters.drop(DropReason::NotInCache);
            tr.counters.drop(DropReason::NotInCache);
            return;
        };
        if tr.webrtc.is_some() && tr.srtp.is_none() {
            return;
        }
        let Ok(p) = RtpPacket::new_checked(bytes) else {
            return;
        };
        let header_len = p.header_len();
        let vp8d = if codec == Codec::Vp8 {
            vp8::parse_descriptor(p.payload()).ok()
        } else {
            None
        };
        let ext = tr.ext.map(|t| entry.ext.unwrap_or(t));
        let tcc = ext
            .filter(|ids| ids.transport_cc != 0)
            .and(tr.twcc_out.as_ref())
            .map(|s| s.next_seq());
        let values = ExtValues {
            mid: entry.mid.as_ref().map(|m| m.0.as_bytes()),
            abs_send_time: Some(hdrext::abs_send_time(
                now.saturating_duration_since(tr.epoch),
            )),
            transport_seq: tcc,
            audio_level: match pub_ext {
                Some(ids) if !video => Ingress::read(&ids, p.extensions()).audio_level,
                _ => None,
            },
        };
        let layout = Layout {
            csrc_end: 12 + 4 * usize::from(p.csrc_count()),
            header_len,
            head_len: header_len + vp8d.map_or(0, |d| d.header_len),
            total: bytes.len(),
            received: false,
        };
        let mut head = [0u8; HEAD_CAP];
        let room = bytes.len() + hdrext::MAX_BLOCK + rtx::OSN_LEN + MAX_OVERHEAD;
        let wire = if room <= MAX_DATAGRAM {
            send_copy(
                eg,
                remote,
                tr.srtp.as_deref_mut(),
                bytes,
                layout,
                ext.as_ref(),
                &values,
                &f,
                vp8d.as_ref(),
                rtx.as_ref(),
                &mut head,
            )
        } else {
            0
        };
        let as_rtx = u64::from(rtx.is_some());
        let len = bytes.len() as u64 + as_rtx * rtx::OSN_LEN as u64;
        if wire > 0 {
            if let (Some(_), Some(s)) = (tcc, tr.twcc_out.as_mut()) {
                s.record(micros(tr.epoch, now), wire);
            }
            self.counters.retransmits_sent += 1;
            self.counters.rtx_sent += as_rtx;
            self.counters.packets_out += 1;
            self.counters.bytes_out += len;
            tr.counters.retransmits_sent += 1;
            tr.counters.rtx_sent += as_rtx;
            tr.counters.packets_out += 1;
            tr.counters.bytes_out += len;
            if let Some(r) = self.down_tracks.get_mut(di).and_then(|e| e.rtx.as_mut()) {
                r.next_seq = r.next_seq.wrapping_add(1);
            }
        } else {
            self.counters.drop(DropReason::QueueFull);
            tr.counters.drop(DropReason::QueueFull);
        }
    }
}

/// Sends a PLI for layer `li` to the track's publisher if one is wanted and the throttle
/// allows, and reports it as an event.
#[allow(clippy::too_many_arguments)]
fn request_keyframe<E: Egress>(
    track: &mut Track,
    li: usize,
    now: Instant,
    transports: &mut Slab<Transport>,
    counters: &mut Counters,
    outbox: &mut Vec<pb::Event>,
    cfg: &EngineConfig,
    eg: &mut E,
) {
    let Some(l) = track.layers.get_mut(li) else {
        return;
    };
    if !l.take_keyframe_request(now) {
        return;
    }
    let media = l.ssrc;
    counters.keyframe_requests += 1;
    if let Some(t) = transports.get_mut(track.transport) {
        t.counters.keyframe_requests += 1;
        let sender = cfg.rtcp_ssrc;
        send_rtcp(t, eg, &mut |slot: &mut [u8]| {
            rtcp::emit_pli(slot, sender, media).unwrap_or(0)
        });
    }
    if outbox.len() < outbox.capacity() {
        outbox.push(pb::Event {
            request_id: 0,
            body: Some(pb::event::Body::KeyframeNeeded(pb::KeyframeNeeded {
                track_id: track.id,
                spatial: li as u32,
                ssrc: media.0,
            })),
        });
    }
}

/// Where the parts of a received RTP packet are: fixed header and CSRCs end at
/// `csrc_end`, the extension block at `header_len`, the codec descriptor the down track
/// rewrites (VP8) at `head_len`, the packet at `total`. `received`: the packet is the
/// datagram being handled, so a plain copy can send its payload from the receive buffer
/// (`send_split`); a retransmission from the cache is copied whole instead.
#[derive(Clone, Copy, Debug)]
struct Layout {
    csrc_end: usize,
    header_len: usize,
    head_len: usize,
    total: usize,
    received: bool,
}

/// Writes the header of one subscriber's copy into `dst` from the received packet `src`:
/// with `ext`, the fixed header and CSRCs followed by this transport's own extension
/// block (`hdrext`), the X bit set to match; without, the received header unchanged.
/// Returns the new header length.
fn write_head(
    dst: &mut [u8],
    src: &[u8],
    l: &Layout,
    ext: Option<&ExtIds>,
    values: &ExtValues<'_>,
) -> Option<usize> {
    let Some(ids) = ext else {
        dst.get_mut(..l.header_len)?
            .copy_from_slice(src.get(..l.header_len)?);
        return Some(l.header_len);
    };
    dst.get_mut(..l.csrc_end)?
        .copy_from_slice(src.get(..l.csrc_end)?);
    let block = hdrext::write_block(dst.get_mut(l.csrc_end..)?, ids, values).ok()?;
    dst[0] = (dst[0] & !0x10) | if block > 0 { 0x10 } else { 0 };
    Some(l.csrc_end + block)
}

/// Queues one subscriber's copy of a packet: its own header (`write_head`), the
/// rewrite of `f`, then the payload, wrapped as RTX when `rtx` is given (retransmissions
/// to a subscriber that negotiated it). Encrypted copies are written whole into the egress
/// slot and protected there; plain ones send a rewritten header copy followed by the
/// received payload itself. Returns the bytes on the wire (0: not sent).
#[allow(clippy::too_many_arguments)]
fn send_copy<E: Egress>(
    eg: &mut E,
    remote: SocketAddr,
    srtp: Option<&mut SrtpPair>,
    src: &[u8],
    l: Layout,
    ext: Option<&ExtIds>,
    values: &ExtValues<'_>,
    f: &Forward,
    vp8d: Option<&Vp8Descriptor>,
    rtx: Option<&rtx::RtxSender>,
    head: &mut [u8; HEAD_CAP],
) -> usize {
    let mut wire = 0;
    let body = l.total - l.header_len;
    if let Some(srtp) = srtp {
        eg.send_with(remote, &mut |slot: &mut [u8]| {
            let Some(hl) = write_head(slot, src, &l, ext, values) else {
                return 0;
            };
            let mut n = hl + body;
            if n + rtx::OSN_LEN + MAX_OVERHEAD > slot.len() {
                return 0;
            }
            slot[hl..n].copy_from_slice(&src[l.header_len..l.total]);
            if downtrack::apply(&mut slot[..n], hl, f, vp8d).is_err() {
                return 0;
            }
            if let Some(r) = rtx {
                match rtx::wrap(slot, hl, n, r, r.next_seq) {
                    Some(m) => n = m,
                    None => return 0,
                }
            }
            wire = srtp.outbound.protect_rtp(slot, n).unwrap_or(0);
            wire
        });
        return wire;
    }
    let desc = l.head_len - l.header_len;
    let new_head = match ext {
        Some(_) => l.csrc_end + hdrext::MAX_BLOCK + desc,
        None => l.head_len,
    };
    if l.received && rtx.is_none() && new_head <= HEAD_CAP {
        let Some(hl) = write_head(&mut head[..], src, &l, ext, values) else {
            return 0;
        };
        let h = &mut head[..hl + desc];
        h[hl..].copy_from_slice(&src[l.header_len..l.head_len]);
        let ok = downtrack::apply(h, hl, f, vp8d).is_ok()
            && eg.send_split(remote, h, l.head_len..l.total);
        return if ok { hl + body } else { 0 };
    }
    eg.send_with(remote, &mut |slot: &mut [u8]| {
        let Some(hl) = write_head(slot, src, &l, ext, values) else {
            return 0;
        };
        let mut n = hl + body;
        let Some(dst) = slot.get_mut(..n) else {
            return 0;
        };
        dst[hl..].copy_from_slice(&src[l.header_len..l.total]);
        if downtrack::apply(dst, hl, f, vp8d).is_err() {
            return 0;
        }
        if let Some(r) = rtx {
            match rtx::wrap(slot, hl, n, r, r.next_seq) {
                Some(m) => n = m,
                None => return 0,
            }
        }
        wire = n;
        n
    });
    wire
}

/// Queues a copy of `data` to `to` (slow path: STUN replies, DTLS records).
pub(crate) fn send_bytes<E: Egress>(eg: &mut E, to: SocketAddr, data: &[u8]) -> bool {
    eg.send_with(
        to,
        &mut |slot: &mut [u8]| match slot.get_mut(..data.len()) {
            Some(s) => {
                s.copy_from_slice(data);
                data.len()
            }
            None => 0,
        },
    )
}

/// Sends an RTCP packet built by `build` to transport `t`'s remote, protected with SRTCP
/// on WebRTC transports. False if nothing could be sent (no remote, not connected).
fn send_rtcp<E: Egress>(
    t: &mut Transport,
    eg: &mut E,
    build: &mut dyn FnMut(&mut [u8]) -> usize,
) -> bool {
    let Some(remote) = t.remote else {
        return false;
    };
    match t.srtp.as_mut() {
        None if t.webrtc.is_some() => false,
        None => eg.send_with(remote, build),
        Some(s) => eg.send_with(remote, &mut |slot: &mut [u8]| {
            let n = build(slot);
            if n == 0 || n + MAX_OVERHEAD > slot.len() {
                return 0;
            }
            s.outbound.protect_rtcp(slot, n).unwrap_or(0)
        }),
    }
}

/// Why a datagram that is neither RTP nor RTCP is dropped: a first byte of 0xC0 or more
/// is RTP/RTCP with version 3, anything else another protocol (RFC 7983).
fn unknown_kind_reason(buf: &[u8]) -> DropReason {
    match buf.first() {
        Some(b) if *b >= 0xc0 => DropReason::BadVersion,
        _ => DropReason::UnknownProtocol,
    }
}

/// The SSRC an RTCP datagram from a not-yet-known comedia peer refers to: the media SSRC of
/// its first feedback message or report block, or its sender SSRC.
fn rtcp_reference_ssrc(buf: &[u8]) -> Option<Ssrc> {
    let mut sender = None;
    for p in rtcp::packets(buf) {
        match p.ok()? {
            RtcpPacket::Nack(n) => return Some(n.media_ssrc()),
            RtcpPacket::Pli(p) => return Some(p.media_ssrc()),
            RtcpPacket::ReceiverReport(rr) => {
                if let Some(b) = rr.report_blocks().next() {
                    return Some(b.ssrc());
                }
                sender = sender.or(Some(rr.ssrc()));
            }
            RtcpPacket::SenderReport(sr) => sender = sender.or(Some(sr.ssrc())),
            _ => {}
        }
    }
    sender
}
