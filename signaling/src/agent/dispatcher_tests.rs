//! The dispatcher in virtual time: which worker is offered a job, what happens when it
//! declines, stays silent, is full or goes away, and what dispatches and rooms do to jobs.

use std::time::{Duration, Instant};

use prism_proto::livekit as lk;

use super::*;
use crate::auth::KeyStore;

use lk::server_message::Message as S;
use lk::worker_message::Message as W;

struct Sim {
    d: Dispatcher,
    now: Now,
}

fn reg(name: &str, job_type: lk::JobType) -> Registration {
    Registration {
        agent_name: name.into(),
        job_type,
        version: "test".into(),
        permissions: lk::ParticipantPermission {
            can_subscribe: true,
            can_publish: true,
            can_publish_data: true,
            ..Default::default()
        },
        api_key: "devkey".into(),
        api_secret: "secret".into(),
    }
}

fn room(name: &str) -> lk::Room {
    lk::Room {
        sid: format!("RM_{name}"),
        name: name.into(),
        ..Default::default()
    }
}

impl Sim {
    fn new() -> Self {
        Self {
            d: Dispatcher::new(),
            now: Now {
                at: Instant::now(),
                unix_ms: 1_700_000_000_000,
            },
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now.at += by;
        self.now.unix_ms += i64::try_from(by.as_millis()).unwrap();
        self.d.handle_timeout(self.now);
    }

    fn worker(&mut self, id: &str, name: &str) -> WorkerId {
        let id = WorkerId::new(id);
        self.d
            .worker_registered(self.now, id.clone(), reg(name, lk::JobType::JtRoom));
        id
    }

    fn outputs(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.d.poll_output()).collect()
    }

    /// The single availability request sent, as (worker, job id).
    fn offered(&mut self) -> (WorkerId, String) {
        let out = self.outputs();
        let offers: Vec<_> = out
            .into_iter()
            .filter_map(|o| match o.message.message {
                Some(S::Availability(a)) => Some((o.worker, a.job.unwrap().id)),
                _ => None,
            })
            .collect();
        assert_eq!(offers.len(), 1, "{offers:?}");
        offers.into_iter().next().unwrap()
    }

    fn answer(&mut self, w: &WorkerId, job: &str, available: bool) {
        self.d.worker_message(
            self.now,
            w,
            lk::WorkerMessage {
                message: Some(W::Availability(lk::AvailabilityResponse {
                    job_id: job.into(),
                    available,
                    participant_identity: if available {
                        "echo-1".into()
                    } else {
                        String::new()
                    },
                    ..Default::default()
                })),
            },
        );
    }

    fn status(&mut self, w: &WorkerId, status: lk::WorkerStatus, load: f32) {
        self.d.worker_status(
            self.now,
            w,
            &lk::UpdateWorkerStatus {
                status: Some(status as i32),
                load,
                job_count: 0,
            },
        );
    }
}

#[test]
fn automatic_dispatch_goes_to_an_unnamed_worker_and_the_token_is_an_agents() {
    let mut s = Sim::new();
    let named = s.worker("AW_named", "echo");
    let auto = s.worker("AW_auto", "");
    s.d.room_started(s.now, &room("r1"), &[]);
    let (w, job) = s.offered();
    assert_eq!(w, auto, "automatic dispatch is for workers without a name");
    assert_ne!(w, named);
    s.answer(&w, &job, true);
    let out = s.outputs();
    let Some(S::Assignment(a)) = &out[0].message.message else {
        panic!("{out:?}")
    };
    let claims = KeyStore::dev()
        .verify(&a.token, u64::try_from(s.now.unix_ms / 1000).unwrap())
        .unwrap();
    assert_eq!(claims.kind, "agent");
    assert_eq!(claims.sub, "echo-1");
    let g = claims.video.unwrap();
    assert!(g.agent && g.room_join && g.room == "r1");
    assert_eq!(claims.attributes.get(AGENT_NAME_ATTRIBUTE).unwrap(), "");
    let state = a.job.as_ref().unwrap().state.as_ref().unwrap();
    assert_eq!(state.status, lk::JobStatus::JsRunning as i32);
    assert_eq!(state.worker_id, "AW_auto");
}

