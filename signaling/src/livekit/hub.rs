//! The hub: every LiveKit room, participant, track and subscription of this node, owned by
//! one thread.
//!
//! Why a thread and not shared state behind locks: every change (a join, an offer, a
//! subscription) fans out to several participants and to the media plane, whose control
//! requests block for a few microseconds. Doing all of it in one place, one message at a
//! time, keeps the invariants (versions only grow, a track is subscribed at most once, a
//! subscriber has at most one offer in flight) without lock ordering. Sessions talk to it
//! through [`HubHandle`]; it answers through per-session channels.
//!
//! A second thread pumps the media plane's unsolicited events (transport connected or
//! closed, data channel messages) into the hub's queue.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use pb::command::Body as Cmd;
use prism_forwarder::control::ControlClient;
use prism_proto::control as pb;
use prism_proto::livekit as lk;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};

use lk::signal_response::Message as Resp;

use crate::auth::Claims;
use crate::media::{
    add_track_for, extension_ids, header_extensions, mime_type, next_id, random_alnum,
    random_ice_string, random_u32, remote_transport,
};
use crate::sdp::{
    AnswerBuilder, CodecParams, MediaKind, OfferBuilder, OfferSection, SendTrack, ServerParams,
    SessionOffer,
};
use crate::whip::HttpError;

use super::{PING_INTERVAL_S, PING_TIMEOUT_S, PROTOCOL_VERSION, SERVER_VERSION};

mod roomservice;

pub use roomservice::MAX_METADATA;

const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// Messages queued per session before it counts as too slow and is closed.
pub const SESSION_QUEUE: usize = 1024;

/// Room lifetimes, in seconds, when the room's creator does not say (LiveKit's defaults).
#[derive(Clone, Copy, Debug)]
pub struct RoomDefaults {
    /// A room nobody has joined yet closes after this long.
    pub empty_timeout: u32,
    /// A room closes this long after its last participant left.
    pub departure_timeout: u32,
}

impl Default for RoomDefaults {
    fn default() -> Self {
        Self {
            empty_timeout: 300,
            departure_timeout: 20,
        }
    }
}

/// What the hub sends a session.
#[derive(Debug)]
pub enum Out {
    Signal(Box<lk::SignalResponse>),
    /// Close the WebSocket with this reason (after any queued message).
    Close(String),
}

/// What a client asked for when it connected (query parameters of `/rtc`).
#[derive(Clone, Debug)]
pub struct JoinParams {
    pub claims: Claims,
    pub room: String,
    pub auto_subscribe: bool,
    pub protocol: i32,
    pub client_protocol: i32,
}

/// A joined participant: its sid, the first message to send and its outgoing queue.
#[derive(Debug)]
pub struct Joined {
    pub sid: String,
    pub join: lk::SignalResponse,
    pub rx: mpsc::Receiver<Out>,
}

type Call = Box<dyn FnOnce(&mut Hub) + Send>;

enum HubMsg {
    Join(JoinParams, oneshot::Sender<Result<Joined, HttpError>>),
    Signal(String, lk::SignalRequest),
    Left(String, lk::DisconnectReason),
    Event(pb::Event),
    Call(Call),
    Shutdown(oneshot::Sender<()>),
}

/// A cheap, cloneable way to reach the hub.
#[derive(Clone, Debug)]
pub struct HubHandle {
    tx: Sender<HubMsg>,
}

impl std::fmt::Debug for HubMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HubMsg")
    }
}

impl HubHandle {
    /// Starts the hub and its event pump on their own threads.
    pub fn start(control: ControlClient, defaults: RoomDefaults) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        let pump_tx = tx.clone();
        let pump_control = control.clone();
        std::thread::Builder::new()
            .name("livekit-events".into())
            .spawn(move || pump_events(&pump_control, &pump_tx))
            .expect("spawn the event pump");
        std::thread::Builder::new()
            .name("livekit-hub".into())
            .spawn(move || Hub::new(control, defaults).run(&rx))
            .expect("spawn the hub");
        Self { tx }
    }

    /// Joins a participant: the answer is its session or the HTTP refusal.
    pub async fn join(&self, params: JoinParams) -> Result<Joined, HttpError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(HubMsg::Join(params, tx))
            .map_err(|_| HttpError(503, "the server is shutting down".into()))?;
        rx.await
            .map_err(|_| HttpError(503, "the server is shutting down".into()))?
    }

    pub fn signal(&self, sid: &str, req: lk::SignalRequest) {
        let _ = self.tx.send(HubMsg::Signal(sid.to_owned(), req));
    }

    pub fn left(&self, sid: &str, reason: lk::DisconnectReason) {
        let _ = self.tx.send(HubMsg::Left(sid.to_owned(), reason));
    }

    /// Runs `f` on the hub's thread and returns what it returns (`None` if the hub is gone).
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Hub) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let call: Call = Box::new(move |hub| {
            let _ = tx.send(f(hub));
        });
        self.tx.send(HubMsg::Call(call)).ok()?;
        rx.await.ok()
    }

    /// Like [`Self::call`], from a thread that may block.
    pub fn call_blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Hub) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let call: Call = Box::new(move |hub| {
            let _ = tx.send(f(hub));
        });
        self.tx.send(HubMsg::Call(call)).ok()?;
        rx.blocking_recv().ok()
    }

    /// Tells every participant the server is going away, closes their sessions and stops
    /// the hub.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(HubMsg::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

fn pump_events(control: &ControlClient, tx: &Sender<HubMsg>) {
    loop {
        match control.next_event(Duration::from_secs(1)) {
            Ok(ev) => {
                if tx.send(HubMsg::Event(ev)).is_err() {
                    return;
                }
            }
            Err(prism_forwarder::control::ControlError::Timeout) => {}
            Err(_) => return,
        }
    }
}

/// A track a participant announced with `add_track`, not yet seen in an offer.
#[derive(Debug, Clone)]
struct PendingTrack {
    req: lk::AddTrackRequest,
    sid: String,
}

/// A published track.
#[derive(Debug, Clone)]
pub struct PubTrack {
    pub info: lk::TrackInfo,
    /// The forwarder's id.
    pub track_id: u64,
    pub kind: MediaKind,
    pub codec: CodecParams,
}

/// The publisher transport (the client offers).
#[derive(Debug)]
struct PubPc {
    transport_id: u64,
    ufrag: String,
    pwd: String,
    /// The client's ICE ufrag: a re-offer with another one is an ICE restart.
    remote_ufrag: String,
    session_id: u64,
    version: u64,
    /// mid → track sid, for sections already published.
    mids: HashMap<String, String>,
}

/// One m-section of a subscriber transport.
#[derive(Debug, Clone)]
struct SubSection {
    mid: String,
    kind: MediaKind,
    /// The track sent here; `None` once unsubscribed (the section stays, inactive).
    track: Option<SubTrack>,
    /// Whether an inactive section's removal has been answered, so it may carry a new
    /// track.
    reusable: bool,
}

#[derive(Debug, Clone)]
struct SubTrack {
    track_sid: String,
    publisher_sid: String,
    track_id: u64,
    ssrc: u32,
    /// The RTX stream offered with video (RFC 4588): lost packets are resent on it when the
    /// subscriber accepts it, else on the media stream itself.
    rtx_ssrc: Option<u32>,
    codec: CodecParams,
    down_track_id: Option<u64>,
    /// Spatial layer the subscriber asked for (UpdateTrackSettings), highest by default.
    spatial: u32,
    paused: bool,
}

/// The subscriber transport (Prism offers).
#[derive(Debug)]
struct SubPc {
    transport_id: Option<u64>,
    ufrag: String,
    pwd: String,
    session_id: u64,
    version: u64,
    sections: Vec<SubSection>,
    next_mid: u32,
    last_offer_id: u32,
    in_flight: bool,
    dirty: bool,
}

/// A participant of a room.
#[derive(Debug)]
pub struct Participant {
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub metadata: String,
    pub attributes: HashMap<String, String>,
    pub kind: i32,
    pub joined_at_ms: i64,
    pub version: u32,
    pub state: lk::participant_info::State,
    pub permission: lk::ParticipantPermission,
    pub client_protocol: i32,
    pub auto_subscribe: bool,
    pub tracks: Vec<PubTrack>,
    /// Audio tracks (forwarder ids) carrying speech now, with their levels.
    speaking: HashMap<u64, f32>,
    pending: Vec<PendingTrack>,
    publisher: Option<PubPc>,
    subscriber: SubPc,
    out: mpsc::Sender<Out>,
}

