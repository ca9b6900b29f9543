//! WHIP (RFC 9725) and WHEP over HTTP: the simplest standard way into and out of Prism.
//!
//! `POST /whip/{room}` publishes what the SDP offer sends, as a participant of kind
//! `INGRESS` of the room: LiveKit SDKs in the room see it and subscribe to its tracks.
//! `POST /whep/{room}` receives what is published in the room when the viewer arrives;
//! `?participant={identity}` narrows it to one participant's tracks, `?track={sid}` to one
//! track. Each `201 Created` carries the answer and a `Location` to `DELETE` to end the
//! session. Both require a join token for that room (`Authorization: Bearer …`), with
//! `canPublish` for WHIP and `canSubscribe` for WHEP; the token's identity names the
//! participant.
//!
//! This module is only the HTTP side: checking the token and the body, and mapping the
//! room's answer to a status. What a WHIP publisher or WHEP viewer is in the room lives in
//! `rtc::ingress`. ICE is not trickled: the answer has the core's address as its only
//! candidate, and `PATCH` is answered 405. In a cluster, a POST or DELETE for a room that
//! another node owns is carried there once the token was checked (`cluster::whip`).

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use hyper::{Request, Response, StatusCode};

use crate::app::AppState;
use crate::auth::{AuthError, Claims};
use crate::cluster::peer::Forward;
use crate::cluster::whip::Whip;
use crate::http::Body;
use crate::http::{auth_error, cors, percent_decode, query_param, request_token, rtc_error, text};
use crate::rtc::{RoomName, RtcError, ViewFilter};

/// Largest SDP body accepted.
const MAX_SDP: usize = 64 * 1024;

/// `OPTIONS`: what a browser asks before a cross-origin POST.
pub fn options() -> Response<Body> {
    let mut r = cors(text(StatusCode::NO_CONTENT, ""));
    let h = r.headers_mut();
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, DELETE, OPTIONS"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("authorization, content-type"),
    );
    h.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("location"),
    );
    h.insert("accept-post", HeaderValue::from_static("application/sdp"));
    r
}

/// The token's claims, if it is valid and for `room`.
fn authorize(state: &AppState, token: Option<&str>, room: &str) -> Result<Claims, RtcError> {
    let token = token.ok_or(AuthError::NoPermissions)?;
    let claims = state.keys.verify_now(token)?;
    let granted = claims.ensure_join()?;
    if granted != room {
        return Err(RtcError::Auth(AuthError::InvalidToken(
            "the token is for another room",
        )));
    }
    Ok(claims)
}

/// `POST /whip/{room}` (`publish`) or `POST /whep/{room}`.
pub async fn post(
    state: &AppState,
    req: Request<Incoming>,
    publish: bool,
    room: &str,
) -> Response<Body> {
    let room = percent_decode(room);
    let token = match request_token(&req) {
        Ok(t) => t,
        Err(e) => return auth_error(&e),
    };
    let is_sdp = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim() == "application/sdp")
        });
    if !is_sdp {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be application/sdp",
        );
    }
    let query = req.uri().query().unwrap_or("").to_owned();
    // In a cluster: the node-to-node headers, checked before the body is read, and what
    // is needed to carry the request to the room's owner.
    let peer = state
        .cluster
        .as_ref()
        .map(|c| crate::cluster::peer::check(&c.verifier(), &req));
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(String::new, |p| p.as_str().to_owned());
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/sdp")
        .to_owned();
    let authorization = req.headers().get(AUTHORIZATION).cloned();
    let body = match http_body_util::Limited::new(req.into_body(), MAX_SDP)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "the offer is too large"),
    };
    let forward = |body| Forward {
        method: hyper::Method::POST,
        path: &path,
        content_type: &content_type,
        authorization: authorization.as_ref(),
        body,
    };
    let Ok(sdp) = String::from_utf8(body.to_vec()) else {
        return text(StatusCode::BAD_REQUEST, "the offer is not UTF-8");
    };
    // A WHIP ingress's stream key stands for a token (LiveKit's WHIP ingress takes it as
    // the bearer token too).
    let ingress = token
        .as_deref()
        .filter(|_| publish)
        .and_then(|t| state.ingresses.whip_claims(t, &room));
    let claims = match ingress.map_or_else(|| authorize(state, token.as_deref(), &room), Ok) {
        Ok(c) => c,
        Err(e) => return rtc_error(&e),
    };
    let grant = match claims.grant() {
        Ok(g) => g,
        Err(e) => return auth_error(&e),
    };
    if publish && !grant.can_publish() {
        return text(StatusCode::FORBIDDEN, "the token does not allow publishing");
    }
    if !publish && !grant.can_subscribe() {
        return text(
            StatusCode::FORBIDDEN,
            "the token does not allow subscribing",
        );
    }
    if let (Some(c), Some(peer)) = (&state.cluster, peer) {
        // Several nodes: the session belongs where the room lives.
        if let Whip::Done(r) =
            crate::cluster::whip::route(c, peer, &room, publish, forward(body)).await
        {
            return r;
        }
    }
    let name = RoomName::new(room.clone());
    let created = if publish {
        state.rooms.whip(&name, claims, sdp).await
    } else {
        let filter = ViewFilter {
            participant: query_param(&query, "participant").filter(|s| !s.is_empty()),
            track: query_param(&query, "track").filter(|s| !s.is_empty()),
        };
        state.rooms.whep(&name, claims, sdp, filter).await
    };
    match created {
        Ok(c) => {
            let location = format!(
                "/{}/{room}/{}",
                if publish { "whip" } else { "whep" },
                c.resource
            );
            let mut resp = Response::new(Body::from(c.answer));
            *resp.status_mut() = StatusCode::CREATED;
            let h = resp.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
            if let Ok(v) = HeaderValue::from_str(&location) {
                h.insert(LOCATION, v);
            }
            resp
        }
        Err(e) => rtc_error(&e),
    }
}

/// `DELETE /whip|whep/{room}/{resource}`: the session's token must be for the same room.
pub async fn delete(
    state: &AppState,
    req: &Request<Incoming>,
    room: &str,
    resource: &str,
) -> Response<Body> {
    let (room, resource) = (percent_decode(room), percent_decode(resource));
    let token = match request_token(req) {
        Ok(t) => t,
        Err(e) => return auth_error(&e),
    };
    let ingress = token
        .as_deref()
        .and_then(|t| state.ingresses.whip_claims(t, &room));
    if ingress.is_none() {
        if let Err(e) = authorize(state, token.as_deref(), &room) {
            return rtc_error(&e);
        }
    }
    if let Some(c) = &state.cluster {
        // Several nodes: the session lives on the room's owner.
        let peer = crate::cluster::peer::check(&c.verifier(), req);
        let path = req
            .uri()
            .path_and_query()
            .map_or_else(String::new, |p| p.as_str().to_owned());
        let fwd = Forward {
            method: hyper::Method::DELETE,
            path: &path,
            content_type: "",
            authorization: req.headers().get(AUTHORIZATION),
            body: bytes::Bytes::new(),
        };
        if let Whip::Done(r) = crate::cluster::whip::route(c, peer, &room, false, fwd).await {
            return r;
        }
    }
    match state.rooms.end_http(&RoomName::new(room), resource).await {
        Ok(()) => text(StatusCode::OK, ""),
        Err(e) => rtc_error(&e),
    }
}
