//! What the cluster keeps in Redis, and the pure decisions taken on it.
//!
//! Keys (prefix `prism:`; a room's key carries the room name as a `{…}` hash tag so each
//! script touches one Redis Cluster slot and never fails with `CROSSSLOT`):
//! - `prism:node:{N}`: [`NodeInfo`] as JSON, `SET … PX` [`LEASE_MS`], refreshed every
//!   [`REFRESH`]; gone within seconds of the node's death.
//! - `prism:nodes`: sorted set node id → last refresh (ms), to list nodes without `SCAN`.
//! - `prism:room:{R}`: hash `owner`, `epoch`, `sid`, `created_ms`. The epoch goes up by
//!   one at each change of owner, and every write by an owner compares owner and epoch
//!   first ([`CLAIM`], [`TOUCH`], [`RELEASE`], [`HANDOFF`]): an owner that was stopped or
//!   cut off and comes back finds the epoch moved on and closes its copy of the room. The
//!   sid is written by the first claim and kept by every later one, so the room keeps its
//!   sid when it moves to another node (owner dead, superseded or drained); a room that
//!   closes normally has its record deleted and a later room of that name gets a new sid.
//! - `prism:rooms`: hash name → [`RoomEntry`] (owner, epoch, the `Room` as LiveKit lists
//!   it), written by owners after a successful [`TOUCH`], read by ListRooms.
//! - `prism:reserve:{N}`: packets per second promised to N by recent placements, expiring
//!   after [`RESERVE_MS`], so that nodes placing rooms at once do not all pick the same
//!   emptiest node from the same two-second-old figures.
//!
//! Anything read back is checked: a malformed entry is skipped (and logged by the caller),
//! never trusted and never a panic.

use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// How often a node renews its lease, publishes its load and checks its rooms.
pub const REFRESH: Duration = Duration::from_secs(2);
/// A node's lease: three missed refreshes and it is gone.
pub const LEASE_MS: u64 = 6000;
/// How long a placement's reservation counts against the chosen node.
pub const RESERVE_MS: u64 = 4000;
/// Packets per second a new room is assumed to bring until its real rate shows.
pub const RESERVE_PPS: u64 = 500;
/// Above this share of its capacity a node is placed on only when all are.
pub const HIGH_WATER: f64 = 0.85;

pub const NODES: &str = "prism:nodes";
pub const ROOMS: &str = "prism:rooms";

pub fn node_key(id: &str) -> String {
    format!("prism:node:{{{id}}}")
}

pub fn room_key(room: &str) -> String {
    format!("prism:room:{{{room}}}")
}

pub fn reserve_key(id: &str) -> String {
    format!("prism:reserve:{{{id}}}")
}

/// A node's state in the directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeState {
    Serving,
    Draining,
}

/// What a node says about itself (`prism:node:{N}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub boot_ms: u64,
    pub state: NodeState,
    #[serde(default)]
    pub region: String,
    /// `host:port` of the node's HTTP server for other nodes.
    pub http: String,
    /// The media cores' UDP addresses, as clients are given them.
    #[serde(default)]
    pub media: Vec<String>,
    /// The IPs clients are given for media there (`rtc.node_ip`), most preferred first.
    #[serde(default)]
    pub media_ips: Vec<String>,
    /// Where other nodes send relayed media (rooms spanning nodes); the port is the core's.
    #[serde(default)]
    pub relay_ip: String,
    /// Packets per second (in + out) the node takes when full.
    pub capacity_pps: u64,
    /// Packets per second received, per media core, over the last refresh.
    #[serde(default)]
    pub pps_in: Vec<u64>,
    /// Packets per second sent, per media core.
    #[serde(default)]
    pub pps_out: Vec<u64>,
    #[serde(default)]
    pub rooms: u32,
    pub updated_ms: u64,
}

impl NodeInfo {
    pub fn pps(&self) -> u64 {
        self.pps_in.iter().chain(&self.pps_out).sum()
    }

    /// The share of its capacity in use, with `reserved` more on top.
    pub fn load(&self, reserved: u64) -> f64 {
        (self.pps() + reserved) as f64 / self.capacity_pps.max(1) as f64
    }

    /// Parses a directory entry; `None` (for the caller to log) when it is not one.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let n: NodeInfo = serde_json::from_slice(bytes).ok()?;
        let addr_ok = n.http.parse::<std::net::SocketAddr>().is_ok();
        (!n.id.is_empty() && addr_ok && n.capacity_pps > 0).then_some(n)
    }
}

