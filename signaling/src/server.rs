//! The HTTP front door of `prism serve`: one listener (7880 by default) for every HTTP and
//! WebSocket route, sharing the key store and the media plane.
//!
//! Routes so far:
//! - `GET /`, `GET /status`, `/assets/…`, `/api/…`, `POST /dev/token`: the try-it and
//!   status pages and their API (see `web`).
//! - `GET /healthz`: liveness, `ok`, whatever Redis does.
//! - `GET /readyz`: readiness: 200 when this node takes new rooms (a single node always;
//!   in a cluster, Redis reachable and the node serving), else 503 with the reason.
//! - `GET /metrics`: Prometheus text format (see `metrics`).
//! - `GET /rtc/validate`: LiveKit's token check, answering 200 `success` or the status
//!   and text LiveKit's server would give.
//! - `GET /rtc`: LiveKit's signaling WebSocket (see `livekit`).
//! - `/rtc/v1/validate` and `/rtc/v1`: 404 with CORS, so current SDKs fall back to `/rtc`.
//! - `GET /agent`: LiveKit's agent worker WebSocket (see `agent`).
//! - `POST /twirp/livekit.RoomService/{method}`, `/twirp/livekit.AgentDispatchService/…`:
//!   LiveKit's server API (see `twirp`).
//! - `POST /whip/{room}`, `POST /whep/{room}`, `DELETE /whip|whep/{room}/{session}`: WHIP
//!   and WHEP (see `whip`).
//!
//! Requests are small and few. The server is async (tokio, hyper) and never touches media;
//! the forwarder runs on its own pinned threads.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use crate::app::{AppState, ServeOptions};
use crate::auth::AuthError;
use crate::http::{auth_error, cors, request_token, text, Body};

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
        (&Method::GET, ["readyz"]) => match state.cluster.as_ref().map(|c| c.ready()) {
            None | Some(Ok(())) => text(StatusCode::OK, "ready"),
            Some(Err(why)) => text(StatusCode::SERVICE_UNAVAILABLE, why),
        },
        (&Method::GET, ["metrics"]) => match crate::metrics::render(&state).await {
            Ok(body) => {
                let mut r = text(StatusCode::OK, body);
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, e),
        },
        (&Method::GET, ["rtc"]) => crate::livekit::ws::handle(state, req).await,
        (&Method::GET, ["agent"]) => crate::agent::worker::handle(state, req).await,
        (&Method::GET, ["cluster", "media"]) => match &state.cluster {
            Some(c) => crate::cluster::media_link::serve(c, state.rooms.media().clone(), req).await,
            None => text(
                StatusCode::NOT_FOUND,
                "not found: this node is not in a cluster",
            ),
        },
        (_, ["twirp", ..]) => {
            let rest = path.strip_prefix("/twirp/").unwrap_or("");
            crate::twirp::handle(state, req, rest).await
        }
        (&Method::GET, ["rtc", "validate"]) => cors(validate(&state, &req)),
        (_, ["rtc", "v1"] | ["rtc", "v1", "validate"]) => {
            cors(text(StatusCode::NOT_FOUND, "not found"))
        }
        (&Method::OPTIONS, ["whip" | "whep", ..]) => crate::whip::options(),
        (&Method::POST, [kind @ ("whip" | "whep"), room]) => {
            cors(crate::whip::post(&state, req, *kind == "whip", room).await)
        }
        (&Method::DELETE, ["whip" | "whep", room, resource]) => {
            cors(crate::whip::delete(&state, &req, room, resource).await)
        }
        (&Method::PATCH, ["whip" | "whep", _, _]) => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "trickle ICE is not supported: send a complete offer",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found"),
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
