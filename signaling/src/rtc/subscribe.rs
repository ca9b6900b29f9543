//! Subscribing: which tracks a participant receives, the subscriber transport that Prism
//! offers, the client's answers, layer wishes, and publishers' subscription permissions.
//!
//! A subscriber has at most one offer in flight; changes made meanwhile are offered once
//! the answer arrives. The answer is decide-then-apply like the publisher's offer:
//! [`decide_answer`] returns the media-plane commands (the transport on the first answer,
//! the header extensions, a down track per newly accepted section) and the room applies
//! them without waiting.

use std::collections::HashMap;

use pb::command::Body as Cmd;
use prism_proto::control as pb;
use prism_proto::livekit as lk;

use lk::signal_response::Message as Resp;

use super::error::RtcError;
use super::ids::{DownTrackId, MediaRoomId, ParticipantSid, TrackSid, TransportId};
use super::participant::{SubPc, SubSection, SubTrack};
use super::room::{Pending, Room};
use crate::media::{extension_ids, random_u32, remote_transport};
use crate::sdp::{CodecParams, MediaKind, OfferBuilder, OfferSection, SendTrack, SessionOffer};

/// What a subscriber's answer decides.
#[derive(Debug)]
pub struct AnswerDecision {
    /// The transport to create, on the first answer.
    pub create: Option<pb::CreateWebRtcTransport>,
    pub transport_id: TransportId,
    pub commands: Vec<Cmd>,
    /// (section index, down track) for each newly accepted section.
    pub down_tracks: Vec<(usize, DownTrackId)>,
    /// Sections whose removal the answer confirmed.
    pub reusable: Vec<usize>,
}

/// Decides what a subscriber's answer to our offer changes.
pub fn decide_answer(
    room_id: MediaRoomId,
    pc: &SubPc,
    answer: &SessionOffer,
) -> Result<AnswerDecision, RtcError> {
    let mut commands = Vec::new();
    let (create, transport_id) = match pc.transport_id {
        Some(t) => (None, t),
        None => {
            let remote = remote_transport(answer)?;
            let t = TransportId::fresh();
            (Some(remote.create(room_id.0, t.0, &pc.ufrag, &pc.pwd)), t)
        }
    };
    // The extensions the subscriber accepted from our offer: one id each across the bundle
    // (our offer uses the same ids everywhere), written on what we send it.
    let live = || answer.media.iter().filter(|m| !m.is_rejected());
    commands.push(Cmd::SetHeaderExtensions(pb::SetHeaderExtensions {
        room_id: room_id.0,
        transport_id: transport_id.0,
        ids: Some(extension_ids(live().flat_map(|m| &m.extmaps))),
        transport_cc_feedback: false,
    }));
    let mut down_tracks = Vec::new();
    let mut reusable = Vec::new();
    for (i, s) in pc.sections.iter().enumerate() {
        let Some(m) = answer.media.iter().find(|m| m.mid == s.mid) else {
            continue;
        };
        let t = match &s.track {
            None => {
                reusable.push(i);
                continue;
            }
            Some(t) if t.down_track_id.is_none() => t,
            Some(_) => continue,
        };
        if m.is_rejected() || !m.direction.receives() {
            continue;
        }
        let Some(c) = m
            .codecs
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(&t.codec.name) && !c.is_rtx())
        else {
            continue;
        };
        // RTX only where the subscriber kept it for this codec.
        let rtx = t.rtx_ssrc.zip(
            m.rtx
                .iter()
                .find(|(_, apt)| **apt == c.pt)
                .map(|(pt, _)| *pt),
        );
        let down_track_id = DownTrackId::fresh();
        commands.push(Cmd::AddDownTrack(pb::AddDownTrack {
            room_id: room_id.0,
            track_id: t.track_id.0,
            down_track_id: down_track_id.0,
            transport_id: transport_id.0,
            ssrc: t.ssrc,
            payload_type: u32::from(c.pt),
            preferred_spatial: t.spatial,
            preferred_temporal: None,
            rtx_ssrc: rtx.map_or(0, |(ssrc, _)| ssrc),
            rtx_payload_type: rtx.map_or(0, |(_, pt)| u32::from(pt)),
            mid: s.mid.clone(),
            header_extensions: Some(extension_ids(m.extmaps.iter())),
            pinned: false,
        }));
        down_tracks.push((i, down_track_id));
    }
    Ok(AnswerDecision {
        create,
        transport_id,
        commands,
        down_tracks,
        reusable,
    })
}

