//! LiveKit's agent framework against Prism: `livekit-agents` from PyPI (its own venv,
//! `.venv-agents`) runs an echo agent (`tests/interop/agent_echo.py`, `rtc` only), and LiveKit
//! Python SDK participants (`tests/interop/lk_agent_peer.py`, the test venv) publish a tone
//! and measure what agents send back.
//!
//! What passing proves:
//! - a worker registers on `/agent`; a participant joining a new room gets an agent
//!   automatically: it joins as kind AGENT and its audio carries the participant's tone
//!   (the frequency is measured); a publisher-type worker gets a `JT_PUBLISHER` job naming
//!   the participant once it publishes;
//! - a named worker gets no automatic jobs, and is dispatched explicitly three ways: a
//!   token's `roomConfig.agents`, `CreateRoom`'s agents, and `livekit-api`'s
//!   `agent_dispatch` (create, list with the job and its agent, delete: the agent leaves);
//!   a room left with only its agent closes (the worker is told its job ended);
//! - with several workers, the job goes to the available one with the most spare load (a
//!   full worker is skipped even when its load figure is lowest), and killing that worker
//!   mid-job gets the job to another worker, whose agent joins and echoes again.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use common::*;

const WAIT: Duration = Duration::from_secs(90);

fn pythons() -> Option<(PathBuf, PathBuf)> {
    Some((python("livekit.rtc, livekit.api, numpy")?, agents_python()?))
}

/// An echo worker, registered (its `registered` event seen).
fn worker(apy: &Path, server: &Server, name: &str, args: &[&str]) -> Client {
    let url = ws_url(server);
    let mut all = vec!["--url", url.as_str()];
    all.extend_from_slice(args);
    let mut w = live_client(apy, name, "agent_echo.py", &all).timeout(Duration::from_secs(300));
    w.expect_event("registered", WAIT);
    w
}

fn peer(py: &Path, server: &Server, room: &str, identity: &str, args: &[&str]) -> Client {
    let url = ws_url(server);
    let mut all = vec![
        "--url",
        url.as_str(),
        "--room",
        room,
        "--identity",
        identity,
    ];
    all.extend_from_slice(args);
    let mut p =
        live_client(py, identity, "lk_agent_peer.py", &all).timeout(Duration::from_secs(300));
    p.expect_event("joined", WAIT);
    p
}

/// Waits for an agent participant to join, then for its echo of the 660 Hz tone; returns
/// its identity.
fn expect_agent_echo(p: &mut Client) -> String {
    let agent = p
        .wait_event_where("participant", WAIT, |v| {
            v["kind"] == "PARTICIPANT_KIND_AGENT"
        })
        .unwrap_or_else(|| panic!("no agent joined"));
    let identity = agent["identity"].as_str().unwrap().to_string();
    let tone = p
        .wait_event_where("tone", WAIT, |v| v["identity"] == identity.as_str())
        .unwrap_or_else(|| panic!("no audio from agent {identity}"));
    let f = tone["freq"].as_f64().unwrap();
    assert!(
        (f - 660.0).abs() < 10.0,
        "agent {identity} sent {f} Hz, not 660"
    );
    identity
}

fn stop(mut c: Client) -> Outcome {
    c.tell("stop");
    let o = c.finish();
    assert!(o.ok(), "{o}");
    o
}

#[test]
fn an_automatically_dispatched_agent_echoes_the_participants_tone() {
    let _g = serial();
    let Some((py, apy)) = pythons() else { return };
    let server = Server::start();
    let mut w = worker(&apy, &server, "worker", &[]);
    let mut alice = peer(&py, &server, "auto-room", "alice", &["--freq", "660"]);
    let agent = expect_agent_echo(&mut alice);
    let job = w.expect_event("job", WAIT);
    assert_eq!(job["room"], "auto-room");
    assert_eq!(job["identity"], agent.as_str());
    stop(alice);
}

