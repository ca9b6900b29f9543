//! A transport: RTP and RTCP to and from one remote address on the core's socket, either
//! plain or WebRTC (ICE-lite, DTLS-SRTP; see `webrtc`).
//!
//! A plain transport's remote is given by control or learnt with comedia; a WebRTC
//! transport's remote is the address ICE selected.
//!
//! Comedia matters for ffmpeg, GStreamer and most recorders behind NAT: they send before
//! they can be sent to, so the remote is learnt from the first datagram that carries one
//! of the transport's SSRCs.
//!
//! A transport holds its WebRTC layers (`webrtc`), never the other way round: `webrtc`
//! knows nothing of transports, and the SRTP pair both use lives in `srtp`.

use std::net::SocketAddr;
use std::time::Instant;

use crate::engine::cc::{Allocator, ArrivalRecorder, SendSide};
use crate::engine::hdrext::ExtIds;
use crate::engine::stats::{Counters, DropReason};
use crate::engine::webrtc::WebRtc;
use crate::srtp::SrtpPair;

#[derive(Debug)]
pub struct Transport {
    pub id: u64,
    pub room: u64,
    pub remote: Option<SocketAddr>,
    pub comedia: bool,
    pub counters: Counters,
    /// Tracks published over this transport (engine indices).
    pub tracks: Vec<usize>,
    /// Down tracks sent over this transport (engine indices).
    pub down_tracks: Vec<usize>,
    /// ICE, DTLS and data channels, for WebRTC transports.
    pub webrtc: Option<Box<WebRtc>>,
    /// SRTP, when the transport encrypts. A WebRTC transport without it is not connected.
    pub srtp: Option<Box<SrtpPair>>,
    /// Negotiated header extension ids. `None` (plain transports until told otherwise):
    /// packets keep the publisher's extensions as they are. A WebRTC transport starts with
    /// an empty map, so nothing is sent that was not negotiated.
    pub ext: Option<ExtIds>,
    /// When the transport was created: the zero of its abs-send-time and of the µs clock
    /// used by its congestion control.
    pub epoch: Instant,
    /// Arrival times of the peer's transport-wide numbers, when feedback was negotiated.
    pub twcc_in: Option<Box<ArrivalRecorder>>,
    pub last_twcc_feedback: Option<Instant>,
    /// Our transport-wide numbering, send history and bandwidth estimate, when the
    /// transport-cc extension was negotiated.
    pub twcc_out: Option<Box<SendSide>>,
    /// Layer-cap hysteresis of the down tracks sent here.
    pub allocator: Allocator,
    /// The SSRC that signs the RTCP this transport sends; `None`: the core's.
    pub rtcp_ssrc: Option<crate::ids::Ssrc>,
    /// A relay toward another forwarder: its remote is not in the address map, arrivals
    /// find it by SSRC (`Routes::relay`).
    pub relay: bool,
}

impl Transport {
    /// A transport with no media state yet.
    pub fn new(id: u64, room: u64, remote: Option<SocketAddr>, now: Instant) -> Self {
        Self {
            id,
            room,
            remote,
            comedia: false,
            counters: Counters::default(),
            tracks: Vec::new(),
            down_tracks: Vec::new(),
            webrtc: None,
            srtp: None,
            ext: None,
            epoch: now,
            twcc_in: None,
            last_twcc_feedback: None,
            twcc_out: None,
            allocator: Allocator::default(),
            rtcp_ssrc: None,
            relay: false,
        }
    }

    /// Whether media can be sent now: a remote is known and, on WebRTC, DTLS has made the
    /// SRTP keys. The error is the drop reason for what could not be sent.
    pub fn ready_to_send(&self) -> Result<(), DropReason> {
        if self.remote.is_none() {
            return Err(DropReason::NoRemote);
        }
        if self.webrtc.is_some() && self.srtp.is_none() {
            return Err(DropReason::NotConnected);
        }
        Ok(())
    }
}