impl Room {
    /// Subscribes every participant that subscribes automatically to a new track.
    pub(crate) fn subscribe_everyone(&mut self, track_sid: &TrackSid) {
        let subs: Vec<ParticipantSid> = self
            .participants
            .iter()
            .filter(|q| q.auto_subscribe)
            .map(|q| q.sid.clone())
            .collect();
        for s in subs {
            self.subscribe(&s, track_sid);
        }
    }

    /// Subscribes `sub` to every track published in the room (a late joiner).
    pub(crate) fn subscribe_existing(&mut self, sub: &ParticipantSid) {
        let tracks: Vec<TrackSid> = self
            .participants
            .iter()
            .filter(|q| &q.sid != sub)
            .flat_map(|q| q.tracks.iter().map(super::PubTrack::sid))
            .collect();
        for t in tracks {
            self.subscribe(sub, &t);
        }
    }

    /// Subscribes `sub` to a track, if it may: a publisher that has not allowed it gets
    /// the wish remembered and the subscriber told, until it allows.
    pub(crate) fn subscribe(&mut self, sub: &ParticipantSid, track_sid: &TrackSid) {
        let Some((publisher, track)) = self.track(track_sid) else {
            return;
        };
        let Some(p) = self.participant(sub) else {
            return;
        };
        if &publisher.sid == sub
            || !p.has_signal()
            || !p.permission.can_subscribe
            || p.subscriber.section_of(track_sid).is_some()
        {
            return;
        }
        let publisher_sid = publisher.sid.clone();
        if !publisher.allows(p, track_sid) {
            let Some(p) = self.participant_mut(sub) else {
                return;
            };
            if !p.wanted.contains(track_sid) {
                p.wanted.push(track_sid.clone());
            }
            self.send_to(
                sub,
                Resp::SubscriptionPermissionUpdate(lk::SubscriptionPermissionUpdate {
                    participant_sid: publisher_sid.to_string(),
                    track_sid: track_sid.to_string(),
                    allowed: false,
                }),
            );
            return;
        }
        let (kind, codec) = (track.kind, track.codec.clone());
        let site = p.site;
        // On another site than the publisher's, the subscriber gets the track's copy there.
        let Some(track_id) = self.track_on_site(track_sid, site) else {
            tracing::debug!(participant = %sub, track = %track_sid, site, "track not on the subscriber's site yet");
            return;
        };
        let ssrc = random_u32();
        let st = SubTrack {
            track_sid: track_sid.clone(),
            publisher_sid,
            track_id,
            ssrc,
            rtx_ssrc: (kind == MediaKind::Video).then(|| loop {
                let r = random_u32();
                if r != ssrc {
                    break r;
                }
            }),
            codec,
            down_track_id: None,
            spatial: 2,
            paused: false,
        };
        let Some(p) = self.participant_mut(sub) else {
            return;
        };
        p.wanted.retain(|w| w != track_sid);
        let pc = &mut p.subscriber;
        if let Some(s) = pc
            .sections
            .iter_mut()
            .find(|s| s.kind == kind && s.track.is_none() && s.reusable)
        {
            s.track = Some(st);
            s.reusable = false;
        } else {
            let mid = pc.next_mid.to_string();
            pc.next_mid += 1;
            pc.sections.push(SubSection {
                mid,
                kind,
                track: Some(st),
                reusable: false,
            });
        }
        self.refresh_copy(track_sid, site);
        self.negotiate(sub);
    }

    /// Stops sending `track_sid` to `sub`. `remove_down_track` is false when the media plane
    /// has already removed it (its track is gone).
    pub(crate) fn unsubscribe(
        &mut self,
        sub: &ParticipantSid,
        track_sid: &TrackSid,
        remove_down_track: bool,
    ) {
        let site = self.site_of(sub);
        let room_id = self.site_room(site).0;
        let Some(p) = self.participant_mut(sub) else {
            return;
        };
        let Some(section) = p
            .subscriber
            .sections
            .iter_mut()
            .find(|s| s.track.as_ref().is_some_and(|t| &t.track_sid == track_sid))
        else {
            return;
        };
        let t = section.track.take();
        section.reusable = false;
        let renegotiate = p.has_signal();
        if let (true, Some(dt)) = (remove_down_track, t.and_then(|t| t.down_track_id)) {
            self.command(Cmd::RemoveDownTrack(pb::RemoveDownTrack {
                room_id,
                down_track_id: dt.0,
            }));
        }
        if site != 0 || self.track(track_sid).is_some_and(|(q, _)| q.site != 0) {
            self.drop_unused_copy(track_sid, site);
        }
        if renegotiate {
            self.negotiate(sub);
        }
    }

