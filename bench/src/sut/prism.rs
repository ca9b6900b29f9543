//! Configuring a `prism-forwarder` process for a topology over its control socket.
//!
//! One room pinned to the forwarder's only core; a plain transport per publisher socket
//! (remote set, so no comedia learning is needed) and per sink socket, each with its own
//! SRTP keys when the system runs SRTP; a track per publisher with its layers; a down
//! track per subscription.
//!
//! Relayed ([`PrismControl::setup_relayed`]): what a room spanning two nodes runs, on two
//! cores of one forwarder. The publishers and every even sink are on core 0 (the origin);
//! the odd sinks on core 1, which gets the publishers' tracks over a relay (SRTP AES-GCM,
//! one pinned down track per layer on the origin, a copy of each track on core 1), as a
//! node in a cluster gets them from another node. The two cores exchange the relay's
//! packets through the kernel as two hosts would, minus the wire.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pb::command::Body;
use prism_forwarder::control::socket::{ControlListen, SocketControlClient};
use prism_proto::control as pb;

use crate::scenario::{self, Topology};
use crate::source::{Media, AUDIO_PT, VIDEO_PT};
use crate::srtp::{self, Endpoint};
use prism_forwarder::srtp::SrtpProfile;

const ROOM: u64 = 1;
/// The relayed system's second room, on core 1.
const FAR_ROOM: u64 = 2;
const RELAY_OUT: u64 = 2_000_001;
const RELAY_IN: u64 = 2_000_002;
const TIMEOUT: Duration = Duration::from_secs(10);

/// Track id of publisher `p`'s copy on the far core.
fn copy_track(p: usize) -> u64 {
    1_000 + p as u64
}

/// SSRC of layer `l` of publisher `p` on the relay.
fn relay_ssrc(p: usize, l: usize) -> u32 {
    0x3000_0000 + scenario::stream_id(p, l)
}

fn pub_transport(p: usize) -> u64 {
    1 + p as u64
}

fn sub_transport(s: usize) -> u64 {
    1_000_000 + s as u64
}

/// The runner's control connection to one forwarder.
#[derive(Debug)]
pub struct PrismControl {
    client: SocketControlClient,
    /// The room of each subscription's down track (two rooms when relayed).
    rooms: Vec<u64>,
}

