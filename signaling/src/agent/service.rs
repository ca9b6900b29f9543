//! The agent service: one task (on its own thread) that drives the [`Dispatcher`] with real time and sockets.
//! Worker sessions, rooms (through [`RoomObserver`]) and the AgentDispatchService API all
//! reach it through [`AgentService`], a cheap handle that only queues; the task reads the
//! clock once per message, hands the message to the dispatcher, and delivers what the
//! dispatcher wants sent to the workers' queues.
//!
//! A worker whose queue is full is too slow to be given jobs: it is dropped (its session
//! sees its queue closed and closes the socket), and its jobs go to the others.

use std::collections::HashMap;

use prism_proto::livekit as lk;
use tokio::sync::{mpsc, oneshot};

use super::dispatcher::{DispatchError, Dispatcher, Now, Registration};
use super::ids::WorkerId;
use crate::rtc::observer::RoomObserver;
use crate::rtc::RoomName;

/// Messages queued for one worker before it counts as too slow.
pub const WORKER_QUEUE: usize = 256;

type Reply<T> = oneshot::Sender<Result<T, DispatchError>>;

enum Input {
    Registered(WorkerId, Box<Registration>, mpsc::Sender<lk::ServerMessage>),
    Message(WorkerId, lk::WorkerMessage),
    Gone(WorkerId),
    RoomStarted(lk::Room, Vec<lk::RoomAgentDispatch>),
    AgentsRequested(RoomName, Vec<lk::RoomAgentDispatch>),
    Participant(lk::Room, lk::ParticipantInfo, lk::JobType),
    Left(RoomName, lk::ParticipantInfo),
    RoomClosed(RoomName),
    Create(lk::CreateAgentDispatchRequest, Reply<lk::AgentDispatch>),
    Delete(RoomName, String, Reply<lk::AgentDispatch>),
    List(RoomName, String, Reply<Vec<lk::AgentDispatch>>),
    WorkerCount(oneshot::Sender<usize>),
}

/// The handle every part of the server uses to reach the agent service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AgentService {
    tx: mpsc::UnboundedSender<Input>,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Input")
    }
}

fn now() -> Now {
    Now {
        at: std::time::Instant::now(),
        unix_ms: crate::rtc::room::now_ms(),
    }
}

impl AgentService {
    /// Starts the service on a thread of its own (with a single-threaded runtime), so that
    /// it needs no runtime from its caller and dispatch never competes with a busy room.
    /// The thread ends when every handle is dropped.
    pub fn start() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        std::thread::Builder::new()
            .name("prism-agents".into())
            .spawn(move || rt.block_on(run(rx)))?;
        Ok(Self { tx })
    }

    fn put(&self, i: Input) {
        // Only fails once the runtime is shutting down.
        let _ = self.tx.send(i);
    }

    pub(crate) fn registered(
        &self,
        id: WorkerId,
        reg: Registration,
        queue: mpsc::Sender<lk::ServerMessage>,
    ) {
        self.put(Input::Registered(id, Box::new(reg), queue));
    }

    pub(crate) fn message(&self, id: &WorkerId, msg: lk::WorkerMessage) {
        self.put(Input::Message(id.clone(), msg));
    }

    pub(crate) fn gone(&self, id: &WorkerId) {
        self.put(Input::Gone(id.clone()));
    }

    async fn ask<T>(&self, f: impl FnOnce(Reply<T>) -> Input) -> Result<T, DispatchError> {
        let (tx, rx) = oneshot::channel();
        self.put(f(tx));
        rx.await.map_err(|_| DispatchError::RoomNotFound)?
    }

    /// AgentDispatchService CreateDispatch, on a room that is open.
    pub async fn create_dispatch(
        &self,
        req: lk::CreateAgentDispatchRequest,
    ) -> Result<lk::AgentDispatch, DispatchError> {
        self.ask(|r| Input::Create(req, r)).await
    }

    pub async fn delete_dispatch(
        &self,
        room: RoomName,
        id: String,
    ) -> Result<lk::AgentDispatch, DispatchError> {
        self.ask(|r| Input::Delete(room, id, r)).await
    }

    pub async fn list_dispatch(
        &self,
        room: RoomName,
        id: String,
    ) -> Result<Vec<lk::AgentDispatch>, DispatchError> {
        self.ask(|r| Input::List(room, id, r)).await
    }

    /// How many workers are registered (for `/metrics`).
    pub async fn worker_count(&self) -> usize {
        let (tx, rx) = oneshot::channel();
        self.put(Input::WorkerCount(tx));
        rx.await.unwrap_or(0)
    }
}

