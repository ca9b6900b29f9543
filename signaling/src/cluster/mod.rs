//! Several Prism nodes sharing rooms through Redis (phase 1: a room lives on one node).
//!
//! Why: one node's media plane has a ceiling, and one node is one failure. With a
//! `redis:` section, every node registers in Redis, each room gets one *owner* node, and
//! any node serves any client by carrying its session to the owner. Without it, none of
//! this exists and Prism is the single node it always was.
//!
//! How:
//! - Redis is the directory, lease store and load board ([`directory`]), never the path of
//!   signaling messages: node-to-node traffic goes direct ([`peer`]), so a slow or absent
//!   Redis never delays a running call.
//! - Each process gets a fresh node id. Every [`REFRESH`](directory::REFRESH) it renews
//!   its lease with its state and measured packet rates, and checks each room it owns:
//!   if the room's epoch moved on (it was stopped or cut off and another node took the
//!   room), it closes its copy at once, telling clients to reconnect.
//! - A room is placed where the measured packet rate leaves most headroom (power of two
//!   choices, with short reservations so concurrent placements spread), and claimed by
//!   one atomic script: concurrent joins of a new room through different nodes all end
//!   on the same owner.
//! - Readiness (`/readyz`) is Redis reachable and this node serving; liveness
//!   (`/healthz`) never depends on Redis, so an outage cannot get healthy nodes killed.

pub mod api;
pub mod directory;
pub mod drain;
pub mod media_link;
pub mod peer;
pub mod replay;
pub mod store;
pub mod whip;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};
use prism_proto::control as pb;

use crate::http::{text, Body};
use crate::rtc::{RoomManager, RoomName};
use directory::{NodeInfo, NodeState, RoomEntry};
pub use store::{Store, StoreError};

/// A room whose claim this node took but which has not opened here is released after
/// this long (a join that failed, a client that went away before joining).
const UNUSED_CLAIM: Duration = Duration::from_secs(10);

/// Default capacity, packets per second per media core.
pub const DEFAULT_CAPACITY_PER_CORE: u64 = 200_000;

/// What this node needs to join a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub redis: crate::config::RedisConfig,
    /// Signs node-to-node requests.
    pub secret: Vec<u8>,
    /// Where other nodes reach this node's HTTP server.
    pub http: SocketAddr,
    pub media: Vec<String>,
    /// What clients are given for media here, most preferred first.
    pub media_ips: Vec<std::net::IpAddr>,
    /// Where other nodes send relayed media to this node.
    pub relay_ip: std::net::IpAddr,
    /// Whether a client's media terminates on the node it reached when the room's owner
    /// is another (a room spanning nodes); off: all of a room's media is on its owner.
    pub span_rooms: bool,
    pub capacity_pps: u64,
    pub region: String,
}

/// Counted for `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterCounters {
    pub proxied_sessions: AtomicU64,
    pub proxied_frames: AtomicU64,
    pub forwarded_calls: AtomicU64,
    pub forged_refused: AtomicU64,
    pub replayed_refused: AtomicU64,
    pub malformed_entries: AtomicU64,
    pub superseded_rooms: AtomicU64,
    pub claims_won: AtomicU64,
}

#[derive(Clone, Debug)]
struct Claim {
    epoch: u64,
    /// The room's sid in the directory (empty if the record has none).
    sid: String,
    since: Instant,
}

/// This node's membership of the cluster. Shared behind an `Arc`.
pub struct Cluster {
    pub id: String,
    pub(crate) secret: Vec<u8>,
    store: Store,
    http: SocketAddr,
    media: Vec<String>,
    media_ips: Vec<std::net::IpAddr>,
    relay_ip: std::net::IpAddr,
    span_rooms: bool,
    /// Media links to other nodes, by node id (see `media_link`).
    links: Mutex<HashMap<String, media_link::Link>>,
    capacity_pps: u64,
    region: String,
    boot_ms: u64,
    draining: AtomicBool,
    /// Set by [`Cluster::leave`]: the refresh loop stops writing.
    left: AtomicBool,
    /// Whether the last Redis call of the refresh loop succeeded.
    reachable: AtomicBool,
    claims: Mutex<HashMap<String, Claim>>,
    /// Wakes the refresh loop before its next tick (the node started draining).
    wake: tokio::sync::Notify,
    /// When the last refresh that checked this node's rooms (or found Redis unreachable)
    /// started: see [`Cluster::lapsed`].
    checked: Mutex<Instant>,
    /// `http` as other nodes sign for it.
    me: String,
    /// Node-to-node signatures accepted, while they could verify (replays refused).
    seen: Mutex<replay::Seen>,
    pub counters: ClusterCounters,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("id", &self.id).finish()
    }
}

