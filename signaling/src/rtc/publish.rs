//! Publishing: `add_track`, the publisher transport's offers, ICE restarts, mute and
//! unpublish.
//!
//! Negotiation is decide-then-apply. [`decide_offer`] takes what the room knows of the
//! participant's publisher transport and the offer, and returns the answer with every
//! media-plane command it implies and the tracks it publishes or unpublishes; it touches
//! nothing, so unit tests drive it without a forwarder. [`Room::on_publisher_offer`]
//! applies the decision: commands go out (without waiting), then the answer.

use std::collections::HashMap;
use std::net::SocketAddr;

use pb::command::Body as Cmd;
use prism_proto::control as pb;
use prism_proto::livekit as lk;

use lk::signal_response::Message as Resp;

use super::error::RtcError;
use super::ids::{MediaRoomId, MediaTrackId, ParticipantSid, TrackSid, TransportId};
use super::participant::{PendingTrack, PubPc, PubTrack};
use super::room::{Pending, Room};
use crate::media::{
    add_track_for, header_extensions, mime_type, random_alnum, random_ice_string, random_u32,
    remote_transport,
};
use crate::sdp::{AnswerBuilder, MediaKind, ServerParams, SessionOffer};

/// What the room knows when a publisher offer arrives.
#[derive(Debug)]
pub struct OfferInput<'a> {
    pub room_id: MediaRoomId,
    /// The room core's address and certificate fingerprint.
    pub core: (SocketAddr, [u8; 32]),
    /// The addresses clients are given for media (empty: the core's).
    pub candidate_ips: &'a [std::net::IpAddr],
    /// The core's passive ICE-TCP candidate, if it has one.
    pub tcp: Option<SocketAddr>,
    /// The publisher transport, if an earlier offer created it.
    pub pc: Option<&'a PubPc>,
    pub pending: &'a [PendingTrack],
    pub can_publish: bool,
}

/// A track the offer publishes.
#[derive(Debug)]
pub struct Publish {
    pub track: PubTrack,
    /// The `add_track` request it fulfils.
    pub pending_sid: TrackSid,
    pub mid: String,
}

/// What an offer decides.
#[derive(Debug)]
pub struct OfferDecision {
    pub answer: String,
    /// The publisher transport after the offer (new, or with a version bump, new ICE
    /// credentials after a restart, sections published or unpublished).
    pub pc: PubPc,
    /// Whether `pc` is new: its creation is the first command.
    pub created: bool,
    /// Media-plane commands, in the order to send them.
    pub commands: Vec<Cmd>,
    pub published: Vec<Publish>,
    pub unpublished: Vec<TrackSid>,
}

