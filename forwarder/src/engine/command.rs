//! Control commands applied to an engine, as typed values. This is the slow path: it may
//! allocate, and it checks everything that depends on the engine's state (ids, room
//! membership, SSRC uniqueness). What can be checked without the engine (addresses, keys,
//! fingerprints, ranges) was checked when the command was made, at the control edge
//! (`control::translate`), which also turns the answer back into an event: every command
//! gets exactly one answer, a [`Reply`] or a [`CommandError`] saying what was wrong.

use std::fmt;
use std::net::SocketAddr;

use super::hdrext::ExtIds;
use crate::codec::Codec;
use crate::dtls::{DtlsError, DtlsRole, Fingerprint};
use crate::ids::{DownTrackId, Mid, Rid, RoomId, Ssrc, TrackId, TransportId};
use crate::sctp::SctpError;
use crate::srtp::SrtpPair;

/// A command for one core's engine.
#[derive(Debug)]
#[non_exhaustive]
pub enum Command {
    CreateRoom(RoomId),
    CreatePlainTransport(PlainTransport),
    CreateWebRtcTransport {
        room: RoomId,
        transport: TransportId,
        params: WebRtcParams,
    },
    /// A transport's negotiated header extension ids; `feedback`: send transport-cc
    /// feedback toward the peer.
    SetHeaderExtensions {
        room: RoomId,
        transport: TransportId,
        ids: ExtIds,
        feedback: bool,
    },
    AddTrack(AddTrack),
    AddDownTrack(AddDownTrack),
    SetPreferredLayer {
        down_track: DownTrackId,
        spatial: u8,
        temporal: u8,
    },
    SetPaused {
        down_track: DownTrackId,
        paused: bool,
    },
    RemoveDownTrack(DownTrackId),
    RemoveTrack(TrackId),
    CloseTransport(TransportId),
    CloseRoom(RoomId),
    RestartIce(RestartIce),
    /// One data channel message to each transport (a relayed packet's recipients).
    SendData {
        transports: Vec<TransportId>,
        label: String,
        binary: bool,
        data: Vec<u8>,
    },
}

/// What a WebRTC transport is created with, checked at the control edge: ICE
/// credentials (local ones non-empty; empty remote ones are learnt later), the peer's
/// certificate fingerprint and our DTLS role.
#[derive(Clone, Debug)]
pub struct WebRtcParams {
    pub local_ufrag: String,
    pub local_pwd: String,
    pub remote_ufrag: String,
    pub remote_pwd: String,
    pub remote_fingerprint: Fingerprint,
    pub role: DtlsRole,
}

/// A plain (non-WebRTC) transport: a remote given, or learnt with comedia.
#[derive(Debug)]
pub struct PlainTransport {
    pub room: RoomId,
    pub transport: TransportId,
    pub remote: Option<SocketAddr>,
    pub comedia: bool,
    /// SRTP contexts made from the keys control gave, when the transport encrypts.
    pub srtp: Option<Box<SrtpPair>>,
    /// Set for a relay transport toward another forwarder (see [`RelayIds`]).
    pub relay: Option<RelayIds>,
}

/// A relay transport's RTCP sender SSRCs. A relay does not own its remote address (one
/// per room may face the same peer core), so what arrives is routed by SSRC: the media
/// SSRCs of its tracks, and `peer` for the feedback and reports the far end signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayIds {
    /// Signs the feedback and receiver reports this transport sends.
    pub local: Ssrc,
    /// What the far end's transport signs its own with.
    pub peer: Ssrc,
}

/// One layer of a published track, as control describes it. SSRC 0: announced by RID only.
#[derive(Clone, Debug)]
pub struct LayerSpec {
    pub spatial: u32,
    pub ssrc: Ssrc,
    pub rid: Option<Rid>,
    /// Whether a RID string was given at all (a given but malformed one counts, as it did
    /// when the layer waited for it).
    pub has_rid: bool,
    pub rtx_ssrc: Ssrc,
}

/// A track published over a transport.
#[derive(Clone, Debug)]
pub struct AddTrack {
    pub room: RoomId,
    pub transport: TransportId,
    pub track: TrackId,
    pub video: bool,
    pub codec: Codec,
    pub payload_type: u32,
    pub clock_rate: u32,
    pub layers: Vec<LayerSpec>,
    pub nack: bool,
    pub mid: Option<Mid>,
    pub mid_ext: u32,
    pub rid_ext: u32,
    /// The raw RTX payload type (0: none); checked against the codec's by the engine.
    pub rtx_payload_type: u32,
    pub repaired_rid_ext: u32,
}

/// A subscriber's copy of a track.
#[derive(Clone, Debug)]
pub struct AddDownTrack {
    pub room: RoomId,
    pub track: TrackId,
    pub down_track: DownTrackId,
    pub transport: TransportId,
    pub ssrc: Ssrc,
    /// 0: the track's payload type.
    pub payload_type: u32,
    pub preferred_spatial: u8,
    pub preferred_temporal: u8,
    pub rtx_ssrc: u32,
    pub rtx_payload_type: u32,
    pub mid: Option<Mid>,
    pub ext: Option<ExtIds>,
    /// Forward `preferred_spatial` only (a relay carries each layer as its own stream).
    pub pinned: bool,
}

