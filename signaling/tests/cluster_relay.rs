//! A room spanning two nodes (docs/cluster.md, "Rooms spanning nodes"): a real
//! `redis-server`, two `prism serve` nodes, LiveKit's Python SDK as clients.
//!
//! The publisher joins through node A, its subscribers through node B: their media
//! terminates on B, and B's forwarder gets the publisher's tracks from A over a relay.
//! Node B is configured to receive relayed media on 127.0.0.2, where the test runs a UDP
//! relay of its own in front of B's media port: it sees every relayed packet (counted,
//! SSRCs in the clear under SRTP) and drops 5 % of them when asked. Shown:
//!
//! 1. The subscribers on B decode the publisher on A; the relay carries the tracks.
//! 2. What crosses the relay toward B is the same with one and with five subscribers on
//!    B (one copy per layer, not per subscriber): packet rates within a factor, the same
//!    streams.
//! 3. A late joiner on B decodes promptly: its keyframe request crossed the relay.
//! 4. With 5 % of the relayed packets dropped, the subscribers' loss stays ≈ 0 (B asks A
//!    again, across the relay, for what was lost).
//! 5. The media link refuses a request without the cluster's signature.
//! 6. Layers nobody on B wants do not cross: when every subscriber there asks for the
//!    lowest layer, only it (and the audio) is relayed; one asking for the top layer again
//!    brings the others back.
//! 7. `kill -9` of the node that is not the room's owner (a media node): the owner drops
//!    the participants whose media was there (and the relay), the others stay.

mod common;

use std::collections::HashSet;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::cluster::{wait_until, Redis};
use common::*;

const WAIT: Duration = Duration::from_secs(60);

/// The relay link into node B, as the test sees it.
#[derive(Default)]
struct Link {
    rtp: AtomicU64,
    dropped: AtomicU64,
    lossy: AtomicBool,
    ssrcs: Mutex<HashSet<u32>>,
}

/// A UDP relay on `listen` that forwards every datagram to `to`, counting RTP and
/// dropping every 20th RTP datagram while `lossy` is set.
fn relay(listen: &str, to: &str) -> Arc<Link> {
    let sock = UdpSocket::bind(listen).expect("bind the test's relay on 127.0.0.2");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let to: std::net::SocketAddr = to.parse().unwrap();
    let link = Arc::new(Link::default());
    let l = link.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        loop {
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                if Arc::strong_count(&l) == 1 {
                    return;
                }
                continue;
            };
            let d = &buf[..n];
            let rtp = n >= 12 && d[0] >> 6 == 2 && !(192..=223).contains(&d[1]);
            if rtp {
                let k = l.rtp.fetch_add(1, Ordering::Relaxed);
                l.ssrcs
                    .lock()
                    .unwrap()
                    .insert(u32::from_be_bytes([d[8], d[9], d[10], d[11]]));
                if l.lossy.load(Ordering::Relaxed) && k % 20 == 0 {
                    l.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            let _ = sock.send_to(d, to);
        }
    });
    link
}

