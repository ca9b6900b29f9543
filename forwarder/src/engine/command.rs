//! Control commands applied to an engine. This is the slow path: it may allocate, and it
//! validates everything (ids, room membership, SSRC uniqueness), answering each command
//! with exactly one event: a result or an error naming what was wrong.

use std::net::SocketAddr;
use std::time::Instant;

use pb::command::Body;
use prism_proto::control as pb;

use super::downtrack::{DownTrack, DownTrackParams};
use super::hdrext::ExtIds;
use super::rtx::RtxSender;
use super::track::{Layer, Track};
use super::{DownTrackEntry, Engine, Transport};
use crate::codec::Codec;
use crate::ids::{Mid, Pt, Rid, ShortId, Ssrc};

type CmdResult = Result<pb::event::Body, String>;

fn ok() -> CmdResult {
    Ok(pb::event::Body::Ok(pb::Ok {}))
}

impl Engine {
    /// Applies one command and returns its answer.
    pub fn handle_command(&mut self, now: Instant, cmd: pb::Command) -> pb::Event {
        let body = match cmd.body {
            None => Err("command without a body".to_string()),
            Some(b) => self.apply_command(now, b),
        };
        pb::Event {
            request_id: cmd.request_id,
            body: Some(
                body.unwrap_or_else(|message| pb::event::Body::Error(pb::Error { message })),
            ),
        }
    }

    fn apply_command(&mut self, now: Instant, body: Body) -> CmdResult {
        match body {
            Body::CreateRoom(c) => {
                let fingerprint = self.ensure_cert()?.fingerprint().to_string();
                self.objs.rooms.entry(c.room_id).or_default();
                Ok(pb::event::Body::RoomCreated(pb::RoomCreated {
                    room_id: c.room_id,
                    core: self.core,
                    local: self.local.to_string(),
                    fingerprint,
                }))
            }
            Body::CreatePlainTransport(c) => self.create_transport(now, c),
            Body::CreateWebrtcTransport(c) => self.create_webrtc_transport(now, c),
            Body::SetHeaderExtensions(c) => self.set_header_extensions(c),
            Body::AddTrack(c) => self.add_track(now, c),
            Body::AddDownTrack(c) => self.add_down_track(now, c),
            Body::SetPreferredLayer(c) => {
                let (dt, track) = self.down_track_and_track(c.down_track_id)?;
                let active = self.objs.tracks.get(track).map_or(0, |t| t.active);
                let e = self
                    .objs
                    .down_tracks
                    .get_mut(dt)
                    .ok_or("no such down track")?;
                e.dt.set_preferred(layer_u8(c.spatial)?, layer_u8(c.temporal)?);
                e.dt.retarget(active);
                ok()
            }
            Body::SetPaused(c) => {
                let (dt, _) = self.down_track_and_track(c.down_track_id)?;
                let e = self
                    .objs
                    .down_tracks
                    .get_mut(dt)
                    .ok_or("no such down track")?;
                e.dt.set_paused(c.paused);
                ok()
            }
            Body::RemoveDownTrack(c) => {
                let i = *self
                    .routes
                    .down_track_ids
                    .get(&c.down_track_id)
                    .ok_or_else(|| format!("no down track {}", c.down_track_id))?;
                self.remove_down_track(i);
                ok()
            }
            Body::RemoveTrack(c) => {
                let i = *self
                    .routes
                    .track_ids
                    .get(&c.track_id)
                    .ok_or_else(|| format!("no track {}", c.track_id))?;
                self.remove_track(i);
                ok()
            }
            Body::CloseTransport(c) => {
                let i = *self
                    .routes
                    .transport_ids
                    .get(&c.transport_id)
                    .ok_or_else(|| format!("no transport {}", c.transport_id))?;
                self.close_transport(i, "closed by control");
                ok()
            }
            Body::CloseRoom(c) => {
                let room = self
                    .objs
                    .rooms
                    .remove(&c.room_id)
                    .ok_or_else(|| format!("no room {}", c.room_id))?;
                for t in room.transports {
                    self.close_transport(t, "room closed");
                }
                ok()
            }
            Body::GetStats(_) => Ok(pb::event::Body::Stats(self.stats(now))),
            Body::RestartIce(c) => self.restart_ice(c),
            Body::SendData(c) => {
                let i = *self
                    .routes
                    .transport_ids
                    .get(&c.transport_id)
                    .ok_or_else(|| format!("no transport {}", c.transport_id))?;
                let w = self
                    .objs
                    .transports
                    .get_mut(i)
                    .and_then(|t| t.webrtc.as_mut())
                    .ok_or("not a WebRTC transport")?;
                w.send_data(&c.label, c.binary, &c.data)?;
                if !self.timers.pending_pump.contains(&i) {
                    self.timers.pending_pump.push(i);
                }
                ok()
            }
        }
    }

