//! The edge between the control protocol and the engine: a prost [`pb::Command`] becomes a
//! typed [`Command`], and the engine's [`Reply`] or
//! [`CommandError`](crate::engine::CommandError) becomes the answering [`pb::Event`] with
//! the command's request id.
//!
//! Everything that can be checked without an engine is checked here: addresses are parsed,
//! SRTP keys made into contexts, fingerprints parsed, ICE credentials and layer indices
//! checked. A command refused here is answered the same way as one the engine refuses: one
//! `Error` event with the request id. So every command still gets exactly one answer.

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use prism_proto::control as pb;

use crate::codec::Codec;
use crate::dtls::{DtlsRole, Fingerprint, FingerprintError};
use crate::engine::hdrext::ExtIds;
use crate::engine::{
    AddDownTrack, AddTrack, Command, Engine, LayerSpec, PlainTransport, RelayIds, Reply,
    RestartIce, WebRtcParams,
};
use crate::ids::{DownTrackId, Mid, Rid, RoomId, ShortId, Ssrc, TrackId, TransportId};
use crate::srtp::{SrtpContext, SrtpError, SrtpKeys, SrtpPair, SrtpProfile};

/// Why a control message is not a valid command, before any engine looked at it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadCommand {
    NoBody,
    BadAddress(String),
    UnknownSrtpProfile(String),
    /// SRTP keys that do not fit the profile; `what` says which direction.
    SrtpKeys {
        what: &'static str,
        err: SrtpError,
    },
    BadFingerprint {
        value: String,
        err: FingerprintError,
    },
    /// Local ICE credentials missing, or a remote ufrag without its password.
    IceCredentials(&'static str),
    LayerOutOfRange(u32),
    BadMid(String),
    /// A header extension id outside 1..=255 (0: not negotiated).
    ExtensionIdOutOfRange {
        extension: &'static str,
        id: u32,
    },
    /// One header extension id given to two extensions.
    ExtensionIdTwice(u8),
}

impl fmt::Display for BadCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoBody => f.write_str("command without a body"),
            Self::BadAddress(a) => write!(f, "bad remote address {a:?}"),
            Self::UnknownSrtpProfile(p) => write!(f, "unknown SRTP profile {p:?}"),
            Self::SrtpKeys { what, err } => write!(f, "{what}: {err}"),
            Self::BadFingerprint { value, err } => {
                write!(f, "bad remote fingerprint {value:?}: {err}")
            }
            Self::IceCredentials(why) => f.write_str(why),
            Self::LayerOutOfRange(v) => write!(f, "layer index {v} out of range"),
            Self::BadMid(m) => write!(f, "mid {m:?} is not 1 to 16 printable characters"),
            Self::ExtensionIdOutOfRange { extension, id } => {
                write!(f, "{extension} extension id {id} is out of range")
            }
            Self::ExtensionIdTwice(id) => write!(f, "extension id {id} is given to two extensions"),
        }
    }
}

impl std::error::Error for BadCommand {}

impl Engine {
    /// Applies a control-protocol command and returns its answer: translated here, applied
    /// with [`Engine::apply`], the result translated back. `GetStats` reads the engine
    /// directly.
    ///
    /// This method lives at the control edge, not in `engine`, so that the engine itself
    /// handles only typed commands.
    pub fn handle_command(&mut self, now: Instant, cmd: pb::Command) -> pb::Event {
        let body = match cmd.body {
            None => error(BadCommand::NoBody),
            Some(pb::command::Body::GetStats(_)) => pb::event::Body::Stats(self.stats(now)),
            Some(b) => match command_of(b) {
                Err(e) => error(e),
                Ok(c) => match self.apply(now, c) {
                    Ok(r) => reply_of(r),
                    Err(e) => error(e),
                },
            },
        };
        pb::Event {
            request_id: cmd.request_id,
            body: Some(body),
        }
    }
}

fn error(e: impl fmt::Display) -> pb::event::Body {
    pb::event::Body::Error(pb::Error {
        message: e.to_string(),
    })
}

