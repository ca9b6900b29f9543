//! Applying a typed [`Command`] to the engine: the checks that need the engine's state
//! (ids exist or not, room membership, SSRC uniqueness per transport), then the change.
//! A refused command changes nothing. Slow path: this may allocate.

use std::net::SocketAddr;
use std::time::Instant;

use super::command::{
    AddDownTrack, AddTrack, Command, CommandError, PlainTransport, RelayIds, Reply, RestartIce,
    WebRtcParams,
};
use super::downtrack::{DownTrack, DownTrackParams};
use super::hdrext::ExtIds;
use super::rtx::RtxSender;
use super::track::{Layer, Track};
use super::webrtc::WebRtc;
use super::{DownTrackEntry, Engine, Transport};
use crate::ids::{DownTrackId, Pt, RoomId, Ssrc, TransportId};

type CmdResult = Result<Reply, CommandError>;

impl Engine {
    /// Applies one command and returns its answer.
    pub fn apply(&mut self, now: Instant, cmd: Command) -> CmdResult {
        match cmd {
            Command::CreateRoom(room) => {
                let fingerprint = self.ensure_cert()?.fingerprint().to_string();
                self.objs.rooms.entry(room.0).or_default();
                Ok(Reply::RoomCreated {
                    room,
                    core: self.core,
                    local: self.local,
                    bound: self.bound,
                    tcp_local: self
                        .cfg
                        .tcp_port
                        .map(|p| SocketAddr::new(self.local.ip(), p)),
                    fingerprint,
                })
            }
            Command::CreatePlainTransport(c) => self.create_transport(now, c),
            Command::CreateWebRtcTransport {
                room,
                transport,
                params,
            } => self.create_webrtc_transport(now, room, transport, params),
            Command::SetHeaderExtensions {
                room,
                transport,
                ids,
                feedback,
            } => self.set_header_extensions(room, transport, ids, feedback),
            Command::AddTrack(c) => self.add_track(now, c),
            Command::AddDownTrack(c) => self.add_down_track(now, c),
            Command::SetPreferredLayer {
                down_track,
                spatial,
                temporal,
            } => {
                let (dt, track) = self.down_track_and_track(down_track)?;
                let active = self.objs.tracks.get(track).map_or(0, |t| t.active);
                let e = self.objs.down_tracks.get_mut(dt);
                let e = e.ok_or(CommandError::NoDownTrack(down_track))?;
                e.dt.set_preferred(spatial, temporal);
                e.dt.retarget(active);
                Ok(Reply::Ok)
            }
            Command::SetPaused { down_track, paused } => {
                let (dt, _) = self.down_track_and_track(down_track)?;
                let e = self.objs.down_tracks.get_mut(dt);
                let e = e.ok_or(CommandError::NoDownTrack(down_track))?;
                e.dt.set_paused(paused);
                Ok(Reply::Ok)
            }
            Command::RemoveDownTrack(id) => {
                let i = self.routes.down_track_ids.get(&id.0);
                let i = *i.ok_or(CommandError::NoDownTrack(id))?;
                self.remove_down_track(i);
                Ok(Reply::Ok)
            }
            Command::RemoveTrack(id) => {
                let i = *self
                    .routes
                    .track_ids
                    .get(&id.0)
                    .ok_or(CommandError::NoTrack(id))?;
                self.remove_track(i);
                Ok(Reply::Ok)
            }
            Command::CloseTransport(id) => {
                let i = self.routes.transport_ids.get(&id.0);
                let i = *i.ok_or(CommandError::NoTransport(id))?;
                self.close_transport(i, "closed by control");
                Ok(Reply::Ok)
            }
            Command::CloseRoom(id) => {
                let room = self.objs.rooms.remove(&id.0).ok_or(CommandError::NoRoom {
                    room: id,
                    core: self.core,
                })?;
                for t in room.transports {
                    self.close_transport(t, "room closed");
                }
                Ok(Reply::Ok)
            }
            Command::RestartIce(c) => self.restart_ice(c),
            Command::SendData {
                transports,
                label,
                binary,
                data,
            } => {
                // Every recipient that can take it gets it; the answer names the first
                // that could not.
                let mut first_error = None;
                for transport in transports {
                    if let Err(e) = self.send_data(transport, &label, binary, &data) {
                        first_error.get_or_insert(e);
                    }
                }
                if let Some(e) = first_error {
                    return Err(e);
                }
                Ok(Reply::Ok)
            }
        }
    }

