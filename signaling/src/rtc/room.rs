//! A room: its participants, tracks and subscriptions, owned by one task.
//!
//! Why an actor per room: every change (a join, an offer, a subscription) fans out to
//! several participants and to the media plane. Doing all of a room's work in one task,
//! one message at a time, keeps its invariants (versions only grow, a track is subscribed
//! at most once, a subscriber has at most one offer in flight) without locks, and rooms
//! run side by side: no room waits on another. Nothing here waits on the media
//! plane: commands are sent as they are decided, and their answers come back as
//! [`RoomMsg::Media`] events in order, handled like any other message (see
//! `media_plane`).
//!
//! This file holds the state and the message loop. Joining and leaving (`membership`),
//! publishing, subscribing, data, speakers, lifetimes, RoomService and WHIP/WHEP are
//! further `impl Room` blocks in their own files.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pb::command::Body as Cmd;
use prism_proto::control as pb;
use prism_proto::livekit as lk;
use tokio::sync::{mpsc, oneshot};

use lk::signal_response::Message as Resp;

use super::error::RtcError;
use super::ids::{MediaRoomId, ParticipantSid, RoomName, TrackSid, TransportId};
use super::media_plane::MediaPlane;
use super::node::{Counters, RoomDefaults};
use super::observer::RoomObserver;
use super::participant::{Out, Participant};
use super::rpc::RpcWaiter;
use crate::auth::Claims;

/// Messages queued per session before it counts as too slow and is closed.
pub const SESSION_QUEUE: usize = 1024;

/// Most mailbox messages a room handles in one go before announcing queued joins.
const MAILBOX_BATCH: usize = 256;

/// What a client asked for when it connected (query parameters of `/rtc`).
#[derive(Clone, Debug)]
pub struct JoinParams {
    pub claims: Claims,
    pub room: RoomName,
    pub auto_subscribe: bool,
    pub protocol: i32,
    pub client_protocol: i32,
    /// In a cluster, the node the client reached when it is not this one: its media
    /// terminates there (see `sites`).
    pub media_node: Option<super::sites::MediaNode>,
}

/// A joined participant: its sid, the first message to send (its `JoinResponse`, encoded),
/// its outgoing queue and its room.
#[derive(Debug)]
pub struct Joined {
    pub sid: ParticipantSid,
    pub join: bytes::Bytes,
    pub rx: mpsc::Receiver<Out>,
    pub room: RoomHandle,
}

pub(crate) type Call = Box<dyn FnOnce(&mut Room) + Send>;

/// What a room's task handles, one at a time.
pub(crate) enum RoomMsg {
    Join(Box<JoinParams>, oneshot::Sender<Result<Joined, RtcError>>),
    Signal(ParticipantSid, lk::SignalRequest),
    Left(ParticipantSid, lk::DisconnectReason),
    /// An event from the media plane: the answer to one of the room's commands, or news
    /// about one of its transports or tracks.
    Media(pb::Event),
    Call(Call),
    /// A call that needs the room's core (it answers an offer): held until it is known.
    CallReady(Call),
}

/// A cheap, cloneable way to reach one room's task.
#[derive(Clone)]
pub struct RoomHandle {
    pub(crate) tx: mpsc::UnboundedSender<RoomMsg>,
    pub name: RoomName,
}

