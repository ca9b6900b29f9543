//! Joining and leaving a room, and telling the others.
//!
//! Every way in (a LiveKit session's join, a WHIP publisher, a WHEP viewer) goes through
//! [`Room::admit`]; every way out through [`Room::remove_participant`]. Both queue the
//! change in `Room::updates` rather than broadcasting it at once: the room's loop flushes
//! the queue once per mailbox batch ([`Room::flush_updates`]), and every send to another
//! participant flushes it first, so nobody hears of a participant's tracks, offers or data
//! before the participant itself. A newcomer's `JoinResponse` is assembled from cached
//! encodings of the others ([`encode_join`]).

use std::collections::HashMap;
use std::time::Instant;

use pb::command::Body as Cmd;
use prism_proto::control as pb;
use prism_proto::livekit as lk;
use tokio::sync::mpsc;

use lk::signal_response::Message as Resp;

use super::error::RtcError;
use super::ids::{Identity, ParticipantSid, TrackSid};
use super::node::Counters;
use super::participant::{Link, Participant, SubPc};
use super::room::{new_sid, now_ms, JoinParams, Joined, Room, SESSION_QUEUE};
use crate::livekit::{PING_INTERVAL_S, PING_TIMEOUT_S, PROTOCOL_VERSION, SERVER_VERSION};

impl Room {
    /// Adds a participant, shared by every way in: a second session with the same
    /// identity replaces the first, and the others are told (unless it is hidden).
    pub(crate) fn admit(&mut self, p: Participant) -> Result<(), RtcError> {
        if self.stopping || self.closed {
            return Err(RtcError::ShuttingDown);
        }
        if let Some(old) = self.by_identity(p.identity.as_str()).map(|q| q.sid.clone()) {
            let r = lk::DisconnectReason::DuplicateIdentity;
            self.remove_participant(&old, r, Some(r));
        }
        if self.max_participants > 0 && self.participants.len() >= self.max_participants as usize {
            return Err(RtcError::RoomFull);
        }
        let info = p.info();
        let hidden = p.permission.hidden;
        let sid = p.sid.clone();
        let publishing = !p.tracks.is_empty();
        tracing::info!(room = %self.name, participant = %sid, identity = %p.identity, kind = ?p.kind, "joined");
        // Agents do not hold a room open (LiveKit's dependent participants).
        if !is_dependent(&p) {
            self.empty_since = None;
            self.ever_joined = true;
        }
        self.participants.push(p);
        Counters::bump(&self.counters.joins, 1);
        if !hidden {
            self.updates.push(info.clone());
        }
        let room = self.info();
        self.observer.participant_joined(&room, &info);
        if publishing {
            self.observer.publisher_started(&room, &info);
        }
        Ok(())
    }

    /// Announces the joins and departures queued by [`Room::admit`] and
    /// [`Room::remove_participant`] in one participant update: encoded once for those
    /// already in the room, and for each newcomer only what came after its own join (its
    /// `JoinResponse` listed the rest). A room that many join (or leave) at once thus
    /// sends each session one update per batch, not one per join.
    pub(crate) fn flush_updates(&mut self) {
        if self.updates.is_empty() {
            return;
        }
        let infos = std::mem::take(&mut self.updates);
        let all = lk::SignalResponse {
            message: Some(Resp::Update(lk::ParticipantUpdate {
                participants: infos.clone(),
            })),
        };
        let all = bytes::Bytes::from(prost::Message::encode_to_vec(&all));
        let mut slow = Vec::new();
        for q in &self.participants {
            let ok = match infos.iter().position(|i| i.sid == q.sid.as_str()) {
                None => q.send_encoded(&all),
                Some(k) if k + 1 == infos.len() => true,
                Some(k) => q.send(Resp::Update(lk::ParticipantUpdate {
                    participants: infos[k + 1..].to_vec(),
                })),
            };
            if !ok {
                slow.push(q.sid.clone());
            }
        }
        self.drop_slow(slow);
    }

