//! The room model: every room of this node, with every participant whatever way it came in
//! (LiveKit SDK sessions, WHIP publishers, WHEP viewers), shaped after LiveKit's
//! `pkg/rtc`.
//!
//! - [`room`]: a room's state and its task (one per room), joining and leaving;
//! - [`participant`]: a participant and its transports;
//! - [`publish`] and [`subscribe`]: negotiation, decide-then-apply;
//! - [`data`], [`speakers`], [`lifetimes`], [`roomservice`], [`ingress`] (WHIP/WHEP);
//! - [`media_plane`]: commands out without waiting, events back to their room;
//! - [`ids`] and [`error`]: the types every part speaks.
//!
//! [`RoomManager`] is the directory: it finds or starts a room's task and hands out its
//! handle. The directory's lock is held only to look a name up or insert it, never across
//! a room's work; everything else a room does happens on its own task, so rooms never
//! wait on each other.

pub mod data;
pub mod egress;
pub mod error;
pub mod ice_servers;
pub mod ids;
pub mod ingress;
pub mod lifetimes;
pub mod media_plane;
pub mod membership;
pub mod node;
pub mod observer;
pub mod participant;
pub mod publish;
pub mod room;
pub mod roomservice;
pub mod rpc;
pub mod sites;
pub mod speakers;
pub mod subscribe;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use prism_forwarder::control::ControlClient;
use prism_proto::livekit as lk;
use tokio::sync::mpsc;

pub use error::RtcError;
pub use ids::{Identity, ParticipantSid, RoomName, TrackSid};
pub use ingress::{Created, ViewFilter};
pub use media_plane::MediaPlane;
pub use node::{Counters, RoomDefaults};
pub use participant::{Out, Participant, PubTrack};
pub use room::{JoinParams, Joined, Room, RoomHandle, RoomOptions};

use room::RoomMsg;

/// How many times a request for a room that closed under it is tried on a new one.
const RETRIES: usize = 3;

struct Inner {
    media: MediaPlane,
    control: ControlClient,
    observer: Arc<dyn observer::RoomObserver>,
    defaults: RoomDefaults,
    registry: Mutex<HashMap<RoomName, RoomHandle>>,
    counters: Arc<Counters>,
    stopping: AtomicBool,
    /// Where a room opened here finds the sid it already has (the cluster's directory).
    room_sids: std::sync::OnceLock<RoomSids>,
}

/// Gives the sid a room already has elsewhere (a cluster room moving to this node), if any.
pub type RoomSids = Arc<dyn Fn(&RoomName) -> Option<String> + Send + Sync>;

/// Every room of this node. Cheap to clone.
#[derive(Clone)]
pub struct RoomManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RoomManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomManager").finish_non_exhaustive()
    }
}

