//! LiveKit's own SDK against Prism: `prism serve --dev` as a subprocess, and participants
//! made with LiveKit's Python SDK (PyPI `livekit`, the same Rust core and libwebrtc as the
//! other native SDKs) from `tests/interop/lk_client.py`.
//!
//! What passing proves:
//! - a participant publishes simulcast VP8 and Opus; another decodes the video and receives
//!   the audio; a reliable data message arrives stamped with the sender's identity; a late
//!   joiner decodes video within 2 s of connecting; the publisher's audio level makes it an
//!   active speaker for the others;
//! - refusals reach clients as LiveKit's HTTP statuses (wrong secret, expired token, no
//!   `roomJoin`, no room), a token for another room joins that room only, and grants are
//!   enforced (`canPublish=false` cannot publish, `canSubscribe=false` receives nothing);
//!   with auto-subscribe off, a participant receives what it asks for;
//! - a second session with the same identity replaces the first, which is told why; a
//!   resume attempt is answered with a leave asking for a full reconnect, and the
//!   JoinResponse tells clients not to try (`client_configuration.resume_connection`
//!   `DISABLED`);
//! - malformed protobuf, oversized and text frames, and a socket that never answers pings
//!   each close that session with a reason, while another session carries on;
//! - fifty participants joining and leaving for a minute leave no room, participant,
//!   transport or track behind, and the server's memory does not grow with them.
//!
//! Every subprocess has a timeout. The only timing assertion is the late joiner's 2 s.

mod common;

use std::collections::HashSet;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use prism_proto::livekit as lk;
use prism_signaling::auth::{sign, unix_now, Claims, VideoGrant, DEV_KEY, DEV_SECRET};
use prost::Message as _;
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, Message};

use common::*;

const ROOM: &str = "lk-interop";

fn py() -> Option<std::path::PathBuf> {
    python("livekit.rtc, livekit.api")
}

fn ws_url(server: &Server) -> String {
    server.http.replacen("http://", "ws://", 1)
}

/// An SDK participant (`lk_client.py`) with a token from `prism token create`.
fn participant(
    py: &std::path::Path,
    server: &Server,
    room: &str,
    identity: &str,
    token_args: &[&str],
    args: &[&str],
) -> Client {
    let tok = token(room, identity, token_args);
    participant_with(py, server, identity, &tok, args)
}

fn participant_with(
    py: &std::path::Path,
    server: &Server,
    name: &str,
    tok: &str,
    args: &[&str],
) -> Client {
    let url = ws_url(server);
    let mut all = vec!["--url", &url, "--token", tok];
    all.extend_from_slice(args);
    client(py, name, "lk_client.py", &all)
}

/// The largest per-track count in a summary map such as `video_frames`.
fn most(v: &Value) -> u64 {
    v.as_object()
        .map(|m| m.values().filter_map(Value::as_u64).max().unwrap_or(0))
        .unwrap_or(0)
}