impl Participant {
    pub fn info(&self) -> lk::ParticipantInfo {
        lk::ParticipantInfo {
            sid: self.sid.clone(),
            identity: self.identity.clone(),
            state: self.state as i32,
            tracks: self.tracks.iter().map(|t| t.info.clone()).collect(),
            metadata: self.metadata.clone(),
            joined_at: self.joined_at_ms / 1000,
            joined_at_ms: self.joined_at_ms,
            name: self.name.clone(),
            version: self.version,
            permission: Some(self.permission.clone()),
            is_publisher: !self.tracks.is_empty(),
            kind: self.kind,
            attributes: self.attributes.clone(),
            client_protocol: self.client_protocol,
            ..Default::default()
        }
    }

    fn send(&self, msg: Resp) -> bool {
        self.out
            .try_send(Out::Signal(Box::new(lk::SignalResponse {
                message: Some(msg),
            })))
            .is_ok()
    }

    /// Transports of this participant, for cleanup and the status page.
    pub fn transport_ids(&self) -> Vec<u64> {
        self.publisher
            .as_ref()
            .map(|p| p.transport_id)
            .into_iter()
            .chain(self.subscriber.transport_id)
            .collect()
    }

    /// Sids of the tracks this participant receives, for the status page.
    pub fn subscribed_track_sids(&self) -> Vec<String> {
        self.subscriber
            .sections
            .iter()
            .filter_map(|s| s.track.as_ref().map(|t| t.track_sid.clone()))
            .collect()
    }
}

/// A room.
#[derive(Debug)]
pub struct Room {
    pub sid: String,
    pub name: String,
    /// The forwarder's id of this room.
    pub id: u64,
    pub created_at: i64,
    pub metadata: String,
    pub empty_timeout: u32,
    pub departure_timeout: u32,
    pub max_participants: u32,
    /// Participants in join order.
    pub participants: Vec<Participant>,
    /// The room's core: its address and certificate fingerprint, known once a transport
    /// exists (every transport of a room lives on the same core).
    core: Option<(SocketAddr, [u8; 32])>,
    /// Since when the room has had nobody in it, and whether anyone ever joined.
    empty_since: Option<Instant>,
    ever_joined: bool,
}

impl Room {
    pub fn info(&self) -> lk::Room {
        lk::Room {
            sid: self.sid.clone(),
            name: self.name.clone(),
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

    fn participant(&self, sid: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.sid == sid)
    }

    fn participant_mut(&mut self, sid: &str) -> Option<&mut Participant> {
        self.participants.iter_mut().find(|p| p.sid == sid)
    }

    /// The published track with this sid, and its publisher's sid.
    fn track(&self, track_sid: &str) -> Option<(&Participant, &PubTrack)> {
        self.participants.iter().find_map(|p| {
            p.tracks
                .iter()
                .find(|t| t.info.sid == track_sid)
                .map(|t| (p, t))
        })
    }
}

/// Counters of what the hub has done, for `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct HubCounters {
    pub joins: u64,
    pub leaves: u64,
    pub refused_data: u64,
    pub malformed_data: u64,
    pub data_relayed: u64,
    pub slow_sessions: u64,
}

/// The hub's state. Reached from other threads only through [`HubHandle::call`].
pub struct Hub {
    control: ControlClient,
    defaults: RoomDefaults,
    pub rooms: BTreeMap<String, Room>,
    /// participant sid → room name.
    by_sid: HashMap<String, String>,
    /// forwarder transport id → participant sid.
    by_transport: HashMap<u64, String>,
    pub counters: HubCounters,
    stopping: bool,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("rooms", &self.rooms.len())
            .field("participants", &self.by_sid.len())
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn sid(prefix: &str) -> String {
    format!("{prefix}{}", random_alnum(12))
}

/// LiveKit's name of a track source, as grants list them.
fn source_name(source: i32) -> &'static str {
    match lk::TrackSource::try_from(source).unwrap_or(lk::TrackSource::Unknown) {
        lk::TrackSource::Camera => "camera",
        lk::TrackSource::Microphone => "microphone",
        lk::TrackSource::ScreenShare => "screen_share",
        lk::TrackSource::ScreenShareAudio => "screen_share_audio",
        lk::TrackSource::Unknown => "unknown",
    }
}

fn track_sid(req: &lk::AddTrackRequest) -> String {
    let t = if req.r#type == lk::TrackType::Video as i32 {
        'V'
    } else {
        'A'
    };
    let s = match lk::TrackSource::try_from(req.source).unwrap_or(lk::TrackSource::Unknown) {
        lk::TrackSource::Camera => 'C',
        lk::TrackSource::Microphone => 'M',
        lk::TrackSource::ScreenShare => 'S',
        lk::TrackSource::ScreenShareAudio => 's',
        lk::TrackSource::Unknown => 'U',
    };
    format!("TR_{t}{s}{}", random_alnum(12))
}

/// The spatial layer for a subscriber's wish: the smallest published layer at least as big
/// as the requested size, or the layer of the requested quality.
fn wanted_spatial(info: &lk::TrackInfo, s: &lk::UpdateTrackSettings) -> u32 {
    let n = info.layers.len().max(1) as u32;
    if s.width > 0 || s.height > 0 {
        let mut layers: Vec<&lk::VideoLayer> = info.layers.iter().collect();
        layers.sort_by_key(|l| l.width.max(l.height));
        let want = s.width.max(s.height);
        for (i, l) in layers.iter().enumerate() {
            if l.width.max(l.height) >= want {
                return i as u32;
            }
        }
        return n - 1;
    }
    match lk::VideoQuality::try_from(s.quality).unwrap_or(lk::VideoQuality::High) {
        lk::VideoQuality::Low => 0,
        lk::VideoQuality::Medium => 1.min(n - 1),
        _ => n - 1,
    }
}

impl Hub {
    fn new(control: ControlClient, defaults: RoomDefaults) -> Self {
        Self {
            control,
            defaults,
            rooms: BTreeMap::new(),
            by_sid: HashMap::new(),
            by_transport: HashMap::new(),
            counters: HubCounters::default(),
            stopping: false,
        }
    }

    fn run(mut self, rx: &Receiver<HubMsg>) {
        let mut last_tick = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(HubMsg::Join(p, reply)) => {
                    let r = self.join(p);
                    let _ = reply.send(r);
                }
                Ok(HubMsg::Signal(sid, req)) => self.on_signal(&sid, req),
                Ok(HubMsg::Left(sid, reason)) => self.remove_participant(&sid, reason, None),
                Ok(HubMsg::Event(ev)) => self.on_event(ev),
                Ok(HubMsg::Call(f)) => f(&mut self),
                Ok(HubMsg::Shutdown(done)) => {
                    self.shutdown();
                    let _ = done.send(());
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if last_tick.elapsed() >= Duration::from_secs(1) {
                last_tick = Instant::now();
                self.tick(last_tick);
            }
        }
    }

    fn request(&self, body: Cmd) -> Result<pb::event::Body, String> {
        let ev = self
            .control
            .request(body, CONTROL_TIMEOUT)
            .map_err(|e| format!("media plane: {e:?}"))?;
        match ev.body {
            Some(pb::event::Body::Error(e)) => Err(format!("media plane: {}", e.message)),
            Some(b) => Ok(b),
            None => Err("media plane: empty answer".into()),
        }
    }

    /// Every participant count, for metrics and tests.
    pub fn participant_count(&self) -> usize {
        self.by_sid.len()
    }

    pub fn transport_count(&self) -> usize {
        self.by_transport.len()
    }

    pub fn track_count(&self) -> usize {
        self.rooms
            .values()
            .flat_map(|r| &r.participants)
            .map(|p| p.tracks.len())
            .sum()
    }

