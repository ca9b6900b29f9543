//! WHIP publishers and WHEP viewers as participants of the room.
//!
//! A WHIP publisher (OBS, GStreamer's `whipclientsink`, aiortc) is a participant of kind
//! `INGRESS` whose tracks are what its offer sends: LiveKit SDKs see it join and subscribe
//! to its tracks like anyone else's. A WHEP viewer is a participant of kind `EGRESS` that
//! receives what was published when it arrived (in the room, or of one participant, or
//! one track): its transport is answered once, so it never renegotiates, and a track that
//! goes away leaves its section silent. Both end with a `DELETE` of their resource, with
//! RoomService's RemoveParticipant, or when their transport dies.
//!
//! Each is decide-then-apply like the LiveKit paths: the answer and the commands are
//! decided from the offer first; nothing reaches the media plane if the offer is refused.

use std::collections::HashMap;

use pb::command::Body as Cmd;
use prism_proto::control as pb;
use prism_proto::livekit as lk;

use super::error::RtcError;
use super::ids::{DownTrackId, Identity, MediaTrackId, ParticipantSid, TrackSid, TransportId};
use super::membership::permission_of;
use super::participant::{Link, Participant, PubPc, PubTrack, SubPc, SubSection, SubTrack};
use super::room::{new_sid, now_ms, Pending, Room};
use crate::auth::Claims;
use crate::media::{
    add_track_for, extension_ids, header_extensions, mime_type, random_alnum, random_ice_string,
    random_u32, remote_transport, sdp_codec,
};
use crate::sdp::{AnswerBuilder, AnswerTrack, MediaKind, ServerParams, SessionOffer};

/// What a successful WHIP or WHEP POST returns.
#[derive(Debug)]
pub struct Created {
    pub answer: String,
    /// The resource id, last segment of the `Location`.
    pub resource: String,
}

/// Which published tracks a WHEP viewer asks for (query parameters of the POST).
#[derive(Clone, Debug, Default)]
pub struct ViewFilter {
    /// Only this participant's tracks (by identity).
    pub participant: Option<String>,
    /// Only this track (by sid).
    pub track: Option<String>,
}

/// A participant that arrived over HTTP, before it is admitted.
fn http_participant(
    claims: &Claims,
    kind: lk::participant_info::Kind,
    resource: &str,
) -> Result<Participant, RtcError> {
    let grant = claims.grant()?;
    Ok(Participant {
        sid: ParticipantSid::new(new_sid("PA_")),
        identity: Identity::new(claims.identity()),
        name: claims.name.clone(),
        metadata: claims.metadata.clone(),
        attributes: claims.attributes.clone(),
        kind,
        joined_at_ms: now_ms(),
        version: 1,
        state: lk::participant_info::State::Joined,
        permission: permission_of(grant),
        client_protocol: 0,
        auto_subscribe: false,
        tracks: Vec::new(),
        allowed: None,
        wanted: Vec::new(),
        speaking: HashMap::new(),
        pending: Vec::new(),
        publisher: None,
        site: 0,
        subscriber: SubPc::new(),
        link: Link::Http {
            resource: resource.to_owned(),
        },
    })
}

/// A resource id for a `Location`.
fn resource_id() -> String {
    random_alnum(16)
}

impl Room {
    fn server_params(&self, ufrag: &str, pwd: &str) -> Result<ServerParams, RtcError> {
        let (addr, sha) = self
            .core
            .ok_or_else(|| RtcError::MediaPlane("the room has no core yet".into()))?;
        let candidates = super::node::candidates(&self.candidate_ips, addr);
        let mut params = ServerParams::new(ufrag, pwd, sha, candidates);
        params.tcp_candidates = self
            .tcp_candidate
            .map(|t| super::node::candidates(&self.candidate_ips, t))
            .unwrap_or_default();
        params.session_id = u64::from(random_u32());
        Ok(params)
    }

