//! LiveKit's Python SDK clients stay in their room while the cluster fails under them
//! (issue 11, must-shows 5, 6 and 7; docs/cluster.md). One `redis-server`, three
//! `prism serve` nodes and, in front of them, a TCP load balancer that sends each new
//! connection to a node whose `/readyz` is 200 (`common::cluster::Balancer`), as a
//! deployment has. A publisher and a subscriber join once through it; the test never joins
//! them again: every way back into the room is the SDK's own reconnection.
//!
//! In order, on the same room:
//! 5. `kill -9` of the room's owner: both clients are back in the room, under the same
//!    room sid, and the subscriber decodes frames again within 30 s.
//! 6. `kill -STOP` of the new owner for 20 s, then `kill -CONT`: the room goes on on the
//!    third node (same sid, decoding again), and the stopped node, once running, closes
//!    its copy (superseded).
//! 7. SIGTERM of that owner, its `cluster.drain_timeout` short: it turns DRAINING
//!    (`/readyz` 503); a new room asked for through it is placed on another node, while
//!    a join of the room it owns is still served there; at the deadline its clients are
//!    told to reconnect and decode again on the remaining node (same sid), and the
//!    process exits by itself.
//!
//! 8. SIGTERM of the last node once the clients left, its room still open: the room
//!    closes as usual during the drain, which ends with it, before the deadline.
//!
//! Throughout, every node's `/api/state` is polled (a stopped node does not answer, a
//! dead one refuses): at no moment do two nodes serve the room (a node whose hold on its
//! rooms lapsed shows them `fenced` until its next check).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::cluster::{
    metric, owner, rtc_status, start_node, status_within, wait_until, Balancer, Node, Redis,
};
use common::*;

const ROOM: &str = "fo-room";
/// The drain deadline the nodes are given (`cluster.drain_timeout`).
const DRAIN_S: u64 = 8;
/// The must-show's bound on getting back to decoding after an owner's death.
const BACK_WITHIN: Duration = Duration::from_secs(30);
/// Video frames decoded since its last reconnection for the subscriber to count as back.
const FRAMES_AGAIN: u64 = 30;

/// The client's state (`report` event).
fn report(c: &mut Client) -> Value {
    c.tell("report");
    c.expect_event("report", Duration::from_secs(20))
}

/// What a client must be doing again to count as back.
#[derive(Clone, Copy)]
enum Again {
    /// The subscriber: [`FRAMES_AGAIN`] frames decoded since its last reconnection.
    Decoding,
    /// The publisher: its track published again (once per reconnection).
    Publishing,
}

/// Whether `c` is back: reconnected more than `before` times, connected, and doing
/// `again`. Polled until `deadline`; its last report, or `None` if it was not back by
/// then.
fn back_by(c: &mut Client, before: u64, again: Again, deadline: Instant) -> Option<Value> {
    loop {
        let r = report(c);
        assert_ne!(r["disconnected"], true, "the SDK gave the room up: {r}");
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        let back = n("reconnects") > before
            && r["state"].as_i64() == Some(1)
            && match again {
                Again::Decoding => n("frames_since_reconnect") >= FRAMES_AGAIN,
                Again::Publishing => n("republished") > before,
            };
        if back {
            return Some(r);
        }
        if Instant::now() >= deadline {
            eprintln!("not back: {r}");
            return None;
        }
        thread::sleep(Duration::from_millis(300));
    }
}

/// [`back_by`] within `within`, or the test fails.
fn wait_back(c: &mut Client, before: u64, again: Again, within: Duration) -> Value {
    back_by(c, before, again, Instant::now() + within)
        .unwrap_or_else(|| panic!("not back within {within:?}"))
}