    /// Sends the subscriber a new offer, or remembers to once the one in flight is answered.
    pub(crate) fn negotiate(&mut self, pid: &ParticipantSid) {
        let site = self.site_of(pid);
        let Some((addr, sha)) = self.site_core(site) else {
            return;
        };
        let (ips, tcp) = self.site_addresses(site);
        let candidates = super::node::candidates(&ips, addr);
        let tcp_candidates = tcp
            .map(|t| super::node::candidates(&ips, t))
            .unwrap_or_default();
        let Some(p) = self.participant_mut(pid) else {
            return;
        };
        let pc = &mut p.subscriber;
        if pc.sections.is_empty() {
            return;
        }
        if pc.in_flight {
            pc.dirty = true;
            return;
        }
        pc.version += 1;
        let mut params = crate::sdp::ServerParams::new(&pc.ufrag, &pc.pwd, sha, candidates);
        params.tcp_candidates = tcp_candidates;
        params.session_id = pc.session_id;
        params.session_version = pc.version;
        let mut builder = OfferBuilder::new(&params);
        for s in &pc.sections {
            builder = builder.section(match &s.track {
                Some(t) => OfferSection::Track(SendTrack {
                    mid: s.mid.clone(),
                    kind: s.kind,
                    stream_id: format!("{}|{}", t.publisher_sid, t.track_sid),
                    track_id: t.track_sid.to_string(),
                    cname: t.publisher_sid.to_string(),
                    ssrc: t.ssrc,
                    rtx_ssrc: t.rtx_ssrc,
                    codecs: offered_codecs(&t.codec, t.rtx_ssrc.is_some()),
                }),
                None => OfferSection::Inactive {
                    mid: s.mid.clone(),
                    kind: s.kind,
                },
            });
        }
        let sdp = match builder.build() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(participant = %pid, error = %e, "cannot build a subscriber offer");
                return;
            }
        };
        pc.last_offer_id += 1;
        pc.in_flight = true;
        pc.dirty = false;
        let id = pc.last_offer_id;
        self.send_to(
            pid,
            Resp::Offer(lk::SessionDescription {
                r#type: "offer".into(),
                sdp,
                id,
                mid_to_track_id: HashMap::new(),
            }),
        );
    }

    pub(crate) fn on_subscriber_answer(
        &mut self,
        pid: &ParticipantSid,
        sd: &lk::SessionDescription,
    ) -> Result<(), RtcError> {
        let answer = SessionOffer::parse(&sd.sdp)?;
        let p = self.participant(pid).ok_or(RtcError::ParticipantNotFound)?;
        if !p.subscriber.in_flight {
            return Ok(());
        }
        let d = decide_answer(self.site_room(p.site), &p.subscriber, &answer)?;
        if let Some(c) = d.create {
            self.command_tracked(
                Cmd::CreateWebrtcTransport(c),
                Pending::Transport(pid.clone()),
            )?;
        }
        let mut first_subscribers = Vec::new();
        for cmd in d.commands {
            let then = match &cmd {
                Cmd::AddDownTrack(a) => self
                    .participant(pid)
                    .and_then(|p| {
                        p.subscriber
                            .sections
                            .iter()
                            .filter_map(|s| s.track.as_ref())
                            .find(|t| t.track_id.0 == a.track_id)
                    })
                    .map(|t| Pending::DownTrack(pid.clone(), t.track_sid.clone())),
                _ => None,
            };
            match then {
                Some(then) => {
                    if let Pending::DownTrack(_, t) = &then {
                        first_subscribers.push(t.clone());
                    }
                    self.command_tracked(cmd, then)?;
                }
                None => self.command(cmd),
            }
        }
        let p = self
            .participant_mut(pid)
            .ok_or(RtcError::ParticipantNotFound)?;
        p.subscriber.transport_id = Some(d.transport_id);
        for i in d.reusable {
            if let Some(s) = p.subscriber.sections.get_mut(i) {
                s.reusable = true;
            }
        }
        for (i, dt) in d.down_tracks {
            if let Some(t) = p
                .subscriber
                .sections
                .get_mut(i)
                .and_then(|s| s.track.as_mut())
            {
                t.down_track_id = Some(dt);
            }
        }
        p.subscriber.in_flight = false;
        let dirty = p.subscriber.dirty;
        for t in first_subscribers {
            self.tell_subscribed(&t);
        }
        if dirty {
            self.negotiate(pid);
        }
        Ok(())
    }

    /// Tells a track's publisher, once, that the track has a subscriber (`TrackSubscribed`:
    /// SDKs hold back buffered audio until then).
    pub(crate) fn tell_subscribed(&mut self, track: &TrackSid) {
        let Some(p) = self
            .participants
            .iter_mut()
            .find(|p| p.tracks.iter().any(|t| t.info.sid == track.as_str()))
        else {
            return;
        };
        let Some(t) = p
            .tracks
            .iter_mut()
            .find(|t| t.info.sid == track.as_str() && !t.told_subscribed)
        else {
            return;
        };
        t.told_subscribed = true;
        let pid = p.sid.clone();
        self.send_to(
            &pid,
            Resp::TrackSubscribed(lk::TrackSubscribed {
                track_sid: track.to_string(),
            }),
        );
    }

    pub(crate) fn on_subscription(&mut self, pid: &ParticipantSid, s: &lk::UpdateSubscription) {
        let mut sids: Vec<TrackSid> = s.track_sids.iter().map(TrackSid::from).collect();
        for pt in &s.participant_tracks {
            sids.extend(pt.track_sids.iter().map(TrackSid::from));
        }
        for t in sids {
            if s.subscribe {
                self.subscribe(pid, &t);
            } else {
                if let Some(p) = self.participant_mut(pid) {
                    p.wanted.retain(|w| w != &t);
                }
                self.unsubscribe(pid, &t, true);
            }
        }
    }

    pub(crate) fn on_track_settings(&mut self, pid: &ParticipantSid, s: &lk::UpdateTrackSettings) {
        let room_id = self.site_room(self.site_of(pid)).0;
        let updates: Vec<(TrackSid, u32)> = s
            .track_sids
            .iter()
            .filter_map(|sid| {
                let sid = TrackSid::from(sid.as_str());
                let (_, track) = self.track(&sid)?;
                let spatial = wanted_spatial(&track.info, s);
                Some((sid, spatial))
            })
            .collect();
        let Some(p) = self.participant_mut(pid) else {
            return;
        };
        let mut cmds = Vec::new();
        for (sid, spatial) in updates {
            for sec in &mut p.subscriber.sections {
                let Some(t) = sec.track.as_mut().filter(|t| t.track_sid == sid) else {
                    continue;
                };
                t.spatial = spatial;
                let Some(dt) = t.down_track_id else {
                    continue;
                };
                if t.paused != s.disabled {
                    t.paused = s.disabled;
                    cmds.push(Cmd::SetPaused(pb::SetPaused {
                        room_id,
                        down_track_id: dt.0,
                        paused: s.disabled,
                    }));
                }
                if sec.kind == MediaKind::Video && !s.disabled {
                    cmds.push(Cmd::SetPreferredLayer(pb::SetPreferredLayer {
                        room_id,
                        down_track_id: dt.0,
                        spatial,
                        temporal: 3,
                    }));
                }
            }
        }
        for c in cmds {
            self.command(c);
        }
        // The layers relayed to the subscriber's site follow what its subscribers want.
        let site = self.site_of(pid);
        if site != 0 || self.participants.iter().any(|p| p.site != 0) {
            let sids: Vec<TrackSid> = s
                .track_sids
                .iter()
                .map(|t| TrackSid::from(t.as_str()))
                .collect();
            for t in sids {
                self.refresh_copy(&t, site);
            }
        }
    }

    /// A publisher's allow-list changed: subscribers it no longer allows lose its tracks
    /// (and are told), those newly allowed that wanted them get them.
    pub(crate) fn on_subscription_permission(
        &mut self,
        pid: &ParticipantSid,
        perm: lk::SubscriptionPermission,
    ) {
        let Some(p) = self.participant_mut(pid) else {
            return;
        };
        p.allowed = Some(perm);
        let tracks: Vec<TrackSid> = p.tracks.iter().map(super::PubTrack::sid).collect();
        let others: Vec<ParticipantSid> = self
            .participants
            .iter()
            .filter(|q| &q.sid != pid)
            .map(|q| q.sid.clone())
            .collect();
        for sub in &others {
            for t in &tracks {
                let Some(publisher) = self.participant(pid) else {
                    return;
                };
                let Some(s) = self.participant(sub) else {
                    continue;
                };
                let allowed = publisher.allows(s, t);
                let has = s.subscriber.section_of(t).is_some();
                let wants = s.wanted.contains(t);
                if has && !allowed {
                    self.unsubscribe(sub, t, true);
                    if let Some(s) = self.participant_mut(sub) {
                        s.wanted.push(t.clone());
                    }
                    self.send_to(sub, permission_update(pid, t, false));
                } else if wants && allowed {
                    self.send_to(sub, permission_update(pid, t, true));
                    self.subscribe(sub, t);
                }
            }
        }
    }
}