    /// The core's DTLS certificate, made on first use (one per core, shared by every
    /// WebRTC transport on it).
    fn ensure_cert(&mut self) -> Result<&crate::dtls::DtlsCert, String> {
        if self.cert.is_none() {
            self.cert = Some(
                crate::dtls::DtlsCert::generate()
                    .map_err(|e| format!("making a DTLS certificate: {e:?}"))?,
            );
        }
        self.cert.as_ref().ok_or_else(|| "no certificate".into())
    }

    fn down_track_and_track(&self, id: u64) -> Result<(usize, usize), String> {
        let i = *self
            .routes
            .down_track_ids
            .get(&id)
            .ok_or_else(|| format!("no down track {id}"))?;
        let e = self.objs.down_tracks.get(i).ok_or("no such down track")?;
        Ok((i, e.track))
    }

    fn create_transport(&mut self, now: Instant, c: pb::CreatePlainTransport) -> CmdResult {
        if !self.objs.rooms.contains_key(&c.room_id) {
            return Err(format!("no room {} on core {}", c.room_id, self.core));
        }
        if self.routes.transport_ids.contains_key(&c.transport_id) {
            return Err(format!("transport {} exists", c.transport_id));
        }
        let remote = if c.remote.is_empty() {
            if !c.comedia {
                return Err("a transport needs a remote address or comedia".into());
            }
            None
        } else {
            let a: SocketAddr = c
                .remote
                .parse()
                .map_err(|_| format!("bad remote address {:?}", c.remote))?;
            if self.routes.by_addr.contains_key(&a) {
                return Err(format!("remote {a} is already used by another transport"));
            }
            Some(a)
        };
        let srtp = match &c.srtp {
            None => None,
            Some(p) => Some(Box::new(srtp_pair(p)?)),
        };
        let i = self.objs.transports.insert(Transport {
            comedia: c.comedia && remote.is_none(),
            srtp,
            ..Transport::new(c.transport_id, c.room_id, remote, now)
        });
        self.routes.transport_ids.insert(c.transport_id, i);
        if let Some(a) = remote {
            self.routes.by_addr.insert(a, i);
        }
        if let Some(r) = self.objs.rooms.get_mut(&c.room_id) {
            r.transports.push(i);
        }
        Ok(pb::event::Body::TransportCreated(pb::TransportCreated {
            transport_id: c.transport_id,
            local: self.local.to_string(),
            fingerprint: String::new(),
        }))
    }

    fn create_webrtc_transport(&mut self, now: Instant, c: pb::CreateWebRtcTransport) -> CmdResult {
        if !self.objs.rooms.contains_key(&c.room_id) {
            return Err(format!("no room {} on core {}", c.room_id, self.core));
        }
        if self.routes.transport_ids.contains_key(&c.transport_id) {
            return Err(format!("transport {} exists", c.transport_id));
        }
        if self.routes.by_ufrag.contains_key(c.local_ufrag.as_bytes()) {
            return Err(format!("ICE ufrag {:?} is already in use", c.local_ufrag));
        }
        let cert = self.ensure_cert()?;
        let fingerprint = cert.fingerprint().to_string();
        let w = super::webrtc::WebRtc::new(&c, cert)?;
        let i = self.objs.transports.insert(Transport {
            webrtc: Some(Box::new(w)),
            // Nothing is negotiated until signaling says so.
            ext: Some(ExtIds::default()),
            ..Transport::new(c.transport_id, c.room_id, None, now)
        });
        self.routes.transport_ids.insert(c.transport_id, i);
        self.routes.by_ufrag.insert(c.local_ufrag.into_bytes(), i);
        if let Some(r) = self.objs.rooms.get_mut(&c.room_id) {
            r.transports.push(i);
        }
        Ok(pb::event::Body::TransportCreated(pb::TransportCreated {
            transport_id: c.transport_id,
            local: self.local.to_string(),
            fingerprint,
        }))
    }