    /// Creates a room (RoomService CreateRoom, or the first join).
    pub fn create_room(
        &mut self,
        name: &str,
        empty_timeout: u32,
        departure_timeout: u32,
        max_participants: u32,
        metadata: &str,
    ) -> Result<&mut Room, String> {
        if !self.rooms.contains_key(name) {
            let id = next_id();
            self.request(Cmd::CreateRoom(pb::CreateRoom {
                room_id: id,
                ..Default::default()
            }))?;
            self.rooms.insert(
                name.to_owned(),
                Room {
                    sid: sid("RM_"),
                    name: name.to_owned(),
                    id,
                    created_at: now_ms(),
                    metadata: metadata.to_owned(),
                    empty_timeout: if empty_timeout == 0 {
                        self.defaults.empty_timeout
                    } else {
                        empty_timeout
                    },
                    departure_timeout: if departure_timeout == 0 {
                        self.defaults.departure_timeout
                    } else {
                        departure_timeout
                    },
                    max_participants,
                    participants: Vec::new(),
                    core: None,
                    empty_since: Some(Instant::now()),
                    ever_joined: false,
                },
            );
            tracing::info!(room = name, "room created");
        }
        self.rooms
            .get_mut(name)
            .ok_or_else(|| "room vanished".into())
    }

    fn join(&mut self, p: JoinParams) -> Result<Joined, HttpError> {
        if self.stopping {
            return Err(HttpError(503, "the server is shutting down".into()));
        }
        let grant = p.claims.grant().map_err(HttpError::from)?.clone();
        let identity = p.claims.identity().to_owned();
        // A second session with the same identity replaces the first.
        let dup = self
            .rooms
            .get(&p.room)
            .and_then(|r| r.participants.iter().find(|q| q.identity == identity))
            .map(|q| q.sid.clone());
        if let Some(old) = dup {
            self.remove_participant(
                &old,
                lk::DisconnectReason::DuplicateIdentity,
                Some(lk::DisconnectReason::DuplicateIdentity),
            );
        }
        let room = self
            .create_room(&p.room, 0, 0, 0, "")
            .map_err(|e| HttpError(500, e))?;
        if room.max_participants > 0 && room.participants.len() >= room.max_participants as usize {
            return Err(HttpError(403, "the room is full".into()));
        }
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let permission = lk::ParticipantPermission {
            can_subscribe: grant.can_subscribe(),
            can_publish: grant.can_publish(),
            can_publish_data: grant.can_publish_data(),
            can_publish_sources: grant
                .can_publish_sources
                .iter()
                .filter_map(|s| match s.as_str() {
                    "camera" => Some(lk::TrackSource::Camera as i32),
                    "microphone" => Some(lk::TrackSource::Microphone as i32),
                    "screen_share" => Some(lk::TrackSource::ScreenShare as i32),
                    "screen_share_audio" => Some(lk::TrackSource::ScreenShareAudio as i32),
                    _ => None,
                })
                .collect(),
            hidden: grant.hidden,
            recorder: grant.recorder,
            can_update_metadata: grant.can_update_own_metadata(),
            agent: grant.agent,
            ..Default::default()
        };
        let kind = match p.claims.kind.as_str() {
            "ingress" => lk::participant_info::Kind::Ingress,
            "egress" => lk::participant_info::Kind::Egress,
            "sip" => lk::participant_info::Kind::Sip,
            "agent" => lk::participant_info::Kind::Agent,
            _ => lk::participant_info::Kind::Standard,
        };
        let participant = Participant {
            sid: sid("PA_"),
            identity,
            name: p.claims.name.clone(),
            metadata: p.claims.metadata.clone(),
            attributes: p.claims.attributes.clone(),
            kind: kind as i32,
            joined_at_ms: now_ms(),
            version: 1,
            state: lk::participant_info::State::Joined,
            permission,
            client_protocol: p.client_protocol,
            auto_subscribe: p.auto_subscribe,
            tracks: Vec::new(),
            speaking: HashMap::new(),
            pending: Vec::new(),
            publisher: None,
            subscriber: SubPc {
                transport_id: None,
                ufrag: random_ice_string(8),
                pwd: random_ice_string(24),
                session_id: u64::from(random_u32()),
                version: 0,
                sections: Vec::new(),
                next_mid: 0,
                last_offer_id: 0,
                in_flight: false,
                dirty: false,
            },
            out: tx,
        };
        let info = participant.info();
        let others: Vec<lk::ParticipantInfo> = room
            .participants
            .iter()
            .filter(|q| !q.permission.hidden)
            .map(Participant::info)
            .collect();
        let sid = participant.sid.clone();
        // Speaker updates are deltas: a newcomer first hears who is speaking already (queued
        // behind the JoinResponse, which the session sends first).
        let speakers: Vec<lk::SpeakerInfo> = room
            .participants
            .iter()
            .filter(|q| !q.permission.hidden)
            .filter_map(|q| {
                let level = q.speaking.values().copied().reduce(f32::max)?;
                Some(lk::SpeakerInfo {
                    sid: q.sid.clone(),
                    level,
                    active: true,
                })
            })
            .collect();
        if !speakers.is_empty() {
            let _ = participant.send(Resp::SpeakersChanged(lk::SpeakersChanged { speakers }));
        }
        room.participants.push(participant);
        room.empty_since = None;
        room.ever_joined = true;
        let room_info = room.info();
        let room_name = room.name.clone();
        self.by_sid.insert(sid.clone(), room_name.clone());
        self.counters.joins += 1;
        tracing::info!(room = %room_name, participant = %sid, identity = %info.identity, "joined");
        let join = lk::SignalResponse {
            message: Some(Resp::Join(lk::JoinResponse {
                room: Some(room_info),
                participant: Some(info.clone()),
                other_participants: others,
                server_version: SERVER_VERSION.into(),
                subscriber_primary: false,
                ping_timeout: PING_TIMEOUT_S,
                ping_interval: PING_INTERVAL_S,
                server_info: Some(lk::ServerInfo {
                    edition: lk::server_info::Edition::Standard as i32,
                    version: SERVER_VERSION.into(),
                    protocol: PROTOCOL_VERSION.min(p.protocol.max(1)),
                    node_id: "prism".into(),
                    ..Default::default()
                }),
                enabled_publish_codecs: ["audio/opus", "video/VP8", "video/H264"]
                    .iter()
                    .map(|m| lk::Codec {
                        mime: (*m).into(),
                        fmtp_line: String::new(),
                    })
                    .collect(),
                fast_publish: false,
                ..Default::default()
            })),
        };
        if !info.permission.as_ref().is_some_and(|p| p.hidden) {
            self.broadcast(&room_name, &[info], Some(&sid));
        }
        Ok(Joined { sid, join, rx })
    }

