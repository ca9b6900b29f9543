//! Where `/rtc` sessions and RoomService calls go in cluster mode, decided before the
//! single-node handlers run (they stay as they are and serve whatever is local).
//!
//! - `/rtc`: the token was checked by the caller (refusals stay HTTP statuses). A session
//!   another node carried here is served only if this node owns the room now (else 503
//!   marked not-owner, and that node looks again); a client's session is routed: the room
//!   found or placed and claimed, served here or proxied to its owner, up to
//!   [`ATTEMPTS`] times when an owner turns out to have lost the room meanwhile. A
//!   client's resume (`reconnect=1`) is answered where it lands, with the leave every
//!   resume gets (sessions are not kept across signal reconnections).
//! - RoomService: ListRooms is answered from the directory (the same on every node);
//!   CreateRoom places and claims, then runs on the owner; every other call runs on the
//!   room's owner, forwarded with the caller's token (the owner checks grants again). A
//!   room no live node owns is `not_found`.
//! - Egress and Ingress: a call naming a room (`room_name`) runs on its owner, forwarded
//!   the same way; ListEgress and ListIngress naming none gather every live node's
//!   items; another call naming none, or a room no node owns, runs here, and one naming
//!   only an id that this node does not know is asked of the other live nodes in turn.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
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

/// Found by its ingress id, whatever room it names.
const UPDATE_INGRESS: &str = "UpdateIngress";

/// How many owners a session is tried on before the client gets 503.
pub const ATTEMPTS: usize = 3;

/// What to do with an `/rtc` request.
#[derive(Debug)]
pub enum Rtc {
    /// Serve it here.
    Local,
    /// Serve it here, for a client that reached the room through that other node.
    Via(String),
    /// Answered (proxied, refused).
    Done(Response<Body>),
}

pub(super) fn forged(cluster: &Cluster, why: &str) -> Response<Body> {
    cluster
        .counters
        .forged_refused
        .fetch_add(1, Ordering::Relaxed);
    tracing::warn!(why, "refused a node-to-node request");
    text(StatusCode::FORBIDDEN, why.to_owned())
}

pub(super) fn replayed(cluster: &Cluster) -> Response<Body> {
    cluster
        .counters
        .replayed_refused
        .fetch_add(1, Ordering::Relaxed);
    tracing::warn!("refused a replayed node-to-node request");
    text(StatusCode::FORBIDDEN, REPLAYED)
}

/// The refusal of a replayed node-to-node request.
pub const REPLAYED: &str = "replayed node-to-node request";

