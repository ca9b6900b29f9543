//! `/agent`: the WebSocket an agent worker registers on and receives jobs through.
//!
//! The token is checked before the upgrade, so that a refusal is an HTTP status: a token
//! LiveKit would refuse gets 401, and a valid token without the `agent` grant gets 401 too
//! (LiveKit answers `permission denied` with that status). After the upgrade:
//! 1. the first frame must be a `WorkerMessage.register`, within [`REGISTER_TIMEOUT`];
//!    it is answered with the worker id and the server's info;
//! 2. then every frame is a `WorkerMessage`: pings are answered here (they must not wait
//!    behind dispatch work), everything else goes to the agent service;
//! 3. what the service sends the worker is written as it comes.
//!
//! A frame that is not a `WorkerMessage` (1007), a text frame (1003), a frame over
//! [`MAX_FRAME`] (1009) or silence for [`SILENCE_TIMEOUT`] (1001) closes this worker only;
//! whatever ends the session, the service is told, and the worker's jobs go elsewhere.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header::SEC_WEBSOCKET_KEY;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prism_proto::livekit as lk;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::dispatcher::Registration;
use super::ids::WorkerId;
use super::service::{AgentService, WORKER_QUEUE};
use crate::app::AppState;
use crate::auth::AuthError;
use crate::http::{auth_error, request_token, text, Body};
use crate::livekit::{PROTOCOL_VERSION, SERVER_VERSION};

/// How long a worker has to register after the upgrade (LiveKit's `RegisterTimeout`).
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// A worker that sends nothing (not even a WebSocket ping) for this long is gone. Workers
/// report their status every 2.5 s.
pub const SILENCE_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest worker frame accepted: worker messages are small.
pub const MAX_FRAME: usize = 64 * 1024;

/// The agent protocol version announced in `ServerInfo.agent_protocol` (what
/// `livekit-agents` 1.x speaks).
pub const AGENT_PROTOCOL: i32 = 1;

/// Handles `GET /agent`.
pub async fn handle(state: Arc<AppState>, mut req: Request<Incoming>) -> Response<Body> {
    let claims = match request_token(&req)
        .and_then(|t| t.ok_or(AuthError::NoPermissions))
        .and_then(|t| state.keys.verify_now(&t))
    {
        Ok(c) => c,
        Err(e) => return auth_error(&e),
    };
    if !crate::livekit::ws::is_upgrade(&req) {
        return text(
            StatusCode::NOT_FOUND,
            "not found: /agent is a WebSocket endpoint",
        );
    }
    if !claims.video.as_ref().is_some_and(|g| g.agent) {
        return auth_error(&AuthError::NotAllowed("the agent grant is required"));
    }
    let Some(secret) = state.keys.secret(&claims.iss).map(str::to_owned) else {
        return auth_error(&AuthError::UnknownKey);
    };
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY).cloned() else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let agents = state.agents.clone();
    let api_key = claims.iss.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "agent WebSocket upgrade failed");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME))
            .max_frame_size(Some(MAX_FRAME));
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        run(ws, agents, api_key, secret).await;
    });
    crate::http::switching_protocols(&key)
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Why a worker's session ended.
#[derive(Debug)]
enum End {
    Closed,
    Silent,
    Malformed(prost::DecodeError),
    Text,
    NotRegister,
    BadJobType(i32),
    TooLarge,
    Dropped,
}

impl End {
    fn close_frame(&self) -> Option<(CloseCode, String)> {
        match self {
            End::Closed => None,
            End::Silent => Some((CloseCode::Away, "no message from the worker".into())),
            End::Malformed(e) => Some((CloseCode::Invalid, format!("not a WorkerMessage: {e}"))),
            End::Text => Some((CloseCode::Unsupported, "binary frames only".into())),
            End::NotRegister => Some((
                CloseCode::Policy,
                "the first message must be a registration".into(),
            )),
            End::BadJobType(t) => Some((CloseCode::Policy, format!("unknown job type {t}"))),
            End::TooLarge => Some((CloseCode::Size, "frame too large".into())),
            End::Dropped => Some((CloseCode::Again, "worker too far behind".into())),
        }
    }
}