impl RoomManager {
    /// Starts the directory and the media plane's event pump; `observer` hears of every
    /// room's lifecycle (the agent dispatcher).
    pub fn start(
        control: ControlClient,
        defaults: RoomDefaults,
        observer: Arc<dyn observer::RoomObserver>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                media: MediaPlane::start(control.clone()),
                control,
                observer,
                defaults,
                registry: Mutex::new(HashMap::new()),
                counters: Arc::new(Counters::default()),
                stopping: AtomicBool::new(false),
                room_sids: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Rooms opened from now on take their sid from `f` when it knows one (set once, by
    /// the cluster: a room keeps its sid from owner to owner).
    pub fn set_room_sids(&self, f: RoomSids) {
        let _ = self.inner.room_sids.set(f);
    }

    pub fn media(&self) -> &MediaPlane {
        &self.inner.media
    }

    /// The local forwarder's control client, for requests outside any room (statistics).
    pub fn control(&self) -> &ControlClient {
        &self.inner.control
    }

    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    fn registry(&self) -> MutexGuard<'_, HashMap<RoomName, RoomHandle>> {
        // Every update is one insert or remove: the map stays usable after a panic.
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, name: &RoomName) -> Option<RoomHandle> {
        self.registry().get(name).cloned()
    }

    /// The room called `name`, started with `opts` if it is not open.
    fn get_or_create(&self, name: &RoomName, opts: &RoomOptions) -> Result<RoomHandle, RtcError> {
        if self.inner.stopping.load(Ordering::Relaxed) {
            return Err(RtcError::ShuttingDown);
        }
        let mut reg = self.registry();
        if let Some(h) = reg.get(name) {
            return Ok(h.clone());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = RoomHandle {
            tx: tx.clone(),
            name: name.clone(),
        };
        let known = opts
            .sid
            .is_none()
            .then(|| self.inner.room_sids.get().and_then(|f| f(name)))
            .flatten();
        let with_sid;
        let opts = match known {
            Some(sid) => {
                with_sid = RoomOptions {
                    sid: Some(sid),
                    ..opts.clone()
                };
                &with_sid
            }
            None => opts,
        };
        let room = Room::new(
            name.clone(),
            opts,
            self.inner.defaults.clone(),
            self.inner.media.clone(),
            self.inner.counters.clone(),
            handle.clone(),
            self.inner.observer.clone(),
        );
        let id = room.id;
        self.inner
            .media
            .attach(id, Box::new(move |ev| tx.send(RoomMsg::Media(ev)).is_ok()));
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let closing = handle.clone();
        let on_close = Box::new(move || {
            let Some(inner) = weak.upgrade() else {
                return;
            };
            inner.media.detach(id);
            let mut reg = inner.registry.lock().unwrap_or_else(|p| p.into_inner());
            if reg
                .get(&closing.name)
                .is_some_and(|h| h.tx.same_channel(&closing.tx))
            {
                reg.remove(&closing.name);
            }
        });
        tokio::spawn(room.run(rx, on_close));
        reg.insert(name.clone(), handle.clone());
        Ok(handle)
    }

    /// Runs `f` on the room called `name`, starting it if needed; retried on a new room if
    /// the one found was closing.
    pub(crate) async fn on_room<R: Send + 'static>(
        &self,
        name: &RoomName,
        opts: &RoomOptions,
        ready: bool,
        f: impl Fn(&mut Room) -> Result<R, RtcError> + Send + Sync + Clone + 'static,
    ) -> Result<R, RtcError> {
        for _ in 0..RETRIES {
            let h = self.get_or_create(name, opts)?;
            let r = if ready {
                h.call_ready(f.clone()).await
            } else {
                h.call(f.clone()).await
            };
            match r {
                Err(RtcError::RoomClosed) => tokio::task::yield_now().await,
                r => return r,
            }
        }
        Err(RtcError::RoomClosed)
    }

    /// Runs `f` on the open room called `name`.
    pub async fn with_room<R: Send + 'static>(
        &self,
        name: &RoomName,
        f: impl FnOnce(&mut Room) -> Result<R, RtcError> + Send + 'static,
    ) -> Result<R, RtcError> {
        let h = self.get(name).ok_or(RtcError::RoomNotFound)?;
        match h.call(f).await {
            Err(RtcError::RoomClosed) => Err(RtcError::RoomNotFound),
            r => r,
        }
    }

    /// Joins a LiveKit session to its room (started if needed).
    pub async fn join(&self, params: JoinParams) -> Result<Joined, RtcError> {
        // A room this join creates dispatches the agents its token asks for.
        // A token asking for auto-egress Prism cannot do still joins, without it.
        let egress = crate::egress::auto::AutoEgress::from_token(&params.claims)
            .unwrap_or_else(|r| {
                Counters::bump(&self.inner.counters.refused_egress, 1);
                tracing::warn!(room = %params.room, reason = %r, "the token's roomConfig.egress is refused; joining without it");
                None
            });
        let opts = RoomOptions {
            agents: observer::token_agents(&params.claims),
            egress,
            ..RoomOptions::default()
        };
        for _ in 0..RETRIES {
            let h = self.get_or_create(&params.room, &opts)?;
            match h.join(params.clone()).await {
                Err(RtcError::RoomClosed) => tokio::task::yield_now().await,
                r => return r,
            }
        }
        Err(RtcError::RoomClosed)
    }

