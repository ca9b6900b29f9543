//! `/rtc`: the WebSocket a LiveKit client signals over.
//!
//! The request is checked and the participant joined before the upgrade, so that a refusal
//! is an HTTP status the SDKs understand (they call `/rtc/validate` only to read its text).
//! After the upgrade one task per session moves binary protobuf frames between the socket
//! and its room, answers pings itself (they must not wait behind room work), and closes the
//! socket, with a reason, on:
//! - a frame that is not a `SignalRequest` (1007), a text frame (1003), a frame over
//!   [`MAX_FRAME`] (1009);
//! - silence: no frame of any kind for [`PING_TIMEOUT_S`] seconds while Prism pings every
//!   [`PING_INTERVAL_S`] (1001);
//! - the room's word (removal, duplicate identity, shutdown).
//!
//! Whatever ends the session, the room is told, and the others in the room are not
//! affected.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prism_proto::livekit as lk;
use prost::Message as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{PING_INTERVAL_S, PING_TIMEOUT_S};
use crate::app::AppState;
use crate::http::{query_param, request_token, rtc_error, text, Body};
use crate::rtc::{JoinParams, Out, ParticipantSid, RoomHandle, RoomName};

/// Largest signaling frame accepted. Offers of clients publishing many tracks stay far
/// below it; anything larger is an attack or a bug.
pub const MAX_FRAME: usize = 256 * 1024;

/// Whether a request asks for a WebSocket upgrade.
pub(crate) fn is_upgrade(req: &Request<Incoming>) -> bool {
    let has = |name: hyper::header::HeaderName, want: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(want))
    };
    has(CONNECTION, "upgrade") && has(UPGRADE, "websocket")
}

fn flag(query: &str, name: &str) -> Option<bool> {
    query_param(query, name).map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Handles `GET /rtc`.
pub async fn handle(state: Arc<AppState>, mut req: Request<Incoming>) -> Response<Body> {
    if !is_upgrade(&req) {
        // LiveKit answers a plain request to /rtc with 404 too.
        return text(
            StatusCode::NOT_FOUND,
            "not found: /rtc is a WebSocket endpoint",
        );
    }
    let token = match request_token(&req) {
        Ok(Some(t)) => t,
        Ok(None) => return auth_error(&crate::auth::AuthError::NoPermissions),
        Err(e) => return auth_error(&e),
    };
    let claims = match state.keys.verify_now(&token) {
        Ok(c) => c,
        Err(e) => return auth_error(&e),
    };
    let room = match claims.ensure_join() {
        Ok(r) => r.to_owned(),
        Err(e) => return auth_error(&e),
    };
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY).cloned() else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let query = req.uri().query().unwrap_or("").to_owned();
    let mut media_node = None;
    if let Some(cluster) = state.cluster.clone() {
        // Several nodes: the session may belong to another node's room.
        let resume = flag(&query, "reconnect").unwrap_or(false);
        match crate::cluster::api::rtc(&cluster, &mut req, &room, resume).await {
            crate::cluster::api::Rtc::Done(r) => return r,
            crate::cluster::api::Rtc::Via(node) if !resume => {
                media_node = cluster.media_node(&node).await;
            }
            _ => {}
        }
    }
    let int = |name: &str| query_param(&query, name).and_then(|v| v.parse::<i32>().ok());
    let params = JoinParams {
        claims,
        room: RoomName::new(room),
        auto_subscribe: flag(&query, "auto_subscribe").unwrap_or(true),
        protocol: int("protocol").unwrap_or(0),
        client_protocol: int("client_protocol").unwrap_or(0),
        media_node,
    };
    let resume = flag(&query, "reconnect").unwrap_or(false);
    let first;
    let session;
    if resume {
        // Prism does not keep sessions across signal reconnects: the client is told to
        // rejoin from scratch, as LiveKit does when it cannot resume.
        first = Bytes::from(
            lk::SignalResponse {
                message: Some(lk::signal_response::Message::Leave(lk::LeaveRequest {
                    can_reconnect: true,
                    reason: lk::DisconnectReason::StateMismatch as i32,
                    action: lk::leave_request::Action::Reconnect as i32,
                })),
            }
            .encode_to_vec(),
        );
        session = None;
    } else {
        match state.rooms.join(params).await {
            Ok(j) => {
                first = j.join;
                session = Some(Session {
                    sid: j.sid,
                    rx: j.rx,
                    room: j.room,
                });
            }
            Err(e) => return rtc_error(&e),
        }
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let for_fail = session.as_ref().map(|s| (s.sid.clone(), s.room.clone()));
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade failed");
                if let Some((sid, room)) = for_fail {
                    room.left(&sid, lk::DisconnectReason::SignalClose);
                }
                return;
            }
        };
        // A small read buffer: tungstenite zero-fills up to this much before every read,
        // and signaling frames are small (a larger one grows the buffer to its size).
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .max_message_size(Some(MAX_FRAME))
            .max_frame_size(Some(MAX_FRAME));
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        run(ws, first, session).await;
    });
    crate::http::switching_protocols(&key)
}