impl RoomObserver for AgentService {
    fn room_started(&self, room: &lk::Room, agents: &[lk::RoomAgentDispatch]) {
        self.put(Input::RoomStarted(room.clone(), agents.to_vec()));
    }

    fn agents_requested(&self, room: &RoomName, agents: &[lk::RoomAgentDispatch]) {
        self.put(Input::AgentsRequested(room.clone(), agents.to_vec()));
    }

    fn participant_joined(&self, room: &lk::Room, p: &lk::ParticipantInfo) {
        self.put(Input::Participant(
            room.clone(),
            p.clone(),
            lk::JobType::JtParticipant,
        ));
    }

    fn publisher_started(&self, room: &lk::Room, p: &lk::ParticipantInfo) {
        self.put(Input::Participant(
            room.clone(),
            p.clone(),
            lk::JobType::JtPublisher,
        ));
    }

    fn participant_left(&self, room: &RoomName, p: &lk::ParticipantInfo) {
        self.put(Input::Left(room.clone(), p.clone()));
    }

    fn room_closed(&self, room: &RoomName) {
        self.put(Input::RoomClosed(room.clone()));
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Input>) {
    let mut d = Dispatcher::new();
    let mut queues: HashMap<WorkerId, mpsc::Sender<lk::ServerMessage>> = HashMap::new();
    loop {
        let deadline = d.poll_timeout();
        let input = tokio::select! {
            i = rx.recv() => match i {
                Some(i) => Some(i),
                None => return,
            },
            () = sleep_until(deadline) => None,
        };
        let now = now();
        match input {
            None => d.handle_timeout(now),
            Some(i) => handle(&mut d, &mut queues, now, i),
        }
        while let Some(out) = d.poll_output() {
            let Some(q) = queues.get(&out.worker) else {
                continue;
            };
            if q.try_send(out.message).is_err() {
                tracing::warn!(worker = %out.worker, "agent worker too far behind; dropping it");
                queues.remove(&out.worker);
                d.worker_gone(now, &out.worker);
            }
        }
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

fn handle(
    d: &mut Dispatcher,
    queues: &mut HashMap<WorkerId, mpsc::Sender<lk::ServerMessage>>,
    now: Now,
    i: Input,
) {
    match i {
        Input::Registered(id, reg, q) => {
            queues.insert(id.clone(), q);
            d.worker_registered(now, id, *reg);
        }
        Input::Message(id, m) => d.worker_message(now, &id, m),
        Input::Gone(id) => {
            queues.remove(&id);
            d.worker_gone(now, &id);
        }
        Input::RoomStarted(room, agents) => d.room_started(now, &room, &agents),
        Input::AgentsRequested(room, agents) => d.agents_requested(now, &room, &agents),
        Input::Participant(room, p, t) => d.participant_event(now, &room, &p, t),
        Input::Left(room, p) => d.participant_left(now, &room, &p),
        Input::RoomClosed(room) => d.room_closed(now, &room),
        Input::Create(req, reply) => {
            let _ = reply.send(d.create_dispatch(now, &req));
        }
        Input::Delete(room, id, reply) => {
            let _ = reply.send(d.delete_dispatch(now, &room, &id));
        }
        Input::List(room, id, reply) => {
            let _ = reply.send(d.list_dispatch(&room, &id));
        }
        Input::WorkerCount(reply) => {
            let _ = reply.send(d.worker_count());
        }
    }
}
