//! Identifiers of the agent subsystem, as newtypes so that a worker id, a job id and a
//! dispatch id cannot stand in for each other (all three are strings on the wire).

use std::fmt;

use crate::rtc::ids::string_id;

string_id!(
    /// A registered worker (`AW_…`), one per `/agent` WebSocket.
    WorkerId
);
string_id!(
    /// A job (`AJ_…`): one agent in one room, possibly moved between workers.
    JobId
);
string_id!(
    /// A dispatch (`AD_…`): a request for an agent of some name in a room.
    DispatchId
);

impl WorkerId {
    pub fn fresh() -> Self {
        Self::new(format!("AW_{}", crate::media::random_alnum(12)))
    }
}

impl JobId {
    pub fn fresh() -> Self {
        Self::new(format!("AJ_{}", crate::media::random_alnum(12)))
    }
}

impl DispatchId {
    pub fn fresh() -> Self {
        Self::new(format!("AD_{}", crate::media::random_alnum(12)))
    }
}