#[test]
fn explicit_dispatch_goes_only_to_workers_of_that_name() {
    let mut s = Sim::new();
    let _auto = s.worker("AW_auto", "");
    let named = s.worker("AW_named", "echo");
    let agents = [lk::RoomAgentDispatch {
        agent_name: "echo".into(),
        metadata: "m".into(),
        ..Default::default()
    }];
    s.d.room_started(s.now, &room("r1"), &agents);
    let (w, _) = s.offered();
    assert_eq!(w, named);
    // A later joiner asking for the same agent adds nothing; another name is added.
    s.d.agents_requested(s.now, &RoomName::new("r1"), &agents);
    assert!(s.outputs().is_empty());
    let list = s.d.list_dispatch(&RoomName::new("r1"), "").unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].metadata, "m");
}

#[test]
fn least_loaded_available_worker_is_offered_and_full_workers_are_not() {
    let mut s = Sim::new();
    let a = s.worker("AW_a", "");
    let b = s.worker("AW_b", "");
    let c = s.worker("AW_c", "");
    s.status(&a, lk::WorkerStatus::WsAvailable, 0.5);
    s.status(&b, lk::WorkerStatus::WsAvailable, 0.2);
    s.status(&c, lk::WorkerStatus::WsFull, 0.0);
    s.d.room_started(s.now, &room("r1"), &[]);
    let (w, _) = s.offered();
    assert_eq!(w, b);
}

#[test]
fn declined_or_silent_offers_go_to_the_next_worker_then_wait() {
    let mut s = Sim::new();
    let a = s.worker("AW_a", "");
    let b = s.worker("AW_b", "");
    s.status(&b, lk::WorkerStatus::WsAvailable, 0.1);
    s.d.room_started(s.now, &room("r1"), &[]);
    let (w, job) = s.offered();
    assert_eq!(w, a);
    s.answer(&a, &job, false);
    let (w, job2) = s.offered();
    assert_eq!((w.clone(), job2.as_str()), (b.clone(), job.as_str()));
    // b never answers.
    s.advance(OFFER_TIMEOUT - Duration::from_millis(1));
    assert!(s.outputs().is_empty());
    s.advance(Duration::from_millis(1));
    assert!(s.outputs().is_empty(), "nobody left to ask");
    assert_eq!(s.d.poll_timeout(), None);
    // A late answer from b is ignored; a new worker gets the job.
    s.answer(&b, &job, true);
    assert!(s.outputs().is_empty());
    let c = s.worker("AW_c", "");
    let (w, _) = s.offered();
    assert_eq!(w, c);
}

#[test]
fn a_job_waits_for_a_worker_that_becomes_available() {
    let mut s = Sim::new();
    let a = s.worker("AW_a", "");
    s.status(&a, lk::WorkerStatus::WsFull, 0.9);
    s.d.room_started(s.now, &room("r1"), &[]);
    assert!(s.outputs().is_empty());
    s.status(&a, lk::WorkerStatus::WsAvailable, 0.1);
    let (w, _) = s.offered();
    assert_eq!(w, a);
}

#[test]
fn a_vanished_workers_job_is_offered_to_another_as_resuming() {
    let mut s = Sim::new();
    let a = s.worker("AW_a", "");
    let b = s.worker("AW_b", "");
    s.status(&b, lk::WorkerStatus::WsAvailable, 0.5);
    s.d.room_started(s.now, &room("r1"), &[]);
    let (w, job) = s.offered();
    assert_eq!(w, a);
    s.answer(&a, &job, true);
    s.outputs();
    s.d.worker_gone(s.now, &a);
    let out = s.outputs();
    let Some(S::Availability(req)) = &out[0].message.message else {
        panic!("{out:?}")
    };
    assert_eq!(out[0].worker, b);
    assert!(req.resuming);
    assert_eq!(req.job.as_ref().unwrap().id, job);
}