    /// Sets a transport's header extension ids, and with them its transport-wide CC state:
    /// a send history when transport-cc is negotiated, an arrival recorder when feedback
    /// toward the peer is too. Existing state is kept when the ids are set again.
    fn set_header_extensions(&mut self, c: pb::SetHeaderExtensions) -> CmdResult {
        let i = self.transport_in_room(c.transport_id, c.room_id)?;
        let ids = ExtIds::from_proto(&c.ids.unwrap_or_default())?;
        let t = self.objs.transports.get_mut(i).ok_or("no such transport")?;
        t.ext = Some(ids);
        if ids.transport_cc == 0 {
            t.twcc_out = None;
            t.twcc_in = None;
            // No estimate any more: nothing caps the layers.
            for &di in &t.down_tracks {
                if let Some(e) = self.objs.down_tracks.get_mut(di) {
                    let active = self.objs.tracks.get(e.track).map_or(0, |tr| tr.active);
                    e.dt.set_cap(super::cc::UNCAPPED, active);
                }
            }
        } else {
            if t.twcc_out.is_none() {
                t.twcc_out = Some(Box::default());
            }
            if !c.transport_cc_feedback {
                t.twcc_in = None;
            } else if t.twcc_in.is_none() {
                t.twcc_in = Some(Box::default());
            }
        }
        ok()
    }

    /// ICE restart: the new local ufrag routes, the old one stops routing new addresses,
    /// and the agent takes the new credentials (see `IceLite::restart` for what happens
    /// to the current path). DTLS and the transport's SRTP contexts are left alone.
    fn restart_ice(&mut self, c: pb::RestartIce) -> CmdResult {
        let i = self.transport_in_room(c.transport_id, c.room_id)?;
        if c.local_ufrag.is_empty() || c.local_pwd.is_empty() {
            return Err("local ICE credentials are required".into());
        }
        if c.remote_ufrag.is_empty() != c.remote_pwd.is_empty() {
            return Err("remote ICE ufrag and password go together".into());
        }
        if let Some(&other) = self.routes.by_ufrag.get(c.local_ufrag.as_bytes()) {
            // The same ufrag again would not be a restart (RFC 8445 §9 changes both), and
            // another transport's would steal its checks.
            let whose = if other == i {
                "this transport"
            } else {
                "another transport"
            };
            return Err(format!(
                "ICE ufrag {:?} is already in use by {whose}",
                c.local_ufrag
            ));
        }
        let w = self
            .objs
            .transports
            .get_mut(i)
            .and_then(|t| t.webrtc.as_mut())
            .ok_or("not a WebRTC transport")?;
        w.ice.restart(&c.local_ufrag, &c.local_pwd);
        if !c.remote_ufrag.is_empty() {
            w.ice.set_remote_credentials(&c.remote_ufrag, &c.remote_pwd);
        }
        self.routes.by_ufrag.retain(|_, v| *v != i);
        self.routes.by_ufrag.insert(c.local_ufrag.into_bytes(), i);
        tracing::debug!(transport = c.transport_id, "ICE restart");
        ok()
    }

    /// The transport index for `id`, checked to belong to `room`.
    fn transport_in_room(&self, id: u64, room: u64) -> Result<usize, String> {
        let i = *self
            .routes
            .transport_ids
            .get(&id)
            .ok_or_else(|| format!("no transport {id}"))?;
        let t = self.objs.transports.get(i).ok_or("no such transport")?;
        if t.room != room {
            return Err(format!("transport {id} is not in room {room}"));
        }
        Ok(i)
    }

