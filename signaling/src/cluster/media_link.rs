//! The node-to-node media link: a room's owner drives another node's forwarder, for the
//! participants whose media terminates there and for the relays between the two.
//!
//! Why a link of its own: the owner keeps all of a room's signaling (one owner, no
//! multi-master state), while a participant's transport may live on the node its client
//! reached; the owner therefore needs that node's forwarder as a second media plane. It
//! speaks the control protocol (`Command`/`Event`, prost) over one WebSocket per pair of
//! nodes, `GET /cluster/media`, signed with the cluster secret like every node-to-node
//! request; Redis never carries it.
//!
//! The serving side hands each command to its own [`MediaPlane`] (so its forwarder sees
//! one more front end, as with WHIP or the recorder), remembers which request id the owner
//! used, and sends the answers and the events of the rooms the link created back. When
//! the link ends (the owner died, or closed it), every room it created is closed: media
//! never outlives its owner. On the owner's side the link is a [`MediaPlane::remote`]:
//! when it ends, each room hears that every transport it had there closed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, SEC_WEBSOCKET_KEY};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prism_proto::control as pb;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::peer::{self, PeerCheck, AUTH_HEADER, PEER_HEADER, PEER_TIMEOUT};
use super::Cluster;
use crate::http::{text, Body};
use crate::rtc::ids::MediaRoomId;
use crate::rtc::MediaPlane;

/// The link's path.
pub const PATH: &str = "/cluster/media";

/// Largest control message accepted on the link (an SDP-sized command is far smaller).
const MAX_MESSAGE: usize = 1 << 20;

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// What the serving side keeps per link.
#[derive(Default)]
struct Served {
    /// Our request id → the owner's.
    ids: HashMap<u64, u64>,
    rooms: HashSet<MediaRoomId>,
}

/// `GET /cluster/media`: a node drives this node's forwarder.
pub async fn serve(
    cluster: &Arc<Cluster>,
    plane: MediaPlane,
    req: Request<Incoming>,
) -> Response<Body> {
    let node = match peer::check(&cluster.verifier(), &req) {
        PeerCheck::Peer(n) => n,
        PeerCheck::Client => return text(StatusCode::FORBIDDEN, "node-to-node only"),
        PeerCheck::Forged(why) => return super::api::forged(cluster, why),
        PeerCheck::Replayed => return super::api::replayed(cluster),
    };
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY).cloned() else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(ws_config()),
        )
        .await;
        tracing::info!(%node, "cluster: media link from a room owner");
        run_served(ws, plane).await;
        tracing::info!(%node, "cluster: media link closed; its rooms are closed");
    });
    crate::http::switching_protocols(&key)
}

