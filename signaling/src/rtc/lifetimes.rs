//! How long a room lives: a room nobody joined closes after `empty_timeout`, and one whose
//! last participant left after `departure_timeout` (LiveKit's semantics and defaults).
//! Checked once a second by the room's own task.

use std::time::{Duration, Instant};

use prism_proto::livekit as lk;

use super::room::Room;

impl Room {
    pub(crate) fn tick(&mut self, now: Instant) {
        self.auto_egress_tick(now);
        let Some(since) = self.empty_since else {
            return;
        };
        let limit = if self.ever_joined {
            self.departure_timeout
        } else {
            self.empty_timeout
        };
        if now.saturating_duration_since(since) >= Duration::from_secs(u64::from(limit)) {
            self.close(lk::DisconnectReason::RoomClosed);
        }
    }

    /// Another node owns the room now (cluster fencing): everyone is told to reconnect,
    /// which brings them to the new owner, and this copy closes.
    pub(crate) fn superseded(&mut self) {
        self.leave_action = lk::leave_request::Action::Reconnect;
        self.close(lk::DisconnectReason::StateMismatch);
    }

    /// The server is going away: everyone is told (`SERVER_SHUTDOWN`) and the room closes.
    pub(crate) fn shutdown(&mut self) {
        self.stopping = true;
        self.close(lk::DisconnectReason::ServerShutdown);
    }
}
