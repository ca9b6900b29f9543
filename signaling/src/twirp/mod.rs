//! LiveKit's server API over Twirp: `POST /twirp/livekit.RoomService/<Method>` and
//! `POST /twirp/livekit.AgentDispatchService/<Method>`, `POST /twirp/livekit.Ingress/<Method>`
//! and `POST /twirp/livekit.Egress/<Method>`,
//! so that
//! LiveKit's server SDKs (`livekit-api` in Python, `livekit-server-sdk` in Node, the Rust
//! and Go clients) manage Prism's rooms unchanged.
//!
//! Twirp is plain HTTP: the method is the last path segment, the body is the request
//! message in protobuf or JSON (see [`codec`]), and the answer is the response message in
//! the same encoding, or an error as JSON `{"code": "...", "msg": "..."}` with the status
//! Twirp assigns to the code. A request is checked in this order, so that the cheapest
//! refusal comes first and nobody unauthenticated gets a body parsed:
//! 1. route: `POST`, a known method, a protobuf or JSON content type (else `bad_route`);
//! 2. token: a valid bearer token (else `unauthenticated`, 401);
//! 3. body: decodes as the method's request (else `malformed`, 400);
//! 4. grant: the method's grant, for the request's room (else `unauthenticated`, 401);
//! 5. the method itself, on the room's task ([`room_service`]).
//!
//! As LiveKit's server does, a valid token that lacks the grant is `unauthenticated` (401)
//! too, with a message naming the missing grant: clients and their tests written against
//! LiveKit expect that status.

pub mod agent_dispatch;
pub mod codec;
pub mod egress;
pub mod ingress_service;
pub mod room_service;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use crate::app::AppState;
use crate::auth::AuthError;
use crate::http::{request_token, Body};
use crate::rtc::RtcError;
use codec::Codec;

/// Largest request body accepted. SendData payloads are the large ones, and LiveKit's
/// clients keep data messages far below this.
pub const MAX_BODY: usize = 1 << 20;

/// Twirp's error codes (the subset Prism answers with), each with its HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Code {
    InvalidArgument,
    Malformed,
    NotFound,
    BadRoute,
    Canceled,
    PermissionDenied,
    Unauthenticated,
    FailedPrecondition,
    Unimplemented,
    Internal,
    Unavailable,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::Malformed => "malformed",
            Code::NotFound => "not_found",
            Code::BadRoute => "bad_route",
            Code::Canceled => "canceled",
            Code::PermissionDenied => "permission_denied",
            Code::Unauthenticated => "unauthenticated",
            Code::FailedPrecondition => "failed_precondition",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
        }
    }

    /// The HTTP status Twirp's specification assigns to the code.
    pub fn status(self) -> StatusCode {
        match self {
            Code::InvalidArgument | Code::Malformed => StatusCode::BAD_REQUEST,
            Code::NotFound | Code::BadRoute => StatusCode::NOT_FOUND,
            Code::Canceled => StatusCode::REQUEST_TIMEOUT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// A Twirp error: a code and a message for the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TwirpError {
    pub code: Code,
    pub msg: String,
}

impl TwirpError {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
        }
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(Code::Internal, msg)
    }

    /// LiveKit's message for a room that does not exist.
    pub fn room_not_found() -> Self {
        Self::new(Code::NotFound, "requested room does not exist")
    }

    pub fn participant_not_found() -> Self {
        Self::new(Code::NotFound, "participant does not exist")
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, msg)
    }

    /// The error as Twirp's JSON body.
    pub fn body(&self) -> String {
        serde_json::json!({ "code": self.code.as_str(), "msg": self.msg }).to_string()
    }

    pub fn response(&self) -> Response<Body> {
        let mut r = Response::new(Full::new(Bytes::from(self.body())));
        *r.status_mut() = self.code.status();
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    }
}

impl std::fmt::Display for TwirpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.msg)
    }
}

impl std::error::Error for TwirpError {}