    /// `POST /whip/{room}`: the offer's audio and video become the tracks of a new
    /// participant of kind `INGRESS`.
    pub fn whip_publish(&mut self, claims: &Claims, sdp: &str) -> Result<Created, RtcError> {
        let offer = SessionOffer::parse(sdp)?;
        offer.validate()?;
        let remote = remote_transport(&offer)?;
        let (ufrag, pwd) = (random_ice_string(8), random_ice_string(24));
        let params = self.server_params(&ufrag, &pwd)?;
        let (answer, choices) = AnswerBuilder::new(&offer, &params).build_with_choices()?;
        let transport_id = TransportId::fresh();
        let room_id = self.id.0;
        let resource = resource_id();
        let mut p = http_participant(claims, lk::participant_info::Kind::Ingress, &resource)?;
        let mut adds = Vec::new();
        let mut mids = HashMap::new();
        for (section, choice) in offer.media.iter().zip(&choices) {
            let track_id = MediaTrackId::fresh();
            let Some(cmd) = add_track_for(section, choice, room_id, transport_id.0, track_id.0)?
            else {
                continue;
            };
            let Some(codec) = choice.codec.clone() else {
                continue;
            };
            let video = section.kind == MediaKind::Video;
            let sid = TrackSid::new(format!(
                "TR_{}{}",
                if video { "VC" } else { "AM" },
                random_alnum(12)
            ));
            let mime = mime_type(section.kind, &codec);
            let info = lk::TrackInfo {
                sid: sid.to_string(),
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
                mid: section.mid.clone(),
                codecs: vec![lk::SimulcastCodecInfo {
                    mime_type: mime,
                    mid: section.mid.clone(),
                    ..Default::default()
                }],
                ..Default::default()
            };
            mids.insert(section.mid.clone(), sid.clone());
            p.tracks.push(PubTrack {
                info,
                track_id,
                kind: section.kind,
                codec,
                told_subscribed: false,
                add: Some(Box::new(cmd.clone())),
            });
            adds.push((cmd, sid.clone()));
        }
        if p.tracks.is_empty() {
            return Err(RtcError::BadDescription(
                "the offer sends no audio or video Prism can forward".into(),
            ));
        }
        p.publisher = Some(PubPc {
            transport_id,
            ufrag: ufrag.clone(),
            pwd: pwd.clone(),
            remote_ufrag: remote.ufrag.clone(),
            session_id: params.session_id,
            version: 1,
            mids,
        });
        let pid = p.sid.clone();
        let tracks: Vec<TrackSid> = p.tracks.iter().map(PubTrack::sid).collect();
        self.admit(p)?;
        self.command_tracked(
            Cmd::CreateWebrtcTransport(remote.create(room_id, transport_id.0, &ufrag, &pwd)),
            Pending::Transport(pid.clone()),
        )?;
        self.command(Cmd::SetHeaderExtensions(header_extensions(
            room_id,
            transport_id.0,
            &choices,
        )));
        for (cmd, sid) in adds {
            self.command_tracked(Cmd::AddTrack(cmd), Pending::Track(pid.clone(), sid))?;
        }
        tracing::info!(room = %self.name, participant = %pid, tracks = tracks.len(), "WHIP publisher");
        for t in &tracks {
            self.subscribe_everyone(t);
        }
        self.auto_egress_published(&pid, &tracks);
        Ok(Created { answer, resource })
    }

    /// The tracks a WHEP viewer gets: each receiving section of its offer takes the next
    /// published track of its kind that the filter lets through.
    fn viewable(&self, filter: &ViewFilter) -> Result<Vec<(ParticipantSid, &PubTrack)>, RtcError> {
        if let Some(who) = &filter.participant {
            if self.by_identity(who).is_none() {
                return Err(RtcError::ParticipantNotFound);
            }
        }
        let tracks: Vec<(ParticipantSid, &PubTrack)> = self
            .participants
            .iter()
            .filter(|p| {
                filter
                    .participant
                    .as_ref()
                    .is_none_or(|w| p.identity == *w.as_str())
            })
            .flat_map(|p| p.tracks.iter().map(move |t| (p.sid.clone(), t)))
            .filter(|(_, t)| filter.track.as_ref().is_none_or(|s| t.info.sid == *s))
            .collect();
        if tracks.is_empty() {
            return Err(match (&filter.track, &filter.participant) {
                (Some(_), _) => RtcError::TrackNotFound,
                (None, Some(who)) => RtcError::NothingPublished(format!("by {who:?}")),
                (None, None) => {
                    RtcError::NothingPublished(format!("room {:?}", self.name.as_str()))
                }
            });
        }
        Ok(tracks)
    }