    /// Sends a participant update with `infos` to everyone in the room but `except`.
    fn broadcast(&mut self, room: &str, infos: &[lk::ParticipantInfo], except: Option<&str>) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let mut slow = Vec::new();
        for q in &r.participants {
            if Some(q.sid.as_str()) == except {
                continue;
            }
            let msg = Resp::Update(lk::ParticipantUpdate {
                participants: infos.to_vec(),
            });
            if !q.send(msg) {
                slow.push(q.sid.clone());
            }
        }
        self.drop_slow(slow);
    }

    /// Tells everyone (the participant too) that a participant changed.
    fn announce(&mut self, pid: &str) {
        let Some(room) = self.by_sid.get(pid).cloned() else {
            return;
        };
        let Some(p) = self
            .rooms
            .get_mut(&room)
            .and_then(|r| r.participant_mut(pid))
        else {
            return;
        };
        p.version += 1;
        let info = p.info();
        let hidden = p.permission.hidden;
        if hidden {
            let _ = p.send(Resp::Update(lk::ParticipantUpdate {
                participants: vec![info],
            }));
        } else {
            self.broadcast(&room, &[info], None);
        }
    }

    fn drop_slow(&mut self, slow: Vec<String>) {
        for sid in slow {
            self.counters.slow_sessions += 1;
            tracing::warn!(participant = %sid, "session too far behind; closing it");
            self.remove_participant(&sid, lk::DisconnectReason::SignalClose, None);
        }
    }

    /// Sends one signaling message to a participant (closing its session if it is too far
    /// behind).
    pub fn send_to(&mut self, pid: &str, msg: Resp) {
        let ok = self.participant(pid).is_none_or(|p| p.send(msg));
        if !ok {
            self.drop_slow(vec![pid.to_owned()]);
        }
    }

    fn on_signal(&mut self, pid: &str, req: lk::SignalRequest) {
        use lk::signal_request::Message as Req;
        let Some(msg) = req.message else {
            return;
        };
        if !self.by_sid.contains_key(pid) {
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
                self.set_muted(pid, &m.sid, m.muted);
            }
            Req::Subscription(s) => self.on_subscription(pid, &s),
            Req::TrackSetting(s) => self.on_track_settings(pid, &s),
            Req::Leave(_) => {
                self.remove_participant(pid, lk::DisconnectReason::ClientInitiated, None);
            }
            Req::UpdateMetadata(m) => self.on_update_metadata(pid, m),
            // ICE-lite: Prism learns the client's address from its checks, so the client's
            // candidates are not needed; the rest is optional in the protocol.
            Req::Trickle(_)
            | Req::UpdateLayers(_)
            | Req::SubscriptionPermission(_)
            | Req::SyncState(_)
            | Req::Simulate(_)
            | Req::UpdateAudioTrack(_)
            | Req::UpdateVideoTrack(_)
            | Req::Ping(_)
            | Req::PingReq(_) => {}
        }
    }

    /// The participant with this sid, wherever it is.
    fn participant(&self, pid: &str) -> Option<&Participant> {
        self.rooms.get(self.by_sid.get(pid)?)?.participant(pid)
    }

    fn participant_mut(&mut self, pid: &str) -> Option<&mut Participant> {
        self.rooms
            .get_mut(self.by_sid.get(pid)?)?
            .participant_mut(pid)
    }

    /// Closes a participant's signaling session with `text` as the WebSocket close reason,
    /// and removes it with `reason`.
    fn close_session(&mut self, pid: &str, text: &str, reason: lk::DisconnectReason) {
        if let Some(p) = self.participant(pid) {
            let _ = p.out.try_send(Out::Close(text.to_owned()));
        }
        self.remove_participant(pid, reason, None);
    }

    fn on_add_track(&mut self, pid: &str, req: lk::AddTrackRequest) {
        let Some(p) = self.participant_mut(pid) else {
            return;
        };
        let kind_ok =
            req.r#type == lk::TrackType::Audio as i32 || req.r#type == lk::TrackType::Video as i32;
        let allowed = p.permission.can_publish
            && (p.permission.can_publish_sources.is_empty()
                || p.permission.can_publish_sources.contains(&req.source));
        if !allowed || !kind_ok {
            let reason = if kind_ok {
                lk::request_response::Reason::NotAllowed
            } else {
                lk::request_response::Reason::NotFound
            };
            tracing::info!(participant = %pid, source = source_name(req.source), "add_track refused");
            let _ = p.send(Resp::RequestResponse(lk::RequestResponse {
                request_id: 0,
                reason: reason as i32,
                message: if kind_ok {
                    "not allowed to publish this source".into()
                } else {
                    "only audio and video tracks can be published".into()
                },
                request: Some(lk::request_response::Request::AddTrack(req)),
            }));
            return;
        }
        // A repeated request for the same cid keeps its sid.
        let sid = p
            .pending
            .iter()
            .find(|t| t.req.cid == req.cid)
            .map(|t| t.sid.clone())
            .unwrap_or_else(|| track_sid(&req));
        p.pending.retain(|t| t.req.cid != req.cid);
        let info = pending_info(&sid, &req);
        p.pending.push(PendingTrack {
            req: req.clone(),
            sid,
        });
        let _ = p.send(Resp::TrackPublished(lk::TrackPublishedResponse {
            cid: req.cid,
            track: Some(info),
        }));
    }

    fn on_publisher_offer(&mut self, pid: &str, sd: &lk::SessionDescription) -> Result<(), String> {
        let offer = SessionOffer::parse(&sd.sdp).map_err(|e| e.to_string())?;
        offer.validate().map_err(|e| e.to_string())?;
        let room_name = self.by_sid.get(pid).cloned().ok_or("gone")?;
        let has_pc = self
            .rooms
            .get(&room_name)
            .and_then(|r| r.participant(pid))
            .ok_or("gone")?
            .publisher
            .is_some();
        if !has_pc {
            let remote = remote_transport(&offer)?;
            let (transport_id, ufrag, pwd) =
                (next_id(), random_ice_string(8), random_ice_string(24));
            let room_id = self.rooms.get(&room_name).ok_or("gone")?.id;
            let remote_ufrag = remote.ufrag.clone();
            let created = self.request(Cmd::CreateWebrtcTransport(pb::CreateWebRtcTransport {
                room_id,
                transport_id,
                local_ufrag: ufrag.clone(),
                local_pwd: pwd.clone(),
                remote_ufrag: remote.ufrag,
                remote_pwd: remote.pwd,
                remote_fingerprint: remote.fingerprint,
                dtls_client: remote.dtls_client,
            }))?;
            let pb::event::Body::TransportCreated(t) = created else {
                return Err("media plane: unexpected answer to CreateWebRtcTransport".into());
            };
            let core = core_params(&t)?;
            let room = self.rooms.get_mut(&room_name).ok_or("gone")?;
            room.core.get_or_insert(core);
            let p = room.participant_mut(pid).ok_or("gone")?;
            p.publisher = Some(PubPc {
                transport_id,
                ufrag,
                pwd,
                remote_ufrag,
                session_id: u64::from(random_u32()),
                version: 0,
                mids: HashMap::new(),
            });
            self.by_transport.insert(transport_id, pid.to_owned());
        } else {
            self.restart_ice_if_asked(&room_name, pid, &offer)?;
        }
        let room = self.rooms.get_mut(&room_name).ok_or("gone")?;
        let room_id = room.id;
        let (addr, sha) = room.core.ok_or("the room has no core yet")?;
        let p = room.participant_mut(pid).ok_or("gone")?;
        let pc = p.publisher.as_mut().ok_or("no publisher transport")?;
        pc.version += 1;
        let mut params = ServerParams::new(&pc.ufrag, &pc.pwd, sha, vec![addr]);
        params.session_id = pc.session_id;
        params.session_version = pc.version;
        let (answer, choices) = AnswerBuilder::new(&offer, &params)
            .build_with_choices()
            .map_err(|e| e.to_string())?;
        let transport_id = pc.transport_id;
        let can_publish = p.permission.can_publish;
        let extensions = header_extensions(room_id, transport_id, &choices);

        // Sections that stopped sending: their tracks are unpublished.
        let mut unpublished = Vec::new();
        for (section, choice) in offer.media.iter().zip(&choices) {
            if let Some(sid) = pc.mids.get(&section.mid) {
                if section.is_rejected() || !choice.direction.receives() {
                    unpublished.push(sid.clone());
                }
            }
        }
        pc.mids.retain(|_, sid| !unpublished.contains(sid));
        // New sending sections: match each to a pending track.
        let mut adds = Vec::new();
        for (section, choice) in offer.media.iter().zip(&choices) {
            if !can_publish
                || pc.mids.contains_key(&section.mid)
                || section.is_rejected()
                || !choice.direction.receives()
                || !matches!(section.kind, MediaKind::Audio | MediaKind::Video)
            {
                continue;
            }
            let want_kind = if section.kind == MediaKind::Video {
                lk::TrackType::Video as i32
            } else {
                lk::TrackType::Audio as i32
            };
            let msid_track = section
                .msid
                .as_ref()
                .and_then(|(_, t)| t.clone())
                .or_else(|| section.ssrcs.iter().find_map(|s| s.msid.clone()))
                .unwrap_or_default();
            let msid_track = msid_track
                .split_whitespace()
                .last()
                .unwrap_or_default()
                .to_owned();
            let pos = p
                .pending
                .iter()
                .position(|t| {
                    t.req.r#type == want_kind
                        && (t.req.cid == msid_track
                            || t.req.simulcast_codecs.iter().any(|c| c.cid == msid_track))
                })
                .or_else(|| p.pending.iter().position(|t| t.req.r#type == want_kind));
            let Some(pos) = pos else {
                tracing::debug!(participant = %pid, mid = %section.mid, "media without add_track; ignored");
                continue;
            };
            let track_id = next_id();
            let Some(cmd) = add_track_for(section, choice, room_id, transport_id, track_id)? else {
                continue;
            };
            let Some(codec) = choice.codec.clone() else {
                continue;
            };
            let pending = p.pending.remove(pos);
            pc.mids.insert(section.mid.clone(), pending.sid.clone());
            adds.push((cmd, pending, section.mid.clone(), section.kind, codec));
        }
        let _ = p.send(Resp::Answer(lk::SessionDescription {
            r#type: "answer".into(),
            sdp: answer,
            id: sd.id,
            mid_to_track_id: HashMap::new(),
        }));

        // Before the tracks: their RID layers are learnt with these ids, and transport-cc
        // feedback starts with the first packet.
        self.request(Cmd::SetHeaderExtensions(extensions))?;
        let mut published = Vec::new();
        for (cmd, pending, mid, kind, codec) in adds {
            let track_id = cmd.track_id;
            if let Err(e) = self.request(Cmd::AddTrack(cmd)) {
                tracing::warn!(participant = %pid, error = %e, "track not published");
                continue;
            }
            let mut info = pending_info(&pending.sid, &pending.req);
            info.mid = mid.clone();
            info.mime_type = mime_type(kind, &codec);
            for c in &mut info.codecs {
                c.mid = mid.clone();
                c.mime_type = info.mime_type.clone();
            }
            let Some(p) = self
                .rooms
                .get_mut(&room_name)
                .and_then(|r| r.participant_mut(pid))
            else {
                return Ok(());
            };
            p.tracks.push(PubTrack {
                info,
                track_id,
                kind,
                codec,
            });
            published.push(pending.sid);
        }
        for sid in &unpublished {
            self.unpublish(&room_name, pid, sid);
        }
        if !published.is_empty() || !unpublished.is_empty() {
            self.announce(pid);
        }
        for t in published {
            tracing::info!(participant = %pid, track = %t, "track published");
            self.subscribe_everyone(&room_name, &t);
        }
        Ok(())
    }

    /// A publisher re-offer with new ICE credentials is an ICE restart (the client lost
    /// its path, or moved networks): Prism answers with new credentials of its own and the
    /// media plane switches to them, keeping DTLS and SRTP (RFC 8445 §9).
    fn restart_ice_if_asked(
        &mut self,
        room_name: &str,
        pid: &str,
        offer: &SessionOffer,
    ) -> Result<(), String> {
        let remote = remote_transport(offer)?;
        let room = self.rooms.get_mut(room_name).ok_or("gone")?;
        let room_id = room.id;
        let pc = room
            .participant_mut(pid)
            .and_then(|p| p.publisher.as_mut())
            .ok_or("no publisher transport")?;
        if pc.remote_ufrag == remote.ufrag {
            return Ok(());
        }
        let (ufrag, pwd) = (random_ice_string(8), random_ice_string(24));
        let transport_id = pc.transport_id;
        self.request(Cmd::RestartIce(pb::RestartIce {
            room_id,
            transport_id,
            local_ufrag: ufrag.clone(),
            local_pwd: pwd.clone(),
            remote_ufrag: remote.ufrag.clone(),
            remote_pwd: remote.pwd,
        }))?;
        tracing::info!(participant = %pid, "ICE restart");
        let pc = self
            .rooms
            .get_mut(room_name)
            .and_then(|r| r.participant_mut(pid))
            .and_then(|p| p.publisher.as_mut())
            .ok_or("gone")?;
        pc.ufrag = ufrag;
        pc.pwd = pwd;
        pc.remote_ufrag = remote.ufrag;
        Ok(())
    }

    /// Removes a published track: the media plane drops it and its down tracks, and every
    /// subscriber's section goes inactive.
    fn unpublish(&mut self, room_name: &str, pid: &str, track_sid: &str) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let room_id = room.id;
        let Some(p) = room.participant_mut(pid) else {
            return;
        };
        let Some(pos) = p.tracks.iter().position(|t| t.info.sid == track_sid) else {
            return;
        };
        let t = p.tracks.remove(pos);
        let _ = self.request(Cmd::RemoveTrack(pb::RemoveTrack {
            room_id,
            track_id: t.track_id,
        }));
        let subs: Vec<String> = self
            .rooms
            .get(room_name)
            .map(|r| r.participants.iter().map(|q| q.sid.clone()).collect())
            .unwrap_or_default();
        for s in subs {
            // The forwarder already removed the down tracks with their track.
            self.unsubscribe(room_name, &s, track_sid, false);
        }
        if let Some(p) = self.rooms.get(room_name).and_then(|r| r.participant(pid)) {
            let _ = p.send(Resp::TrackUnpublished(lk::TrackUnpublishedResponse {
                track_sid: track_sid.to_owned(),
            }));
        }
    }

    fn subscribe_everyone(&mut self, room_name: &str, track_sid: &str) {
        let subs: Vec<String> = self
            .rooms
            .get(room_name)
            .map(|r| {
                r.participants
                    .iter()
                    .filter(|q| q.auto_subscribe)
                    .map(|q| q.sid.clone())
                    .collect()
            })
            .unwrap_or_default();
        for s in subs {
            self.subscribe(room_name, &s, track_sid);
        }
    }

    /// Subscribes `sub` to every track published in its room (a late joiner).
    fn subscribe_existing(&mut self, room_name: &str, sub: &str) {
        let tracks: Vec<String> = self
            .rooms
            .get(room_name)
            .map(|r| {
                r.participants
                    .iter()
                    .filter(|q| q.sid != sub)
                    .flat_map(|q| q.tracks.iter().map(|t| t.info.sid.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for t in tracks {
            self.subscribe(room_name, sub, &t);
        }
    }

    fn subscribe(&mut self, room_name: &str, sub: &str, track_sid: &str) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let Some((publisher, track)) = room.track(track_sid) else {
            return;
        };
        if publisher.sid == sub {
            return;
        }
        let ssrc = random_u32();
        let st = SubTrack {
            track_sid: track_sid.to_owned(),
            publisher_sid: publisher.sid.clone(),
            track_id: track.track_id,
            ssrc,
            rtx_ssrc: (track.kind == MediaKind::Video).then(|| loop {
                let r = random_u32();
                if r != ssrc {
                    break r;
                }
            }),
            codec: track.codec.clone(),
            down_track_id: None,
            spatial: 2,
            paused: false,
        };
        let kind = track.kind;
        let Some(p) = room.participant_mut(sub) else {
            return;
        };
        if !p.permission.can_subscribe
            || p.subscriber
                .sections
                .iter()
                .any(|s| s.track.as_ref().is_some_and(|t| t.track_sid == track_sid))
        {
            return;
        }
        let pc = &mut p.subscriber;
        if let Some(s) = pc
            .sections
            .iter_mut()
            .find(|s| s.kind == kind && s.track.is_none() && s.reusable)
        {
            s.track = Some(st);
            s.reusable = false;
        } else {
            let mid = pc.next_mid.to_string();
            pc.next_mid += 1;
            pc.sections.push(SubSection {
                mid,
                kind,
                track: Some(st),
                reusable: false,
            });
        }
        self.negotiate(room_name, sub);
    }

    /// Stops sending `track_sid` to `sub`. `remove_down_track` is false when the media plane
    /// has already removed it (its track is gone).
    fn unsubscribe(
        &mut self,
        room_name: &str,
        sub: &str,
        track_sid: &str,
        remove_down_track: bool,
    ) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let room_id = room.id;
        let Some(p) = room.participant_mut(sub) else {
            return;
        };
        let Some(section) = p
            .subscriber
            .sections
            .iter_mut()
            .find(|s| s.track.as_ref().is_some_and(|t| t.track_sid == track_sid))
        else {
            return;
        };
        let t = section.track.take();
        section.reusable = false;
        if let (true, Some(dt)) = (remove_down_track, t.and_then(|t| t.down_track_id)) {
            let _ = self.request(Cmd::RemoveDownTrack(pb::RemoveDownTrack {
                room_id,
                down_track_id: dt,
            }));
        }
        self.negotiate(room_name, sub);
    }

    /// Sends the subscriber a new offer, or remembers to once the one in flight is answered.
    fn negotiate(&mut self, room_name: &str, pid: &str) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let Some((addr, sha)) = room.core else {
            return;
        };
        let Some(p) = room.participant_mut(pid) else {
            return;
        };
        let pc = &mut p.subscriber;
        if pc.sections.is_empty() {
            return;
        }
        if pc.in_flight {
            pc.dirty = true;
            return;
        }
        pc.version += 1;
        let mut params = ServerParams::new(&pc.ufrag, &pc.pwd, sha, vec![addr]);
        params.session_id = pc.session_id;
        params.session_version = pc.version;
        let mut builder = OfferBuilder::new(&params);
        for s in &pc.sections {
            builder = builder.section(match &s.track {
                Some(t) => OfferSection::Track(SendTrack {
                    mid: s.mid.clone(),
                    kind: s.kind,
                    stream_id: format!("{}|{}", t.publisher_sid, t.track_sid),
                    track_id: t.track_sid.clone(),
                    cname: t.publisher_sid.clone(),
                    ssrc: t.ssrc,
                    rtx_ssrc: t.rtx_ssrc,
                    codecs: offered_codecs(&t.codec, t.rtx_ssrc.is_some()),
                }),
                None => OfferSection::Inactive {
                    mid: s.mid.clone(),
                    kind: s.kind,
                },
            });
        }
        let sdp = match builder.build() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(participant = %pid, error = %e, "cannot build a subscriber offer");
                return;
            }
        };
        pc.last_offer_id += 1;
        pc.in_flight = true;
        pc.dirty = false;
        let id = pc.last_offer_id;
        let ok = p.send(Resp::Offer(lk::SessionDescription {
            r#type: "offer".into(),
            sdp,
            id,
            mid_to_track_id: HashMap::new(),
        }));
        if !ok {
            self.drop_slow(vec![pid.to_owned()]);
        }
    }

    fn on_subscriber_answer(
        &mut self,
        pid: &str,
        sd: &lk::SessionDescription,
    ) -> Result<(), String> {
        let answer = SessionOffer::parse(&sd.sdp).map_err(|e| e.to_string())?;
        let room_name = self.by_sid.get(pid).cloned().ok_or("gone")?;
        let room = self.rooms.get_mut(&room_name).ok_or("gone")?;
        let room_id = room.id;
        let p = room.participant_mut(pid).ok_or("gone")?;
        if !p.subscriber.in_flight {
            return Ok(());
        }
        if p.subscriber.transport_id.is_none() {
            let remote = remote_transport(&answer)?;
            let transport_id = next_id();
            let (ufrag, pwd) = (p.subscriber.ufrag.clone(), p.subscriber.pwd.clone());
            self.request(Cmd::CreateWebrtcTransport(pb::CreateWebRtcTransport {
                room_id,
                transport_id,
                local_ufrag: ufrag,
                local_pwd: pwd,
                remote_ufrag: remote.ufrag,
                remote_pwd: remote.pwd,
                remote_fingerprint: remote.fingerprint,
                dtls_client: remote.dtls_client,
            }))?;
            self.by_transport.insert(transport_id, pid.to_owned());
            let p = self
                .rooms
                .get_mut(&room_name)
                .and_then(|r| r.participant_mut(pid))
                .ok_or("gone")?;
            p.subscriber.transport_id = Some(transport_id);
        }
        let p = self
            .rooms
            .get_mut(&room_name)
            .and_then(|r| r.participant_mut(pid))
            .ok_or("gone")?;
        let transport_id = p.subscriber.transport_id.ok_or("no subscriber transport")?;
        // The extensions the subscriber accepted from our offer: one id each across the
        // bundle (our offer uses the same ids everywhere), written on what we send it.
        let live = || answer.media.iter().filter(|m| !m.is_rejected());
        self.request(Cmd::SetHeaderExtensions(pb::SetHeaderExtensions {
            room_id,
            transport_id,
            ids: Some(extension_ids(live().flat_map(|m| &m.extmaps))),
            transport_cc_feedback: false,
        }))?;
        let p = self
            .rooms
            .get_mut(&room_name)
            .and_then(|r| r.participant_mut(pid))
            .ok_or("gone")?;
        let mut adds = Vec::new();
        for (i, s) in p.subscriber.sections.iter_mut().enumerate() {
            let Some(m) = answer.media.iter().find(|m| m.mid == s.mid) else {
                continue;
            };
            match &s.track {
                None => s.reusable = true,
                Some(t) if t.down_track_id.is_none() => {
                    if m.is_rejected() || !m.direction.receives() {
                        continue;
                    }
                    let Some(c) = m
                        .codecs
                        .iter()
                        .find(|c| c.name.eq_ignore_ascii_case(&t.codec.name) && !c.is_rtx())
                    else {
                        continue;
                    };
                    let ext = extension_ids(m.extmaps.iter());
                    // RTX only where the subscriber kept it for this codec.
                    let rtx = t.rtx_ssrc.zip(
                        m.rtx
                            .iter()
                            .find(|(_, apt)| **apt == c.pt)
                            .map(|(pt, _)| *pt),
                    );
                    adds.push((
                        i,
                        t.track_id,
                        t.ssrc,
                        c.pt,
                        rtx,
                        t.spatial,
                        s.mid.clone(),
                        ext,
                    ));
                }
                Some(_) => {}
            }
        }
        let mut done = Vec::new();
        for (i, track_id, ssrc, pt, rtx, spatial, mid, ext) in adds {
            let down_track_id = next_id();
            match self.request(Cmd::AddDownTrack(pb::AddDownTrack {
                room_id,
                track_id,
                down_track_id,
                transport_id,
                ssrc,
                payload_type: u32::from(pt),
                preferred_spatial: spatial,
                preferred_temporal: None,
                rtx_ssrc: rtx.map_or(0, |(ssrc, _)| ssrc),
                rtx_payload_type: rtx.map_or(0, |(_, pt)| u32::from(pt)),
                mid,
                header_extensions: Some(ext),
            })) {
                Ok(_) => done.push((i, down_track_id)),
                Err(e) => tracing::warn!(participant = %pid, error = %e, "down track not added"),
            }
        }
        let p = self
            .rooms
            .get_mut(&room_name)
            .and_then(|r| r.participant_mut(pid))
            .ok_or("gone")?;
        for (i, dt) in done {
            if let Some(t) = p
                .subscriber
                .sections
                .get_mut(i)
                .and_then(|s| s.track.as_mut())
            {
                t.down_track_id = Some(dt);
            }
        }
        p.subscriber.in_flight = false;
        if p.subscriber.dirty {
            self.negotiate(&room_name, pid);
        }
        Ok(())
    }

    fn on_subscription(&mut self, pid: &str, s: &lk::UpdateSubscription) {
        let Some(room) = self.by_sid.get(pid).cloned() else {
            return;
        };
        let mut sids: Vec<String> = s.track_sids.clone();
        for pt in &s.participant_tracks {
            sids.extend(pt.track_sids.iter().cloned());
        }
        for t in sids {
            if s.subscribe {
                self.subscribe(&room, pid, &t);
            } else {
                self.unsubscribe(&room, pid, &t, true);
            }
        }
    }

    fn on_track_settings(&mut self, pid: &str, s: &lk::UpdateTrackSettings) {
        let Some(room_name) = self.by_sid.get(pid).cloned() else {
            return;
        };
        let Some(room) = self.rooms.get(&room_name) else {
            return;
        };
        let room_id = room.id;
        let mut cmds = Vec::new();
        let mut updates = Vec::new();
        for sid in &s.track_sids {
            let Some((_, track)) = room.track(sid) else {
                continue;
            };
            let spatial = wanted_spatial(&track.info, s);
            updates.push((sid.clone(), spatial));
        }
        let Some(p) = self
            .rooms
            .get_mut(&room_name)
            .and_then(|r| r.participant_mut(pid))
        else {
            return;
        };
        for (sid, spatial) in updates {
            for sec in &mut p.subscriber.sections {
                let Some(t) = sec.track.as_mut().filter(|t| t.track_sid == sid) else {
                    continue;
                };
                t.spatial = spatial;
                let Some(dt) = t.down_track_id else {
                    continue;
                };
                if t.paused != s.disabled {
                    t.paused = s.disabled;
                    cmds.push(Cmd::SetPaused(pb::SetPaused {
                        room_id,
                        down_track_id: dt,
                        paused: s.disabled,
                    }));
                }
                if sec.kind == MediaKind::Video && !s.disabled {
                    cmds.push(Cmd::SetPreferredLayer(pb::SetPreferredLayer {
                        room_id,
                        down_track_id: dt,
                        spatial,
                        temporal: 3,
                    }));
                }
            }
        }
        for c in cmds {
            let _ = self.request(c);
        }
    }

    /// Mutes or unmutes a participant's published track (its own request, or RoomService).
    /// Returns the track's new info.
    pub fn set_muted(&mut self, pid: &str, track_sid: &str, muted: bool) -> Option<lk::TrackInfo> {
        let room = self.by_sid.get(pid).cloned()?;
        let p = self.rooms.get_mut(&room)?.participant_mut(pid)?;
        let t = p.tracks.iter_mut().find(|t| t.info.sid == track_sid);
        let info = match t {
            Some(t) => {
                t.info.muted = muted;
                t.info.clone()
            }
            None => {
                // Muted before it was published: remember it in the pending request.
                let pt = p.pending.iter_mut().find(|t| t.sid == track_sid)?;
                pt.req.muted = muted;
                return Some(pending_info(&pt.sid, &pt.req));
            }
        };
        self.announce(pid);
        Some(info)
    }

    fn on_update_metadata(&mut self, pid: &str, m: lk::UpdateParticipantMetadata) {
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
        for (k, v) in &m.attributes {
            if v.is_empty() {
                p.attributes.remove(k);
            } else {
                p.attributes.insert(k.clone(), v.clone());
            }
        }
        let _ = p.send(Resp::RequestResponse(lk::RequestResponse {
            request_id: m.request_id,
            reason: lk::request_response::Reason::Ok as i32,
            message: String::new(),
            request: None,
        }));
        self.announce(pid);
    }

    /// Removes a participant: its transports close, its tracks leave every subscriber, the
    /// others see it disconnected. `leave` sends it a leave request first (server-initiated
    /// removals).
    pub fn remove_participant(
        &mut self,
        pid: &str,
        reason: lk::DisconnectReason,
        leave: Option<lk::DisconnectReason>,
    ) {
        let Some(room_name) = self.by_sid.remove(pid) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&room_name) else {
            return;
        };
        let room_id = room.id;
        let Some(pos) = room.participants.iter().position(|p| p.sid == pid) else {
            return;
        };
        let mut p = room.participants.remove(pos);
        if room.participants.is_empty() {
            room.empty_since = Some(Instant::now());
        }
        if let Some(r) = leave {
            let _ = p.out.try_send(Out::Signal(Box::new(lk::SignalResponse {
                message: Some(Resp::Leave(lk::LeaveRequest {
                    can_reconnect: false,
                    reason: r as i32,
                    action: lk::leave_request::Action::Disconnect as i32,
                })),
            })));
            let _ = p.out.try_send(Out::Close(format!("{r:?}")));
        }
        self.counters.leaves += 1;
        tracing::info!(room = %room_name, participant = %pid, ?reason, "left");
        for t in p.transport_ids() {
            self.by_transport.remove(&t);
            let _ = self.request(Cmd::CloseTransport(pb::CloseTransport {
                room_id,
                transport_id: t,
            }));
        }
        let tracks: Vec<String> = p.tracks.iter().map(|t| t.info.sid.clone()).collect();
        let subs: Vec<String> = self
            .rooms
            .get(&room_name)
            .map(|r| r.participants.iter().map(|q| q.sid.clone()).collect())
            .unwrap_or_default();
        for t in &tracks {
            for s in &subs {
                self.unsubscribe(&room_name, s, t, false);
            }
        }
        p.state = lk::participant_info::State::Disconnected;
        p.version += 1;
        p.tracks.clear();
        let mut info = p.info();
        info.disconnect_reason = reason as i32;
        if !p.permission.hidden {
            self.broadcast(&room_name, &[info], None);
        }
    }

    fn on_event(&mut self, ev: pb::Event) {
        match ev.body {
            Some(pb::event::Body::TransportConnected(c)) => {
                let Some(pid) = self.by_transport.get(&c.transport_id).cloned() else {
                    return;
                };
                let Some(room) = self.by_sid.get(&pid).cloned() else {
                    return;
                };
                let Some(p) = self
                    .rooms
                    .get_mut(&room)
                    .and_then(|r| r.participant_mut(&pid))
                else {
                    return;
                };
                let is_publisher = p
                    .publisher
                    .as_ref()
                    .is_some_and(|pc| pc.transport_id == c.transport_id);
                if is_publisher && p.state != lk::participant_info::State::Active {
                    p.state = lk::participant_info::State::Active;
                    self.announce(&pid);
                    if self
                        .rooms
                        .get(&room)
                        .and_then(|r| r.participant(&pid))
                        .is_some_and(|p| p.auto_subscribe)
                    {
                        self.subscribe_existing(&room, &pid);
                    }
                }
            }
            Some(pb::event::Body::TransportClosed(c)) => {
                if let Some(pid) = self.by_transport.get(&c.transport_id).cloned() {
                    tracing::info!(participant = %pid, reason = %c.reason, "transport closed");
                    self.close_session(
                        &pid,
                        &format!("media connection lost: {}", c.reason),
                        lk::DisconnectReason::ConnectionTimeout,
                    );
                }
            }
            Some(pb::event::Body::AudioLevel(a)) => self.on_audio_level(&a),
            Some(pb::event::Body::DataMessage(d)) => {
                self.on_data(d.transport_id, &d.label, &d.data)
            }
            _ => {}
        }
    }

    /// A published audio track started or stopped carrying speech: the room hears of the
    /// participant's change as a `speakers_changed` delta (LiveKit's form since protocol 3:
    /// only who changed, with `active=false` when someone stops).
    fn on_audio_level(&mut self, a: &pb::AudioLevel) {
        tracing::debug!(
            track = a.track_id,
            speaking = a.speaking,
            level = a.level,
            "audio level"
        );
        let found = self.rooms.iter_mut().find_map(|(name, r)| {
            r.participants
                .iter_mut()
                .find(|p| p.tracks.iter().any(|t| t.track_id == a.track_id))
                .map(|p| (name.clone(), p))
        });
        let Some((room, p)) = found else {
            return;
        };
        let level_of = |p: &Participant| p.speaking.values().copied().reduce(f32::max);
        let before = level_of(p);
        if a.speaking {
            p.speaking.insert(a.track_id, a.level);
        } else {
            p.speaking.remove(&a.track_id);
        }
        let after = level_of(p);
        if before == after || p.permission.hidden {
            return;
        }
        let info = lk::SpeakerInfo {
            sid: p.sid.clone(),
            level: after.unwrap_or(0.0),
            active: after.is_some(),
        };
        let Some(r) = self.rooms.get(&room) else {
            return;
        };
        let mut slow = Vec::new();
        for q in &r.participants {
            let msg = Resp::SpeakersChanged(lk::SpeakersChanged {
                speakers: vec![info.clone()],
            });
            if !q.send(msg) {
                slow.push(q.sid.clone());
            }
        }
        self.drop_slow(slow);
    }

    /// A data packet from a participant: relayed with the sender's identity stamped, to its
    /// destinations or everyone else.
    fn on_data(&mut self, transport_id: u64, label: &str, data: &[u8]) {
        let Some(pid) = self.by_transport.get(&transport_id).cloned() else {
            return;
        };
        let Some(room_name) = self.by_sid.get(&pid).cloned() else {
            return;
        };
        let Some(room) = self.rooms.get(&room_name) else {
            return;
        };
        let Some(sender) = room.participant(&pid) else {
            return;
        };
        if !sender.permission.can_publish_data {
            self.counters.refused_data += 1;
            return;
        }
        let Ok(dp) = lk::DataPacket::decode(data) else {
            self.counters.malformed_data += 1;
            tracing::debug!(participant = %pid, "malformed data packet dropped");
            return;
        };
        let mut dests = dp.destination_identities.clone();
        if dests.is_empty() {
            if let Some(lk::data_packet::Value::User(u)) = &dp.value {
                dests = u.destination_identities.clone();
            }
        }
        let identity = if sender.permission.hidden {
            String::new()
        } else {
            sender.identity.clone()
        };
        let out = stamp_sender(data, &identity, &pid);
        self.deliver_data(&room_name, Some(&pid), &dests, label, out);
    }

    /// Sends an encoded data packet to everyone in the room but `from`, or only to the
    /// participants whose identity is in `dests` when it is not empty.
    pub fn deliver_data(
        &mut self,
        room_name: &str,
        from: Option<&str>,
        dests: &[String],
        label: &str,
        packet: Vec<u8>,
    ) {
        let Some(room) = self.rooms.get(room_name) else {
            return;
        };
        let targets: Vec<u64> = room
            .participants
            .iter()
            .filter(|q| Some(q.sid.as_str()) != from)
            .filter(|q| dests.is_empty() || dests.contains(&q.identity))
            .filter_map(|q| q.publisher.as_ref().map(|pc| pc.transport_id))
            .collect();
        let room_id = room.id;
        for transport_id in targets {
            self.counters.data_relayed += 1;
            let _ = self.request(Cmd::SendData(pb::SendData {
                room_id,
                transport_id,
                label: label.to_owned(),
                binary: true,
                data: packet.clone(),
            }));
        }
    }

    /// Closes a room: everyone in it is told to leave.
    pub fn delete_room(&mut self, name: &str, reason: lk::DisconnectReason) -> bool {
        let Some(room) = self.rooms.get(name) else {
            return false;
        };
        let pids: Vec<String> = room.participants.iter().map(|p| p.sid.clone()).collect();
        for pid in pids {
            self.remove_participant(&pid, reason, Some(reason));
        }
        if let Some(room) = self.rooms.remove(name) {
            let _ = self.request(Cmd::CloseRoom(pb::CloseRoom { room_id: room.id }));
            tracing::info!(room = name, "room closed");
        }
        true
    }

    fn tick(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .rooms
            .values()
            .filter(|r| {
                r.empty_since.is_some_and(|since| {
                    let limit = if r.ever_joined {
                        r.departure_timeout
                    } else {
                        r.empty_timeout
                    };
                    now.saturating_duration_since(since) >= Duration::from_secs(u64::from(limit))
                })
            })
            .map(|r| r.name.clone())
            .collect();
        for name in expired {
            self.delete_room(&name, lk::DisconnectReason::RoomClosed);
        }
    }

    fn shutdown(&mut self) {
        self.stopping = true;
        let names: Vec<String> = self.rooms.keys().cloned().collect();
        for name in names {
            let pids: Vec<String> = self
                .rooms
                .get(&name)
                .map(|r| r.participants.iter().map(|p| p.sid.clone()).collect())
                .unwrap_or_default();
            for pid in pids {
                self.remove_participant(
                    &pid,
                    lk::DisconnectReason::ServerShutdown,
                    Some(lk::DisconnectReason::ServerShutdown),
                );
            }
        }
    }

    /// The room a participant is in, by identity.
    pub fn find_identity(&self, room: &str, identity: &str) -> Option<&Participant> {
        self.rooms
            .get(room)?
            .participants
            .iter()
            .find(|p| p.identity == identity)
    }
}