impl std::fmt::Debug for RoomHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomHandle")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RoomHandle {
    pub fn signal(&self, sid: &ParticipantSid, req: lk::SignalRequest) {
        let _ = self.tx.send(RoomMsg::Signal(sid.clone(), req));
    }

    pub fn left(&self, sid: &ParticipantSid, reason: lk::DisconnectReason) {
        let _ = self.tx.send(RoomMsg::Left(sid.clone(), reason));
    }

    /// Runs `f` on the room's task without waiting (nothing if the room is gone).
    pub(crate) fn run(&self, f: impl FnOnce(&mut Room) + Send + 'static) {
        let _ = self.tx.send(RoomMsg::Call(Box::new(f)));
    }

    /// Runs `f` on the room's task. [`RtcError::RoomClosed`] if the room closed first.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Room) -> Result<R, RtcError> + Send + 'static,
    ) -> Result<R, RtcError> {
        self.call_as(f, RoomMsg::Call).await
    }

    /// Like [`Self::call`], once the room knows its core (to answer an offer).
    pub async fn call_ready<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Room) -> Result<R, RtcError> + Send + 'static,
    ) -> Result<R, RtcError> {
        self.call_as(f, RoomMsg::CallReady).await
    }

    async fn call_as<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Room) -> Result<R, RtcError> + Send + 'static,
        wrap: fn(Call) -> RoomMsg,
    ) -> Result<R, RtcError> {
        let (tx, rx) = oneshot::channel();
        let call: Call = Box::new(move |room| {
            let r = if room.closed {
                Err(RtcError::RoomClosed)
            } else {
                f(room)
            };
            let _ = tx.send(r);
        });
        self.tx.send(wrap(call)).map_err(|_| RtcError::RoomClosed)?;
        rx.await.map_err(|_| RtcError::RoomClosed)?
    }

    pub(crate) async fn join(&self, params: JoinParams) -> Result<Joined, RtcError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(RoomMsg::Join(Box::new(params), tx))
            .map_err(|_| RtcError::RoomClosed)?;
        rx.await.map_err(|_| RtcError::RoomClosed)?
    }
}

/// What the room does with the answer to one of its commands.
#[derive(Debug)]
pub(crate) enum Pending {
    /// `CreateRoom`: the answer says where the room's core is.
    RoomCreated,
    /// A participant's transport: if it fails, the participant cannot go on.
    Transport(ParticipantSid),
    /// A published track: if it fails, it is unpublished.
    Track(ParticipantSid, TrackSid),
    /// A subscriber's copy of a track: if it fails, the subscription has no media.
    DownTrack(ParticipantSid, TrackSid),
    /// `CreateRoom` on a remote site (`sites`): where its core is.
    SiteCreated(usize),
}

/// How a room was created (RoomService CreateRoom, or a first join with the defaults).
#[derive(Clone, Debug, Default)]
pub struct RoomOptions {
    pub empty_timeout: u32,
    pub departure_timeout: u32,
    pub max_participants: u32,
    pub metadata: String,
    /// Agents to dispatch when the room starts (CreateRoom's, or a token's `roomConfig`).
    pub agents: Vec<lk::RoomAgentDispatch>,
    /// Recordings the room starts by itself (CreateRoom's `egress`, or a token's).
    pub egress: Option<crate::egress::auto::AutoEgress>,
    /// The room's sid when it has one already (a cluster room moving to this node keeps
    /// the sid of its first owner); a fresh one otherwise.
    pub sid: Option<String>,
}