    pub(super) fn join(&mut self, p: JoinParams) -> Result<Joined, RtcError> {
        let grant = p.claims.grant()?.clone();
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let permission = permission_of(&grant);
        let participant = Participant {
            sid: ParticipantSid::new(new_sid("PA_")),
            identity: Identity::new(p.claims.identity()),
            name: p.claims.name.clone(),
            metadata: p.claims.metadata.clone(),
            attributes: p.claims.attributes.clone(),
            kind: kind_of(&p.claims.kind),
            joined_at_ms: now_ms(),
            version: 1,
            state: lk::participant_info::State::Joined,
            permission,
            client_protocol: p.client_protocol,
            auto_subscribe: p.auto_subscribe,
            tracks: Vec::new(),
            allowed: None,
            wanted: Vec::new(),
            speaking: HashMap::new(),
            pending: Vec::new(),
            publisher: None,
            subscriber: SubPc::new(),
            link: Link::Signal(tx),
            site: 0,
        };
        let info = participant.info();
        let sid = participant.sid.clone();
        // Speaker updates are deltas: a newcomer first hears who is speaking already
        // (queued behind the JoinResponse, which the session sends first).
        let speakers = self.current_speakers();
        if !speakers.is_empty() {
            let _ = participant.send(Resp::SpeakersChanged(lk::SpeakersChanged { speakers }));
        }
        self.admit(participant)?;
        let agents = super::observer::token_agents(&p.claims);
        if !agents.is_empty() {
            self.observer.agents_requested(&self.name, &agents);
        }
        let response = lk::JoinResponse {
            room: Some(self.info()),
            participant: Some(info),
            other_participants: Vec::new(),
            ice_servers: self
                .ice_servers
                .for_participant(sid.as_str(), super::ice_servers::unix_now()),
            server_version: SERVER_VERSION.into(),
            subscriber_primary: false,
            ping_timeout: PING_TIMEOUT_S,
            ping_interval: PING_INTERVAL_S,
            server_info: Some(lk::ServerInfo {
                edition: lk::server_info::Edition::Standard as i32,
                version: SERVER_VERSION.into(),
                protocol: PROTOCOL_VERSION.min(p.protocol.max(1)),
                node_id: "prism".into(),
                ..Default::default()
            }),
            enabled_publish_codecs: ["audio/opus", "video/VP8", "video/H264"]
                .iter()
                .map(|m| lk::Codec {
                    mime: (*m).into(),
                    fmtp_line: String::new(),
                })
                .collect(),
            // Sessions are not resumed: SDKs must not try (they would wait for a resume
            // that cannot succeed before reconnecting in full).
            client_configuration: Some(lk::ClientConfiguration {
                resume_connection: lk::ClientConfigSetting::Disabled as i32,
                ..Default::default()
            }),
            fast_publish: false,
            ..Default::default()
        };
        let cache = &mut self.info_cache;
        let others: Vec<bytes::Bytes> = self
            .participants
            .iter()
            .filter(|q| q.sid != sid && !q.permission.hidden)
            .map(|q| {
                cache
                    .entry(q.sid.clone())
                    .or_insert_with(|| prost::Message::encode_to_vec(&q.info()).into())
                    .clone()
            })
            .collect();
        let join = encode_join(&response, &others);
        Ok(Joined {
            sid,
            join,
            rx,
            room: self.handle.clone(),
        })
    }

    /// Sends a participant update with `infos` to everyone in the room but `except`.
    pub(crate) fn broadcast(
        &mut self,
        infos: &[lk::ParticipantInfo],
        except: Option<&ParticipantSid>,
    ) {
        let msg = Resp::Update(lk::ParticipantUpdate {
            participants: infos.to_vec(),
        });
        self.send_all(&msg, except);
    }

    /// Sends `msg` to every session but `except`, closing those too far behind.
    pub(crate) fn send_all(&mut self, msg: &Resp, except: Option<&ParticipantSid>) {
        self.flush_updates();
        let slow: Vec<ParticipantSid> = self
            .participants
            .iter()
            .filter(|q| Some(&q.sid) != except)
            .filter(|q| !q.send(msg.clone()))
            .map(|q| q.sid.clone())
            .collect();
        self.drop_slow(slow);
    }

    /// Tells everyone (the participant too) that a participant changed.
    pub(crate) fn announce(&mut self, pid: &ParticipantSid) {
        let Some(p) = self.participant_mut(pid) else {
            return;
        };
        p.version += 1;
        let info = p.info();
        if p.permission.hidden {
            let _ = p.send(Resp::Update(lk::ParticipantUpdate {
                participants: vec![info],
            }));
        } else {
            self.broadcast(&[info], None);
        }
    }