pub(super) fn not_owner() -> Response<Body> {
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
    match peer::check(&cluster.verifier(), req) {
        PeerCheck::Forged(why) => return Rtc::Done(forged(cluster, why)),
        PeerCheck::Replayed => return Rtc::Done(replayed(cluster)),
        // A resume is answered with a leave wherever it lands.
        PeerCheck::Peer(node) if resume || cluster.owns(room).await => return Rtc::Via(node),
        PeerCheck::Peer(_) => return Rtc::Done(not_owner()),
        // Sessions are not kept across signal reconnections: a resume is answered here
        // with `LeaveRequest{action: RECONNECT}`, as the owner would, without waiting on
        // an owner that may be dead or stalled (the SDK then joins again at once).
        PeerCheck::Client if resume => return Rtc::Local,
        PeerCheck::Client => {}
    }
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        match cluster.route(room, true).await {
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
    match peer::check(&cluster.verifier(), req) {
        PeerCheck::Client => Ok(false),
        PeerCheck::Peer(_) => Ok(true),
        PeerCheck::Replayed => {
            cluster
                .counters
                .replayed_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!("refused a replayed node-to-node request");
            Err(TwirpError::new(Code::PermissionDenied, REPLAYED))
        }
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
        if self.method.parent_service().full_name() != crate::twirp::room_service::SERVICE {
            return self.route_by_room_name().await;
        }
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
        self.run_on(route).await
    }

    /// Egress and Ingress calls: those naming a room (`room_name`) run on its owner; the
    /// rest, and rooms no node owns, here. The owner checks grants.
    async fn route_by_room_name(self) -> Result<Option<Response<Body>>, TwirpError> {
        // UpdateIngress names the room the ingress is to go to, not where it lives: it is
        // found by its id.
        if self.from_peer || self.method.name() == UPDATE_INGRESS {
            return Ok(None);
        }
        let Some(room) =
            field(self.codec, self.method, self.body, "room_name").filter(|r| !r.is_empty())
        else {
            return match self.method.name() {
                "ListEgress" | "ListIngress" => Ok(self.list_everywhere().await),
                _ => Ok(None),
            };
        };
        match self.cluster.route(&room, false).await {
            Ok(route) => self.run_on(route).await,
            Err(RouteError::NotFound) => Ok(None),
            Err(RouteError::Unavailable(why)) => Err(TwirpError::new(Code::Unavailable, why)),
        }
    }

    /// ListEgress or ListIngress naming no room (all, or by id): every live node's items,
    /// this node's included (asked like the others). `None` (served here alone) when the
    /// directory cannot be read; a node that does not answer is left out; a refusal
    /// (grants) is relayed as it came.
    async fn list_everywhere(&self) -> Option<Response<Body>> {
        let nodes = self.cluster.nodes().await.ok()?;
        let mut egress = lk::ListEgressResponse::default();
        let mut ingress = lk::ListIngressResponse::default();
        let output = self.method.output();
        for n in nodes {
            let Ok(addr) = n.http.parse() else {
                continue;
            };
            let answer = self.forward_to(addr).await;
            let r = match answer {
                Ok(r) if r.status() == StatusCode::OK => r,
                Ok(refused) => return Some(refused),
                Err(e) => {
                    tracing::debug!(node = %n.id, error = %e, "cluster: a node did not answer");
                    continue;
                }
            };
            // A relayed answer is whole already: collecting it cannot fail.
            let Ok(body) = r.into_body().collect().await.map(|b| b.to_bytes());
            if self.method.name() == "ListEgress" {
                let part: Result<lk::ListEgressResponse, _> =
                    codec::decode(self.codec, &output, &body);
                egress.items.extend(part.ok()?.items);
            } else {
                let part: Result<lk::ListIngressResponse, _> =
                    codec::decode(self.codec, &output, &body);
                ingress.items.extend(part.ok()?.items);
            }
        }
        let out = if self.method.name() == "ListEgress" {
            codec::encode(self.codec, &output, &egress)
        } else {
            codec::encode(self.codec, &output, &ingress)
        }
        .ok()?;
        let mut r = Response::new(http_body_util::Full::new(Bytes::from(out)));
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static(self.codec.content_type()),
        );
        Some(r)
    }

    /// An Egress or Ingress call naming no room (an egress or ingress id alone) that this
    /// node answered `not_found`: the first other live node that knows the id answers
    /// it. `None`: none does (or the call names a room: it was routed already).
    pub async fn find_elsewhere(self) -> Option<Response<Body>> {
        let named = field(self.codec, self.method, self.body, "room_name");
        if self.method.name() != UPDATE_INGRESS && named.is_some_and(|r| !r.is_empty()) {
            return None;
        }
        let nodes = self.cluster.nodes().await.ok()?;
        for n in nodes.into_iter().filter(|n| n.id != self.cluster.id) {
            let Ok(addr) = n.http.parse() else {
                continue;
            };
            let answer = self.forward_to(addr).await;
            match answer {
                Ok(r) if r.status() != StatusCode::NOT_FOUND => return Some(r),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(node = %n.id, error = %e, "cluster: a node did not answer")
                }
            }
        }
        None
    }

    /// The call as it came, carried to the node at `addr`.
    async fn forward_to(&self, addr: SocketAddr) -> Result<Response<Body>, String> {
        peer::forward_twirp(
            self.cluster,
            addr,
            self.path,
            self.content_type,
            self.authorization,
            self.body.clone(),
        )
        .await
    }

    /// Serves the call here, or forwards it to the owner.
    async fn run_on(self, route: Route) -> Result<Option<Response<Body>>, TwirpError> {
        match route {
            Route::Local => Ok(None),
            Route::Remote(node, addr) => self.forward_to(addr).await.map(Some).map_err(|e| {
                TwirpError::new(
                    Code::Unavailable,
                    format!("the room's owner {node} cannot be reached: {e}"),
                )
            }),
        }
    }
}