/// A room's state. Reached only from its own task.
pub struct Room {
    pub sid: String,
    pub name: RoomName,
    /// The media plane's id of this room.
    pub id: MediaRoomId,
    pub created_at: i64,
    pub metadata: String,
    pub empty_timeout: u32,
    pub departure_timeout: u32,
    pub max_participants: u32,
    /// Participants in join order.
    pub participants: Vec<Participant>,
    /// The room's core: its address and certificate fingerprint, from `RoomCreated`.
    pub(crate) core: Option<(SocketAddr, [u8; 32])>,
    /// Where a process on this host (a recorder, an ingress) sends to the core: its
    /// socket's own address, which differs from `core` when an advertised IP is set.
    pub(crate) core_on_host: Option<SocketAddr>,
    /// The addresses clients are given for media (see [`RoomDefaults::candidate_ips`]).
    pub(crate) candidate_ips: Arc<[std::net::IpAddr]>,
    /// TURN servers given to each participant that joins.
    pub(crate) ice_servers: Arc<super::ice_servers::IceServers>,
    /// The room core's passive ICE-TCP candidate, from `RoomCreated`, if it has one.
    pub(crate) tcp_candidate: Option<SocketAddr>,
    /// Signaling that needs the core, held until `RoomCreated` arrives.
    pub(crate) deferred: Vec<RoomMsg>,
    /// Since when the room has had nobody in it, and whether anyone ever joined.
    pub(crate) empty_since: Option<Instant>,
    pub(crate) ever_joined: bool,
    pub(crate) media: MediaPlane,
    pub(crate) pending: HashMap<u64, Pending>,
    pub(crate) counters: Arc<Counters>,
    /// Set once the room is closing: nothing new is accepted.
    pub closed: bool,
    pub(crate) stopping: bool,
    /// What a server-initiated leave asks of clients: disconnect, or reconnect (this copy
    /// of the room was superseded by another node's).
    pub(crate) leave_action: lk::leave_request::Action,
    /// The room's own mailbox, handed to the sessions that join it.
    pub(crate) handle: RoomHandle,
    /// Hears of the room's lifecycle (the agent dispatcher).
    pub(crate) observer: Arc<dyn RoomObserver>,
    /// The agents the room was created with, dispatched when its task starts.
    pub(crate) initial_agents: Vec<lk::RoomAgentDispatch>,
    /// RoomService PerformRpc calls waiting for their participant's answer, by request id.
    pub(crate) rpc_pending: HashMap<String, RpcWaiter>,
    /// Joins and departures not yet announced to the others, in order: announced
    /// together once the mailbox is empty, or before anything else is sent (see
    /// [`Room::flush_updates`]).
    pub(crate) updates: Vec<lk::ParticipantInfo>,
    /// Encoded `ParticipantInfo`s for the `JoinResponse`s of a run of joins (nothing but
    /// joins changes a room during one, so each participant is encoded once per run, not
    /// once per newcomer). Emptied by any other message.
    pub(crate) info_cache: HashMap<ParticipantSid, bytes::Bytes>,
    /// Recordings of this room's tracks, by egress id (`egress`).
    pub(crate) egresses: HashMap<String, super::egress::RoomEgress>,
    /// The node's recordings, where the room registers those it starts by itself.
    pub(crate) egress_registry: Option<crate::egress::Egresses>,
    /// What the room records by itself, and the publishers whose participant egress
    /// waits for their second track (see `egress`).
    pub(crate) auto_egress: Option<crate::egress::auto::AutoEgress>,
    pub(crate) auto_waiting: HashMap<ParticipantSid, Instant>,
    /// The room's media on other nodes, and the relays between them (`sites`).
    pub(crate) sites: super::sites::Sites,
    /// Where other nodes send relayed media to this node (default: the first candidate IP).
    pub(crate) relay_ip: Option<std::net::IpAddr>,
    /// Whether relays between nodes are SRTP-protected.
    pub(crate) relay_srtp: bool,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("name", &self.name)
            .field("participants", &self.participants.len())
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn new_sid(prefix: &str) -> String {
    format!("{prefix}{}", crate::media::random_alnum(12))
}

impl Room {
    /// A new room; the caller spawns its task with [`Room::run`].
    pub(crate) fn new(
        name: RoomName,
        opts: &RoomOptions,
        defaults: RoomDefaults,
        media: MediaPlane,
        counters: Arc<Counters>,
        handle: RoomHandle,
        observer: Arc<dyn RoomObserver>,
    ) -> Self {
        let or = |v: u32, d: u32| if v == 0 { d } else { v };
        Self {
            sid: opts.sid.clone().unwrap_or_else(|| new_sid("RM_")),
            name,
            id: MediaRoomId::fresh(),
            created_at: now_ms(),
            metadata: opts.metadata.clone(),
            empty_timeout: or(opts.empty_timeout, defaults.empty_timeout),
            departure_timeout: or(opts.departure_timeout, defaults.departure_timeout),
            max_participants: or(opts.max_participants, defaults.max_participants),
            candidate_ips: defaults.candidate_ips.clone(),
            ice_servers: defaults.ice_servers.clone(),
            participants: Vec::new(),
            core: None,
            core_on_host: None,
            tcp_candidate: None,
            deferred: Vec::new(),
            empty_since: Some(Instant::now()),
            ever_joined: false,
            media,
            pending: HashMap::new(),
            counters,
            closed: false,
            stopping: false,
            leave_action: lk::leave_request::Action::Disconnect,
            handle,
            observer,
            initial_agents: opts.agents.clone(),
            rpc_pending: HashMap::new(),
            updates: Vec::new(),
            info_cache: HashMap::new(),
            egresses: HashMap::new(),
            egress_registry: defaults.egresses.clone(),
            auto_egress: opts.egress.clone(),
            auto_waiting: HashMap::new(),
            sites: super::sites::Sites::default(),
            relay_ip: defaults.relay_ip,
            relay_srtp: defaults.relay_srtp,
        }
    }

