//! `livekit.RoomService`: each method decodes its request, checks its grant and the
//! request's own fields, and runs on the hub (`livekit::hub::roomservice`).
//!
//! Grants, as LiveKit checks them: `roomCreate` for CreateRoom and DeleteRoom, `roomList`
//! for ListRooms, and `roomAdmin` with `room` equal to the request's room for the rest.

use prism_proto::livekit as lk;
use prost::Message;
use prost_reflect::MethodDescriptor;

use super::codec::{self, Codec};
use super::{Code, TwirpError};
use crate::auth::Claims;
use crate::livekit::{Hub, HubHandle};

/// The service's full name, as in the path.
pub const SERVICE: &str = "livekit.RoomService";

/// Server settings that change what RoomService allows.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoomServiceOptions {
    /// Whether MutePublishedTrack may unmute (LiveKit's `room.enable_remote_unmute`, off by
    /// default: the server can silence someone, never make them heard).
    pub enable_remote_unmute: bool,
}

/// One RoomService request, authenticated but not yet decoded.
#[derive(Debug)]
pub struct Call<'a> {
    pub hub: &'a HubHandle,
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

    async fn on_hub<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Hub) -> Result<R, TwirpError> + Send + 'static,
    ) -> Result<R, TwirpError> {
        self.hub.call(f).await.unwrap_or_else(|| {
            Err(TwirpError::new(
                Code::Unavailable,
                "the server is shutting down",
            ))
        })
    }

    /// Runs the method; returns the encoded response.
    pub async fn run(self) -> Result<Vec<u8>, TwirpError> {
        match self.method.name() {
            "CreateRoom" => {
                let req: lk::CreateRoomRequest = self.request()?;
                self.claims.ensure_create()?;
                required("name", &req.name)?;
                let room = self.on_hub(move |h| h.api_create_room(&req)).await?;
                self.reply(&room)
            }
            "ListRooms" => {
                let req: lk::ListRoomsRequest = self.request()?;
                self.claims.ensure_list()?;
                let rooms = self
                    .on_hub(move |h| Ok(h.api_list_rooms(&req.names)))
                    .await?;
                self.reply(&rooms)
            }
            "DeleteRoom" => {
                let req: lk::DeleteRoomRequest = self.request()?;
                self.claims.ensure_create()?;
                required("room", &req.room)?;
                self.on_hub(move |h| h.api_delete_room(&req.room)).await?;
                self.reply(&lk::DeleteRoomResponse {})
            }
            "ListParticipants" => {
                let req: lk::ListParticipantsRequest = self.request()?;
                self.admin(&req.room)?;
                let participants = self
                    .on_hub(move |h| h.api_list_participants(&req.room))
                    .await?;
                self.reply(&lk::ListParticipantsResponse { participants })
            }
            "GetParticipant" => {
                let req: lk::RoomParticipantIdentity = self.request()?;
                self.admin(&req.room)?;
                required("identity", &req.identity)?;
                let p = self
                    .on_hub(move |h| h.api_get_participant(&req.room, &req.identity))
                    .await?;
                self.reply(&p)
            }
            "RemoveParticipant" => {
                let req: lk::RoomParticipantIdentity = self.request()?;
                self.admin(&req.room)?;
                required("identity", &req.identity)?;
                self.on_hub(move |h| h.api_remove_participant(&req.room, &req.identity))
                    .await?;
                self.reply(&lk::RemoveParticipantResponse {})
            }
            "MutePublishedTrack" => {
                let req: lk::MuteRoomTrackRequest = self.request()?;
                self.admin(&req.room)?;
                required("identity", &req.identity)?;
                required("track_sid", &req.track_sid)?;
                let allow = self.options.enable_remote_unmute;
                let track = self.on_hub(move |h| h.api_mute_track(&req, allow)).await?;
                self.reply(&lk::MuteRoomTrackResponse { track: Some(track) })
            }
            "UpdateParticipant" => {
                let req: lk::UpdateParticipantRequest = self.request()?;
                self.admin(&req.room)?;
                required("identity", &req.identity)?;
                let p = self.on_hub(move |h| h.api_update_participant(&req)).await?;
                self.reply(&p)
            }
            "UpdateSubscriptions" => {
                let req: lk::UpdateSubscriptionsRequest = self.request()?;
                self.admin(&req.room)?;
                required("identity", &req.identity)?;
                self.on_hub(move |h| h.api_update_subscriptions(&req))
                    .await?;
                self.reply(&lk::UpdateSubscriptionsResponse {})
            }
            "SendData" => {
                let req: lk::SendDataRequest = self.request()?;
                self.admin(&req.room)?;
                self.on_hub(move |h| h.api_send_data(&req)).await?;
                self.reply(&lk::SendDataResponse {})
            }
            "UpdateRoomMetadata" => {
                let req: lk::UpdateRoomMetadataRequest = self.request()?;
                self.admin(&req.room)?;
                let room = self
                    .on_hub(move |h| h.api_update_room_metadata(&req.room, &req.metadata))
                    .await?;
                self.reply(&room)
            }
            // A method in the .proto without a handler here.
            other => Err(TwirpError::new(
                Code::Unimplemented,
                format!("{SERVICE}/{other} is not implemented"),
            )),
        }
    }
}