/// Relayed RTP packets per second over `window`, and the streams seen meanwhile.
fn rate(link: &Link, window: Duration) -> (f64, HashSet<u32>) {
    link.ssrcs.lock().unwrap().clear();
    let n0 = link.rtp.load(Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(window);
    let n = link.rtp.load(Ordering::Relaxed) - n0;
    let ssrcs = link.ssrcs.lock().unwrap().clone();
    (n as f64 / t0.elapsed().as_secs_f64(), ssrcs)
}

/// A watcher's subscriber-side counts of video packets: (received, lost).
fn video_counts(w: &mut Client) -> (f64, f64) {
    w.tell("stats");
    let s: Value = w.expect_event("stats", WAIT);
    (
        s["video"]["received"].as_f64().unwrap_or(0.0),
        s["video"]["lost"].as_f64().unwrap_or(0.0),
    )
}

#[test]
fn a_room_spans_two_nodes_over_a_relay() {
    let _g = serial();
    let Some(py) = python("livekit.rtc, livekit.api") else {
        return;
    };
    let redis = Redis::start();
    let redis_addr = redis.addr();
    let a = Server::start_with(&["--redis-host", &redis_addr]);
    let b_port = free_udp_port();
    let cfg = std::env::temp_dir().join(format!("prism-relay-{}.yaml", std::process::id()));
    std::fs::write(&cfg, "cluster:\n  relay_ip: 127.0.0.2\n").unwrap();
    let b = Server::start_with(&[
        "--redis-host",
        &redis_addr,
        "--udp-port",
        &b_port.to_string(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let link = relay(
        &format!("127.0.0.2:{b_port}"),
        &format!("127.0.0.1:{b_port}"),
    );
    wait_until("both nodes ready", WAIT, || {
        [&a, &b]
            .iter()
            .all(|n| http(n, "GET", "/readyz", None, None).0 == 200)
    });

    // 5. The media link is node-to-node only.
    let (status, _) = http(&b, "GET", "/cluster/media", None, None);
    assert_eq!(status, 403, "an unsigned media link request");

    // 1. A publisher through A, a subscriber through B.
    let room = "spanning";
    let mut publisher = lk_publisher(
        &py,
        &a,
        room,
        "pub",
        "40,160,60",
        &["--simulcast", "--size", "960x540"],
    );
    publisher.expect_event("published", WAIT);
    let watch_args = [
        "--expect",
        "pub",
        "--video-frames",
        "30",
        "--audio-frames",
        "20",
        "--until",
        "told",
    ];
    let mut watchers = vec![lk_watch(&py, &b, room, "sub-0", &watch_args)];
    watchers[0].expect_event("frames", WAIT);
    assert!(
        link.rtp.load(Ordering::Relaxed) > 100,
        "the publisher's media crossed the relay into B"
    );

    // 2. Relay egress with one subscriber on B, then with five.
    let (one, streams_one) = rate(&link, Duration::from_secs(4));
    for i in 1..5 {
        watchers.push(lk_watch(&py, &b, room, &format!("sub-{i}"), &watch_args));
    }
    for w in &mut watchers[1..] {
        w.expect_event("frames", WAIT);
    }
    let (five, streams_five) = rate(&link, Duration::from_secs(4));
    eprintln!(
        "relay into B: {one:.0} pkt/s with 1 subscriber ({} streams), {five:.0} pkt/s with 5 ({} streams)",
        streams_one.len(),
        streams_five.len()
    );
    assert!(
        streams_one.len() >= 2,
        "audio and video relayed: {streams_one:?}"
    );
    assert_eq!(
        streams_one, streams_five,
        "the same streams cross for 1 and 5 subscribers"
    );
    let ratio = five / one;
    assert!(
        (0.6..1.6).contains(&ratio),
        "relay egress with 5 subscribers is {ratio:.2}x that with 1 (one copy per node expected)"
    );

    // 3. A late joiner on B: from its video subscription to its first decoded frame.
    let mut late = lk_watch(
        &py,
        &b,
        room,
        "late",
        &[
            "--expect",
            "pub",
            "--video-frames",
            "1",
            "--audio-frames",
            "1",
            "--until",
            "told",
        ],
    );
    let subscribed = late.wait_event_where("track_subscribed", WAIT, |v| v["kind"] == "video");
    let frames = late.expect_event("frames", WAIT);
    let first_frame_s =
        frames["at_s"].as_f64().unwrap() - subscribed.map_or(0.0, |v| v["at_s"].as_f64().unwrap());
    eprintln!("late joiner on B: first video frame {first_frame_s:.3} s after its subscription");
    assert!(
        first_frame_s < 2.0,
        "the late joiner waited {first_frame_s:.2} s for a keyframe"
    );
    late.tell("stop");
    assert!(late.finish().ok());

    // 4. 5 % loss on the relay link: the subscribers on B lose ≈ nothing.
    let before: Vec<(f64, f64)> = watchers.iter_mut().map(video_counts).collect();
    let dropped0 = link.dropped.load(Ordering::Relaxed);
    link.lossy.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(8));
    link.lossy.store(false, Ordering::Relaxed);
    // What was lost at the end of the window is repaired a round trip later.
    std::thread::sleep(Duration::from_secs(1));
    let dropped = link.dropped.load(Ordering::Relaxed) - dropped0;
    let after: Vec<(f64, f64)> = watchers.iter_mut().map(video_counts).collect();
    let (received, lost) = before
        .iter()
        .zip(&after)
        .fold((0.0, 0.0), |(r, l), (b, a)| (r + a.0 - b.0, l + a.1 - b.1));
    eprintln!(
        "5% loss on the relay: {dropped} relayed packets dropped; subscribers received {received} video packets, lost {lost}"
    );
    assert!(dropped > 50, "the relay link lost {dropped} packets");
    assert!(
        received > 1000.0,
        "the subscribers kept receiving: {received}"
    );
    assert!(
        lost <= received * 0.002,
        "subscribers lost {lost} of {received} video packets behind a 5% lossy relay"
    );

    // 6. Only the layers wanted on B cross.
    for w in &mut watchers {
        w.tell("quality LOW");
        w.expect_event("quality", WAIT);
    }
    let mut streams = streams_five.len();
    wait_until("only the lowest layer relayed", WAIT, || {
        streams = rate(&link, Duration::from_secs(2)).1.len();
        streams == 2
    });
    watchers[0].tell("quality HIGH");
    wait_until("every layer relayed again", WAIT, || {
        streams = rate(&link, Duration::from_secs(2)).1.len();
        streams == streams_five.len()
    });

    // 7. The media node dies.
    let node_id = |s: &Server| {
        s.log_text()
            .lines()
            .find_map(|l| l.strip_prefix("prism: cluster node "))
            .and_then(|l| l.split_whitespace().next())
            .expect("the node printed its id")
            .to_string()
    };
    let owner_id = redis.room_field(room, "owner");
    let subs: Vec<String> = (0..5).map(|i| format!("\"sub-{i}\"")).collect();
    let (mut media, owner, gone, stay) = if owner_id == node_id(&a) {
        (b, a, subs, vec!["\"pub\"".to_string()])
    } else {
        assert_eq!(owner_id, node_id(&b), "one of the two owns the room");
        (a, b, vec!["\"pub\"".to_string()], subs)
    };
    let _ = media.child.kill();
    let _ = media.child.wait();
    wait_until(
        "the owner dropped the dead node's participants",
        WAIT,
        || {
            let (_, state) = http(&owner, "GET", "/api/state", None, None);
            gone.iter().all(|g| !state.contains(g.as_str()))
        },
    );
    if stay.len() == 1 {
        let (_, state) = http(&owner, "GET", "/api/state", None, None);
        assert!(
            state.contains(stay[0].as_str()),
            "the publisher stays: {state}"
        );
    }
    assert!(
        owner.log_text().contains("relay between sites closed"),
        "the owner dropped the relay"
    );
    drop(watchers);
    drop(publisher);
    drop(link);
    let _ = std::fs::remove_file(&cfg);
}
