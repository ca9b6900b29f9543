//! A plain RTP transport: RTP and RTCP to and from one remote address on the core's
//! socket. The remote is either given by control or, with comedia, learnt from the first
//! datagram that carries one of the transport's SSRCs (what ffmpeg, GStreamer and most
//! recorders behind NAT need: they send before they can be sent to).

use std::net::SocketAddr;

use crate::engine::stats::Counters;

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
}
