//! RoomService operations on one room: what LiveKit's server API (Twirp, see
//! `crate::twirp`) does to a room and its participants.
//!
//! They run on the room's task like everything else that changes the room, so an API call
//! is ordered with the signaling around it: a participant removed here cannot be half-way
//! through a join or an offer. Each checks what it names and answers an [`RtcError`] for
//! what does not exist; grants are checked before the call reaches the room.

use prism_proto::livekit as lk;
use prost::Message as _;

use lk::signal_response::Message as Resp;

use super::data::{LOSSY_LABEL, RELIABLE_LABEL};
use super::error::RtcError;
use super::ids::{ParticipantSid, TrackSid};
use super::participant::Participant;
use super::room::{merge_attributes, Room};

/// Largest room or participant metadata accepted (LiveKit's default `max_metadata_size`).
pub const MAX_METADATA: usize = 64_000;

pub(crate) fn check_metadata(m: &str) -> Result<(), RtcError> {
    if m.len() > MAX_METADATA {
        Err(RtcError::Invalid(format!(
            "metadata is larger than {MAX_METADATA} bytes"
        )))
    } else {
        Ok(())
    }
}

/// A SendData request's own fields (checked before its room is looked up); its label.
pub fn check_send_data(req: &lk::SendDataRequest) -> Result<&'static str, RtcError> {
    if !req.nonce.is_empty() && req.nonce.len() != 16 {
        return Err(RtcError::Invalid(
            "nonce should be 16 bytes or not present".into(),
        ));
    }
    match lk::data_packet::Kind::try_from(req.kind) {
        Ok(lk::data_packet::Kind::Reliable) => Ok(RELIABLE_LABEL),
        Ok(lk::data_packet::Kind::Lossy) => Ok(LOSSY_LABEL),
        Err(_) => Err(RtcError::Invalid(format!("unknown data kind {}", req.kind))),
    }
}

impl Room {
    fn sid_of(&self, identity: &str) -> Result<ParticipantSid, RtcError> {
        self.by_identity(identity)
            .map(|p| p.sid.clone())
            .ok_or(RtcError::ParticipantNotFound)
    }

    fn info_of(&self, pid: &ParticipantSid) -> Result<lk::ParticipantInfo, RtcError> {
        self.participant(pid)
            .map(Participant::info)
            .ok_or(RtcError::ParticipantNotFound)
    }

    /// ListParticipants, hidden ones included (as LiveKit lists them to admins).
    pub fn api_list_participants(&self) -> Vec<lk::ParticipantInfo> {
        self.participants.iter().map(Participant::info).collect()
    }

    pub fn api_get_participant(&self, identity: &str) -> Result<lk::ParticipantInfo, RtcError> {
        self.info_of(&self.sid_of(identity)?)
    }

    /// RemoveParticipant: the participant is sent a leave (`PARTICIPANT_REMOVED`) and its
    /// session closes; the others see it disconnected. A WHIP/WHEP participant's
    /// transport closes and its resource is gone.
    pub fn api_remove_participant(&mut self, identity: &str) -> Result<(), RtcError> {
        let pid = self.sid_of(identity)?;
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
    ) -> Result<lk::TrackInfo, RtcError> {
        let pid = self.sid_of(&req.identity)?;
        if !req.muted && !allow_unmute {
            return Err(RtcError::FailedPrecondition("remote unmute not enabled"));
        }
        let track = self
            .set_muted(&pid, &TrackSid::new(req.track_sid.clone()), req.muted)
            .ok_or(RtcError::TrackNotFound)?;
        self.send_to(
            &pid,
            Resp::Mute(lk::MuteTrackRequest {
                sid: req.track_sid.clone(),
                muted: req.muted,
            }),
        );
        tracing::info!(room = %self.name, participant = %pid, track = %req.track_sid, muted = req.muted, "track muted by the API");
        Ok(track)
    }

    /// UpdateParticipant: metadata and name when not empty, attributes merged (an empty
    /// value deletes the key), and the permission replaced when given. Losing
    /// `can_publish` unpublishes the participant's tracks; losing `can_subscribe` ends its
    /// subscriptions; regaining it subscribes it again if it subscribes automatically.
    pub fn api_update_participant(
        &mut self,
        req: &lk::UpdateParticipantRequest,
    ) -> Result<lk::ParticipantInfo, RtcError> {
        check_metadata(&req.metadata)?;
        let pid = self.sid_of(&req.identity)?;
        let p = self
            .participant_mut(&pid)
            .ok_or(RtcError::ParticipantNotFound)?;
        if !req.metadata.is_empty() {
            p.metadata = req.metadata.clone();
        }
        if !req.name.is_empty() {
            p.name = req.name.clone();
        }
        merge_attributes(&mut p.attributes, &req.attributes);
        let mut unpublish = Vec::new();
        let mut unsubscribe = Vec::new();
        let mut resubscribe = false;
        if let Some(perm) = &req.permission {
            let old = std::mem::replace(&mut p.permission, perm.clone());
            if old.can_publish && !perm.can_publish {
                unpublish = p.tracks.iter().map(super::PubTrack::sid).collect();
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
            self.unpublish(&pid, t);
        }
        for t in &unsubscribe {
            self.unsubscribe(&pid, t, true);
        }
        if resubscribe {
            self.subscribe_existing(&pid);
        }
        self.announce(&pid);
        self.info_of(&pid)
    }

    /// UpdateSubscriptions: subscribes the participant to the tracks named, or
    /// unsubscribes it, as if it had asked itself.
    pub fn api_update_subscriptions(
        &mut self,
        req: &lk::UpdateSubscriptionsRequest,
    ) -> Result<(), RtcError> {
        let pid = self.sid_of(&req.identity)?;
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
    pub fn api_send_data(&mut self, req: &lk::SendDataRequest) -> Result<usize, RtcError> {
        let label = check_send_data(req)?;
        let named = !req.destination_identities.is_empty() || !req.destination_sids.is_empty();
        let mut dests = req.destination_identities.clone();
        for sid in &req.destination_sids {
            if let Some(p) = self.participant(&ParticipantSid::new(sid.clone())) {
                dests.push(p.identity.to_string());
            }
        }
        // Recipients were named but none is here: nobody gets it (an empty list would mean
        // everyone).
        let any_here = self
            .participants
            .iter()
            .any(|p| dests.iter().any(|d| p.identity == *d.as_str()));
        if named && !any_here {
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
        Ok(self.deliver_data(None, &dests, label, &packet.encode_to_vec()))
    }

    /// UpdateRoomMetadata: everyone in the room gets a room update.
    pub fn api_update_room_metadata(&mut self, metadata: &str) -> Result<lk::Room, RtcError> {
        check_metadata(metadata)?;
        self.metadata = metadata.to_owned();
        let info = self.info();
        self.send_all(
            &Resp::RoomUpdate(lk::RoomUpdate {
                room: Some(info.clone()),
            }),
            None,
        );
        Ok(info)
    }
}
