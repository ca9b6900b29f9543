//! A room spanning nodes: the *sites* its media lives on, and the relays between them.
//!
//! Why: one node's forwarder has a ceiling, and a client is best served by the node it
//! reached. The room's owner keeps all of the room's signaling; a participant's transports
//! may live on another node's forwarder (a *site*), driven by the owner over a media link
//! (`cluster::media_link`). Site 0 is this node's own forwarder (the room's `id`, `core`,
//! `media`); remote sites are added when a participant arrives through another node.
//!
//! How media crosses: a track lives on its publisher's site (its *home*). A subscriber on
//! another site gets it from a *relayed copy* there: a relay transport pair between the
//! two sites' cores (one per ordered pair of sites, SRTP with keys the owner makes), on
//! the home side one pinned down track per simulcast layer, on the other side a track with
//! those layers' relay SSRCs. The far site fans the copy out to its own subscribers,
//! choosing layers per subscriber as usual, and asks the home side for repairs (NACK) and
//! keyframes (PLI) across the relay; the home side's sender reports cross too. Origin
//! egress per remote site is one copy of each layer, however many subscribers it has
//! there. Only the layers someone on the far site may want cross: up to the highest
//! spatial layer its subscribers ask for (lower ones stay, for the subscribers whose
//! bandwidth falls back to them). A copy nobody on its site subscribes to any more is
//! removed, and with it the layers relayed for it. A recording's copy keeps every layer.
//!
//! Commands to one site go through that site's plane in order, so a relay's transports,
//! its copy and the subscriber's down track can all be sent at once without waiting.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use pb::command::Body as Cmd;
use prism_proto::control as pb;

use super::ids::{DownTrackId, MediaRoomId, MediaTrackId, ParticipantSid, TrackSid, TransportId};
use super::media_plane::MediaPlane;
use super::room::{Pending, Room, RoomMsg};
use crate::media::random_u32;

/// Another node's forwarder, as the cluster hands it to a joining participant's room.
#[derive(Clone, Debug)]
pub struct MediaNode {
    /// The node's id.
    pub node: String,
    pub plane: MediaPlane,
    /// What clients are given for media there (its `rtc.node_ip`), most preferred first.
    pub candidate_ips: Arc<[IpAddr]>,
    /// Where other nodes send relayed media to it (the port is its core's).
    pub relay_ip: IpAddr,
    /// Whether its link still carries commands.
    pub up: Arc<std::sync::atomic::AtomicBool>,
}

/// A remote site of a room: its media room on another node's forwarder.
#[derive(Debug)]
pub(crate) struct Site {
    pub node: MediaNode,
    pub room: MediaRoomId,
    /// Its core's address and certificate fingerprint, once `RoomCreated` came back.
    pub core: Option<(SocketAddr, [u8; 32])>,
    pub tcp: Option<SocketAddr>,
    /// Its link went down: nothing new is placed there.
    pub lost: bool,
}

/// The relay transports from site `from` to site `to`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RelayLink {
    /// On `from`: sends the copies.
    pub out: TransportId,
    /// On `to`: receives them.
    pub inbound: TransportId,
}

/// A track's copy on a site other than its home.
#[derive(Clone, Debug)]
pub(crate) struct Copy {
    pub home: usize,
    pub track_id: MediaTrackId,
    /// The relay's sending transport on the home site.
    pub out: TransportId,
    /// Each layer's relay SSRC.
    pub ssrcs: Vec<u32>,
    /// The pinned down tracks on the home site, by layer, for the layers relayed now.
    pub relay_down_tracks: Vec<Option<DownTrackId>>,
    /// Relay every layer whatever the subscribers want (a recording reads the copy).
    pub all_layers: bool,
}

/// What a room keeps about its sites and relays.
#[derive(Debug, Default)]
pub(crate) struct Sites {
    /// Remote sites; site `i` is `remote[i - 1]`.
    pub remote: Vec<Site>,
    pub relays: HashMap<(usize, usize), RelayLink>,
    pub copies: HashMap<(TrackSid, usize), Copy>,
}

/// SRTP keys for one direction of a relay, fresh per relay.
fn relay_keys() -> ([u8; 16], [u8; 12]) {
    let mut key = [0u8; 16];
    let mut salt = [0u8; 12];
    for chunk in key.chunks_mut(4).chain(salt.chunks_mut(4)) {
        chunk.copy_from_slice(&random_u32().to_le_bytes()[..chunk.len()]);
    }
    (key, salt)
}

fn nonzero_ssrc() -> u32 {
    loop {
        let r = random_u32();
        if r != 0 {
            return r;
        }
    }
}

