//! The HTTP front door of `prism serve`: one listener (7880 by default) for every HTTP and
//! WebSocket route, sharing the key store and the media plane.
//!
//! Routes so far:
//! - `GET /healthz`: liveness, `ok`.
//! - `GET /rtc/validate`: LiveKit's token check, answering 200 `success` or the status
//!   and text LiveKit's server would give.
//! - `/rtc/v1/validate` and `/rtc/v1`: 404 with CORS, so current SDKs fall back to `/rtc`.
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

use crate::auth::{AuthError, KeyStore};

pub type Body = Full<Bytes>;

/// What every request handler can reach.
pub struct AppState {
    pub keys: KeyStore,
    pub forwarder: Forwarder,
    pub dev: bool,
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

fn percent_decode(s: &str) -> String {
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
    match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (&Method::GET, "/rtc/validate") => cors(validate(&state, &req)),
        (_, "/rtc/v1" | "/rtc/v1/validate") => cors(text(StatusCode::NOT_FOUND, "not found")),
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