impl From<RtcError> for TwirpError {
    /// The room model's errors, with the codes LiveKit's server answers for them.
    fn from(e: RtcError) -> Self {
        let code = match &e {
            RtcError::Auth(a) => return a.clone().into(),
            RtcError::RoomNotFound
            | RtcError::ParticipantNotFound
            | RtcError::TrackNotFound
            | RtcError::SessionNotFound
            | RtcError::NothingPublished(_) => Code::NotFound,
            RtcError::Invalid(_) | RtcError::BadDescription(_) => Code::InvalidArgument,
            RtcError::FailedPrecondition(_) | RtcError::RoomFull => Code::FailedPrecondition,
            RtcError::NotAllowed(_) => Code::PermissionDenied,
            RtcError::ShuttingDown | RtcError::RoomClosed => Code::Unavailable,
            _ => Code::Internal,
        };
        TwirpError::new(code, e.to_string())
    }
}

impl From<crate::agent::DispatchError> for TwirpError {
    fn from(e: crate::agent::DispatchError) -> Self {
        use crate::agent::DispatchError as D;
        let code = match e {
            D::RoomNotFound | D::DispatchNotFound => Code::NotFound,
        };
        TwirpError::new(code, e.to_string())
    }
}

impl From<crate::rtc::rpc::PerformRpcError> for TwirpError {
    /// As LiveKit maps RPC errors (`DataChannelRpcError.PsrpcError`): the participant's own
    /// errors are `internal`, with the error's code and message in the text.
    fn from(e: crate::rtc::rpc::PerformRpcError) -> Self {
        use crate::rtc::rpc::{code, PerformRpcError as P};
        match e {
            P::Room(e) => e.into(),
            P::Rpc(f) => {
                let c = match f.code {
                    code::CONNECTION_TIMEOUT | code::RESPONSE_TIMEOUT => Code::Canceled,
                    code::RECIPIENT_DISCONNECTED => Code::Unavailable,
                    code::UNSUPPORTED_METHOD => Code::InvalidArgument,
                    code::RECIPIENT_NOT_FOUND => Code::NotFound,
                    code::REQUEST_PAYLOAD_TOO_LARGE => Code::Malformed,
                    _ => Code::Internal,
                };
                TwirpError::new(c, f.to_string())
            }
        }
    }
}

impl From<AuthError> for TwirpError {
    /// Every token failure, a missing grant included, is `unauthenticated`, as in LiveKit.
    fn from(e: AuthError) -> Self {
        TwirpError::new(Code::Unauthenticated, e.to_string())
    }
}

/// Handles a request under `/twirp/`; `path` is what follows it (`livekit.RoomService/X`).
pub async fn handle(state: Arc<AppState>, req: Request<Incoming>, path: &str) -> Response<Body> {
    let method = req.method().clone();
    match serve(state, req, path).await {
        Ok(r) => r,
        Err(e) => {
            if e.code == Code::Internal {
                tracing::error!(%path, error = %e, "Twirp request failed");
            } else {
                tracing::debug!(%path, %method, error = %e, "Twirp request refused");
            }
            e.response()
        }
    }
}

