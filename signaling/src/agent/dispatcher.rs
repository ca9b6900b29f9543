//! The dispatcher: which worker runs which job. A sans-IO state machine: it owns no socket,
//! task or clock. The driver (`service`) feeds it what happens (workers registering and
//! answering, rooms starting and closing, API requests) with the time, drains the messages
//! it wants sent to workers with [`Dispatcher::poll_output`], and calls
//! [`Dispatcher::handle_timeout`] at [`Dispatcher::poll_timeout`]. Tests drive it in
//! virtual time.
//!
//! How a job moves, as LiveKit's server does it:
//! 1. a *dispatch* (an agent name for a room) produces a job when its trigger happens: the
//!    room starts or the dispatch is created (`JT_ROOM`), a participant joins
//!    (`JT_PARTICIPANT`), a participant publishes (`JT_PUBLISHER`);
//! 2. the job is *offered* (`AvailabilityRequest`) to one worker of that agent name and job
//!    type whose status is available, the least loaded first;
//! 3. a worker that declines, or does not answer within [`OFFER_TIMEOUT`], is skipped and
//!    the next is asked; with none left the job *waits* for a new worker;
//! 4. a worker that accepts is sent the *assignment* with a token minted for the job
//!    (kind `AGENT`, the identity it chose, the permissions it registered with);
//! 5. the job ends when the worker says so (`UpdateJobStatus`), when its agent leaves the
//!    room of its own accord, when its dispatch is deleted or its room closes (the worker is
//!    sent `JobTermination`); a worker that goes away has its jobs offered to the others,
//!    marked `resuming`.
//!
//! Invariants: a job is offered to one worker at a time; a job is in its worker's `jobs`
//! exactly while assigned to it; a room's jobs all end when it closes.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use prism_proto::livekit as lk;

use super::ids::{DispatchId, JobId, WorkerId};
use super::token::agent_token;
pub use super::token::AGENT_NAME_ATTRIBUTE;
use crate::rtc::RoomName;

/// How long a worker has to answer an availability request (LiveKit's `AssignJobTimeout`).
pub const OFFER_TIMEOUT: Duration = Duration::from_secs(10);

/// The time, passed in: monotonic for deadlines, wall clock (unix ms) for what workers and
/// tokens are told.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub at: Instant,
    pub unix_ms: i64,
}

/// Why an API request on dispatches was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DispatchError {
    RoomNotFound,
    DispatchNotFound,
}

impl std::fmt::Display for DispatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DispatchError::RoomNotFound => "requested room does not exist",
            DispatchError::DispatchNotFound => "dispatch not found",
        })
    }
}

impl std::error::Error for DispatchError {}

/// What a worker registered as, and the key its token was signed with (agent tokens for
/// its jobs are signed with the same key, as LiveKit does).
#[derive(Clone, Debug)]
pub struct Registration {
    pub agent_name: String,
    pub job_type: lk::JobType,
    pub version: String,
    pub permissions: lk::ParticipantPermission,
    pub api_key: String,
    pub api_secret: String,
}

/// A message for a worker.
#[derive(Debug)]
pub struct Output {
    pub worker: WorkerId,
    pub message: lk::ServerMessage,
}

#[derive(Debug)]
struct Worker {
    reg: Registration,
    status: lk::WorkerStatus,
    load: f32,
    jobs: BTreeSet<JobId>,
    offers: usize,
    /// Registration order, the last tie-break.
    order: u64,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// No worker can take it now; offered when one can.
    Waiting,
    Offered {
        worker: WorkerId,
        deadline: Instant,
    },
    Assigned {
        worker: WorkerId,
    },
    Ended,
}

#[derive(Debug)]
struct Job {
    job: lk::Job,
    room: RoomName,
    phase: Phase,
    /// Workers that declined or did not answer, skipped for this job.
    tried: Vec<WorkerId>,
    resuming: bool,
}

#[derive(Debug)]
struct Dispatch {
    info: lk::AgentDispatch,
    jobs: Vec<JobId>,
}

#[derive(Debug)]
struct RoomEntry {
    info: lk::Room,
    dispatches: Vec<Dispatch>,
}

/// Workers, rooms with their dispatches, and jobs.
#[derive(Debug, Default)]
pub struct Dispatcher {
    workers: BTreeMap<WorkerId, Worker>,
    rooms: HashMap<RoomName, RoomEntry>,
    jobs: HashMap<JobId, Job>,
    out: VecDeque<Output>,
    next_order: u64,
}

