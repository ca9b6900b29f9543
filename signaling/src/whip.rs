//! WHIP (RFC 9725) and WHEP: the simplest standard way into and out of Prism.
//!
//! `POST /whip/{room}` publishes what the SDP offer sends. `POST /whep/{room}` receives every
//! track published in the room when the viewer arrives. Each `201 Created` carries the
//! answer and a `Location` to `DELETE` to end the session. Both require a join token for
//! that room: `Authorization: Bearer …`, with `canPublish` for WHIP and `canSubscribe` for
//! WHEP. The token's identity names the session.
//!
//! Each session is one WebRTC transport on the room's core. The offer is parsed and
//! answered here, and the forwarder is told what to expect:
//! - the transport (ICE credentials, the peer's fingerprint, our DTLS role), then the
//!   header extension ids the answer settled on ([`header_extensions`]);
//! - the published tracks, with their SSRCs and payload types, and their RTX streams
//!   (RFC 4588), which the answer accepts so that a publisher's retransmissions do not
//!   disturb the loss statistics of its media stream;
//! - or the down tracks, with the payload types the viewer expects, an RTX stream
//!   where the viewer offered RTX for the codec it receives, and the header extensions
//!   of the viewer's section.
//!
//! ICE is not trickled: the answer has the core's address as its only candidate, and
//! `PATCH` is answered 405.

use std::sync::Mutex;
use std::time::Duration;

use pb::command::Body as Cmd;
use prism_forwarder::control::ControlClient;
use prism_proto::control as pb;

use crate::auth::{AuthError, Claims, KeyStore};
use crate::media::{
    add_track_for, extension_ids, header_extensions, next_id, random_ice_string, random_u32,
    sdp_codec,
};
use crate::rooms::{PublishedTrack, Rooms, Session};
use crate::sdp::{AnswerBuilder, AnswerTrack, ServerParams, SessionOffer, SetupRole};

const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// A WHIP/WHEP failure: HTTP status and a plain-text reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError(pub u16, pub String);

impl From<AuthError> for HttpError {
    fn from(e: AuthError) -> Self {
        let (s, t) = e.status();
        HttpError(s, t)
    }
}

fn bad_request(msg: impl Into<String>) -> HttpError {
    HttpError(400, msg.into())
}

fn internal(msg: impl Into<String>) -> HttpError {
    HttpError(500, msg.into())
}

/// What a successful POST returns.
#[derive(Debug)]
pub struct Created {
    pub answer: String,
    pub location: String,
}

/// WHIP and WHEP sessions of one node.
pub struct Whip {
    pub keys: KeyStore,
    pub control: ControlClient,
    pub rooms: Mutex<Rooms>,
}

impl std::fmt::Debug for Whip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Whip").finish_non_exhaustive()
    }
}

impl Whip {
    pub fn new(keys: KeyStore, control: ControlClient) -> Self {
        Self {
            keys,
            control,
            rooms: Mutex::new(Rooms::default()),
        }
    }

    fn request(&self, body: Cmd) -> Result<pb::event::Body, HttpError> {
        let ev = self
            .control
            .request(body, CONTROL_TIMEOUT)
            .map_err(|e| internal(format!("media plane: {e:?}")))?;
        match ev.body {
            Some(pb::event::Body::Error(e)) => Err(internal(format!("media plane: {}", e.message))),
            Some(b) => Ok(b),
            None => Err(internal("media plane: empty answer")),
        }
    }

    fn authorize(&self, token: Option<&str>, room: &str) -> Result<Claims, HttpError> {
        let token = token.ok_or(AuthError::NoPermissions)?;
        let claims = self.keys.verify_now(token)?;
        let granted = claims.ensure_join()?;
        if granted != room {
            return Err(HttpError(
                401,
                format!("the token is for room {granted:?}, not {room:?}"),
            ));
        }
        Ok(claims)
    }

