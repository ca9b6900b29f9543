//! The HTTP front door of `prism serve`: one listener (7880 by default) for every HTTP and
//! WebSocket route, sharing the key store and the media plane.
//!
//! Routes so far:
//! - `GET /`, `GET /status`, `/assets/…`, `/api/…`, `POST /dev/token`: the try-it and
//!   status pages and their API (see `web`).
//! - `GET /healthz`: liveness, `ok`.
//! - `GET /metrics`: Prometheus text format (see `metrics`).
//! - `GET /rtc/validate`: LiveKit's token check, answering 200 `success` or the status
//!   and text LiveKit's server would give.
//! - `GET /rtc`: LiveKit's signaling WebSocket (see `livekit`).
//! - `/rtc/v1/validate` and `/rtc/v1`: 404 with CORS, so current SDKs fall back to `/rtc`.
//! - `POST /twirp/livekit.RoomService/{method}`: LiveKit's server API (see `twirp`).
//! - `POST /whip/{room}`, `POST /whep/{room}`, `DELETE /whip|whep/{room}/{session}`: WHIP
//!   and WHEP (see `whip`).
//!
//! Requests are small and few. The server is async (tokio, hyper) and never touches media;
//! the forwarder runs on its own pinned threads.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN, AUTHORIZATION, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prism_forwarder::runtime::Forwarder;
use tokio::net::TcpListener;
use tokio::sync::watch;

use http_body_util::BodyExt;
use hyper::header::LOCATION;

use crate::auth::{AuthError, KeyStore};
use crate::whip::{HttpError, Whip};

/// Largest SDP body accepted.
const MAX_SDP: usize = 64 * 1024;

pub type Body = Full<Bytes>;

/// What every request handler can reach.
pub struct AppState {
    pub keys: KeyStore,
    pub forwarder: Forwarder,
    pub whip: Arc<Whip>,
    pub hub: crate::livekit::HubHandle,
    pub dev: bool,
    pub room_service: crate::twirp::room_service::RoomServiceOptions,
}

/// What `prism serve` configures beyond keys and the media plane.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServeOptions {
    pub room_defaults: crate::livekit::RoomDefaults,
    pub room_service: crate::twirp::room_service::RoomServiceOptions,
}

impl AppState {
    pub fn new(keys: KeyStore, forwarder: Forwarder, dev: bool) -> Self {
        Self::with_options(keys, forwarder, dev, ServeOptions::default())
    }

    pub fn with_options(
        keys: KeyStore,
        forwarder: Forwarder,
        dev: bool,
        options: ServeOptions,
    ) -> Self {
        let whip = Arc::new(Whip::new(keys.clone(), forwarder.client()));
        let hub = crate::livekit::HubHandle::start(forwarder.client(), options.room_defaults);
        Self {
            keys,
            forwarder,
            whip,
            hub,
            dev,
            room_service: options.room_service,
        }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("dev", &self.dev).finish()
    }
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn cors(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut()
        .insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    r
}

fn auth_error(e: &AuthError) -> Response<Body> {
    let (status, body) = e.status();
    text(
        StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED),
        body,
    )
}

/// The token of a request: `Authorization: Bearer …`, else the `access_token` query
/// parameter. A malformed Authorization header is an error (401), as in LiveKit.
pub fn request_token(req: &Request<Incoming>) -> Result<Option<String>, AuthError> {
    if let Some(h) = req.headers().get(AUTHORIZATION) {
        let v = h
            .to_str()
            .map_err(|_| AuthError::InvalidToken("bad Authorization header"))?;
        return match v.strip_prefix("Bearer ") {
            Some(t) => Ok(Some(t.trim().to_string())),
            None => Err(AuthError::InvalidToken(
                "Authorization is not a Bearer token",
            )),
        };
    }
    Ok(query_param(req.uri().query().unwrap_or(""), "access_token"))
}