/// Decides the answer to a publisher offer and what it changes.
pub fn decide_offer(
    input: &OfferInput<'_>,
    offer: &SessionOffer,
) -> Result<OfferDecision, RtcError> {
    offer.validate()?;
    let remote = remote_transport(offer)?;
    let room_id = input.room_id.0;
    let mut commands = Vec::new();
    let (mut pc, created) = match input.pc {
        None => {
            let pc = PubPc {
                transport_id: TransportId::fresh(),
                ufrag: random_ice_string(8),
                pwd: random_ice_string(24),
                remote_ufrag: remote.ufrag.clone(),
                session_id: u64::from(random_u32()),
                version: 0,
                mids: HashMap::new(),
            };
            commands.push(Cmd::CreateWebrtcTransport(remote.create(
                room_id,
                pc.transport_id.0,
                &pc.ufrag,
                &pc.pwd,
            )));
            (pc, true)
        }
        Some(old) => {
            let mut pc = PubPc {
                transport_id: old.transport_id,
                ufrag: old.ufrag.clone(),
                pwd: old.pwd.clone(),
                remote_ufrag: old.remote_ufrag.clone(),
                session_id: old.session_id,
                version: old.version,
                mids: old.mids.clone(),
            };
            // New ICE credentials from the client are an ICE restart (it lost its path, or
            // moved networks): new credentials of ours too, DTLS and SRTP kept (RFC 8445
            // §9).
            if pc.remote_ufrag != remote.ufrag {
                pc.ufrag = random_ice_string(8);
                pc.pwd = random_ice_string(24);
                pc.remote_ufrag = remote.ufrag.clone();
                commands.push(Cmd::RestartIce(pb::RestartIce {
                    room_id,
                    transport_id: pc.transport_id.0,
                    local_ufrag: pc.ufrag.clone(),
                    local_pwd: pc.pwd.clone(),
                    remote_ufrag: remote.ufrag,
                    remote_pwd: remote.pwd,
                }));
            }
            (pc, false)
        }
    };
    pc.version += 1;
    let (addr, sha) = input.core;
    let candidates = super::node::candidates(input.candidate_ips, addr);
    let mut params = ServerParams::new(&pc.ufrag, &pc.pwd, sha, candidates);
    params.tcp_candidates = input
        .tcp
        .map(|t| super::node::candidates(input.candidate_ips, t))
        .unwrap_or_default();
    params.session_id = pc.session_id;
    params.session_version = pc.version;
    let (answer, choices) = AnswerBuilder::new(offer, &params).build_with_choices()?;
    let transport_id = pc.transport_id.0;
    // Before the tracks: their RID layers are learnt with these ids, and transport-cc
    // feedback starts with the first packet.
    commands.push(Cmd::SetHeaderExtensions(header_extensions(
        room_id,
        transport_id,
        &choices,
    )));

    // Sections that stopped sending: their tracks are unpublished.
    let mut unpublished = Vec::new();
    for (section, choice) in offer.media.iter().zip(&choices) {
        if let Some(sid) = pc.mids.get(&section.mid) {
            if section.is_rejected() || !choice.direction.receives() {
                unpublished.push(sid.clone());
            }
        }
    }
    pc.mids.retain(|_, sid| !unpublished.contains(sid));
    // New sending sections: each matched to a pending track.
    let mut pending: Vec<&PendingTrack> = input.pending.iter().collect();
    let mut published = Vec::new();
    for (section, choice) in offer.media.iter().zip(&choices) {
        if !input.can_publish
            || pc.mids.contains_key(&section.mid)
            || section.is_rejected()
            || !choice.direction.receives()
            || !matches!(section.kind, MediaKind::Audio | MediaKind::Video)
        {
            continue;
        }
        let want_kind = if section.kind == MediaKind::Video {
            lk::TrackType::Video as i32
        } else {
            lk::TrackType::Audio as i32
        };
        let msid_track = section
            .msid
            .as_ref()
            .and_then(|(_, t)| t.clone())
            .or_else(|| section.ssrcs.iter().find_map(|s| s.msid.clone()))
            .unwrap_or_default();
        let msid_track = msid_track.split_whitespace().last().unwrap_or_default();
        let pos = pending
            .iter()
            .position(|t| {
                t.req.r#type == want_kind
                    && (t.req.cid == msid_track
                        || t.req.simulcast_codecs.iter().any(|c| c.cid == msid_track))
            })
            .or_else(|| pending.iter().position(|t| t.req.r#type == want_kind));
        let Some(pos) = pos else {
            tracing::debug!(mid = %section.mid, "media without add_track; ignored");
            continue;
        };
        let track_id = MediaTrackId::fresh();
        let Some(cmd) = add_track_for(section, choice, room_id, transport_id, track_id.0)? else {
            continue;
        };
        let Some(codec) = choice.codec.clone() else {
            continue;
        };
        let p = pending.remove(pos);
        pc.mids.insert(section.mid.clone(), p.sid.clone());
        let mut info = pending_info(&p.sid, &p.req);
        info.mid = section.mid.clone();
        info.mime_type = mime_type(section.kind, &codec);
        for c in &mut info.codecs {
            c.mid = section.mid.clone();
            c.mime_type = info.mime_type.clone();
        }
        let add = Some(Box::new(cmd.clone()));
        commands.push(Cmd::AddTrack(cmd));
        published.push(Publish {
            track: PubTrack {
                info,
                track_id,
                kind: section.kind,
                codec,
                told_subscribed: false,
                add,
            },
            pending_sid: p.sid.clone(),
            mid: section.mid.clone(),
        });
    }
    Ok(OfferDecision {
        answer,
        pc,
        created,
        commands,
        published,
        unpublished,
    })
}

impl Room {
    pub(crate) fn on_add_track(&mut self, pid: &ParticipantSid, req: lk::AddTrackRequest) {
        let Some(p) = self.participant_mut(pid) else {
            return;
        };
        let kind_ok =
            req.r#type == lk::TrackType::Audio as i32 || req.r#type == lk::TrackType::Video as i32;
        let allowed = p.permission.can_publish
            && (p.permission.can_publish_sources.is_empty()
                || p.permission.can_publish_sources.contains(&req.source));
        if !allowed || !kind_ok {
            let reason = if kind_ok {
                lk::request_response::Reason::NotAllowed
            } else {
                lk::request_response::Reason::NotFound
            };
            tracing::info!(participant = %pid, source = source_name(req.source), "add_track refused");
            let _ = p.send(Resp::RequestResponse(lk::RequestResponse {
                request_id: 0,
                reason: reason as i32,
                message: if kind_ok {
                    "not allowed to publish this source".into()
                } else {
                    "only audio and video tracks can be published".into()
                },
                request: Some(lk::request_response::Request::AddTrack(req)),
            }));
            return;
        }
        // A repeated request for the same cid keeps its sid.
        let sid = p
            .pending
            .iter()
            .find(|t| t.req.cid == req.cid)
            .map(|t| t.sid.clone())
            .unwrap_or_else(|| track_sid(&req));
        p.pending.retain(|t| t.req.cid != req.cid);
        let info = pending_info(&sid, &req);
        p.pending.push(PendingTrack {
            req: req.clone(),
            sid,
        });
        let _ = p.send(Resp::TrackPublished(lk::TrackPublishedResponse {
            cid: req.cid,
            track: Some(info),
        }));
    }

    /// Answers a publisher offer (held by the caller until the room's core is known).
    pub(crate) fn on_publisher_offer(
        &mut self,
        pid: &ParticipantSid,
        sd: &lk::SessionDescription,
    ) -> Result<(), RtcError> {
        let offer = SessionOffer::parse(&sd.sdp)?;
        let site = self.site_of(pid);
        let core = self
            .site_core(site)
            .ok_or_else(|| RtcError::MediaPlane("the room has no core yet".into()))?;
        let (candidate_ips, tcp) = self.site_addresses(site);
        let p = self.participant(pid).ok_or(RtcError::ParticipantNotFound)?;
        let d = decide_offer(
            &OfferInput {
                room_id: self.site_room(site),
                core,
                candidate_ips: &candidate_ips,
                tcp,
                pc: p.publisher.as_ref(),
                pending: &p.pending,
                can_publish: p.permission.can_publish,
            },
            &offer,
        )?;
        self.apply_offer(pid, d, sd.id);
        Ok(())
    }

    fn apply_offer(&mut self, pid: &ParticipantSid, d: OfferDecision, offer_id: u32) {
        let restarted = self
            .participant(pid)
            .and_then(|p| p.publisher.as_ref())
            .is_some_and(|old| old.ufrag != d.pc.ufrag);
        if restarted {
            tracing::info!(participant = %pid, "ICE restart");
        }
        if d.created {
            tracing::debug!(participant = %pid, transport = %d.pc.transport_id, "publisher transport");
        }
        for cmd in d.commands {
            let then = match &cmd {
                Cmd::CreateWebrtcTransport(_) => Some(Pending::Transport(pid.clone())),
                Cmd::AddTrack(a) => d
                    .published
                    .iter()
                    .find(|p| p.track.track_id.0 == a.track_id)
                    .map(|p| Pending::Track(pid.clone(), p.track.sid())),
                _ => None,
            };
            match then {
                Some(then) => {
                    if let Err(e) = self.command_tracked(cmd, then) {
                        tracing::warn!(participant = %pid, error = %e, "media plane unreachable");
                    }
                }
                None => self.command(cmd),
            }
        }
        let Some(p) = self.participant_mut(pid) else {
            return;
        };
        p.publisher = Some(d.pc);
        let first_publish = p.tracks.is_empty() && !d.published.is_empty();
        let mut published = Vec::new();
        for pb in d.published {
            p.pending.retain(|t| t.sid != pb.pending_sid);
            published.push(pb.track.sid());
            p.tracks.push(pb.track);
        }
        let _ = p.send(Resp::Answer(lk::SessionDescription {
            r#type: "answer".into(),
            sdp: d.answer,
            id: offer_id,
            mid_to_track_id: HashMap::new(),
        }));
        for sid in &d.unpublished {
            self.unpublish(pid, sid);
        }
        if !published.is_empty() || !d.unpublished.is_empty() {
            self.announce(pid);
        }
        for t in &published {
            tracing::info!(participant = %pid, track = %t, "track published");
            self.subscribe_everyone(t);
        }
        self.auto_egress_published(pid, &published);
        if first_publish {
            if let Some(info) = self.participant(pid).map(super::Participant::info) {
                self.observer.publisher_started(&self.info(), &info);
            }
        }
    }

    /// Removes a published track: the media plane drops it and its down tracks, and every
    /// subscriber's section goes inactive.
    pub(crate) fn unpublish(&mut self, pid: &ParticipantSid, track_sid: &TrackSid) {
        let room_id = self.site_room(self.site_of(pid)).0;
        let Some(p) = self.participant_mut(pid) else {
            return;
        };
        let Some(pos) = p
            .tracks
            .iter()
            .position(|t| t.info.sid == track_sid.as_str())
        else {
            return;
        };
        let t = p.tracks.remove(pos);
        if let Some(pc) = p.publisher.as_mut() {
            pc.mids.retain(|_, s| s != track_sid);
        }
        self.command(Cmd::RemoveTrack(pb::RemoveTrack {
            room_id,
            track_id: t.track_id.0,
        }));
        self.drop_copies(track_sid);
        self.egress_tracks_gone(std::slice::from_ref(track_sid));
        let subs: Vec<ParticipantSid> = self.participants.iter().map(|q| q.sid.clone()).collect();
        for s in subs {
            // The media plane removes the down tracks with their track.
            self.unsubscribe(&s, track_sid, false);
        }
        for q in &mut self.participants {
            q.wanted.retain(|w| w != track_sid);
        }
        self.send_to(
            pid,
            Resp::TrackUnpublished(lk::TrackUnpublishedResponse {
                track_sid: track_sid.to_string(),
            }),
        );
    }

    /// Mutes or unmutes a participant's published track (its own request, or RoomService).
    /// Returns the track's new info.
    pub fn set_muted(
        &mut self,
        pid: &ParticipantSid,
        track_sid: &TrackSid,
        muted: bool,
    ) -> Option<lk::TrackInfo> {
        let p = self.participant_mut(pid)?;
        let info = match p
            .tracks
            .iter_mut()
            .find(|t| t.info.sid == track_sid.as_str())
        {
            Some(t) => {
                t.info.muted = muted;
                t.info.clone()
            }
            None => {
                // Muted before it was published: remember it in the pending request.
                let pt = p.pending.iter_mut().find(|t| &t.sid == track_sid)?;
                pt.req.muted = muted;
                return Some(pending_info(&pt.sid, &pt.req));
            }
        };
        self.announce(pid);
        Some(info)
    }
}

/// LiveKit's name of a track source, as grants list them.
fn source_name(source: i32) -> &'static str {
    match lk::TrackSource::try_from(source).unwrap_or(lk::TrackSource::Unknown) {
        lk::TrackSource::Camera => "camera",
        lk::TrackSource::Microphone => "microphone",
        lk::TrackSource::ScreenShare => "screen_share",
        lk::TrackSource::ScreenShareAudio => "screen_share_audio",
        lk::TrackSource::Unknown => "unknown",
    }
}

/// A new track sid, LiveKit style: `TR_` then type and source letters.
pub(crate) fn track_sid(req: &lk::AddTrackRequest) -> TrackSid {
    let t = if req.r#type == lk::TrackType::Video as i32 {
        'V'
    } else {
        'A'
    };
    let s = match lk::TrackSource::try_from(req.source).unwrap_or(lk::TrackSource::Unknown) {
        lk::TrackSource::Camera => 'C',
        lk::TrackSource::Microphone => 'M',
        lk::TrackSource::ScreenShare => 'S',
        lk::TrackSource::ScreenShareAudio => 's',
        lk::TrackSource::Unknown => 'U',
    };
    TrackSid::new(format!("TR_{t}{s}{}", random_alnum(12)))
}