    /// `POST /whep/{room}`: a participant of kind `EGRESS` receiving what is published.
    pub fn whep_view(
        &mut self,
        claims: &Claims,
        sdp: &str,
        filter: &ViewFilter,
    ) -> Result<Created, RtcError> {
        let offer = SessionOffer::parse(sdp)?;
        offer.validate()?;
        let remote = remote_transport(&offer)?;
        let (ufrag, pwd) = (random_ice_string(8), random_ice_string(24));
        let params = self.server_params(&ufrag, &pwd)?;
        let tracks = self.viewable(filter)?;
        let mut builder = AnswerBuilder::new(&offer, &params);
        let mut used: Vec<MediaTrackId> = Vec::new();
        let mut planned: Vec<(String, MediaKind, SubTrack)> = Vec::new();
        for section in &offer.media {
            if section.is_rejected() || !section.direction.receives() {
                continue;
            }
            let Some((publisher, t)) = tracks
                .iter()
                .find(|(_, t)| t.kind == section.kind && !used.contains(&t.track_id))
            else {
                continue;
            };
            used.push(t.track_id);
            let ssrc = random_u32();
            let rtx_ssrc = loop {
                let r = random_u32();
                if r != ssrc {
                    break r;
                }
            };
            let codec = sdp_codec(&t.codec.name).ok_or_else(|| {
                RtcError::MediaPlane(format!("published codec {} has no SDP form", t.codec.name))
            })?;
            builder = builder.send(
                &section.mid,
                AnswerTrack {
                    ssrc,
                    rtx_ssrc: Some(rtx_ssrc),
                    cname: publisher.to_string(),
                    stream_id: format!("{publisher}|{}", t.info.sid),
                    track_id: t.info.sid.clone(),
                    codec,
                },
            );
            planned.push((
                section.mid.clone(),
                section.kind,
                SubTrack {
                    track_sid: t.sid(),
                    publisher_sid: publisher.clone(),
                    track_id: t.track_id,
                    ssrc,
                    rtx_ssrc: Some(rtx_ssrc),
                    codec: t.codec.clone(),
                    down_track_id: None,
                    spatial: 2,
                    paused: false,
                },
            ));
        }
        if planned.is_empty() {
            return Err(RtcError::NoReceivingSection);
        }
        let (answer, choices) = builder.build_with_choices()?;
        let room_id = self.id.0;
        let transport_id = TransportId::fresh();
        let resource = resource_id();
        let mut p = http_participant(claims, lk::participant_info::Kind::Egress, &resource)?;
        let mut commands = vec![Cmd::SetHeaderExtensions(header_extensions(
            room_id,
            transport_id.0,
            &choices,
        ))];
        for (mid, kind, mut st) in planned {
            let Some(choice) = choices.iter().find(|c| c.mid == mid) else {
                continue;
            };
            // A track published on another node is viewed from its copy here.
            match self.track_on_site(&st.track_sid, 0) {
                Some(id) => st.track_id = id,
                None => continue,
            }
            let Some(codec) = &choice.codec else {
                continue;
            };
            let dt = DownTrackId::fresh();
            commands.push(Cmd::AddDownTrack(pb::AddDownTrack {
                room_id,
                track_id: st.track_id.0,
                down_track_id: dt.0,
                transport_id: transport_id.0,
                ssrc: st.ssrc,
                payload_type: u32::from(codec.pt),
                preferred_spatial: 2,
                preferred_temporal: None,
                // RTX where the viewer offered it for the codec sent (the answer then
                // announces the RTX SSRC in an FID group).
                rtx_ssrc: choice.rtx_pt.and(st.rtx_ssrc).unwrap_or(0),
                rtx_payload_type: choice.rtx_pt.map_or(0, u32::from),
                mid: mid.clone(),
                // Only what this section negotiated (aiortc gives audio no abs-send-time).
                header_extensions: Some(extension_ids(choice.extmaps.iter())),
                pinned: false,
            }));
            st.down_track_id = Some(dt);
            p.subscriber.sections.push(SubSection {
                mid,
                kind,
                track: Some(st),
                reusable: false,
            });
        }
        p.subscriber.ufrag = ufrag.clone();
        p.subscriber.pwd = pwd.clone();
        p.subscriber.transport_id = Some(transport_id);
        let pid = p.sid.clone();
        let by_id: Vec<(u64, TrackSid)> = p
            .subscriber
            .sections
            .iter()
            .filter_map(|s| {
                s.track
                    .as_ref()
                    .map(|t| (t.track_id.0, t.track_sid.clone()))
            })
            .collect();
        let subscribed: Vec<TrackSid> = by_id.iter().map(|(_, s)| s.clone()).collect();
        self.admit(p)?;
        self.command_tracked(
            Cmd::CreateWebrtcTransport(remote.create(room_id, transport_id.0, &ufrag, &pwd)),
            Pending::Transport(pid.clone()),
        )?;
        for cmd in commands {
            match &cmd {
                Cmd::AddDownTrack(a) => {
                    let track = by_id
                        .iter()
                        .find(|(id, _)| *id == a.track_id)
                        .map(|(_, s)| s.clone())
                        .unwrap_or_default();
                    self.command_tracked(cmd, Pending::DownTrack(pid.clone(), track))?;
                }
                _ => self.command(cmd),
            }
        }
        tracing::info!(room = %self.name, participant = %pid, tracks = subscribed.len(), "WHEP viewer");
        for t in &subscribed {
            // A track published on another node: its layers are relayed here now.
            self.refresh_copy(t, 0);
            self.tell_subscribed(t);
        }
        Ok(Created { answer, resource })
    }

    /// `DELETE /whip|whep/{room}/{resource}`: the participant leaves.
    pub fn http_end(&mut self, resource: &str) -> Result<(), RtcError> {
        let pid = self
            .participants
            .iter()
            .find(|p| p.resource() == Some(resource))
            .map(|p| p.sid.clone())
            .ok_or(RtcError::SessionNotFound)?;
        self.remove_participant(&pid, lk::DisconnectReason::ClientInitiated, None);
        Ok(())
    }
}
