//! The pages `prism serve` shows a person: the try-it page at `/` (join a room with camera
//! and microphone through LiveKit's own JS SDK) and the status page at `/status` (what the
//! server holds and how fast each core forwards), with the small API behind them.
//!
//! Why the pages are compiled into the binary: a server that someone just built must show
//! them with nothing else installed and no network. The files under `signaling/web/` are
//! embedded with `include_bytes!`, LiveKit's JS SDK among them: its UMD build is vendored
//! from npm (Apache-2.0, its licence beside it) and kept identical to the pinned
//! `livekit-client` of `signaling/tests/browser/package.json` by the browser test.
//!
//! Routes:
//! - `GET /`, `GET /status`: the pages; `GET /assets/{file}`: their scripts and styles.
//! - `GET /api/config`: what a page needs to know first (`dev`, the server version).
//! - `POST /dev/token`: in `--dev` mode only (404 otherwise), a join token for the room and
//!   identity in its JSON body, so that the try-it page works with no token at hand.
//!   Outside dev mode the page asks for a token instead (`prism token create`).
//! - `GET /api/state`: rooms, participants, tracks and the media plane's counters per core
//!   and per transport (see [`state`]). Open in `--dev` mode; otherwise it needs
//!   `Authorization: Bearer` with a token granting `roomList` (`prism token create
//!   --admin`), as LiveKit's ListRooms does.

pub mod state;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::{self, Claims, VideoGrant, DEV_KEY};
use crate::http::{request_token, text, Body};

/// Largest `/dev/token` body accepted.
const MAX_TOKEN_REQUEST: usize = 4 * 1024;

/// Longest room name or identity a dev token is minted for.
const MAX_NAME: usize = 128;

/// Validity of a dev token: long enough for an afternoon of trying things.
const DEV_TOKEN_TTL: u64 = 6 * 3600;

/// An embedded file: its name under `/assets/` (or a page path), type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr, $path:literal) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $path)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static PAGES: &[Asset] = &[
    asset!("", HTML, "index.html"),
    asset!("status", HTML, "status.html"),
];

static ASSETS: &[Asset] = &[
    asset!("style.css", CSS, "style.css"),
    asset!("tryit.js", JS, "tryit.js"),
    asset!("status.js", JS, "status.js"),
    asset!("common.js", JS, "common.js"),
    asset!("icon.svg", "image/svg+xml", "icon.svg"),
    asset!("livekit-client.umd.js", JS, "vendor/livekit-client.umd.js"),
];

/// The embedded `livekit-client` build, for the test that checks it against npm's.
pub fn vendored_livekit_client() -> &'static [u8] {
    ASSETS
        .iter()
        .find(|a| a.name == "livekit-client.umd.js")
        .map_or(&[], |a| a.bytes)
}

fn asset_response(a: &Asset) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(a.bytes)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(a.content_type));
    // Revalidate every time: the files change with the binary, and they are small next to
    // the media a page receives.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// `GET /` and `GET /status`.
pub fn page(path: &str) -> Option<Response<Body>> {
    PAGES.iter().find(|a| a.name == path).map(asset_response)
}

/// `GET /assets/{name}`.
pub fn asset(name: &str) -> Response<Body> {
    ASSETS
        .iter()
        .find(|a| a.name == name)
        .map_or_else(|| text(StatusCode::NOT_FOUND, "not found"), asset_response)
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /api/config`.
pub fn config(state: &AppState) -> Response<Body> {
    json(
        StatusCode::OK,
        &serde_json::json!({
            "dev": state.dev,
            "server_version": env!("CARGO_PKG_VERSION"),
            "livekit_version": crate::livekit::SERVER_VERSION,
        }),
    )
}

#[derive(Deserialize)]
struct TokenRequest {
    room: String,
    identity: String,
    #[serde(default)]
    name: String,
}

/// `POST /dev/token`: `{"room", "identity", "name"?}` → `{"token"}`.
pub async fn dev_token(state: &AppState, req: Request<Incoming>) -> Response<Body> {
    if !state.dev {
        return text(StatusCode::NOT_FOUND, "not found");
    }
    let Some(secret) = state.keys.secret(DEV_KEY).map(str::to_owned) else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    let body = match http_body_util::Limited::new(req.into_body(), MAX_TOKEN_REQUEST)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "the request is too large"),
    };
    let Ok(tr) = serde_json::from_slice::<TokenRequest>(&body) else {
        return text(
            StatusCode::BAD_REQUEST,
            r#"expected JSON {"room": "...", "identity": "...", "name": "..."}"#,
        );
    };
    let (room, identity) = (tr.room.trim(), tr.identity.trim());
    if room.is_empty() || identity.is_empty() {
        return text(StatusCode::BAD_REQUEST, "room and identity are required");
    }
    if room.len() > MAX_NAME || identity.len() > MAX_NAME || tr.name.len() > MAX_NAME {
        return text(
            StatusCode::BAD_REQUEST,
            "room, identity or name is too long",
        );
    }
    let now = auth::unix_now();
    let claims = Claims {
        iss: DEV_KEY.into(),
        sub: identity.into(),
        nbf: Some(now),
        exp: Some(now + DEV_TOKEN_TTL),
        name: if tr.name.trim().is_empty() {
            identity.into()
        } else {
            tr.name.trim().into()
        },
        video: Some(VideoGrant {
            room_join: true,
            room: room.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    json(
        StatusCode::OK,
        &serde_json::json!({ "token": auth::sign(&claims, &secret) }),
    )
}

/// `GET /api/state`.
pub async fn api_state(state: Arc<AppState>, req: &Request<Incoming>) -> Response<Body> {
    if !state.dev {
        let allowed = match request_token(req) {
            Ok(Some(t)) => state.keys.verify_now(&t).and_then(|c| c.ensure_list()),
            Ok(None) => Err(auth::AuthError::NoPermissions),
            Err(e) => Err(e),
        };
        if let Err(e) = allowed {
            let (status, body) = e.status();
            return text(
                StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED),
                body,
            );
        }
    }
    match state::snapshot(&state).await {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}
