//! The room model's link to the media plane: commands are sent without waiting, and every
//! event (the answer to a command, or something the media plane noticed by itself) is
//! delivered to the room it concerns, in the order the media plane sent it.
//!
//! Why: a room must never wait on the forwarder, and one room's commands must never wait
//! behind another's. Each command names its room; the answer comes back under the
//! command's request id, and unsolicited events name a transport or a track, which the
//! room registered when it created them. One pump thread reads the control channel and
//! hands each event to its room's mailbox (a closure, so this module knows nothing of
//! rooms). Within a room, the media plane handles commands in order (a room lives on one
//! core), so answers arrive in the order the commands were sent.
//!
//! A plane is this node's forwarder (an in-process [`ControlClient`]) or another node's,
//! reached over a node-to-node link (`cluster::media_link`) when a room spans nodes: the
//! link hands its commands to a queue and feeds the events it reads to [`MediaPlane::deliver`].
//! Request ids of a remote plane come from the process-wide id space, so the answers of
//! several planes never mix in a room's pending map.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pb::command::Body as Cmd;
use prism_forwarder::control::{ControlClient, ControlError};
use prism_proto::control as pb;

use super::ids::MediaRoomId;

/// Where a room's events go. Returns false once the room is gone.
pub type Mailbox = Box<dyn Fn(pb::Event) -> bool + Send + Sync>;

/// What a room had on a plane whose link went down.
pub struct Lost {
    /// Its transports and tracks there.
    pub objects: Vec<u64>,
    /// Its commands not answered yet.
    pub requests: Vec<u64>,
    pub mailbox: Arc<Mailbox>,
}

impl std::fmt::Debug for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lost")
            .field("objects", &self.objects)
            .field("requests", &self.requests)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Routes {
    rooms: HashMap<MediaRoomId, Arc<Mailbox>>,
    /// Request id → room, until the answer arrives.
    requests: HashMap<u64, MediaRoomId>,
    /// Transport and track ids (one id space) → room, for unsolicited events.
    objects: HashMap<u64, MediaRoomId>,
}

/// Where commands go.
enum Link {
    Local(ControlClient),
    /// Another node's forwarder: commands are queued for the link's writer.
    Remote(tokio::sync::mpsc::UnboundedSender<pb::Command>),
}

struct Inner {
    link: Link,
    routes: Mutex<Routes>,
}

/// A cheap, cloneable handle on the media plane for rooms.
#[derive(Clone)]
pub struct MediaPlane {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MediaPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaPlane").finish_non_exhaustive()
    }
}