    /// Queues one data channel message on a WebRTC transport.
    fn send_data(
        &mut self,
        transport: TransportId,
        label: &str,
        binary: bool,
        data: &[u8],
    ) -> Result<(), CommandError> {
        let i = self.routes.transport_ids.get(&transport.0);
        let i = *i.ok_or(CommandError::NoTransport(transport))?;
        let w = self
            .objs
            .transports
            .get_mut(i)
            .and_then(|t| t.webrtc.as_mut())
            .ok_or(CommandError::NotWebRtc)?;
        w.send_data(label, binary, data)?;
        if !self.timers.pending_pump.contains(&i) {
            self.timers.pending_pump.push(i);
        }
        Ok(())
    }

    /// The core's DTLS certificate, made on first use (one per core, shared by every
    /// WebRTC transport on it).
    fn ensure_cert(&mut self) -> Result<&crate::dtls::DtlsCert, CommandError> {
        let cert = match self.cert.take() {
            Some(c) => c,
            None => crate::dtls::DtlsCert::generate().map_err(CommandError::Certificate)?,
        };
        Ok(self.cert.insert(cert))
    }

    fn down_track_and_track(&self, id: DownTrackId) -> Result<(usize, usize), CommandError> {
        let i = *self
            .routes
            .down_track_ids
            .get(&id.0)
            .ok_or(CommandError::NoDownTrack(id))?;
        let e = self.objs.down_tracks.get(i);
        Ok((i, e.ok_or(CommandError::NoDownTrack(id))?.track))
    }

    /// Checks that `room` exists here and that no transport `id` does.
    fn check_new_transport(&self, room: RoomId, id: TransportId) -> Result<(), CommandError> {
        if !self.objs.rooms.contains_key(&room.0) {
            return Err(CommandError::NoRoom {
                room,
                core: self.core,
            });
        }
        if self.routes.transport_ids.contains_key(&id.0) {
            return Err(CommandError::TransportExists(id));
        }
        Ok(())
    }

    /// Registers a new transport under `id` in `room`.
    fn insert_transport(&mut self, t: Transport) -> usize {
        let (id, room) = (t.id, t.room);
        let i = self.objs.transports.insert(t);
        self.routes.transport_ids.insert(id, i);
        if let Some(r) = self.objs.rooms.get_mut(&room) {
            r.transports.push(i);
        }
        i
    }

    fn create_transport(&mut self, now: Instant, c: PlainTransport) -> CmdResult {
        self.check_new_transport(c.room, c.transport)?;
        if let Some(relay) = c.relay {
            return self.create_relay_transport(now, c, relay);
        }
        match c.remote {
            None if !c.comedia => return Err(CommandError::NoRemote),
            Some(a) if self.routes.by_addr.contains_key(&a) => {
                return Err(CommandError::RemoteInUse(a))
            }
            _ => {}
        }
        let i = self.insert_transport(Transport {
            comedia: c.comedia && c.remote.is_none(),
            srtp: c.srtp,
            ..Transport::new(c.transport.0, c.room.0, c.remote, now)
        });
        if let Some(a) = c.remote {
            self.routes.by_addr.insert(a, i);
        }
        Ok(Reply::TransportCreated {
            transport: c.transport,
            local: self.local,
            fingerprint: String::new(),
        })
    }