    fn add_track(&mut self, now: Instant, c: pb::AddTrack) -> CmdResult {
        let ti = self.transport_in_room(c.transport_id, c.room_id)?;
        if self.routes.track_ids.contains_key(&c.track_id) {
            return Err(format!("track {} exists", c.track_id));
        }
        if c.layers.is_empty() || c.layers.len() > 8 {
            return Err("a track needs 1 to 8 layers".into());
        }
        let codec = c.codec.unwrap_or_default();
        let video = c.kind == pb::MediaKind::Video as i32;
        let kind = match pb::CodecKind::try_from(codec.kind).unwrap_or_default() {
            pb::CodecKind::Opus => Codec::Opus,
            pb::CodecKind::Vp8 => Codec::Vp8,
            pb::CodecKind::Vp9 => Codec::Vp9,
            pb::CodecKind::H264 => Codec::H264,
            pb::CodecKind::Av1 => Codec::Av1,
            pb::CodecKind::CodecUnspecified => Codec::Other,
        };
        let mut layers = c.layers.clone();
        layers.sort_by_key(|l| l.spatial);
        for (i, l) in layers.iter().enumerate() {
            if l.spatial as usize != i {
                return Err("layers must have spatial indices 0..n without gaps".into());
            }
            if l.ssrc == 0 {
                if l.rid.is_empty() || c.rid_ext_id == 0 {
                    return Err(
                        "a layer without an SSRC needs a rid and the rid extension id".into(),
                    );
                }
                continue;
            }
            if self.ssrc_published(ti, Ssrc(l.ssrc))
                || layers
                    .iter()
                    .filter(|o| o.ssrc == l.ssrc || o.rtx_ssrc == l.ssrc)
                    .count()
                    > 1
            {
                return Err(format!(
                    "ssrc {} is already published on this transport",
                    l.ssrc
                ));
            }
        }
        let rtx_pt = match c.rtx_payload_type {
            0 => None,
            pt if pt > 127 || Some(pt) == c.codec.as_ref().map(|c| c.payload_type) => {
                return Err(format!("bad RTX payload type {pt}"));
            }
            pt => Some(Pt(pt as u8)),
        };
        for l in layers.iter().filter(|l| l.rtx_ssrc != 0) {
            if rtx_pt.is_none() {
                return Err("an RTX SSRC needs the RTX payload type".into());
            }
            if self.ssrc_published(ti, Ssrc(l.rtx_ssrc))
                || layers
                    .iter()
                    .filter(|o| o.ssrc == l.rtx_ssrc || o.rtx_ssrc == l.rtx_ssrc)
                    .count()
                    > 1
            {
                return Err(format!(
                    "RTX ssrc {} is already published on this transport",
                    l.rtx_ssrc
                ));
            }
        }
        let cache = if video {
            self.cfg.video_cache
        } else {
            self.cfg.audio_cache
        };
        let track = Track {
            id: c.track_id,
            room: c.room_id,
            transport: ti,
            video,
            codec: kind,
            payload_type: Pt(codec.payload_type as u8),
            clock_rate: if codec.clock_rate == 0 {
                if video {
                    90_000
                } else {
                    48_000
                }
            } else {
                codec.clock_rate
            },
            layers: layers
                .iter()
                .map(|l| {
                    let mut layer =
                        Layer::new(Ssrc(l.ssrc), ShortId::new(l.rid.as_bytes()).map(Rid), cache);
                    layer.rtx_ssrc = Ssrc(l.rtx_ssrc);
                    layer
                })
                .collect(),
            subscribers: Vec::new(),
            meter: Default::default(),
            active: Track::all_layers(layers.len()),
            mid: ShortId::new(c.mid.as_bytes()).map(crate::ids::Mid),
            mid_ext: u8::try_from(c.mid_ext_id).unwrap_or(0),
            rid_ext: u8::try_from(c.rid_ext_id).unwrap_or(0),
            rtx_pt,
            repaired_rid_ext: u8::try_from(c.repaired_rid_ext_id).unwrap_or(0),
            nack: c.nack.unwrap_or(true),
            created: now,
        };
        let i = self.objs.tracks.insert(track);
        self.routes.track_ids.insert(c.track_id, i);
        let pending = self
            .objs
            .transports
            .get(ti)
            .is_some_and(|t| t.comedia && t.remote.is_none());
        for (li, l) in layers.iter().enumerate() {
            if l.rtx_ssrc != 0 {
                self.routes
                    .by_rtx_ssrc
                    .insert((ti, Ssrc(l.rtx_ssrc)), (i, li as u8));
            }
            if l.ssrc == 0 {
                continue;
            }
            self.routes
                .by_ssrc
                .insert((ti, Ssrc(l.ssrc)), (i, li as u8));
            if pending {
                self.routes.comedia.insert(Ssrc(l.ssrc), ti);
            }
        }
        if let Some(t) = self.objs.transports.get_mut(ti) {
            t.tracks.push(i);
        }
        ok()
    }