/// The event body answering a successful command.
pub fn reply_of(r: Reply) -> pb::event::Body {
    match r {
        Reply::RoomCreated {
            room,
            core,
            local,
            bound,
            tcp_local,
            fingerprint,
        } => pb::event::Body::RoomCreated(pb::RoomCreated {
            room_id: room.0,
            core,
            local: local.to_string(),
            bound: bound.to_string(),
            fingerprint,
            tcp_local: tcp_local.map(|a| a.to_string()).unwrap_or_default(),
        }),
        Reply::TransportCreated {
            transport,
            local,
            fingerprint,
        } => pb::event::Body::TransportCreated(pb::TransportCreated {
            transport_id: transport.0,
            local: local.to_string(),
            fingerprint,
        }),
        _ => pb::event::Body::Ok(pb::Ok {}),
    }
}

/// The typed command for a control-protocol command body. `GetStats` has none (the edge
/// answers it from [`Engine::stats`]) and is refused as having no body.
pub fn command_of(body: pb::command::Body) -> Result<Command, BadCommand> {
    use pb::command::Body as B;
    Ok(match body {
        B::CreateRoom(c) => Command::CreateRoom(RoomId(c.room_id)),
        B::CreatePlainTransport(c) => Command::CreatePlainTransport(PlainTransport {
            room: RoomId(c.room_id),
            transport: TransportId(c.transport_id),
            remote: match c.remote.as_str() {
                "" => None,
                s => Some(
                    s.parse::<SocketAddr>()
                        .map_err(|_| BadCommand::BadAddress(c.remote.clone()))?,
                ),
            },
            comedia: c.comedia,
            srtp: c.srtp.as_ref().map(srtp_pair).transpose()?.map(Box::new),
            relay: c.relay.as_ref().map(|r| RelayIds {
                local: Ssrc(r.local_rtcp_ssrc),
                peer: Ssrc(r.peer_rtcp_ssrc),
            }),
        }),
        B::CreateWebrtcTransport(c) => {
            let remote_fingerprint = Fingerprint::parse(&c.remote_fingerprint).map_err(|err| {
                BadCommand::BadFingerprint {
                    value: c.remote_fingerprint.clone(),
                    err,
                }
            })?;
            if c.local_ufrag.is_empty() || c.local_pwd.is_empty() {
                return Err(BadCommand::IceCredentials(
                    "local ICE credentials are required",
                ));
            }
            Command::CreateWebRtcTransport {
                room: RoomId(c.room_id),
                transport: TransportId(c.transport_id),
                params: WebRtcParams {
                    local_ufrag: c.local_ufrag,
                    local_pwd: c.local_pwd,
                    remote_ufrag: c.remote_ufrag,
                    remote_pwd: c.remote_pwd,
                    remote_fingerprint,
                    role: if c.dtls_client {
                        DtlsRole::Client
                    } else {
                        DtlsRole::Server
                    },
                },
            }
        }
        B::SetHeaderExtensions(c) => Command::SetHeaderExtensions {
            room: RoomId(c.room_id),
            transport: TransportId(c.transport_id),
            ids: ext_ids(&c.ids.unwrap_or_default())?,
            feedback: c.transport_cc_feedback,
        },
        B::AddTrack(c) => Command::AddTrack(add_track(c)),
        B::AddDownTrack(c) => Command::AddDownTrack(add_down_track(c)?),
        B::SetPreferredLayer(c) => Command::SetPreferredLayer {
            down_track: DownTrackId(c.down_track_id),
            spatial: layer_u8(c.spatial)?,
            temporal: layer_u8(c.temporal)?,
        },
        B::SetPaused(c) => Command::SetPaused {
            down_track: DownTrackId(c.down_track_id),
            paused: c.paused,
        },
        B::RemoveDownTrack(c) => Command::RemoveDownTrack(DownTrackId(c.down_track_id)),
        B::RemoveTrack(c) => Command::RemoveTrack(TrackId(c.track_id)),
        B::CloseTransport(c) => Command::CloseTransport(TransportId(c.transport_id)),
        B::CloseRoom(c) => Command::CloseRoom(RoomId(c.room_id)),
        B::GetStats(_) => return Err(BadCommand::NoBody),
        B::RestartIce(c) => {
            if c.local_ufrag.is_empty() || c.local_pwd.is_empty() {
                return Err(BadCommand::IceCredentials(
                    "local ICE credentials are required",
                ));
            }
            if c.remote_ufrag.is_empty() != c.remote_pwd.is_empty() {
                return Err(BadCommand::IceCredentials(
                    "remote ICE ufrag and password go together",
                ));
            }
            Command::RestartIce(RestartIce {
                room: RoomId(c.room_id),
                transport: TransportId(c.transport_id),
                local_ufrag: c.local_ufrag,
                local_pwd: c.local_pwd,
                remote_ufrag: c.remote_ufrag,
                remote_pwd: c.remote_pwd,
            })
        }
        B::SendData(c) => Command::SendData {
            transports: std::iter::once(c.transport_id)
                .chain(c.also_transport_ids)
                .map(TransportId)
                .collect(),
            label: c.label,
            binary: c.binary,
            data: c.data,
        },
    })
}