/// A room as ListRooms shows it (`prism:rooms`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoomEntry {
    pub owner: String,
    pub epoch: u64,
    /// The `livekit.Room` message, protobuf, base64.
    pub room: String,
}

impl RoomEntry {
    pub fn new(owner: &str, epoch: u64, room: &prism_proto::livekit::Room) -> Self {
        use prost::Message as _;
        Self {
            owner: owner.to_owned(),
            epoch,
            room: base64::engine::general_purpose::STANDARD.encode(room.encode_to_vec()),
        }
    }

    /// The entry's room; `None` when the entry is malformed.
    pub fn parse(bytes: &[u8]) -> Option<(Self, prism_proto::livekit::Room)> {
        use prost::Message as _;
        let e: RoomEntry = serde_json::from_slice(bytes).ok()?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&e.room)
            .ok()?;
        let room = prism_proto::livekit::Room::decode(raw.as_slice()).ok()?;
        Some((e, room))
    }
}

/// Claims `KEYS[1]` (a room) for `ARGV[1]` when it has no owner (never had one, or was
/// handed off) or its owner is `ARGV[2]` (seen dead by the caller just before); `ARGV[3]`:
/// now, ms; `ARGV[4]`: a fresh room sid, kept only if the room has none yet (its first
/// claim), so that every later owner serves the room under the same sid. Answers the
/// owner, epoch and sid after the call, whoever won.
pub const CLAIM: &str = r"
local owner = redis.call('HGET', KEYS[1], 'owner')
local epoch = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0') or 0
local sid = redis.call('HGET', KEYS[1], 'sid')
if owner and owner ~= '' and owner ~= ARGV[2] then
  return {owner, epoch, sid or ''}
end
epoch = epoch + 1
if not sid or sid == '' then
  sid = ARGV[4]
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', epoch, 'sid', sid)
if redis.call('HEXISTS', KEYS[1], 'created_ms') == 0 then
  redis.call('HSET', KEYS[1], 'created_ms', ARGV[3])
end
redis.call('PERSIST', KEYS[1])
return {ARGV[1], epoch, sid}
";

/// An owner's check at each refresh: `KEYS[1]` still says owner `ARGV[1]` at epoch
/// `ARGV[2]` (1), or someone else holds it (0). A record lost with Redis's data (a
/// restart without persistence) is written back as it was (2), with the room's sid
/// `ARGV[4]`: the owner re-registers its rooms.
pub const TOUCH: &str = r"
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', ARGV[2], 'created_ms', ARGV[3], 'sid', ARGV[4])
  return 2
end
if owner == ARGV[1] and redis.call('HGET', KEYS[1], 'epoch') == ARGV[2] then
  return 1
end
return 0
";

/// Deletes `KEYS[1]` if it is still owner `ARGV[1]` at epoch `ARGV[2]` (1), else 0.
pub const RELEASE: &str = r"
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1]
   and redis.call('HGET', KEYS[1], 'epoch') == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// Hands `KEYS[1]` off if it is still owner `ARGV[1]` at epoch `ARGV[2]` (1), else 0: the
/// owner is cleared but the epoch and the sid stay, so that the next join claims the room
/// on another node under the same sid and at a higher epoch (a stale copy is still
/// fenced). A record nobody claims again expires after `ARGV[3]` ms.
pub const HANDOFF: &str = r"
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1]
   and redis.call('HGET', KEYS[1], 'epoch') == ARGV[2] then
  redis.call('HSET', KEYS[1], 'owner', '')
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
";

/// How long a handed-off room's record (its epoch and sid) waits for a new owner.
pub const HANDOFF_MS: u64 = 3_600_000;

/// The nodes a new room may go to: serving, and in `region` when any is there.
pub fn candidates<'a>(nodes: &'a [NodeInfo], region: &str) -> Vec<&'a NodeInfo> {
    let serving: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| n.state == NodeState::Serving)
        .collect();
    let local: Vec<&NodeInfo> = serving
        .iter()
        .copied()
        .filter(|n| !region.is_empty() && n.region == region)
        .collect();
    if local.is_empty() {
        serving
    } else {
        local
    }
}