impl Room {
    /// The site media of a participant arriving through `node` lives on: an existing
    /// site of that node, or a new one (its media room is created now; offers wait for
    /// its `RoomCreated`).
    pub(crate) fn site_for(&mut self, node: MediaNode) -> usize {
        if let Some(i) = self.sites.remote.iter().position(|s| {
            s.node.node == node.node
                && !s.lost
                && s.node.up.load(std::sync::atomic::Ordering::Relaxed)
        }) {
            return i + 1;
        }
        let room = MediaRoomId::fresh();
        let tx = self.handle.tx.clone();
        node.plane.attach(
            room,
            Box::new(move |ev| tx.send(RoomMsg::Media(ev)).is_ok()),
        );
        self.sites.remote.push(Site {
            node,
            room,
            core: None,
            tcp: None,
            lost: false,
        });
        let site = self.sites.remote.len();
        tracing::info!(room = %self.name, node = %self.sites.remote[site - 1].node.node, "room spans another node");
        let created = self.command_tracked(
            Cmd::CreateRoom(pb::CreateRoom {
                room_id: room.0,
                ..Default::default()
            }),
            Pending::SiteCreated(site),
        );
        if created.is_err() {
            self.sites.remote[site - 1].lost = true;
            return 0;
        }
        site
    }

    /// The media room of site `site`.
    pub(crate) fn site_room(&self, site: usize) -> MediaRoomId {
        match site {
            0 => self.id,
            i => self.sites.remote.get(i - 1).map_or(self.id, |s| s.room),
        }
    }

    /// Site `site`'s core, once known.
    pub(crate) fn site_core(&self, site: usize) -> Option<(SocketAddr, [u8; 32])> {
        match site {
            0 => self.core,
            i => self.sites.remote.get(i - 1).and_then(|s| s.core),
        }
    }

    /// What a participant on `site` is given for media: its candidates' IPs and the
    /// core's ICE-TCP address.
    pub(crate) fn site_addresses(&self, site: usize) -> (Arc<[IpAddr]>, Option<SocketAddr>) {
        match site {
            0 => (self.candidate_ips.clone(), self.tcp_candidate),
            i => self.sites.remote.get(i - 1).map_or_else(
                || (self.candidate_ips.clone(), self.tcp_candidate),
                |s| (s.node.candidate_ips.clone(), s.tcp),
            ),
        }
    }

    /// Where other sites send relayed media to site `site`.
    fn relay_addr(&self, site: usize) -> Option<SocketAddr> {
        let (core, _) = self.site_core(site)?;
        let ip = match site {
            0 => self.relay_ip.unwrap_or_else(|| {
                self.candidate_ips
                    .first()
                    .copied()
                    .filter(|ip| !ip.is_unspecified())
                    .unwrap_or(core.ip())
            }),
            i => self.sites.remote.get(i - 1)?.node.relay_ip,
        };
        Some(SocketAddr::new(ip, core.port()))
    }

    /// The plane of the site whose media room is `room`.
    pub(crate) fn plane_of(&self, room: u64) -> &MediaPlane {
        self.sites
            .remote
            .iter()
            .find(|s| s.room.0 == room)
            .map_or(&self.media, |s| &s.node.plane)
    }

    /// Whether site `site` is another node's whose link went down (its media is gone).
    pub(crate) fn site_lost(&mut self, site: usize) -> bool {
        let Some(s) = self.sites.remote.get_mut(site.wrapping_sub(1)) else {
            return false;
        };
        if !s.node.up.load(std::sync::atomic::Ordering::Relaxed) {
            s.lost = true;
        }
        s.lost
    }

    /// The site a participant's media lives on.
    pub(crate) fn site_of(&self, pid: &ParticipantSid) -> usize {
        self.participant(pid).map_or(0, |p| p.site)
    }

    /// A remote site's media room answered `CreateRoom`.
    pub(crate) fn on_site_created(
        &mut self,
        site: usize,
        c: Result<(SocketAddr, [u8; 32], Option<SocketAddr>), String>,
    ) {
        let Some(s) = self.sites.remote.get_mut(site.wrapping_sub(1)) else {
            return;
        };
        match c {
            Ok((addr, fp, tcp)) => {
                s.core = Some((addr, fp));
                s.tcp = tcp;
            }
            Err(e) => {
                tracing::warn!(room = %self.name, node = %s.node.node, error = %e, "cannot use the other node's media plane; its participants' media stays here");
                s.lost = true;
                for p in &mut self.participants {
                    if p.site == site {
                        p.site = 0;
                    }
                }
            }
        }
        for m in std::mem::take(&mut self.deferred) {
            self.handle(m);
        }
    }