    /// The room's task: handles messages one at a time until the room closes, then
    /// refuses what is still queued (a join retries on a new room).
    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<RoomMsg>,
        on_close: Box<dyn FnOnce() + Send>,
    ) {
        if self
            .command_tracked(
                Cmd::CreateRoom(pb::CreateRoom {
                    room_id: self.id.0,
                    ..Default::default()
                }),
                Pending::RoomCreated,
            )
            .is_err()
        {
            self.closed = true;
        }
        tracing::info!(room = %self.name, "room created");
        self.observer
            .room_started(&self.info(), &std::mem::take(&mut self.initial_agents));
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.closed {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => {
                        self.handle(m);
                        // What else is queued now, as one batch: joins and departures
                        // that arrive together are announced together.
                        let mut n = 1;
                        while n < MAILBOX_BATCH && !self.closed {
                            let Ok(m) = rx.try_recv() else { break };
                            self.handle(m);
                            n += 1;
                        }
                        self.flush_updates();
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    self.info_cache.clear();
                    self.tick(Instant::now());
                }
            }
        }
        self.flush_updates();
        on_close();
        self.observer.room_closed(&self.name);
        rx.close();
        while let Ok(m) = rx.try_recv() {
            match m {
                RoomMsg::Join(_, reply) => {
                    let _ = reply.send(Err(RtcError::RoomClosed));
                }
                RoomMsg::Call(f) | RoomMsg::CallReady(f) => f(&mut self),
                RoomMsg::Signal(..) | RoomMsg::Left(..) | RoomMsg::Media(_) => {}
            }
        }
        self.flush_updates();
        tracing::info!(room = %self.name, "room closed");
    }

    pub(crate) fn handle(&mut self, msg: RoomMsg) {
        if !matches!(msg, RoomMsg::Join(..)) {
            // Whatever this message sends, the others hear of earlier joins and
            // departures first; and it may change participants, so their cached
            // encodings go.
            self.flush_updates();
            self.info_cache.clear();
        }
        match msg {
            RoomMsg::Join(mut p, reply) => {
                let site = match p.media_node.take() {
                    Some(node) if !self.closed => self.site_for(node),
                    _ => 0,
                };
                let r = self.join(*p);
                if let (Ok(j), true) = (&r, site != 0) {
                    if let Some(p) = self.participant_mut(&j.sid) {
                        p.site = site;
                    }
                }
                let _ = reply.send(r);
            }
            RoomMsg::Signal(sid, req) => {
                if needs_core(&req) && self.site_core(self.site_of(&sid)).is_none() {
                    self.deferred.push(RoomMsg::Signal(sid, req));
                } else {
                    self.on_signal(&sid, req);
                }
            }
            RoomMsg::Left(sid, reason) => self.remove_participant(&sid, reason, None),
            RoomMsg::Media(ev) => self.on_media(ev),
            RoomMsg::Call(f) => f(self),
            RoomMsg::CallReady(f) => {
                if self.core.is_none() {
                    self.deferred.push(RoomMsg::CallReady(f));
                } else {
                    f(self);
                }
            }
        }
    }

    /// Sends a command to the media plane without waiting; an error answer is logged.
    /// It goes to the plane of the site whose media room it names (this node's, or
    /// another node's for a room spanning nodes).
    pub(crate) fn command(&mut self, body: Cmd) {
        let room = super::media_plane::room_of(&body).unwrap_or(self.id.0);
        if let Err(e) = self.plane_of(room).send(MediaRoomId(room), body) {
            tracing::warn!(room = %self.name, error = %e, "media plane unreachable");
        }
    }

    /// Sends a command whose answer the room acts on.
    pub(crate) fn command_tracked(&mut self, body: Cmd, then: Pending) -> Result<(), RtcError> {
        let room = super::media_plane::room_of(&body).unwrap_or(self.id.0);
        let id = self
            .plane_of(room)
            .send(MediaRoomId(room), body)
            .map_err(|e| RtcError::MediaPlane(e.to_string()))?;
        self.pending.insert(id, then);
        Ok(())
    }

    pub fn participant(&self, sid: &ParticipantSid) -> Option<&Participant> {
        self.participants.iter().find(|p| &p.sid == sid)
    }

    pub fn participant_mut(&mut self, sid: &ParticipantSid) -> Option<&mut Participant> {
        self.participants.iter_mut().find(|p| &p.sid == sid)
    }

    pub fn by_identity(&self, identity: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.identity == *identity)
    }

    /// The participant owning a transport.
    pub(crate) fn by_transport(&self, t: TransportId) -> Option<&Participant> {
        self.participants
            .iter()
            .find(|p| p.transport_ids().contains(&t))
    }

    /// The published track with this sid, and its publisher.
    pub fn track(&self, track_sid: &TrackSid) -> Option<(&Participant, &super::PubTrack)> {
        self.participants
            .iter()
            .find_map(|p| p.track(track_sid).map(|t| (p, t)))
    }

    pub fn info(&self) -> lk::Room {
        lk::Room {
            sid: self.sid.clone(),
            name: self.name.to_string(),
            empty_timeout: self.empty_timeout,
            departure_timeout: self.departure_timeout,
            max_participants: self.max_participants,
            creation_time: self.created_at / 1000,
            creation_time_ms: self.created_at,
            metadata: self.metadata.clone(),
            num_participants: self.participants.len() as u32,
            num_publishers: self
                .participants
                .iter()
                .filter(|p| !p.tracks.is_empty())
                .count() as u32,
            ..Default::default()
        }
    }

    fn on_signal(&mut self, pid: &ParticipantSid, req: lk::SignalRequest) {
        use lk::signal_request::Message as Req;
        let Some(msg) = req.message else {
            return;
        };
        if self.participant(pid).is_none() {
            return;
        }
        match msg {
            Req::Offer(sd) => {
                if let Err(e) = self.on_publisher_offer(pid, &sd) {
                    tracing::warn!(participant = %pid, error = %e, "publisher offer refused");
                    self.close_session(
                        pid,
                        &format!("bad offer: {e}"),
                        lk::DisconnectReason::StateMismatch,
                    );
                }
            }
            Req::Answer(sd) => {
                if let Err(e) = self.on_subscriber_answer(pid, &sd) {
                    tracing::warn!(participant = %pid, error = %e, "subscriber answer refused");
                    self.close_session(
                        pid,
                        &format!("bad answer: {e}"),
                        lk::DisconnectReason::StateMismatch,
                    );
                }
            }
            Req::AddTrack(t) => self.on_add_track(pid, t),
            Req::Mute(m) => {
                self.set_muted(pid, &TrackSid::new(m.sid), m.muted);
            }
            Req::Subscription(s) => self.on_subscription(pid, &s),
            Req::TrackSetting(s) => self.on_track_settings(pid, &s),
            Req::Leave(_) => {
                self.remove_participant(pid, lk::DisconnectReason::ClientInitiated, None);
            }
            Req::UpdateMetadata(m) => self.on_update_metadata(pid, m),
            Req::SubscriptionPermission(perm) => self.on_subscription_permission(pid, perm),
            // ICE-lite: Prism learns the client's address from its checks, so the client's
            // candidates are not needed; the rest is optional in the protocol.
            Req::Trickle(_)
            | Req::UpdateLayers(_)
            | Req::SyncState(_)
            | Req::Simulate(_)
            | Req::UpdateAudioTrack(_)
            | Req::UpdateVideoTrack(_)
            | Req::Ping(_)
            | Req::PingReq(_) => {}
        }
    }

    fn on_update_metadata(&mut self, pid: &ParticipantSid, m: lk::UpdateParticipantMetadata) {
        let Some(p) = self.participant_mut(pid) else {
            return;
        };
        if !p.permission.can_update_metadata {
            let _ = p.send(Resp::RequestResponse(lk::RequestResponse {
                request_id: m.request_id,
                reason: lk::request_response::Reason::NotAllowed as i32,
                message: "does not have permission to update own metadata".into(),
                request: Some(lk::request_response::Request::UpdateMetadata(m)),
            }));
            return;
        }
        if !m.metadata.is_empty() {
            p.metadata = m.metadata.clone();
        }
        if !m.name.is_empty() {
            p.name = m.name.clone();
        }
        merge_attributes(&mut p.attributes, &m.attributes);
        let _ = p.send(Resp::RequestResponse(lk::RequestResponse {
            request_id: m.request_id,
            reason: lk::request_response::Reason::Ok as i32,
            message: String::new(),
            request: None,
        }));
        self.announce(pid);
    }

    /// An event from the media plane.
    fn on_media(&mut self, ev: pb::Event) {
        use pb::event::Body as Ev;
        if ev.request_id != 0 {
            let then = self.pending.remove(&ev.request_id);
            self.on_answer(then, ev.body);
            return;
        }
        match ev.body {
            Some(Ev::TransportConnected(c)) => self.on_connected(TransportId(c.transport_id)),
            Some(Ev::TransportClosed(c)) => {
                let t = TransportId(c.transport_id);
                if self.relay_closed(t) {
                    return;
                }
                if let Some(pid) = self.by_transport(t).map(|p| p.sid.clone()) {
                    tracing::info!(participant = %pid, reason = %c.reason, "transport closed");
                    if self.site_lost(self.site_of(&pid)) {
                        // Its media node is gone: it reconnects, and lands on a live one.
                        let reason = lk::DisconnectReason::ConnectionTimeout;
                        let was = std::mem::replace(
                            &mut self.leave_action,
                            lk::leave_request::Action::Reconnect,
                        );
                        self.remove_participant(&pid, reason, Some(reason));
                        self.leave_action = was;
                        return;
                    }
                    self.close_session(
                        &pid,
                        &format!("media connection lost: {}", c.reason),
                        lk::DisconnectReason::ConnectionTimeout,
                    );
                }
            }
            Some(Ev::AudioLevel(a)) => self.on_audio_level(&a),
            Some(Ev::DataMessage(d)) => {
                self.on_data(TransportId(d.transport_id), &d.label, &d.data);
            }
            _ => {}
        }
    }

    /// The answer to one of the room's commands.
    fn on_answer(&mut self, then: Option<Pending>, body: Option<pb::event::Body>) {
        use pb::event::Body as Ev;
        match (then, body) {
            (Some(Pending::RoomCreated), Some(Ev::RoomCreated(c))) => match core_params(&c) {
                Ok(core) => {
                    self.core = Some(core);
                    self.core_on_host = Some(on_host(c.bound.parse().unwrap_or(core.0)));
                    self.tcp_candidate = c.tcp_local.parse().ok();
                    for m in std::mem::take(&mut self.deferred) {
                        self.handle(m);
                    }
                }
                Err(e) => self.fail_room(&e),
            },
            (Some(Pending::SiteCreated(site)), Some(Ev::RoomCreated(c))) => {
                let r = core_params(&c)
                    .map(|(a, fp)| (a, fp, c.tcp_local.parse().ok()))
                    .map_err(|e| e.to_string());
                self.on_site_created(site, r);
            }
            (Some(Pending::SiteCreated(site)), other) => {
                self.on_site_created(
                    site,
                    Err(format!("unexpected answer to CreateRoom: {other:?}")),
                );
            }
            (Some(Pending::RoomCreated), other) => {
                self.fail_room(&RtcError::MediaPlane(format!(
                    "unexpected answer to CreateRoom: {other:?}"
                )));
            }
            (then, Some(Ev::Error(e))) => {
                Counters::bump(&self.counters.media_errors, 1);
                self.on_command_failed(then, &e.message);
            }
            _ => {}
        }
    }

    fn on_command_failed(&mut self, then: Option<Pending>, message: &str) {
        match then {
            Some(Pending::Transport(pid)) => {
                tracing::warn!(participant = %pid, error = %message, "transport refused");
                self.close_session(
                    &pid,
                    &format!("media plane: {message}"),
                    lk::DisconnectReason::StateMismatch,
                );
            }
            Some(Pending::Track(pid, track)) => {
                tracing::warn!(participant = %pid, %track, error = %message, "track not published");
                self.unpublish(&pid, &track);
                self.announce(&pid);
            }
            Some(Pending::DownTrack(sub, track)) => {
                tracing::warn!(participant = %sub, %track, error = %message, "down track not added");
                if let Some(t) = self.participant_mut(&sub).and_then(|p| {
                    p.subscriber
                        .sections
                        .iter_mut()
                        .filter_map(|s| s.track.as_mut())
                        .find(|t| t.track_sid == track)
                }) {
                    t.down_track_id = None;
                }
            }
            Some(Pending::RoomCreated | Pending::SiteCreated(_)) | None => {
                tracing::warn!(room = %self.name, error = %message, "media plane command failed");
            }
        }
    }

    /// The media plane could not hold the room: everyone is told, and it closes.
    fn fail_room(&mut self, e: &RtcError) {
        tracing::error!(room = %self.name, error = %e, "room failed");
        self.close(lk::DisconnectReason::StateMismatch);
    }

    /// A transport finished ICE and DTLS. A LiveKit session's publisher transport, or a
    /// WHIP/WHEP participant's only one, makes the participant active (and, subscribing
    /// automatically, it gets what is published).
    fn on_connected(&mut self, t: TransportId) {
        let Some(p) = self
            .participants
            .iter_mut()
            .find(|p| p.transport_ids().contains(&t))
        else {
            return;
        };
        // A WHIP publisher's or WHEP viewer's one transport; a LiveKit session's publisher.
        let is_publisher = p.publisher.as_ref().is_some_and(|pc| pc.transport_id == t);
        let makes_active = is_publisher || !p.has_signal();
        if !makes_active || p.state == lk::participant_info::State::Active {
            return;
        }
        p.state = lk::participant_info::State::Active;
        let pid = p.sid.clone();
        let auto = p.auto_subscribe;
        self.announce(&pid);
        if auto {
            self.subscribe_existing(&pid);
        }
    }

    /// Closes the room: everyone in it is told to leave with `reason`, the media plane
    /// drops it, and the task ends.
    pub fn close(&mut self, reason: lk::DisconnectReason) {
        self.stop_all_egress();
        let pids: Vec<ParticipantSid> = self.participants.iter().map(|p| p.sid.clone()).collect();
        for pid in pids {
            self.remove_participant(&pid, reason, Some(reason));
        }
        if !self.closed {
            self.closed = true;
            self.command(Cmd::CloseRoom(pb::CloseRoom { room_id: self.id.0 }));
            self.close_sites();
        }
    }
}