/// The room core's address and fingerprint from a `TransportCreated` event.
fn core_params(t: &pb::TransportCreated) -> Result<(SocketAddr, [u8; 32]), String> {
    let addr: SocketAddr = t
        .local
        .parse()
        .map_err(|_| "media plane: bad local address".to_owned())?;
    let fp = prism_forwarder::dtls::Fingerprint::parse(&t.fingerprint)
        .map_err(|_| "media plane: bad fingerprint".to_owned())?;
    let mut sha = [0u8; 32];
    if fp.as_bytes().len() != 32 {
        return Err("media plane: fingerprint is not sha-256".into());
    }
    sha.copy_from_slice(fp.as_bytes());
    Ok((addr, sha))
}

/// The codecs offered to a subscriber: the publisher's, with only the feedback Prism
/// answers (NACK, PLI, FIR), and its RTX companion when `rtx` (on a payload type of its
/// own, free in this section).
fn offered_codecs(c: &CodecParams, rtx: bool) -> Vec<CodecParams> {
    let mut c = c.clone();
    c.rtcp_fb
        .retain(|f| f == "nack" || f == "nack pli" || f == "ccm fir");
    let mut out = vec![c.clone()];
    if rtx {
        if let Some(pt) = (96u8..=127).find(|pt| *pt != c.pt) {
            out.push(CodecParams {
                pt,
                name: "rtx".into(),
                clock_rate: c.clock_rate,
                channels: None,
                fmtp: format!("apt={}", c.pt),
                rtcp_fb: Vec::new(),
            });
        }
    }
    out
}