fn add_track(c: pb::AddTrack) -> AddTrack {
    let codec = c.codec.unwrap_or_default();
    AddTrack {
        room: RoomId(c.room_id),
        transport: TransportId(c.transport_id),
        track: TrackId(c.track_id),
        video: c.kind == pb::MediaKind::Video as i32,
        codec: match pb::CodecKind::try_from(codec.kind).unwrap_or_default() {
            pb::CodecKind::Opus => Codec::Opus,
            pb::CodecKind::Vp8 => Codec::Vp8,
            pb::CodecKind::Vp9 => Codec::Vp9,
            pb::CodecKind::H264 => Codec::H264,
            pb::CodecKind::Av1 => Codec::Av1,
            pb::CodecKind::CodecUnspecified => Codec::Other,
        },
        payload_type: codec.payload_type,
        clock_rate: codec.clock_rate,
        layers: c
            .layers
            .iter()
            .map(|l| LayerSpec {
                spatial: l.spatial,
                ssrc: Ssrc(l.ssrc),
                rid: ShortId::new(l.rid.as_bytes()).map(Rid),
                has_rid: !l.rid.is_empty(),
                rtx_ssrc: Ssrc(l.rtx_ssrc),
            })
            .collect(),
        nack: c.nack.unwrap_or(true),
        mid: ShortId::new(c.mid.as_bytes()).map(Mid),
        mid_ext: c.mid_ext_id,
        rid_ext: c.rid_ext_id,
        rtx_payload_type: c.rtx_payload_type,
        repaired_rid_ext: c.repaired_rid_ext_id,
    }
}

fn add_down_track(c: pb::AddDownTrack) -> Result<AddDownTrack, BadCommand> {
    Ok(AddDownTrack {
        room: RoomId(c.room_id),
        track: TrackId(c.track_id),
        down_track: DownTrackId(c.down_track_id),
        transport: TransportId(c.transport_id),
        ssrc: Ssrc(c.ssrc),
        payload_type: c.payload_type,
        preferred_spatial: layer_u8(c.preferred_spatial)?,
        preferred_temporal: match c.preferred_temporal {
            None => u8::MAX,
            Some(t) => layer_u8(t)?,
        },
        rtx_ssrc: c.rtx_ssrc,
        rtx_payload_type: c.rtx_payload_type,
        mid: match c.mid.as_str() {
            "" => None,
            m => Some(Mid(
                ShortId::new(m.as_bytes()).ok_or_else(|| BadCommand::BadMid(c.mid.clone()))?
            )),
        },
        ext: c.header_extensions.as_ref().map(ext_ids).transpose()?,
        pinned: c.pinned,
    })
}

/// A transport's or section's header extension ids; an id outside 1..=255, or one given
/// to two extensions, is refused.
fn ext_ids(p: &pb::RtpHeaderExtensions) -> Result<ExtIds, BadCommand> {
    let id = |id: u32, extension| {
        u8::try_from(id).map_err(|_| BadCommand::ExtensionIdOutOfRange { extension, id })
    };
    let ids = ExtIds {
        mid: id(p.mid, "mid")?,
        rid: id(p.rid, "rid")?,
        repaired_rid: id(p.repaired_rid, "repaired-rid")?,
        abs_send_time: id(p.abs_send_time, "abs-send-time")?,
        transport_cc: id(p.transport_cc, "transport-cc")?,
        audio_level: id(p.audio_level, "audio-level")?,
    };
    let list = [
        ids.mid,
        ids.rid,
        ids.repaired_rid,
        ids.abs_send_time,
        ids.transport_cc,
        ids.audio_level,
    ];
    for (i, a) in list.iter().enumerate() {
        if *a != 0 && list[i + 1..].contains(a) {
            return Err(BadCommand::ExtensionIdTwice(*a));
        }
    }
    Ok(ids)
}