/// The TrackInfo of a track announced by `add_track`.
pub(crate) fn pending_info(sid: &TrackSid, req: &lk::AddTrackRequest) -> lk::TrackInfo {
    let video = req.r#type == lk::TrackType::Video as i32;
    let codec = req
        .simulcast_codecs
        .first()
        .map(|c| c.codec.to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| if video { "vp8".into() } else { "opus".into() });
    let mime = match codec.as_str() {
        "vp8" => "video/VP8".to_owned(),
        "vp9" => "video/VP9".to_owned(),
        "h264" => "video/H264".to_owned(),
        "av1" => "video/AV1".to_owned(),
        "opus" => "audio/opus".to_owned(),
        other => format!("{}/{other}", if video { "video" } else { "audio" }),
    };
    let layers = req.layers.clone();
    let simulcast = layers.len() > 1;
    lk::TrackInfo {
        sid: sid.to_string(),
        r#type: req.r#type,
        name: req.name.clone(),
        muted: req.muted,
        width: req.width,
        height: req.height,
        simulcast,
        disable_dtx: req.disable_dtx,
        source: req.source,
        layers: layers.clone(),
        mime_type: mime.clone(),
        codecs: vec![lk::SimulcastCodecInfo {
            mime_type: mime,
            mid: String::new(),
            cid: req.cid.clone(),
            layers,
            video_layer_mode: if video {
                lk::video_layer::Mode::OneSpatialLayerPerStream as i32
            } else {
                lk::video_layer::Mode::Unused as i32
            },
            sdp_cid: String::new(),
        }],
        stereo: req.stereo,
        disable_red: req.disable_red,
        encryption: req.encryption,
        stream: req.stream.clone(),
        audio_features: req.audio_features.clone(),
        backup_codec_policy: req.backup_codec_policy,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME: &str = include_str!("../../tests/fixtures/chrome_simulcast_offer.sdp");
    const AUDIO_CID: &str = "3c0e1f0a-64a5-4f0b-b0a6-9d8a1f6e2b77";
    const VIDEO_CID: &str = "a4b3d2c1-0e9f-4a8b-8c7d-6e5f4a3b2c1d";

    fn pending(cid: &str, video: bool) -> PendingTrack {
        let req = lk::AddTrackRequest {
            cid: cid.into(),
            r#type: if video {
                lk::TrackType::Video as i32
            } else {
                lk::TrackType::Audio as i32
            },
            ..Default::default()
        };
        PendingTrack {
            sid: track_sid(&req),
            req,
        }
    }

    fn input<'a>(pc: Option<&'a PubPc>, pending: &'a [PendingTrack]) -> OfferInput<'a> {
        OfferInput {
            room_id: MediaRoomId(7),
            core: ("127.0.0.1:7882".parse().unwrap(), [0xab; 32]),
            candidate_ips: &[],
            tcp: None,
            pc,
            pending,
            can_publish: true,
        }
    }

    #[test]
    fn first_offer_creates_the_transport_and_publishes_announced_tracks() {
        let offer = SessionOffer::parse(CHROME).unwrap();
        // Announced in the other order: matched by msid track id, not by position.
        let pending = [pending(VIDEO_CID, true), pending(AUDIO_CID, false)];
        let d = decide_offer(&input(None, &pending), &offer).unwrap();
        assert!(d.created);
        let kinds: Vec<&str> = d
            .commands
            .iter()
            .map(|c| match c {
                Cmd::CreateWebrtcTransport(_) => "create",
                Cmd::SetHeaderExtensions(_) => "extensions",
                Cmd::AddTrack(_) => "track",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["create", "extensions", "track", "track"]);
        assert!(d.commands.iter().all(|c| match c {
            Cmd::CreateWebrtcTransport(c) => c.room_id == 7 && c.remote_ufrag == "Qb3x",
            Cmd::AddTrack(a) => a.room_id == 7 && a.transport_id == d.pc.transport_id.0,
            _ => true,
        }));
        assert_eq!(d.published.len(), 2);
        let video = d.published.iter().find(|p| p.mid == "1").unwrap();
        assert_eq!(video.pending_sid, pending[0].sid);
        assert_eq!(video.track.info.mime_type, "video/VP8");
        assert_eq!(d.pc.mids.get("0"), Some(&pending[1].sid));
        assert!(d.answer.contains("a=ice-ufrag:"));
        assert!(d.unpublished.is_empty());
    }

    #[test]
    fn reoffer_without_a_section_unpublishes_and_new_credentials_restart_ice() {
        let offer = SessionOffer::parse(CHROME).unwrap();
        let pending = [pending(VIDEO_CID, true), pending(AUDIO_CID, false)];
        let first = decide_offer(&input(None, &pending), &offer).unwrap();
        // The same offer again: nothing new, no restart, version bumped.
        let again = decide_offer(&input(Some(&first.pc), &[]), &offer).unwrap();
        assert!(!again.created && again.published.is_empty() && again.unpublished.is_empty());
        assert_eq!(again.pc.version, first.pc.version + 1);
        assert!(!again
            .commands
            .iter()
            .any(|c| matches!(c, Cmd::RestartIce(_))));
        // The video section stops sending, and the client's ICE credentials change.
        let (audio, video) = CHROME.split_at(CHROME.find("m=video").unwrap());
        let changed = format!("{audio}{}", video.replacen("a=sendonly", "a=inactive", 1))
            .replace("a=ice-ufrag:Qb3x", "a=ice-ufrag:Zz9y");
        let offer = SessionOffer::parse(&changed).unwrap();
        let d = decide_offer(&input(Some(&first.pc), &[]), &offer).unwrap();
        assert!(d.commands.iter().any(|c| matches!(c, Cmd::RestartIce(_))));
        assert_ne!(d.pc.ufrag, first.pc.ufrag);
        assert_eq!(d.unpublished, vec![pending[0].sid.clone()]);
    }

    #[test]
    fn bad_offers_are_refused_before_any_command() {
        let offer = SessionOffer::parse(&CHROME.replace("a=fingerprint:", "a=x-fingerprint:"));
        let err = match offer {
            Ok(o) => decide_offer(&input(None, &[]), &o).unwrap_err(),
            Err(e) => RtcError::from(e),
        };
        assert_eq!(err.http_status(), 400, "{err}");
    }

    #[test]
    fn track_sids_carry_type_and_source() {
        let req = lk::AddTrackRequest {
            r#type: lk::TrackType::Video as i32,
            source: lk::TrackSource::Camera as i32,
            ..Default::default()
        };
        let s = track_sid(&req);
        assert!(s.as_str().starts_with("TR_VC"), "{s}");
        assert_eq!(s.as_str().len(), 3 + 2 + 12);
    }
}