/// The next worker message, or why there is none.
async fn next_message(
    stream: &mut futures_util::stream::SplitStream<Ws>,
    within: Duration,
) -> Result<lk::WorkerMessage, End> {
    loop {
        let frame = match tokio::time::timeout(within, stream.next()).await {
            Err(_) => return Err(End::Silent),
            Ok(None) => return Err(End::Closed),
            Ok(Some(Err(e))) => {
                use tokio_tungstenite::tungstenite::Error as E;
                return Err(match e {
                    E::Capacity(_) => End::TooLarge,
                    _ => End::Closed,
                });
            }
            Ok(Some(Ok(f))) => f,
        };
        match frame {
            Message::Binary(b) => {
                return lk::WorkerMessage::decode(b.as_ref()).map_err(End::Malformed)
            }
            Message::Text(_) => return Err(End::Text),
            Message::Close(_) => return Err(End::Closed),
            // Answered by tungstenite; they only show the worker is alive.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

fn encode(msg: &lk::ServerMessage) -> Message {
    Message::Binary(msg.encode_to_vec().into())
}

async fn run(ws: Ws, agents: AgentService, api_key: String, api_secret: String) {
    let (mut sink, mut stream) = ws.split();
    let reg = match next_message(&mut stream, REGISTER_TIMEOUT).await {
        Ok(lk::WorkerMessage {
            message: Some(lk::worker_message::Message::Register(r)),
        }) => r,
        Ok(_) => return close(&mut sink, &End::NotRegister).await,
        Err(e) => return close(&mut sink, &e).await,
    };
    let Ok(job_type) = lk::JobType::try_from(reg.r#type) else {
        return close(&mut sink, &End::BadJobType(reg.r#type)).await;
    };
    let id = WorkerId::fresh();
    let answer = lk::ServerMessage {
        message: Some(lk::server_message::Message::Register(
            lk::RegisterWorkerResponse {
                worker_id: id.to_string(),
                server_info: Some(lk::ServerInfo {
                    edition: lk::server_info::Edition::Standard as i32,
                    version: SERVER_VERSION.into(),
                    protocol: PROTOCOL_VERSION,
                    node_id: "prism".into(),
                    agent_protocol: AGENT_PROTOCOL,
                    ..Default::default()
                }),
            },
        )),
    };
    // LiveKit's defaults when the worker sends no permissions.
    let permissions = reg
        .allowed_permissions
        .unwrap_or(lk::ParticipantPermission {
            can_subscribe: true,
            can_publish: true,
            can_publish_data: true,
            can_update_metadata: true,
            ..Default::default()
        });
    let (tx, mut rx) = mpsc::channel(WORKER_QUEUE);
    agents.registered(
        id.clone(),
        Registration {
            agent_name: reg.agent_name,
            job_type,
            version: reg.version,
            permissions,
            api_key,
            api_secret,
        },
        tx,
    );
    // The dispatcher knows the worker before the worker hears it is registered: a job
    // created once it has its answer (a dispatch right after, say) can go to it. What the
    // dispatcher queues meanwhile waits in `rx`, behind the answer.
    if sink.send(encode(&answer)).await.is_err() {
        agents.gone(&id);
        return;
    }
    let end = loop {
        tokio::select! {
            m = next_message(&mut stream, SILENCE_TIMEOUT) => match m {
                Ok(lk::WorkerMessage { message: Some(lk::worker_message::Message::Ping(p)) }) => {
                    let pong = lk::ServerMessage {
                        message: Some(lk::server_message::Message::Pong(lk::WorkerPong {
                            last_timestamp: p.timestamp,
                            timestamp: crate::rtc::room::now_ms(),
                        })),
                    };
                    if sink.send(encode(&pong)).await.is_err() {
                        break End::Closed;
                    }
                }
                Ok(m) => agents.message(&id, m),
                Err(e) => break e,
            },
            out = rx.recv() => match out {
                Some(m) => {
                    if sink.send(encode(&m)).await.is_err() {
                        break End::Closed;
                    }
                }
                None => break End::Dropped,
            },
        }
    };
    if !matches!(end, End::Closed) {
        tracing::info!(worker = %id, reason = ?end, "closing agent worker");
    }
    agents.gone(&id);
    close(&mut sink, &end).await;
}

async fn close(sink: &mut futures_util::stream::SplitSink<Ws, Message>, end: &End) {
    if let Some((code, mut reason)) = end.close_frame() {
        // A close reason must fit a control frame (125 bytes with the code).
        while reason.len() > 120 {
            reason.pop();
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
    }
    let _ = sink.close().await;
}