#[test]
fn sdk_participants_publish_subscribe_and_exchange_data() {
    let Some(py) = py() else { return };
    let _one_at_a_time = serial();
    let mut server = Server::start();

    let alice = participant(
        &py,
        &server,
        ROOM,
        "alice",
        &[],
        &[
            "--publish",
            "--send-data",
            "hello from alice",
            "--duration",
            "30",
        ],
    );
    thread::sleep(Duration::from_secs(3));
    let bob = participant(
        &py,
        &server,
        ROOM,
        "bob",
        &[],
        &["--want-frames", "60", "--duration", "20"],
    )
    .finish();
    // Carol arrives while alice has been publishing for a while: her first frame needs a
    // keyframe the server asks alice for.
    let carol = participant(
        &py,
        &server,
        ROOM,
        "carol",
        &[],
        &["--want-frames", "10", "--duration", "10"],
    )
    .finish();
    let alice = alice.finish();

    assert!(alice.ok() && alice.summary["connected"] == true, "{alice}");
    assert_eq!(alice.summary["publish_error"], "", "{alice}");
    assert_eq!(
        alice.summary["published"].as_array().map_or(0, Vec::len),
        2,
        "{alice}"
    );
    assert!(bob.ok() && bob.summary["connected"] == true, "{bob}");
    assert!(most(&bob.summary["video_frames"]) >= 60, "{bob}");
    assert!(most(&bob.summary["audio_frames"]) >= 50, "{bob}");
    let tracks = &bob.summary["remote"]["alice"]["tracks"];
    assert_eq!(
        tracks.as_object().map_or(0, |t| t.len()),
        2,
        "bob sees alice's two tracks: {bob}"
    );
    let data = bob.summary["data"].as_array().cloned().unwrap_or_default();
    assert!(
        data.iter()
            .any(|d| d["from"] == "alice" && d["data"] == "hello from alice"),
        "bob got alice's data message with her identity: {bob}"
    );
    // Alice's tone is loud enough to be speech: the server announced her as a speaker.
    let speakers = bob.summary["speakers_seen"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        speakers.iter().any(|s| s == "alice"),
        "bob never saw alice speaking: {bob}"
    );
    assert!(carol.ok(), "{carol}");
    let (first, connect) = (carol.num("first_frame_s"), carol.num("connect_s"));
    println!("late joiner: connected after {connect:.3} s, first frame after {first:.3} s");
    assert!(first > 0.0, "carol decoded nothing: {carol}");
    assert!(
        first - connect < 2.0,
        "carol's first frame {:.3} s after connecting, want < 2 s: {carol}",
        first - connect
    );
    server.assert_alive();
}

/// A raw WebSocket upgrade to `/rtc`: the HTTP status of the answer (101 on success).
fn upgrade_status(server: &Server, token: Option<&str>) -> (u16, String) {
    let mut url = format!("{}/rtc?protocol=17&sdk=rust", ws_url(server));
    if let Some(t) = token {
        url += &format!("&access_token={t}");
    }
    let host = server.http.trim_start_matches("http://");
    let stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    match tungstenite::client::client(url.into_client_request().unwrap(), stream) {
        Ok((_, resp)) => (resp.status().as_u16(), String::new()),
        Err(tungstenite::handshake::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (resp.status().as_u16(), body)
        }
        Err(e) => panic!("upgrade failed without an HTTP answer: {e}"),
    }
}

fn claims(identity: &str, exp: u64, grant: VideoGrant) -> Claims {
    Claims {
        iss: DEV_KEY.into(),
        sub: identity.into(),
        exp: Some(exp),
        nbf: Some(unix_now() - 10),
        video: Some(grant),
        ..Default::default()
    }
}