    pub(crate) fn drop_slow(&mut self, slow: Vec<ParticipantSid>) {
        for sid in slow {
            Counters::bump(&self.counters.slow_sessions, 1);
            tracing::warn!(participant = %sid, "session too far behind; closing it");
            self.remove_participant(&sid, lk::DisconnectReason::SignalClose, None);
        }
    }

    /// Sends one signaling message to a participant (closing its session if it is too far
    /// behind).
    pub(crate) fn send_to(&mut self, pid: &ParticipantSid, msg: Resp) {
        // It may name a participant whose join is still queued (a new publisher's track
        // in a subscriber offer): the join goes first.
        self.flush_updates();
        let ok = self.participant(pid).is_none_or(|p| p.send(msg));
        if !ok {
            self.drop_slow(vec![pid.clone()]);
        }
    }

    /// Closes a participant's signaling session with `text` as the WebSocket close reason,
    /// and removes it with `reason`.
    pub(crate) fn close_session(
        &mut self,
        pid: &ParticipantSid,
        text: &str,
        reason: lk::DisconnectReason,
    ) {
        if let Some(p) = self.participant(pid) {
            p.close_signal(text.to_owned());
        }
        self.remove_participant(pid, reason, None);
    }

    /// Removes a participant: its transports close, its tracks leave every subscriber, the
    /// others see it disconnected. `leave` sends it a leave request first (server-initiated
    /// removals).
    pub fn remove_participant(
        &mut self,
        pid: &ParticipantSid,
        reason: lk::DisconnectReason,
        leave: Option<lk::DisconnectReason>,
    ) {
        let Some(pos) = self.participants.iter().position(|p| &p.sid == pid) else {
            return;
        };
        let mut p = self.participants.remove(pos);
        if self.empty_since.is_none() && self.participants.iter().all(is_dependent) {
            // Only agents are left: the room counts as empty and closes in time, as
            // LiveKit's does, taking its agents with it.
            self.empty_since = Some(Instant::now());
        }
        if let Some(r) = leave {
            let action = self.leave_action;
            let _ = p.send(Resp::Leave(lk::LeaveRequest {
                can_reconnect: action == lk::leave_request::Action::Reconnect,
                reason: r as i32,
                action: action as i32,
            }));
            p.close_signal(format!("{r:?}"));
        }
        Counters::bump(&self.counters.leaves, 1);
        tracing::info!(room = %self.name, participant = %pid, ?reason, "left");
        self.fail_rpcs_to(&p.identity);
        let site_room = self.site_room(p.site).0;
        for t in p.transport_ids() {
            self.command(Cmd::CloseTransport(pb::CloseTransport {
                room_id: site_room,
                transport_id: t.0,
            }));
        }
        let tracks: Vec<TrackSid> = p.tracks.iter().map(super::PubTrack::sid).collect();
        for t in &tracks {
            self.drop_copies(t);
        }
        // Copies relayed to its site for it alone are not needed any more.
        let received: Vec<TrackSid> = p
            .subscriber
            .sections
            .iter()
            .filter_map(|s| s.track.as_ref().map(|t| t.track_sid.clone()))
            .collect();
        for t in &received {
            self.drop_unused_copy(t, p.site);
        }
        // Its recordings end with it (as its tracks' do).
        self.egress_participant_left(pid, &p.identity.to_string(), &tracks);
        let subs: Vec<ParticipantSid> = self.participants.iter().map(|q| q.sid.clone()).collect();
        for t in &tracks {
            for s in &subs {
                // The media plane removed the down tracks with the transport's tracks.
                self.unsubscribe(s, t, false);
            }
        }
        for q in &mut self.participants {
            q.wanted.retain(|w| !tracks.contains(w));
        }
        p.state = lk::participant_info::State::Disconnected;
        p.version += 1;
        p.tracks.clear();
        let mut info = p.info();
        info.disconnect_reason = reason as i32;
        if !p.permission.hidden {
            self.updates.push(info.clone());
        }
        self.observer.participant_left(&self.name, &info);
    }
}

