//! Draining a node with a deadline (SIGTERM in a cluster).
//!
//! Why: a node being replaced (a rolling deploy, a scale-in) should not cut calls short,
//! but a drain that waits for every room to end (LiveKit's) never ends while one room
//! lives on, and the operator ends up killing the node, calls and all. Prism lets rooms
//! run for a bounded time, then moves them.
//!
//! How: [`Cluster::drain_until`] turns the node DRAINING (`/readyz` 503 at once, the
//! state published in Redis right away): placements leave it out, so no new room is
//! created here, while the rooms it owns keep running and keep taking joins. It returns
//! when the node serves nothing any more (no room of its own, rooms that empty closing as
//! usual, and no media on its forwarder for rooms owned elsewhere), when the deadline
//! passes, or when the operator signals again. Then [`Cluster::move_away`] hands every
//! room off in Redis (owner cleared, epoch and sid kept: compare-and-set on the epoch) and
//! tells its clients to reconnect (`LeaveRequest{action: RECONNECT}`): LiveKit's SDKs
//! reconnect through the load balancer to a ready node, whose first join claims the room
//! again, under the same sid.

use std::future::Future;
use std::time::Duration;

use prism_proto::control as pb;

use super::Cluster;
use crate::rtc::RoomManager;

/// `cluster.drain_timeout` when not set: ten minutes (see `docs/decisions.md`).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

/// How often a draining node looks whether it still has rooms.
const EMPTY_CHECK: Duration = Duration::from_millis(500);

/// Why a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainEnd {
    /// Every room closed by itself, and no media is left here.
    Empty,
    /// The deadline passed with rooms still open.
    Deadline,
    /// The operator asked again (a second SIGTERM or SIGINT).
    Interrupted,
}

impl std::fmt::Display for DrainEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DrainEnd::Empty => "every room closed",
            DrainEnd::Deadline => "the deadline passed",
            DrainEnd::Interrupted => "a second signal came",
        })
    }
}

/// Rooms on this node's forwarder: its own rooms' and those other nodes' rooms keep here
/// (participants whose media terminates here); `None` if the forwarder did not say.
async fn media_rooms(rooms: &RoomManager) -> Option<u64> {
    let control = rooms.control().clone();
    let ev = tokio::task::spawn_blocking(move || {
        control.request(
            pb::command::Body::GetStats(pb::GetStats {}),
            Duration::from_secs(2),
        )
    })
    .await
    .ok()?
    .ok()?;
    match ev.body {
        Some(pb::event::Body::Stats(s)) => Some(s.cores.iter().map(|c| u64::from(c.rooms)).sum()),
        _ => None,
    }
}

impl Cluster {
    /// Drains this node: no new rooms, the rooms it has run on until they all close, the
    /// `timeout` passes or `interrupt` completes, whichever comes first.
    pub async fn drain_until(
        &self,
        rooms: &RoomManager,
        timeout: Duration,
        interrupt: impl Future<Output = ()>,
    ) -> DrainEnd {
        self.drain();
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline, interrupt);
        let mut check = tokio::time::interval(EMPTY_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut deadline => return DrainEnd::Deadline,
                () = &mut interrupt => return DrainEnd::Interrupted,
                _ = check.tick() => {
                    if rooms.list_rooms(&[]).await.is_empty() && media_rooms(rooms).await == Some(0) {
                        return DrainEnd::Empty;
                    }
                }
            }
        }
    }

    /// Hands every room off and tells their clients to reconnect, which brings them to
    /// other nodes (the end of a drain).
    pub async fn move_away(&self, rooms: &RoomManager) {
        self.leave().await;
        rooms.shutdown_moving().await;
    }
}
