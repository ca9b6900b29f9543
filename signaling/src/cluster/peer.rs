//! Node-to-node requests: how one node carries a client's request to the room's owner.
//!
//! - Signing: a request between nodes carries `x-prism-peer: <node id>` and
//!   `x-prism-auth: <unix ms>:<hex HMAC-SHA256>` over the node id, the time, the method
//!   and the path with its query, keyed with the cluster secret. The owner refuses a
//!   request whose signature does not verify (forged, or no secret) or whose time is more
//!   than [`MAX_SKEW_MS`] away from its own (an old one replayed), with 403.
//! - `/rtc`: the WebSocket is proxied, not redirected (browsers and LiveKit's SDKs fail a
//!   handshake that is not 101). The ingress opens the same `/rtc?…` on the owner with the
//!   client's token; only once the owner has answered 101 is the client upgraded, and
//!   any other answer (a refusal, a 503 from an owner that lost its room) is relayed as
//!   it came. Then messages are spliced both ways without being parsed; WebSocket pings
//!   are answered at each hop.
//! - Twirp: the request body, content type and token are posted to the owner's
//!   `/twirp/…`, and its answer relayed; the owner checks grants again.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, SEC_WEBSOCKET_KEY};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::Cluster;
use crate::http::{text, Body};

pub const PEER_HEADER: &str = "x-prism-peer";
pub const AUTH_HEADER: &str = "x-prism-auth";
/// Set by an owner refusing a session for a room it does not own (any more): the ingress
/// looks the owner up again.
pub const NOT_OWNER_HEADER: &str = "x-prism-not-owner";

/// How far a signed request's time may be from the receiver's clock.
pub const MAX_SKEW_MS: i64 = 30_000;
/// How long connecting to, and hearing back from, another node may take.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest Twirp answer relayed.
const MAX_ANSWER: usize = 4 << 20;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn mac(secret: &[u8], node: &str, ts: i64, method: &str, path: &str) -> Hmac<Sha256> {
    // A key of any length is accepted by HMAC.
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key");
    m.update(format!("{node}\n{ts}\n{method}\n{path}").as_bytes());
    m
}

/// The `x-prism-auth` value for a request from `node`.
pub fn sign(secret: &[u8], node: &str, method: &str, path: &str) -> String {
    let ts = now_ms();
    let tag = mac(secret, node, ts, method, path).finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("{ts}:{hex}")
}

