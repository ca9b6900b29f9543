//! One raw LiveKit signaling session, as an SDK opens it but with no media: a WebSocket on
//! `/rtc?access_token=…`, the `JoinResponse` read, then a pump task that keeps reading
//! (answering the server's pings, so the server never takes us for a dead client) and
//! writes what the owner queues.
//!
//! Only the responses the bench waits for (answers, offers, leaves) reach the owner; the
//! participant updates a crowded room produces are decoded and dropped in the pump, so a
//! session that is merely held costs no memory.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use prism_proto::livekit as lk;
use prost::Message as _;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use lk::signal_request::Message as Req;
use lk::signal_response::Message as Resp;

/// How long a join or an offer may take before it counts as failed.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// A joined participant's signaling connection.
#[derive(Debug)]
pub struct Session {
    pub sid: String,
    out: mpsc::UnboundedSender<Message>,
    inbox: mpsc::UnboundedReceiver<Resp>,
    pump: JoinHandle<()>,
}

impl Session {
    /// Connects and joins; returns the session and the join latency, from the start of the
    /// TCP connection (the upgrade request follows at once) to the decoded `JoinResponse`.
    pub async fn join(http: SocketAddr, token: &str) -> Result<(Session, Duration)> {
        let t0 = Instant::now();
        let joined = tokio::time::timeout(REPLY_TIMEOUT, Self::connect(http, token))
            .await
            .map_err(|_| anyhow!("no JoinResponse within {REPLY_TIMEOUT:?}"))??;
        let latency = t0.elapsed();
        let (ws, sid) = joined;
        let (out, out_rx) = mpsc::unbounded_channel();
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
        let pump = tokio::spawn(pump(ws, out_rx, inbox_tx));
        Ok((
            Session {
                sid,
                out,
                inbox,
                pump,
            },
            latency,
        ))
    }

    async fn connect(
        http: SocketAddr,
        token: &str,
    ) -> Result<(WebSocketStream<TcpStream>, String)> {
        let tcp = TcpStream::connect(http).await.context("connect")?;
        tcp.set_nodelay(true)?;
        let url =
            format!("ws://{http}/rtc?protocol=17&sdk=rust&auto_subscribe=1&access_token={token}");
        // tungstenite zero-fills its whole read buffer before each read: keep it small, so
        // that the load generator spends its time on the server's messages.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(4096);
        let (mut ws, resp) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config))
            .await
            .context("WebSocket upgrade")?;
        if resp.status().as_u16() != 101 {
            bail!("upgrade answered {}", resp.status());
        }
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    let r = lk::SignalResponse::decode(b.as_ref()).context("first message")?;
                    return match r.message {
                        Some(Resp::Join(j)) => {
                            let sid = j.participant.map(|p| p.sid).unwrap_or_default();
                            Ok((ws, sid))
                        }
                        other => Err(anyhow!("first message is not a JoinResponse: {other:?}")),
                    };
                }
                Some(Ok(Message::Close(f))) => bail!("closed before joining: {f:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("reading the JoinResponse"),
                None => bail!("connection ended before the JoinResponse"),
            }
        }
    }

    fn send(&self, m: Req) -> Result<()> {
        let req = lk::SignalRequest { message: Some(m) };
        self.out
            .send(Message::Binary(req.encode_to_vec().into()))
            .map_err(|_| anyhow!("session closed"))
    }

    /// Sends a publisher offer and waits for its answer; returns the answer's SDP and the
    /// time from queueing the offer to reading the answer.
    pub async fn offer(&mut self, sdp: String, id: u32) -> Result<(String, Duration)> {
        let t0 = Instant::now();
        self.send(Req::Offer(lk::SessionDescription {
            r#type: "offer".into(),
            sdp,
            id,
            ..Default::default()
        }))?;
        let deadline = tokio::time::Instant::from_std(t0 + REPLY_TIMEOUT);
        loop {
            let r = tokio::time::timeout_at(deadline, self.inbox.recv())
                .await
                .map_err(|_| anyhow!("no answer within {REPLY_TIMEOUT:?}"))?;
            match r {
                Some(Resp::Answer(a)) => return Ok((a.sdp, t0.elapsed())),
                Some(Resp::Leave(l)) => bail!("told to leave while offering: {l:?}"),
                Some(_) => {}
                None => bail!("session closed while offering"),
            }
        }
    }

    /// Leaves as a client does (a `LeaveRequest`, then the close handshake); waits at most
    /// two seconds for the server to close.
    pub async fn leave(self) {
        let _ = self.send(Req::Leave(lk::LeaveRequest {
            reason: lk::DisconnectReason::ClientInitiated as i32,
            ..Default::default()
        }));
        let Session { out, pump, .. } = self;
        drop(out);
        let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
    }
}

/// Reads and writes until either side closes. Dropping the owner's sender closes.
async fn pump(
    mut ws: WebSocketStream<TcpStream>,
    mut out: mpsc::UnboundedReceiver<Message>,
    inbox: mpsc::UnboundedSender<Resp>,
) {
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Binary(b))) => {
                    let Ok(r) = lk::SignalResponse::decode(b.as_ref()) else { continue };
                    if let Some(m @ (Resp::Answer(_) | Resp::Offer(_) | Resp::Leave(_))) = r.message {
                        let _ = inbox.send(m);
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            o = out.recv() => match o {
                Some(m) => {
                    if ws.send(m).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = ws.close(None).await;
                    // Read until the server's close frame, so it sees a clean leave.
                    while let Some(Ok(m)) = ws.next().await {
                        if m.is_close() {
                            break;
                        }
                    }
                    return;
                }
            },
        }
    }
}
