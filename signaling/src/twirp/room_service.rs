//! `livekit.RoomService`: each method decodes its request, checks its grant and the
//! request's own fields, and runs on the room's task (`rtc::roomservice`).
//!
//! Grants, as LiveKit checks them: `roomCreate` for CreateRoom and DeleteRoom, `roomList`
//! for ListRooms, and `roomAdmin` with `room` equal to the request's room for the rest
//! (PerformRpc included).

use prism_proto::livekit as lk;
use prost::Message;
use prost_reflect::MethodDescriptor;

use super::codec::{self, Codec};
use super::{Code, TwirpError};
pub use crate::app::RoomServiceOptions;
use crate::auth::Claims;
use crate::egress::auto::AutoEgress;
use crate::rtc::roomservice::{check_metadata, check_send_data};
use crate::rtc::{RoomManager, RoomName, RoomOptions};

/// The service's full name, as in the path.
pub const SERVICE: &str = "livekit.RoomService";

/// One RoomService request, authenticated but not yet decoded.
#[derive(Debug)]
pub struct Call<'a> {
    pub rooms: &'a RoomManager,
    pub claims: &'a Claims,
    pub codec: Codec,
    pub method: &'a MethodDescriptor,
    pub body: &'a [u8],
    pub options: RoomServiceOptions,
}

fn required(what: &str, value: &str) -> Result<(), TwirpError> {
    if value.is_empty() {
        Err(TwirpError::invalid(format!("{what} is required")))
    } else {
        Ok(())
    }
}

impl Call<'_> {
    fn request<T: Message + Default>(&self) -> Result<T, TwirpError> {
        codec::decode(self.codec, &self.method.input(), self.body)
    }

    fn reply<T: Message>(&self, msg: &T) -> Result<Vec<u8>, TwirpError> {
        codec::encode(self.codec, &self.method.output(), msg)
    }

    /// `roomAdmin` for `room`, which must be named.
    fn admin(&self, room: &str) -> Result<(), TwirpError> {
        required("room", room)?;
        self.claims.ensure_admin(room)?;
        Ok(())
    }

    /// Runs the method; returns the encoded response.
    pub async fn run(self) -> Result<Vec<u8>, TwirpError> {
        let rooms = self.rooms;
        match self.method.name() {
            "CreateRoom" => {
                let req: lk::CreateRoomRequest = self.request()?;
                self.claims.ensure_create()?;
                required("name", &req.name)?;
                check_metadata(&req.metadata)?;
                // Auto-egress: a room composite is refused here, saying why.
                let egress = match &req.egress {
                    Some(e) => AutoEgress::from_request(e)?,
                    None => None,
                };
                let opts = RoomOptions {
                    empty_timeout: req.empty_timeout,
                    departure_timeout: req.departure_timeout,
                    max_participants: req.max_participants,
                    metadata: req.metadata.clone(),
                    agents: req.agents.clone(),
                    egress,
                    sid: None,
                };
                let room = rooms.create_room(&RoomName::new(req.name), opts).await?;
                self.reply(&room)
            }
            "ListRooms" => {
                let req: lk::ListRoomsRequest = self.request()?;
                self.claims.ensure_list()?;
                let rooms = rooms.list_rooms(&req.names).await;
                self.reply(&lk::ListRoomsResponse { rooms })
            }
            "DeleteRoom" => {
                let req: lk::DeleteRoomRequest = self.request()?;
                self.claims.ensure_create()?;
                required("room", &req.room)?;
                rooms.delete_room(&RoomName::new(req.room)).await?;
                self.reply(&lk::DeleteRoomResponse {})
            }
            "ListParticipants" => {
                let req: lk::ListParticipantsRequest = self.request()?;
                self.admin(&req.room)?;
                let participants = rooms
                    .with_room(&RoomName::new(req.room), |r| Ok(r.api_list_participants()))
                    .await?;
                self.reply(&lk::ListParticipantsResponse { participants })
            }
            "GetParticipant" => {
                let req: lk::RoomParticipantIdentity = self.request()?;
                self.admin(&req.room)?;
                required("identity", &req.identity)?;
                let room = RoomName::new(req.room);
                let p = rooms
                    .with_room(&room, move |r| r.api_get_participant(&req.identity))
                    .await?;
                self.reply(&p)
            }
            "RemoveParticipant" => {
                let req: lk::RoomParticipantIdentity = self.request()?;
                self.admin(&req.room)?;
                required("identity", &req.identity)?;
                let room = RoomName::new(req.room);
                rooms
                    .with_room(&room, move |r| r.api_remove_participant(&req.identity))
                    .await?;
                self.reply(&lk::RemoveParticipantResponse {})
            }
            "MutePublishedTrack" => {
                let req: lk::MuteRoomTrackRequest = self.request()?;
                self.admin(&req.room)?;
                required("identity", &req.identity)?;
                required("track_sid", &req.track_sid)?;
                let allow = self.options.enable_remote_unmute;
                let room = RoomName::new(req.room.clone());
                let track = rooms
                    .with_room(&room, move |r| r.api_mute_track(&req, allow))
                    .await?;
                self.reply(&lk::MuteRoomTrackResponse { track: Some(track) })
            }
            "UpdateParticipant" => {
                let req: lk::UpdateParticipantRequest = self.request()?;
                self.admin(&req.room)?;
                required("identity", &req.identity)?;
                check_metadata(&req.metadata)?;
                let room = RoomName::new(req.room.clone());
                let p = rooms
                    .with_room(&room, move |r| r.api_update_participant(&req))
                    .await?;
                self.reply(&p)
            }
            "UpdateSubscriptions" => {
                let req: lk::UpdateSubscriptionsRequest = self.request()?;
                self.admin(&req.room)?;
                required("identity", &req.identity)?;
                let room = RoomName::new(req.room.clone());
                rooms
                    .with_room(&room, move |r| r.api_update_subscriptions(&req))
                    .await?;
                self.reply(&lk::UpdateSubscriptionsResponse {})
            }
            "SendData" => {
                let req: lk::SendDataRequest = self.request()?;
                self.admin(&req.room)?;
                check_send_data(&req)?;
                let room = RoomName::new(req.room.clone());
                rooms
                    .with_room(&room, move |r| r.api_send_data(&req))
                    .await?;
                self.reply(&lk::SendDataResponse {})
            }
            "UpdateRoomMetadata" => {
                let req: lk::UpdateRoomMetadataRequest = self.request()?;
                self.admin(&req.room)?;
                check_metadata(&req.metadata)?;
                let room = RoomName::new(req.room);
                let metadata = req.metadata;
                let info = rooms
                    .with_room(&room, move |r| r.api_update_room_metadata(&metadata))
                    .await?;
                self.reply(&info)
            }
            "PerformRpc" => {
                let req: lk::PerformRpcRequest = self.request()?;
                self.admin(&req.room)?;
                required("destination_identity", &req.destination_identity)?;
                required("method", &req.method)?;
                let room = RoomName::new(req.room.clone());
                let payload = rooms.perform_rpc(&room, req).await?;
                self.reply(&lk::PerformRpcResponse { payload })
            }
            // A method in the .proto without a handler here.
            other => Err(TwirpError::new(
                Code::Unimplemented,
                format!("{SERVICE}/{other} is not implemented"),
            )),
        }
    }
}