    /// RoomService CreateRoom: the room, started with `opts` if it is not open.
    pub async fn create_room(
        &self,
        name: &RoomName,
        opts: RoomOptions,
    ) -> Result<lk::Room, RtcError> {
        self.on_room(name, &opts, false, |r| Ok(r.info())).await
    }

    /// Every open room (or those named), as RoomService lists them.
    pub async fn list_rooms(&self, names: &[String]) -> Vec<lk::Room> {
        let mut rooms = self
            .each(|r| Some(r.info()))
            .await
            .into_iter()
            .flatten()
            .filter(|r| names.is_empty() || names.contains(&r.name))
            .collect::<Vec<_>>();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        rooms
    }

    /// Closes a room: everyone in it is told to leave (`ROOM_DELETED`).
    pub async fn delete_room(&self, name: &RoomName) -> Result<(), RtcError> {
        self.with_room(name, |r| {
            r.close(lk::DisconnectReason::RoomDeleted);
            Ok(())
        })
        .await
    }

    /// `f` on every open room, one after the other (each sees a consistent room; rooms
    /// that close meanwhile are skipped).
    pub async fn each<R: Send + 'static>(
        &self,
        f: impl Fn(&Room) -> R + Send + Sync + Clone + 'static,
    ) -> Vec<R> {
        let handles: Vec<RoomHandle> = self.registry().values().cloned().collect();
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            let f = f.clone();
            if let Ok(r) = h.call(move |room| Ok(f(room))).await {
                out.push(r);
            }
        }
        out
    }

    /// `POST /whip/{room}`.
    pub async fn whip(
        &self,
        room: &RoomName,
        claims: crate::auth::Claims,
        sdp: String,
    ) -> Result<Created, RtcError> {
        let claims = Arc::new(claims);
        let sdp = Arc::new(sdp);
        self.on_room(room, &RoomOptions::default(), true, move |r| {
            r.whip_publish(&claims, &sdp)
        })
        .await
    }

    /// `POST /whep/{room}`: 404 when the room is not open (nothing is published in it).
    pub async fn whep(
        &self,
        room: &RoomName,
        claims: crate::auth::Claims,
        sdp: String,
        filter: ViewFilter,
    ) -> Result<Created, RtcError> {
        let h = self
            .get(room)
            .ok_or_else(|| RtcError::NothingPublished(format!("room {:?}", room.as_str())))?;
        match h
            .call_ready(move |r| r.whep_view(&claims, &sdp, &filter))
            .await
        {
            Err(RtcError::RoomClosed) => Err(RtcError::NothingPublished(format!(
                "room {:?}",
                room.as_str()
            ))),
            r => r,
        }
    }

    /// `DELETE /whip|whep/{room}/{resource}`.
    pub async fn end_http(&self, room: &RoomName, resource: String) -> Result<(), RtcError> {
        match self.with_room(room, move |r| r.http_end(&resource)).await {
            Err(RtcError::RoomNotFound) => Err(RtcError::SessionNotFound),
            r => r,
        }
    }

    /// Closes this node's copy of a room another node now owns: everyone in it is told to
    /// reconnect (`LeaveRequest{action: RECONNECT}`), and lands on the new owner.
    pub async fn supersede(&self, name: &RoomName) {
        if let Some(h) = self.get(name) {
            let _ = h
                .call(|r| {
                    r.superseded();
                    Ok(())
                })
                .await;
        }
    }

    /// Tells every participant the server is going away and closes every room.
    pub async fn shutdown(&self) {
        self.shutdown_with(false).await;
    }

    /// As [`RoomManager::shutdown`], clients told to reconnect (`LeaveRequest{action:
    /// RECONNECT}`): in a cluster, they land on another node.
    pub async fn shutdown_moving(&self) {
        self.shutdown_with(true).await;
    }

    async fn shutdown_with(&self, reconnect: bool) {
        self.inner.stopping.store(true, Ordering::Relaxed);
        let handles: Vec<RoomHandle> = self.registry().values().cloned().collect();
        for h in handles {
            let _ = h
                .call(move |r| {
                    if reconnect {
                        r.leave_action = lk::leave_request::Action::Reconnect;
                    }
                    r.shutdown();
                    Ok(())
                })
                .await;
        }
    }
}