    /// The track id subscribers on `site` use for `track`: the track itself on its home
    /// site, else its copy there (relayed now if it is not yet). `None` if the sites'
    /// cores are not known yet or the track cannot be relayed.
    pub(crate) fn track_on_site(&mut self, track: &TrackSid, site: usize) -> Option<MediaTrackId> {
        let (home, track_id, template) = {
            let (p, t) = self.track(track)?;
            (p.site, t.track_id, t.add.clone())
        };
        if home == site {
            return Some(track_id);
        }
        if let Some(c) = self.sites.copies.get(&(track.clone(), site)) {
            return Some(c.track_id);
        }
        let template = template?;
        let link = self.relay_link(home, site)?;
        let copy_id = MediaTrackId::fresh();
        let ssrcs: Vec<u32> = template.layers.iter().map(|_| nonzero_ssrc()).collect();
        let mut add = (*template).clone();
        add.room_id = self.site_room(site).0;
        add.transport_id = link.inbound.0;
        add.track_id = copy_id.0;
        add.layers = ssrcs
            .iter()
            .enumerate()
            .map(|(i, &ssrc)| pb::Layer {
                ssrc,
                rid: String::new(),
                spatial: i as u32,
                rtx_ssrc: 0,
            })
            .collect();
        add.nack = Some(true);
        add.mid = String::new();
        add.mid_ext_id = 0;
        add.rid_ext_id = 0;
        add.rtx_payload_type = 0;
        add.repaired_rid_ext_id = 0;
        self.command(Cmd::AddTrack(add));
        tracing::debug!(room = %self.name, %track, from = home, to = site, layers = ssrcs.len(), "track relayed");
        self.sites.copies.insert(
            (track.clone(), site),
            Copy {
                home,
                track_id: copy_id,
                out: link.out,
                relay_down_tracks: vec![None; ssrcs.len()],
                ssrcs,
                all_layers: false,
            },
        );
        Some(copy_id)
    }

    /// Relays every layer of `track`'s copy on `site` (a recording reads it).
    pub(crate) fn relay_all_layers(&mut self, track: &TrackSid, site: usize) {
        if let Some(c) = self.sites.copies.get_mut(&(track.clone(), site)) {
            c.all_layers = true;
        }
        self.refresh_copy(track, site);
    }

    /// Brings the layers relayed for `track`'s copy on `site` in line with what its
    /// subscribers there ask for: every layer up to the highest one wanted.
    pub(crate) fn refresh_copy(&mut self, track: &TrackSid, site: usize) {
        let Some(c) = self.sites.copies.get(&(track.clone(), site)) else {
            return;
        };
        let top = if c.all_layers {
            c.ssrcs.len()
        } else {
            self.participants
                .iter()
                .filter(|p| p.site == site)
                .flat_map(|p| p.subscriber.sections.iter())
                .filter_map(|s| s.track.as_ref())
                .filter(|t| &t.track_sid == track)
                .map(|t| t.spatial as usize + 1)
                .max()
                .unwrap_or(0)
                .min(c.ssrcs.len())
        };
        let (home_room, track_id) = match self.track(track) {
            Some((p, t)) => (self.site_room(p.site).0, t.track_id.0),
            None => return,
        };
        let mut cmds = Vec::new();
        let Some(c) = self.sites.copies.get_mut(&(track.clone(), site)) else {
            return;
        };
        for (i, slot) in c.relay_down_tracks.iter_mut().enumerate() {
            match (i < top, *slot) {
                (true, None) => {
                    let dt = DownTrackId::fresh();
                    cmds.push(Cmd::AddDownTrack(pb::AddDownTrack {
                        room_id: home_room,
                        track_id,
                        down_track_id: dt.0,
                        transport_id: c.out.0,
                        ssrc: c.ssrcs[i],
                        preferred_spatial: i as u32,
                        pinned: true,
                        ..Default::default()
                    }));
                    *slot = Some(dt);
                }
                (false, Some(dt)) => {
                    cmds.push(Cmd::RemoveDownTrack(pb::RemoveDownTrack {
                        room_id: home_room,
                        down_track_id: dt.0,
                    }));
                    *slot = None;
                }
                _ => {}
            }
        }
        if !cmds.is_empty() {
            tracing::debug!(room = %self.name, %track, site, layers = top, "relayed layers");
        }
        for cmd in cmds {
            self.command(cmd);
        }
    }

