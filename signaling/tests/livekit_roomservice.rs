//! LiveKit's server API (RoomService over Twirp) against Prism: `prism serve --dev` as a
//! subprocess, LiveKit's own server SDK client (PyPI `livekit-api`) from
//! `tests/interop/lk_roomservice.py`, and SDK participants from `lk_client.py`.
//!
//! What passing proves:
//! - with a publisher and a viewer in a room, RoomService lists the room and both
//!   participants (with the published tracks), updates room and participant metadata (the
//!   viewer is told), mutes the published video (the viewer sees it muted, and the
//!   publisher's own SDK reports it muted: it got `SignalResponse.mute`), refuses a remote
//!   unmute, sends the viewer a data message from the server, removes the viewer (its SDK
//!   reports `PARTICIPANT_REMOVED`), creates and deletes rooms (the publisher is
//!   disconnected with `ROOM_DELETED`), and answers `not_found` for what does not exist;
//! - refusals are Twirp JSON errors with Twirp's statuses: no or bad token (401), a token
//!   without the method's grant or for another room (401, as LiveKit answers), malformed bodies (400), unknown
//!   methods, verbs and content types (404 bad_route);
//! - JSON bodies work as Node's SDK and curl send them (lowerCamelCase or proto names,
//!   `;charset` parameter), and answers come back as protobuf JSON with proto names;
//! - SIGTERM makes the server tell a connected SDK participant to leave
//!   (`SERVER_SHUTDOWN`) before it exits, and exit cleanly.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use prism_proto::livekit as lk;
use prism_signaling::auth::{sign, unix_now, Claims, VideoGrant, DEV_KEY, DEV_SECRET};
use prost::Message as _;
use serde_json::Value;

use common::*;

fn py() -> Option<std::path::PathBuf> {
    python("livekit.rtc, livekit.api")
}

fn ws_url(server: &Server) -> String {
    server.http.replacen("http://", "ws://", 1)
}

/// An API token with `grant` (no identity, as the server SDKs mint them).
fn api_token(grant: VideoGrant) -> String {
    let now = unix_now();
    sign(
        &Claims {
            iss: DEV_KEY.into(),
            nbf: Some(now),
            exp: Some(now + 600),
            video: Some(grant),
            ..Default::default()
        },
        DEV_SECRET,
    )
}

fn admin(room: &str) -> String {
    api_token(VideoGrant {
        room_admin: true,
        room: room.into(),
        ..Default::default()
    })
}

/// The answer to one HTTP request: status, headers (lowercase names) and body.
struct Answer {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts a Twirp error with this status and code.
    fn twirp_error(&self, status: u16, code: &str) -> String {
        let v = self.json();
        assert_eq!(
            (self.status, v["code"].as_str().unwrap_or("")),
            (status, code),
            "{v}"
        );
        assert!(
            self.headers.contains("content-type: application/json"),
            "{}",
            self.headers
        );
        v["msg"].as_str().unwrap_or("").to_string()
    }
}

