//! Commands and events between signaling and the forwarder's cores.
//!
//! In one process the control protocol (`proto/protos/control.proto`) travels over crossbeam
//! channels as the generated Rust types: a [`ControlClient`] (signaling's end) sends
//! [`Command`]s and receives [`Event`]s; the [`ControlServer`] (the forwarder's end) receives
//! commands and hands an event sender to each core. [`socket`] serves the same messages over
//! a Unix or TCP socket as length-prefixed frames ([`frame`]).
//!
//! Invariants:
//! - Every command is answered by exactly one event carrying the same `request_id`;
//!   unsolicited events carry `request_id` 0. This module only moves messages; [`translate`]
//!   turns them into the engine's typed commands and its answers back into events.
//! - Request ids handed out by [`ControlClient::next_request_id`] (and used by
//!   [`ControlClient::request`]) are unique across all clones of one client and never 0.
//! - A core never blocks on the control path: [`ControlServer::send_event`] does not wait;
//!   when the event queue is full it reports [`ControlError::Full`] and the event is lost.
//! - Events that arrive while a [`ControlClient::request`] waits for its answer and are not
//!   the answer to some pending request are kept (up to [`EVENT_QUEUE_LIMIT`], oldest
//!   dropped first) for [`ControlClient::try_event`] and friends, so unsolicited events such
//!   as `KeyframeNeeded` are not lost to a waiting request.

pub mod frame;
pub mod socket;
pub mod translate;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError};
pub use prism_proto::control::{command, event, Command, Event};

pub use frame::FrameError;

/// How many undelivered events a [`ControlClient`] keeps before dropping the oldest.
pub const EVENT_QUEUE_LIMIT: usize = 4096;

/// Why a control message could not be sent or received.
#[derive(Debug)]
#[non_exhaustive]
pub enum ControlError {
    /// The other end is gone (all its handles dropped, or the socket closed).
    Disconnected,
    /// No answer within the given time.
    Timeout,
    /// The queue is full; the message was not sent.
    Full,
    /// A control socket failed.
    Io(io::Error),
    /// A control socket carried a bad frame.
    Frame(FrameError),
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Disconnected => f.write_str("control channel disconnected"),
            Self::Timeout => f.write_str("timed out waiting for the forwarder"),
            Self::Full => f.write_str("control queue full"),
            Self::Io(e) => write!(f, "control socket: {e}"),
            Self::Frame(e) => write!(f, "control socket: {e}"),
        }
    }
}

impl std::error::Error for ControlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Frame(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ControlError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<FrameError> for ControlError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => Self::Io(e),
            e => Self::Frame(e),
        }
    }
}

/// Creates a connected client/server pair. `capacity` bounds both the command and the event
/// queue (at least 1).
pub fn channel(capacity: usize) -> (ControlClient, ControlServer) {
    let capacity = capacity.max(1);
    let (cmd_tx, cmd_rx) = crossbeam_channel::bounded(capacity);
    let (ev_tx, ev_rx) = crossbeam_channel::bounded(capacity);
    let client = ControlClient {
        tx: cmd_tx,
        rx: ev_rx,
        shared: Arc::new(Shared {
            next_id: AtomicU64::new(1),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }),
    };
    let server = ControlServer {
        rx: cmd_rx,
        tx: ev_tx,
    };
    (client, server)
}

/// An `Ok` answer to `request_id`.
pub fn ok_event(request_id: u64) -> Event {
    Event {
        request_id,
        body: Some(event::Body::Ok(prism_proto::control::Ok {})),
    }
}

/// An `Error` answer to `request_id`.
pub fn error_event(request_id: u64, msg: impl Into<String>) -> Event {
    Event {
        request_id,
        body: Some(event::Body::Error(prism_proto::control::Error {
            message: msg.into(),
        })),
    }
}

/// Sends commands to the forwarder and receives its events. Cloneable; clones share the
/// request-id counter and the queue of undelivered events.
#[derive(Clone)]
pub struct ControlClient {
    tx: Sender<Command>,
    rx: Receiver<Event>,
    shared: Arc<Shared>,
}

struct Shared {
    next_id: AtomicU64,
    state: Mutex<State>,
    /// Signalled whenever `state` changes: an answer was stashed, an event queued, or the
    /// reader role was released.
    changed: Condvar,
}

/// Only one thread at a time reads the event channel (the "reader"); it sorts what it gets
/// into `answers` (for pending requests) or `queue` (everything else) and wakes the others.
/// This keeps answers from being stolen by a clone waiting for something else.
#[derive(Default)]
struct State {
    reading: bool,
    pending: HashSet<u64>,
    answers: HashMap<u64, Event>,
    queue: VecDeque<Event>,
    dropped: u64,
}

impl State {
    fn sort(&mut self, ev: Event) {
        if ev.request_id != 0 && self.pending.contains(&ev.request_id) {
            self.answers.insert(ev.request_id, ev);
            return;
        }
        if self.queue.len() >= EVENT_QUEUE_LIMIT {
            self.queue.pop_front();
            self.dropped += 1;
            tracing::warn!(
                dropped = self.dropped,
                "control event queue full, dropping oldest"
            );
        }
        self.queue.push_back(ev);
    }
}