/// What a request says about being from another node.
#[derive(Debug, PartialEq, Eq)]
pub enum PeerCheck {
    /// A client's request.
    Client,
    /// A node's, signed with the cluster secret.
    Peer(String),
    /// Claims to be a node's and is not (why).
    Forged(&'static str),
}

/// Checks the peer headers of `req` against `secret`.
pub fn check<B>(secret: &[u8], req: &Request<B>) -> PeerCheck {
    let get = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let (node, auth) = match (get(PEER_HEADER), get(AUTH_HEADER)) {
        (None, None) => return PeerCheck::Client,
        (Some(n), Some(a)) => (n, a),
        _ => return PeerCheck::Forged("incomplete node-to-node headers"),
    };
    let Some((ts, hex)) = auth.split_once(':') else {
        return PeerCheck::Forged("malformed x-prism-auth");
    };
    let Ok(ts) = ts.parse::<i64>() else {
        return PeerCheck::Forged("malformed x-prism-auth");
    };
    if (now_ms() - ts).abs() > MAX_SKEW_MS {
        return PeerCheck::Forged("stale node-to-node request");
    }
    let tag: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    let Some(tag) = tag.filter(|t| t.len() == 32) else {
        return PeerCheck::Forged("malformed x-prism-auth");
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    match mac(secret, node, ts, req.method().as_str(), path).verify_slice(&tag) {
        Ok(()) => PeerCheck::Peer(node.to_owned()),
        Err(_) => PeerCheck::Forged("bad node-to-node signature"),
    }
}

/// Why a session could not be carried to the owner.
#[derive(Debug)]
pub enum ProxyError {
    /// The owner no longer owns the room: look again.
    NotOwner,
    /// The owner could not be reached.
    Unreachable(String),
}

/// Carries a client's `/rtc` WebSocket to the owner at `owner`. `Ok` is the answer to
/// give the client: the owner's refusal as it came, or 101 with the splice running.
pub async fn proxy_ws(
    cluster: Arc<Cluster>,
    owner: SocketAddr,
    req: &mut Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY).cloned() else {
        return Ok(text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key"));
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or("/rtc", |p| p.as_str())
        .to_owned();
    let mut up = format!("ws://{owner}{path}")
        .into_client_request()
        .map_err(|e| ProxyError::Unreachable(e.to_string()))?;
    let h = up.headers_mut();
    if let Some(a) = req.headers().get(AUTHORIZATION) {
        h.insert(AUTHORIZATION, a.clone());
    }
    h.insert(
        PEER_HEADER,
        HeaderValue::from_str(&cluster.id).map_err(|e| ProxyError::Unreachable(e.to_string()))?,
    );
    h.insert(
        AUTH_HEADER,
        HeaderValue::from_str(&sign(&cluster.secret, &cluster.id, "GET", &path))
            .map_err(|e| ProxyError::Unreachable(e.to_string()))?,
    );
    let config = WebSocketConfig::default()
        .max_message_size(Some(crate::livekit::ws::MAX_FRAME))
        .max_frame_size(Some(crate::livekit::ws::MAX_FRAME));
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(owner).await?;
        let _ = tcp.set_nodelay(true);
        Ok::<_, std::io::Error>(tcp)
    };
    let tcp = tokio::time::timeout(PEER_TIMEOUT, connect)
        .await
        .map_err(|_| ProxyError::Unreachable(format!("connecting to {owner} timed out")))?
        .map_err(|e| ProxyError::Unreachable(format!("{owner}: {e}")))?;
    let hs = tokio_tungstenite::client_async_with_config(up, tcp, Some(config));
    let upstream = match tokio::time::timeout(PEER_TIMEOUT * 2, hs).await {
        Err(_) => return Err(ProxyError::Unreachable(format!("{owner} did not answer"))),
        Ok(Ok((ws, _))) => ws,
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            if resp.headers().contains_key(NOT_OWNER_HEADER) {
                return Err(ProxyError::NotOwner);
            }
            let body = resp.body().clone().unwrap_or_default();
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = resp.status();
            if let Some(ct) = resp.headers().get(CONTENT_TYPE) {
                r.headers_mut().insert(CONTENT_TYPE, ct.clone());
            }
            return Ok(r);
        }
        Ok(Err(e)) => return Err(ProxyError::Unreachable(format!("{owner}: {e}"))),
    };
    cluster
        .counters
        .proxied_sessions
        .fetch_add(1, Ordering::Relaxed);
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(crate::livekit::ws::MAX_FRAME))
            .max_frame_size(Some(crate::livekit::ws::MAX_FRAME));
        let client =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        splice(&cluster, client, upstream).await;
    });
    Ok(crate::http::switching_protocols(&key))
}

/// Moves messages both ways until either side closes.
async fn splice<A, B>(cluster: &Cluster, a: WebSocketStream<A>, b: WebSocketStream<B>)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut a_tx, mut a_rx) = a.split();
    let (mut b_tx, mut b_rx) = b.split();
    let frames = &cluster.counters.proxied_frames;
    loop {
        tokio::select! {
            m = a_rx.next() => match m {
                Some(Ok(m @ (Message::Binary(_) | Message::Text(_)))) => {
                    frames.fetch_add(1, Ordering::Relaxed);
                    if b_tx.send(m).await.is_err() { break; }
                }
                Some(Ok(Message::Close(c))) => { let _ = b_tx.send(Message::Close(c)).await; break; }
                Some(Ok(_)) => {}
                _ => { let _ = b_tx.close().await; break; }
            },
            m = b_rx.next() => match m {
                Some(Ok(m @ (Message::Binary(_) | Message::Text(_)))) => {
                    frames.fetch_add(1, Ordering::Relaxed);
                    if a_tx.send(m).await.is_err() { break; }
                }
                Some(Ok(Message::Close(c))) => { let _ = a_tx.send(Message::Close(c)).await; break; }
                Some(Ok(_)) => {}
                _ => { let _ = a_tx.close().await; break; }
            },
        }
    }
    // Let the close frames go out.
    let _ = a_tx.flush().await;
    let _ = b_tx.flush().await;
}

