//! What the rest of the server learns about a room's life: its start and end, and who
//! joins, publishes and leaves. The agent dispatcher (`crate::agent`) is the one listener;
//! rooms call it through this trait so that the room model does not depend on it.
//!
//! Every method is called from the room's own task and must return at once (queue the
//! news, never wait): a room never waits on another part of the server.

use prism_proto::livekit as lk;

use super::ids::RoomName;
use crate::auth::Claims;

/// The agents a join token asks for (its `roomConfig.agents`), as dispatches.
pub fn token_agents(claims: &Claims) -> Vec<lk::RoomAgentDispatch> {
    claims
        .room_config_agents()
        .into_iter()
        .map(|a| lk::RoomAgentDispatch {
            agent_name: a.agent_name,
            metadata: a.metadata,
            attributes: a.attributes,
            ..Default::default()
        })
        .collect()
}

/// Receives a room's lifecycle events.
pub trait RoomObserver: Send + Sync {
    /// The room started; `agents` are the dispatches it was created with (CreateRoom's
    /// `agents`, or the first joiner's token `roomConfig.agents`).
    fn room_started(&self, room: &lk::Room, agents: &[lk::RoomAgentDispatch]);
    /// A participant joined with a token asking for `agents`: those not yet dispatched in
    /// the room are added.
    fn agents_requested(&self, room: &RoomName, agents: &[lk::RoomAgentDispatch]);
    /// A participant (of any kind) joined.
    fn participant_joined(&self, room: &lk::Room, participant: &lk::ParticipantInfo);
    /// A participant published its first track.
    fn publisher_started(&self, room: &lk::Room, participant: &lk::ParticipantInfo);
    /// A participant left.
    fn participant_left(&self, room: &RoomName, participant: &lk::ParticipantInfo);
    /// The room closed.
    fn room_closed(&self, room: &RoomName);
}

/// The observer of a server without agents (and of tests): ignores everything.
#[derive(Debug, Default)]
pub struct NoObserver;

impl RoomObserver for NoObserver {
    fn room_started(&self, _: &lk::Room, _: &[lk::RoomAgentDispatch]) {}
    fn agents_requested(&self, _: &RoomName, _: &[lk::RoomAgentDispatch]) {}
    fn participant_joined(&self, _: &lk::Room, _: &lk::ParticipantInfo) {}
    fn publisher_started(&self, _: &lk::Room, _: &lk::ParticipantInfo) {}
    fn participant_left(&self, _: &RoomName, _: &lk::ParticipantInfo) {}
    fn room_closed(&self, _: &RoomName) {}
}
