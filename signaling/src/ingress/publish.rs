//! An RTMP ingress session as a participant of its room: kind `INGRESS`, one plain RTP
//! transport on the room's core (comedia: the forwarder learns our loopback address from
//! the first packet), an H.264 video track and an Opus audio track, each one layer with an
//! SSRC chosen here. Like a WHIP publisher, it is not a LiveKit session (no signal link:
//! it ends when the RTMP connection does, or by RoomService's RemoveParticipant), and
//! everyone with auto-subscribe gets its tracks.

use std::collections::HashMap;
use std::net::SocketAddr;

use pb::command::Body as Cmd;
use prism_proto::control as pb;
use prism_proto::livekit as lk;

use crate::media::random_alnum;
use crate::rtc::ids::{Identity, MediaTrackId, ParticipantSid, TrackSid, TransportId};
use crate::rtc::participant::{Link, Participant, PubPc, PubTrack, SubPc};
use crate::rtc::room::{new_sid, now_ms, Pending, Room};
use crate::rtc::RtcError;
use crate::sdp::{CodecParams, MediaKind};

/// The payload types of the RTP sent to the forwarder (its own choice; subscribers get
/// theirs from their negotiation).
pub const H264_PT: u8 = 102;
pub const OPUS_PT: u8 = 111;

/// What an RTMP session publishes.
#[derive(Clone, Debug)]
pub struct RtmpPublish {
    pub identity: String,
    pub name: String,
    pub metadata: String,
    /// Identifies the participant for [`Room::http_end`].
    pub resource: String,
    /// H.264 video with this `profile-level-id`.
    pub video: Option<String>,
    pub audio: bool,
    pub video_ssrc: u32,
    pub audio_ssrc: u32,
}

/// Where to send the RTP, and the published tracks.
#[derive(Clone, Debug)]
pub struct RtmpPublished {
    pub core: SocketAddr,
    pub participant_sid: String,
    pub tracks: Vec<lk::TrackInfo>,
}

fn track(kind: MediaKind, codec: CodecParams, ssrc: u32) -> (PubTrack, pb::Layer) {
    let video = kind == MediaKind::Video;
    let sid = format!("TR_{}{}", if video { "VC" } else { "AM" }, random_alnum(12));
    let mime = crate::media::mime_type(kind, &codec);
    let info = lk::TrackInfo {
        sid,
        r#type: if video {
            lk::TrackType::Video as i32
        } else {
            lk::TrackType::Audio as i32
        },
        name: if video { "video" } else { "audio" }.into(),
        source: if video {
            lk::TrackSource::Camera as i32
        } else {
            lk::TrackSource::Microphone as i32
        },
        mime_type: mime.clone(),
        codecs: vec![lk::SimulcastCodecInfo {
            mime_type: mime,
            ..Default::default()
        }],
        ..Default::default()
    };
    let layer = pb::Layer {
        ssrc,
        rid: String::new(),
        spatial: 0,
        rtx_ssrc: 0,
    };
    (
        PubTrack {
            info,
            track_id: MediaTrackId::fresh(),
            kind,
            codec,
            told_subscribed: false,
            add: None,
        },
        layer,
    )
}