#[test]
fn refusals_and_grants() {
    let Some(py) = py() else { return };
    let _one_at_a_time = serial();
    let mut server = Server::start();
    let join = |room: &str| VideoGrant {
        room_join: true,
        room: room.into(),
        ..Default::default()
    };
    let later = unix_now() + 600;
    let cases: Vec<(&str, Option<String>, u16)> = vec![
        ("no token", None, 401),
        (
            "wrong secret",
            Some(sign(&claims("eve", later, join(ROOM)), "not-the-secret")),
            401,
        ),
        (
            "expired",
            Some(sign(
                &claims("eve", unix_now() - 120, join(ROOM)),
                DEV_SECRET,
            )),
            401,
        ),
        (
            "no roomJoin",
            Some(sign(
                &claims(
                    "eve",
                    later,
                    VideoGrant {
                        room: ROOM.into(),
                        ..Default::default()
                    },
                ),
                DEV_SECRET,
            )),
            401,
        ),
        (
            "no room",
            Some(sign(&claims("eve", later, join("")), DEV_SECRET)),
            400,
        ),
        (
            "no identity",
            Some(sign(&claims("", later, join(ROOM)), DEV_SECRET)),
            400,
        ),
        (
            "valid",
            Some(sign(&claims("ok", later, join(ROOM)), DEV_SECRET)),
            101,
        ),
    ];
    for (what, tok, want) in cases {
        let (status, body) = upgrade_status(&server, tok.as_deref());
        println!("/rtc with {what}: {status} {body}");
        assert_eq!(status, want, "/rtc with {what}: {status} {body}");
    }

    // The SDK itself reports a refused token as a failed connect.
    let wrong = sign(&claims("mallory", later, join(ROOM)), "not-the-secret");
    let mallory = participant_with(&py, &server, "mallory", &wrong, &["--duration", "3"]).finish();
    assert!(mallory.ok(), "{mallory}");
    assert_eq!(mallory.summary["connected"], false, "{mallory}");

    // Grants: alice publishes; dave may not subscribe, eve may not publish, frank's token is
    // for another room.
    let alice = participant(
        &py,
        &server,
        ROOM,
        "alice",
        &[],
        &["--publish", "--duration", "25"],
    );
    thread::sleep(Duration::from_secs(3));
    let dave = participant(
        &py,
        &server,
        ROOM,
        "dave",
        &["--no-subscribe"],
        &["--duration", "8"],
    );
    let eve = participant(
        &py,
        &server,
        ROOM,
        "eve",
        &["--no-publish"],
        &["--publish", "--duration", "14"],
    );
    let frank = participant(
        &py,
        &server,
        "elsewhere",
        "frank",
        &[],
        &["--duration", "6"],
    );
    // Gina subscribes by request (auto_subscribe off): UpdateSubscription.
    let gina = participant(
        &py,
        &server,
        ROOM,
        "gina",
        &[],
        &[
            "--manual-subscribe",
            "--want-frames",
            "30",
            "--duration",
            "14",
        ],
    );
    let (dave, eve, frank, gina) = (dave.finish(), eve.finish(), frank.finish(), gina.finish());
    let bob = participant(
        &py,
        &server,
        ROOM,
        "bob",
        &[],
        &["--want-frames", "30", "--duration", "10"],
    )
    .finish();
    let alice = alice.finish();

    assert!(
        alice.ok() && alice.summary["publish_error"] == "",
        "{alice}"
    );
    assert!(dave.ok() && dave.summary["connected"] == true, "{dave}");
    assert_eq!(most(&dave.summary["video_frames"]), 0, "{dave}");
    assert_eq!(most(&dave.summary["audio_frames"]), 0, "{dave}");
    assert!(
        dave.summary["remote"]["alice"].is_object(),
        "dave still sees alice: {dave}"
    );
    assert!(eve.ok() && eve.summary["connected"] == true, "{eve}");
    assert_ne!(
        eve.summary["publish_error"], "",
        "eve published without canPublish: {eve}"
    );
    assert!(frank.ok() && frank.summary["connected"] == true, "{frank}");
    assert_eq!(
        frank.summary["remote"].as_object().map_or(1, |r| r.len()),
        0,
        "frank's room is another room: {frank}"
    );
    assert!(most(&bob.summary["video_frames"]) >= 30, "{bob}");
    assert!(gina.ok(), "{gina}");
    assert!(
        most(&gina.summary["video_frames"]) >= 30,
        "manual subscription brought no video: {gina}"
    );
    let eve_tracks = bob.summary["remote"]["eve"]["tracks"]
        .as_object()
        .map_or(0, |t| t.len());
    assert_eq!(
        eve_tracks, 0,
        "eve's refused tracks are not in the room: {bob}"
    );
    server.assert_alive();
}

/// A raw signaling session: upgraded, its JoinResponse read.
struct RawSession {
    ws: tungstenite::WebSocket<TcpStream>,
    sid: String,
    join: lk::JoinResponse,
}

impl RawSession {
    fn open(server: &Server, identity: &str) -> RawSession {
        Self::open_in(server, ROOM, identity)
    }

    fn open_in(server: &Server, room: &str, identity: &str) -> RawSession {
        Self::open_with(server, identity, &token(room, identity, &[]))
    }

    fn open_with(server: &Server, identity: &str, tok: &str) -> RawSession {
        let url = format!(
            "{}/rtc?protocol=17&sdk=rust&access_token={tok}",
            ws_url(server)
        );
        let stream = TcpStream::connect(server.http.trim_start_matches("http://")).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let (mut ws, resp) =
            tungstenite::client::client(url.into_client_request().unwrap(), stream)
                .unwrap_or_else(|e| panic!("{identity}: upgrade failed: {e}"));
        assert_eq!(resp.status().as_u16(), 101);
        let first = match ws.read().expect("first message") {
            Message::Binary(b) => lk::SignalResponse::decode(b.as_ref()).expect("protobuf"),
            other => panic!("{identity}: first message {other:?}"),
        };
        let Some(lk::signal_response::Message::Join(j)) = first.message else {
            panic!("{identity}: the first message is not a JoinResponse: {first:?}");
        };
        let sid = j.participant.as_ref().expect("participant").sid.clone();
        assert!(sid.starts_with("PA_"), "{sid}");
        RawSession { ws, sid, join: j }
    }

