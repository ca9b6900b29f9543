//! Where `/rtc` sessions and RoomService calls go in cluster mode, decided before the
//! single-node handlers run (they stay as they are and serve whatever is local).
//!
//! - `/rtc`: the token was checked by the caller (refusals stay HTTP statuses). A session
//!   another node carried here is served only if this node owns the room now (else 503
//!   marked not-owner, and that node looks again); a client's session is routed: the room
//!   found or placed and claimed, served here or proxied to its owner, up to
//!   [`ATTEMPTS`] times when an owner turns out to have lost the room meanwhile.
//! - RoomService: ListRooms is answered from the directory (the same on every node);
//!   CreateRoom places and claims, then runs on the owner; every other call runs on the
//!   room's owner, forwarded with the caller's token (the owner checks grants again). A
//!   room no live node owns is `not_found`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use prism_proto::livekit as lk;
use prost_reflect::{DynamicMessage, MethodDescriptor};

use super::peer::{self, PeerCheck, ProxyError};
use super::{Cluster, Route, RouteError};
use crate::auth::Claims;
use crate::http::{text, Body};
use crate::twirp::codec::{self, Codec};
use crate::twirp::{Code, TwirpError};

/// How many owners a session is tried on before the client gets 503.
pub const ATTEMPTS: usize = 3;

/// What to do with an `/rtc` request.
#[derive(Debug)]
pub enum Rtc {
    /// Serve it here.
    Local,
    /// Answered (proxied, refused).
    Done(Response<Body>),
}

fn forged(cluster: &Cluster, why: &str) -> Response<Body> {
    cluster
        .counters
        .forged_refused
        .fetch_add(1, Ordering::Relaxed);
    tracing::warn!(why, "refused a node-to-node request");
    text(StatusCode::FORBIDDEN, why.to_owned())
}

fn not_owner() -> Response<Body> {
    let mut r = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "this node does not own the room",
    );
    r.headers_mut()
        .insert(peer::NOT_OWNER_HEADER, HeaderValue::from_static("1"));
    r
}

/// Routes `/rtc` for `room`; `resume`: the client's `reconnect=1`.
pub async fn rtc(
    cluster: &Arc<Cluster>,
    req: &mut Request<Incoming>,
    room: &str,
    resume: bool,
) -> Rtc {
    match peer::check(&cluster.secret, req) {
        PeerCheck::Forged(why) => return Rtc::Done(forged(cluster, why)),
        // A resume is answered with a leave wherever it lands.
        PeerCheck::Peer(_) if resume || cluster.owns(room).await => return Rtc::Local,
        PeerCheck::Peer(_) => return Rtc::Done(not_owner()),
        PeerCheck::Client => {}
    }
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        match cluster.route(room, !resume).await {
            Ok(Route::Local) => return Rtc::Local,
            Err(RouteError::NotFound) => return Rtc::Local,
            Err(e) => return Rtc::Done(e.response()),
            Ok(Route::Remote(node, addr)) => {
                match peer::proxy_ws(cluster.clone(), addr, req).await {
                    Ok(r) => return Rtc::Done(r),
                    Err(ProxyError::NotOwner) => last = format!("node {node} gave the room up"),
                    Err(ProxyError::Unreachable(e)) => {
                        tracing::warn!(%node, error = %e, "cluster: the room's owner is unreachable");
                        last = e;
                    }
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    Rtc::Done(
        RouteError::Unavailable(format!("the room's owner cannot be reached: {last}")).response(),
    )
}

/// Refuses a forged node-to-node Twirp request; `Ok(true)` for a genuine one.
pub fn twirp_peer<B>(cluster: &Cluster, req: &Request<B>) -> Result<bool, TwirpError> {
    match peer::check(&cluster.secret, req) {
        PeerCheck::Client => Ok(false),
        PeerCheck::Peer(_) => Ok(true),
        PeerCheck::Forged(why) => {
            cluster
                .counters
                .forged_refused
                .fetch_add(1, Ordering::Relaxed);
            Err(TwirpError::new(Code::PermissionDenied, why))
        }
    }
}

/// A string field of a request, whatever its encoding; `None` if it does not decode
/// (the local handler then answers `malformed`).
fn field(codec: Codec, method: &MethodDescriptor, body: &[u8], name: &str) -> Option<String> {
    let msg = match codec {
        Codec::Protobuf => DynamicMessage::decode(method.input(), body).ok()?,
        Codec::Json => codec::json_to_dynamic(&method.input(), body).ok()?,
    };
    msg.get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_owned))
}

/// One RoomService call as the cluster sees it.
#[derive(Debug)]
pub struct TwirpCall<'a> {
    pub cluster: &'a Arc<Cluster>,
    pub claims: &'a Claims,
    pub codec: Codec,
    pub method: &'a MethodDescriptor,
    pub body: &'a Bytes,
    /// `/twirp/livekit.RoomService/<Method>`.
    pub path: &'a str,
    pub content_type: &'a str,
    pub authorization: Option<&'a HeaderValue>,
    /// Carried here by another node.
    pub from_peer: bool,
}

