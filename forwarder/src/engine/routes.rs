//! What control created on this core, and the maps that find it.
//!
//! [`Objects`] holds rooms and the slabs of transports, tracks and down tracks; everything
//! else refers to those by slab index. [`Routes`] maps what arrives from outside to those
//! indices: control ids (commands), and the packet fields the fast path demultiplexes on
//! (source address, SSRCs, ICE ufrag).
//!
//! Invariant: every index in `Routes`, and in the cross-references between objects
//! (a transport's tracks and down tracks, a track's subscribers, a room's transports), names
//! a live slot. Only the teardown methods here remove objects, and they remove every
//! reference with them. The packet path only reads the maps, so it never allocates.

use std::net::SocketAddr;

use prism_proto::control as pb;

use super::slab::{FastMap, Slab};
use super::{DownTrackEntry, Engine, Room, Track, Transport};
use crate::ids::Ssrc;

/// Rooms, transports, tracks and down tracks.
#[derive(Debug, Default)]
pub struct Objects {
    pub rooms: FastMap<u64, Room>,
    pub transports: Slab<Transport>,
    pub tracks: Slab<Track>,
    pub down_tracks: Slab<DownTrackEntry>,
}

/// Lookups from control ids and packet fields to slab indices in [`Objects`].
#[derive(Debug, Default)]
pub struct Routes {
    pub transport_ids: FastMap<u64, usize>,
    pub track_ids: FastMap<u64, usize>,
    pub down_track_ids: FastMap<u64, usize>,
    /// Remote address → transport.
    pub by_addr: FastMap<SocketAddr, usize>,
    /// (transport, SSRC) → (track, layer) for incoming media.
    pub by_ssrc: FastMap<(usize, Ssrc), (usize, u8)>,
    /// (transport, RTX SSRC) → (track, layer) for RTX packets from publishers.
    pub by_rtx_ssrc: FastMap<(usize, Ssrc), (usize, u8)>,
    /// (transport, output SSRC) → down track, for feedback from subscribers.
    pub by_out_ssrc: FastMap<(usize, Ssrc), usize>,
    /// SSRC → comedia transport still waiting for its first packet.
    pub comedia: FastMap<Ssrc, usize>,
    /// Local ICE ufrag → WebRTC transport, to route a first check from a new address.
    pub by_ufrag: FastMap<Vec<u8>, usize>,
    /// SSRC → relay transport: the media (and RTX) SSRCs of tracks on relay transports,
    /// and each relay's peer RTCP SSRC. Consulted for RTP/RTCP from an address no
    /// transport owns.
    pub relay: FastMap<Ssrc, usize>,
}

impl Engine {
    /// Whether `ssrc` already names a layer or an RTX stream published on transport `ti`.
    pub(super) fn ssrc_published(&self, ti: usize, ssrc: Ssrc) -> bool {
        self.routes.by_ssrc.contains_key(&(ti, ssrc))
            || self.routes.by_rtx_ssrc.contains_key(&(ti, ssrc))
    }

    /// Whether `ssrc` is already sent on transport `ti`, by a down track or its RTX stream.
    pub(super) fn ssrc_sent(&self, ti: usize, ssrc: Ssrc) -> bool {
        self.routes.by_out_ssrc.contains_key(&(ti, ssrc))
            || self.objs.transports.get(ti).is_some_and(|t| {
                t.down_tracks.iter().any(|&d| {
                    self.objs
                        .down_tracks
                        .get(d)
                        .and_then(|e| e.rtx)
                        .is_some_and(|r| r.ssrc == ssrc)
                })
            })
    }

    pub(super) fn remove_down_track(&mut self, di: usize) {
        let Some(e) = self.objs.down_tracks.remove(di) else {
            return;
        };
        let r = &mut self.routes;
        r.down_track_ids.remove(&e.id);
        r.by_out_ssrc.remove(&(e.transport, e.dt.params.ssrc));
        r.comedia.remove(&e.dt.params.ssrc);
        if let Some(t) = self.objs.tracks.get_mut(e.track) {
            t.subscribers.retain(|&d| d != di);
        }
        if let Some(t) = self.objs.transports.get_mut(e.transport) {
            t.down_tracks.retain(|&d| d != di);
        }
    }

    pub(super) fn remove_track(&mut self, ti: usize) {
        let Some(track) = self.objs.tracks.remove(ti) else {
            return;
        };
        self.routes.track_ids.remove(&track.id);
        for di in track.subscribers {
            self.remove_down_track(di);
        }
        let r = &mut self.routes;
        for l in &track.layers {
            r.by_ssrc.remove(&(track.transport, l.ssrc));
            r.by_rtx_ssrc.remove(&(track.transport, l.rtx_ssrc));
            r.comedia.remove(&l.ssrc);
            for s in [l.ssrc, l.rtx_ssrc] {
                if r.relay.get(&s) == Some(&track.transport) {
                    r.relay.remove(&s);
                }
            }
        }
        if let Some(t) = self.objs.transports.get_mut(track.transport) {
            t.tracks.retain(|&x| x != ti);
        }
    }

    /// Removes transport `i` with everything published and sent over it, and reports it
    /// closed for `reason`.
    pub(crate) fn close_transport(&mut self, i: usize, reason: &str) {
        let Some(t) = self.objs.transports.get(i) else {
            return;
        };
        let (tracks, dts, id, room, remote) = (
            t.tracks.clone(),
            t.down_tracks.clone(),
            t.id,
            t.room,
            t.remote,
        );
        for di in dts {
            self.remove_down_track(di);
        }
        for ti in tracks {
            self.remove_track(ti);
        }
        self.objs.transports.remove(i);
        let r = &mut self.routes;
        r.transport_ids.remove(&id);
        if let Some(a) = remote {
            // A relay never claimed its remote: the entry, if any, is another transport's.
            if r.by_addr.get(&a) == Some(&i) {
                r.by_addr.remove(&a);
            }
        }
        r.comedia.retain(|_, v| *v != i);
        r.relay.retain(|_, v| *v != i);
        r.by_ufrag.retain(|_, v| *v != i);
        if let Some(r) = self.objs.rooms.get_mut(&room) {
            r.transports.retain(|&x| x != i);
        }
        self.outbox
            .emit_body(pb::event::Body::TransportClosed(pb::TransportClosed {
                transport_id: id,
                reason: reason.to_string(),
            }));
    }
}
