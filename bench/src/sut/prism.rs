//! Configuring a `prism-forwarder` process for a topology over its control socket.
//!
//! One room pinned to the forwarder's only core; a plain transport per publisher socket
//! (remote set, so no comedia learning is needed) and per sink socket, each with its own
//! SRTP keys when the system runs SRTP; a track per publisher with its layers; a down
//! track per subscription.

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
const TIMEOUT: Duration = Duration::from_secs(10);

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
}

impl PrismControl {
    /// Connects, retrying while the forwarder starts.
    pub fn connect(path: &Path, wait: Duration) -> Result<Self> {
        let deadline = Instant::now() + wait;
        let target = ControlListen::Unix(path.to_path_buf());
        loop {
            match SocketControlClient::connect(&target, None) {
                Ok(client) => return Ok(Self { client }),
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
            }));
            let (kind, codec) = match spec.media {
                Media::Audio => (
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
            bodies.push(Body::AddTrack(pb::AddTrack {
                nack: None,
                mid: String::new(),
                mid_ext_id: 0,
                rid_ext_id: 0,
                rtx_payload_type: 0,
                repaired_rid_ext_id: 0,
                room_id: ROOM,
                transport_id: pub_transport(p),
                track_id: 1 + p as u64,
                kind: kind as i32,
                codec: Some(codec),
                layers: (0..spec.media.layers())
                    .map(|l| pb::Layer {
                        ssrc: scenario::source_ssrc(p, l),
                        rid: String::new(),
                        spatial: l as u32,
                        rtx_ssrc: 0,
                    })
                    .collect(),
            }));
        }
        for (s, addr) in sinks.iter().enumerate() {
            bodies.push(Body::CreatePlainTransport(pb::CreatePlainTransport {
                srtp: keys(Endpoint::Sink(s)),
                room_id: ROOM,
                transport_id: sub_transport(s),
                remote: addr.to_string(),
                comedia: false,
            }));
        }
        for (i, s) in topo.subscriptions.iter().enumerate() {
            let pt = match topo.publishers[s.publisher].media {
                Media::Audio => AUDIO_PT,
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

    pub fn set_layer(&mut self, subscription: usize, spatial: usize) -> Result<()> {
        self.request(Body::SetPreferredLayer(pb::SetPreferredLayer {
            room_id: ROOM,
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
                "core {} [{}]: in {} out {} turns {} rx-batches {} tx-batches {} drops [{}]",
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
        Ok(out)
    }
}