impl TwirpCall<'_> {
    /// `Ok(None)`: serve it here; `Ok(Some)`: the answer.
    pub async fn route(self) -> Result<Option<Response<Body>>, TwirpError> {
        let unavailable = |e: super::StoreError| TwirpError::new(Code::Unavailable, e.to_string());
        let name = self.method.name();
        if self.from_peer {
            if name == "CreateRoom" {
                let room = field(self.codec, self.method, self.body, "name").unwrap_or_default();
                if !room.is_empty() && !self.cluster.owns(&room).await {
                    return Err(TwirpError::new(
                        Code::Unavailable,
                        "this node does not own the room",
                    ));
                }
            }
            return Ok(None);
        }
        if name == "ListRooms" {
            let req: lk::ListRoomsRequest =
                codec::decode(self.codec, &self.method.input(), self.body)?;
            self.claims.ensure_list()?;
            let rooms = self
                .cluster
                .list_rooms()
                .await
                .map_err(unavailable)?
                .into_iter()
                .filter(|r| req.names.is_empty() || req.names.contains(&r.name))
                .collect();
            let out = codec::encode(
                self.codec,
                &self.method.output(),
                &lk::ListRoomsResponse { rooms },
            )?;
            let mut r = Response::new(http_body_util::Full::new(Bytes::from(out)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static(self.codec.content_type()),
            );
            return Ok(Some(r));
        }
        let create = name == "CreateRoom";
        let Some(room) = field(
            self.codec,
            self.method,
            self.body,
            if create { "name" } else { "room" },
        )
        .filter(|r| !r.is_empty()) else {
            return Ok(None);
        };
        if create || name == "DeleteRoom" {
            self.claims.ensure_create()?;
        } else {
            self.claims.ensure_admin(&room)?;
        }
        let route = match self.cluster.route(&room, create).await {
            Ok(r) => r,
            Err(RouteError::NotFound) => {
                if name == "DeleteRoom" {
                    self.cluster.forget(&room).await.map_err(unavailable)?;
                }
                return Err(TwirpError::room_not_found());
            }
            Err(RouteError::Unavailable(why)) => {
                return Err(TwirpError::new(Code::Unavailable, why))
            }
        };
        match route {
            Route::Local => Ok(None),
            Route::Remote(node, addr) => peer::forward_twirp(
                self.cluster,
                addr,
                self.path,
                self.content_type,
                self.authorization,
                self.body.clone(),
            )
            .await
            .map(Some)
            .map_err(|e| {
                TwirpError::new(
                    Code::Unavailable,
                    format!("the room's owner {node} cannot be reached: {e}"),
                )
            }),
        }
    }
}
