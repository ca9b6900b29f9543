//! The `/agent` worker protocol, byte for byte, with a minimal worker written here (binary
//! `WorkerMessage`/`ServerMessage` protobufs over a WebSocket), against `prism serve --dev`.
//!
//! What passing proves:
//! - no token, or a valid token without the `agent` grant, is refused with 401 before any
//!   upgrade (as LiveKit answers);
//! - registration is answered with a worker id and the server's info; pings get pongs
//!   carrying the worker's timestamp;
//! - a malformed frame closes that worker only (1007), and a worker whose first message is
//!   not a registration is closed (1008); another worker on the same server keeps working,
//!   and `/metrics` counts it alone;
//! - an explicit dispatch through the Twirp API offers the job to a worker of that name; a
//!   worker that declines is skipped and the next one is asked; accepting gets an
//!   assignment whose token is an agent's (kind `agent`, the identity it chose, the job's
//!   room, the `lk.agent_name` attribute); deleting the dispatch sends a termination.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream as StdTcpStream;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use prism_proto::livekit as lk;
use prism_signaling::auth::{sign, unix_now, Claims, KeyStore, VideoGrant, DEV_KEY, DEV_SECRET};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use common::*;

use lk::server_message::Message as S;
use lk::worker_message::Message as W;

const WAIT: Duration = Duration::from_secs(20);

fn token(grant: VideoGrant, identity: &str) -> String {
    let now = unix_now();
    sign(
        &Claims {
            iss: DEV_KEY.into(),
            sub: identity.into(),
            nbf: Some(now),
            exp: Some(now + 600),
            video: Some(grant),
            ..Default::default()
        },
        DEV_SECRET,
    )
}

fn agent_token() -> String {
    token(
        VideoGrant {
            agent: true,
            ..Default::default()
        },
        "",
    )
}

type Ws = WebSocketStream<TcpStream>;

async fn connect(server: &Server, token: &str) -> Result<Ws, u16> {
    let host = server.http.trim_start_matches("http://").to_string();
    let mut req = format!("ws://{host}/agent").into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let tcp = TcpStream::connect(&host).await.unwrap();
    match tokio_tungstenite::client_async(req, tcp).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("WebSocket handshake: {e}"),
    }
}

async fn send(ws: &mut Ws, m: W) {
    let msg = lk::WorkerMessage { message: Some(m) };
    ws.send(Message::Binary(msg.encode_to_vec().into()))
        .await
        .unwrap();
}

/// The next server message, skipping WebSocket control frames.
async fn recv(ws: &mut Ws) -> S {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no server message in time")
            .expect("socket ended")
            .expect("socket error");
        if let Message::Binary(b) = frame {
            return lk::ServerMessage::decode(b.as_ref())
                .unwrap()
                .message
                .unwrap();
        }
    }
}

/// The close code the server ends the socket with.
async fn closed_with(ws: &mut Ws) -> CloseCode {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("not closed in time")
        {
            Some(Ok(Message::Close(Some(f)))) => return f.code,
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    }
}

async fn register(server: &Server, name: &str) -> (Ws, String) {
    let mut ws = connect(server, &agent_token())
        .await
        .expect("agent token accepted");
    send(
        &mut ws,
        W::Register(lk::RegisterWorkerRequest {
            r#type: lk::JobType::JtRoom as i32,
            agent_name: name.into(),
            version: "raw-test".into(),
            ..Default::default()
        }),
    )
    .await;
    match recv(&mut ws).await {
        S::Register(r) => {
            assert!(r.worker_id.starts_with("AW_"), "{r:?}");
            let info = r.server_info.unwrap();
            assert_eq!(info.agent_protocol, 1);
            (ws, r.worker_id)
        }
        other => panic!("expected the registration answer, got {other:?}"),
    }
}