async fn run_served<S>(ws: WebSocketStream<S>, plane: MediaPlane)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let served = Arc::new(Mutex::new(Served::default()));
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<pb::Event>();
    let writer = {
        let served = served.clone();
        tokio::spawn(async move {
            while let Some(mut ev) = ev_rx.recv().await {
                if ev.request_id != 0 {
                    let theirs = lock(&served).ids.remove(&ev.request_id);
                    let Some(theirs) = theirs else { continue };
                    ev.request_id = theirs;
                }
                if sink
                    .send(Message::Binary(ev.encode_to_vec().into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    };
    while let Some(msg) = stream.next().await {
        let bytes = match msg {
            Ok(Message::Binary(b)) => b,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let cmd = match pb::Command::decode(bytes.as_ref()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: undecodable command on a media link, dropped");
                continue;
            }
        };
        let theirs = cmd.request_id;
        let Some((room, body)) = cmd
            .body
            .and_then(|b| crate::rtc::media_plane::room_of(&b).map(|r| (r, b)))
        else {
            let _ = ev_tx.send(prism_forwarder::control::error_event(
                theirs,
                "a media link carries room commands only",
            ));
            continue;
        };
        let room = MediaRoomId(room);
        if matches!(body, pb::command::Body::CreateRoom(_)) && lock(&served).rooms.insert(room) {
            let tx = ev_tx.clone();
            plane.attach(room, Box::new(move |ev| tx.send(ev).is_ok()));
        }
        let served2 = served.clone();
        let sent = plane.send_then(room, body, move |ours| {
            lock(&served2).ids.insert(ours, theirs);
        });
        if let Err(e) = sent {
            let _ = ev_tx.send(prism_forwarder::control::error_event(
                theirs,
                format!("media plane: {e}"),
            ));
        }
    }
    let rooms: Vec<MediaRoomId> = lock(&served).rooms.drain().collect();
    for room in rooms {
        let _ = plane.send(
            room,
            pb::command::Body::CloseRoom(pb::CloseRoom { room_id: room.0 }),
        );
        plane.detach(room);
    }
    writer.abort();
}

fn lock(s: &Mutex<Served>) -> std::sync::MutexGuard<'_, Served> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// The owner's end of a link to one node.
#[derive(Clone, Debug)]
pub struct Link {
    pub plane: MediaPlane,
    pub up: Arc<AtomicBool>,
}

impl Link {
    /// Whether the link may still carry commands (it is connecting or connected).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

/// Opens a link to the node whose HTTP server is at `http`. Commands sent before it is
/// connected wait in its queue; if it cannot connect, or when it ends, every room with
/// something on it is told that each of those transports closed.
pub fn connect(cluster: &Arc<Cluster>, node: &str, http: std::net::SocketAddr) -> Link {
    let (tx, rx) = mpsc::unbounded_channel::<pb::Command>();
    let plane = MediaPlane::remote(tx);
    let up = Arc::new(AtomicBool::new(true));
    let link = Link {
        plane: plane.clone(),
        up: up.clone(),
    };
    let (cluster, node) = (cluster.clone(), node.to_owned());
    tokio::spawn(async move {
        match open(&cluster, http).await {
            Ok(ws) => {
                tracing::info!(%node, "cluster: media link open");
                run_owner(ws, rx, &plane).await;
                tracing::warn!(%node, "cluster: media link lost");
            }
            Err(e) => tracing::warn!(%node, error = %e, "cluster: cannot open a media link"),
        }
        up.store(false, Ordering::Relaxed);
        for lost in plane.lost() {
            let mailbox = &lost.mailbox;
            for id in lost.requests {
                mailbox(prism_forwarder::control::error_event(
                    id,
                    format!("media node {node} lost"),
                ));
            }
            for id in lost.objects {
                mailbox(pb::Event {
                    request_id: 0,
                    body: Some(pb::event::Body::TransportClosed(pb::TransportClosed {
                        transport_id: id,
                        reason: format!("media node {node} lost"),
                    })),
                });
            }
        }
    });
    link
}

async fn open(
    cluster: &Cluster,
    http: std::net::SocketAddr,
) -> Result<WebSocketStream<tokio::net::TcpStream>, String> {
    let mut req = format!("ws://{http}{PATH}")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let h = req.headers_mut();
    h.insert(
        PEER_HEADER,
        HeaderValue::from_str(&cluster.id).map_err(|e| e.to_string())?,
    );
    h.insert(
        AUTH_HEADER,
        HeaderValue::from_str(&peer::sign(
            &cluster.secret,
            &cluster.id,
            &http.to_string(),
            "GET",
            PATH,
        ))
        .map_err(|e| e.to_string())?,
    );
    let tcp = tokio::time::timeout(PEER_TIMEOUT, tokio::net::TcpStream::connect(http))
        .await
        .map_err(|_| format!("connecting to {http} timed out"))?
        .map_err(|e| format!("{http}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let hs = tokio_tungstenite::client_async_with_config(req, tcp, Some(ws_config()));
    match tokio::time::timeout(PEER_TIMEOUT * 2, hs).await {
        Err(_) => Err(format!("{http} did not answer")),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(format!("{http}: {e}")),
    }
}

async fn run_owner<S>(
    ws: WebSocketStream<S>,
    mut rx: mpsc::UnboundedReceiver<pb::Command>,
    plane: &MediaPlane,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return };
                if sink.send(Message::Binary(cmd.encode_to_vec().into())).await.is_err() {
                    return;
                }
            }
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) => match pb::Event::decode(b.as_ref()) {
                    Ok(ev) => plane.deliver(ev),
                    Err(e) => tracing::warn!(error = %e, "cluster: undecodable event on a media link"),
                },
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    }
}
