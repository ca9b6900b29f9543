//! The token a job's agent joins its room with, as LiveKit's `BuildAgentToken` mints it:
//! signed with the key the worker registered with, so that whoever may run workers with a
//! key gets agents in rooms with that key's authority and no other.

use std::collections::HashMap;

use crate::auth::{sign, Claims, VideoGrant};
use crate::rtc::RoomName;

use super::dispatcher::{Now, Registration};

/// How long an agent's token is valid (as LiveKit mints them).
pub const AGENT_TOKEN_TTL_S: u64 = 3600;

/// The attribute LiveKit sets on an agent participant: the name it was dispatched under.
pub const AGENT_NAME_ATTRIBUTE: &str = "lk.agent_name";

/// The token a job's agent joins with (LiveKit's `BuildAgentToken`): room join for the
/// job's room, the `agent` grant, kind `agent`, the worker's permissions, one hour.
pub(crate) fn agent_token(
    reg: &Registration,
    room: &RoomName,
    identity: &str,
    name: &str,
    metadata: &str,
    attributes: HashMap<String, String>,
    now: Now,
) -> String {
    let p = &reg.permissions;
    let secs = u64::try_from(now.unix_ms / 1000).unwrap_or(0);
    let claims = Claims {
        iss: reg.api_key.clone(),
        sub: identity.to_owned(),
        nbf: Some(secs),
        exp: Some(secs + AGENT_TOKEN_TTL_S),
        name: name.to_owned(),
        metadata: metadata.to_owned(),
        attributes,
        kind: "agent".into(),
        video: Some(VideoGrant {
            room_join: true,
            room: room.to_string(),
            agent: true,
            can_publish: Some(p.can_publish),
            can_subscribe: Some(p.can_subscribe),
            can_publish_data: Some(p.can_publish_data),
            can_update_own_metadata: Some(p.can_update_metadata),
            hidden: p.hidden,
            ..Default::default()
        }),
        ..Default::default()
    };
    sign(&claims, &reg.api_secret)
}