#[test]
fn a_publisher_worker_gets_a_job_for_each_publishing_participant() {
    let _g = serial();
    let Some((py, apy)) = pythons() else { return };
    let server = Server::start();
    let mut w = worker(&apy, &server, "publisher-worker", &["--publisher"]);
    let mut frank = peer(&py, &server, "publisher-room", "frank", &[]);
    let agent = expect_agent_echo(&mut frank);
    let job = w.expect_event("job", WAIT);
    assert_eq!(job["type"], 1, "JT_PUBLISHER: {job}");
    assert_eq!(job["for_participant"], "frank", "{job}");
    assert_eq!(job["identity"], agent.as_str());
    stop(frank);
}

#[test]
fn a_named_agent_is_dispatched_by_token_by_create_room_and_by_the_dispatch_api() {
    let _g = serial();
    let Some((py, apy)) = pythons() else { return };
    let server = Server::start();
    let mut w = worker(&apy, &server, "echo-worker", &["--agent-name", "echo"]);

    // 1. The join token's roomConfig.agents.
    let mut bob = peer(
        &py,
        &server,
        "token-room",
        "bob",
        &["--token-agent", "echo"],
    );
    expect_agent_echo(&mut bob);
    stop(bob);

    // 2. CreateRoom with agents; the room closes once only the agent is left.
    let mut carol = peer(
        &py,
        &server,
        "created-room",
        "carol",
        &["--create-room-agent", "echo", "--departure-timeout", "1"],
    );
    expect_agent_echo(&mut carol);
    stop(carol);
    w.wait_event_where("job_done", WAIT, |v| v["room"] == "created-room")
        .expect("the room with only its agent left did not close");

    // 3. AgentDispatchService. The room's automatic dispatch found no unnamed worker.
    let mut dave = peer(&py, &server, "api-room", "dave", &[]);
    dave.tell("list");
    let before = dave.expect_event("dispatches", WAIT);
    let items = before["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .all(|d| d["agent_name"] == "" && d["jobs"][0]["identity"] == ""),
        "a named worker took an automatic job: {before}"
    );
    dave.tell("dispatch echo");
    let d = dave.expect_event("dispatched", WAIT);
    assert_eq!(d["agent_name"], "echo");
    let id = d["id"].as_str().unwrap().to_string();
    let agent = expect_agent_echo(&mut dave);
    dave.tell("list");
    let after = dave.expect_event("dispatches", WAIT);
    let listed: Vec<&Value> = after["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["id"] == id.as_str())
        .collect();
    assert_eq!(listed.len(), 1, "{after}");
    assert_eq!(listed[0]["jobs"][0]["identity"], agent.as_str(), "{after}");
    dave.tell(&format!("undispatch {id}"));
    dave.expect_event("undispatched", WAIT);
    dave.wait_event_where("left", WAIT, |v| v["identity"] == agent.as_str())
        .expect("the agent did not leave after its dispatch was deleted");
    stop(dave);
    server_alive(server);
}

fn server_alive(mut server: Server) {
    server.assert_alive();
}

#[test]
fn jobs_go_to_the_worker_with_spare_load_and_move_when_it_dies() {
    let _g = serial();
    let Some((py, apy)) = pythons() else { return };
    let server = Server::start();
    // busy: available but loaded; spare: the least loaded available; full: the lowest
    // load figure, but over its own threshold, so it reports itself full.
    let mut busy = worker(&apy, &server, "busy", &["--load", "0.5", "--report-load"]);
    let mut spare = worker(&apy, &server, "spare", &["--load", "0.1", "--report-load"]);
    let mut full = worker(
        &apy,
        &server,
        "full",
        &[
            "--load",
            "0.05",
            "--load-threshold",
            "0.01",
            "--report-load",
        ],
    );
    for w in [&mut busy, &mut spare, &mut full] {
        w.expect_event("load_reported", WAIT);
    }
    let mut erin = peer(&py, &server, "load-room", "erin", &[]);
    let first = expect_agent_echo(&mut erin);
    let job = spare.expect_event("job", WAIT);
    assert_eq!(job["identity"], first.as_str());

    // The worker dies mid-job: its agent drops out, and the job is offered to the other
    // available worker.
    spare.kill();
    let moved = busy.expect_event("job", WAIT);
    assert_eq!(moved["job"], job["job"], "the same job moved");
    let again = expect_agent_echo(&mut erin);
    assert_eq!(again, moved["identity"].as_str().unwrap());
    stop(erin);
    full.tell("stop");
    server_alive(server);
}