    /// The relay from site `from` to site `to`, created if there is none yet.
    fn relay_link(&mut self, from: usize, to: usize) -> Option<RelayLink> {
        if let Some(l) = self.sites.relays.get(&(from, to)) {
            return Some(*l);
        }
        let (a, b) = (self.relay_addr(from)?, self.relay_addr(to)?);
        let link = RelayLink {
            out: TransportId::fresh(),
            inbound: TransportId::fresh(),
        };
        let (ssrc_out, ssrc_in) = loop {
            let (x, y) = (nonzero_ssrc(), nonzero_ssrc());
            if x != y {
                break (x, y);
            }
        };
        let srtp = |send: &([u8; 16], [u8; 12]), recv: &([u8; 16], [u8; 12])| pb::SrtpParams {
            profile: "AEAD_AES_128_GCM".into(),
            send_key: send.0.to_vec(),
            send_salt: send.1.to_vec(),
            recv_key: recv.0.to_vec(),
            recv_salt: recv.1.to_vec(),
        };
        let (k_fwd, k_back) = (relay_keys(), relay_keys());
        let encrypt = self.relay_srtp;
        self.command(Cmd::CreatePlainTransport(pb::CreatePlainTransport {
            room_id: self.site_room(from).0,
            transport_id: link.out.0,
            remote: b.to_string(),
            comedia: false,
            srtp: encrypt.then(|| srtp(&k_fwd, &k_back)),
            relay: Some(pb::RelayParams {
                local_rtcp_ssrc: ssrc_out,
                peer_rtcp_ssrc: ssrc_in,
            }),
        }));
        self.command(Cmd::CreatePlainTransport(pb::CreatePlainTransport {
            room_id: self.site_room(to).0,
            transport_id: link.inbound.0,
            remote: a.to_string(),
            comedia: false,
            srtp: encrypt.then(|| srtp(&k_back, &k_fwd)),
            relay: Some(pb::RelayParams {
                local_rtcp_ssrc: ssrc_in,
                peer_rtcp_ssrc: ssrc_out,
            }),
        }));
        tracing::info!(room = %self.name, from = %a, to = %b, srtp = encrypt, "relay between sites");
        self.sites.relays.insert((from, to), link);
        Some(link)
    }

    /// Removes `track`'s copy on `site` if no subscriber there receives it any more.
    pub(crate) fn drop_unused_copy(&mut self, track: &TrackSid, site: usize) {
        let used = self.participants.iter().any(|p| {
            p.site == site
                && p.subscriber
                    .sections
                    .iter()
                    .any(|s| s.track.as_ref().is_some_and(|t| &t.track_sid == track))
        });
        let kept = self
            .sites
            .copies
            .get(&(track.clone(), site))
            .is_some_and(|c| c.all_layers);
        if used || kept {
            self.refresh_copy(track, site);
        } else {
            self.drop_copy(track, site);
        }
    }

    fn drop_copy(&mut self, track: &TrackSid, site: usize) {
        let Some(c) = self.sites.copies.remove(&(track.clone(), site)) else {
            return;
        };
        let home_room = self.site_room(c.home).0;
        for dt in c.relay_down_tracks.into_iter().flatten() {
            self.command(Cmd::RemoveDownTrack(pb::RemoveDownTrack {
                room_id: home_room,
                down_track_id: dt.0,
            }));
        }
        self.command(Cmd::RemoveTrack(pb::RemoveTrack {
            room_id: self.site_room(site).0,
            track_id: c.track_id.0,
        }));
    }

    /// `track` is gone: its copies on other sites go too (with their subscribers' down
    /// tracks; the relay down tracks went with the track).
    pub(crate) fn drop_copies(&mut self, track: &TrackSid) {
        let sites: Vec<usize> = self
            .sites
            .copies
            .keys()
            .filter(|(t, _)| t == track)
            .map(|(_, s)| *s)
            .collect();
        for site in sites {
            if let Some(c) = self.sites.copies.remove(&(track.clone(), site)) {
                self.command(Cmd::RemoveTrack(pb::RemoveTrack {
                    room_id: self.site_room(site).0,
                    track_id: c.track_id.0,
                }));
            }
        }
    }

    /// A transport closed: if it was one end of a relay, the relay and the copies it
    /// carried are forgotten (true).
    pub(crate) fn relay_closed(&mut self, t: TransportId) -> bool {
        let Some(key) = self
            .sites
            .relays
            .iter()
            .find(|(_, l)| l.out == t || l.inbound == t)
            .map(|(k, _)| *k)
        else {
            return false;
        };
        self.sites.relays.remove(&key);
        let (from, to) = key;
        self.sites
            .copies
            .retain(|(_, site), c| !(c.home == from && *site == to));
        if let Some(s) = self.sites.remote.get_mut(from.max(to).wrapping_sub(1)) {
            if !s.node.up.load(std::sync::atomic::Ordering::Relaxed) {
                s.lost = true;
            }
        }
        tracing::warn!(room = %self.name, from, to, "relay between sites closed");
        true
    }

    /// Closes the room's media rooms on other nodes.
    pub(crate) fn close_sites(&mut self) {
        let rooms: Vec<(MediaPlane, MediaRoomId)> = self
            .sites
            .remote
            .iter()
            .map(|s| (s.node.plane.clone(), s.room))
            .collect();
        for (plane, room) in rooms {
            let _ = plane.send(room, Cmd::CloseRoom(pb::CloseRoom { room_id: room.0 }));
            plane.detach(room);
        }
    }
}