    fn send(&mut self, m: Message) {
        self.ws.send(m).expect("send");
    }

    /// Reads until the server closes; the close code and reason.
    fn close_frame(&mut self) -> (u16, String) {
        loop {
            match self.ws.read() {
                Ok(Message::Close(Some(f))) => return (u16::from(f.code), f.reason.to_string()),
                Ok(Message::Close(None)) => return (0, String::new()),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    panic!("{}: no close within the read timeout", self.sid)
                }
                Err(e) => return (0, format!("error: {e}")),
            }
        }
    }

    /// Sends a ping_req and waits for its pong_resp, skipping other messages. Returns the
    /// participant updates seen meanwhile.
    fn ping(&mut self, ts: i64) -> Vec<lk::ParticipantInfo> {
        let req = lk::SignalRequest {
            message: Some(lk::signal_request::Message::PingReq(lk::Ping {
                timestamp: ts,
                rtt: 0,
            })),
        };
        self.send(Message::Binary(req.encode_to_vec().into()));
        let mut seen = Vec::new();
        loop {
            let m = self.ws.read().expect("pong");
            let Message::Binary(b) = m else { continue };
            let r = lk::SignalResponse::decode(b.as_ref()).expect("protobuf");
            match r.message {
                Some(lk::signal_response::Message::PongResp(p)) => {
                    assert_eq!(p.last_ping_timestamp, ts);
                    return seen;
                }
                Some(lk::signal_response::Message::Update(u)) => seen.extend(u.participants),
                _ => {}
            }
        }
    }
}

#[test]
fn bad_frames_and_silent_sockets_close_only_their_session() {
    let _one_at_a_time = serial();
    let mut server = Server::start();
    let mut good = RawSession::open(&server, "good");

    let mut garbage = RawSession::open(&server, "garbage");
    garbage.send(Message::Binary(vec![0xff, 0xff, 0xff, 0xff, 0x0f].into()));
    let (code, reason) = garbage.close_frame();
    println!("garbage: closed {code} {reason:?}");
    assert_eq!(code, 1007, "{reason}");
    assert!(reason.contains("malformed"), "{reason}");

    let mut huge = RawSession::open(&server, "huge");
    // The server may close before the whole frame is written.
    let _ = huge.ws.send(Message::Binary(vec![0u8; 512 * 1024].into()));
    let (code, reason) = huge.close_frame();
    println!("huge: closed {code} {reason:?}");
    assert!(
        code == 1009 || reason.starts_with("error"),
        "{code} {reason}"
    );

    let mut text = RawSession::open(&server, "text");
    text.send(Message::Text("{\"ping\": 1}".into()));
    let (code, reason) = text.close_frame();
    println!("text: closed {code} {reason:?}");
    assert_eq!(code, 1003, "{reason}");

    // Never reading means never answering the server's pings (tungstenite answers them on
    // read) and never sending anything.
    let mut silent = RawSession::open(&server, "silent");
    let went_silent = Instant::now();
    let mut gone = Vec::new();
    for i in 0..20 {
        gone.extend(
            good.ping(i)
                .into_iter()
                .filter(|p| p.state == lk::participant_info::State::Disconnected as i32)
                .map(|p| p.identity),
        );
        if went_silent.elapsed() > Duration::from_secs(18) {
            break;
        }
        thread::sleep(Duration::from_secs(1));
    }
    // Read the raw bytes: tungstenite would first try to answer the queued pings on a
    // socket the server has closed.
    let mut raw = Vec::new();
    let _ = std::io::Read::read_to_end(silent.ws.get_mut(), &mut raw);
    println!(
        "silent: {} bytes before the close, {:.1} s after going silent",
        raw.len(),
        went_silent.elapsed().as_secs_f64()
    );
    assert!(
        raw.windows(12).any(|w| w == b"ping timeout"),
        "no close frame with the reason: {raw:?}"
    );
    gone.extend(
        good.ping(99)
            .into_iter()
            .filter(|p| p.state == lk::participant_info::State::Disconnected as i32)
            .map(|p| p.identity),
    );
    for who in ["garbage", "huge", "text", "silent"] {
        assert!(
            gone.iter().any(|g| g == who),
            "good never saw {who} leave: {gone:?}"
        );
    }
    // The good session is still served.
    let _ = good.ping(100);
    server.assert_alive();
}