impl Dispatcher {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next message to send to a worker.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Self::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.jobs
            .values()
            .filter_map(|j| match &j.phase {
                Phase::Offered { deadline, .. } => Some(*deadline),
                _ => None,
            })
            .min()
    }

    /// Offers nobody answered in time count as declined.
    pub fn handle_timeout(&mut self, now: Now) {
        let late: Vec<(JobId, WorkerId)> = self
            .jobs
            .iter()
            .filter_map(|(id, j)| match &j.phase {
                Phase::Offered { worker, deadline } if *deadline <= now.at => {
                    Some((id.clone(), worker.clone()))
                }
                _ => None,
            })
            .collect();
        for (job, worker) in late {
            tracing::info!(%job, %worker, "worker did not answer the job offer in time");
            self.declined(now, &job, &worker);
        }
    }

    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    // ---- Workers -------------------------------------------------------------------

    /// A worker registered (its session already answered the registration). Jobs waiting
    /// for a worker like it are offered.
    pub fn worker_registered(&mut self, now: Now, id: WorkerId, reg: Registration) {
        tracing::info!(worker = %id, agent_name = %reg.agent_name, job_type = ?reg.job_type, version = %reg.version, "agent worker registered");
        let order = self.next_order;
        self.next_order += 1;
        let job_type = reg.job_type;
        let name = reg.agent_name.clone();
        self.workers.insert(
            id,
            Worker {
                reg,
                status: lk::WorkerStatus::WsAvailable,
                load: 0.0,
                jobs: BTreeSet::new(),
                offers: 0,
                order,
            },
        );
        // Room dispatches of this name that have no job yet get one now.
        if job_type == lk::JobType::JtRoom {
            let missing: Vec<(RoomName, DispatchId)> = self
                .rooms
                .iter()
                .flat_map(|(room, r)| {
                    r.dispatches
                        .iter()
                        .filter(|d| d.info.agent_name == name && d.jobs.is_empty())
                        .map(move |d| (room.clone(), DispatchId::new(d.info.id.clone())))
                })
                .collect();
            for (room, dispatch) in missing {
                self.start_job(now, &room, &dispatch, lk::JobType::JtRoom, None);
            }
        }
        self.offer_waiting(now);
    }

    /// A worker's status and load (`UpdateWorkerStatus`).
    pub fn worker_status(&mut self, now: Now, id: &WorkerId, u: &lk::UpdateWorkerStatus) {
        let Some(w) = self.workers.get_mut(id) else {
            return;
        };
        let was = w.status;
        if let Some(s) = u.status.and_then(|s| lk::WorkerStatus::try_from(s).ok()) {
            w.status = s;
        }
        if u.load.is_finite() {
            w.load = u.load.clamp(0.0, f32::MAX);
        }
        if was != w.status {
            tracing::info!(worker = %id, status = ?w.status, load = w.load, "agent worker status");
        }
        if w.status == lk::WorkerStatus::WsAvailable && was != w.status {
            self.offer_waiting(now);
        }
    }

    /// A worker went away (its socket closed, or it was closed for a protocol error): the
    /// job it was asked about goes to the next worker, and its running jobs are offered to
    /// the others.
    pub fn worker_gone(&mut self, now: Now, id: &WorkerId) {
        let Some(w) = self.workers.remove(id) else {
            return;
        };
        tracing::info!(worker = %id, jobs = w.jobs.len(), "agent worker gone");
        let offered: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| matches!(&j.phase, Phase::Offered { worker, .. } if worker == id))
            .map(|(k, _)| k.clone())
            .collect();
        for job in offered {
            self.declined(now, &job, id);
        }
        for job in w.jobs {
            let Some(j) = self.jobs.get_mut(&job) else {
                continue;
            };
            tracing::info!(%job, worker = %id, "job lost its worker; offering it to another");
            j.phase = Phase::Waiting;
            j.tried.clear();
            j.resuming = true;
            if let Some(s) = j.job.state.as_mut() {
                s.status = lk::JobStatus::JsPending as i32;
                s.worker_id.clear();
                s.updated_at = now.unix_ms * 1_000_000;
            }
            self.offer(now, &job);
        }
    }

    /// A message from a registered worker (pings are answered by its session).
    pub fn worker_message(&mut self, now: Now, id: &WorkerId, msg: lk::WorkerMessage) {
        use lk::worker_message::Message as M;
        match msg.message {
            Some(M::Availability(a)) => self.availability(now, id, a),
            Some(M::UpdateWorker(u)) => self.worker_status(now, id, &u),
            Some(M::UpdateJob(u)) => self.job_status(now, id, &u),
            Some(M::MigrateJob(m)) => self.migrate(now, id, &m),
            // A second registration, a simulated job (LiveKit Cloud's playground) or a
            // ping: nothing for the dispatcher.
            Some(M::Register(_) | M::SimulateJob(_) | M::Ping(_)) | None => {}
        }
    }

    fn availability(&mut self, now: Now, id: &WorkerId, a: lk::AvailabilityResponse) {
        let job_id = JobId::new(a.job_id.clone());
        let Some(j) = self.jobs.get(&job_id) else {
            return;
        };
        if !matches!(&j.phase, Phase::Offered { worker, .. } if worker == id) {
            // An answer after the timeout, or to an offer made to someone else.
            return;
        }
        if let Some(w) = self.workers.get_mut(id) {
            w.offers = w.offers.saturating_sub(1);
        }
        if a.terminate {
            self.end(now, &job_id, lk::JobStatus::JsSuccess, "", false);
            return;
        }
        if !a.available {
            tracing::info!(job = %job_id, worker = %id, "worker declined the job");
            let Some(j) = self.jobs.get_mut(&job_id) else {
                return;
            };
            j.tried.push(id.clone());
            j.phase = Phase::Waiting;
            self.offer(now, &job_id);
            return;
        }
        self.assign(now, &job_id, id, &a);
    }

    fn assign(&mut self, now: Now, job_id: &JobId, id: &WorkerId, a: &lk::AvailabilityResponse) {
        let (Some(j), Some(w)) = (self.jobs.get_mut(job_id), self.workers.get_mut(id)) else {
            return;
        };
        let identity = if a.participant_identity.is_empty() {
            format!("agent-{job_id}")
        } else {
            a.participant_identity.clone()
        };
        let mut attributes = a.participant_attributes.clone();
        attributes.insert(AGENT_NAME_ATTRIBUTE.into(), w.reg.agent_name.clone());
        let room = j.room.clone();
        let token = agent_token(
            &w.reg,
            &room,
            &identity,
            &a.participant_name,
            &a.participant_metadata,
            attributes,
            now,
        );
        let ns = now.unix_ms * 1_000_000;
        let state = j.job.state.get_or_insert_with(Default::default);
        state.status = lk::JobStatus::JsRunning as i32;
        state.participant_identity = identity.clone();
        state.worker_id = id.to_string();
        state.started_at = ns;
        state.updated_at = ns;
        state.error.clear();
        j.phase = Phase::Assigned { worker: id.clone() };
        w.jobs.insert(job_id.clone());
        tracing::info!(job = %job_id, worker = %id, %room, %identity, "job assigned");
        let job = j.job.clone();
        self.send(
            id,
            lk::server_message::Message::Assignment(lk::JobAssignment {
                job: Some(job),
                url: None,
                token,
            }),
        );
    }

    fn job_status(&mut self, now: Now, id: &WorkerId, u: &lk::UpdateJobStatus) {
        let job_id = JobId::new(u.job_id.clone());
        let Some(j) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if !matches!(&j.phase, Phase::Assigned { worker } if worker == id) {
            return;
        }
        match lk::JobStatus::try_from(u.status) {
            Ok(s @ (lk::JobStatus::JsSuccess | lk::JobStatus::JsFailed)) => {
                self.end(now, &job_id, s, &u.error, false);
            }
            Ok(s) => {
                if let Some(st) = j.job.state.as_mut() {
                    st.status = s as i32;
                    st.error.clone_from(&u.error);
                    st.updated_at = now.unix_ms * 1_000_000;
                }
            }
            Err(_) => {}
        }
    }

    /// A worker that reconnected reports the jobs it still runs: those that lost their
    /// worker and are not running elsewhere are its again.
    fn migrate(&mut self, now: Now, id: &WorkerId, m: &lk::MigrateJobRequest) {
        for job_id in &m.job_ids {
            let job_id = JobId::new(job_id.clone());
            let Some(j) = self.jobs.get_mut(&job_id) else {
                continue;
            };
            if !matches!(j.phase, Phase::Waiting) {
                continue;
            }
            let Some(w) = self.workers.get_mut(id) else {
                return;
            };
            j.phase = Phase::Assigned { worker: id.clone() };
            j.resuming = false;
            if let Some(s) = j.job.state.as_mut() {
                s.status = lk::JobStatus::JsRunning as i32;
                s.worker_id = id.to_string();
                s.updated_at = now.unix_ms * 1_000_000;
            }
            w.jobs.insert(job_id);
        }
    }

    // ---- Rooms ---------------------------------------------------------------------

    /// A room started: its dispatches are recorded (one automatic dispatch, with an empty
    /// agent name, when it was given none) and each gets a room job.
    pub fn room_started(&mut self, now: Now, room: &lk::Room, agents: &[lk::RoomAgentDispatch]) {
        let name = RoomName::new(room.name.clone());
        self.rooms.insert(
            name.clone(),
            RoomEntry {
                info: room.clone(),
                dispatches: Vec::new(),
            },
        );
        if agents.is_empty() {
            self.add_dispatch(now, &name, String::new(), String::new(), HashMap::new());
        } else {
            self.agents_requested(now, &name, agents);
        }
    }

    /// Dispatches for the agents a joining participant's token asks for, unless the room
    /// has one of that name already.
    pub fn agents_requested(
        &mut self,
        now: Now,
        room: &RoomName,
        agents: &[lk::RoomAgentDispatch],
    ) {
        for a in agents {
            let present = self.rooms.get(room).is_some_and(|r| {
                r.dispatches
                    .iter()
                    .any(|d| d.info.agent_name == a.agent_name)
            });
            if !present {
                self.add_dispatch(
                    now,
                    room,
                    a.agent_name.clone(),
                    a.metadata.clone(),
                    a.attributes.clone(),
                );
            }
        }
    }

    fn add_dispatch(
        &mut self,
        now: Now,
        room: &RoomName,
        agent_name: String,
        metadata: String,
        attributes: HashMap<String, String>,
    ) -> Option<lk::AgentDispatch> {
        let r = self.rooms.get_mut(room)?;
        let id = DispatchId::fresh();
        let info = lk::AgentDispatch {
            id: id.to_string(),
            agent_name,
            room: room.to_string(),
            metadata,
            attributes,
            state: Some(lk::AgentDispatchState {
                jobs: Vec::new(),
                created_at: now.unix_ms * 1_000_000,
                deleted_at: 0,
            }),
            ..Default::default()
        };
        r.dispatches.push(Dispatch {
            info: info.clone(),
            jobs: Vec::new(),
        });
        self.start_job(now, room, &id, lk::JobType::JtRoom, None);
        Some(info)
    }

    /// A participant joined (participant jobs) or published its first track (publisher
    /// jobs): each dispatch of the room with a worker of that type gets a job for it.
    /// Agents get no agents of their own.
    pub fn participant_event(
        &mut self,
        now: Now,
        room: &lk::Room,
        p: &lk::ParticipantInfo,
        job_type: lk::JobType,
    ) {
        if p.kind == lk::participant_info::Kind::Agent as i32 {
            return;
        }
        let name = RoomName::new(room.name.clone());
        let Some(r) = self.rooms.get_mut(&name) else {
            return;
        };
        r.info = room.clone();
        let wanted: Vec<DispatchId> = r
            .dispatches
            .iter()
            .filter(|d| {
                self.workers
                    .values()
                    .any(|w| w.reg.agent_name == d.info.agent_name && w.reg.job_type == job_type)
            })
            .map(|d| DispatchId::new(d.info.id.clone()))
            .collect();
        for d in wanted {
            self.start_job(now, &name, &d, job_type, Some(p.clone()));
        }
    }

    /// A participant left. An agent that left of its own accord ends its job; one whose
    /// connection was lost keeps it (its worker may be gone too, and the job is then
    /// offered again).
    pub fn participant_left(&mut self, now: Now, room: &RoomName, p: &lk::ParticipantInfo) {
        if p.kind != lk::participant_info::Kind::Agent as i32 {
            return;
        }
        let voluntary = p.disconnect_reason == lk::DisconnectReason::ClientInitiated as i32;
        if !voluntary {
            return;
        }
        let ended: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| {
                &j.room == room
                    && matches!(j.phase, Phase::Assigned { .. })
                    && j.job
                        .state
                        .as_ref()
                        .is_some_and(|s| s.participant_identity == p.identity)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for job in ended {
            self.end(
                now,
                &job,
                lk::JobStatus::JsSuccess,
                "agent left the room",
                false,
            );
        }
    }

    /// A room closed: its jobs end (their workers are told) and its dispatches go.
    pub fn room_closed(&mut self, now: Now, room: &RoomName) {
        let Some(r) = self.rooms.remove(room) else {
            return;
        };
        for d in r.dispatches {
            for job in d.jobs {
                self.end(now, &job, lk::JobStatus::JsSuccess, "", true);
                self.jobs.remove(&job);
            }
        }
    }

    // ---- AgentDispatchService ------------------------------------------------------

    pub fn create_dispatch(
        &mut self,
        now: Now,
        req: &lk::CreateAgentDispatchRequest,
    ) -> Result<lk::AgentDispatch, DispatchError> {
        let room = RoomName::new(req.room.clone());
        let mut info = self
            .add_dispatch(
                now,
                &room,
                req.agent_name.clone(),
                req.metadata.clone(),
                req.attributes.clone(),
            )
            .ok_or(DispatchError::RoomNotFound)?;
        info.restart_policy = req.restart_policy;
        info.deployment.clone_from(&req.deployment);
        tracing::info!(%room, agent_name = %req.agent_name, dispatch = %info.id, "dispatch created");
        Ok(self.dispatch_info(&room, &info.id).unwrap_or(info))
    }

    /// Deletes a dispatch: its jobs end and their workers are told to stop them.
    pub fn delete_dispatch(
        &mut self,
        now: Now,
        room: &RoomName,
        id: &str,
    ) -> Result<lk::AgentDispatch, DispatchError> {
        let r = self
            .rooms
            .get_mut(room)
            .ok_or(DispatchError::RoomNotFound)?;
        let pos = r
            .dispatches
            .iter()
            .position(|d| d.info.id == id)
            .ok_or(DispatchError::DispatchNotFound)?;
        let d = r.dispatches.remove(pos);
        let mut info = d.info;
        for job in &d.jobs {
            self.end(now, job, lk::JobStatus::JsSuccess, "", true);
        }
        let jobs = d
            .jobs
            .iter()
            .filter_map(|j| self.jobs.remove(j).map(|j| j.job))
            .collect();
        if let Some(s) = info.state.as_mut() {
            s.jobs = jobs;
            s.deleted_at = now.unix_ms * 1_000_000;
        }
        tracing::info!(%room, dispatch = %id, "dispatch deleted");
        Ok(info)
    }

    /// The room's dispatches (or the one named `id`), with their jobs.
    pub fn list_dispatch(
        &self,
        room: &RoomName,
        id: &str,
    ) -> Result<Vec<lk::AgentDispatch>, DispatchError> {
        let r = self.rooms.get(room).ok_or(DispatchError::RoomNotFound)?;
        Ok(r.dispatches
            .iter()
            .filter(|d| id.is_empty() || d.info.id == id)
            .filter_map(|d| self.dispatch_info(room, &d.info.id))
            .collect())
    }

    fn dispatch_info(&self, room: &RoomName, id: &str) -> Option<lk::AgentDispatch> {
        let d = self
            .rooms
            .get(room)?
            .dispatches
            .iter()
            .find(|d| d.info.id == id)?;
        let mut info = d.info.clone();
        if let Some(s) = info.state.as_mut() {
            s.jobs = d
                .jobs
                .iter()
                .filter_map(|j| self.jobs.get(j).map(|j| j.job.clone()))
                .collect();
        }
        Some(info)
    }

    // ---- Jobs ----------------------------------------------------------------------

    fn start_job(
        &mut self,
        now: Now,
        room: &RoomName,
        dispatch: &DispatchId,
        job_type: lk::JobType,
        participant: Option<lk::ParticipantInfo>,
    ) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let Some(d) = r
            .dispatches
            .iter_mut()
            .find(|d| d.info.id == dispatch.as_str())
        else {
            return;
        };
        let id = JobId::fresh();
        let ns = now.unix_ms * 1_000_000;
        let job = lk::Job {
            id: id.to_string(),
            dispatch_id: dispatch.to_string(),
            r#type: job_type as i32,
            room: Some(r.info.clone()),
            participant,
            metadata: d.info.metadata.clone(),
            agent_name: d.info.agent_name.clone(),
            state: Some(lk::JobState {
                status: lk::JobStatus::JsPending as i32,
                updated_at: ns,
                ..Default::default()
            }),
            attributes: d.info.attributes.clone(),
            ..Default::default()
        };
        d.jobs.push(id.clone());
        self.jobs.insert(
            id.clone(),
            Job {
                job,
                room: room.clone(),
                phase: Phase::Waiting,
                tried: Vec::new(),
                resuming: false,
            },
        );
        self.offer(now, &id);
    }

    /// Offers a waiting job to the best worker that can take it, if any.
    fn offer(&mut self, now: Now, job_id: &JobId) {
        let Some(j) = self.jobs.get(job_id) else {
            return;
        };
        if j.phase != Phase::Waiting {
            return;
        }
        let job_type = lk::JobType::try_from(j.job.r#type).unwrap_or(lk::JobType::JtRoom);
        let best = self
            .workers
            .iter()
            .filter(|(id, w)| {
                w.reg.agent_name == j.job.agent_name
                    && w.reg.job_type == job_type
                    && w.status == lk::WorkerStatus::WsAvailable
                    && !j.tried.contains(id)
            })
            .min_by(|(_, a), (_, b)| {
                a.load
                    .total_cmp(&b.load)
                    .then((a.jobs.len() + a.offers).cmp(&(b.jobs.len() + b.offers)))
                    .then(a.order.cmp(&b.order))
            })
            .map(|(id, _)| id.clone());
        let Some(worker) = best else {
            return;
        };
        let resuming = j.resuming;
        let job = j.job.clone();
        if let Some(j) = self.jobs.get_mut(job_id) {
            j.phase = Phase::Offered {
                worker: worker.clone(),
                deadline: now.at + OFFER_TIMEOUT,
            };
        }
        if let Some(w) = self.workers.get_mut(&worker) {
            w.offers += 1;
        }
        tracing::debug!(job = %job_id, %worker, resuming, "job offered");
        self.send(
            &worker,
            lk::server_message::Message::Availability(lk::AvailabilityRequest {
                job: Some(job),
                resuming,
            }),
        );
    }

    /// Every waiting job is offered again (a worker appeared or became available).
    fn offer_waiting(&mut self, now: Now) {
        let mut waiting: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.phase == Phase::Waiting)
            .map(|(k, _)| k.clone())
            .collect();
        waiting.sort();
        for job in waiting {
            self.offer(now, &job);
        }
    }

    /// The worker offered `job` declined it, did not answer or went away: next worker.
    fn declined(&mut self, now: Now, job: &JobId, worker: &WorkerId) {
        if let Some(w) = self.workers.get_mut(worker) {
            w.offers = w.offers.saturating_sub(1);
        }
        let Some(j) = self.jobs.get_mut(job) else {
            return;
        };
        j.tried.push(worker.clone());
        j.phase = Phase::Waiting;
        self.offer(now, job);
    }

    /// Ends a job; `terminate` tells its worker to stop it.
    fn end(
        &mut self,
        now: Now,
        job_id: &JobId,
        status: lk::JobStatus,
        error: &str,
        terminate: bool,
    ) {
        let Some(j) = self.jobs.get_mut(job_id) else {
            return;
        };
        let phase = std::mem::replace(&mut j.phase, Phase::Ended);
        if let Some(s) = j.job.state.as_mut() {
            if phase != Phase::Ended {
                s.status = status as i32;
                s.error = error.to_owned();
                s.ended_at = now.unix_ms * 1_000_000;
                s.updated_at = s.ended_at;
            }
        }
        match phase {
            Phase::Assigned { worker } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.jobs.remove(job_id);
                }
                tracing::info!(job = %job_id, %worker, ?status, terminate, "job ended");
                if terminate {
                    self.send(
                        &worker,
                        lk::server_message::Message::Termination(lk::JobTermination {
                            job_id: job_id.to_string(),
                        }),
                    );
                }
            }
            Phase::Offered { worker, .. } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.offers = w.offers.saturating_sub(1);
                }
            }
            Phase::Waiting | Phase::Ended => {}
        }
    }

    fn send(&mut self, worker: &WorkerId, m: lk::server_message::Message) {
        self.out.push_back(Output {
            worker: worker.clone(),
            message: lk::ServerMessage { message: Some(m) },
        });
    }
}

#[cfg(test)]
#[path = "dispatcher_tests.rs"]
mod tests;
