//! The RTMP listener: one task per connection drives a sans-IO [`Session`], checks the
//! stream key against the ingress registry, and once the encoder's stream is described
//! (the AVC and AAC configurations, or `onMetaData` saying a kind is absent) publishes it
//! into the room as an `INGRESS` participant and sends its media as RTP to the room's
//! core over a loopback UDP socket.
//!
//! A connection that fails (garbage instead of a handshake, a handshake that never
//! completes, a chunk stream that does not parse, an unknown stream key, a codec other
//! than H.264 and AAC) is closed with its reason counted (`prism_ingress_refused_total`)
//! and logged; it never affects another connection. A codec error is also the ingress's
//! state (`ENDPOINT_ERROR` with the codec named), as LiveKit's ingress reports it.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use prism_proto::livekit as lk;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::audio::{AacToOpus, AudioFormat, FRAME};
use super::flv::{self, AvcConfig, TagError, Video};
use super::packetize::RtpStream;
use super::publish::{RtmpPublish, H264_PT, OPUS_PT};
use super::rtmp::amf0::Amf;
use super::rtmp::session::{Event, Session, HANDSHAKE_SIZE};
use super::{Claim, Ingresses, Status};
use crate::media::random_u32;
use crate::rtc::room::Pending;
use crate::rtc::{RoomManager, RoomName, RoomOptions};

/// Time allowed from accepting a connection to a complete handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time without a byte from the encoder before the connection is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; more are closed at accept (`too_many_connections`), so a
/// flood of idle sockets costs at most this many tasks and buffers.
const MAX_CONNECTIONS: usize = 256;
/// How often a live session checks that its participant is still in the room.
const MEMBERSHIP_CHECK: Duration = Duration::from_secs(1);

/// Accepts RTMP connections on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    rooms: RoomManager,
    ingresses: Ingresses,
    mut shutdown: watch::Receiver<bool>,
) {
    let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "RTMP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        use std::sync::atomic::Ordering;
        if open.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::Relaxed);
            ingresses.count("too_many_connections");
            tracing::warn!(%peer, "RTMP connection refused: {MAX_CONNECTIONS} already open");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (rooms, ingresses, open) = (rooms.clone(), ingresses.clone(), open.clone());
        tokio::spawn(async move {
            let mut c = Connection::new(rooms, ingresses, peer);
            let error = c.run(stream).await;
            c.finish(error).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Why a connection ended badly: the counted reason and the message.
#[derive(Debug)]
struct Failure {
    reason: &'static str,
    message: String,
    /// Whether the ingress's state shows it (stream errors do; refusals and protocol
    /// errors before a claim do not).
    state: bool,
}

impl Failure {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            state: false,
        }
    }
}

/// The stream once it is in the room.
struct Live {
    socket: UdpSocket,
    video: RtpStream,
    audio: RtpStream,
    /// RTP timestamps at RTMP time 0: media time T (ms) is `base + T × clock / 1000` for
    /// both, so one sender report pair keeps them in sync.
    video_base: u32,
    audio_base: u32,
    /// The next Opus frame's timestamp, once audio started.
    audio_ts: Option<u32>,
    /// The newest RTMP timestamp seen (ms), for sender reports.
    last_ms: u32,
    resource: String,
}

impl Live {
    /// One RTCP sender report per stream (RFC 3550 §6.4.1), both mapping now to the newest
    /// RTMP time, so that subscribers can put audio and video on one clock.
    fn sender_reports(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let ntp_secs = (now.as_secs() + 2_208_988_800) as u32;
        let ntp_frac = ((u64::from(now.subsec_nanos()) << 32) / 1_000_000_000) as u32;
        let streams = [
            (&self.video, self.video_base, 90u32),
            (&self.audio, self.audio_base, 48),
        ];
        for (stream, base, per_ms) in streams {
            if stream.packets == 0 {
                continue;
            }
            let rtp = base.wrapping_add(self.last_ms.wrapping_mul(per_ms));
            let mut sr = Vec::with_capacity(28);
            sr.extend_from_slice(&[0x80, 200, 0, 6]);
            sr.extend_from_slice(&stream.ssrc.to_be_bytes());
            sr.extend_from_slice(&ntp_secs.to_be_bytes());
            sr.extend_from_slice(&ntp_frac.to_be_bytes());
            sr.extend_from_slice(&rtp.to_be_bytes());
            sr.extend_from_slice(&stream.packets.to_be_bytes());
            sr.extend_from_slice(&stream.octets.to_be_bytes());
            let _ = self.socket.send(&sr);
        }
    }
}