/// The next signaling response on a raw session, skipping pings.
fn next_response(ws: &mut tungstenite::WebSocket<TcpStream>) -> Option<lk::SignalResponse> {
    loop {
        match ws.read() {
            Ok(Message::Binary(b)) => return lk::SignalResponse::decode(b.as_ref()).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Reads participant updates until `known` (sids of the others present, as this session
/// sees them) equals `want`; panics naming what is missing if that takes a minute.
fn learn_until(sess: &mut RawSession, known: &mut HashSet<String>, want: &HashSet<String>) {
    // The server's WebSocket pings wake the read, so the deadline is looked at often.
    let deadline = Instant::now() + Duration::from_secs(60);
    while known != want {
        let read = sess.ws.read();
        if Instant::now() > deadline || !matches!(read, Ok(Message::Binary(_) | Message::Ping(_))) {
            let missing: Vec<_> = want.difference(known).collect();
            let extra: Vec<_> = known.difference(want).collect();
            panic!(
                "{}: never heard of {missing:?}, still sees {extra:?} (last read: {read:?})",
                sess.sid
            );
        }
        let Ok(Message::Binary(b)) = read else {
            continue;
        };
        let r = lk::SignalResponse::decode(b.as_ref()).expect("protobuf");
        if let Some(lk::signal_response::Message::Update(u)) = r.message {
            for p in u.participants.iter().filter(|p| p.sid != sess.sid) {
                if p.state == lk::participant_info::State::Disconnected as i32 {
                    known.remove(&p.sid);
                } else {
                    known.insert(p.sid.clone());
                }
            }
        }
    }
}

/// Sessions joining one room at the same moment (the room announces joins in batches, and
/// a newcomer only what came after its own JoinResponse): each learns of every other, from
/// its JoinResponse and the updates after it, and of a departure.
#[test]
fn sessions_joining_at_once_each_learn_of_every_other() {
    let _one_at_a_time = serial();
    let server = Server::start();
    const N: usize = 40;
    // Tokens first: minting one runs a child process, whose exit signal could interrupt
    // the others' blocking handshakes.
    let tokens: Vec<(String, String)> = (0..N)
        .map(|i| {
            let id = format!("burst-{i}");
            let tok = token("burst", &id, &[]);
            (id, tok)
        })
        .collect();
    let mut sessions: Vec<RawSession> = thread::scope(|s| {
        let joins: Vec<_> = tokens
            .iter()
            .map(|(id, tok)| {
                let server = &server;
                s.spawn(move || RawSession::open_with(server, id, tok))
            })
            .collect();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    });
    let all: HashSet<String> = sessions.iter().map(|s| s.sid.clone()).collect();
    let mut views: Vec<HashSet<String>> = sessions
        .iter()
        .map(|s| {
            s.join
                .other_participants
                .iter()
                .map(|p| p.sid.clone())
                .collect()
        })
        .collect();
    thread::scope(|s| {
        for (sess, known) in sessions.iter_mut().zip(views.iter_mut()) {
            let mut want = all.clone();
            want.remove(&sess.sid);
            s.spawn(move || learn_until(sess, known, &want));
        }
    });
    // The first leaves; every other session hears it.
    let mut first = sessions.remove(0);
    let leave = lk::SignalRequest {
        message: Some(lk::signal_request::Message::Leave(
            lk::LeaveRequest::default(),
        )),
    };
    first.send(Message::Binary(leave.encode_to_vec().into()));
    thread::scope(|s| {
        for (sess, known) in sessions.iter_mut().zip(views.iter_mut().skip(1)) {
            let mut want = all.clone();
            want.remove(&sess.sid);
            want.remove(&first.sid);
            s.spawn(move || learn_until(sess, known, &want));
        }
    });
}

#[test]
fn duplicate_identity_replaces_the_first_session_and_resume_means_rejoin() {
    let _one_at_a_time = serial();
    let mut server = Server::start();
    let mut first = RawSession::open(&server, "twin");
    let mut watcher = RawSession::open(&server, "watcher");
    let second = RawSession::open(&server, "twin");
    // The first session is told why it has to go, then closed.
    let mut leave = None;
    while let Some(r) = next_response(&mut first.ws) {
        if let Some(lk::signal_response::Message::Leave(l)) = r.message {
            leave = Some(l);
        }
    }
    let leave = leave.expect("the replaced session got no leave");
    assert_eq!(
        leave.reason,
        lk::DisconnectReason::DuplicateIdentity as i32,
        "{leave:?}"
    );
    // The protocol orders a room's messages to a session, but a pong is the session's own
    // answer and may overtake them: wait for the updates themselves (the read timeout
    // bounds the wait).
    let mut seen: Vec<lk::ParticipantInfo> = Vec::new();
    let saw_leave = |seen: &[lk::ParticipantInfo]| {
        seen.iter().any(|p| {
            p.sid == first.sid && p.state == lk::participant_info::State::Disconnected as i32
        })
    };
    let saw_join = |seen: &[lk::ParticipantInfo]| seen.iter().any(|p| p.sid == second.sid);
    while !(saw_leave(&seen) && saw_join(&seen)) {
        match next_response(&mut watcher.ws) {
            Some(lk::SignalResponse {
                message: Some(lk::signal_response::Message::Update(u)),
            }) => seen.extend(u.participants),
            Some(_) => {}
            None => break,
        }
    }
    assert!(
        saw_leave(&seen),
        "the watcher saw the first twin leave: {seen:?}"
    );
    assert!(
        saw_join(&seen),
        "the watcher saw the second twin join: {seen:?}"
    );

    // A resume attempt (reconnect=1) gets a leave asking for a full reconnect, first thing.
    let tok = token(ROOM, "resumer", &[]);
    let url = format!(
        "{}/rtc?protocol=17&sdk=js&reconnect=1&sid=PA_old&access_token={tok}",
        ws_url(&server)
    );
    let stream = TcpStream::connect(server.http.trim_start_matches("http://")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut ws, _) = tungstenite::client::client(url.into_client_request().unwrap(), stream)
        .expect("resume upgrade");
    let r = next_response(&mut ws).expect("a first message");
    let Some(lk::signal_response::Message::Leave(l)) = r.message else {
        panic!("the answer to a resume is not a leave: {r:?}");
    };
    assert_eq!(
        l.action,
        lk::leave_request::Action::Reconnect as i32,
        "{l:?}"
    );
    server.assert_alive();
}

#[test]
fn join_response_tells_clients_not_to_resume() {
    let _one_at_a_time = serial();
    let mut server = Server::start();
    let mut sess = RawSession::open(&server, "configured");
    // Prism keeps no session state to resume: the client is told to rejoin instead
    // (ClientConfiguration.resume_connection = DISABLED), before it ever tries.
    let config = sess.join.client_configuration;
    assert_eq!(
        config.as_ref().map(|c| c.resume_connection),
        Some(lk::ClientConfigSetting::Disabled as i32),
        "JoinResponse.client_configuration: {config:?}"
    );
    let _ = sess.ping(1);
    server.assert_alive();
}

/// Sends a publisher offer on a raw session and returns the answer's SDP.
fn offer_and_answer(sess: &mut RawSession, sdp: &str, id: u32) -> String {
    let req = lk::SignalRequest {
        message: Some(lk::signal_request::Message::Offer(lk::SessionDescription {
            r#type: "offer".into(),
            sdp: sdp.into(),
            id,
            ..Default::default()
        })),
    };
    sess.send(Message::Binary(req.encode_to_vec().into()));
    loop {
        let r = next_response(&mut sess.ws).expect("an answer");
        if let Some(lk::signal_response::Message::Answer(a)) = r.message {
            assert_eq!(a.id, id, "the answer echoes the offer id");
            return a.sdp;
        }
    }
}

fn ice_ufrag(sdp: &str) -> String {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .expect("an ice-ufrag")
        .trim()
        .to_string()
}

#[test]
fn publisher_reoffer_with_new_ice_credentials_restarts_ice() {
    let _one_at_a_time = serial();
    let mut server = Server::start();
    let mut sess = RawSession::open(&server, "mover");
    let offer = include_str!("fixtures/aiortc_offer.sdp");
    let first = offer_and_answer(&mut sess, offer, 1);
    // The same session renegotiated: same credentials, same answer credentials.
    let again = offer_and_answer(&mut sess, offer, 2);
    assert_eq!(ice_ufrag(&first), ice_ufrag(&again));
    // New client credentials (the JS SDK's restartICE): Prism answers with new ones too.
    let restarted = offer
        .replace("a=ice-ufrag:nYxO", "a=ice-ufrag:Zq9K")
        .replace(
            "a=ice-pwd:VculIayymT7Yd4In0b66Uv",
            "a=ice-pwd:Pl0mZ3xJvB8wq2Rr6Tt4Yy",
        );
    let after = offer_and_answer(&mut sess, &restarted, 3);
    assert_ne!(
        ice_ufrag(&first),
        ice_ufrag(&after),
        "an ICE restart must change the server's credentials too"
    );
    // The session is still served.
    let _ = sess.ping(7);
    server.assert_alive();
}

/// A metric's value from `/metrics` (no labels).
fn metric(server: &Server, name: &str) -> f64 {
    let (status, body) = http_get(server, "/metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
}

fn http_get(server: &Server, path: &str) -> (u16, String) {
    let (status, resp) = http(server, "GET", path, None, None);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn wait_for(server: &Server, name: &str, want: f64, within: Duration) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let v = metric(server, name);
        if v == want || Instant::now() > deadline {
            return v;
        }
        thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn fifty_participants_churn_for_a_minute_without_leaks() {
    let Some(py) = py() else { return };
    let _one_at_a_time = serial();
    let mut server = Server::start();
    let url = ws_url(&server);
    let pid = server.child.id();

    // A short round first, so that the pools and caches a first join fills are warm.
    let warm = client(
        &py,
        "warm-up",
        "lk_churn.py",
        &["--url", &url, "--participants", "50", "--seconds", "3"],
    )
    .finish();
    assert!(warm.ok(), "{warm}");
    wait_for(
        &server,
        "prism_livekit_participants",
        0.0,
        Duration::from_secs(15),
    );
    let before = rss_kib(pid);

    let churn = client(
        &py,
        "churn",
        "lk_churn.py",
        &["--url", &url, "--participants", "50", "--seconds", "60"],
    );
    let churn = churn.timeout(Duration::from_secs(150)).finish();
    assert!(churn.ok(), "{churn}");
    let (rounds, joins, failures) = (
        churn.num("rounds"),
        churn.num("joins"),
        churn.num("failures"),
    );
    println!("churn: {rounds} rounds, {joins} joins, {failures} failures");
    // A round takes 5 to 15 s depending on the machine's load.
    assert!(rounds >= 3.0 && joins >= 150.0, "{churn}");
    assert_eq!(failures, 0.0, "{churn}");

    for name in [
        "prism_livekit_participants",
        "prism_livekit_transports",
        "prism_livekit_tracks",
        "prism_media_transports",
    ] {
        let v = wait_for(&server, name, 0.0, Duration::from_secs(15));
        assert_eq!(v, 0.0, "{name} stayed at {v} after everyone left");
    }
    // The room closes after its departure timeout (20 s).
    let rooms = wait_for(&server, "prism_livekit_rooms", 0.0, Duration::from_secs(40));
    assert_eq!(rooms, 0.0, "the churn room was not closed");
    let after = rss_kib(pid);
    println!(
        "server RSS: {} MiB after warm-up, {} MiB after {joins} joins",
        before / 1024,
        after / 1024
    );
    assert!(
        after < before + 48 * 1024,
        "server RSS grew from {before} KiB to {after} KiB over the churn"
    );
    server.assert_alive();
}