    /// Parses the offer and creates the room (if needed) and the WebRTC transport.
    /// Returns the offer, the transport id and the server parameters for the answer.
    fn open_transport(
        &self,
        room_name: &str,
        sdp: &str,
    ) -> Result<(SessionOffer, u64, u64, ServerParams), HttpError> {
        let offer = SessionOffer::parse(sdp).map_err(|e| bad_request(format!("{e}")))?;
        offer.validate().map_err(|e| bad_request(format!("{e}")))?;
        let first = offer
            .media
            .iter()
            .find(|m| !m.is_rejected())
            .ok_or_else(|| bad_request("the offer has no media"))?;
        let (Some(ufrag), Some(pwd), Some(fp)) =
            (&first.ice_ufrag, &first.ice_pwd, &first.fingerprint)
        else {
            return Err(bad_request(
                "the offer lacks ICE credentials or a fingerprint",
            ));
        };
        if !fp.algorithm.eq_ignore_ascii_case("sha-256") || fp.value.len() != 32 {
            return Err(bad_request(
                "only sha-256 certificate fingerprints are supported",
            ));
        }
        // We answer passive to actpass and active offers, active to passive ones.
        let dtls_client = first.setup == Some(SetupRole::Passive);
        let (room_id, created) = {
            let mut rooms = self
                .rooms
                .lock()
                .map_err(|_| internal("registry poisoned"))?;
            let (room, created) = rooms.get_or_insert(room_name);
            (room.id, created)
        };
        if created {
            self.request(Cmd::CreateRoom(pb::CreateRoom {
                room_id,
                ..Default::default()
            }))?;
        }
        let transport_id = next_id();
        let local_ufrag = random_ice_string(8);
        let local_pwd = random_ice_string(24);
        let created = self.request(Cmd::CreateWebrtcTransport(pb::CreateWebRtcTransport {
            room_id,
            transport_id,
            local_ufrag: local_ufrag.clone(),
            local_pwd: local_pwd.clone(),
            remote_ufrag: ufrag.clone(),
            remote_pwd: pwd.clone(),
            remote_fingerprint: format!(
                "sha-256 {}",
                fp.value
                    .iter()
                    .map(|b| format!("{b:02X}"))
                    .collect::<Vec<_>>()
                    .join(":")
            ),
            dtls_client,
        }))?;
        let pb::event::Body::TransportCreated(t) = created else {
            return Err(internal(
                "media plane: unexpected answer to CreateWebRtcTransport",
            ));
        };
        let local: std::net::SocketAddr = t
            .local
            .parse()
            .map_err(|_| internal("media plane: bad local address"))?;
        let ours = prism_forwarder::dtls::Fingerprint::parse(&t.fingerprint)
            .map_err(|_| internal("media plane: bad fingerprint"))?;
        let mut sha = [0u8; 32];
        if ours.as_bytes().len() != 32 {
            return Err(internal("media plane: fingerprint is not sha-256"));
        }
        sha.copy_from_slice(ours.as_bytes());
        let mut params = ServerParams::new(&local_ufrag, &local_pwd, sha, vec![local]);
        params.session_id = u64::from(random_u32());
        Ok((offer, room_id, transport_id, params))
    }

    fn close_quietly(&self, room_id: u64, transport_id: u64) {
        let _ = self.request(Cmd::CloseTransport(pb::CloseTransport {
            room_id,
            transport_id,
        }));
    }

    /// `POST /whip/{room}`.
    pub fn publish(
        &self,
        room: &str,
        token: Option<&str>,
        sdp: &str,
    ) -> Result<Created, HttpError> {
        let claims = self.authorize(token, room)?;
        if !claims.grant()?.can_publish() {
            return Err(HttpError(403, "the token does not allow publishing".into()));
        }
        let (offer, room_id, transport_id, params) = self.open_transport(room, sdp)?;
        let result = (|| {
            let (answer, choices) = AnswerBuilder::new(&offer, &params)
                .build_with_choices()
                .map_err(|e| bad_request(format!("{e}")))?;
            self.request(Cmd::SetHeaderExtensions(header_extensions(
                room_id,
                transport_id,
                &choices,
            )))?;
            let session_id = random_ice_string(16).replace(['+', '/'], "x");
            let mut published = Vec::new();
            for (section, choice) in offer.media.iter().zip(&choices) {
                let track_id = next_id();
                let Some(cmd) = add_track_for(section, choice, room_id, transport_id, track_id)
                    .map_err(bad_request)?
                else {
                    continue;
                };
                let Some(codec) = choice.codec.clone() else {
                    continue;
                };
                self.request(Cmd::AddTrack(cmd))?;
                published.push(PublishedTrack {
                    track_id,
                    kind: section.kind,
                    codec,
                    session: session_id.clone(),
                    stream_id: claims.identity().to_string(),
                });
            }
            if published.is_empty() {
                return Err(bad_request(
                    "the offer sends no audio or video Prism can forward",
                ));
            }
            let mut rooms = self
                .rooms
                .lock()
                .map_err(|_| internal("registry poisoned"))?;
            let r = rooms.get_or_insert(room).0;
            r.tracks.extend(published);
            r.sessions.insert(
                session_id.clone(),
                Session {
                    id: session_id.clone(),
                    transport_id,
                    identity: claims.identity().to_string(),
                    publisher: true,
                },
            );
            Ok(Created {
                answer,
                location: format!("/whip/{room}/{session_id}"),
            })
        })();
        if result.is_err() {
            self.close_quietly(room_id, transport_id);
        }
        result
    }