#[test]
fn deleting_a_dispatch_terminates_its_job_and_closing_the_room_ends_the_rest() {
    let mut s = Sim::new();
    let a = s.worker("AW_a", "echo");
    let r = RoomName::new("r1");
    s.d.room_started(s.now, &room("r1"), &[]);
    assert!(s.outputs().is_empty(), "no unnamed worker");
    let d =
        s.d.create_dispatch(
            s.now,
            &lk::CreateAgentDispatchRequest {
                agent_name: "echo".into(),
                room: "r1".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let (w, job) = s.offered();
    assert_eq!(w, a);
    s.answer(&a, &job, true);
    s.outputs();
    assert_eq!(s.d.list_dispatch(&r, "").unwrap().len(), 2);
    let listed = s.d.list_dispatch(&r, &d.id).unwrap();
    assert_eq!(listed[0].state.as_ref().unwrap().jobs.len(), 1);
    let deleted = s.d.delete_dispatch(s.now, &r, &d.id).unwrap();
    assert!(deleted.state.unwrap().deleted_at > 0);
    let out = s.outputs();
    assert!(
        matches!(&out[0].message.message, Some(S::Termination(t)) if t.job_id == job),
        "{out:?}"
    );
    assert_eq!(
        s.d.delete_dispatch(s.now, &r, &d.id),
        Err(DispatchError::DispatchNotFound)
    );
    s.d.room_closed(s.now, &r);
    assert_eq!(s.d.list_dispatch(&r, ""), Err(DispatchError::RoomNotFound));
    assert!(s
        .d
        .create_dispatch(
            s.now,
            &lk::CreateAgentDispatchRequest {
                room: "r1".into(),
                ..Default::default()
            }
        )
        .is_err());
}

#[test]
fn participant_and_publisher_jobs_only_for_workers_of_that_type() {
    let mut s = Sim::new();
    let p = WorkerId::new("AW_p");
    s.d.worker_registered(s.now, p.clone(), reg("", lk::JobType::JtPublisher));
    s.d.room_started(s.now, &room("r1"), &[]);
    assert!(s.outputs().is_empty(), "no room worker");
    let alice = lk::ParticipantInfo {
        identity: "alice".into(),
        ..Default::default()
    };
    s.d.participant_event(s.now, &room("r1"), &alice, lk::JobType::JtParticipant);
    assert!(s.outputs().is_empty(), "no participant worker");
    s.d.participant_event(s.now, &room("r1"), &alice, lk::JobType::JtPublisher);
    let out = s.outputs();
    let Some(S::Availability(a)) = &out[0].message.message else {
        panic!("{out:?}")
    };
    let job = a.job.as_ref().unwrap();
    assert_eq!(job.r#type, lk::JobType::JtPublisher as i32);
    assert_eq!(job.participant.as_ref().unwrap().identity, "alice");
    // Agents get no agents.
    let agent = lk::ParticipantInfo {
        identity: "bot".into(),
        kind: lk::participant_info::Kind::Agent as i32,
        ..Default::default()
    };
    s.d.participant_event(s.now, &room("r1"), &agent, lk::JobType::JtPublisher);
    assert!(s.outputs().is_empty());
}

#[test]
fn an_agent_leaving_on_its_own_ends_its_job_but_a_lost_connection_does_not() {
    let mut s = Sim::new();
    let a = s.worker("AW_a", "");
    let r = RoomName::new("r1");
    s.d.room_started(s.now, &room("r1"), &[]);
    let (_, job) = s.offered();
    s.answer(&a, &job, true);
    s.outputs();
    let mut left = lk::ParticipantInfo {
        identity: "echo-1".into(),
        kind: lk::participant_info::Kind::Agent as i32,
        disconnect_reason: lk::DisconnectReason::SignalClose as i32,
        ..Default::default()
    };
    s.d.participant_left(s.now, &r, &left);
    let st = |s: &Sim| {
        s.d.list_dispatch(&r, "").unwrap()[0]
            .state
            .clone()
            .unwrap()
            .jobs[0]
            .state
            .clone()
            .unwrap()
            .status
    };
    assert_eq!(st(&s), lk::JobStatus::JsRunning as i32);
    left.disconnect_reason = lk::DisconnectReason::ClientInitiated as i32;
    s.d.participant_left(s.now, &r, &left);
    assert_eq!(st(&s), lk::JobStatus::JsSuccess as i32);
}