/// A raw HTTP/1.1 request, as curl would send it.
fn request(
    server: &Server,
    verb: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let host = server.http.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).expect("connecting to prism");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{verb} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += &format!("Content-Length: {}\r\n\r\n", body.len());
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&resp)));
    let head = String::from_utf8_lossy(&resp[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    Answer {
        status,
        headers: head,
        body: resp[split + 4..].to_vec(),
    }
}

const JSON: &str = "application/json;charset=UTF-8";
const PROTOBUF: &str = "application/protobuf";

/// `POST /twirp/livekit.RoomService/{method}`.
fn call(server: &Server, method: &str, token: Option<&str>, ctype: &str, body: &[u8]) -> Answer {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", ctype)];
    if let Some(b) = &bearer {
        // Python's SDK writes the header name in lowercase.
        headers.push(("authorization", b));
    }
    request(
        server,
        "POST",
        &format!("/twirp/livekit.RoomService/{method}"),
        &headers,
        body,
    )
}

#[test]
fn room_service_manages_sdk_participants() {
    let _g = serial();
    let Some(py) = py() else { return };
    let server = Server::start();
    let room = "rs-room";
    let url = ws_url(&server);
    let stop = std::env::temp_dir().join(format!("prism-rs-stop-{}", std::process::id()));
    let _ = std::fs::remove_file(&stop);
    let stop_s = stop.to_string_lossy().to_string();
    let pub_tok = token(room, "pub", &[]);
    let view_tok = token(room, "viewer", &[]);
    let publisher = client(
        &py,
        "publisher",
        "lk_client.py",
        &[
            "--url",
            &url,
            "--token",
            &pub_tok,
            "--publish",
            "--duration",
            "50",
            "--stop-file",
            &stop_s,
        ],
    );
    let viewer = client(
        &py,
        "viewer",
        "lk_client.py",
        &[
            "--url",
            &url,
            "--token",
            &view_tok,
            "--duration",
            "50",
            "--stop-file",
            &stop_s,
        ],
    );
    let api = client(
        &py,
        "roomservice",
        "lk_roomservice.py",
        &[
            "--url",
            &server.http,
            "--room",
            room,
            "--publisher",
            "pub",
            "--viewer",
            "viewer",
        ],
    )
    .finish();
    // Whatever happened, let the participants go.
    std::fs::write(&stop, b"stop").unwrap();
    let viewer = viewer.finish();
    let publisher = publisher.finish();
    let _ = std::fs::remove_file(&stop);

    let s = &api.summary;
    assert!(
        api.ok() && s["ok"] == true,
        "RoomService script failed\n{api}"
    );
    assert_eq!(s["participants"], serde_json::json!(["pub", "viewer"]));
    assert_eq!(s["rooms"][room], 2, "ListRooms counts both: {s}");
    assert_eq!(s["rooms_named"], serde_json::json!([room]), "{s}");
    assert_eq!(s["room_metadata"], "room-meta-1");
    assert_eq!(s["viewer_metadata"], "viewer-meta-1");
    assert_eq!(s["viewer_attributes"]["role"], "guest");
    let video = s["video_sid"].as_str().unwrap().to_string();
    assert!(video.starts_with("TR_"), "{video}");
    assert_eq!(s["muted_track"]["sid"], video.as_str());
    assert_eq!(s["muted_track"]["muted"], true);
    assert_eq!(s["unmute_error"]["code"], "failed_precondition", "{s}");
    assert_eq!(s["mute_missing_track_error"]["code"], "not_found", "{s}");
    assert_eq!(s["after_remove"], serde_json::json!(["pub"]));
    assert_eq!(s["missing_participant_error"]["code"], "not_found");
    assert_eq!(s["missing_participant_error"]["status"], 404);
    assert_eq!(s["missing_room_error"]["code"], "not_found");
    assert_eq!(
        s["missing_room_error"]["message"],
        "requested room does not exist"
    );
    assert_eq!(s["created"]["name"], "made-by-api");
    assert_eq!(s["created"]["empty_timeout"], 120);
    assert_eq!(s["created"]["max_participants"], 3);
    assert_eq!(s["created"]["metadata"], "m");
    assert!(s["created"]["sid"].as_str().unwrap().starts_with("RM_"));
    assert_eq!(
        s["rooms_after_create"],
        serde_json::json!(["made-by-api", room])
    );
    assert_eq!(s["rooms_after_delete"], serde_json::json!([]));
    assert_eq!(s["delete_missing_error"]["code"], "not_found");

    // The viewer saw all of it happen.
    let v = &viewer.summary;
    assert_eq!(v["connected"], true, "{viewer}");
    let muted: Vec<&str> = v["muted_seen"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        muted.contains(&video.as_str()),
        "viewer saw the mute\n{viewer}"
    );
    let data = v["data"].as_array().unwrap();
    assert!(
        data.iter()
            .any(|d| d["data"] == "hello-from-api" && d["topic"] == "api" && d["from"] == ""),
        "the server's data message arrived, from nobody\n{viewer}"
    );
    let events: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(events.contains(&"room_metadata room-meta-1"), "{viewer}");
    assert!(
        events.contains(&"metadata viewer viewer-meta-1"),
        "{viewer}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("attributes viewer") && e.contains("guest")),
        "{viewer}"
    );
    assert_eq!(v["disconnected_by_server"], true, "removed\n{viewer}");
    let reason = v["disconnect_reason"].to_string();
    assert!(
        reason.contains("PARTICIPANT_REMOVED") || reason.contains("\"4\""),
        "{reason}"
    );

    // The publisher's own SDK muted its track when told to, and left with the room.
    let p = &publisher.summary;
    assert_eq!(p["connected"], true, "{publisher}");
    assert!(
        p["muted_seen"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == video.as_str()),
        "the publisher got SignalResponse.mute\n{publisher}"
    );
    assert_eq!(p["disconnected_by_server"], true, "{publisher}");
    let reason = p["disconnect_reason"].to_string();
    assert!(
        reason.contains("ROOM_DELETED") || reason.contains("\"5\""),
        "{reason}"
    );
}

#[test]
fn refusals_are_twirp_errors_and_json_bodies_work() {
    let _g = serial();
    let server = Server::start();
    let create = api_token(VideoGrant {
        room_create: true,
        ..Default::default()
    });
    let list = api_token(VideoGrant {
        room_list: true,
        ..Default::default()
    });

    // No token, a token signed with another secret, an expired one.
    let r = call(&server, "ListRooms", None, JSON, b"{}");
    r.twirp_error(401, "unauthenticated");
    let mut forged = list.clone();
    forged.push('x');
    call(&server, "ListRooms", Some(&forged), JSON, b"{}").twirp_error(401, "unauthenticated");
    let expired = sign(
        &Claims {
            iss: DEV_KEY.into(),
            exp: Some(unix_now() - 3600),
            video: Some(VideoGrant {
                room_list: true,
                ..Default::default()
            }),
            ..Default::default()
        },
        DEV_SECRET,
    );
    call(&server, "ListRooms", Some(&expired), JSON, b"{}").twirp_error(401, "unauthenticated");
    // Good tokens without the method's grant.
    let join = token("r1", "alice", &[]);
    let msg =
        call(&server, "ListRooms", Some(&join), JSON, b"{}").twirp_error(401, "unauthenticated");
    assert!(msg.contains("roomList"), "{msg}");
    call(&server, "CreateRoom", Some(&list), JSON, br#"{"name":"x"}"#)
        .twirp_error(401, "unauthenticated");
    call(&server, "DeleteRoom", Some(&list), JSON, br#"{"room":"x"}"#)
        .twirp_error(401, "unauthenticated");
    // roomAdmin is for one room.
    call(
        &server,
        "ListParticipants",
        Some(&admin("r1")),
        JSON,
        br#"{"room":"r2"}"#,
    )
    .twirp_error(401, "unauthenticated");
    call(
        &server,
        "SendData",
        Some(&create),
        JSON,
        br#"{"room":"r1","data":"aGk="}"#,
    )
    .twirp_error(401, "unauthenticated");

    // Bodies that do not decode.
    for bad in [&b"{"[..], b"not json", b"[1]", br#"{"name":7}"#, b""] {
        call(&server, "CreateRoom", Some(&create), JSON, bad).twirp_error(400, "malformed");
    }
    call(
        &server,
        "CreateRoom",
        Some(&create),
        PROTOBUF,
        &[0x0a, 0xff],
    )
    .twirp_error(400, "malformed");
    // A body over 1 MiB is refused on its declared length, before it is sent.
    let host = server.http.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /twirp/livekit.RoomService/CreateRoom HTTP/1.1\r\nHost: {host}\r\n\
         Connection: close\r\nContent-Type: {JSON}\r\nAuthorization: Bearer {create}\r\n\
         Content-Length: 2000000\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("invalid_argument"), "{resp}");
    // Missing required fields.
    call(&server, "CreateRoom", Some(&create), JSON, b"{}").twirp_error(400, "invalid_argument");

    // A nonce must be 16 bytes ("c2hvcnQ=" is "short").
    let msg = call(
        &server,
        "SendData",
        Some(&admin("r1")),
        JSON,
        br#"{"room":"r1","data":"aGk=","nonce":"c2hvcnQ="}"#,
    )
    .twirp_error(400, "invalid_argument");
    assert!(msg.contains("nonce"), "{msg}");

    // Routes Twirp does not serve.
    call(&server, "Nope", Some(&create), JSON, b"{}").twirp_error(404, "bad_route");
    request(
        &server,
        "POST",
        "/twirp/livekit.Other/CreateRoom",
        &[("Content-Type", JSON)],
        b"{}",
    )
    .twirp_error(404, "bad_route");
    request(
        &server,
        "GET",
        "/twirp/livekit.RoomService/ListRooms",
        &[],
        b"",
    )
    .twirp_error(404, "bad_route");
    call(&server, "ListRooms", Some(&list), "text/plain", b"{}").twirp_error(404, "bad_route");

    // JSON as Node's SDK sends it: lowerCamelCase, charset parameter, unknown fields.
    let r = call(
        &server,
        "CreateRoom",
        Some(&create),
        JSON,
        br#"{"name":"json-room","emptyTimeout":60,"maxParticipants":2,"metadata":"hi","futureField":1}"#,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.headers.contains("content-type: application/json"),
        "{}",
        r.headers
    );
    let room = r.json();
    assert_eq!(room["name"], "json-room");
    // Proto names, defaults emitted, int64 as strings: what LiveKit's server answers.
    assert_eq!(room["empty_timeout"], 60);
    assert_eq!(room["max_participants"], 2);
    assert_eq!(room["metadata"], "hi");
    assert_eq!(room["num_participants"], 0);
    assert!(room["creation_time"].is_string(), "{room}");
    assert!(room["sid"].as_str().unwrap().starts_with("RM_"));
    // Creating it again returns the same room.
    let again = call(
        &server,
        "CreateRoom",
        Some(&create),
        "application/json",
        br#"{"name":"json-room"}"#,
    )
    .json();
    assert_eq!(again["sid"], room["sid"]);
    // Proto names in the request work too, and so does protobuf.
    let r = call(
        &server,
        "ListRooms",
        Some(&list),
        JSON,
        br#"{"names":["json-room"]}"#,
    );
    assert_eq!(r.json()["rooms"][0]["name"], "json-room");
    let r = call(
        &server,
        "ListRooms",
        Some(&list),
        PROTOBUF,
        &lk::ListRoomsRequest { names: vec![] }.encode_to_vec(),
    );
    assert_eq!(r.status, 200);
    assert!(r.headers.contains("content-type: application/protobuf"));
    let rooms = lk::ListRoomsResponse::decode(r.body.as_slice()).unwrap();
    assert_eq!(rooms.rooms.len(), 1);
    assert_eq!(rooms.rooms[0].name, "json-room");
    // Admin calls on the room, in JSON.
    let a = admin("json-room");
    let r = call(
        &server,
        "ListParticipants",
        Some(&a),
        JSON,
        br#"{"room":"json-room"}"#,
    );
    assert_eq!(r.json(), serde_json::json!({ "participants": [] }));
    let r = call(
        &server,
        "UpdateRoomMetadata",
        Some(&a),
        JSON,
        br#"{"room":"json-room","metadata":"new"}"#,
    );
    assert_eq!(r.json()["metadata"], "new");
    call(
        &server,
        "GetParticipant",
        Some(&a),
        JSON,
        br#"{"room":"json-room","identity":"ghost"}"#,
    )
    .twirp_error(404, "not_found");
    // Deleting it, then finding it gone.
    let r = call(
        &server,
        "DeleteRoom",
        Some(&create),
        JSON,
        br#"{"room":"json-room"}"#,
    );
    assert_eq!((r.status, r.json()), (200, serde_json::json!({})));
    let msg = call(
        &server,
        "ListParticipants",
        Some(&a),
        JSON,
        br#"{"room":"json-room"}"#,
    )
    .twirp_error(404, "not_found");
    assert_eq!(msg, "requested room does not exist");
    let mut server = server;
    server.assert_alive();
}

#[test]
fn sigterm_tells_participants_to_leave() {
    let _g = serial();
    let Some(py) = py() else { return };
    let mut server = Server::start();
    let url = ws_url(&server);
    let tok = token("shutdown-room", "stayer", &[]);
    let stayer = client(
        &py,
        "stayer",
        "lk_client.py",
        &["--url", &url, "--token", &tok, "--duration", "40"],
    );
    // Wait until it has joined.
    let list = admin("shutdown-room");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = call(
            &server,
            "ListParticipants",
            Some(&list),
            JSON,
            br#"{"room":"shutdown-room"}"#,
        );
        if r.status == 200 && r.json()["participants"][0]["state"] == "ACTIVE" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the participant never became active"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = server.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "prism serve still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "prism serve exited with {status}");
    let out = stayer.timeout(Duration::from_secs(20)).finish();
    assert_eq!(out.summary["connected"], true, "{out}");
    assert_eq!(out.summary["disconnected_by_server"], true, "{out}");
    let reason = out.summary["disconnect_reason"].to_string();
    assert!(
        reason.contains("SERVER_SHUTDOWN") || reason.contains("\"3\""),
        "{reason}\n{out}"
    );
}