    /// `POST /whep/{room}`.
    pub fn view(&self, room: &str, token: Option<&str>, sdp: &str) -> Result<Created, HttpError> {
        let claims = self.authorize(token, room)?;
        if !claims.grant()?.can_subscribe() {
            return Err(HttpError(
                403,
                "the token does not allow subscribing".into(),
            ));
        }
        let tracks = {
            let rooms = self
                .rooms
                .lock()
                .map_err(|_| internal("registry poisoned"))?;
            rooms
                .get(room)
                .map(|r| r.tracks.clone())
                .unwrap_or_default()
        };
        if tracks.is_empty() {
            return Err(HttpError(
                404,
                format!("nothing is published in room {room:?}"),
            ));
        }
        let (offer, room_id, transport_id, params) = self.open_transport(room, sdp)?;
        let result = (|| {
            // Give each receiving section the next published track of its kind.
            let mut builder = AnswerBuilder::new(&offer, &params);
            let mut used = Vec::new();
            let mut planned = Vec::new();
            for section in &offer.media {
                if section.is_rejected() || !section.direction.receives() {
                    continue;
                }
                let Some(t) = tracks
                    .iter()
                    .find(|t| t.kind == section.kind && !used.contains(&t.track_id))
                else {
                    continue;
                };
                used.push(t.track_id);
                let ssrc = random_u32();
                let rtx_ssrc = loop {
                    let r = random_u32();
                    if r != ssrc {
                        break r;
                    }
                };
                builder = builder.send(
                    &section.mid,
                    AnswerTrack {
                        ssrc,
                        rtx_ssrc: Some(rtx_ssrc),
                        cname: format!("prism-{room_id}"),
                        stream_id: t.stream_id.clone(),
                        track_id: format!("TR_{}", t.track_id),
                        codec: sdp_codec(&t.codec.name).ok_or_else(|| {
                            internal(format!("published codec {} has no SDP form", t.codec.name))
                        })?,
                    },
                );
                planned.push((section.mid.clone(), t.clone(), ssrc, rtx_ssrc));
            }
            if planned.is_empty() {
                return Err(HttpError(
                    409,
                    "the offer has no receiving section for the published tracks".into(),
                ));
            }
            let (answer, choices) = builder
                .build_with_choices()
                .map_err(|e| bad_request(format!("{e}")))?;
            self.request(Cmd::SetHeaderExtensions(header_extensions(
                room_id,
                transport_id,
                &choices,
            )))?;
            let session_id = random_ice_string(16).replace(['+', '/'], "x");
            for (mid, t, ssrc, rtx_ssrc) in planned {
                let Some(choice) = choices.iter().find(|c| c.mid == mid) else {
                    continue;
                };
                let Some(codec) = &choice.codec else {
                    continue;
                };
                let down_track_id = next_id();
                self.request(Cmd::AddDownTrack(pb::AddDownTrack {
                    room_id,
                    track_id: t.track_id,
                    down_track_id,
                    transport_id,
                    ssrc,
                    payload_type: u32::from(codec.pt),
                    preferred_spatial: 2,
                    preferred_temporal: None,
                    // RTX where the viewer offered it for the codec sent (the answer then
                    // announces the RTX SSRC in an FID group).
                    rtx_ssrc: choice.rtx_pt.map_or(0, |_| rtx_ssrc),
                    rtx_payload_type: choice.rtx_pt.map_or(0, u32::from),
                    mid: mid.clone(),
                    // Only what this section negotiated (e.g. aiortc gives audio no
                    // abs-send-time).
                    header_extensions: Some(extension_ids(choice.extmaps.iter())),
                }))?;
            }
            let mut rooms = self
                .rooms
                .lock()
                .map_err(|_| internal("registry poisoned"))?;
            if let Some(r) = rooms.get_mut(room) {
                r.sessions.insert(
                    session_id.clone(),
                    Session {
                        id: session_id.clone(),
                        transport_id,
                        identity: claims.identity().to_string(),
                        publisher: false,
                    },
                );
            }
            Ok(Created {
                answer,
                location: format!("/whep/{room}/{session_id}"),
            })
        })();
        if result.is_err() {
            self.close_quietly(room_id, transport_id);
        }
        result
    }

    /// `DELETE /whip/{room}/{session}` or `/whep/{room}/{session}`. The session's token
    /// must be for the same room.
    pub fn end(&self, room: &str, session: &str, token: Option<&str>) -> Result<(), HttpError> {
        self.authorize(token, room)?;
        let (room_id, s, empty) = {
            let mut rooms = self
                .rooms
                .lock()
                .map_err(|_| internal("registry poisoned"))?;
            let r = rooms
                .get_mut(room)
                .ok_or_else(|| HttpError(404, "no such session".into()))?;
            let s = r
                .sessions
                .remove(session)
                .ok_or_else(|| HttpError(404, "no such session".into()))?;
            r.tracks.retain(|t| t.session != session);
            (r.id, s, r.sessions.is_empty())
        };
        self.close_quietly(room_id, s.transport_id);
        if empty {
            let mut rooms = self
                .rooms
                .lock()
                .map_err(|_| internal("registry poisoned"))?;
            if rooms.get(room).is_some_and(|r| r.sessions.is_empty()) {
                rooms.remove(room);
                let _ = self.request(Cmd::CloseRoom(pb::CloseRoom { room_id }));
            }
        }
        Ok(())
    }
}
