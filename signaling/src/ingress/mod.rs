//! Ingress: streams pushed by broadcast encoders (OBS, FFmpeg) into rooms, managed with
//! LiveKit's Ingress API (`/twirp/livekit.Ingress/*`, see [`crate::twirp::ingress_service`]).
//!
//! An ingress is a stream key bound to a room and a participant identity. An encoder that
//! publishes with that key over RTMP ([`server`]) becomes a participant of kind `INGRESS`
//! in the room, publishing H.264 passed through unchanged ([`packetize`]) and Opus
//! transcoded from its AAC ([`audio`]). LiveKit SDKs subscribe to it like to anyone. The
//! media reaches the forwarder as plain RTP on loopback (a comedia transport), so the
//! forwarder's packet path is the one every publisher takes; this module is the one place
//! in signaling that touches media, because an RTMP connection is TCP and has to be
//! repacketized somewhere.
//!
//! An ingress of input type WHIP gets the room's WHIP URL (`/whip/{room}`) and its stream
//! key as the bearer token, so a WHIP encoder leads to the same participant kind through
//! Prism's WHIP endpoint.
//!
//! The registry lives in memory, on this node (LiveKit keeps it in Redis for its ingress
//! workers): a restart forgets every ingress.

pub mod audio;
pub mod flv;
pub mod packetize;
pub mod publish;
pub mod rtmp;
pub mod server;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use prism_proto::livekit as lk;
use tokio::sync::watch;

use crate::media::random_alnum;

pub use lk::ingress_state::Status;

/// Why an Ingress API call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IngressError {
    NotFound,
    Invalid(String),
    Unsupported(String),
}

impl std::fmt::Display for IngressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IngressError::NotFound => f.write_str("ingress does not exist"),
            IngressError::Invalid(m) | IngressError::Unsupported(m) => f.write_str(m),
        }
    }
}

/// Why an encoder's publish was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No ingress has this stream key.
    UnknownKey,
    /// The ingress is disabled (`enabled: false`).
    Disabled,
    /// Another encoder is publishing with this key.
    Busy,
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::UnknownKey => "bad_stream_key",
            Refusal::Disabled => "disabled",
            Refusal::Busy => "already_publishing",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::UnknownKey => "no ingress has this stream key",
            Refusal::Disabled => "this ingress is disabled",
            Refusal::Busy => "another encoder is publishing with this stream key",
        })
    }
}

/// A publish admitted for an ingress: what to publish as, and a receiver that turns true
/// when the ingress is deleted (the session must end).
#[derive(Debug)]
pub struct Claim {
    pub info: lk::IngressInfo,
    pub session: u64,
    pub stop: watch::Receiver<bool>,
}

struct Entry {
    info: lk::IngressInfo,
    /// The session publishing now (0: none) and its stop signal.
    session: u64,
    stop: Option<watch::Sender<bool>>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    next_session: u64,
    rtmp_url: String,
    whip_url: String,
    /// Connections closed or refused, by reason.
    refused: BTreeMap<&'static str, u64>,
    sessions: u64,
}