/// Posts a Twirp request to the owner at `owner` and relays its answer.
pub async fn forward_twirp(
    cluster: &Cluster,
    owner: SocketAddr,
    path: &str,
    content_type: &str,
    authorization: Option<&HeaderValue>,
    body: Bytes,
) -> Result<Response<Body>, String> {
    let work = async {
        let tcp = tokio::net::TcpStream::connect(owner)
            .await
            .map_err(|e| format!("{owner}: {e}"))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("{owner}: {e}"))?;
        tokio::spawn(conn);
        let mut b = Request::post(path)
            .header(hyper::header::HOST, owner.to_string())
            .header(CONTENT_TYPE, content_type)
            .header(PEER_HEADER, cluster.id.as_str())
            .header(
                AUTH_HEADER,
                sign(&cluster.secret, &cluster.id, "POST", path),
            );
        if let Some(a) = authorization {
            b = b.header(AUTHORIZATION, a.clone());
        }
        let req = b.body(Full::new(body)).map_err(|e| e.to_string())?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("{owner}: {e}"))?;
        let status = resp.status();
        let ct = resp.headers().get(CONTENT_TYPE).cloned();
        let bytes = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("{owner}: {e}"))?
            .to_bytes();
        let mut r = Response::new(Full::new(bytes));
        *r.status_mut() = status;
        if let Some(ct) = ct {
            r.headers_mut().insert(CONTENT_TYPE, ct);
        }
        Ok(r)
    };
    let r = tokio::time::timeout(PEER_TIMEOUT * 2, work)
        .await
        .map_err(|_| format!("{owner} did not answer in time"))?;
    if r.is_ok() {
        cluster
            .counters
            .forwarded_calls
            .fetch_add(1, Ordering::Relaxed);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn signatures_verify_and_forgeries_do_not() {
        let secret = b"cluster secret";
        let path = "/rtc?access_token=x&auto_subscribe=1";
        let auth = sign(secret, "ND_a", "GET", path);
        let good = req("GET", path, &[(PEER_HEADER, "ND_a"), (AUTH_HEADER, &auth)]);
        assert_eq!(check(secret, &good), PeerCheck::Peer("ND_a".into()));
        assert_eq!(check(secret, &req("GET", path, &[])), PeerCheck::Client);
        // Another secret, another node name, another path, another method.
        assert!(matches!(check(b"other", &good), PeerCheck::Forged(_)));
        let renamed = req("GET", path, &[(PEER_HEADER, "ND_b"), (AUTH_HEADER, &auth)]);
        assert!(matches!(check(secret, &renamed), PeerCheck::Forged(_)));
        let moved = req(
            "GET",
            "/rtc?access_token=y",
            &[(PEER_HEADER, "ND_a"), (AUTH_HEADER, &auth)],
        );
        assert!(matches!(check(secret, &moved), PeerCheck::Forged(_)));
        let posted = req("POST", path, &[(PEER_HEADER, "ND_a"), (AUTH_HEADER, &auth)]);
        assert!(matches!(check(secret, &posted), PeerCheck::Forged(_)));
        // Missing or garbled parts, and an old signature replayed.
        for bad in ["", "12", "x:y", "1:zz", "1:00"] {
            let r = req("GET", path, &[(PEER_HEADER, "ND_a"), (AUTH_HEADER, bad)]);
            assert!(matches!(check(secret, &r), PeerCheck::Forged(_)), "{bad}");
        }
        let only = req("GET", path, &[(PEER_HEADER, "ND_a")]);
        assert!(matches!(check(secret, &only), PeerCheck::Forged(_)));
        let ts = now_ms() - 2 * MAX_SKEW_MS;
        let tag = mac(secret, "ND_a", ts, "GET", path).finalize().into_bytes();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        let old = req(
            "GET",
            path,
            &[(PEER_HEADER, "ND_a"), (AUTH_HEADER, &format!("{ts}:{hex}"))],
        );
        assert_eq!(
            check(secret, &old),
            PeerCheck::Forged("stale node-to-node request")
        );
    }
}