/// Power of two choices: two distinct candidates drawn at random (`pick(n)` gives an
/// index below `n`), the one with more headroom kept. Nodes above [`HIGH_WATER`] are
/// drawn from only when every node is.
pub fn two_choices<'a>(
    candidates: &[&'a NodeInfo],
    reserved: impl Fn(&str) -> u64,
    mut pick: impl FnMut(usize) -> usize,
) -> Option<&'a NodeInfo> {
    let cool: Vec<&NodeInfo> = candidates
        .iter()
        .copied()
        .filter(|n| n.load(reserved(&n.id)) < HIGH_WATER)
        .collect();
    let pool = if cool.is_empty() {
        candidates.to_vec()
    } else {
        cool
    };
    match pool.len() {
        0 => None,
        1 => Some(pool[0]),
        n => {
            let a = pick(n);
            let mut b = pick(n - 1);
            if b >= a {
                b += 1;
            }
            let (x, y) = (pool[a], pool[b]);
            Some(if y.load(reserved(&y.id)) < x.load(reserved(&x.id)) {
                y
            } else {
                x
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, pps: u64, state: NodeState) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            boot_ms: 1,
            state,
            region: String::new(),
            http: "127.0.0.1:1".into(),
            media: vec![],
            media_ips: vec![],
            relay_ip: String::new(),
            capacity_pps: 10_000,
            pps_in: vec![pps],
            pps_out: vec![0],
            rooms: 0,
            updated_ms: 1,
        }
    }

    #[test]
    fn entries_round_trip_and_garbage_is_refused() {
        let n = node("a", 5, NodeState::Serving);
        let bytes = serde_json::to_vec(&n).unwrap();
        assert_eq!(NodeInfo::parse(&bytes), Some(n));
        assert_eq!(NodeInfo::parse(b"\xff{not json"), None);
        assert_eq!(NodeInfo::parse(br#"{"id":"x"}"#), None);
        let mut bad = node("a", 5, NodeState::Serving);
        bad.http = "nowhere".into();
        assert_eq!(NodeInfo::parse(&serde_json::to_vec(&bad).unwrap()), None);
        let room = prism_proto::livekit::Room {
            name: "r".into(),
            sid: "RM_x".into(),
            ..Default::default()
        };
        let e = RoomEntry::new("a", 3, &room);
        let (back, r) = RoomEntry::parse(&serde_json::to_vec(&e).unwrap()).unwrap();
        assert_eq!((back.epoch, r.name.as_str()), (3, "r"));
        assert!(RoomEntry::parse(br#"{"owner":"a","epoch":1,"room":"!!"}"#).is_none());
    }

    #[test]
    fn keys_keep_a_room_in_one_slot() {
        assert_eq!(room_key("demo"), "prism:room:{demo}");
        assert_eq!(node_key("N1"), "prism:node:{N1}");
    }

    #[test]
    fn placement_prefers_headroom_and_skips_draining_and_hot_nodes() {
        let nodes = vec![
            node("hot", 9_500, NodeState::Serving),
            node("cool", 100, NodeState::Serving),
            node("warm", 4_000, NodeState::Serving),
            node("drain", 0, NodeState::Draining),
        ];
        let c = candidates(&nodes, "");
        assert_eq!(c.len(), 3);
        // Every pair drawn keeps the lighter node; the hot one is never drawn.
        for a in 0..2 {
            for b in 0..1 {
                let mut seq = [a, b].into_iter();
                let got = two_choices(&c, |_| 0, |_| seq.next().unwrap()).unwrap();
                assert_ne!(got.id, "hot");
            }
        }
        let mut seq = [0, 0].into_iter();
        let got = two_choices(&c, |_| 0, |_| seq.next().unwrap()).unwrap();
        assert_eq!(got.id, "cool");
        // A reservation makes the cool node look warmer than the warm one.
        let mut seq = [0, 0].into_iter();
        let got = two_choices(
            &c,
            |id| if id == "cool" { 5_000 } else { 0 },
            |_| seq.next().unwrap(),
        )
        .unwrap();
        assert_eq!(got.id, "warm");
        // All hot: still placed somewhere.
        let hot = vec![node("h", 9_900, NodeState::Serving)];
        assert_eq!(
            two_choices(&candidates(&hot, ""), |_| 0, |_| 0).unwrap().id,
            "h"
        );
        assert!(two_choices(&[], |_| 0, |_| 0).is_none());
    }
}
