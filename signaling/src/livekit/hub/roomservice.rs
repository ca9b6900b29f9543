//! RoomService operations on the hub: what LiveKit's server API (Twirp, see
//! `crate::twirp`) does to rooms and participants.
//!
//! These run on the hub's thread like everything else that changes a room, so an API call
//! is ordered with the signaling around it: a participant removed here cannot be half-way
//! through a join or an offer. Each operation checks what it names (the room, the
//! participant, the track) and answers a Twirp error for what does not exist, with
//! LiveKit's messages. Grants are checked before the call reaches the hub.

use prism_proto::livekit as lk;
use prost::Message as _;

use super::{Hub, Resp};
use crate::twirp::{Code, TwirpError};

/// Largest room or participant metadata accepted (LiveKit's default `max_metadata_size`).
pub const MAX_METADATA: usize = 64_000;

/// Data channel labels the clients open, by `DataPacket.Kind`.
const RELIABLE_LABEL: &str = "_reliable";
const LOSSY_LABEL: &str = "_lossy";

impl Hub {
    /// The sid of `identity` in `room`.
    fn api_participant_sid(&self, room: &str, identity: &str) -> Result<String, TwirpError> {
        let r = self
            .rooms
            .get(room)
            .ok_or_else(TwirpError::room_not_found)?;
        r.participants
            .iter()
            .find(|p| p.identity == identity)
            .map(|p| p.sid.clone())
            .ok_or_else(TwirpError::participant_not_found)
    }

    fn api_participant_info(
        &self,
        room: &str,
        pid: &str,
    ) -> Result<lk::ParticipantInfo, TwirpError> {
        self.rooms
            .get(room)
            .and_then(|r| r.participant(pid))
            .map(super::Participant::info)
            .ok_or_else(TwirpError::participant_not_found)
    }

    /// CreateRoom: creates the room (with the request's timeouts, limit and metadata), or
    /// returns it unchanged if it exists.
    pub fn api_create_room(&mut self, req: &lk::CreateRoomRequest) -> Result<lk::Room, TwirpError> {
        if req.metadata.len() > MAX_METADATA {
            return Err(metadata_too_large());
        }
        let room = self
            .create_room(
                &req.name,
                req.empty_timeout,
                req.departure_timeout,
                req.max_participants,
                &req.metadata,
            )
            .map_err(TwirpError::internal)?;
        Ok(room.info())
    }

    /// ListRooms: every room, or those named.
    pub fn api_list_rooms(&self, names: &[String]) -> lk::ListRoomsResponse {
        lk::ListRoomsResponse {
            rooms: self
                .rooms
                .values()
                .filter(|r| names.is_empty() || names.contains(&r.name))
                .map(super::Room::info)
                .collect(),
        }
    }

    /// DeleteRoom: everyone in it is told to leave (`ROOM_DELETED`) and the room closes.
    pub fn api_delete_room(&mut self, name: &str) -> Result<(), TwirpError> {
        if self.delete_room(name, lk::DisconnectReason::RoomDeleted) {
            Ok(())
        } else {
            Err(TwirpError::room_not_found())
        }
    }

    /// ListParticipants, hidden ones included (as LiveKit lists them to admins).
    pub fn api_list_participants(
        &self,
        room: &str,
    ) -> Result<Vec<lk::ParticipantInfo>, TwirpError> {
        let r = self
            .rooms
            .get(room)
            .ok_or_else(TwirpError::room_not_found)?;
        Ok(r.participants
            .iter()
            .map(super::Participant::info)
            .collect())
    }

    pub fn api_get_participant(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<lk::ParticipantInfo, TwirpError> {
        let pid = self.api_participant_sid(room, identity)?;
        self.api_participant_info(room, &pid)
    }

    /// RemoveParticipant: the participant is sent a leave (`PARTICIPANT_REMOVED`) and its
    /// session closes; the others see it disconnected.
    pub fn api_remove_participant(&mut self, room: &str, identity: &str) -> Result<(), TwirpError> {
        let pid = self.api_participant_sid(room, identity)?;
        let reason = lk::DisconnectReason::ParticipantRemoved;
        self.remove_participant(&pid, reason, Some(reason));
        Ok(())
    }

    /// MutePublishedTrack: everyone sees the track muted in a participant update, and the
    /// publisher is told to mute it (`SignalResponse.mute`). Unmuting someone else's track
    /// is refused unless `allow_unmute` (LiveKit's `room.enable_remote_unmute`).
    pub fn api_mute_track(
        &mut self,
        req: &lk::MuteRoomTrackRequest,
        allow_unmute: bool,
    ) -> Result<lk::TrackInfo, TwirpError> {
        let pid = self.api_participant_sid(&req.room, &req.identity)?;
        if !req.muted && !allow_unmute {
            return Err(TwirpError::new(
                Code::FailedPrecondition,
                "remote unmute not enabled",
            ));
        }
        let track = self
            .set_muted(&pid, &req.track_sid, req.muted)
            .ok_or_else(|| TwirpError::new(Code::NotFound, "track is not found"))?;
        self.send_to(
            &pid,
            Resp::Mute(lk::MuteTrackRequest {
                sid: req.track_sid.clone(),
                muted: req.muted,
            }),
        );
        tracing::info!(room = %req.room, participant = %pid, track = %req.track_sid, muted = req.muted, "track muted by the API");
        Ok(track)
    }

    /// UpdateParticipant: metadata and name when not empty, attributes merged (an empty
    /// value deletes the key), and the permission replaced when given. Losing
    /// `can_publish` unpublishes the participant's tracks; losing `can_subscribe` ends its
    /// subscriptions; regaining it subscribes it again if it subscribes automatically.
    pub fn api_update_participant(
        &mut self,
        req: &lk::UpdateParticipantRequest,
    ) -> Result<lk::ParticipantInfo, TwirpError> {
        if req.metadata.len() > MAX_METADATA {
            return Err(metadata_too_large());
        }
        let pid = self.api_participant_sid(&req.room, &req.identity)?;
        let room = req.room.as_str();
        let p = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.participant_mut(&pid))
            .ok_or_else(TwirpError::participant_not_found)?;
        if !req.metadata.is_empty() {
            p.metadata = req.metadata.clone();
        }
        if !req.name.is_empty() {
            p.name = req.name.clone();
        }
        for (k, v) in &req.attributes {
            if v.is_empty() {
                p.attributes.remove(k);
            } else {
                p.attributes.insert(k.clone(), v.clone());
            }
        }
        let mut unpublish = Vec::new();
        let mut unsubscribe = Vec::new();
        let mut resubscribe = false;
        if let Some(perm) = &req.permission {
            let old = std::mem::replace(&mut p.permission, perm.clone());
            if old.can_publish && !perm.can_publish {
                unpublish = p.tracks.iter().map(|t| t.info.sid.clone()).collect();
                p.pending.clear();
            }
            if old.can_subscribe && !perm.can_subscribe {
                unsubscribe = p
                    .subscriber
                    .sections
                    .iter()
                    .filter_map(|s| s.track.as_ref().map(|t| t.track_sid.clone()))
                    .collect();
            }
            resubscribe = !old.can_subscribe
                && perm.can_subscribe
                && p.auto_subscribe
                && p.state == lk::participant_info::State::Active;
        }
        for t in &unpublish {
            self.unpublish(room, &pid, t);
        }
        for t in &unsubscribe {
            self.unsubscribe(room, &pid, t, true);
        }
        if resubscribe {
            self.subscribe_existing(room, &pid);
        }
        self.announce(&pid);
        self.api_participant_info(room, &pid)
    }