fn permission_update(publisher: &ParticipantSid, track: &TrackSid, allowed: bool) -> Resp {
    Resp::SubscriptionPermissionUpdate(lk::SubscriptionPermissionUpdate {
        participant_sid: publisher.to_string(),
        track_sid: track.to_string(),
        allowed,
    })
}

/// The spatial layer for a subscriber's wish: the smallest published layer at least as big
/// as the requested size, or the layer of the requested quality.
fn wanted_spatial(info: &lk::TrackInfo, s: &lk::UpdateTrackSettings) -> u32 {
    let n = info.layers.len().max(1) as u32;
    if s.width > 0 || s.height > 0 {
        let mut layers: Vec<&lk::VideoLayer> = info.layers.iter().collect();
        layers.sort_by_key(|l| l.width.max(l.height));
        let want = s.width.max(s.height);
        for (i, l) in layers.iter().enumerate() {
            if l.width.max(l.height) >= want {
                return i as u32;
            }
        }
        return n - 1;
    }
    match lk::VideoQuality::try_from(s.quality).unwrap_or(lk::VideoQuality::High) {
        lk::VideoQuality::Low => 0,
        lk::VideoQuality::Medium => 1.min(n - 1),
        _ => n - 1,
    }
}

/// The codecs offered to a subscriber: the publisher's, with only the feedback Prism
/// answers (NACK, PLI, FIR), and its RTX companion when `rtx` (on a payload type of its
/// own, free in this section).
fn offered_codecs(c: &CodecParams, rtx: bool) -> Vec<CodecParams> {
    let mut c = c.clone();
    c.rtcp_fb
        .retain(|f| f == "nack" || f == "nack pli" || f == "ccm fir");
    let mut out = vec![c.clone()];
    if rtx {
        if let Some(pt) = (96u8..=127).find(|pt| *pt != c.pt) {
            out.push(CodecParams {
                pt,
                name: "rtx".into(),
                clock_rate: c.clock_rate,
                channels: None,
                fmtp: format!("apt={}", c.pt),
                rtcp_fb: Vec::new(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_choice_follows_requested_size() {
        let layer = |q: lk::VideoQuality, w: u32, h: u32| lk::VideoLayer {
            quality: q as i32,
            width: w,
            height: h,
            ..Default::default()
        };
        let info = lk::TrackInfo {
            layers: vec![
                layer(lk::VideoQuality::Low, 320, 180),
                layer(lk::VideoQuality::Medium, 640, 360),
                layer(lk::VideoQuality::High, 1280, 720),
            ],
            ..Default::default()
        };
        let ask = |w, h, q: lk::VideoQuality| {
            wanted_spatial(
                &info,
                &lk::UpdateTrackSettings {
                    width: w,
                    height: h,
                    quality: q as i32,
                    ..Default::default()
                },
            )
        };
        assert_eq!(ask(300, 170, lk::VideoQuality::High), 0);
        assert_eq!(ask(600, 340, lk::VideoQuality::High), 1);
        assert_eq!(ask(1920, 1080, lk::VideoQuality::Low), 2);
        assert_eq!(ask(0, 0, lk::VideoQuality::Low), 0);
        assert_eq!(ask(0, 0, lk::VideoQuality::High), 2);
    }
}
