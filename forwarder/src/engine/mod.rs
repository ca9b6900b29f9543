//! The sans-IO forwarding engine of one core.
//!
//! An [`Engine`] owns every room, transport, published track and down track placed on its
//! core. It is driven from outside with the time and the bytes: [`Engine::handle_datagram`]
//! for each received datagram, [`Engine::handle_timeout`] when [`Engine::poll_timeout`]
//! says so, and [`Engine::apply`] for control ([`Command`]; the control protocol's prost
//! messages are translated at the edge, in `control::translate`). It owns no socket, thread or clock;
//! what it sends goes into an [`Egress`](crate::egress::Egress), what it reports into an
//! event outbox. That is what lets the tests run it deterministically in virtual time.
//!
//! Per datagram the work is: demultiplex (RFC 7983 first byte, then the source address to
//! a transport, then the SSRC to a track layer), cache, read the codec payload once, and
//! for each subscriber decide and apply (`downtrack`). Nothing on that path allocates,
//! locks, or logs above `trace`.
//!
//! The engine's methods are spread over files by concern, each an `impl Engine` block:
//! - `routes`: the objects control created and the maps that find them; wiring and
//!   unwiring them;
//! - `ingress`: demultiplexing a datagram, comedia, STUN (ICE) and DTLS;
//! - `ingress_rtp`, `ingress_rtcp`: media and feedback from peers;
//! - `egress`: writing and sending a subscriber's copy, RTCP, retransmissions, PLIs;
//! - `timers`: what runs on the housekeeping tick;
//! - `command`, `apply`: typed control commands and applying them (slow path).
//!
//! The state is grouped the same way (`Objects`, `Routes`, `Timers`, the outbox and the
//! counters), so that a method can borrow the parts it writes disjointly from the parts
//! it reads instead of taking the whole engine apart.

pub mod cache;
pub mod cc;
pub mod downtrack;
pub mod hdrext;
pub mod reports;
pub mod rtx;
pub mod slab;
pub mod stats;
pub mod track;

mod apply;
mod command;
mod egress;
mod ingress;
mod ingress_rtcp;
mod ingress_rtp;
mod outbox;
mod routes;
mod timers;
mod transport;
pub mod webrtc;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use prism_proto::control as pb;

use crate::dtls::DtlsCert;
use crate::ids::Ssrc;

use hdrext::ExtIds;
use routes::{Objects, Routes};
use timers::Timers;

pub use command::{
    AddDownTrack, AddTrack, Command, CommandError, LayerSpec, PlainTransport, RelayIds, Reply,
    RestartIce, WebRtcParams,
};
pub use downtrack::{Decision, DownTrack, DownTrackParams, Forward};
pub use outbox::Outbox;
pub use slab::{FastMap, Slab};
pub use stats::{Counters, DropReason};
pub use track::Track;
pub use transport::Transport;

/// The SRTP contexts of a transport (re-exported from `srtp`, where the pair lives so that
/// `transport` and `webrtc` can both use it without importing each other).
pub use crate::srtp::SrtpPair;

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
    /// The address clients are given for this core (ICE candidates), when it is not the
    /// one its socket is bound to: a host behind NAT, or a socket bound to every interface.
    /// The port stays the socket's.
    pub advertise_ip: Option<IpAddr>,
    /// The port of the ICE-TCP front (`tunnel::ice_tcp`), when there is one: rooms are
    /// told of a passive TCP candidate at this core's advertised IP and this port.
    pub tcp_port: Option<u16>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            video_cache: 1024,
            audio_cache: 128,
            rtcp_ssrc: Ssrc(0x5052_4953), // "PRIS"
            report_interval: reports::REPORT_INTERVAL,
            advertise_ip: None,
            tcp_port: None,
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
    /// This core's address as clients reach it (its socket's, or `advertise_ip` with the
    /// socket's port).
    pub local: SocketAddr,
    /// The address this core's socket is bound to (may be unspecified): where a peer on
    /// this host sends, since the advertised `local` may be an address only clients use
    /// (a NAT's, or a relay's in tests).
    pub bound: SocketAddr,
    cfg: EngineConfig,
    pub counters: Counters,
    /// Rooms, transports, tracks and down tracks.
    objs: Objects,
    /// Ids and packet fields to indices into `objs`.
    routes: Routes,
    /// Events for control, produced since the last drain.
    outbox: Outbox,
    /// When the periodic work runs next, and its scratch.
    timers: Timers,
    /// The DTLS certificate of this core's WebRTC transports, made on first use.
    cert: Option<DtlsCert>,
}

impl Engine {
    pub fn new(core: u32, local: SocketAddr, cfg: EngineConfig) -> Self {
        Self {
            core,
            local: cfg
                .advertise_ip
                .map_or(local, |ip| SocketAddr::new(ip, local.port())),
            bound: local,
            cfg,
            counters: Counters::default(),
            objs: Objects::default(),
            routes: Routes::default(),
            outbox: Outbox::with_capacity(1024),
            timers: Timers::default(),
            cert: None,
        }
    }

    /// Rough load of this core, used to place new rooms: every room, transport, track and
    /// down track it holds. Down tracks dominate in practice (each one costs a send per
    /// packet); counting rooms too spreads new, still empty rooms across cores.
    pub fn load(&self) -> usize {
        let o = &self.objs;
        o.rooms.len() + o.transports.len() + o.tracks.len() + o.down_tracks.len()
    }

    pub fn room_count(&self) -> usize {
        self.objs.rooms.len()
    }

    pub fn transport_count(&self) -> usize {
        self.objs.transports.len()
    }

    pub fn track_count(&self) -> usize {
        self.objs.tracks.len()
    }

    pub fn down_track_count(&self) -> usize {
        self.objs.down_tracks.len()
    }

    /// Counters of the transport with control id `id`.
    pub fn transport_counters(&self, id: u64) -> Option<&Counters> {
        let i = *self.routes.transport_ids.get(&id)?;
        self.objs.transports.get(i).map(|t| &t.counters)
    }

    pub fn down_track(&self, id: u64) -> Option<&DownTrack> {
        let i = *self.routes.down_track_ids.get(&id)?;
        self.objs.down_tracks.get(i).map(|d| &d.dt)
    }

    /// Events produced since the last call (keyframe requests, closed transports).
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, pb::Event> {
        self.outbox.drain()
    }

    /// When [`Engine::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_tick
    }

    /// Counts a drop on the core and, when known, on the transport it was seen on.
    fn count_drop(&mut self, transport: Option<usize>, r: DropReason) {
        let t = transport.and_then(|t| self.objs.transports.get_mut(t));
        count_drop(&mut self.counters, t, r);
    }
}

/// Counts a drop on the core's counters and on transport `t`'s, for callers that hold
/// parts of the engine rather than all of it.
fn count_drop(counters: &mut Counters, t: Option<&mut Transport>, r: DropReason) {
    counters.drop(r);
    if let Some(t) = t {
        t.counters.drop(r);
    }
    tracing::trace!(reason = r.name(), "drop");
}