impl Room {
    /// Admits an RTMP session as a participant of kind `INGRESS` publishing over a plain
    /// transport; answers where its RTP goes.
    pub fn rtmp_publish(&mut self, spec: &RtmpPublish) -> Result<RtmpPublished, RtcError> {
        let core = self
            .core_on_host
            .ok_or_else(|| RtcError::MediaPlane("the room has no core yet".into()))?;
        let transport_id = TransportId::fresh();
        let mut tracks = Vec::new();
        if let Some(profile) = &spec.video {
            tracks.push(track(
                MediaKind::Video,
                CodecParams {
                    pt: H264_PT,
                    name: "H264".into(),
                    clock_rate: 90_000,
                    channels: None,
                    fmtp: format!(
                        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile}"
                    ),
                    rtcp_fb: vec!["nack".into(), "nack pli".into()],
                },
                spec.video_ssrc,
            ));
        }
        if spec.audio {
            tracks.push(track(
                MediaKind::Audio,
                CodecParams {
                    pt: OPUS_PT,
                    name: "opus".into(),
                    clock_rate: 48_000,
                    channels: Some(2),
                    fmtp: "minptime=10;useinbandfec=1".into(),
                    rtcp_fb: Vec::new(),
                },
                spec.audio_ssrc,
            ));
        }
        if tracks.is_empty() {
            return Err(RtcError::Invalid(
                "the stream has neither video nor audio".into(),
            ));
        }
        let p = Participant {
            sid: ParticipantSid::new(new_sid("PA_")),
            identity: Identity::new(&spec.identity),
            name: spec.name.clone(),
            metadata: spec.metadata.clone(),
            attributes: HashMap::new(),
            kind: lk::participant_info::Kind::Ingress,
            joined_at_ms: now_ms(),
            version: 1,
            // No transport handshake to wait for: media flows as soon as it is admitted.
            state: lk::participant_info::State::Active,
            permission: lk::ParticipantPermission {
                can_publish: true,
                can_subscribe: false,
                can_publish_data: false,
                ..Default::default()
            },
            client_protocol: 0,
            auto_subscribe: false,
            tracks: tracks.iter().map(|(t, _)| t.clone()).collect(),
            allowed: None,
            wanted: Vec::new(),
            speaking: HashMap::new(),
            pending: Vec::new(),
            publisher: Some(PubPc {
                transport_id,
                ufrag: String::new(),
                pwd: String::new(),
                remote_ufrag: String::new(),
                session_id: 0,
                version: 1,
                mids: HashMap::new(),
            }),
            site: 0,
            subscriber: SubPc::new(),
            link: Link::Http {
                resource: spec.resource.clone(),
            },
        };
        let pid = p.sid.clone();
        let room_id = self.id.0;
        self.admit(p)?;
        self.command_tracked(
            Cmd::CreatePlainTransport(pb::CreatePlainTransport {
                room_id,
                transport_id: transport_id.0,
                remote: String::new(),
                comedia: true,
                srtp: None,
                relay: None,
            }),
            Pending::Transport(pid.clone()),
        )?;
        for (t, layer) in &tracks {
            let video = t.kind == MediaKind::Video;
            let add = pb::AddTrack {
                room_id,
                transport_id: transport_id.0,
                track_id: t.track_id.0,
                kind: if video {
                    pb::MediaKind::Video as i32
                } else {
                    pb::MediaKind::Audio as i32
                },
                codec: Some(pb::Codec {
                    kind: if video {
                        pb::CodecKind::H264 as i32
                    } else {
                        pb::CodecKind::Opus as i32
                    },
                    payload_type: u32::from(t.codec.pt),
                    clock_rate: t.codec.clock_rate,
                }),
                layers: vec![layer.clone()],
                // Nobody could answer a NACK: RTMP is reliable up to here, and loopback
                // loses nothing.
                nack: Some(false),
                ..Default::default()
            };
            // Subscribers on other nodes get it relayed from a copy of this command.
            if let Some(pt) = self
                .participant_mut(&pid)
                .and_then(|p| p.tracks.iter_mut().find(|x| x.track_id == t.track_id))
            {
                pt.add = Some(Box::new(add.clone()));
            }
            self.command_tracked(Cmd::AddTrack(add), Pending::Track(pid.clone(), t.sid()))?;
        }
        tracing::info!(room = %self.name, participant = %pid, identity = %spec.identity, tracks = tracks.len(), "RTMP ingress publishing");
        let infos: Vec<lk::TrackInfo> = tracks.iter().map(|(t, _)| t.info.clone()).collect();
        let sids: Vec<TrackSid> = tracks.iter().map(|(t, _)| t.sid()).collect();
        for sid in &sids {
            self.subscribe_everyone(sid);
        }
        // A room that records itself records the stream too (what Prism can record).
        self.auto_egress_published(&pid, &sids);
        Ok(RtmpPublished {
            core,
            participant_sid: pid.to_string(),
            tracks: infos,
        })
    }
}