/// A Twirp JSON call with an admin token for `room`; returns (status, body).
fn twirp(server: &Server, method: &str, room: &str, body: &str) -> (u16, String) {
    let t = token(
        VideoGrant {
            room_admin: true,
            room: room.into(),
            ..Default::default()
        },
        "",
    );
    let host = server.http.trim_start_matches("http://");
    let mut s = StdTcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let req = format!(
        "POST /twirp/livekit.AgentDispatchService/{method} HTTP/1.1\r\nHost: {host}\r\n\
         Connection: close\r\nAuthorization: Bearer {t}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn workers_without_the_agent_grant_are_refused_and_a_bad_worker_closes_alone() {
    let _g = serial();
    let server = Server::start();
    let (status, _) = http(&server, "GET", "/agent", None, None);
    assert_eq!(status, 401, "no token");
    block_on(async {
        let join = token(
            VideoGrant {
                room_join: true,
                room: "r".into(),
                ..Default::default()
            },
            "alice",
        );
        assert_eq!(connect(&server, &join).await.err(), Some(401));
        assert_eq!(connect(&server, "not-a-jwt").await.err(), Some(401));

        let (mut good, _) = register(&server, "").await;
        let (mut bad, _) = register(&server, "").await;
        bad.send(Message::Binary(vec![0xff, 0xff, 0xff].into()))
            .await
            .unwrap();
        assert_eq!(closed_with(&mut bad).await, CloseCode::Invalid);

        let mut unregistered = connect(&server, &agent_token()).await.unwrap();
        send(&mut unregistered, W::Ping(lk::WorkerPing { timestamp: 1 })).await;
        assert_eq!(closed_with(&mut unregistered).await, CloseCode::Policy);

        send(&mut good, W::Ping(lk::WorkerPing { timestamp: 42 })).await;
        match recv(&mut good).await {
            S::Pong(p) => {
                assert_eq!(p.last_timestamp, 42);
                assert!(p.timestamp > 0);
            }
            other => panic!("expected a pong, got {other:?}"),
        }
        // The bad worker is gone, the good one is still registered (its pong came after
        // its registration reached the dispatcher, the bad one's close after its removal).
        let (status, metrics) = http(&server, "GET", "/metrics", None, None);
        assert_eq!(status, 200);
        assert!(metrics.contains("\nprism_agent_workers 1\n"), "{metrics}");
        drop(good);
    });
    let mut server = server;
    server.assert_alive();
}

#[test]
fn a_declined_job_goes_to_the_next_worker_which_gets_an_agent_token() {
    let _g = serial();
    let server = Server::start();
    block_on(async {
        let (mut first, first_id) = register(&server, "raw").await;
        let (mut second, second_id) = register(&server, "raw").await;
        let (status, body) = twirp(
            &server,
            "CreateDispatch",
            "raw-room",
            r#"{"room":"raw-room","agent_name":"raw","metadata":"hello"}"#,
        );
        assert_eq!(status, 200, "{body}");
        let dispatch: serde_json::Value = serde_json::from_str(&body).unwrap();
        let dispatch_id = dispatch["id"].as_str().unwrap().to_string();

        // Both are idle: the first registered is asked first, and declines.
        let S::Availability(req) = recv(&mut first).await else {
            panic!("no offer")
        };
        let job = req.job.unwrap();
        assert_eq!(job.agent_name, "raw");
        assert_eq!(job.metadata, "hello");
        assert_eq!(job.room.as_ref().unwrap().name, "raw-room");
        send(
            &mut first,
            W::Availability(lk::AvailabilityResponse {
                job_id: job.id.clone(),
                available: false,
                ..Default::default()
            }),
        )
        .await;

        let S::Availability(req) = recv(&mut second).await else {
            panic!("no offer to the second worker")
        };
        assert_eq!(req.job.as_ref().unwrap().id, job.id);
        send(
            &mut second,
            W::Availability(lk::AvailabilityResponse {
                job_id: job.id.clone(),
                available: true,
                participant_identity: "raw-bot".into(),
                participant_name: "Raw Bot".into(),
                ..Default::default()
            }),
        )
        .await;
        let S::Assignment(a) = recv(&mut second).await else {
            panic!("no assignment")
        };
        let state = a.job.as_ref().unwrap().state.as_ref().unwrap();
        assert_eq!(state.worker_id, second_id);
        assert_ne!(state.worker_id, first_id);
        assert_eq!(state.participant_identity, "raw-bot");
        let claims = KeyStore::dev().verify_now(&a.token).unwrap();
        assert_eq!(claims.kind, "agent");
        assert_eq!(claims.sub, "raw-bot");
        assert_eq!(claims.name, "Raw Bot");
        assert_eq!(claims.attributes.get("lk.agent_name").unwrap(), "raw");
        let g = claims.video.unwrap();
        assert!(g.agent && g.room_join, "{g:?}");
        assert_eq!(g.room, "raw-room");

        send(
            &mut second,
            W::UpdateJob(lk::UpdateJobStatus {
                job_id: job.id.clone(),
                status: lk::JobStatus::JsRunning as i32,
                error: String::new(),
            }),
        )
        .await;
        let (status, body) = twirp(
            &server,
            "ListDispatch",
            "raw-room",
            r#"{"room":"raw-room"}"#,
        );
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("raw-bot"), "{body}");

        let (status, body) = twirp(
            &server,
            "DeleteDispatch",
            "raw-room",
            &format!(r#"{{"room":"raw-room","dispatch_id":"{dispatch_id}"}}"#),
        );
        assert_eq!(status, 200, "{body}");
        let S::Termination(t) = recv(&mut second).await else {
            panic!("no termination")
        };
        assert_eq!(t.job_id, job.id);
        let (status, _) = twirp(
            &server,
            "DeleteDispatch",
            "raw-room",
            &format!(r#"{{"room":"raw-room","dispatch_id":"{dispatch_id}"}}"#),
        );
        assert_eq!(status, 404);
        let (status, _) = twirp(&server, "ListDispatch", "other", r#"{"room":"raw-room"}"#);
        assert_eq!(status, 401, "admin of another room");
    });
}