impl fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlClient")
            .field("next_id", &self.shared.next_id.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What the waiting loop is after.
enum Want {
    Answer(u64),
    AnyEvent,
}

impl ControlClient {
    /// A fresh request id, unique across clones of this client, never 0.
    pub fn next_request_id(&self) -> u64 {
        self.shared.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends a command as is, blocking while the command queue is full. The caller chooses
    /// the request id (use [`Self::next_request_id`]); the answer arrives among the events.
    pub fn send(&self, cmd: Command) -> Result<(), ControlError> {
        self.tx.send(cmd).map_err(|_| ControlError::Disconnected)
    }

    /// Sends `body` under a fresh request id and waits up to `timeout` (queueing included)
    /// for the event that answers it. Other events that arrive meanwhile stay available
    /// through [`Self::try_event`] / [`Self::next_event`].
    pub fn request(&self, body: command::Body, timeout: Duration) -> Result<Event, ControlError> {
        let deadline = Instant::now() + timeout;
        let id = self.next_request_id();
        self.lock().pending.insert(id);
        let cmd = Command {
            request_id: id,
            body: Some(body),
        };
        let sent = match self.tx.send_deadline(cmd, deadline) {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(_)) => Err(ControlError::Timeout),
            Err(SendTimeoutError::Disconnected(_)) => Err(ControlError::Disconnected),
        };
        let result = sent.and_then(|()| self.wait(Want::Answer(id), deadline));
        let mut state = self.lock();
        state.pending.remove(&id);
        // An answer stashed just before we gave up is stale now; drop it.
        state.answers.remove(&id);
        result
    }

    /// A queued or already arrived event that is not the answer to a pending request.
    pub fn try_event(&self) -> Option<Event> {
        let mut state = self.lock();
        if let Some(ev) = state.queue.pop_front() {
            return Some(ev);
        }
        if state.reading {
            // Another thread reads the channel and will queue what it gets.
            return None;
        }
        let mut woke = false;
        while let Ok(ev) = self.rx.try_recv() {
            woke |= ev.request_id != 0 && state.pending.contains(&ev.request_id);
            state.sort(ev);
            if !state.queue.is_empty() {
                break;
            }
        }
        if woke {
            self.shared.changed.notify_all();
        }
        state.queue.pop_front()
    }

    /// Drains every event available now (see [`Self::try_event`]).
    pub fn events(&self) -> Vec<Event> {
        std::iter::from_fn(|| self.try_event()).collect()
    }

    /// Waits up to `timeout` for the next event that is not the answer to a pending request.
    pub fn next_event(&self, timeout: Duration) -> Result<Event, ControlError> {
        self.wait(Want::AnyEvent, Instant::now() + timeout)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic elsewhere (every update is one
        // insert/remove), so a poisoned lock is still usable.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait(&self, want: Want, deadline: Instant) -> Result<Event, ControlError> {
        let mut state = self.lock();
        loop {
            let found = match want {
                Want::Answer(id) => state.answers.remove(&id),
                Want::AnyEvent => state.queue.pop_front(),
            };
            if let Some(ev) = found {
                return Ok(ev);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ControlError::Timeout);
            }
            if state.reading {
                state = self
                    .shared
                    .changed
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                continue;
            }
            state.reading = true;
            drop(state);
            let got = self.rx.recv_deadline(deadline);
            state = self.lock();
            state.reading = false;
            match got {
                Ok(ev) => state.sort(ev),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.shared.changed.notify_all();
                    let found = match want {
                        Want::Answer(id) => state.answers.remove(&id),
                        Want::AnyEvent => state.queue.pop_front(),
                    };
                    return found.ok_or(ControlError::Disconnected);
                }
            }
            // Whatever happened, someone else may now find their event or take over reading.
            self.shared.changed.notify_all();
        }
    }
}

/// The forwarder side: receives commands, sends events.
#[derive(Debug)]
pub struct ControlServer {
    rx: Receiver<Command>,
    tx: Sender<Event>,
}

impl ControlServer {
    /// Waits up to `timeout` for a command; `Ok(None)` on timeout.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Command>, ControlError> {
        match self.rx.recv_timeout(timeout) {
            Ok(cmd) => Ok(Some(cmd)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(ControlError::Disconnected),
        }
    }

    /// A command if one is queued; `Ok(None)` if none is.
    pub fn try_recv(&self) -> Result<Option<Command>, ControlError> {
        match self.rx.try_recv() {
            Ok(cmd) => Ok(Some(cmd)),
            Err(crossbeam_channel::TryRecvError::Empty) => Ok(None),
            Err(crossbeam_channel::TryRecvError::Disconnected) => Err(ControlError::Disconnected),
        }
    }