async fn serve(
    state: Arc<AppState>,
    req: Request<Incoming>,
    path: &str,
) -> Result<Response<Body>, TwirpError> {
    if req.method() != Method::POST {
        return Err(TwirpError::new(
            Code::BadRoute,
            format!("unsupported method {} (only POST is allowed)", req.method()),
        ));
    }
    let Some((service, method)) = path.split_once('/') else {
        return Err(no_route(path));
    };
    if ![
        room_service::SERVICE,
        agent_dispatch::SERVICE,
        ingress_service::SERVICE,
        egress::SERVICE,
    ]
    .contains(&service)
    {
        return Err(no_route(path));
    }
    let desc = codec::pool()?
        .get_service_by_name(service)
        .and_then(|s| s.methods().find(|m| m.name() == method))
        .ok_or_else(|| no_route(path))?;
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let codec = Codec::from_content_type(content_type).ok_or_else(|| {
        TwirpError::new(
            Code::BadRoute,
            format!(
                "unexpected Content-Type: {content_type:?} \
                 (use application/protobuf or application/json)"
            ),
        )
    })?;
    let token = request_token(&req)?.ok_or_else(|| {
        TwirpError::new(
            Code::Unauthenticated,
            "no authorization token: send Authorization: Bearer <token>",
        )
    })?;
    let claims = state.keys.verify_now(&token)?;
    let from_peer = match &state.cluster {
        Some(c) => crate::cluster::api::twirp_peer(c, &req)?,
        None => false,
    };
    let authorization = req.headers().get(hyper::header::AUTHORIZATION).cloned();
    let content_type = content_type.to_owned();
    // A declared length over the limit is refused before reading anything.
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            return Err(TwirpError::new(
                Code::Malformed,
                format!("the request body could not be read: {e}"),
            ))
        }
    };
    let routed = [
        room_service::SERVICE,
        egress::SERVICE,
        ingress_service::SERVICE,
    ];
    let full_path = format!("/twirp/{path}");
    // This call, as the cluster carries it to another node.
    let remote = |cluster| crate::cluster::api::TwirpCall {
        cluster,
        claims: &claims,
        codec,
        method: &desc,
        body: &body,
        path: &full_path,
        content_type: &content_type,
        authorization: authorization.as_ref(),
        from_peer,
    };
    if let (Some(cluster), true) = (&state.cluster, routed.contains(&service)) {
        // Several nodes: a call naming a room runs on the room's owner.
        if let Some(r) = remote(cluster).route().await? {
            return Ok(r);
        }
    }
    let out = if service == ingress_service::SERVICE {
        let call = ingress_service::Call {
            ingresses: &state.ingresses,
            claims: &claims,
            codec,
            method: &desc,
            body: &body,
        };
        call.run().await
    } else if service == egress::SERVICE {
        let call = egress::Call {
            rooms: &state.rooms,
            egresses: &state.egresses,
            claims: &claims,
            codec,
            method: &desc,
            body: &body,
        };
        call.run().await
    } else if service == agent_dispatch::SERVICE {
        let call = agent_dispatch::Call {
            rooms: &state.rooms,
            agents: &state.agents,
            claims: &claims,
            codec,
            method: &desc,
            body: &body,
        };
        call.run().await
    } else {
        let call = room_service::Call {
            rooms: &state.rooms,
            claims: &claims,
            codec,
            method: &desc,
            body: &body,
            options: state.room_service,
        };
        call.run().await
    };
    let out = match out {
        // Several nodes: an egress or ingress named by id alone may live on another node.
        Err(e) if e.code == Code::NotFound && !from_peer => {
            let by_id = service == egress::SERVICE || service == ingress_service::SERVICE;
            if let (Some(cluster), true) = (&state.cluster, by_id) {
                if let Some(r) = remote(cluster).find_elsewhere().await {
                    return Ok(r);
                }
            }
            return Err(e);
        }
        out => out?,
    };
    let mut r = Response::new(Full::new(Bytes::from(out)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(codec.content_type()));
    Ok(r)
}

fn too_large() -> TwirpError {
    TwirpError::invalid(format!("the request body is larger than {MAX_BODY} bytes"))
}

fn no_route(path: &str) -> TwirpError {
    TwirpError::new(
        Code::BadRoute,
        format!("no handler for path \"/twirp/{path}\""),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_twirp_statuses() {
        assert_eq!(Code::Unauthenticated.status(), 401);
        assert_eq!(Code::PermissionDenied.status(), 403);
        assert_eq!(Code::NotFound.status(), 404);
        assert_eq!(Code::BadRoute.status(), 404);
        assert_eq!(Code::Malformed.status(), 400);
        assert_eq!(Code::InvalidArgument.status(), 400);
        assert_eq!(Code::FailedPrecondition.status(), 412);
        assert_eq!(Code::Internal.status(), 500);
    }

    #[test]
    fn error_bodies_are_twirp_json() {
        let e = TwirpError::room_not_found();
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(v["code"], "not_found");
        assert_eq!(v["msg"], "requested room does not exist");
        // Quotes and control characters in a message stay valid JSON.
        let e = TwirpError::invalid("bad \"name\"\n");
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(v["msg"], "bad \"name\"\n");
    }

    #[test]
    fn auth_errors_are_unauthenticated_as_in_livekit() {
        let e: TwirpError = AuthError::Expired.into();
        assert_eq!(e.code, Code::Unauthenticated);
        let e: TwirpError = AuthError::UnknownKey.into();
        assert_eq!(e.code, Code::Unauthenticated);
        let e: TwirpError = AuthError::NotAllowed("roomList is not granted").into();
        assert_eq!(e.code, Code::Unauthenticated);
        assert!(e.msg.contains("roomList"), "{}", e.msg);
        let e: TwirpError = AuthError::NoPermissions.into();
        assert_eq!(e.code, Code::Unauthenticated);
    }
}
