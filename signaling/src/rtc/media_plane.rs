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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pb::command::Body as Cmd;
use prism_forwarder::control::{ControlClient, ControlError};
use prism_proto::control as pb;

use super::ids::MediaRoomId;

/// Where a room's events go. Returns false once the room is gone.
pub type Mailbox = Box<dyn Fn(pb::Event) -> bool + Send + Sync>;

#[derive(Default)]
struct Routes {
    rooms: HashMap<MediaRoomId, Arc<Mailbox>>,
    /// Request id → room, until the answer arrives.
    requests: HashMap<u64, MediaRoomId>,
    /// Transport and track ids (one id space) → room, for unsolicited events.
    objects: HashMap<u64, MediaRoomId>,
}

struct Inner {
    control: ControlClient,
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
            control,
            routes: Mutex::new(Routes::default()),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("media-events".into())
            .spawn(move || pump(&weak))
            .expect("spawn the media event pump");
        Self { inner }
    }

    /// The control client, for requests outside any room (statistics).
    pub fn control(&self) -> &ControlClient {
        &self.inner.control
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
        let id = self.inner.control.next_request_id();
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
        let sent = self.inner.control.send(pb::Command {
            request_id: id,
            body: Some(body),
        });
        if sent.is_err() {
            self.routes().requests.remove(&id);
        }
        sent.map(|()| id)
    }
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
        let ev = match strong.control.next_event(Duration::from_millis(500)) {
            Ok(ev) => ev,
            Err(ControlError::Timeout) => continue,
            Err(_) => return,
        };
        let mailbox = {
            let mut r = strong.routes.lock().unwrap_or_else(|p| p.into_inner());
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
}
