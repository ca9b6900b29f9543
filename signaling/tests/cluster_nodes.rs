//! Three `prism serve` nodes sharing rooms through a real `redis-server` (started here, on a
//! free port, without persistence), with LiveKit's Python SDK and `livekit-api` as
//! clients (docs/cluster.md). One test, one Redis, three nodes, in steps:
//!
//! 1. Registry: every node has a leased `prism:node:{N}` entry (PTTL ≤ 6 s) and answers
//!    `/readyz` 200.
//! 2. Any node serves any client: a publisher joins through one node; a subscriber joins
//!    through a node that does not own the room and decodes ≥ 60 frames; the proxy's
//!    counter shows the spliced frames; a bad token through that node is 401, a forged
//!    node-to-node request 403.
//! 3. RoomService on every node for a room owned elsewhere: ListRooms identical on all
//!    three, ListParticipants and SendData through each (the viewer gets all three
//!    messages), MutePublishedTrack and RemoveParticipant through non-owners.
//! 4. Ten parallel joins of one new room spread over the three nodes: one owner, one room
//!    (every join sees the same room sid), and ListRooms counts ten participants.
//! 5. A malformed node entry written into Redis is skipped: placement and ListRooms go on.
//! 6. `kill -9` of a room's owner: its entry is gone within the lease, and a client
//!    joining again through a live node gets the room back on a live node (epoch 2).
//! 7. `kill -STOP` of a room's owner past its lease: a join through the other node takes
//!    the room (epoch 2); after `kill -CONT` the old owner closes its copy, its participant
//!    told to reconnect (`LeaveRequest{action: RECONNECT}`).
//! 8. Redis stopped: `/healthz` stays 200, `/readyz` turns 503, a new room gets 503 saying
//!    why, the owner's room still takes joins; Redis restarted empty: the nodes register
//!    again and the owner writes its room back.
//! 9. SIGTERM of an owner: it drains (DRAINING, `/readyz` 503, its room kept); a second
//!    SIGTERM ends the drain: its room (sid kept) and entry are handed off at once, its
//!    participant is told to reconnect, and a join through the other node takes the room
//!    under the same sid.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use prost::Message as _;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use common::cluster::{metric, owner, rtc_status, start_node, wait_until, Node, Redis};
use common::*;

const WAIT: Duration = Duration::from_secs(60);