    fn add_down_track(&mut self, now: Instant, c: pb::AddDownTrack) -> CmdResult {
        let ti = self.transport_in_room(c.transport_id, c.room_id)?;
        let track_i = *self
            .routes
            .track_ids
            .get(&c.track_id)
            .ok_or_else(|| format!("no track {}", c.track_id))?;
        if self.routes.down_track_ids.contains_key(&c.down_track_id) {
            return Err(format!("down track {} exists", c.down_track_id));
        }
        let ssrc = Ssrc(c.ssrc);
        if self.ssrc_sent(ti, ssrc) {
            return Err(format!("ssrc {} is already sent on this transport", c.ssrc));
        }
        let rtx = match (c.rtx_ssrc, c.rtx_payload_type) {
            (0, 0) => None,
            (0, _) | (_, 0) => {
                return Err("RTX needs both an SSRC and a payload type".into());
            }
            (r, pt) if r == c.ssrc || pt > 127 || pt == c.payload_type => {
                return Err(format!("bad RTX ssrc {r} or payload type {pt}"));
            }
            (r, _) if self.ssrc_sent(ti, Ssrc(r)) => {
                return Err(format!("ssrc {r} is already sent on this transport"));
            }
            // RFC 3550 wants a random first sequence number; the SSRC is random already.
            (r, pt) => Some(RtxSender::new(
                Ssrc(r),
                Pt(pt as u8),
                (r ^ (r >> 16)) as u16,
            )),
        };
        let track = self.objs.tracks.get_mut(track_i).ok_or("no such track")?;
        if track.room != c.room_id {
            return Err(format!("track {} is not in room {}", c.track_id, c.room_id));
        }
        track.refresh_active(now);
        let pt = if c.payload_type == 0 {
            track.payload_type
        } else {
            Pt(c.payload_type as u8)
        };
        let mut dt = DownTrack::new(DownTrackParams {
            ssrc,
            payload_type: pt,
            clock_rate: track.clock_rate,
            video: track.video,
            preferred_spatial: layer_u8(c.preferred_spatial)?,
            preferred_temporal: match c.preferred_temporal {
                None => u8::MAX,
                Some(t) => layer_u8(t)?,
            },
        });
        dt.retarget(track.active);
        let room = c.room_id;
        let mid = if c.mid.is_empty() {
            None
        } else {
            Some(Mid(ShortId::new(c.mid.as_bytes()).ok_or_else(|| {
                format!("mid {:?} is not 1 to 16 printable characters", c.mid)
            })?))
        };
        let ext = match &c.header_extensions {
            None => None,
            Some(p) => {
                let ids = ExtIds::from_proto(p)?;
                let transport = self.objs.transports.get(ti).and_then(|t| t.ext);
                if let Some(t) = transport {
                    if !ids.within(&t) {
                        return Err("the down track's header extension ids differ from its \
                                    transport's"
                            .into());
                    }
                }
                Some(ids)
            }
        };
        let di = self.objs.down_tracks.insert(DownTrackEntry {
            id: c.down_track_id,
            room,
            track: track_i,
            transport: ti,
            mid,
            ext,
            dt,
            rtx,
            report: Default::default(),
        });
        track.subscribers.push(di);
        self.routes.down_track_ids.insert(c.down_track_id, di);
        self.routes.by_out_ssrc.insert((ti, ssrc), di);
        if let Some(t) = self.objs.transports.get_mut(ti) {
            t.down_tracks.push(di);
            if t.comedia && t.remote.is_none() {
                self.routes.comedia.insert(ssrc, ti);
            }
        }
        ok()
    }
}

/// SRTP contexts from keys given by control.
fn srtp_pair(p: &pb::SrtpParams) -> Result<super::SrtpPair, String> {
    use crate::srtp::{SrtpContext, SrtpKeys, SrtpProfile};
    // RFC 4568 names, and the DTLS-SRTP (OpenSSL) names.
    let profile = match p.profile.as_str() {
        "AEAD_AES_128_GCM" | "SRTP_AEAD_AES_128_GCM" => SrtpProfile::AeadAes128Gcm,
        "AES_CM_128_HMAC_SHA1_80" | "SRTP_AES128_CM_SHA1_80" => SrtpProfile::AesCm128HmacSha1_80,
        "AES_CM_128_HMAC_SHA1_32" | "SRTP_AES128_CM_SHA1_32" => SrtpProfile::AesCm128HmacSha1_32,
        other => return Err(format!("unknown SRTP profile {other:?}")),
    };
    let send = SrtpKeys::new(profile, &p.send_key, &p.send_salt)
        .map_err(|e| format!("send key: {e:?}"))?;
    let recv = SrtpKeys::new(profile, &p.recv_key, &p.recv_salt)
        .map_err(|e| format!("receive key: {e:?}"))?;
    Ok(super::SrtpPair {
        outbound: SrtpContext::new(profile, &send).map_err(|e| format!("{e:?}"))?,
        inbound: SrtpContext::new(profile, &recv).map_err(|e| format!("{e:?}"))?,
    })
}

fn layer_u8(v: u32) -> Result<u8, String> {
    u8::try_from(v).map_err(|_| format!("layer index {v} out of range"))
}
