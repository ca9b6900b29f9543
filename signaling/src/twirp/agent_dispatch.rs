//! `livekit.AgentDispatchService`: explicit agent dispatch on a room, as LiveKit's
//! `agent_dispatch_service.go` serves it. Every method needs `roomAdmin` for the request's
//! room. CreateDispatch opens the room if it is not (LiveKit creates rooms on demand
//! too); DeleteDispatch ends the dispatch's jobs, and their workers are told to stop them
//! (the agent leaves the room).

use prism_proto::livekit as lk;
use prost::Message;
use prost_reflect::MethodDescriptor;

use super::codec::{self, Codec};
use super::{Code, TwirpError};
use crate::agent::AgentService;
use crate::auth::Claims;
use crate::rtc::roomservice::check_metadata;
use crate::rtc::{RoomManager, RoomName, RoomOptions};

/// The service's full name, as in the path.
pub const SERVICE: &str = "livekit.AgentDispatchService";

/// One AgentDispatchService request, authenticated but not yet decoded.
#[derive(Debug)]
pub struct Call<'a> {
    pub rooms: &'a RoomManager,
    pub agents: &'a AgentService,
    pub claims: &'a Claims,
    pub codec: Codec,
    pub method: &'a MethodDescriptor,
    pub body: &'a [u8],
}

impl Call<'_> {
    fn request<T: Message + Default>(&self) -> Result<T, TwirpError> {
        codec::decode(self.codec, &self.method.input(), self.body)
    }

    fn reply<T: Message>(&self, msg: &T) -> Result<Vec<u8>, TwirpError> {
        codec::encode(self.codec, &self.method.output(), msg)
    }

    fn admin(&self, room: &str) -> Result<(), TwirpError> {
        if room.is_empty() {
            return Err(TwirpError::invalid("room is required"));
        }
        self.claims.ensure_admin(room)?;
        Ok(())
    }

    /// Runs the method; returns the encoded response.
    pub async fn run(self) -> Result<Vec<u8>, TwirpError> {
        match self.method.name() {
            "CreateDispatch" => {
                let req: lk::CreateAgentDispatchRequest = self.request()?;
                self.admin(&req.room)?;
                check_metadata(&req.metadata)?;
                let room = RoomName::new(req.room.clone());
                self.rooms
                    .create_room(&room, RoomOptions::default())
                    .await?;
                let d = self.agents.create_dispatch(req).await?;
                self.reply(&d)
            }
            "DeleteDispatch" => {
                let req: lk::DeleteAgentDispatchRequest = self.request()?;
                self.admin(&req.room)?;
                let d = self
                    .agents
                    .delete_dispatch(RoomName::new(req.room), req.dispatch_id)
                    .await?;
                self.reply(&d)
            }
            "ListDispatch" => {
                let req: lk::ListAgentDispatchRequest = self.request()?;
                self.admin(&req.room)?;
                let agent_dispatches = self
                    .agents
                    .list_dispatch(RoomName::new(req.room), req.dispatch_id)
                    .await?;
                self.reply(&lk::ListAgentDispatchResponse { agent_dispatches })
            }
            other => Err(TwirpError::new(
                Code::Unimplemented,
                format!("{SERVICE}/{other} is not implemented"),
            )),
        }
    }
}
