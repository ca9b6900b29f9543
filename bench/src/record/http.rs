//! The HTTP the recording bench speaks to `prism serve`: WHIP and WHEP POSTs (an SDP offer
//! in, an answer out) and Twirp calls in JSON (RoomService's ListParticipants, the Egress
//! service's StartTrackEgress and StopEgress), each with a token minted by the bench.
//!
//! A blocking HTTP/1.1 client of a few lines (one request per connection, `Connection:
//! close`, the body read to the end) is enough: these calls are set-up, outside every
//! measured window, and the bench stays free of an HTTP client dependency.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::control::token::{token_with_grant, DEV_KEY, DEV_SECRET};

/// An HTTP response: status and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// One request on a fresh connection.
pub fn request(
    http: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    content_type: &str,
    body: &str,
) -> Result<Response> {
    let mut s = TcpStream::connect_timeout(&http, Duration::from_secs(10))
        .with_context(|| format!("connect {http}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("{method} {path}: reading the response"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{method} {path}: no end of headers"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("{method} {path}: bad status line"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Response { status, body })
}

/// The body of a chunked response.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A dev-key token for `identity` in `room` that may join, publish and subscribe.
pub fn join_token(room: &str, identity: &str) -> String {
    let video = json!({ "roomJoin": true, "room": room, "canPublish": true, "canSubscribe": true });
    token_with_grant(DEV_KEY, DEV_SECRET, identity, video, now())
}

/// A dev-key token for the server APIs: `roomAdmin` (RoomService) and `roomRecord` (Egress).
pub fn api_token(room: &str) -> String {
    let video = json!({ "roomAdmin": true, "roomRecord": true, "room": room });
    token_with_grant(DEV_KEY, DEV_SECRET, "prism-bench", video, now())
}

/// `POST /whip/{room}` or `/whep/{room}`: the answer's SDP.
pub fn post_sdp(
    http: SocketAddr,
    kind: &str,
    room: &str,
    identity: &str,
    offer: &str,
) -> Result<String> {
    let r = request(
        http,
        "POST",
        &format!("/{kind}/{room}"),
        &join_token(room, identity),
        "application/sdp",
        offer,
    )?;
    if r.status != 201 {
        bail!("POST /{kind}/{room} answered {}: {}", r.status, r.body);
    }
    Ok(r.body)
}

/// A Twirp call in JSON; the answer's JSON.
pub fn twirp(http: SocketAddr, room: &str, service_method: &str, body: &Value) -> Result<Value> {
    let r = request(
        http,
        "POST",
        &format!("/twirp/livekit.{service_method}"),
        &api_token(room),
        "application/json",
        &body.to_string(),
    )?;
    if r.status != 200 {
        bail!("{service_method} answered {}: {}", r.status, r.body);
    }
    serde_json::from_str(&r.body).with_context(|| format!("{service_method}: body {:?}", r.body))
}

/// The sids of the video tracks `identity` publishes in `room`.
pub fn video_tracks(http: SocketAddr, room: &str, identity: &str) -> Result<Vec<String>> {
    let v = twirp(
        http,
        room,
        "RoomService/ListParticipants",
        &json!({ "room": room }),
    )?;
    let mut sids = Vec::new();
    for p in v["participants"].as_array().into_iter().flatten() {
        if p["identity"] != identity {
            continue;
        }
        for t in p["tracks"].as_array().into_iter().flatten() {
            if t["type"] == "VIDEO" {
                if let Some(s) = t["sid"].as_str() {
                    sids.push(s.to_string());
                }
            }
        }
    }
    Ok(sids)
}

/// `StartTrackEgress` of `track` into the file `path`: the egress id.
pub fn start_track_egress(http: SocketAddr, room: &str, track: &str, path: &str) -> Result<String> {
    let v = twirp(
        http,
        room,
        "Egress/StartTrackEgress",
        &json!({ "room_name": room, "track_id": track, "file": { "filepath": path } }),
    )?;
    let id = v["egress_id"]
        .as_str()
        .context("StartTrackEgress: no egress_id")?;
    Ok(id.to_string())
}

/// What `StopEgress` answered once the file was final.
#[derive(Clone, Debug)]
pub struct Stopped {
    pub status: String,
    pub filename: String,
    pub size: u64,
    pub duration_s: f64,
    pub error: String,
}

/// `StopEgress`: waits until the recorder has finalized its file.
pub fn stop_egress(http: SocketAddr, room: &str, id: &str) -> Result<Stopped> {
    let v = twirp(http, room, "Egress/StopEgress", &json!({ "egress_id": id }))?;
    let num = |x: &Value| {
        x.as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .or_else(|| x.as_i64())
            .unwrap_or(0)
    };
    let f = &v["file_results"][0];
    Ok(Stopped {
        status: v["status"].as_str().unwrap_or_default().to_string(),
        filename: f["filename"].as_str().unwrap_or_default().to_string(),
        size: num(&f["size"]).max(0) as u64,
        duration_s: num(&f["duration"]) as f64 / 1e9,
        error: v["error"].as_str().unwrap_or_default().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n"), "Wikipedia");
        assert_eq!(dechunk("0\r\n\r\n"), "");
    }
}