    /// Sends an event without blocking. [`ControlError::Full`] when the client is not keeping
    /// up (the event is lost), [`ControlError::Disconnected`] when every client is gone.
    pub fn send_event(&self, ev: Event) -> Result<(), ControlError> {
        match self.tx.try_send(ev) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(ControlError::Full),
            Err(TrySendError::Disconnected(_)) => Err(ControlError::Disconnected),
        }
    }

    /// The command receiver, e.g. to `select!` on it beside other channels.
    pub fn commands(&self) -> &Receiver<Command> {
        &self.rx
    }

    /// A sender for events, one per core thread. Cores must use `try_send` on it.
    pub fn events_sender(&self) -> Sender<Event> {
        self.tx.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_proto::control::{CreateRoom, KeyframeNeeded, RoomCreated};
    use std::thread;

    const T: Duration = Duration::from_secs(5);

    fn create_room(room_id: u64) -> command::Body {
        command::Body::CreateRoom(CreateRoom {
            room_id,
            pin_core: false,
            core: 0,
        })
    }

    fn keyframe_needed(track_id: u64) -> Event {
        Event {
            request_id: 0,
            body: Some(event::Body::KeyframeNeeded(KeyframeNeeded {
                track_id,
                spatial: 0,
                ssrc: 1,
            })),
        }
    }

    /// Answers CreateRoom with RoomCreated; before each answer emits an unsolicited event.
    fn spawn_fake(server: ControlServer) -> thread::JoinHandle<usize> {
        thread::spawn(move || {
            let mut n = 0;
            while let Ok(Some(cmd)) = server.recv_timeout(T) {
                n += 1;
                server.send_event(keyframe_needed(n as u64)).unwrap();
                let ev = match cmd.body {
                    Some(command::Body::CreateRoom(c)) => Event {
                        request_id: cmd.request_id,
                        body: Some(event::Body::RoomCreated(RoomCreated {
                            room_id: c.room_id,
                            core: 0,
                            ..Default::default()
                        })),
                    },
                    _ => error_event(cmd.request_id, "unsupported"),
                };
                server.send_event(ev).unwrap();
            }
            n
        })
    }

    #[test]
    fn request_gets_its_answer_and_keeps_unsolicited_events() {
        let (client, server) = channel(16);
        let fake = spawn_fake(server);
        for room in 1..=3 {
            let ev = client.request(create_room(room), T).unwrap();
            assert!(ev.request_id != 0);
            assert!(matches!(
                ev.body,
                Some(event::Body::RoomCreated(RoomCreated { room_id, .. })) if room_id == room
            ));
        }
        let kf: Vec<u64> = client
            .events()
            .into_iter()
            .map(|e| match e.body {
                Some(event::Body::KeyframeNeeded(k)) => k.track_id,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(kf, [1, 2, 3]);
        assert!(client.try_event().is_none());
        drop(client);
        assert_eq!(fake.join().unwrap(), 3);
    }

    #[test]
    fn concurrent_clones_each_get_their_own_answer() {
        // At most 8 commands are outstanding, so 16 events always fit.
        let (client, server) = channel(16);
        let fake = spawn_fake(server);
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let client = client.clone();
                thread::spawn(move || {
                    for i in 0..50 {
                        let room = t * 1000 + i;
                        let ev = client.request(create_room(room), T).unwrap();
                        match ev.body {
                            Some(event::Body::RoomCreated(r)) => assert_eq!(r.room_id, room),
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // With 8 threads × 50 requests and a queue limit above 400, nothing was dropped.
        assert_eq!(client.events().len(), 400);
        drop(client);
        assert_eq!(fake.join().unwrap(), 400);
    }

    #[test]
    fn request_times_out_without_answer() {
        let (client, server) = channel(4);
        let err = client
            .request(create_room(1), Duration::from_millis(50))
            .unwrap_err();
        assert!(matches!(err, ControlError::Timeout));
        // A late answer to an abandoned request becomes an ordinary event.
        let cmd = server.try_recv().unwrap().unwrap();
        server.send_event(ok_event(cmd.request_id)).unwrap();
        assert_eq!(client.try_event().unwrap().request_id, cmd.request_id);
    }

    #[test]
    fn disconnects_are_reported() {
        let (client, server) = channel(4);
        drop(server);
        assert!(matches!(
            client.request(create_room(1), T),
            Err(ControlError::Disconnected)
        ));
        assert!(matches!(
            client.next_event(T),
            Err(ControlError::Disconnected)
        ));

        let (client, server) = channel(4);
        drop(client);
        assert!(matches!(server.try_recv(), Err(ControlError::Disconnected)));
        assert!(matches!(
            server.send_event(ok_event(1)),
            Err(ControlError::Disconnected)
        ));
    }

    #[test]
    fn full_event_queue_does_not_block_the_core() {
        let (_client, server) = channel(2);
        server.send_event(ok_event(1)).unwrap();
        server.send_event(ok_event(2)).unwrap();
        assert!(matches!(
            server.send_event(ok_event(3)),
            Err(ControlError::Full)
        ));
    }

    #[test]
    fn request_ids_are_unique_and_nonzero() {
        let (client, _server) = channel(1);
        let other = client.clone();
        let a = client.next_request_id();
        let b = other.next_request_id();
        assert!(a != 0 && b != 0 && a != b);
    }
}
