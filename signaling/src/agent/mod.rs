//! Agents: LiveKit's agent workers (`livekit-agents` in Python or Node) register with
//! Prism on `/agent` and are given jobs: run an agent, a participant of kind `AGENT`, in a
//! room. This is what LiveKit's `pkg/agent` and `agentservice.go` do on a single node.
//!
//! - [`worker`]: the `/agent` WebSocket session of one worker (registration, pings, frames
//!   in and out);
//! - [`dispatcher`]: which worker runs which job, a sans-IO state machine tested in virtual
//!   time; [`token`]: the token an assigned job's agent joins with;
//! - [`service`]: the task that drives the dispatcher, and [`AgentService`], the handle the
//!   rest of the server uses: rooms report their lifecycle through
//!   [`crate::rtc::observer::RoomObserver`], and the AgentDispatchService API
//!   (`crate::twirp::agent_dispatch`) creates, lists and deletes dispatches.
//!
//! Why a separate task rather than state inside each room: a worker serves many rooms, and
//! choosing a worker needs every worker's load at once; one task owning workers and jobs
//! keeps that consistent without locks, and rooms only queue news for it.

pub mod dispatcher;
pub mod ids;
pub mod service;
pub mod token;
pub mod worker;

pub use dispatcher::DispatchError;
pub use ids::{DispatchId, JobId, WorkerId};
pub use service::AgentService;