/// The TrackInfo of a track announced by `add_track`.
fn pending_info(sid: &str, req: &lk::AddTrackRequest) -> lk::TrackInfo {
    let video = req.r#type == lk::TrackType::Video as i32;
    let codec = req
        .simulcast_codecs
        .first()
        .map(|c| c.codec.to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| if video { "vp8".into() } else { "opus".into() });
    let mime = match codec.as_str() {
        "vp8" => "video/VP8".to_owned(),
        "vp9" => "video/VP9".to_owned(),
        "h264" => "video/H264".to_owned(),
        "av1" => "video/AV1".to_owned(),
        "opus" => "audio/opus".to_owned(),
        other => format!("{}/{other}", if video { "video" } else { "audio" }),
    };
    let layers = req.layers.clone();
    let simulcast = layers.len() > 1;
    lk::TrackInfo {
        sid: sid.to_owned(),
        r#type: req.r#type,
        name: req.name.clone(),
        muted: req.muted,
        width: req.width,
        height: req.height,
        simulcast,
        disable_dtx: req.disable_dtx,
        source: req.source,
        layers: layers.clone(),
        mime_type: mime.clone(),
        codecs: vec![lk::SimulcastCodecInfo {
            mime_type: mime,
            mid: String::new(),
            cid: req.cid.clone(),
            layers,
            video_layer_mode: if video {
                lk::video_layer::Mode::OneSpatialLayerPerStream as i32
            } else {
                lk::video_layer::Mode::Unused as i32
            },
            sdp_cid: String::new(),
        }],
        stereo: req.stereo,
        disable_red: req.disable_red,
        encryption: req.encryption,
        stream: req.stream.clone(),
        audio_features: req.audio_features.clone(),
        backup_codec_policy: req.backup_codec_policy,
        ..Default::default()
    }
}