/// After a failure the subscriber is back (`sub`, its report): waits for the publisher
/// to be back too (its track published again), both in the room under `sid`; their
/// reconnection counts.
fn same_room(sub: &Value, publisher: &mut Client, before: u64, sid: &str) -> (u64, u64) {
    let publ = wait_back(
        publisher,
        before,
        Again::Publishing,
        Duration::from_secs(30),
    );
    assert_eq!(
        sub["sid"], sid,
        "the subscriber is back in the same room: {sub}"
    );
    assert_eq!(
        publ["sid"], sid,
        "the publisher is back in the same room: {publ}"
    );
    (
        sub["reconnects"].as_u64().unwrap_or(0),
        publ["reconnects"].as_u64().unwrap_or(0),
    )
}

/// Which nodes serve `ROOM` (list it in `/api/state`, not fenced), polled in a thread.
struct Watch {
    stop: Arc<AtomicBool>,
    /// (most nodes seen serving the room at once, polls where exactly one did)
    seen: Arc<Mutex<(usize, usize, Vec<String>)>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Watch {
    fn start(hosts: Vec<String>) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new((0, 0, Vec::new())));
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let serving: Vec<&String> = hosts.iter().filter(|h| serves(h)).collect();
                    let mut s = seen.lock().unwrap();
                    if serving.len() > s.0 {
                        s.0 = serving.len();
                        s.2 = serving.iter().map(|h| h.to_string()).collect();
                    }
                    if serving.len() == 1 {
                        s.1 += 1;
                    }
                    drop(s);
                    thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Watch {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// (most nodes serving at once, polls with exactly one, who at the worst moment).
    fn finish(mut self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.seen.lock().unwrap().clone()
    }
}

/// Whether the node at `host` serves `ROOM` now: it answers `/api/state` within a
/// second and lists the room, not fenced.
fn serves(host: &str) -> bool {
    let Some((200, body)) = status_within(host, "/api/state", Duration::from_secs(1)) else {
        return false;
    };
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["rooms"].as_array().is_some_and(|rooms| {
        rooms
            .iter()
            .any(|r| r["name"] == ROOM && r["fenced"] != true)
    })
}

/// `GET path` sent to `host` now, its answer read later ([`read_answer`]).
fn queue_request(host: &str, path: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(host).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s
}

/// The JSON body answering a [`queue_request`].
fn read_answer(mut s: std::net::TcpStream) -> Value {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|_| panic!("no JSON answer: {resp:?}"))
}

/// Whether `node`'s own room list (`/api/state`) has `room`, fenced or not.
fn lists(node: &Node, room: &str) -> bool {
    status_within(&node.host(), "/api/state", Duration::from_secs(5))
        .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
        .and_then(|v| v["rooms"].as_array().cloned())
        .is_some_and(|rooms| rooms.iter().any(|r| r["name"] == room))
}

/// The index of the node that owns `ROOM` in the directory.
fn owner_index(redis: &Redis, nodes: &[Node]) -> usize {
    let id = owner(redis, ROOM);
    nodes
        .iter()
        .position(|n| n.id == id)
        .unwrap_or_else(|| panic!("the owner {id:?} is not a node of the test"))
}