    /// UpdateSubscriptions: subscribes the participant to the tracks named, or
    /// unsubscribes it, as if it had asked itself.
    pub fn api_update_subscriptions(
        &mut self,
        req: &lk::UpdateSubscriptionsRequest,
    ) -> Result<(), TwirpError> {
        let pid = self.api_participant_sid(&req.room, &req.identity)?;
        self.on_subscription(
            &pid,
            &lk::UpdateSubscription {
                track_sids: req.track_sids.clone(),
                subscribe: req.subscribe,
                participant_tracks: req.participant_tracks.clone(),
            },
        );
        Ok(())
    }

    /// SendData: a user packet from the server (sender fields empty) to the participants
    /// named by identity or sid, or to everyone when none is named. Returns how many
    /// participants it was sent to.
    pub fn api_send_data(&mut self, req: &lk::SendDataRequest) -> Result<usize, TwirpError> {
        if !req.nonce.is_empty() && req.nonce.len() != 16 {
            return Err(TwirpError::invalid(
                "nonce should be 16 bytes or not present",
            ));
        }
        let label = match lk::data_packet::Kind::try_from(req.kind) {
            Ok(lk::data_packet::Kind::Reliable) => RELIABLE_LABEL,
            Ok(lk::data_packet::Kind::Lossy) => LOSSY_LABEL,
            Err(_) => {
                return Err(TwirpError::invalid(format!(
                    "unknown data kind {}",
                    req.kind
                )))
            }
        };
        let r = self
            .rooms
            .get(&req.room)
            .ok_or_else(TwirpError::room_not_found)?;
        let named = !req.destination_identities.is_empty() || !req.destination_sids.is_empty();
        let mut dests = req.destination_identities.clone();
        for sid in &req.destination_sids {
            if let Some(p) = r.participant(sid) {
                dests.push(p.identity.clone());
            }
        }
        let targets = r
            .participants
            .iter()
            .filter(|p| !named || dests.contains(&p.identity))
            .filter(|p| p.publisher.is_some())
            .count();
        // Recipients were named but none is here: nobody gets it (an empty list would
        // mean everyone).
        if named && targets == 0 {
            return Ok(0);
        }
        let packet = lk::DataPacket {
            kind: req.kind,
            destination_identities: req.destination_identities.clone(),
            value: Some(lk::data_packet::Value::User(lk::UserPacket {
                payload: req.data.clone(),
                destination_sids: req.destination_sids.clone(),
                destination_identities: req.destination_identities.clone(),
                topic: req.topic.clone(),
                nonce: req.nonce.clone(),
                ..Default::default()
            })),
            ..Default::default()
        };
        self.deliver_data(&req.room, None, &dests, label, packet.encode_to_vec());
        Ok(targets)
    }

    /// UpdateRoomMetadata: everyone in the room gets a room update.
    pub fn api_update_room_metadata(
        &mut self,
        room: &str,
        metadata: &str,
    ) -> Result<lk::Room, TwirpError> {
        if metadata.len() > MAX_METADATA {
            return Err(metadata_too_large());
        }
        let r = self
            .rooms
            .get_mut(room)
            .ok_or_else(TwirpError::room_not_found)?;
        r.metadata = metadata.to_owned();
        let info = r.info();
        let pids: Vec<String> = r.participants.iter().map(|p| p.sid.clone()).collect();
        for pid in pids {
            self.send_to(
                &pid,
                Resp::RoomUpdate(lk::RoomUpdate {
                    room: Some(info.clone()),
                }),
            );
        }
        Ok(info)
    }
}

fn metadata_too_large() -> TwirpError {
    TwirpError::invalid(format!("metadata is larger than {MAX_METADATA} bytes"))
}