/// Whether a participant depends on others to be in the room (an agent): it neither keeps
/// the room open nor counts as someone having joined.
pub(crate) fn is_dependent(p: &Participant) -> bool {
    p.kind == lk::participant_info::Kind::Agent
}

/// A `SignalResponse` carrying `response` with `others` (encoded `ParticipantInfo`s) as its
/// other participants. Protobuf lets a repeated field's entries come after the other
/// fields, so the encoded infos are appended as they are instead of being decoded,
/// cloned and encoded again for every newcomer.
pub(crate) fn encode_join(response: &lk::JoinResponse, others: &[bytes::Bytes]) -> bytes::Bytes {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
    use prost::Message;
    // JoinResponse.other_participants and SignalResponse.join.
    const OTHERS: u32 = 3;
    const JOIN: u32 = 1;
    let body = response.encoded_len()
        + others
            .iter()
            .map(|o| 1 + encoded_len_varint(o.len() as u64) + o.len())
            .sum::<usize>();
    let mut out = Vec::with_capacity(1 + encoded_len_varint(body as u64) + body);
    encode_key(JOIN, WireType::LengthDelimited, &mut out);
    encode_varint(body as u64, &mut out);
    response.encode_raw(&mut out);
    for o in others {
        encode_key(OTHERS, WireType::LengthDelimited, &mut out);
        encode_varint(o.len() as u64, &mut out);
        out.extend_from_slice(o);
    }
    out.into()
}

/// A participant's permission from its token's grant.
pub(crate) fn permission_of(grant: &crate::auth::VideoGrant) -> lk::ParticipantPermission {
    lk::ParticipantPermission {
        can_subscribe: grant.can_subscribe(),
        can_publish: grant.can_publish(),
        can_publish_data: grant.can_publish_data(),
        can_publish_sources: grant
            .can_publish_sources
            .iter()
            .filter_map(|s| match s.as_str() {
                "camera" => Some(lk::TrackSource::Camera as i32),
                "microphone" => Some(lk::TrackSource::Microphone as i32),
                "screen_share" => Some(lk::TrackSource::ScreenShare as i32),
                "screen_share_audio" => Some(lk::TrackSource::ScreenShareAudio as i32),
                _ => None,
            })
            .collect(),
        hidden: grant.hidden,
        recorder: grant.recorder,
        can_update_metadata: grant.can_update_own_metadata(),
        agent: grant.agent,
        ..Default::default()
    }
}

/// A participant kind from a token's `kind` claim.
pub(crate) fn kind_of(kind: &str) -> lk::participant_info::Kind {
    match kind {
        "ingress" => lk::participant_info::Kind::Ingress,
        "egress" => lk::participant_info::Kind::Egress,
        "sip" => lk::participant_info::Kind::Sip,
        "agent" => lk::participant_info::Kind::Agent,
        _ => lk::participant_info::Kind::Standard,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn info(sid: &str, version: u32) -> lk::ParticipantInfo {
        lk::ParticipantInfo {
            sid: sid.into(),
            identity: format!("id-{sid}"),
            version,
            attributes: HashMap::from([("k".into(), "v".into())]),
            ..Default::default()
        }
    }

    #[test]
    fn an_encoded_join_decodes_to_the_same_join_response() {
        let mut response = lk::JoinResponse {
            room: Some(lk::Room {
                name: "r".into(),
                ..Default::default()
            }),
            participant: Some(info("PA_self", 1)),
            server_version: "1".into(),
            ping_interval: 5,
            ..Default::default()
        };
        let others = [info("PA_a", 3), info("PA_b", 1)];
        let encoded: Vec<bytes::Bytes> = others.iter().map(|o| o.encode_to_vec().into()).collect();
        let got = lk::SignalResponse::decode(encode_join(&response, &encoded)).unwrap();
        response.other_participants = others.to_vec();
        assert_eq!(
            got,
            lk::SignalResponse {
                message: Some(Resp::Join(response)),
            }
        );
        // No others: the plain encoding.
        let alone = lk::JoinResponse::default();
        let bytes = encode_join(&alone, &[]);
        let want = lk::SignalResponse {
            message: Some(Resp::Join(alone)),
        };
        assert_eq!(bytes.as_ref(), want.encode_to_vec().as_slice());
    }
}