/// Every ingress of this node. Cheap to clone.
#[derive(Clone, Default)]
pub struct Ingresses {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Ingresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingresses").finish_non_exhaustive()
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl Ingresses {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The URLs given to encoders: the RTMP base (`rtmp://host:port/live`) and the WHIP
    /// base (`http://host:port/whip`, to which the room name is appended).
    pub fn set_urls(&self, rtmp: &str, whip: &str) {
        let mut g = self.lock();
        g.rtmp_url = rtmp.trim_end_matches('/').to_owned();
        g.whip_url = whip.trim_end_matches('/').to_owned();
    }

    /// CreateIngress.
    pub fn create(&self, req: lk::CreateIngressRequest) -> Result<lk::IngressInfo, IngressError> {
        let input = lk::IngressInput::try_from(req.input_type)
            .map_err(|_| IngressError::Invalid(format!("unknown input type {}", req.input_type)))?;
        if input == lk::IngressInput::UrlInput {
            return Err(IngressError::Unsupported(
                "URL_INPUT (pulling from a URL) is not supported: push over RTMP or WHIP".into(),
            ));
        }
        if req.room_name.is_empty() {
            return Err(IngressError::Invalid("room_name is required".into()));
        }
        let id = format!("IN_{}", random_alnum(12));
        let identity = if req.participant_identity.is_empty() {
            format!("ingress-{id}")
        } else {
            req.participant_identity
        };
        let mut g = self.lock();
        let url = match input {
            lk::IngressInput::WhipInput => format!("{}/{}", g.whip_url, req.room_name),
            _ => g.rtmp_url.clone(),
        };
        let info = lk::IngressInfo {
            ingress_id: id.clone(),
            name: req.name,
            stream_key: random_alnum(16),
            url,
            input_type: input as i32,
            bypass_transcoding: req.bypass_transcoding,
            enable_transcoding: req.enable_transcoding,
            room_name: req.room_name,
            participant_identity: identity,
            participant_name: req.participant_name,
            participant_metadata: req.participant_metadata,
            reusable: input == lk::IngressInput::RtmpInput,
            state: Some(lk::IngressState {
                status: Status::EndpointInactive as i32,
                updated_at: now_ns(),
                ..Default::default()
            }),
            enabled: Some(req.enabled.unwrap_or(true)),
        };
        g.entries.insert(
            id,
            Entry {
                info: info.clone(),
                session: 0,
                stop: None,
            },
        );
        Ok(info)
    }

    /// ListIngress: every ingress, or those of a room, or one.
    pub fn list(&self, room: &str, id: &str) -> Vec<lk::IngressInfo> {
        let g = self.lock();
        let mut v: Vec<lk::IngressInfo> = g
            .entries
            .values()
            .filter(|e| room.is_empty() || e.info.room_name == room)
            .filter(|e| id.is_empty() || e.info.ingress_id == id)
            .map(|e| e.info.clone())
            .collect();
        v.sort_by(|a, b| a.ingress_id.cmp(&b.ingress_id));
        v
    }

    /// The room an ingress publishes into (for the grant check).
    pub fn room_of(&self, id: &str) -> Option<String> {
        self.lock()
            .entries
            .get(id)
            .map(|e| e.info.room_name.clone())
    }

    /// UpdateIngress: non-empty fields replace; a change reaches the next session, as in
    /// LiveKit.
    pub fn update(&self, req: lk::UpdateIngressRequest) -> Result<lk::IngressInfo, IngressError> {
        let mut g = self.lock();
        let whip_base = g.whip_url.clone();
        let e = g
            .entries
            .get_mut(&req.ingress_id)
            .ok_or(IngressError::NotFound)?;
        let i = &mut e.info;
        let set = |field: &mut String, v: String| {
            if !v.is_empty() {
                *field = v;
            }
        };
        set(&mut i.name, req.name);
        if !req.room_name.is_empty() && req.room_name != i.room_name {
            if i.input_type == lk::IngressInput::WhipInput as i32 {
                i.url = format!("{whip_base}/{}", req.room_name);
            }
            i.room_name = req.room_name;
        }
        set(&mut i.participant_identity, req.participant_identity);
        set(&mut i.participant_name, req.participant_name);
        set(&mut i.participant_metadata, req.participant_metadata);
        if let Some(b) = req.bypass_transcoding {
            i.bypass_transcoding = b;
        }
        if req.enable_transcoding.is_some() {
            i.enable_transcoding = req.enable_transcoding;
        }
        if req.enabled.is_some() {
            i.enabled = req.enabled;
        }
        if let Some(s) = i.state.as_mut() {
            s.updated_at = now_ns();
        }
        Ok(i.clone())
    }

    /// DeleteIngress: the ingress is forgotten and its session, if any, ends.
    pub fn delete(&self, id: &str) -> Result<lk::IngressInfo, IngressError> {
        let mut g = self.lock();
        let e = g.entries.remove(id).ok_or(IngressError::NotFound)?;
        if let Some(stop) = e.stop {
            let _ = stop.send(true);
        }
        let mut info = e.info;
        if let Some(s) = info.state.as_mut() {
            if s.status != Status::EndpointError as i32 {
                s.status = Status::EndpointInactive as i32;
            }
            s.updated_at = now_ns();
        }
        Ok(info)
    }

    /// An encoder publishes with `key`: the ingress it belongs to, now buffering.
    pub fn claim(&self, key: &str) -> Result<Claim, Refusal> {
        let mut g = self.lock();
        g.next_session += 1;
        let session = g.next_session;
        let e = g
            .entries
            .values_mut()
            .find(|e| {
                !key.is_empty()
                    && e.info.stream_key == key
                    && e.info.input_type == lk::IngressInput::RtmpInput as i32
            })
            .ok_or(Refusal::UnknownKey)?;
        if e.info.enabled == Some(false) {
            return Err(Refusal::Disabled);
        }
        if e.session != 0 {
            return Err(Refusal::Busy);
        }
        let (tx, rx) = watch::channel(false);
        e.session = session;
        e.stop = Some(tx);
        let now = now_ns();
        e.info.state = Some(lk::IngressState {
            status: Status::EndpointBuffering as i32,
            started_at: now,
            updated_at: now,
            resource_id: format!("RTMP_{session}"),
            ..Default::default()
        });
        let info = e.info.clone();
        g.sessions += 1;
        Ok(Claim {
            info,
            session,
            stop: rx,
        })
    }

    /// Updates the state of `id` if `session` still owns it.
    pub fn update_state(&self, id: &str, session: u64, f: impl FnOnce(&mut lk::IngressState)) {
        let mut g = self.lock();
        if let Some(e) = g.entries.get_mut(id).filter(|e| e.session == session) {
            let s = e.info.state.get_or_insert_with(Default::default);
            f(s);
            s.updated_at = now_ns();
        }
    }

    /// The session ended: inactive again, or in error with `error`.
    pub fn release(&self, id: &str, session: u64, error: Option<&str>) {
        let mut g = self.lock();
        if let Some(e) = g.entries.get_mut(id).filter(|e| e.session == session) {
            e.session = 0;
            e.stop = None;
            let s = e.info.state.get_or_insert_with(Default::default);
            let now = now_ns();
            match error {
                Some(m) => {
                    s.status = Status::EndpointError as i32;
                    s.error = m.to_owned();
                }
                None => s.status = Status::EndpointInactive as i32,
            }
            s.ended_at = now;
            s.updated_at = now;
        }
    }

    /// The claims a WHIP publisher gets when its bearer token is the stream key of a WHIP
    /// ingress of `room`: the ingress's identity, name and metadata, publish only.
    pub fn whip_claims(&self, key: &str, room: &str) -> Option<crate::auth::Claims> {
        let g = self.lock();
        let e = g.entries.values().find(|e| {
            !key.is_empty()
                && e.info.stream_key == key
                && e.info.input_type == lk::IngressInput::WhipInput as i32
                && e.info.room_name == room
                && e.info.enabled != Some(false)
        })?;
        Some(crate::auth::Claims {
            sub: e.info.participant_identity.clone(),
            name: e.info.participant_name.clone(),
            metadata: e.info.participant_metadata.clone(),
            video: Some(crate::auth::VideoGrant {
                room_join: true,
                room: room.to_owned(),
                can_publish: Some(true),
                can_subscribe: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// Counts a refused or failed connection under `reason`.
    pub fn count(&self, reason: &'static str) {
        *self.lock().refused.entry(reason).or_default() += 1;
    }

    /// Appends the ingress metrics in Prometheus' text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let g = self.lock();
        let _ = writeln!(
            out,
            "# HELP prism_ingress_sessions_total RTMP publishes admitted."
        );
        let _ = writeln!(out, "# TYPE prism_ingress_sessions_total counter");
        let _ = writeln!(out, "prism_ingress_sessions_total {}", g.sessions);
        let _ = writeln!(
            out,
            "# HELP prism_ingress_refused_total RTMP connections refused or closed, by reason."
        );
        let _ = writeln!(out, "# TYPE prism_ingress_refused_total counter");
        for (reason, n) in &g.refused {
            let _ = writeln!(
                out,
                "prism_ingress_refused_total{{reason=\"{reason}\"}} {n}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtmp(room: &str) -> lk::CreateIngressRequest {
        lk::CreateIngressRequest {
            room_name: room.into(),
            participant_identity: "cam".into(),
            ..Default::default()
        }
    }

    #[test]
    fn create_claim_release_and_delete() {
        let ing = Ingresses::new();
        ing.set_urls("rtmp://127.0.0.1:1935/live/", "http://127.0.0.1:7880/whip");
        let a = ing.create(rtmp("r1")).unwrap();
        assert_eq!(a.url, "rtmp://127.0.0.1:1935/live");
        assert!(a.reusable);
        assert_eq!(a.stream_key.len(), 16);
        assert!(ing.claim("nope").is_err_and(|r| r == Refusal::UnknownKey));
        assert!(ing.claim("").is_err());
        let c = ing.claim(&a.stream_key).unwrap();
        assert!(ing.claim(&a.stream_key).is_err_and(|r| r == Refusal::Busy));
        let st = ing.list("", &a.ingress_id)[0].state.clone().unwrap();
        assert_eq!(st.status, Status::EndpointBuffering as i32);
        ing.release(
            &a.ingress_id,
            c.session,
            Some("video codec HEVC is not supported"),
        );
        let st = ing.list("r1", "")[0].state.clone().unwrap();
        assert_eq!(st.status, Status::EndpointError as i32);
        assert!(st.error.contains("HEVC"));
        let c = ing.claim(&a.stream_key).unwrap();
        let deleted = ing.delete(&a.ingress_id).unwrap();
        assert_eq!(deleted.ingress_id, a.ingress_id);
        assert!(*c.stop.borrow());
        assert!(ing.list("", "").is_empty());
        assert_eq!(ing.delete(&a.ingress_id), Err(IngressError::NotFound));
    }

    #[test]
    fn whip_ingress_points_at_the_room_and_updates_follow() {
        let ing = Ingresses::new();
        ing.set_urls("rtmp://h/live", "http://h:7880/whip");
        let w = ing
            .create(lk::CreateIngressRequest {
                input_type: lk::IngressInput::WhipInput as i32,
                ..rtmp("r1")
            })
            .unwrap();
        assert_eq!(w.url, "http://h:7880/whip/r1");
        let u = ing
            .update(lk::UpdateIngressRequest {
                ingress_id: w.ingress_id.clone(),
                room_name: "r2".into(),
                enabled: Some(false),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            (u.url.as_str(), u.room_name.as_str()),
            ("http://h:7880/whip/r2", "r2")
        );
        assert_eq!(u.participant_identity, "cam");
        let r = ing.create(rtmp("r1")).unwrap();
        ing.update(lk::UpdateIngressRequest {
            ingress_id: r.ingress_id,
            enabled: Some(false),
            ..Default::default()
        })
        .unwrap();
        assert!(ing
            .claim(&r.stream_key)
            .is_err_and(|e| e == Refusal::Disabled));
        let url = lk::CreateIngressRequest {
            input_type: lk::IngressInput::UrlInput as i32,
            ..rtmp("r1")
        };
        assert!(matches!(ing.create(url), Err(IngressError::Unsupported(_))));
        // A WHIP ingress's key stands for a publish-only token of its room.
        let w2 = ing
            .create(lk::CreateIngressRequest {
                input_type: lk::IngressInput::WhipInput as i32,
                ..rtmp("r3")
            })
            .unwrap();
        let c = ing.whip_claims(&w2.stream_key, "r3").unwrap();
        assert_eq!((c.sub.as_str(), c.ensure_join().unwrap()), ("cam", "r3"));
        assert!(ing.whip_claims(&w2.stream_key, "r1").is_none());
        assert!(
            ing.whip_claims(&r.stream_key, "r1").is_none(),
            "an RTMP key is not a WHIP key"
        );
        assert!(ing.create(rtmp("")).is_err());
    }
}