fn auth_error(e: &crate::auth::AuthError) -> Response<Body> {
    let (status, body) = e.status();
    text(
        StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED),
        body,
    )
}

fn encode(msg: &lk::SignalResponse) -> Message {
    Message::Binary(msg.encode_to_vec().into())
}

fn close(code: CloseCode, reason: &str) -> Message {
    // A close reason must fit a control frame (125 bytes with the code).
    let mut r = reason.to_owned();
    while r.len() > 120 {
        r.pop();
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: r.into(),
    }))
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// A joined session: its sid, what its room sends it, and its room.
struct Session {
    sid: ParticipantSid,
    rx: tokio::sync::mpsc::Receiver<Out>,
    room: RoomHandle,
}

/// Drives a session's WebSocket; `first` is its first message, encoded.
async fn run(ws: Ws, first: Bytes, session: Option<Session>) {
    let (mut sink, mut stream) = ws.split();
    if sink.send(Message::Binary(first)).await.is_err() {
        if let Some(s) = session {
            s.room.left(&s.sid, lk::DisconnectReason::SignalClose);
        }
        return;
    }
    let Some(Session { sid, mut rx, room }) = session else {
        // A resume attempt: the leave is all there is to say.
        let _ = sink.send(close(CloseCode::Normal, "rejoin")).await;
        return;
    };
    let mut ping = tokio::time::interval(Duration::from_secs(PING_INTERVAL_S as u64));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let timeout = Duration::from_secs(PING_TIMEOUT_S as u64);
    let mut heard = Instant::now();
    let reason = loop {
        tokio::select! {
            frame = stream.next() => {
                let frame = match frame {
                    None => break lk::DisconnectReason::SignalClose,
                    Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(e))) => {
                        tracing::info!(participant = %sid, error = %e, "signaling frame too large; closing");
                        let _ = sink.send(close(CloseCode::Size, "frame too large")).await;
                        break lk::DisconnectReason::SignalClose;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(participant = %sid, error = %e, "signaling socket error");
                        break lk::DisconnectReason::SignalClose;
                    }
                    Some(Ok(f)) => f,
                };
                heard = Instant::now();
                match frame {
                    Message::Binary(b) => match lk::SignalRequest::decode(b.as_ref()) {
                        Ok(req) => {
                            use lk::signal_request::Message as Req;
                            match req.message {
                                Some(Req::Ping(t)) => {
                                    let pong = lk::SignalResponse {
                                        message: Some(lk::signal_response::Message::Pong(now_ms())),
                                    };
                                    let _ = t;
                                    if sink.send(encode(&pong)).await.is_err() {
                                        break lk::DisconnectReason::SignalClose;
                                    }
                                }
                                Some(Req::PingReq(p)) => {
                                    let pong = lk::SignalResponse {
                                        message: Some(lk::signal_response::Message::PongResp(lk::Pong {
                                            last_ping_timestamp: p.timestamp,
                                            timestamp: now_ms(),
                                        })),
                                    };
                                    if sink.send(encode(&pong)).await.is_err() {
                                        break lk::DisconnectReason::SignalClose;
                                    }
                                }
                                Some(Req::Leave(_)) => {
                                    room.left(&sid, lk::DisconnectReason::ClientInitiated);
                                    let _ = sink.send(close(CloseCode::Normal, "bye")).await;
                                    return;
                                }
                                _ => room.signal(&sid, req),
                            }
                        }
                        Err(e) => {
                            tracing::info!(participant = %sid, error = %e, "malformed signaling message; closing");
                            let _ = sink.send(close(CloseCode::Invalid, "malformed protobuf SignalRequest")).await;
                            break lk::DisconnectReason::SignalClose;
                        }
                    },
                    Message::Text(_) => {
                        let _ = sink.send(close(CloseCode::Unsupported, "text frames are not supported: send binary protobuf")).await;
                        break lk::DisconnectReason::SignalClose;
                    }
                    Message::Close(_) => break lk::DisconnectReason::SignalClose,
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                }
            }
            out = rx.recv() => match out {
                Some(first @ (Out::Signal(_) | Out::Encoded(_))) => {
                    // Everything already queued goes out in one write, with runs of
                    // participant updates merged.
                    let (batch, closing) = drain_batch(first, &mut rx);
                    let mut failed = false;
                    for m in batch {
                        if sink.feed(m.into_message()).await.is_err() {
                            failed = true;
                            break;
                        }
                    }
                    if failed || sink.flush().await.is_err() {
                        break lk::DisconnectReason::SignalClose;
                    }
                    if let Some(reason) = closing {
                        let _ = sink.send(close(CloseCode::Away, &reason)).await;
                        break lk::DisconnectReason::SignalClose;
                    }
                }
                Some(Out::Close(reason)) => {
                    let _ = sink.send(close(CloseCode::Away, &reason)).await;
                    break lk::DisconnectReason::SignalClose;
                }
                None => {
                    let _ = sink.send(close(CloseCode::Away, "session ended")).await;
                    break lk::DisconnectReason::SignalClose;
                }
            },
            _ = ping.tick() => {
                if heard.elapsed() > timeout {
                    tracing::info!(participant = %sid, "signaling peer silent; closing");
                    let _ = sink.send(close(CloseCode::Away, "ping timeout")).await;
                    break lk::DisconnectReason::ConnectionTimeout;
                }
                if sink.send(Message::Ping(Bytes::from_static(b"prism"))).await.is_err() {
                    break lk::DisconnectReason::SignalClose;
                }
            }
        }
    };
    // Flush what the room queued (a leave, say) before going.
    let _ = sink.flush().await;
    room.left(&sid, reason);
}