struct Connection {
    rooms: RoomManager,
    ingresses: Ingresses,
    peer: SocketAddr,
    session: Session,
    claim: Option<Claim>,
    avc: Option<AvcConfig>,
    aac: Option<(AacToOpus, AudioFormat)>,
    /// What `onMetaData` announced: (video, audio) present.
    announced: Option<(bool, bool)>,
    video_state: lk::InputVideoState,
    live: Option<Live>,
    frames: u64,
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    let _ = getrandom::fill(&mut v);
    v
}

impl Connection {
    fn new(rooms: RoomManager, ingresses: Ingresses, peer: SocketAddr) -> Self {
        Self {
            rooms,
            ingresses,
            peer,
            session: Session::new(&random_bytes(HANDSHAKE_SIZE - 8)),
            claim: None,
            avc: None,
            aac: None,
            announced: None,
            video_state: lk::InputVideoState::default(),
            live: None,
            frames: 0,
        }
    }

    /// Reads and answers until the encoder goes away (`Ok`) or something fails.
    async fn run(&mut self, mut stream: TcpStream) -> Result<(), Failure> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut stop = None::<watch::Receiver<bool>>;
        let mut last = tokio::time::Instant::now();
        // Whether the participant is still in its room (RemoveParticipant, DeleteRoom):
        // asked every few seconds, since the room model has no hook for it.
        let mut check = tokio::time::interval(MEMBERSHIP_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let limit = if self.session.handshaken() {
                IDLE_TIMEOUT
            } else {
                HANDSHAKE_TIMEOUT
            };
            let read = tokio::select! {
                r = tokio::time::timeout_at(last + limit, stream.read(&mut buf)) => r,
                _ = async { match stop.as_mut() {
                    Some(s) => { let _ = s.wait_for(|v| *v).await; }
                    None => std::future::pending::<()>().await,
                } } => {
                    tracing::info!(peer = %self.peer, "RTMP ingress deleted: closing its connection");
                    return Ok(());
                }
                _ = check.tick(), if self.live.is_some() => {
                    if in_room(self.membership()).await {
                        if let Some(live) = &self.live {
                            live.sender_reports();
                        }
                        continue;
                    }
                    tracing::info!(peer = %self.peer, "RTMP ingress participant removed from its room: closing its connection");
                    return Ok(());
                }
            };
            last = tokio::time::Instant::now();
            let n = match read {
                Err(_) if !self.session.handshaken() => {
                    return Err(Failure::new(
                        "handshake_timeout",
                        "no RTMP handshake in time",
                    ))
                }
                Err(_) => return Err(Failure::new("timeout", "the encoder went silent")),
                Ok(Err(e)) => return Err(Failure::new("io_error", e.to_string())),
                Ok(Ok(0)) if !self.session.handshaken() => {
                    return Err(Failure::new(
                        "truncated_handshake",
                        "the connection closed during the handshake",
                    ))
                }
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(n)) => n,
            };
            let received = self.session.receive(&buf[..n]);
            let mut end = received.map_err(|e| Failure::new(e.reason(), e.to_string()));
            while end.is_ok() {
                let Some(ev) = self.session.poll_event() else {
                    break;
                };
                end = self.on_event(ev).await;
                if end.is_ok() && stop.is_none() {
                    stop = self.claim.as_ref().map(|c| c.stop.clone());
                }
            }
            let out = self.session.take_output();
            if !out.is_empty() && stream.write_all(&out).await.is_err() {
                return end;
            }
            end?;
        }
    }

    async fn on_event(&mut self, ev: Event) -> Result<(), Failure> {
        match ev {
            Event::Connected {
                app,
                tc_url,
                flash_ver,
            } => {
                tracing::debug!(peer = %self.peer, %app, %tc_url, %flash_ver, "RTMP connect");
                Ok(())
            }
            Event::Publish { app, stream_key } => match self.ingresses.claim(&stream_key) {
                Ok(c) => {
                    tracing::info!(peer = %self.peer, %app, ingress = %c.info.ingress_id, room = %c.info.room_name, "RTMP publish accepted");
                    self.session.accept_publish();
                    self.claim = Some(c);
                    Ok(())
                }
                Err(r) => {
                    self.session.reject_publish(&r.to_string());
                    Err(Failure::new(r.reason(), format!("publish refused: {r}")))
                }
            },
            Event::Metadata(m) => {
                self.on_metadata(&m);
                Ok(())
            }
            Event::Video { timestamp, data } => self.on_video(timestamp, &data).await,
            Event::Audio { timestamp, data } => self.on_audio(timestamp, &data).await,
            Event::Unpublished => Err(Failure::new("", "unpublished")),
        }
    }

    fn on_metadata(&mut self, m: &Amf) {
        let num = |k: &str| m.get(k).and_then(Amf::as_f64);
        let video = m.get("videocodecid").is_some() || num("width").is_some();
        let audio = m.get("audiocodecid").is_some();
        self.announced = Some((video, audio));
        self.video_state.width = num("width").unwrap_or(0.0) as u32;
        self.video_state.height = num("height").unwrap_or(0.0) as u32;
        self.video_state.framerate = num("framerate").unwrap_or(0.0);
        self.video_state.average_bitrate = (num("videodatarate").unwrap_or(0.0) * 1000.0) as u32;
    }

    fn unsupported(&self, e: TagError) -> Failure {
        match e {
            TagError::Unsupported(m) => Failure {
                reason: "unsupported_codec",
                message: m,
                state: true,
            },
            TagError::Malformed(m) => Failure {
                reason: "malformed_media",
                message: format!("malformed FLV tag: {m}"),
                state: true,
            },
        }
    }

    async fn on_video(&mut self, ts: u32, data: &[u8]) -> Result<(), Failure> {
        match flv::video(data).map_err(|e| self.unsupported(e))? {
            Video::Config(c) => {
                self.avc = Some(c);
                Ok(())
            }
            Video::Nothing => Ok(()),
            Video::Frame { cts, keyframe } => {
                if self.live.is_none() {
                    if !keyframe || !self.ready(true) {
                        return Ok(());
                    }
                    self.go_live().await?;
                }
                let Some(avc) = &self.avc else {
                    return Ok(());
                };
                let nalus = match flv::split_nalus(data, avc.length_size) {
                    Ok(n) => n,
                    Err(_) => {
                        self.ingresses.count("malformed_media");
                        return Ok(());
                    }
                };
                let Some(live) = self.live.as_mut() else {
                    return Ok(());
                };
                live.last_ms = ts;
                let pts = i64::from(ts) + i64::from(cts);
                let rtp_ts = live.video_base.wrapping_add((pts * 90) as u32);
                let socket = &live.socket;
                let mut send = |p: &[u8]| {
                    let _ = socket.send(p);
                };
                live.video.h264(
                    rtp_ts,
                    &nalus,
                    Some((avc.sps.as_slice(), avc.pps.as_slice())),
                    &mut send,
                );
                self.frames += 1;
                if self.frames == 1 {
                    if let Some(c) = &self.claim {
                        self.ingresses
                            .update_state(&c.info.ingress_id, c.session, |s| {
                                s.status = Status::EndpointPublishing as i32;
                            });
                    }
                }
                Ok(())
            }
        }
    }

    async fn on_audio(&mut self, ms: u32, data: &[u8]) -> Result<(), Failure> {
        match flv::audio(data).map_err(|e| self.unsupported(e))? {
            flv::Audio::Config(asc) => {
                let t = AacToOpus::new(&asc).map_err(|m| Failure {
                    reason: "unsupported_codec",
                    message: m,
                    state: true,
                })?;
                self.aac = Some(t);
                Ok(())
            }
            flv::Audio::Frame(frame) => {
                if self.live.is_none() {
                    // Audio-only streams start on their first frame.
                    if self.announced.is_some_and(|(v, _)| !v) && self.ready(false) {
                        self.go_live().await?;
                    } else {
                        return Ok(());
                    }
                }
                let (Some((t, _)), Some(live)) = (self.aac.as_mut(), self.live.as_mut()) else {
                    return Ok(());
                };
                live.last_ms = ms;
                let socket = &live.socket;
                let start = live.audio_base.wrapping_add(ms.wrapping_mul(48));
                let ts = live.audio_ts.get_or_insert(start);
                let audio = &mut live.audio;
                let mut emit = |opus: &[u8]| {
                    audio.opus(*ts, opus, &mut |p: &[u8]| {
                        let _ = socket.send(p);
                    });
                    *ts = ts.wrapping_add(FRAME as u32);
                };
                if t.push(frame, &mut emit).is_err() {
                    self.ingresses.count("bad_audio_frame");
                }
                Ok(())
            }
        }
    }

    /// Whether the stream is described well enough to publish: each kind `onMetaData`
    /// announced (or, without metadata, each kind seen so far) has its configuration.
    fn ready(&self, video_frame: bool) -> bool {
        let (want_video, want_audio) = self
            .announced
            .unwrap_or((video_frame || self.avc.is_some(), self.aac.is_some()));
        (!want_video || self.avc.is_some()) && (!want_audio || self.aac.is_some())
    }

    /// Publishes into the room.
    async fn go_live(&mut self) -> Result<(), Failure> {
        let Some(claim) = &self.claim else {
            return Ok(());
        };
        let info = &claim.info;
        let resource = format!("rtmp-{}-{}", info.ingress_id, claim.session);
        let (video_ssrc, audio_ssrc) = (random_u32() | 1, random_u32() & !1);
        let spec = RtmpPublish {
            identity: info.participant_identity.clone(),
            name: info.participant_name.clone(),
            metadata: info.participant_metadata.clone(),
            resource: resource.clone(),
            video: self
                .avc
                .as_ref()
                .map(|a| a.profile_level_id().unwrap_or_else(|| "42e01f".into())),
            audio: self.aac.is_some(),
            video_ssrc,
            audio_ssrc,
        };
        let room = RoomName::new(info.room_name.clone());
        let published = self
            .rooms
            .on_room(&room, &RoomOptions::default(), true, move |r| {
                r.rtmp_publish(&spec)
            })
            .await
            .map_err(|e| Failure {
                reason: "room_refused",
                message: format!("could not publish into room {:?}: {e}", info.room_name),
                state: true,
            })?;
        // The RTP must not arrive before the core has the transport and tracks (it would be
        // dropped as from an unknown source, the first keyframe with it): wait until the
        // room has the media plane's answers.
        let pid = published.participant_sid.clone();
        for _ in 0..200 {
            let pid = pid.clone();
            let waiting = self
                .rooms
                .with_room(&room, move |r| {
                    Ok(r.pending.values().any(|p| match p {
                        Pending::Transport(p) | Pending::Track(p, _) => p.as_str() == pid,
                        _ => false,
                    }))
                })
                .await
                .unwrap_or(false);
            if !waiting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let core = published.core;
        let local: SocketAddr = if core.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local)
            .and_then(|s| s.connect(core).map(|()| s))
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|e| Failure::new("io_error", format!("media socket: {e}")))?;
        let (id, session) = (info.ingress_id.clone(), claim.session);
        let aac = self.aac.as_ref().map(|(_, f)| *f);
        let mut video_state = self.video_state.clone();
        video_state.mime_type = "video/h264".into();
        let tracks = published.tracks.clone();
        self.ingresses.update_state(&id, session, |s| {
            s.tracks = tracks;
            s.resource_id = resource.clone();
            if self.avc.is_some() {
                s.video = Some(video_state);
            }
            s.audio = aac.map(|f| lk::InputAudioState {
                mime_type: "audio/aac".into(),
                channels: f.channels,
                sample_rate: f.sample_rate,
                average_bitrate: 0,
            });
        });
        tracing::info!(peer = %self.peer, ingress = %id, participant = %published.participant_sid, %core, "RTMP ingress in the room");
        self.live = Some(Live {
            socket,
            video: RtpStream::new(video_ssrc, H264_PT, random_u32() as u16),
            audio: RtpStream::new(audio_ssrc, OPUS_PT, random_u32() as u16),
            video_base: random_u32(),
            audio_base: random_u32(),
            audio_ts: None,
            last_ms: 0,
            resource,
        });
        Ok(())
    }

    /// What [`in_room`] needs, owned (the connection is not `Sync`: it holds libopus).
    fn membership(&self) -> Option<(RoomManager, RoomName, String)> {
        let (c, live) = (self.claim.as_ref()?, self.live.as_ref()?);
        Some((
            self.rooms.clone(),
            RoomName::new(c.info.room_name.clone()),
            live.resource.clone(),
        ))
    }

    /// Leaves the room and updates the ingress state; counts and logs a failure.
    async fn finish(self, result: Result<(), Failure>) {
        let error = match result {
            Ok(()) => None,
            Err(f) if f.reason.is_empty() => None,
            Err(f) => {
                self.ingresses.count(f.reason);
                tracing::warn!(peer = %self.peer, reason = f.reason, error = %f.message, "RTMP connection closed");
                f.state.then_some(f.message)
            }
        };
        if let Some(c) = &self.claim {
            if let Some(live) = &self.live {
                let room = RoomName::new(c.info.room_name.clone());
                let _ = self.rooms.end_http(&room, live.resource.clone()).await;
            }
            self.ingresses
                .release(&c.info.ingress_id, c.session, error.as_deref());
            tracing::info!(peer = %self.peer, ingress = %c.info.ingress_id, frames = self.frames, "RTMP ingress ended");
        }
    }
}

/// Whether a session's participant (by its resource) is still in its room.
async fn in_room(probe: Option<(RoomManager, RoomName, String)>) -> bool {
    let Some((rooms, room, resource)) = probe else {
        return true;
    };
    rooms
        .with_room(&room, move |r| {
            Ok(r.participants
                .iter()
                .any(|p| p.resource() == Some(resource.as_str())))
        })
        .await
        .unwrap_or(false)
}