/// New local (and optionally remote) ICE credentials for a WebRTC transport.
#[derive(Clone, Debug)]
pub struct RestartIce {
    pub room: RoomId,
    pub transport: TransportId,
    pub local_ufrag: String,
    pub local_pwd: String,
    /// Empty: the remote credentials stay.
    pub remote_ufrag: String,
    pub remote_pwd: String,
}

/// A successful command's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    Ok,
    RoomCreated {
        room: RoomId,
        core: u32,
        local: SocketAddr,
        /// The core socket's own address, for peers on this host.
        bound: SocketAddr,
        /// The passive ICE-TCP candidate, when the forwarder has a TCP front.
        tcp_local: Option<SocketAddr>,
        fingerprint: String,
    },
    TransportCreated {
        transport: TransportId,
        local: SocketAddr,
        /// Empty for plain transports.
        fingerprint: String,
    },
}

/// Why the engine refused a command. Nothing was changed when a command is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandError {
    NoRoom {
        room: RoomId,
        core: u32,
    },
    NoTransport(TransportId),
    NoTrack(TrackId),
    NoDownTrack(DownTrackId),
    TransportExists(TransportId),
    TrackExists(TrackId),
    DownTrackExists(DownTrackId),
    TransportNotInRoom {
        transport: TransportId,
        room: RoomId,
    },
    TrackNotInRoom {
        track: TrackId,
        room: RoomId,
    },
    NotWebRtc,
    /// Neither a remote address nor comedia.
    NoRemote,
    RemoteInUse(SocketAddr),
    /// A relay SSRC (RTCP sender or media) already routes to a relay transport on the core.
    RelaySsrcInUse(Ssrc),
    /// A relay transport needs a remote address and two non-zero, different RTCP SSRCs.
    BadRelay(&'static str),
    /// The ufrag is already used, by this transport (`mine`) or another.
    UfragInUse {
        ufrag: String,
        mine: bool,
    },
    /// The track's layers are not a valid set; the text says which rule was broken.
    BadLayers(&'static str),
    SsrcPublished(Ssrc),
    RtxSsrcPublished(Ssrc),
    SsrcSent(Ssrc),
    BadRtxPayloadType(u32),
    /// An RTX SSRC without its payload type, or the other way round.
    RtxIncomplete,
    BadRtx {
        ssrc: u32,
        payload_type: u32,
    },
    ExtensionsDiffer,
    Certificate(DtlsError),
    Dtls(DtlsError),
    DataChannel(SctpError),
    DataChannelsDown,
    NoDataChannel(String),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use CommandError as E;
        match self {
            E::NoRoom { room, core } => write!(f, "no room {room} on core {core}"),
            E::NoTransport(t) => write!(f, "no transport {t}"),
            E::NoTrack(t) => write!(f, "no track {t}"),
            E::NoDownTrack(d) => write!(f, "no down track {d}"),
            E::TransportExists(t) => write!(f, "transport {t} exists"),
            E::TrackExists(t) => write!(f, "track {t} exists"),
            E::DownTrackExists(d) => write!(f, "down track {d} exists"),
            E::TransportNotInRoom { transport, room } => {
                write!(f, "transport {transport} is not in room {room}")
            }
            E::TrackNotInRoom { track, room } => write!(f, "track {track} is not in room {room}"),
            E::NotWebRtc => f.write_str("not a WebRTC transport"),
            E::NoRemote => f.write_str("a transport needs a remote address or comedia"),
            E::RemoteInUse(a) => write!(f, "remote {a} is already used by another transport"),
            E::RelaySsrcInUse(s) => write!(f, "ssrc {s} already routes to a relay transport"),
            E::BadRelay(why) => f.write_str(why),
            E::UfragInUse { ufrag, mine } => {
                let whose = if *mine {
                    "this transport"
                } else {
                    "another transport"
                };
                write!(f, "ICE ufrag {ufrag:?} is already in use by {whose}")
            }
            E::BadLayers(why) => f.write_str(why),
            E::SsrcPublished(s) => write!(f, "ssrc {s} is already published on this transport"),
            E::RtxSsrcPublished(s) => {
                write!(f, "RTX ssrc {s} is already published on this transport")
            }
            E::SsrcSent(s) => write!(f, "ssrc {s} is already sent on this transport"),
            E::BadRtxPayloadType(pt) => write!(f, "bad RTX payload type {pt}"),
            E::RtxIncomplete => f.write_str("RTX needs both an SSRC and a payload type"),
            E::BadRtx { ssrc, payload_type } => {
                write!(f, "bad RTX ssrc {ssrc} or payload type {payload_type}")
            }
            E::ExtensionsDiffer => {
                f.write_str("the down track's header extension ids differ from its transport's")
            }
            E::Certificate(e) => write!(f, "making a DTLS certificate: {e}"),
            E::Dtls(e) => write!(f, "DTLS: {e}"),
            E::DataChannel(e) => write!(f, "data channel: {e}"),
            E::DataChannelsDown => f.write_str("data channels are not up yet"),
            E::NoDataChannel(label) => write!(f, "no data channel labelled {label:?}"),
        }
    }
}

impl std::error::Error for CommandError {}