impl PrismControl {
    /// Connects, retrying while the forwarder starts.
    pub fn connect(path: &Path, wait: Duration) -> Result<Self> {
        let deadline = Instant::now() + wait;
        let target = ControlListen::Unix(path.to_path_buf());
        loop {
            match SocketControlClient::connect(&target, None) {
                Ok(client) => {
                    return Ok(Self {
                        client,
                        rooms: Vec::new(),
                    })
                }
                Err(e) if Instant::now() >= deadline => return Err(e.into()),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn request(&mut self, body: Body) -> Result<pb::Event> {
        let ev = self.client.request(body, TIMEOUT)?;
        if let Some(pb::event::Body::Error(e)) = &ev.body {
            bail!("forwarder refused a command: {}", e.message);
        }
        Ok(ev)
    }

    /// Sends commands in windows and collects each window's answers before the next (a
    /// thousand subscribers set up without a thousand round trips). A window stays well
    /// under the control socket's per-connection event queue (1024): a client further
    /// behind than that is disconnected as too slow.
    fn pipeline(&mut self, bodies: Vec<Body>) -> Result<()> {
        const WINDOW: usize = 256;
        let base = 1_000_000_000u64;
        let mut next_id = base;
        let mut bodies = bodies.into_iter().peekable();
        while bodies.peek().is_some() {
            let mut sent = 0;
            for body in bodies.by_ref().take(WINDOW) {
                self.client.send(&pb::Command {
                    request_id: next_id,
                    body: Some(body),
                })?;
                next_id += 1;
                sent += 1;
            }
            let mut answered = 0;
            while answered < sent {
                let ev = self.client.next_event(TIMEOUT)?;
                if ev.request_id < base {
                    continue;
                }
                if let Some(pb::event::Body::Error(e)) = &ev.body {
                    bail!("forwarder refused a command: {}", e.message);
                }
                answered += 1;
            }
        }
        Ok(())
    }

    pub fn setup(
        &mut self,
        topo: &Topology,
        pubs: &[SocketAddr],
        sinks: &[SocketAddr],
        profile: Option<SrtpProfile>,
    ) -> Result<()> {
        let keys = |at| profile.map(|p| srtp::params(p, at));
        self.request(Body::CreateRoom(pb::CreateRoom {
            room_id: ROOM,
            pin_core: true,
            core: 0,
        }))
        .context("CreateRoom")?;
        let mut bodies = Vec::new();
        for (p, spec) in topo.publishers.iter().enumerate() {
            bodies.push(Body::CreatePlainTransport(pb::CreatePlainTransport {
                srtp: keys(Endpoint::Publisher(p)),
                room_id: ROOM,
                transport_id: pub_transport(p),
                remote: pubs[p].to_string(),
                comedia: false,
                relay: None,
            }));
            bodies.push(add_track(
                ROOM,
                pub_transport(p),
                1 + p as u64,
                spec.media,
                |l| scenario::source_ssrc(p, l),
            ));
        }
        for (s, addr) in sinks.iter().enumerate() {
            bodies.push(Body::CreatePlainTransport(pb::CreatePlainTransport {
                srtp: keys(Endpoint::Sink(s)),
                room_id: ROOM,
                transport_id: sub_transport(s),
                remote: addr.to_string(),
                comedia: false,
                relay: None,
            }));
        }
        for (i, s) in topo.subscriptions.iter().enumerate() {
            let pt = match topo.publishers[s.publisher].media {
                Media::Audio | Media::SmallAudio => AUDIO_PT,
                _ => VIDEO_PT,
            };
            bodies.push(Body::AddDownTrack(pb::AddDownTrack {
                room_id: ROOM,
                track_id: 1 + s.publisher as u64,
                down_track_id: 1 + i as u64,
                transport_id: sub_transport(s.subscriber),
                ssrc: scenario::output_ssrc(i),
                payload_type: pt.into(),
                preferred_spatial: s.spatial as u32,
                preferred_temporal: None,
                rtx_ssrc: 0,
                rtx_payload_type: 0,
                ..Default::default()
            }));
        }
        self.pipeline(bodies)
    }

    /// Configures the relayed system (module doc): `far_port` is core 1's.
    pub fn setup_relayed(
        &mut self,
        topo: &Topology,
        pubs: &[SocketAddr],
        sinks: &[SocketAddr],
        near_port: u16,
        far_port: u16,
    ) -> Result<()> {
        for (room, core) in [(ROOM, 0), (FAR_ROOM, 1)] {
            self.request(Body::CreateRoom(pb::CreateRoom {
                room_id: room,
                pin_core: true,
                core,
            }))
            .context("CreateRoom")?;
        }
        let mut bodies = Vec::new();
        let relay_keys = |send: u8, recv: u8| pb::SrtpParams {
            profile: "AEAD_AES_128_GCM".into(),
            send_key: vec![send; 16],
            send_salt: vec![send; 12],
            recv_key: vec![recv; 16],
            recv_salt: vec![recv; 12],
        };
        for (room, id, remote, keys, local, peer) in [
            (
                ROOM,
                RELAY_OUT,
                far_port,
                relay_keys(1, 2),
                0xC0DE_0001,
                0xC0DE_0002,
            ),
            (
                FAR_ROOM,
                RELAY_IN,
                near_port,
                relay_keys(2, 1),
                0xC0DE_0002,
                0xC0DE_0001,
            ),
        ] {
            bodies.push(Body::CreatePlainTransport(pb::CreatePlainTransport {
                room_id: room,
                transport_id: id,
                remote: SocketAddr::from(([127, 0, 0, 1], remote)).to_string(),
                comedia: false,
                srtp: Some(keys),
                relay: Some(pb::RelayParams {
                    local_rtcp_ssrc: local,
                    peer_rtcp_ssrc: peer,
                }),
            }));
        }
        for (p, spec) in topo.publishers.iter().enumerate() {
            bodies.push(Body::CreatePlainTransport(pb::CreatePlainTransport {
                room_id: ROOM,
                transport_id: pub_transport(p),
                remote: pubs[p].to_string(),
                ..Default::default()
            }));
            let track = add_track(ROOM, pub_transport(p), 1 + p as u64, spec.media, |l| {
                scenario::source_ssrc(p, l)
            });
            bodies.push(track);
            bodies.push(add_track(
                FAR_ROOM,
                RELAY_IN,
                copy_track(p),
                spec.media,
                |l| relay_ssrc(p, l),
            ));
            for l in 0..spec.media.layers() {
                bodies.push(Body::AddDownTrack(pb::AddDownTrack {
                    room_id: ROOM,
                    track_id: 1 + p as u64,
                    down_track_id: 3_000_000 + u64::from(scenario::stream_id(p, l)),
                    transport_id: RELAY_OUT,
                    ssrc: relay_ssrc(p, l),
                    preferred_spatial: l as u32,
                    pinned: true,
                    ..Default::default()
                }));
            }
        }
        let room_of = |s: usize| if s % 2 == 0 { ROOM } else { FAR_ROOM };
        for (s, addr) in sinks.iter().enumerate() {
            bodies.push(Body::CreatePlainTransport(pb::CreatePlainTransport {
                room_id: room_of(s),
                transport_id: sub_transport(s),
                remote: addr.to_string(),
                ..Default::default()
            }));
        }
        self.rooms.clear();
        for (i, s) in topo.subscriptions.iter().enumerate() {
            let pt = match topo.publishers[s.publisher].media {
                Media::Audio => AUDIO_PT,
                _ => VIDEO_PT,
            };
            let room = room_of(s.subscriber);
            self.rooms.push(room);
            bodies.push(Body::AddDownTrack(pb::AddDownTrack {
                room_id: room,
                track_id: if room == ROOM {
                    1 + s.publisher as u64
                } else {
                    copy_track(s.publisher)
                },
                down_track_id: 1 + i as u64,
                transport_id: sub_transport(s.subscriber),
                ssrc: scenario::output_ssrc(i),
                payload_type: pt.into(),
                preferred_spatial: s.spatial as u32,
                ..Default::default()
            }));
        }
        self.pipeline(bodies)
    }

    pub fn set_layer(&mut self, subscription: usize, spatial: usize) -> Result<()> {
        self.request(Body::SetPreferredLayer(pb::SetPreferredLayer {
            room_id: self.rooms.get(subscription).copied().unwrap_or(ROOM),
            down_track_id: 1 + subscription as u64,
            spatial: spatial as u32,
            temporal: 2,
        }))?;
        Ok(())
    }

    /// The forwarder's per-core counters in one line.
    pub fn summary(&mut self) -> Result<String> {
        let ev = self.request(Body::GetStats(pb::GetStats {}))?;
        let Some(pb::event::Body::Stats(s)) = ev.body else {
            bail!("GetStats answered without stats");
        };
        let mut out = String::new();
        for c in &s.cores {
            let k = c.counters.clone().unwrap_or_default();
            let drops: Vec<String> = k
                .drops
                .iter()
                .filter(|d| d.count > 0)
                .map(|d| format!("{}={}", d.reason, d.count))
                .collect();
            out.push_str(&format!(
                "core {} [{}]: in {} out {} turns {} rx-batches {} tx-batches {} drops [{}]; ",
                c.core,
                c.driver,
                k.packets_in,
                k.packets_out,
                c.loop_turns,
                c.batches_received,
                c.batches_sent,
                drops.join(" ")
            ));
        }
        // Relayed: what the origin sent toward the far core, per packet it received.
        let out_of = |id: u64| {
            s.transports
                .iter()
                .find(|t| t.transport_id == id)
                .and_then(|t| t.counters.as_ref())
                .map(|c| (c.packets_in, c.packets_out))
        };
        if let Some((_, relayed)) = out_of(RELAY_OUT) {
            let published: u64 = (0..64)
                .filter_map(|p| out_of(pub_transport(p)))
                .map(|(i, _)| i)
                .sum();
            out.push_str(&format!(
                "relay: {relayed} packets toward core 1 for {published} published ({:.3} per published packet)",
                relayed as f64 / published.max(1) as f64
            ));
        }
        Ok(out)
    }
}

/// A track of `media` in `room` on `transport`, layer `l` on SSRC `ssrc(l)`.
fn add_track(
    room: u64,
    transport: u64,
    track: u64,
    media: Media,
    ssrc: impl Fn(usize) -> u32,
) -> Body {
    let (kind, codec) = match media {
        Media::Audio | Media::SmallAudio => (
            pb::MediaKind::Audio,
            pb::Codec {
                kind: pb::CodecKind::Opus as i32,
                payload_type: AUDIO_PT.into(),
                clock_rate: 48_000,
            },
        ),
        _ => (
            pb::MediaKind::Video,
            pb::Codec {
                kind: pb::CodecKind::Vp8 as i32,
                payload_type: VIDEO_PT.into(),
                clock_rate: 90_000,
            },
        ),
    };
    Body::AddTrack(pb::AddTrack {
        room_id: room,
        transport_id: transport,
        track_id: track,
        kind: kind as i32,
        codec: Some(codec),
        layers: (0..media.layers())
            .map(|l| pb::Layer {
                ssrc: ssrc(l),
                rid: String::new(),
                spatial: l as u32,
                rtx_ssrc: 0,
            })
            .collect(),
        ..Default::default()
    })
}