/// ListRooms over Twirp JSON on one node: (name, sid, participants), sorted.
fn list_rooms(node: &Node, admin: &str) -> Vec<(String, String, u64)> {
    use std::io::{Read, Write};
    let host = node.server.http.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "POST /twirp/livekit.RoomService/ListRooms HTTP/1.1\r\nHost: {host}\r\n\
         Connection: close\r\nAuthorization: Bearer {admin}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let mut out: Vec<(String, String, u64)> = v["rooms"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["name"].as_str().unwrap_or("").to_string(),
                        r["sid"].as_str().unwrap_or("").to_string(),
                        r["num_participants"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Joins `room` as `identity` through `node` with a raw WebSocket; the JoinResponse's
/// room sid, and the socket (kept open by the caller).
async fn raw_join(
    host: String,
    token: String,
) -> (
    String,
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) {
    let req = format!("ws://{host}/rtc?access_token={token}&protocol=15&auto_subscribe=1")
        .into_client_request()
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("join handshake");
    use futures_util::StreamExt;
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a JoinResponse in time")
            .expect("the socket stays open")
            .expect("a frame");
        if let Message::Binary(b) = m {
            let resp = prism_proto::livekit::SignalResponse::decode(b.as_ref()).unwrap();
            if let Some(prism_proto::livekit::signal_response::Message::Join(j)) = resp.message {
                return (j.room.unwrap_or_default().sid, ws);
            }
        }
    }
}

#[test]
fn three_nodes_share_rooms_through_redis() {
    let _g = serial();
    let Some(py) = python("livekit.rtc, livekit.api") else {
        return;
    };
    let redis = Redis::start();
    let mut nodes: Vec<Node> = (0..3).map(|_| start_node(&redis, &[])).collect();
    let admin = token("any", "admin", &["--admin"]);

    // 1. Registry and readiness.
    wait_until("three registered, ready nodes", WAIT, || {
        nodes
            .iter()
            .all(|n| http(&n.server, "GET", "/readyz", None, None).0 == 200)
    });
    assert_eq!(redis.cli(&["ZCARD", "prism:nodes"]), "3");
    for n in &nodes {
        let ttl: i64 = redis
            .cli(&["PTTL", &format!("prism:node:{{{}}}", n.id)])
            .parse()
            .unwrap();
        assert!((1..=6000).contains(&ttl), "{}: PTTL {ttl}", n.id);
        let entry: Value =
            serde_json::from_str(&redis.cli(&["GET", &format!("prism:node:{{{}}}", n.id)]))
                .unwrap();
        assert_eq!(entry["state"], "SERVING", "{entry}");
        assert_eq!(entry["http"], n.server.http.trim_start_matches("http://"));
    }

    // 2. A publisher through node 0; the room is placed and claimed somewhere.
    let room = "cl-room";
    let stop = std::env::temp_dir().join(format!("prism-cluster-stop-{}", std::process::id()));
    let _ = std::fs::remove_file(&stop);
    let stop_s = stop.to_string_lossy().to_string();
    let publisher = client(
        &py,
        "publisher",
        "lk_client.py",
        &[
            "--url",
            &ws_url(&nodes[0].server),
            "--token",
            &token(room, "pub", &[]),
            "--publish",
            "--duration",
            "90",
            "--stop-file",
            &stop_s,
        ],
    );
    wait_until("the room's owner in Redis", WAIT, || {
        !owner(&redis, room).is_empty()
    });
    let owner_id = owner(&redis, room);
    let a = nodes.iter().position(|n| n.id == owner_id).unwrap();
    let others: Vec<usize> = (0..3).filter(|&i| i != a).collect();
    let (b, c) = (others[0], others[1]);
    // A viewer through B for step 3, joined early so that it is connected by then.
    let viewer = client(
        &py,
        "viewer",
        "lk_client.py",
        &[
            "--url",
            &ws_url(&nodes[b].server),
            "--token",
            &token(room, "viewer", &[]),
            "--duration",
            "90",
            "--stop-file",
            &stop_s,
        ],
    );
    // A subscriber through C, which does not own the room, decodes the publisher.
    let mut watcher = lk_watch(
        &py,
        &nodes[c].server,
        room,
        "watcher",
        &[
            "--expect",
            "pub",
            "--video-frames",
            "60",
            "--audio-frames",
            "50",
        ],
    );
    watcher.expect_event("frames", WAIT);
    watcher.tell("stop");
    let watched = watcher.finish();
    assert!(watched.ok(), "{watched}");
    assert!(
        metric(&nodes[c], "prism_cluster_proxied_frames_total") > 0.0,
        "C proxied the watcher's signaling"
    );
    assert_eq!(
        metric(&nodes[a], "prism_cluster_proxied_sessions_total"),
        0.0
    );
    // Refusals through C stay HTTP statuses.
    let (status, _) = rtc_status(&nodes[c], "not-a-token", "");
    assert_eq!(status, 401, "a bad token through C");
    let good = token(room, "forger", &[]);
    let (status, text) = rtc_status(
        &nodes[a],
        &good,
        "x-prism-peer: ND_fake\r\nx-prism-auth: 1:00\r\n",
    );
    assert_eq!(status, 403, "a forged node-to-node request: {text}");
    assert!(metric(&nodes[a], "prism_cluster_forged_requests_total") >= 1.0);

    // 3. RoomService through every node, the viewer joined through B.
    let urls: Vec<String> = nodes.iter().map(|n| n.server.http.clone()).collect();
    let mut args = vec![];
    for u in &urls {
        args.extend(["--url", u.as_str()]);
    }
    args.extend([
        "--room",
        room,
        "--publisher",
        "pub",
        "--viewer",
        "viewer",
        "--mute-url",
        &urls[b],
        "--remove-url",
        &urls[c],
    ]);
    let api = client(&py, "roomservice", "lk_cluster_api.py", &args).finish();
    std::fs::write(&stop, b"stop").unwrap();
    let viewer = viewer.finish();
    let publisher = publisher.finish();
    let _ = std::fs::remove_file(&stop);
    let s = &api.summary;
    assert!(
        api.ok() && s["ok"] == true,
        "RoomService script failed\n{api}"
    );
    let lists = s["list_rooms"].as_array().unwrap();
    assert_eq!(lists.len(), 3);
    assert!(
        lists.iter().all(|l| l == &lists[0]),
        "ListRooms differs: {s}"
    );
    assert_eq!(lists[0][0][0], room, "{s}");
    assert_eq!(lists[0][0][2], 2, "{s}");
    for p in s["participants"].as_array().unwrap() {
        assert_eq!(p, &serde_json::json!(["pub", "viewer"]), "{s}");
    }
    for e in s["missing_room"].as_array().unwrap() {
        assert_eq!(e["code"], "not_found", "{s}");
    }
    assert_eq!(s["muted"]["muted"], true, "{s}");
    assert_eq!(s["muted"]["sid"], s["muted"]["video"], "{s}");
    for p in s["after_remove"].as_array().unwrap() {
        assert_eq!(p, &serde_json::json!(["pub"]), "{s}");
    }
    let got: Vec<&str> = viewer.summary["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["topic"] == "cluster")
        .filter_map(|d| d["data"].as_str())
        .collect();
    for i in 0..3 {
        assert!(
            got.contains(&format!("via-node-{i}").as_str()),
            "the viewer got SendData through node {i}: {got:?}\n{viewer}"
        );
    }
    assert!(
        viewer.summary["disconnected_by_server"] == true,
        "RemoveParticipant through C reached the viewer\n{viewer}"
    );
    assert!(publisher.ok(), "{publisher}");
    assert!(
        metric(&nodes[b], "prism_cluster_forwarded_calls_total")
            + metric(&nodes[c], "prism_cluster_forwarded_calls_total")
            >= 4.0
    );

    // 4. Ten parallel joins of one new room through all three nodes.
    let herd = "cl-herd";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let hosts: Vec<String> = nodes
        .iter()
        .map(|n| n.server.http.trim_start_matches("http://").to_string())
        .collect();
    let tokens: Vec<String> = (0..10)
        .map(|i| token(herd, &format!("h{i}"), &[]))
        .collect();
    let (sids, sockets) = rt.block_on(async {
        let joins: Vec<_> = (0..10)
            .map(|i| tokio::spawn(raw_join(hosts[i % 3].clone(), tokens[i].clone())))
            .collect();
        let mut sids = Vec::new();
        let mut sockets = Vec::new();
        for j in joins {
            let (sid, ws) = j.await.unwrap();
            sids.push(sid);
            sockets.push(ws);
        }
        (sids, sockets)
    });
    assert!(sids[0].starts_with("RM_"), "{sids:?}");
    assert!(sids.iter().all(|s| s == &sids[0]), "one room: {sids:?}");
    let herd_owner = owner(&redis, herd);
    assert!(nodes.iter().any(|n| n.id == herd_owner), "{herd_owner}");
    assert_eq!(
        redis.cli(&["HGET", &format!("prism:room:{{{herd}}}"), "epoch"]),
        "1",
        "one claim, one epoch"
    );
    wait_until("ListRooms to count the herd on every node", WAIT, || {
        nodes.iter().all(|n| {
            list_rooms(n, &admin)
                .iter()
                .any(|(name, sid, count)| name == herd && sid == &sids[0] && *count == 10)
        })
    });

    // 5. A malformed entry in the directory is skipped, never trusted.
    redis.cli(&[
        "SET",
        "prism:node:{ND_garbage}",
        "\u{1}not json",
        "PX",
        "60000",
    ]);
    redis.cli(&["ZADD", "prism:nodes", "99999999999999", "ND_garbage"]);
    redis.cli(&["HSET", "prism:rooms", "bogus", "{\"owner\":1}"]);
    let lists: Vec<_> = nodes.iter().map(|n| list_rooms(n, &admin)).collect();
    assert!(lists.iter().all(|l| l == &lists[0]), "{lists:?}");
    assert!(lists[0].iter().all(|(n, _, _)| n != "bogus"), "{lists:?}");
    let (status, _) = rtc_status(&nodes[0], &token("cl-after-garbage", "x", &[]), "");
    assert_eq!(status, 101, "placement goes on past a malformed entry");
    assert!(nodes
        .iter()
        .any(|n| metric(n, "prism_cluster_malformed_entries_total") >= 1.0));
    drop(sockets);
    drop(rt);

    // 6. The herd's owner killed: its lease runs out, and the room comes back on a live
    //    node when a client joins again through any node.
    let k = nodes.iter().position(|n| n.id == herd_owner).unwrap();
    let mut dead = nodes.remove(k);
    let _ = dead.server.child.kill();
    let _ = dead.server.child.wait();
    let gone = Instant::now();
    wait_until(
        "the dead node's lease to run out",
        Duration::from_secs(15),
        || redis.cli(&["EXISTS", &format!("prism:node:{{{}}}", dead.id)]) == "0",
    );
    // The lease is 6 s from the last refresh; the margin is for a busy machine.
    assert!(
        gone.elapsed() < Duration::from_secs(10),
        "lease ran out in {:?}",
        gone.elapsed()
    );
    let (status, _) = rtc_status(&nodes[0], &token(herd, "back", &[]), "");
    assert_eq!(status, 101, "the room is taken over on a live node");
    let new_owner = owner(&redis, herd);
    assert!(nodes.iter().any(|n| n.id == new_owner), "{new_owner}");
    assert_eq!(
        redis.cli(&["HGET", &format!("prism:room:{{{herd}}}"), "epoch"]),
        "2",
        "a new owner, a new epoch"
    );

    // 7. Fencing: an owner stopped past its lease loses the room to another node; when it
    //    runs again it closes its copy, telling its participant to reconnect.
    let fence = "cl-fence";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let host0 = nodes[0]
        .server
        .http
        .trim_start_matches("http://")
        .to_string();
    let (fence_sid, ws) = rt.block_on(raw_join(host0, token(fence, "stale", &[])));
    // Read on, answering pings, until the leave comes.
    let leave = rt.spawn(wait_leave(ws));
    let stale_owner = owner(&redis, fence);
    let x = nodes.iter().position(|n| n.id == stale_owner).unwrap();
    let y = 1 - x;
    let pid = nodes[x].server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    wait_until(
        "the stopped owner's lease to run out",
        Duration::from_secs(15),
        || redis.cli(&["EXISTS", &format!("prism:node:{{{stale_owner}}}")]) == "0",
    );
    let (status, _) = rtc_status(&nodes[y], &token(fence, "fresh", &[]), "");
    let taken = owner(&redis, fence);
    let epoch = redis.cli(&["HGET", &format!("prism:room:{{{fence}}}"), "epoch"]);
    assert!(Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    assert_eq!(
        status, 101,
        "the room is taken over while its owner is stopped"
    );
    assert_eq!(
        (taken.as_str(), epoch.as_str()),
        (nodes[y].id.as_str(), "2")
    );
    let leave = rt.block_on(leave).unwrap();
    assert_eq!(
        leave.action,
        prism_proto::livekit::leave_request::Action::Reconnect as i32,
        "{leave:?}"
    );
    assert!(metric(&nodes[x], "prism_cluster_superseded_rooms_total") >= 1.0);
    assert_eq!(
        owner(&redis, fence),
        nodes[y].id,
        "the new owner keeps the room"
    );

    // 8. Redis away: liveness stays, readiness goes, new rooms get 503 with a reason,
    //    the owner's room still takes joins; Redis back (empty): nodes register again and
    //    the owner writes its room back.
    let port = redis.port;
    let mut redis = redis;
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    wait_until(
        "readiness to drop with Redis",
        Duration::from_secs(20),
        || {
            nodes
                .iter()
                .all(|n| http(&n.server, "GET", "/readyz", None, None).0 == 503)
        },
    );
    for n in &nodes {
        assert_eq!(http(&n.server, "GET", "/healthz", None, None).0, 200);
    }
    let (status, text) = rtc_status(&nodes[x], &token("cl-new-while-down", "n", &[]), "");
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("Redis"), "the 503 says why: {text}");
    let (status, _) = rtc_status(&nodes[y], &token(fence, "during-outage", &[]), "");
    assert_eq!(status, 101, "the owner's room carries on without Redis");
    let back = Redis::start_on(port);
    wait_until(
        "the nodes to register again",
        Duration::from_secs(20),
        || {
            nodes
                .iter()
                .all(|n| http(&n.server, "GET", "/readyz", None, None).0 == 200)
        },
    );
    assert_eq!(back.cli(&["ZCARD", "prism:nodes"]), "2");
    wait_until(
        "the owner to write its room back",
        Duration::from_secs(10),
        || owner(&back, fence) == nodes[y].id,
    );
    assert_eq!(
        back.room_field(fence, "sid"),
        fence_sid,
        "written back with the sid the room kept from its first owner"
    );
    for n in &mut nodes {
        n.server.assert_alive();
    }

    // 9. SIGTERM of an owner: it drains (DRAINING in Redis, `/readyz` 503, its room kept);
    //    a second SIGTERM ends the drain at once: it hands its room and its entry off and
    //    tells its clients to reconnect; a join through the other node takes the room at
    //    once, under the same sid.
    let moving = "cl-move";
    let host0 = nodes[0]
        .server
        .http
        .trim_start_matches("http://")
        .to_string();
    let (sid, ws) = rt.block_on(raw_join(host0, token(moving, "mover", &[])));
    let leave = rt.spawn(wait_leave(ws));
    let z_id = owner(&back, moving);
    let z = nodes.iter().position(|n| n.id == z_id).unwrap();
    let other = 1 - z;
    assert_eq!(
        back.room_field(moving, "sid"),
        sid,
        "the directory has the sid"
    );
    nodes[z].signal("-TERM");
    wait_until("the node to drain", Duration::from_secs(10), || {
        let (status, body) = http(&nodes[z].server, "GET", "/readyz", None, None);
        let entry = back.cli(&["GET", &format!("prism:node:{{{z_id}}}")]);
        status == 503 && body.contains("draining") && entry.contains("\"DRAINING\"")
    });
    assert_eq!(
        owner(&back, moving),
        z_id,
        "a draining node keeps its rooms"
    );
    assert!(!leave.is_finished(), "no leave before the drain ends");
    nodes[z].signal("-TERM");
    let leave = rt.block_on(leave).unwrap();
    assert_eq!(
        leave.action,
        prism_proto::livekit::leave_request::Action::Reconnect as i32,
        "{leave:?}"
    );
    wait_until(
        "the stopping owner to give its room up",
        Duration::from_secs(10),
        || owner(&back, moving).is_empty(),
    );
    assert_eq!(
        back.cli(&["EXISTS", &format!("prism:node:{{{z_id}}}")]),
        "0"
    );
    let (sid_after, _ws) = rt.block_on(raw_join(nodes[other].host(), token(moving, "mover", &[])));
    assert_eq!(
        owner(&back, moving),
        nodes[other].id,
        "the room moves at once"
    );
    assert_eq!(sid_after, sid, "the room keeps its sid on its new owner");
    nodes[z].wait_exit(Duration::from_secs(20));
    nodes[other].server.assert_alive();
}

/// The next LeaveRequest on a joined socket.
async fn wait_leave(
    mut ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) -> prism_proto::livekit::LeaveRequest {
    use futures_util::StreamExt;
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a leave in time")
            .expect("the socket stays open until the leave")
            .expect("a frame");
        if let Message::Binary(b) = m {
            let resp = prism_proto::livekit::SignalResponse::decode(b.as_ref()).unwrap();
            if let Some(prism_proto::livekit::signal_response::Message::Leave(l)) = resp.message {
                return l;
            }
        }
    }
}