#[test]
fn sdk_clients_come_back_after_owner_death_stall_and_drain() {
    let _g = serial();
    let Some(py) = python("livekit.rtc") else {
        return;
    };
    let redis = Redis::start();
    // Rooms close 4 s after their last participant left (step 8: well before the drain
    // deadline, with the room ticking once a second).
    let config = format!("cluster:\n  drain_timeout: {DRAIN_S}\nroom:\n  departure_timeout: 4\n");
    let nodes: Vec<Node> = (0..3)
        .map(|_| start_node(&redis, &["--config-body", &config]))
        .collect();
    wait_until("three ready nodes", Duration::from_secs(60), || {
        nodes
            .iter()
            .all(|n| http(&n.server, "GET", "/readyz", None, None).0 == 200)
    });
    let hosts: Vec<String> = nodes.iter().map(Node::host).collect();
    let lb = Balancer::start(hosts.clone());
    let watch = Watch::start(hosts);

    // The publisher and the subscriber join once, through the load balancer.
    let mut publisher = live_client(
        &py,
        "publisher",
        "lk_failover.py",
        &[
            "--url",
            &lb.ws_url(),
            "--token",
            &token(ROOM, "pub", &[]),
            "--publish",
        ],
    )
    .timeout(Duration::from_secs(200));
    let sid = publisher.expect_event("connected", Duration::from_secs(60))["sid"]
        .as_str()
        .unwrap()
        .to_string();
    publisher.expect_event("published", Duration::from_secs(60));
    let mut subscriber = live_client(
        &py,
        "subscriber",
        "lk_failover.py",
        &["--url", &lb.ws_url(), "--token", &token(ROOM, "sub", &[])],
    )
    .timeout(Duration::from_secs(200));
    let sub_sid = subscriber.expect_event("connected", Duration::from_secs(60))["sid"].clone();
    assert!(sid.starts_with("RM_"), "{sid}");
    assert_eq!(sub_sid, sid.as_str(), "one room");
    assert_eq!(
        redis.room_field(ROOM, "sid"),
        sid,
        "the directory keeps the sid"
    );
    wait_until("the subscriber to decode", Duration::from_secs(60), || {
        report(&mut subscriber)["frames"].as_u64().unwrap_or(0) >= FRAMES_AGAIN
    });

    // 5. kill -9 of the owner.
    let a = owner_index(&redis, &nodes);
    let mut nodes = nodes;
    let mut dead = nodes.remove(a);
    let killed = Instant::now();
    let _ = dead.server.child.kill();
    let _ = dead.server.child.wait();
    lb.remove(&dead.host());
    let sub = wait_back(&mut subscriber, 0, Again::Decoding, BACK_WITHIN);
    let back_after_kill = killed.elapsed();
    let reconnects = same_room(&sub, &mut publisher, 0, &sid);
    let b = owner_index(&redis, &nodes);
    assert_eq!(redis.room_field(ROOM, "epoch"), "2", "one more owner");
    assert_eq!(redis.room_field(ROOM, "sid"), sid);
    eprintln!("5. kill -9: decoding again after {back_after_kill:?}");

    // 6. kill -STOP of the new owner for 20 s, then -CONT.
    let c = 1 - b;
    nodes[b].signal("-STOP");
    let stopped = Instant::now();
    let early = back_by(
        &mut subscriber,
        reconnects.0,
        Again::Decoding,
        stopped + Duration::from_secs(20),
    );
    // Whatever happened, the node runs again after its 20 s. A status request waits in
    // its socket: the first thing it answers when it runs again, before its refresh has
    // looked at Redis, must not show the room as served (its hold lapsed: fenced).
    thread::sleep(Duration::from_secs(20).saturating_sub(stopped.elapsed()));
    let queued = queue_request(&nodes[b].host(), "/api/state");
    nodes[b].signal("-CONT");
    let first = read_answer(queued);
    let stale: Vec<&Value> = first["rooms"]
        .as_array()
        .map(|r| r.iter().filter(|r| r["name"] == ROOM).collect())
        .unwrap_or_default();
    assert!(
        stale.iter().all(|r| r["fenced"] == true),
        "the woken node showed the room as served: {first}"
    );
    let sub = early.unwrap_or_else(|| {
        wait_back(
            &mut subscriber,
            reconnects.0,
            Again::Decoding,
            Duration::from_secs(30),
        )
    });
    let back_after_stop = stopped.elapsed();
    let reconnects = same_room(&sub, &mut publisher, reconnects.1, &sid);
    assert_eq!(
        owner(&redis, ROOM),
        nodes[c].id,
        "the room went on on the third node"
    );
    assert_eq!(redis.room_field(ROOM, "epoch"), "3");
    wait_until(
        "the stopped node to close its copy",
        Duration::from_secs(20),
        || !lists(&nodes[b], ROOM),
    );
    assert!(metric(&nodes[b], "prism_cluster_superseded_rooms_total") >= 1.0);
    eprintln!("6. kill -STOP: decoding again after {back_after_stop:?}");

    // 7. SIGTERM of the owner: a drain with a deadline.
    nodes[c].signal("-TERM");
    let termed = Instant::now();
    wait_until("the owner to drain", Duration::from_secs(5), || {
        matches!(
            status_within(&nodes[c].host(), "/readyz", Duration::from_secs(1)),
            Some((503, ref body)) if body.contains("draining")
        )
    });
    // No new room there: one asked for through the draining node goes to the other one.
    let (status, text) = rtc_status(&nodes[c], &token("fo-new", "newcomer", &[]), "");
    assert_eq!(status, 101, "{text}");
    assert_eq!(
        owner(&redis, "fo-new"),
        nodes[b].id,
        "a new room is placed elsewhere"
    );
    assert!(!lists(&nodes[c], "fo-new"));
    // Its own room still takes joins, and its clients stay until the deadline.
    let (status, text) = rtc_status(&nodes[c], &token(ROOM, "late", &[]), "");
    assert_eq!(status, 101, "{text}");
    assert_eq!(owner(&redis, ROOM), nodes[c].id);
    let r = report(&mut subscriber);
    if termed.elapsed() < Duration::from_secs(DRAIN_S) {
        assert_eq!(
            r["reconnects"].as_u64(),
            Some(reconnects.0),
            "moved early: {r}"
        );
    }
    let sub = wait_back(
        &mut subscriber,
        reconnects.0,
        Again::Decoding,
        Duration::from_secs(DRAIN_S + 30),
    );
    let moved_after = termed.elapsed();
    assert!(
        moved_after >= Duration::from_secs(DRAIN_S),
        "the clients moved at the deadline, not before: {moved_after:?}"
    );
    same_room(&sub, &mut publisher, reconnects.1, &sid);
    assert_eq!(
        owner(&redis, ROOM),
        nodes[b].id,
        "the room moved to the remaining node"
    );
    let status = nodes[c].wait_exit(Duration::from_secs(20));
    assert!(status.success(), "the drained node exits cleanly: {status}");
    eprintln!("7. drain: clients decoding on the other node {moved_after:?} after SIGTERM");

    // Never two copies at once; and the watch did see the room served.
    let (most, single, who) = watch.finish();
    assert!(most <= 1, "two nodes served the room at once: {who:?}");
    assert!(single > 0, "the watch saw the room served");
    publisher.tell("stop");
    subscriber.tell("stop");

    // 8. A room that empties during a drain closes as usual, and the drain ends with it,
    //    before its deadline: SIGTERM once the clients left and before the room closed.
    wait_until(
        "the room to empty on the last node",
        Duration::from_secs(20),
        || {
            status_within(&nodes[b].host(), "/api/state", Duration::from_secs(5))
                .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
                .is_some_and(|v| {
                    v["rooms"].as_array().is_some_and(|rooms| {
                        rooms.iter().any(|r| {
                            r["name"] == ROOM
                                && r["participants"].as_array().is_some_and(Vec::is_empty)
                        })
                    })
                })
        },
    );
    nodes[b].signal("-TERM");
    let (p, s) = (publisher.finish(), subscriber.finish());
    for o in [&p, &s] {
        assert!(o.ok(), "{o}");
        assert_eq!(o.summary["disconnected_by_server"], false, "{o}");
        assert_eq!(o.summary["sid"], sid.as_str(), "{o}");
    }
    assert!(s.summary["reconnects"].as_u64().unwrap() >= 3, "{s}");
    let status = nodes[b].wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let log = nodes[b].server.log_text();
    assert!(
        log.contains("prism: drain over: every room closed"),
        "the drain ended with the room, not at its deadline:\n{log}"
    );
}