/// Whether a request needs the room's core (address and fingerprint) to be answered.
fn needs_core(req: &lk::SignalRequest) -> bool {
    use lk::signal_request::Message as Req;
    matches!(req.message, Some(Req::Offer(_) | Req::Answer(_)))
}

/// The room core's address and fingerprint from a `RoomCreated` answer.
/// `addr` as a process on this host reaches it: an unspecified IP (a socket bound to
/// every interface) is read as loopback of the same family.
pub(crate) fn on_host(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

fn core_params(c: &pb::RoomCreated) -> Result<(SocketAddr, [u8; 32]), RtcError> {
    let addr: SocketAddr = c
        .local
        .parse()
        .map_err(|_| RtcError::MediaPlane(format!("bad core address {:?}", c.local)))?;
    let fp = prism_forwarder::dtls::Fingerprint::parse(&c.fingerprint)
        .map_err(|_| RtcError::MediaPlane("bad fingerprint".into()))?;
    Ok((addr, *fp.as_bytes()))
}

/// Merges attributes as LiveKit does: an empty value deletes the key.
pub(crate) fn merge_attributes(into: &mut HashMap<String, String>, from: &HashMap<String, String>) {
    for (k, v) in from {
        if v.is_empty() {
            into.remove(k);
        } else {
            into.insert(k.clone(), v.clone());
        }
    }
}
