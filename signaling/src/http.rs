//! What every HTTP handler shares: plain-text and error responses, CORS, the request's
//! token and query parameters. A leaf module, so that the router (`server`) and its
//! handlers (`whip`, `twirp`, `web`, `livekit::ws`) depend on it and not on each other.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

use crate::auth::AuthError;
use crate::rtc::RtcError;

pub type Body = Full<Bytes>;

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

/// `101 Switching Protocols` accepting a WebSocket upgrade whose `Sec-WebSocket-Key` is
/// `key`.
pub fn switching_protocols(key: &HeaderValue) -> Response<Body> {
    use hyper::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, UPGRADE};
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

pub fn cors(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut()
        .insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    r
}

pub fn auth_error(e: &AuthError) -> Response<Body> {
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

/// The response for a room-model error: its HTTP status and its text.
pub fn rtc_error(e: &RtcError) -> Response<Body> {
    text(
        StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        e.to_string(),
    )
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