    /// A relay transport: it sends to its remote but does not claim the address (the
    /// relays of several rooms may face one peer core); arrivals find it by SSRC.
    fn create_relay_transport(
        &mut self,
        now: Instant,
        c: PlainTransport,
        relay: RelayIds,
    ) -> CmdResult {
        let Some(remote) = c.remote else {
            return Err(CommandError::BadRelay(
                "a relay transport needs a remote address",
            ));
        };
        if relay.local.0 == 0 || relay.peer.0 == 0 || relay.local == relay.peer {
            return Err(CommandError::BadRelay(
                "a relay transport needs two different non-zero RTCP SSRCs",
            ));
        }
        if self.routes.relay.contains_key(&relay.peer) {
            return Err(CommandError::RelaySsrcInUse(relay.peer));
        }
        let i = self.insert_transport(Transport {
            srtp: c.srtp,
            rtcp_ssrc: Some(relay.local),
            relay: true,
            ..Transport::new(c.transport.0, c.room.0, Some(remote), now)
        });
        self.routes.relay.insert(relay.peer, i);
        Ok(Reply::TransportCreated {
            transport: c.transport,
            local: self.local,
            fingerprint: String::new(),
        })
    }

    fn create_webrtc_transport(
        &mut self,
        now: Instant,
        room: RoomId,
        transport: TransportId,
        params: WebRtcParams,
    ) -> CmdResult {
        self.check_new_transport(room, transport)?;
        if self
            .routes
            .by_ufrag
            .contains_key(params.local_ufrag.as_bytes())
        {
            return Err(CommandError::UfragInUse {
                ufrag: params.local_ufrag,
                mine: false,
            });
        }
        let cert = self.ensure_cert()?;
        let fingerprint = cert.fingerprint().to_string();
        let ufrag = params.local_ufrag.clone().into_bytes();
        let w = WebRtc::new(params, cert).map_err(CommandError::Dtls)?;
        let i = self.insert_transport(Transport {
            webrtc: Some(Box::new(w)),
            // Nothing is negotiated until signaling says so.
            ext: Some(ExtIds::default()),
            ..Transport::new(transport.0, room.0, None, now)
        });
        self.routes.by_ufrag.insert(ufrag, i);
        Ok(Reply::TransportCreated {
            transport,
            local: self.local,
            fingerprint,
        })
    }