/// SRTP contexts from keys given by control.
fn srtp_pair(p: &pb::SrtpParams) -> Result<SrtpPair, BadCommand> {
    // RFC 4568 names, and the DTLS-SRTP (OpenSSL) names.
    let profile = match p.profile.as_str() {
        "AEAD_AES_128_GCM" | "SRTP_AEAD_AES_128_GCM" => SrtpProfile::AeadAes128Gcm,
        "AES_CM_128_HMAC_SHA1_80" | "SRTP_AES128_CM_SHA1_80" => SrtpProfile::AesCm128HmacSha1_80,
        "AES_CM_128_HMAC_SHA1_32" | "SRTP_AES128_CM_SHA1_32" => SrtpProfile::AesCm128HmacSha1_32,
        other => return Err(BadCommand::UnknownSrtpProfile(other.to_string())),
    };
    let keys = |what, err| BadCommand::SrtpKeys { what, err };
    let send =
        SrtpKeys::new(profile, &p.send_key, &p.send_salt).map_err(|e| keys("send key", e))?;
    let recv =
        SrtpKeys::new(profile, &p.recv_key, &p.recv_salt).map_err(|e| keys("receive key", e))?;
    Ok(SrtpPair {
        outbound: SrtpContext::new(profile, &send).map_err(|e| keys("send context", e))?,
        inbound: SrtpContext::new(profile, &recv).map_err(|e| keys("receive context", e))?,
    })
}

fn layer_u8(v: u32) -> Result<u8, BadCommand> {
    u8::try_from(v).map_err(|_| BadCommand::LayerOutOfRange(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;

    fn engine() -> Engine {
        Engine::new(
            0,
            "127.0.0.1:5000".parse().unwrap(),
            EngineConfig::default(),
        )
    }

    #[test]
    fn bad_input_is_refused_at_the_edge() {
        let bad_remote = pb::command::Body::CreatePlainTransport(pb::CreatePlainTransport {
            remote: "not an address".into(),
            ..Default::default()
        });
        assert!(matches!(
            command_of(bad_remote),
            Err(BadCommand::BadAddress(_))
        ));
        let bad_layer = pb::command::Body::SetPreferredLayer(pb::SetPreferredLayer {
            spatial: 256,
            ..Default::default()
        });
        assert_eq!(
            command_of(bad_layer).unwrap_err(),
            BadCommand::LayerOutOfRange(256)
        );
    }

    #[test]
    fn duplicate_or_out_of_range_extension_ids_are_refused() {
        let p = pb::RtpHeaderExtensions {
            mid: 3,
            transport_cc: 3,
            ..Default::default()
        };
        assert_eq!(ext_ids(&p), Err(BadCommand::ExtensionIdTwice(3)));
        let p = pb::RtpHeaderExtensions {
            mid: 300,
            ..Default::default()
        };
        assert!(matches!(
            ext_ids(&p),
            Err(BadCommand::ExtensionIdOutOfRange { id: 300, .. })
        ));
    }

    #[test]
    fn every_command_gets_one_answer_with_its_request_id() {
        let mut e = engine();
        let now = Instant::now();
        let ask = |e: &mut Engine, request_id, body| {
            e.handle_command(now, pb::Command { request_id, body })
        };
        let ev = ask(&mut e, 7, None);
        assert_eq!(ev.request_id, 7);
        assert!(matches!(ev.body, Some(pb::event::Body::Error(_))));
        let close = pb::command::Body::CloseRoom(pb::CloseRoom { room_id: 9 });
        let ev = ask(&mut e, 8, Some(close));
        assert_eq!(ev.request_id, 8);
        let Some(pb::event::Body::Error(err)) = ev.body else {
            panic!("{ev:?}");
        };
        assert_eq!(err.message, "no room 9 on core 0");
        let stats = pb::command::Body::GetStats(pb::GetStats {});
        let ev = ask(&mut e, 9, Some(stats));
        assert!(matches!(ev.body, Some(pb::event::Body::Stats(_))));
    }
}
