//! Node-to-node requests: how one node carries a client's request to the room's owner.
//!
//! - Signing: a request between nodes carries `x-prism-peer: <node id>` and
//!   `x-prism-auth: <unix ms>:<nonce>:<hex HMAC-SHA256>` over the node id, the time, a
//!   random 64-bit nonce, the receiving node's internal address, the method and the path
//!   with its query, keyed with the cluster secret. The receiver refuses with 403 a
//!   request whose signature does not verify (forged, no secret, or signed for another
//!   node), whose time is more than [`MAX_SKEW_MS`] away from its own (an old one), or
//!   whose signature it has already accepted (a replay: [`super::replay`] remembers every
//!   accepted signature while it could still verify).
//! - `/rtc`: the WebSocket is proxied, not redirected (browsers and LiveKit's SDKs fail a
//!   handshake that is not 101). The ingress opens the same `/rtc?…` on the owner with the
//!   client's token; only once the owner has answered 101 is the client upgraded, and
//!   any other answer (a refusal, a 503 from an owner that lost its room) is relayed as
//!   it came. Then messages are spliced both ways without being parsed; WebSocket pings
//!   are answered at each hop.
//! - Twirp, WHIP and WHEP: the request (method, path, body, content type and token) is
//!   sent to the owner as it came, and its answer relayed (status, headers, body); the
//!   owner checks the token and grants again.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
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

use super::replay::{Admit, Seen};
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

fn mac(
    secret: &[u8],
    node: &str,
    ts: i64,
    nonce: &str,
    target: &str,
    method: &str,
    path: &str,
) -> Hmac<Sha256> {
    // A key of any length is accepted by HMAC.
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key");
    m.update(format!("{node}\n{ts}\n{nonce}\n{target}\n{method}\n{path}").as_bytes());
    m
}

/// The `x-prism-auth` value for a request from `node` to the node whose internal address
/// is `target`.
pub fn sign(secret: &[u8], node: &str, target: &str, method: &str, path: &str) -> String {
    let ts = now_ms();
    let nonce = format!(
        "{:08x}{:08x}",
        crate::media::random_u32(),
        crate::media::random_u32()
    );
    let tag = mac(secret, node, ts, &nonce, target, method, path)
        .finalize()
        .into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("{ts}:{nonce}:{hex}")
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
    /// A node's signature accepted before: a captured request sent again.
    Replayed,
}

/// What a node checks a node-to-node request against.
#[derive(Debug)]
pub struct Verifier<'a> {
    pub secret: &'a [u8],
    /// This node's internal address, as other nodes sign for it.
    pub me: &'a str,
    pub seen: &'a Mutex<Seen>,
}

/// Checks the peer headers of `req`.
pub fn check<B>(v: &Verifier<'_>, req: &Request<B>) -> PeerCheck {
    let get = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let (node, auth) = match (get(PEER_HEADER), get(AUTH_HEADER)) {
        (None, None) => return PeerCheck::Client,
        (Some(n), Some(a)) => (n, a),
        _ => return PeerCheck::Forged("incomplete node-to-node headers"),
    };
    let mut parts = auth.splitn(3, ':');
    let (Some(ts), Some(nonce), Some(hex)) = (parts.next(), parts.next(), parts.next()) else {
        return PeerCheck::Forged("malformed x-prism-auth");
    };
    let Ok(ts) = ts.parse::<i64>() else {
        return PeerCheck::Forged("malformed x-prism-auth");
    };
    if nonce.len() != 16 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return PeerCheck::Forged("malformed x-prism-auth");
    }
    let now = now_ms();
    if (now - ts).abs() > MAX_SKEW_MS {
        return PeerCheck::Forged("stale node-to-node request");
    }
    let mut tag = [0u8; 32];
    if hex.len() != 64 {
        return PeerCheck::Forged("malformed x-prism-auth");
    }
    for (i, b) in tag.iter_mut().enumerate() {
        match hex
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            Some(x) => *b = x,
            None => return PeerCheck::Forged("malformed x-prism-auth"),
        }
    }
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let m = mac(v.secret, node, ts, nonce, v.me, req.method().as_str(), path);
    if m.verify_slice(&tag).is_err() {
        return PeerCheck::Forged("bad node-to-node signature");
    }
    // Only a genuine signature is remembered: forgeries cannot fill the cache.
    let mut key = [0u8; 16];
    key.copy_from_slice(&tag[..16]);
    let admitted = v.seen.lock().unwrap_or_else(|p| p.into_inner()).admit(
        u128::from_be_bytes(key),
        ts + MAX_SKEW_MS,
        now,
    );
    match admitted {
        Admit::Fresh => PeerCheck::Peer(node.to_owned()),
        Admit::Replayed => PeerCheck::Replayed,
        Admit::Full => PeerCheck::Forged("too many node-to-node requests"),
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
        HeaderValue::from_str(&sign(
            &cluster.secret,
            &cluster.id,
            &owner.to_string(),
            "GET",
            &path,
        ))
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
    let r = forward(
        cluster,
        owner,
        Forward {
            method: hyper::Method::POST,
            path,
            content_type,
            authorization,
            body,
        },
    )
    .await;
    if r.is_ok() {
        cluster
            .counters
            .forwarded_calls
            .fetch_add(1, Ordering::Relaxed);
    }
    r
}