/// One query parameter, percent-decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_decode(v))
    })
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn route(state: Arc<AppState>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (&Method::GET, [""] | ["status"]) => crate::web::page(segments[0])
            .unwrap_or_else(|| text(StatusCode::NOT_FOUND, "not found")),
        (&Method::GET, ["assets", name]) => crate::web::asset(name),
        (&Method::GET, ["api", "config"]) => crate::web::config(&state),
        (&Method::GET, ["api", "state"]) => crate::web::api_state(state.clone(), &req).await,
        (&Method::POST, ["dev", "token"]) => crate::web::dev_token(&state, req).await,
        (&Method::GET, ["healthz"]) => text(StatusCode::OK, "ok"),
        (&Method::GET, ["metrics"]) => {
            let whip = state.whip.clone();
            let hub = state
                .hub
                .call(|h| crate::metrics::HubGauges {
                    rooms: h.rooms.len(),
                    participants: h.participant_count(),
                    tracks: h.track_count(),
                    transports: h.transport_count(),
                })
                .await
                .unwrap_or_default();
            match tokio::task::spawn_blocking(move || crate::metrics::render(&whip, hub)).await {
                Ok(Ok(body)) => {
                    let mut r = text(StatusCode::OK, body);
                    r.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    r
                }
                Ok(Err(e)) => text(StatusCode::SERVICE_UNAVAILABLE, e),
                Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
            }
        }
        (&Method::GET, ["rtc"]) => crate::livekit::ws::handle(state, req).await,
        (_, ["twirp", ..]) => {
            let rest = path.strip_prefix("/twirp/").unwrap_or("");
            crate::twirp::handle(state, req, rest).await
        }
        (&Method::GET, ["rtc", "validate"]) => cors(validate(&state, &req)),
        (_, ["rtc", "v1"] | ["rtc", "v1", "validate"]) => {
            cors(text(StatusCode::NOT_FOUND, "not found"))
        }
        (&Method::OPTIONS, [kind @ ("whip" | "whep"), ..]) => {
            let _ = kind;
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
        (&Method::POST, [kind @ ("whip" | "whep"), room]) => {
            let publish = *kind == "whip";
            let room = percent_decode(room);
            cors(whip_post(&state, req, publish, room).await)
        }
        (&Method::DELETE, ["whip" | "whep", room, session]) => {
            let (room, session) = (percent_decode(room), percent_decode(session));
            let token = match request_token(&req) {
                Ok(t) => t,
                Err(e) => return auth_error(&e),
            };
            let whip = state.whip.clone();
            let r =
                tokio::task::spawn_blocking(move || whip.end(&room, &session, token.as_deref()))
                    .await;
            cors(match r {
                Ok(Ok(())) => text(StatusCode::OK, ""),
                Ok(Err(e)) => http_error(e),
                Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
            })
        }
        (&Method::PATCH, ["whip" | "whep", _, _]) => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "trickle ICE is not supported: send a complete offer",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

fn http_error(e: HttpError) -> Response<Body> {
    text(
        StatusCode::from_u16(e.0).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        e.1,
    )
}

async fn whip_post(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    publish: bool,
    room: String,
) -> Response<Body> {
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
    let body = match http_body_util::Limited::new(req.into_body(), MAX_SDP)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "the offer is too large"),
    };
    let Ok(sdp) = String::from_utf8(body.to_vec()) else {
        return text(StatusCode::BAD_REQUEST, "the offer is not UTF-8");
    };
    let whip = state.whip.clone();
    let r = tokio::task::spawn_blocking(move || {
        if publish {
            whip.publish(&room, token.as_deref(), &sdp)
        } else {
            whip.view(&room, token.as_deref(), &sdp)
        }
    })
    .await;
    match r {
        Ok(Ok(created)) => {
            let mut resp = Response::new(Full::new(Bytes::from(created.answer)));
            *resp.status_mut() = StatusCode::CREATED;
            let h = resp.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
            if let Ok(v) = HeaderValue::from_str(&created.location) {
                h.insert(LOCATION, v);
            }
            resp
        }
        Ok(Err(e)) => http_error(e),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

fn validate(state: &AppState, req: &Request<Incoming>) -> Response<Body> {
    let token = match request_token(req) {
        Ok(Some(t)) => t,
        Ok(None) => return auth_error(&AuthError::NoPermissions),
        Err(e) => return auth_error(&e),
    };
    match state
        .keys
        .verify_now(&token)
        .and_then(|c| c.ensure_join().map(|_| ()))
    {
        Ok(()) => text(StatusCode::OK, "success"),
        Err(e) => auth_error(&e),
    }
}

/// Serves HTTP on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            r = listener.accept() => r?,
            _ = shutdown.changed() => return Ok(()),
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(state, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        assert_eq!(
            query_param("a=1&access_token=x%2By+z", "access_token").unwrap(),
            "x+y z"
        );
        assert_eq!(query_param("a=1", "b"), None);
        assert_eq!(query_param("t=%zz%4", "t").unwrap(), "%zz%4");
    }
}
