//! A transport: RTP and RTCP to and from one remote address on the core's socket, either
//! plain or WebRTC (ICE-lite, DTLS-SRTP; see `webrtc`).
//!
//! A plain transport's remote is given by control or learnt with comedia; a WebRTC
//! transport's remote is the address ICE selected.
//!
//! Comedia matters for ffmpeg, GStreamer and most recorders behind NAT: they send before
//! they can be sent to, so the remote is learnt from the first datagram that carries one
//! of the transport's SSRCs.

use std::net::SocketAddr;

use crate::engine::stats::Counters;
use crate::engine::webrtc::WebRtc;

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
    /// ICE, DTLS, SRTP and data channels, for WebRTC transports.
    pub webrtc: Option<Box<WebRtc>>,
}