/// The WebSocket read buffer's size.
const READ_BUFFER: usize = 4096;

/// Most messages written in one batch.
const BATCH: usize = 256;

/// A message on its way out of a batch.
#[derive(Debug)]
enum Queued {
    Signal(Box<lk::SignalResponse>),
    /// Encoded once by the room for many sessions.
    Encoded(Bytes),
}

impl Queued {
    fn into_message(self) -> Message {
        match self {
            Queued::Signal(m) => encode(&m),
            Queued::Encoded(b) => Message::Binary(b),
        }
    }
}

/// `first` and whatever else is queued now (up to [`BATCH`]), in order, with each run of
/// consecutive participant updates merged into one (a participant's latest version wins,
/// in the position of its first mention). Also the close that ended the batch, if any.
/// `first` is a message, not a close.
fn drain_batch(
    first: Out,
    rx: &mut tokio::sync::mpsc::Receiver<Out>,
) -> (Vec<Queued>, Option<String>) {
    use lk::signal_response::Message as Resp;
    let mut out: Vec<Queued> = Vec::new();
    let mut closing = None;
    let mut next = Some(first);
    while out.len() < BATCH {
        let item = match next.take().map_or_else(|| rx.try_recv().ok(), Some) {
            Some(Out::Signal(m)) => Queued::Signal(m),
            Some(Out::Encoded(b)) => Queued::Encoded(b),
            Some(Out::Close(reason)) => {
                closing = Some(reason);
                break;
            }
            None => break,
        };
        if let (Some(Queued::Signal(prev)), Queued::Signal(next)) = (out.last_mut(), &item) {
            if let (Some(Resp::Update(prev)), Some(Resp::Update(upd))) =
                (&mut prev.message, &next.message)
            {
                merge_update(prev, upd);
                continue;
            }
        }
        out.push(item);
    }
    (out, closing)
}

/// Adds `upd`'s participants to `into`, keeping one entry per participant: the newest.
fn merge_update(into: &mut lk::ParticipantUpdate, upd: &lk::ParticipantUpdate) {
    for p in &upd.participants {
        match into.participants.iter_mut().find(|q| q.sid == p.sid) {
            Some(q) if p.version >= q.version => *q = p.clone(),
            Some(_) => {}
            None => into.participants.push(p.clone()),
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(sids: &[(&str, u32)]) -> Out {
        Out::Signal(Box::new(lk::SignalResponse {
            message: Some(lk::signal_response::Message::Update(
                lk::ParticipantUpdate {
                    participants: sids
                        .iter()
                        .map(|(sid, version)| lk::ParticipantInfo {
                            sid: (*sid).into(),
                            version: *version,
                            ..Default::default()
                        })
                        .collect(),
                },
            )),
        }))
    }

    fn pong() -> Out {
        Out::Signal(Box::new(lk::SignalResponse {
            message: Some(lk::signal_response::Message::Pong(1)),
        }))
    }

    #[tokio::test]
    async fn queued_updates_merge_only_when_adjacent_and_keep_the_newest_version() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        for m in [
            update(&[("b", 1)]),
            update(&[("a", 3), ("c", 1)]),
            pong(),
            update(&[("a", 4)]),
            Out::Close("bye".into()),
            update(&[("d", 1)]),
        ] {
            tx.try_send(m).unwrap();
        }
        let (batch, closing) = drain_batch(update(&[("a", 2)]), &mut rx);
        assert_eq!(closing.as_deref(), Some("bye"));
        let shape: Vec<Vec<(String, u32)>> = batch
            .iter()
            .map(|m| match m {
                Queued::Signal(m) => match &m.message {
                    Some(lk::signal_response::Message::Update(u)) => u
                        .participants
                        .iter()
                        .map(|p| (p.sid.clone(), p.version))
                        .collect(),
                    _ => Vec::new(),
                },
                Queued::Encoded(_) => Vec::new(),
            })
            .collect();
        let v = |s: &[(&str, u32)]| -> Vec<(String, u32)> {
            s.iter().map(|(a, b)| ((*a).to_owned(), *b)).collect()
        };
        // a's newest version in its first position, then b and c; the pong stays between
        // the runs; the update after the close is left for later.
        assert_eq!(
            shape,
            vec![v(&[("a", 3), ("b", 1), ("c", 1)]), vec![], v(&[("a", 4)])]
        );
        assert!(matches!(rx.try_recv(), Ok(Out::Signal(_))));
    }
}
