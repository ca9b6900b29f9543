//! Where WHIP and WHEP requests go in cluster mode, decided after the token was checked
//! here and before the single-node handler runs (it stays as it is and serves what is
//! local).
//!
//! Why: a WHIP publisher or WHEP viewer may reach any node behind a load balancer, but
//! its media must terminate where the room lives. Unlike a WebSocket, a WHIP/WHEP session
//! is a handful of plain HTTP requests, so the request is forwarded rather than proxied:
//! the owner answers with its own media address in the SDP, and the client's ICE goes
//! straight there.
//!
//! How: a client's `POST /whip/{room}` places and claims a new room as a LiveKit join
//! does (`POST /whep/{room}` only finds it); when another node owns the room, the request
//! is sent there as it came (signed, see [`super::peer`]) and the owner's answer relayed,
//! `Location` included. The resource URL carries the room (`/whip/{room}/{session}`), so
//! the `DELETE` that ends the session finds the owner the same way through any node. A
//! request another node carried here is served only if this node owns the room now; an
//! owner that lost the room answers 503 marked not-owner and the first node looks again.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::api::{forged, not_owner, replayed, ATTEMPTS};
use super::peer::{self, Forward, PeerCheck};
use super::{Cluster, Route, RouteError};
use crate::http::Body;
use hyper::Response;

/// What to do with a WHIP/WHEP request.
#[derive(Debug)]
pub enum Whip {
    /// Serve it here.
    Local,
    /// Answered (forwarded, refused).
    Done(Response<Body>),
}

/// Routes a WHIP/WHEP request for `room`. `peer`: what its node-to-node headers said
/// (checked before its body was read); `create`: a new room may be placed (WHIP's POST).
pub async fn route(
    cluster: &Arc<Cluster>,
    peer: PeerCheck,
    room: &str,
    create: bool,
    req: Forward<'_>,
) -> Whip {
    match peer {
        PeerCheck::Forged(why) => return Whip::Done(forged(cluster, why)),
        PeerCheck::Replayed => return Whip::Done(replayed(cluster)),
        // An ending session is served wherever it is asked for: there is nothing to
        // place, and an unknown session is a 404 anyway.
        PeerCheck::Peer(_) if req.method == hyper::Method::DELETE || cluster.owns(room).await => {
            return Whip::Local
        }
        PeerCheck::Peer(_) => return Whip::Done(not_owner()),
        PeerCheck::Client => {}
    }
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        match cluster.route(room, create).await {
            Ok(Route::Local) | Err(RouteError::NotFound) => return Whip::Local,
            Err(e) => return Whip::Done(e.response()),
            Ok(Route::Remote(node, addr)) => {
                let fwd = Forward {
                    method: req.method.clone(),
                    path: req.path,
                    content_type: req.content_type,
                    authorization: req.authorization,
                    body: req.body.clone(),
                };
                match peer::forward(cluster, addr, fwd).await {
                    Ok(r) if r.headers().contains_key(peer::NOT_OWNER_HEADER) => {
                        last = format!("node {node} gave the room up");
                    }
                    Ok(r) => {
                        cluster
                            .counters
                            .forwarded_calls
                            .fetch_add(1, Ordering::Relaxed);
                        return Whip::Done(r);
                    }
                    Err(e) => {
                        tracing::warn!(%node, error = %e, "cluster: the room's owner is unreachable");
                        last = e;
                    }
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    Whip::Done(
        RouteError::Unavailable(format!("the room's owner cannot be reached: {last}")).response(),
    )
}