impl MediaPlane {
    /// Starts the event pump on its own thread.
    pub fn start(control: ControlClient) -> Self {
        let inner = Arc::new(Inner {
            link: Link::Local(control),
            routes: Mutex::new(Routes::default()),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("media-events".into())
            .spawn(move || pump(&weak))
            .expect("spawn the media event pump");
        Self { inner }
    }

    /// A plane whose commands go to `commands` (another node's forwarder, through a
    /// link that calls [`Self::deliver`] with each event it reads).
    pub fn remote(commands: tokio::sync::mpsc::UnboundedSender<pb::Command>) -> Self {
        Self {
            inner: Arc::new(Inner {
                link: Link::Remote(commands),
                routes: Mutex::new(Routes::default()),
            }),
        }
    }

    /// Routes one event to its room, as the local pump does.
    pub fn deliver(&self, ev: pb::Event) {
        route(&self.inner, ev);
    }

    /// Every room with something on this plane: the objects it has there and the
    /// requests still unanswered, for a link that went down, so each room can drop what
    /// lived on it and stop waiting.
    pub fn lost(&self) -> Vec<Lost> {
        let r = self.routes();
        let of = |map: &HashMap<u64, MediaRoomId>, room: &MediaRoomId| -> Vec<u64> {
            map.iter()
                .filter(|(_, v)| *v == room)
                .map(|(k, _)| *k)
                .collect()
        };
        r.rooms
            .iter()
            .map(|(room, mailbox)| Lost {
                objects: of(&r.objects, room),
                requests: of(&r.requests, room),
                mailbox: mailbox.clone(),
            })
            .collect()
    }

    /// Whether the plane is this node's own forwarder.
    pub fn is_local(&self) -> bool {
        matches!(self.inner.link, Link::Local(_))
    }

    fn routes(&self) -> MutexGuard<'_, Routes> {
        // Every update is one insert or remove: the map stays usable after a panic.
        self.inner.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Routes the events of `room` to `mailbox` from now on.
    pub fn attach(&self, room: MediaRoomId, mailbox: Mailbox) {
        self.routes().rooms.insert(room, Arc::new(mailbox));
    }

    /// Stops routing anything to `room` (it closed).
    pub fn detach(&self, room: MediaRoomId) {
        let mut r = self.routes();
        r.rooms.remove(&room);
        r.requests.retain(|_, v| *v != room);
        r.objects.retain(|_, v| *v != room);
    }

    /// Sends a command for `room` without waiting; its answer reaches the room's mailbox
    /// under the returned request id. Transports and tracks it creates are routed to the
    /// room from now on; those it removes no longer are.
    pub fn send(&self, room: MediaRoomId, body: Cmd) -> Result<u64, ControlError> {
        self.send_then(room, body, |_| {})
    }

    /// [`Self::send`], calling `before` with the request id before the command leaves
    /// (so a caller can record the id before its answer can arrive).
    pub fn send_then(
        &self,
        room: MediaRoomId,
        body: Cmd,
        before: impl FnOnce(u64),
    ) -> Result<u64, ControlError> {
        let id = match &self.inner.link {
            Link::Local(c) => c.next_request_id(),
            Link::Remote(_) => crate::media::next_id(),
        };
        {
            let mut r = self.routes();
            r.requests.insert(id, room);
            match &body {
                Cmd::CreateWebrtcTransport(c) => {
                    r.objects.insert(c.transport_id, room);
                }
                Cmd::CreatePlainTransport(c) => {
                    r.objects.insert(c.transport_id, room);
                }
                Cmd::AddTrack(c) => {
                    r.objects.insert(c.track_id, room);
                }
                Cmd::CloseTransport(c) => {
                    r.objects.remove(&c.transport_id);
                }
                Cmd::RemoveTrack(c) => {
                    r.objects.remove(&c.track_id);
                }
                _ => {}
            }
        }
        before(id);
        let cmd = pb::Command {
            request_id: id,
            body: Some(body),
        };
        let sent = match &self.inner.link {
            Link::Local(c) => c.send(cmd),
            Link::Remote(tx) => tx.send(cmd).map_err(|_| ControlError::Disconnected),
        };
        if sent.is_err() {
            self.routes().requests.remove(&id);
        }
        sent.map(|()| id)
    }
}

/// The media room a command concerns, `None` for commands outside rooms.
pub fn room_of(body: &Cmd) -> Option<u64> {
    Some(match body {
        Cmd::CreateRoom(c) => c.room_id,
        Cmd::CloseRoom(c) => c.room_id,
        Cmd::CreatePlainTransport(c) => c.room_id,
        Cmd::CreateWebrtcTransport(c) => c.room_id,
        Cmd::CloseTransport(c) => c.room_id,
        Cmd::AddTrack(c) => c.room_id,
        Cmd::RemoveTrack(c) => c.room_id,
        Cmd::AddDownTrack(c) => c.room_id,
        Cmd::RemoveDownTrack(c) => c.room_id,
        Cmd::SetPreferredLayer(c) => c.room_id,
        Cmd::SetPaused(c) => c.room_id,
        Cmd::SetHeaderExtensions(c) => c.room_id,
        Cmd::RestartIce(c) => c.room_id,
        Cmd::SendData(c) => c.room_id,
        Cmd::GetStats(_) => return None,
    })
}

/// The object an unsolicited event is about.
fn object_of(ev: &pb::Event) -> Option<u64> {
    use pb::event::Body as Ev;
    match ev.body.as_ref()? {
        Ev::TransportConnected(c) => Some(c.transport_id),
        Ev::TransportClosed(c) => Some(c.transport_id),
        Ev::DataMessage(d) => Some(d.transport_id),
        Ev::AudioLevel(a) => Some(a.track_id),
        Ev::KeyframeNeeded(k) => Some(k.track_id),
        _ => None,
    }
}

fn pump(inner: &std::sync::Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let Link::Local(control) = &strong.link else {
            return;
        };
        let ev = match control.next_event(Duration::from_millis(500)) {
            Ok(ev) => ev,
            Err(ControlError::Timeout) => continue,
            Err(_) => return,
        };
        route(&strong, ev);
    }
}

/// Hands one event to the room it concerns.
fn route(inner: &Inner, ev: pb::Event) {
    let mailbox = {
        let mut r = inner.routes.lock().unwrap_or_else(|p| p.into_inner());
        let room = if ev.request_id != 0 {
            r.requests.remove(&ev.request_id)
        } else {
            object_of(&ev).and_then(|o| r.objects.get(&o).copied())
        };
        room.and_then(|room| r.rooms.get(&room).cloned())
    };
    match mailbox {
        Some(m) => {
            m(ev);
        }
        None => {
            if let Some(pb::event::Body::Error(e)) = &ev.body {
                tracing::debug!(error = %e.message, "media plane error for a closed room");
            }
        }
    }
}