/// Appends the sender's identity (field 4) and sid (field 17) to an encoded `DataPacket`.
/// For singular fields protobuf keeps the last value, so this overrides whatever the sender
/// wrote, and everything Prism does not model travels on untouched.
pub fn stamp_sender(packet: &[u8], identity: &str, sid: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(packet.len() + identity.len() + sid.len() + 8);
    out.extend_from_slice(packet);
    prost::encoding::string::encode(4, &identity.to_owned(), &mut out);
    prost::encoding::string::encode(17, &sid.to_owned(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_packet_keeps_unknown_payloads_and_overrides_sender() {
        // A DataPacket with a chat message (field 9, not modelled) and a forged identity.
        let mut raw = Vec::new();
        prost::encoding::string::encode(4, &"forged".to_owned(), &mut raw);
        prost::encoding::bytes::encode(9, &vec![0x22u8, 0x02, b'h', b'i'], &mut raw);
        let out = stamp_sender(&raw, "alice", "PA_abc");
        let dp = lk::DataPacket::decode(out.as_slice()).unwrap();
        assert_eq!(dp.participant_identity, "alice");
        assert_eq!(dp.participant_sid, "PA_abc");
        assert!(
            out.windows(4).any(|w| w == [0x22, 0x02, b'h', b'i']),
            "unknown field kept"
        );
    }

    #[test]
    fn track_sids_carry_type_and_source() {
        let req = lk::AddTrackRequest {
            r#type: lk::TrackType::Video as i32,
            source: lk::TrackSource::Camera as i32,
            ..Default::default()
        };
        let s = track_sid(&req);
        assert!(s.starts_with("TR_VC"), "{s}");
        assert_eq!(s.len(), 3 + 2 + 12);
    }

    #[test]
    fn layer_choice_follows_requested_size() {
        let layer = |q: lk::VideoQuality, w: u32, h: u32| lk::VideoLayer {
            quality: q as i32,
            width: w,
            height: h,
            ..Default::default()
        };
        let info = lk::TrackInfo {
            layers: vec![
                layer(lk::VideoQuality::Low, 320, 180),
                layer(lk::VideoQuality::Medium, 640, 360),
                layer(lk::VideoQuality::High, 1280, 720),
            ],
            ..Default::default()
        };
        let ask = |w, h, q: lk::VideoQuality| {
            wanted_spatial(
                &info,
                &lk::UpdateTrackSettings {
                    width: w,
                    height: h,
                    quality: q as i32,
                    ..Default::default()
                },
            )
        };
        assert_eq!(ask(300, 170, lk::VideoQuality::High), 0);
        assert_eq!(ask(600, 340, lk::VideoQuality::High), 1);
        assert_eq!(ask(1920, 1080, lk::VideoQuality::Low), 2);
        assert_eq!(ask(0, 0, lk::VideoQuality::Low), 0);
        assert_eq!(ask(0, 0, lk::VideoQuality::High), 2);
    }
}