/// Where a room's sessions and calls go.
#[derive(Debug, Clone)]
pub enum Route {
    /// This node owns the room.
    Local,
    /// Another node does, reachable at this address.
    Remote(String, SocketAddr),
}

/// Why a room could not be routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No live node owns the room (and none was asked to take it).
    NotFound,
    /// The cluster cannot decide now (Redis unreachable, no node serving): 503.
    Unavailable(String),
}

impl RouteError {
    /// The HTTP answer for a client: 503 with a reason and `Retry-After`, or 404.
    pub fn response(&self) -> Response<Body> {
        match self {
            RouteError::NotFound => text(StatusCode::NOT_FOUND, "requested room does not exist"),
            RouteError::Unavailable(why) => {
                let mut r = text(StatusCode::SERVICE_UNAVAILABLE, why.clone());
                r.headers_mut()
                    .insert("retry-after", HeaderValue::from_static("2"));
                r
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Cluster {
    pub fn new(opts: ClusterOptions) -> Result<Arc<Self>, StoreError> {
        let store = Store::new(&opts.redis)?;
        Ok(Arc::new(Self {
            id: format!("ND_{}", crate::media::random_alnum(12)),
            secret: opts.secret,
            store,
            http: opts.http,
            media: opts.media,
            media_ips: opts.media_ips,
            relay_ip: opts.relay_ip,
            span_rooms: opts.span_rooms,
            links: Mutex::new(HashMap::new()),
            capacity_pps: opts.capacity_pps.max(1),
            region: opts.region,
            boot_ms: now_ms(),
            draining: AtomicBool::new(false),
            left: AtomicBool::new(false),
            reachable: AtomicBool::new(false),
            claims: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
            checked: Mutex::new(Instant::now()),
            me: opts.http.to_string(),
            seen: Mutex::new(replay::Seen::default()),
            counters: ClusterCounters::default(),
        }))
    }

    /// What node-to-node requests to this node are checked against.
    pub fn verifier(&self) -> peer::Verifier<'_> {
        peer::Verifier {
            secret: &self.secret,
            me: &self.me,
            seen: &self.seen,
        }
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<String, Claim>> {
        self.claims.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this node can take new rooms: Redis reachable and serving (`/readyz`).
    pub fn ready(&self) -> Result<(), String> {
        if self.draining.load(Ordering::Relaxed) {
            return Err("draining".into());
        }
        if !self.reachable.load(Ordering::Relaxed) {
            return Err("Redis is unreachable".into());
        }
        Ok(())
    }

    /// Stops taking new rooms (SIGTERM): `/readyz` turns 503 at once, and the DRAINING
    /// state is published in Redis right away (the refresh loop is woken), so placements
    /// leave this node out.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Whether this node's hold on its rooms may have lapsed: no refresh checked them
    /// for a lease's length (the process was stopped, or starved), so another node may
    /// have taken them meanwhile. Until the next check confirms or closes them, the
    /// node's rooms are *fenced*: shown so in `/api/state`, not counted as served.
    /// (Redis unreachable is not a lapse: no other node can take a room then, and calls
    /// carry on.)
    pub fn lapsed(&self) -> bool {
        let checked = *self.checked.lock().unwrap_or_else(|p| p.into_inner());
        checked.elapsed() > Duration::from_millis(directory::LEASE_MS)
    }

    fn mark_checked(&self, at: Instant) {
        *self.checked.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    /// Whether this node is draining.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The sid `room` has in the directory, if this node holds its claim: a copy of the
    /// room opened here takes it, so that a room keeps its sid from owner to owner.
    pub fn room_sid(&self, room: &str) -> Option<String> {
        self.claims()
            .get(room)
            .map(|c| c.sid.clone())
            .filter(|s| !s.is_empty())
    }

    fn info(&self, pps_in: Vec<u64>, pps_out: Vec<u64>, rooms: u32) -> NodeInfo {
        NodeInfo {
            id: self.id.clone(),
            boot_ms: self.boot_ms,
            state: if self.draining.load(Ordering::Relaxed) {
                NodeState::Draining
            } else {
                NodeState::Serving
            },
            region: self.region.clone(),
            http: self.http.to_string(),
            media: self.media.clone(),
            media_ips: self.media_ips.iter().map(ToString::to_string).collect(),
            relay_ip: self.relay_ip.to_string(),
            capacity_pps: self.capacity_pps,
            pps_in,
            pps_out,
            rooms,
            updated_ms: now_ms(),
        }
    }

    /// The forwarder of node `node` (another, serving one), for the participants of this
    /// node's rooms who reached the room through it; `None` when rooms do not span nodes
    /// here, or that node cannot take media (the participant's media stays here).
    pub async fn media_node(self: &Arc<Self>, node: &str) -> Option<crate::rtc::sites::MediaNode> {
        if !self.span_rooms || node == self.id {
            return None;
        }
        let info = match self.node(node).await {
            Ok(Some(n)) if n.state == NodeState::Serving => n,
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!(%node, error = %e, "cluster: cannot look the ingress node up; media stays here");
                return None;
            }
        };
        let http: SocketAddr = info.http.parse().ok()?;
        let candidate_ips: Vec<std::net::IpAddr> = info
            .media_ips
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        let relay_ip = info
            .relay_ip
            .parse()
            .ok()
            .or_else(|| candidate_ips.first().copied())
            .unwrap_or(http.ip());
        let link = {
            let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
            match links.get(node) {
                Some(l) if l.is_up() => l.clone(),
                _ => {
                    let l = media_link::connect(self, node, http);
                    links.insert(node.to_owned(), l.clone());
                    l
                }
            }
        };
        Some(crate::rtc::sites::MediaNode {
            node: node.to_owned(),
            plane: link.plane,
            candidate_ips: candidate_ips.into(),
            relay_ip,
            up: link.up,
        })
    }

    /// A node's entry; `None` if it has none (dead) or a malformed one (logged).
    async fn node(&self, id: &str) -> Result<Option<NodeInfo>, StoreError> {
        let raw: Option<Vec<u8>> = self
            .store
            .query(redis::cmd("GET").arg(directory::node_key(id)))
            .await?;
        Ok(raw.and_then(|b| {
            let n = NodeInfo::parse(&b);
            if n.is_none() {
                self.counters
                    .malformed_entries
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %id, "malformed node entry in Redis: skipped");
            }
            n
        }))
    }

    /// Every live node, from the `prism:nodes` index; members whose lease ran out long
    /// ago are removed from it.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        let ids: Vec<(String, u64)> = self
            .store
            .query(
                redis::cmd("ZRANGE")
                    .arg(directory::NODES)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES"),
            )
            .await?;
        let mut out = Vec::new();
        let now = now_ms();
        for (id, seen) in ids {
            match self.node(&id).await? {
                Some(n) if n.id == id => out.push(n),
                Some(_) => {
                    self.counters
                        .malformed_entries
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node = %id, "node entry names another node: skipped");
                }
                None if now.saturating_sub(seen) > 2 * directory::LEASE_MS => {
                    let _: Result<i64, _> = self
                        .store
                        .query(redis::cmd("ZREM").arg(directory::NODES).arg(&id))
                        .await;
                }
                None => {}
            }
        }
        Ok(out)
    }

    /// Records that this node owns `room` at `epoch`, under `sid`; the unused-claim
    /// clock restarts (a session is on its way).
    fn adopt(&self, room: &str, epoch: u64, sid: String) {
        self.claims().insert(
            room.to_owned(),
            Claim {
                epoch,
                sid,
                since: Instant::now(),
            },
        );
    }

    /// Whether this node holds a claim on `room`.
    pub fn holds(&self, room: &str) -> bool {
        self.claims().contains_key(room)
    }

    /// The room's owner (none if it has none or was handed off), epoch and sid.
    async fn owner_of(&self, room: &str) -> Result<(Option<String>, u64, String), StoreError> {
        let (owner, epoch, sid): (Option<String>, Option<u64>, Option<String>) = self
            .store
            .query(
                redis::cmd("HMGET")
                    .arg(directory::room_key(room))
                    .arg("owner")
                    .arg("epoch")
                    .arg("sid"),
            )
            .await?;
        Ok((
            owner.filter(|o| !o.is_empty()),
            epoch.unwrap_or(0),
            sid.unwrap_or_default(),
        ))
    }

    /// Where `room` lives. `create`: place and claim it if no live node owns it.
    pub async fn route(&self, room: &str, create: bool) -> Result<Route, RouteError> {
        let unavailable = |e: StoreError| {
            RouteError::Unavailable(format!("cannot reach the cluster directory: {e}"))
        };
        let (owner, epoch, sid) = match self.owner_of(room).await {
            Ok(o) => o,
            // Redis is away: rooms this node owns carry on, nothing else is decided.
            Err(_) if self.holds(room) => return Ok(Route::Local),
            Err(e) => return Err(unavailable(e)),
        };
        let mut dead = String::new();
        if let Some(owner) = owner {
            if owner == self.id {
                self.adopt(room, epoch, sid);
                return Ok(Route::Local);
            }
            match self.node(&owner).await.map_err(unavailable)? {
                Some(n) => return self.remote(n),
                None => dead = owner,
            }
        }
        if !create {
            return Err(RouteError::NotFound);
        }
        self.place_and_claim(room, &dead).await
    }

    fn remote(&self, n: NodeInfo) -> Result<Route, RouteError> {
        let addr = n
            .http
            .parse()
            .map_err(|_| RouteError::Unavailable(format!("node {} has a bad address", n.id)))?;
        Ok(Route::Remote(n.id, addr))
    }

    async fn place_and_claim(&self, room: &str, dead: &str) -> Result<Route, RouteError> {
        let unavailable = |e: StoreError| {
            RouteError::Unavailable(format!("cannot reach the cluster directory: {e}"))
        };
        let nodes = self.nodes().await.map_err(unavailable)?;
        let mut candidates = directory::candidates(&nodes, &self.region);
        if self.draining() {
            // Before the DRAINING state reaches Redis, this node still lists itself.
            candidates.retain(|n| n.id != self.id);
        }
        // The reservations of every candidate (a handful of nodes; one key each, so that
        // Redis Cluster never sees a multi-slot command).
        let mut reserved = HashMap::new();
        for n in &candidates {
            let r: Option<u64> = self
                .store
                .query(redis::cmd("GET").arg(directory::reserve_key(&n.id)))
                .await
                .map_err(unavailable)?;
            reserved.insert(n.id.clone(), r.unwrap_or(0));
        }
        let chosen = directory::two_choices(
            &candidates,
            |id| reserved.get(id).copied().unwrap_or(0),
            |n| (crate::media::random_u32() as usize) % n,
        )
        .ok_or_else(|| RouteError::Unavailable("no node is serving".into()))?
        .clone();
        let key = directory::reserve_key(&chosen.id);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(directory::CLAIM)
            .arg(1)
            .arg(directory::room_key(room))
            .arg(&chosen.id)
            .arg(dead)
            .arg(now_ms())
            .arg(crate::rtc::room::new_sid("RM_"));
        let (owner, epoch, sid): (String, u64, String) =
            self.store.query(&cmd).await.map_err(unavailable)?;
        // The reservation is a hint: a failure to write it changes nothing.
        let _ = self
            .store
            .query::<i64>(redis::cmd("INCRBY").arg(&key).arg(directory::RESERVE_PPS))
            .await;
        let _ = self
            .store
            .query::<i64>(redis::cmd("PEXPIRE").arg(&key).arg(directory::RESERVE_MS))
            .await;
        if owner == self.id {
            self.counters.claims_won.fetch_add(1, Ordering::Relaxed);
            self.adopt(room, epoch, sid);
            return Ok(Route::Local);
        }
        if owner == chosen.id {
            return self.remote(chosen);
        }
        match self.node(&owner).await.map_err(unavailable)? {
            Some(n) => self.remote(n),
            None => Err(RouteError::Unavailable(
                "the room's owner changed while placing it; try again".into(),
            )),
        }
    }

    /// For a session or call another node carried here: serve it only if this node owns
    /// `room` now (Redis unreachable: if it holds the claim).
    pub async fn owns(&self, room: &str) -> bool {
        match self.owner_of(room).await {
            Ok((Some(o), epoch, sid)) if o == self.id => {
                self.adopt(room, epoch, sid);
                true
            }
            Ok(_) => false,
            Err(_) => self.holds(room),
        }
    }

    /// ListRooms on any node: the rooms of live owners, from `prism:rooms`.
    pub async fn list_rooms(&self) -> Result<Vec<prism_proto::livekit::Room>, StoreError> {
        let live: std::collections::HashSet<String> =
            self.nodes().await?.into_iter().map(|n| n.id).collect();
        let all: HashMap<String, Vec<u8>> = self
            .store
            .query(redis::cmd("HGETALL").arg(directory::ROOMS))
            .await?;
        let mut out = Vec::new();
        for (name, raw) in all {
            match RoomEntry::parse(&raw) {
                Some((e, room)) if room.name == name => {
                    if live.contains(&e.owner) {
                        out.push(room);
                    }
                }
                _ => {
                    self.counters
                        .malformed_entries
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(room = %name, "malformed room entry in Redis: skipped");
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes the directory records of a room no live node owns (DeleteRoom).
    pub async fn forget(&self, room: &str) -> Result<(), StoreError> {
        let (owner, epoch, _) = self.owner_of(room).await?;
        if let Some(o) = owner {
            let _: i64 = self
                .store
                .eval(
                    directory::RELEASE,
                    &[&directory::room_key(room)],
                    &[o.as_bytes(), epoch.to_string().as_bytes()],
                )
                .await?;
        }
        let _: i64 = self
            .store
            .query(redis::cmd("HDEL").arg(directory::ROOMS).arg(room))
            .await?;
        Ok(())
    }

    /// Runs the refresh loop until the process ends.
    pub fn start(self: &Arc<Self>, rooms: RoomManager) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(directory::REFRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut rates = Rates::default();
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = me.wake.notified() => {}
                }
                me.refresh(&rooms, &mut rates).await;
            }
        });
    }

    async fn refresh(&self, rooms: &RoomManager, rates: &mut Rates) {
        if self.left.load(Ordering::Relaxed) {
            return;
        }
        let started = Instant::now();
        let (pps_in, pps_out) = rates.sample(rooms).await;
        let local = rooms.list_rooms(&[]).await;
        let info = self.info(pps_in, pps_out, local.len() as u32);
        let Ok(json) = serde_json::to_vec(&info) else {
            return;
        };
        let registered = async {
            self.store
                .query::<()>(
                    redis::cmd("SET")
                        .arg(directory::node_key(&self.id))
                        .arg(json)
                        .arg("PX")
                        .arg(directory::LEASE_MS),
                )
                .await?;
            self.store
                .query::<()>(
                    redis::cmd("ZADD")
                        .arg(directory::NODES)
                        .arg(info.updated_ms)
                        .arg(&self.id),
                )
                .await
        }
        .await;
        let was = self.reachable.swap(registered.is_ok(), Ordering::Relaxed);
        match (&registered, was) {
            (Err(e), true) => {
                tracing::warn!(error = %e, "cluster: Redis unreachable; rooms carry on, new rooms are refused")
            }
            (Ok(()), false) => tracing::info!(node = %self.id, "cluster: registered"),
            _ => {}
        }
        if registered.is_err() {
            self.mark_checked(started);
            return;
        }
        // A room open here without a claim (opened by WHIP, or while its claim was being
        // given up) is claimed now, or closed if another node owns it: no room is ever
        // served here unfenced.
        for r in &local {
            if self.holds(&r.name) {
                continue;
            }
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(directory::CLAIM)
                .arg(1)
                .arg(directory::room_key(&r.name))
                .arg(&self.id)
                .arg("")
                .arg(now_ms())
                .arg(&r.sid);
            match self.store.query::<(String, u64, String)>(&cmd).await {
                Ok((owner, epoch, sid)) if owner == self.id => self.adopt(&r.name, epoch, sid),
                Ok(_) => {
                    self.counters
                        .superseded_rooms
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(room = %r.name, "cluster: another node owns this room; closing this copy");
                    rooms.supersede(&RoomName::new(r.name.clone())).await;
                }
                Err(e) => {
                    tracing::debug!(room = %r.name, error = %e, "cluster: claiming an open room failed")
                }
            }
        }
        let claims: Vec<(String, Claim)> = self
            .claims()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, claim) in claims {
            let open = local.iter().find(|r| r.name == name);
            let epoch = claim.epoch.to_string();
            let key = directory::room_key(&name);
            if open.is_none() && claim.since.elapsed() > UNUSED_CLAIM {
                let _ = self
                    .store
                    .eval::<i64>(
                        directory::RELEASE,
                        &[&key],
                        &[self.id.as_bytes(), epoch.as_bytes()],
                    )
                    .await;
                self.release_entry(&name, claim.epoch).await;
                self.claims().remove(&name);
                continue;
            }
            let created = now_ms().to_string();
            let sid = open.map_or(claim.sid.as_str(), |r| r.sid.as_str());
            let touched: Result<i64, _> = self
                .store
                .eval(
                    directory::TOUCH,
                    &[&key],
                    &[
                        self.id.as_bytes(),
                        epoch.as_bytes(),
                        created.as_bytes(),
                        sid.as_bytes(),
                    ],
                )
                .await;
            match touched {
                Ok(0) => {
                    // Another node holds the room now: this copy must go.
                    self.claims().remove(&name);
                    self.counters
                        .superseded_rooms
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(room = %name, epoch = claim.epoch, "cluster: the room moved to another node; closing this copy");
                    rooms.supersede(&RoomName::new(name.clone())).await;
                }
                Ok(_) => {
                    if let Some(r) = open {
                        let entry = RoomEntry::new(&self.id, claim.epoch, r);
                        if let Ok(v) = serde_json::to_vec(&entry) {
                            let _ = self
                                .store
                                .query::<i64>(
                                    redis::cmd("HSET").arg(directory::ROOMS).arg(&name).arg(v),
                                )
                                .await;
                        }
                    }
                }
                Err(e) => tracing::debug!(room = %name, error = %e, "cluster: room check failed"),
            }
        }
        self.mark_checked(started);
    }

    /// Removes `room` from ListRooms' index if the entry is this node's at `epoch`.
    async fn release_entry(&self, room: &str, epoch: u64) {
        let raw: Result<Option<Vec<u8>>, _> = self
            .store
            .query(redis::cmd("HGET").arg(directory::ROOMS).arg(room))
            .await;
        if let Ok(Some(raw)) = raw {
            if RoomEntry::parse(&raw).is_none_or(|(e, _)| e.owner == self.id && e.epoch == epoch) {
                let _ = self
                    .store
                    .query::<i64>(redis::cmd("HDEL").arg(directory::ROOMS).arg(room))
                    .await;
            }
        }
    }

    /// Gives up every room claim and this node's entry (the node is stopping), so other
    /// nodes take its rooms at once rather than after the lease. The rooms are handed
    /// off ([`directory::HANDOFF`]): their next owner serves them under the same sid.
    pub async fn leave(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.left.store(true, Ordering::Relaxed);
        let claims: Vec<(String, Claim)> = self.claims().drain().collect();
        let ttl = directory::HANDOFF_MS.to_string();
        for (name, claim) in claims {
            let epoch = claim.epoch.to_string();
            let _ = self
                .store
                .eval::<i64>(
                    directory::HANDOFF,
                    &[&directory::room_key(&name)],
                    &[self.id.as_bytes(), epoch.as_bytes(), ttl.as_bytes()],
                )
                .await;
            self.release_entry(&name, claim.epoch).await;
        }
        let _ = self
            .store
            .query::<i64>(redis::cmd("DEL").arg(directory::node_key(&self.id)))
            .await;
        let _ = self
            .store
            .query::<i64>(redis::cmd("ZREM").arg(directory::NODES).arg(&self.id))
            .await;
    }

    /// This node's cluster figures, Prometheus text.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let c = &self.counters;
        for (name, help, v) in [
            (
                "prism_cluster_proxied_sessions_total",
                "LiveKit sessions carried to their room's owner.",
                &c.proxied_sessions,
            ),
            (
                "prism_cluster_proxied_frames_total",
                "WebSocket messages spliced between a client and an owner.",
                &c.proxied_frames,
            ),
            (
                "prism_cluster_forwarded_calls_total",
                "RoomService calls forwarded to their room's owner.",
                &c.forwarded_calls,
            ),
            (
                "prism_cluster_forged_requests_total",
                "Node-to-node requests refused (bad or missing signature).",
                &c.forged_refused,
            ),
            (
                "prism_cluster_replayed_requests_total",
                "Node-to-node requests refused as replays of one accepted before.",
                &c.replayed_refused,
            ),
            (
                "prism_cluster_malformed_entries_total",
                "Directory entries in Redis skipped as malformed.",
                &c.malformed_entries,
            ),
            (
                "prism_cluster_superseded_rooms_total",
                "Rooms closed here because another node took them.",
                &c.superseded_rooms,
            ),
            (
                "prism_cluster_claims_total",
                "Rooms this node claimed for itself.",
                &c.claims_won,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP prism_cluster_ready Whether this node takes new rooms (Redis reachable, serving).\n# TYPE prism_cluster_ready gauge\nprism_cluster_ready {}",
            u8::from(self.ready().is_ok())
        );
    }
}

/// Packet rates per media core from the forwarder's counters, between two samples.
#[derive(Debug, Default)]
struct Rates {
    last: Option<(Instant, Vec<(u64, u64)>)>,
}

impl Rates {
    async fn sample(&mut self, rooms: &RoomManager) -> (Vec<u64>, Vec<u64>) {
        let control = rooms.control().clone();
        let ev = tokio::task::spawn_blocking(move || {
            control.request(
                pb::command::Body::GetStats(pb::GetStats {}),
                Duration::from_secs(2),
            )
        })
        .await;
        let Ok(Ok(ev)) = ev else {
            return (Vec::new(), Vec::new());
        };
        let Some(pb::event::Body::Stats(stats)) = ev.body else {
            return (Vec::new(), Vec::new());
        };
        let now = Instant::now();
        let counts: Vec<(u64, u64)> = stats
            .cores
            .iter()
            .map(|c| {
                let k = c.counters.clone().unwrap_or_default();
                (k.packets_in, k.packets_out)
            })
            .collect();
        let out = match &self.last {
            Some((then, prev)) if prev.len() == counts.len() => {
                let secs = now.duration_since(*then).as_secs_f64().max(0.001);
                counts
                    .iter()
                    .zip(prev)
                    .map(|(c, p)| {
                        (
                            (c.0.saturating_sub(p.0) as f64 / secs) as u64,
                            (c.1.saturating_sub(p.1) as f64 / secs) as u64,
                        )
                    })
                    .unzip()
            }
            _ => (vec![0; counts.len()], vec![0; counts.len()]),
        };
        self.last = Some((now, counts));
        out
    }
}