    /// Sets a transport's header extension ids, and with them its transport-wide CC state:
    /// a send history when transport-cc is negotiated, an arrival recorder when feedback
    /// toward the peer is too. Existing state is kept when the ids are set again.
    fn set_header_extensions(
        &mut self,
        room: RoomId,
        transport: TransportId,
        ids: ExtIds,
        feedback: bool,
    ) -> CmdResult {
        let i = self.transport_in_room(transport, room)?;
        let t = self.objs.transports.get_mut(i);
        let t = t.ok_or(CommandError::NoTransport(transport))?;
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
            if !feedback {
                t.twcc_in = None;
            } else if t.twcc_in.is_none() {
                t.twcc_in = Some(Box::default());
            }
        }
        Ok(Reply::Ok)
    }

    /// ICE restart: the new local ufrag routes, the old one stops routing new addresses,
    /// and the agent takes the new credentials (see `IceLite::restart` for what happens
    /// to the current path). DTLS and the transport's SRTP contexts are left alone.
    fn restart_ice(&mut self, c: RestartIce) -> CmdResult {
        let i = self.transport_in_room(c.transport, c.room)?;
        if let Some(&other) = self.routes.by_ufrag.get(c.local_ufrag.as_bytes()) {
            // The same ufrag again would not be a restart (RFC 8445 §9 changes both), and
            // another transport's would steal its checks.
            return Err(CommandError::UfragInUse {
                ufrag: c.local_ufrag,
                mine: other == i,
            });
        }
        let w = self
            .objs
            .transports
            .get_mut(i)
            .and_then(|t| t.webrtc.as_mut())
            .ok_or(CommandError::NotWebRtc)?;
        w.ice.restart(&c.local_ufrag, &c.local_pwd);
        if !c.remote_ufrag.is_empty() {
            w.ice.set_remote_credentials(&c.remote_ufrag, &c.remote_pwd);
        }
        self.routes.by_ufrag.retain(|_, v| *v != i);
        self.routes.by_ufrag.insert(c.local_ufrag.into_bytes(), i);
        tracing::debug!(transport = c.transport.0, "ICE restart");
        Ok(Reply::Ok)
    }

    /// The transport index for `id`, checked to belong to `room`.
    fn transport_in_room(&self, id: TransportId, room: RoomId) -> Result<usize, CommandError> {
        let i = self.routes.transport_ids.get(&id.0);
        let i = *i.ok_or(CommandError::NoTransport(id))?;
        let t = self.objs.transports.get(i);
        if t.ok_or(CommandError::NoTransport(id))?.room != room.0 {
            return Err(CommandError::TransportNotInRoom {
                transport: id,
                room,
            });
        }
        Ok(i)
    }

    fn add_track(&mut self, now: Instant, c: AddTrack) -> CmdResult {
        let ti = self.transport_in_room(c.transport, c.room)?;
        if self.routes.track_ids.contains_key(&c.track.0) {
            return Err(CommandError::TrackExists(c.track));
        }
        if c.layers.is_empty() || c.layers.len() > 8 {
            return Err(CommandError::BadLayers("a track needs 1 to 8 layers"));
        }
        let mut layers = c.layers;
        layers.sort_by_key(|l| l.spatial);
        let taken = |s: Ssrc| {
            layers
                .iter()
                .filter(|o| o.ssrc == s || o.rtx_ssrc == s)
                .count()
                > 1
        };
        for (i, l) in layers.iter().enumerate() {
            if l.spatial as usize != i {
                return Err(CommandError::BadLayers(
                    "layers must have spatial indices 0..n without gaps",
                ));
            }
            if l.ssrc.0 == 0 {
                if !l.has_rid || c.rid_ext == 0 {
                    return Err(CommandError::BadLayers(
                        "a layer without an SSRC needs a rid and the rid extension id",
                    ));
                }
                continue;
            }
            if self.ssrc_published(ti, l.ssrc) || taken(l.ssrc) {
                return Err(CommandError::SsrcPublished(l.ssrc));
            }
        }
        let rtx_pt = match c.rtx_payload_type {
            0 => None,
            pt if pt > 127 || pt == c.payload_type => {
                return Err(CommandError::BadRtxPayloadType(pt));
            }
            pt => Some(Pt(pt as u8)),
        };
        for l in layers.iter().filter(|l| l.rtx_ssrc.0 != 0) {
            if rtx_pt.is_none() {
                return Err(CommandError::RtxIncomplete);
            }
            if self.ssrc_published(ti, l.rtx_ssrc) || taken(l.rtx_ssrc) {
                return Err(CommandError::RtxSsrcPublished(l.rtx_ssrc));
            }
        }
        let relay = self.objs.transports.get(ti).is_some_and(|t| t.relay);
        if relay {
            let taken = layers
                .iter()
                .flat_map(|l| [l.ssrc, l.rtx_ssrc])
                .find(|s| s.0 != 0 && self.routes.relay.contains_key(s));
            if let Some(s) = taken {
                return Err(CommandError::RelaySsrcInUse(s));
            }
        }
        let cache = if c.video {
            self.cfg.video_cache
        } else {
            self.cfg.audio_cache
        };
        let track = Track {
            id: c.track.0,
            room: c.room.0,
            transport: ti,
            video: c.video,
            codec: c.codec,
            payload_type: Pt(c.payload_type as u8),
            clock_rate: match (c.clock_rate, c.video) {
                (0, true) => 90_000,
                (0, false) => 48_000,
                (rate, _) => rate,
            },
            layers: layers
                .iter()
                .map(|l| {
                    let mut layer = Layer::new(l.ssrc, l.rid, cache);
                    layer.rtx_ssrc = l.rtx_ssrc;
                    layer
                })
                .collect(),
            subscribers: Vec::new(),
            meter: Default::default(),
            active: Track::all_layers(layers.len()),
            mid: c.mid,
            mid_ext: u8::try_from(c.mid_ext).unwrap_or(0),
            rid_ext: u8::try_from(c.rid_ext).unwrap_or(0),
            rtx_pt,
            repaired_rid_ext: u8::try_from(c.repaired_rid_ext).unwrap_or(0),
            nack: c.nack,
            created: now,
        };
        let i = self.objs.tracks.insert(track);
        self.routes.track_ids.insert(c.track.0, i);
        let pending = self
            .objs
            .transports
            .get(ti)
            .is_some_and(|t| t.comedia && t.remote.is_none());
        for (li, l) in layers.iter().enumerate() {
            if l.rtx_ssrc.0 != 0 {
                self.routes
                    .by_rtx_ssrc
                    .insert((ti, l.rtx_ssrc), (i, li as u8));
                if relay {
                    self.routes.relay.insert(l.rtx_ssrc, ti);
                }
            }
            if l.ssrc.0 == 0 {
                continue;
            }
            self.routes.by_ssrc.insert((ti, l.ssrc), (i, li as u8));
            if relay {
                self.routes.relay.insert(l.ssrc, ti);
            }
            if pending {
                self.routes.comedia.insert(l.ssrc, ti);
            }
        }
        if let Some(t) = self.objs.transports.get_mut(ti) {
            t.tracks.push(i);
        }
        Ok(Reply::Ok)
    }

    fn add_down_track(&mut self, now: Instant, c: AddDownTrack) -> CmdResult {
        let ti = self.transport_in_room(c.transport, c.room)?;
        let track_i = *self
            .routes
            .track_ids
            .get(&c.track.0)
            .ok_or(CommandError::NoTrack(c.track))?;
        if self.routes.down_track_ids.contains_key(&c.down_track.0) {
            return Err(CommandError::DownTrackExists(c.down_track));
        }
        let ssrc = c.ssrc;
        if self.ssrc_sent(ti, ssrc) {
            return Err(CommandError::SsrcSent(ssrc));
        }
        let rtx = match (c.rtx_ssrc, c.rtx_payload_type) {
            (0, 0) => None,
            (0, _) | (_, 0) => return Err(CommandError::RtxIncomplete),
            (r, pt) if r == ssrc.0 || pt > 127 || pt == c.payload_type => {
                return Err(CommandError::BadRtx {
                    ssrc: r,
                    payload_type: pt,
                });
            }
            (r, _) if self.ssrc_sent(ti, Ssrc(r)) => return Err(CommandError::SsrcSent(Ssrc(r))),
            // RFC 3550 wants a random first sequence number; the SSRC is random already.
            (r, pt) => Some(RtxSender::new(
                Ssrc(r),
                Pt(pt as u8),
                (r ^ (r >> 16)) as u16,
            )),
        };
        if let (Some(ids), Some(t)) = (c.ext, self.objs.transports.get(ti).and_then(|t| t.ext)) {
            if !ids.within(&t) {
                return Err(CommandError::ExtensionsDiffer);
            }
        }
        let track = self.objs.tracks.get_mut(track_i);
        let track = track.ok_or(CommandError::NoTrack(c.track))?;
        if track.room != c.room.0 {
            return Err(CommandError::TrackNotInRoom {
                track: c.track,
                room: c.room,
            });
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
            preferred_spatial: c.preferred_spatial,
            preferred_temporal: c.preferred_temporal,
            pinned: c.pinned,
        });
        dt.retarget(track.active);
        let di = self.objs.down_tracks.insert(DownTrackEntry {
            id: c.down_track.0,
            room: c.room.0,
            track: track_i,
            transport: ti,
            mid: c.mid,
            ext: c.ext,
            dt,
            rtx,
            report: Default::default(),
        });
        track.subscribers.push(di);
        self.routes.down_track_ids.insert(c.down_track.0, di);
        self.routes.by_out_ssrc.insert((ti, ssrc), di);
        if let Some(t) = self.objs.transports.get_mut(ti) {
            t.down_tracks.push(di);
            if t.comedia && t.remote.is_none() {
                self.routes.comedia.insert(ssrc, ti);
            }
        }
        Ok(Reply::Ok)
    }
}