/// An HTTP request carried to another node as it came from the client.
#[derive(Debug)]
pub struct Forward<'a> {
    pub method: hyper::Method,
    /// Path and query.
    pub path: &'a str,
    pub content_type: &'a str,
    pub authorization: Option<&'a HeaderValue>,
    pub body: Bytes,
}

/// Response headers not relayed: about the hop, not the answer.
const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "upgrade",
];

/// Sends `req`, signed, to the node at `owner` and relays its answer (status, headers
/// but the hop-by-hop ones, body).
pub async fn forward(
    cluster: &Cluster,
    owner: SocketAddr,
    req: Forward<'_>,
) -> Result<Response<Body>, String> {
    let work = async {
        let tcp = tokio::net::TcpStream::connect(owner)
            .await
            .map_err(|e| format!("{owner}: {e}"))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("{owner}: {e}"))?;
        tokio::spawn(conn);
        let auth = sign(
            &cluster.secret,
            &cluster.id,
            &owner.to_string(),
            req.method.as_str(),
            req.path,
        );
        let mut b = Request::builder()
            .method(req.method)
            .uri(req.path)
            .header(hyper::header::HOST, owner.to_string())
            .header(PEER_HEADER, cluster.id.as_str())
            .header(AUTH_HEADER, auth);
        if !req.content_type.is_empty() {
            b = b.header(CONTENT_TYPE, req.content_type);
        }
        if let Some(a) = req.authorization {
            b = b.header(AUTHORIZATION, a.clone());
        }
        let out = b.body(Full::new(req.body)).map_err(|e| e.to_string())?;
        let resp = send
            .send_request(out)
            .await
            .map_err(|e| format!("{owner}: {e}"))?;
        let (parts, body) = resp.into_parts();
        let bytes = http_body_util::Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("{owner}: {e}"))?
            .to_bytes();
        let mut r = Response::new(Full::new(bytes));
        *r.status_mut() = parts.status;
        for (k, v) in &parts.headers {
            if !HOP_BY_HOP.contains(&k.as_str()) {
                r.headers_mut().append(k.clone(), v.clone());
            }
        }
        Ok(r)
    };
    tokio::time::timeout(PEER_TIMEOUT * 2, work)
        .await
        .map_err(|_| format!("{owner} did not answer in time"))?
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

    fn hex(tag: &[u8]) -> String {
        tag.iter().map(|b| format!("{b:02x}")).collect()
    }

    const SECRET: &[u8] = b"cluster secret";
    const ME: &str = "10.0.0.2:7880";

    /// This node (`ME`) checking requests signed with `SECRET`, remembering them in `seen`.
    fn verifier(seen: &Mutex<Seen>) -> Verifier<'_> {
        Verifier {
            secret: SECRET,
            me: ME,
            seen,
        }
    }

    #[test]
    fn signatures_verify_and_forgeries_do_not() {
        let (secret, me) = (SECRET, ME);
        let seen = Mutex::new(Seen::default());
        let v = verifier(&seen);
        let path = "/rtc?access_token=x&auto_subscribe=1";
        let auth = sign(secret, "ND_a", me, "GET", path);
        let good = req("GET", path, &[(PEER_HEADER, "ND_a"), (AUTH_HEADER, &auth)]);
        assert_eq!(check(&v, &good), PeerCheck::Peer("ND_a".into()));
        assert_eq!(check(&v, &req("GET", path, &[])), PeerCheck::Client);
        // Another secret, another node name, another path, another method, another
        // receiver: each a forgery, checked on a fresh signature.
        let fresh = || sign(secret, "ND_a", me, "GET", path);
        let other = Verifier {
            secret: b"other",
            ..v
        };
        let a = fresh();
        let r = req("GET", path, &[(PEER_HEADER, "ND_a"), (AUTH_HEADER, &a)]);
        assert!(matches!(check(&other, &r), PeerCheck::Forged(_)));
        let elsewhere = Verifier {
            me: "10.0.0.3:7880",
            ..v
        };
        assert_eq!(
            check(&elsewhere, &r),
            PeerCheck::Forged("bad node-to-node signature"),
            "signed for another node"
        );
        let renamed = req(
            "GET",
            path,
            &[(PEER_HEADER, "ND_b"), (AUTH_HEADER, &fresh())],
        );
        assert!(matches!(check(&v, &renamed), PeerCheck::Forged(_)));
        let moved = req(
            "GET",
            "/rtc?access_token=y",
            &[(PEER_HEADER, "ND_a"), (AUTH_HEADER, &fresh())],
        );
        assert!(matches!(check(&v, &moved), PeerCheck::Forged(_)));
        let posted = req(
            "POST",
            path,
            &[(PEER_HEADER, "ND_a"), (AUTH_HEADER, &fresh())],
        );
        assert!(matches!(check(&v, &posted), PeerCheck::Forged(_)));
        // Missing or garbled parts, and an old signature.
        for bad in [
            "",
            "12",
            "x:y",
            "1:zz",
            "1:00",
            "1:0123456789abcdef:00",
            "1::00",
        ] {
            let r = req("GET", path, &[(PEER_HEADER, "ND_a"), (AUTH_HEADER, bad)]);
            assert!(matches!(check(&v, &r), PeerCheck::Forged(_)), "{bad}");
        }
        let only = req("GET", path, &[(PEER_HEADER, "ND_a")]);
        assert!(matches!(check(&v, &only), PeerCheck::Forged(_)));
        let ts = now_ms() - 2 * MAX_SKEW_MS;
        let nonce = "0123456789abcdef";
        let tag = mac(secret, "ND_a", ts, nonce, me, "GET", path)
            .finalize()
            .into_bytes();
        let old = req(
            "GET",
            path,
            &[
                (PEER_HEADER, "ND_a"),
                (AUTH_HEADER, &format!("{ts}:{nonce}:{}", hex(&tag))),
            ],
        );
        assert_eq!(
            check(&v, &old),
            PeerCheck::Forged("stale node-to-node request")
        );
        // Forgeries are not remembered: only the one good request is.
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_replayed_request_is_refused() {
        let (secret, me) = (SECRET, ME);
        let seen = Mutex::new(Seen::default());
        let v = verifier(&seen);
        let path = "/twirp/livekit.RoomService/ListParticipants";
        let auth = sign(secret, "ND_a", me, "POST", path);
        let r = req("POST", path, &[(PEER_HEADER, "ND_a"), (AUTH_HEADER, &auth)]);
        assert_eq!(check(&v, &r), PeerCheck::Peer("ND_a".into()));
        assert_eq!(check(&v, &r), PeerCheck::Replayed);
        assert_eq!(check(&v, &r), PeerCheck::Replayed);
        // The same request signed again has another nonce: not a replay.
        let again = sign(secret, "ND_a", me, "POST", path);
        assert_ne!(again, auth);
        let r2 = req(
            "POST",
            path,
            &[(PEER_HEADER, "ND_a"), (AUTH_HEADER, &again)],
        );
        assert_eq!(check(&v, &r2), PeerCheck::Peer("ND_a".into()));
        // Another node keeps its own memory, but the signature names its receiver.
        let seen_b = Mutex::new(Seen::default());
        let b = Verifier {
            secret,
            me: "10.0.0.3:7880",
            seen: &seen_b,
        };
        assert!(matches!(check(&b, &r), PeerCheck::Forged(_)));
    }
}
