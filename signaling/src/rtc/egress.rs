//! Recordings as hidden subscribers of the room.
//!
//! Why a subscriber and not a tap inside the forwarder: the forwarder already does all a
//! recorder needs from it (a keyframe to start on, retransmissions, sender reports moved
//! into the subscriber's timeline, simulcast switches that keep the stream continuous),
//! and its fast path stays as it is. An egress gets a plain RTP transport whose remote is
//! its recorder's socket on loopback, and a down track per recorded track, preferring
//! the highest simulcast layer. It is not a participant: SDKs never see it, and it does
//! not keep the room open.
//!
//! An egress ends with what it records, as LiveKit's do: a participant egress when its
//! participant leaves, a track egress (or track composite) when none of its tracks is
//! published any more. The recorder finalizes the file and the egress is
//! `EGRESS_COMPLETE`.
//!
//! Auto-egress (`crate::egress::auto`): a room created with `egress.tracks` records every
//! track as it is published; one with `egress.participant` records every publisher into
//! one file (or one HLS playlist), started once it publishes both a camera and a microphone track, or
//! [`AUTO_PARTICIPANT_WAIT`] after its first track (SDKs publish them one after the other,
//! and a recording's streams are fixed when it starts).

use std::time::{Duration, Instant};

use pb::command::Body as Cmd;
use prism_proto::control as pb;
use prism_proto::livekit as lk;

use super::error::RtcError;
use super::ids::{DownTrackId, ParticipantSid, TrackSid, TransportId};
use super::room::Room;
use crate::egress::hls::HlsSpec;
use crate::egress::recorder::{self, Recorder, RecorderSpec};
use crate::egress::session::{Container, MediaCodec, StreamSpec};
use crate::egress::{now_ns, Egresses};
use crate::media::random_u32;
use crate::sdp::MediaKind;

/// How long an auto participant egress waits for a publisher's second track.
pub const AUTO_PARTICIPANT_WAIT: Duration = Duration::from_secs(2);

/// A running recording of the room.
#[derive(Debug)]
pub struct RoomEgress {
    pub transport_id: TransportId,
    pub recorder: Recorder,
    /// What it records, so that it ends with it.
    pub subject: Subject,
}

/// What an egress records, for ending it when that goes away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// These tracks, those still published: it ends when none is left.
    Tracks(Vec<TrackSid>),
    /// A participant (by identity): it ends when the participant leaves.
    Participant(String),
}

/// What to record.
#[derive(Clone, Debug)]
pub enum Source {
    /// Tracks by sid (one for track egress; audio and video for track composite).
    Tracks(Vec<TrackSid>),
    /// A participant's camera (or screen share) and microphone.
    Participant {
        identity: String,
        screen_share: bool,
    },
}

/// A StartXEgress request, checked by the Twirp layer.
#[derive(Clone, Debug)]
pub struct EgressRequest {
    pub source: Source,
    /// The requested file path (templated, see `Egresses::file_path`).
    pub filepath: String,
    /// Ogg asked for explicitly (`EncodedFileType::OGG`).
    pub want_ogg: bool,
    /// MP4 asked for explicitly (`EncodedFileType::MP4`).
    pub want_mp4: bool,
    /// HLS (a `SegmentedFileOutput`) instead of a file.
    pub segments: Option<SegmentsRequest>,
    pub request: lk::egress_info::Request,
}

/// An HLS output: LiveKit's `SegmentedFileOutput` fields, templated like file paths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentsRequest {
    pub filename_prefix: String,
    pub playlist_name: String,
    pub live_playlist_name: String,
    /// Seconds; 0 for the default ([`DEFAULT_SEGMENT_SECONDS`]).
    pub segment_duration: u32,
}

/// A segment's length when the request gives none.
pub const DEFAULT_SEGMENT_SECONDS: u32 = 4;

/// A playlist's path: a bare name goes beside the segments, a path is templated on its
/// own; `.m3u8` is added if there is no extension.
fn playlist_path(
    egresses: &Egresses,
    name: &str,
    prefix: &std::path::Path,
    vars: &[(&str, &str)],
) -> std::path::PathBuf {
    let mut p = if name.contains('/') {
        egresses.template(name, vars, "")
    } else {
        let templated = egresses.template(name, vars, "");
        let file = templated.file_name().unwrap_or_default().to_owned();
        prefix.parent().unwrap_or(egresses.directory()).join(file)
    };
    if p.extension().is_none() {
        p.set_extension("m3u8");
    }
    p
}

fn media_codec(name: &str) -> Option<MediaCodec> {
    if name.eq_ignore_ascii_case("vp8") {
        Some(MediaCodec::Vp8)
    } else if name.eq_ignore_ascii_case("h264") {
        Some(MediaCodec::H264)
    } else if name.eq_ignore_ascii_case("opus") {
        Some(MediaCodec::Opus)
    } else {
        None
    }
}

impl Room {
    /// The tracks a source names, with their publisher's identity.
    fn egress_tracks(&self, source: &Source) -> Result<(Vec<TrackSid>, String), RtcError> {
        match source {
            Source::Tracks(sids) => {
                let mut who = String::new();
                for sid in sids {
                    let (p, _) = self.track(sid).ok_or(RtcError::TrackNotFound)?;
                    who = p.identity.to_string();
                }
                Ok((sids.clone(), who))
            }
            Source::Participant {
                identity,
                screen_share,
            } => {
                use lk::TrackSource as S;
                let p = self
                    .by_identity(identity)
                    .ok_or(RtcError::ParticipantNotFound)?;
                let (video, audio) = if *screen_share {
                    (S::ScreenShare, S::ScreenShareAudio)
                } else {
                    (S::Camera, S::Microphone)
                };
                let pick = |src: S, kind: MediaKind| {
                    p.tracks
                        .iter()
                        .find(|t| t.info.source() == src)
                        .or_else(|| p.tracks.iter().find(|t| t.kind == kind))
                        .map(|t| t.sid())
                };
                let tracks: Vec<TrackSid> =
                    [pick(video, MediaKind::Video), pick(audio, MediaKind::Audio)]
                        .into_iter()
                        .flatten()
                        .collect();
                if tracks.is_empty() {
                    return Err(RtcError::NothingPublished(identity.clone()));
                }
                Ok((tracks, identity.clone()))
            }
        }
    }

    /// Starts a recording: the recorder thread, its transport and down tracks.
    pub fn start_egress(
        &mut self,
        req: EgressRequest,
        egresses: &Egresses,
    ) -> Result<lk::EgressInfo, RtcError> {
        let core = self
            .core_on_host
            .ok_or_else(|| RtcError::MediaPlane("the room has no core yet".into()))?;
        let (sids, identity) = self.egress_tracks(&req.source)?;
        let mut streams = Vec::new();
        let mut downs = Vec::new();
        for sid in &sids {
            let (_, t) = self.track(sid).ok_or(RtcError::TrackNotFound)?;
            let codec = media_codec(&t.codec.name).ok_or_else(|| {
                RtcError::Invalid(format!(
                    "track {sid} is {}, which Prism cannot record yet (VP8, H.264 and Opus only)",
                    t.codec.name
                ))
            })?;
            if t.codec.clock_rate == 0 {
                return Err(RtcError::Invalid(format!("track {sid} has no clock rate")));
            }
            let ssrc = random_u32() | 1;
            streams.push(StreamSpec {
                ssrc,
                codec,
                clock_rate: t.codec.clock_rate,
            });
            // The highest layer the publisher sends (the forwarder picks the closest
            // active one at or below it).
            downs.push((t.track_id, ssrc, t.codec.pt, 2));
        }
        // A track published on another node is recorded from its copy here.
        for ((id, ..), sid) in downs.iter_mut().zip(&sids) {
            if let Some(copy) = self.track_on_site(sid, 0) {
                *id = copy;
                self.relay_all_layers(sid, 0);
            }
        }
        let track_var = sids
            .first()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default();
        let vars = [
            ("room_name", self.name.as_str()),
            ("room_id", &self.sid),
            ("track_id", &track_var),
            ("publisher_identity", &identity),
        ];
        let (container, path) = match &req.segments {
            Some(seg) => {
                let prefix = egresses.template(&seg.filename_prefix, &vars, "{room_name}-{time}");
                let default_name = prefix.file_name().unwrap_or_default().to_string_lossy();
                let playlist_name = if seg.playlist_name.is_empty() {
                    default_name.as_ref()
                } else {
                    &seg.playlist_name
                };
                let playlist = playlist_path(egresses, playlist_name, &prefix, &vars);
                let live_playlist = (!seg.live_playlist_name.is_empty())
                    .then(|| playlist_path(egresses, &seg.live_playlist_name, &prefix, &vars));
                let seconds = match seg.segment_duration {
                    0 => DEFAULT_SEGMENT_SECONDS,
                    n => n,
                };
                let spec = HlsSpec {
                    prefix,
                    playlist: playlist.clone(),
                    live_playlist,
                    segment_duration: f64::from(seconds),
                };
                (Container::Hls(spec), playlist)
            }
            None => {
                let codecs: Vec<MediaCodec> = streams.iter().map(|s| s.codec).collect();
                let container =
                    Container::choose(&codecs, &req.filepath, req.want_ogg, req.want_mp4)
                        .map_err(RtcError::Invalid)?;
                let path = egresses.file_path(&req.filepath, &vars, container.ext());
                (container, path)
            }
        };
        let egress_id = super::room::new_sid("EG_");
        let started = now_ns();
        let filename = path.to_string_lossy().into_owned();
        let (file_results, segment_results, result) = match &container {
            Container::Hls(spec) => {
                let live = spec
                    .live_playlist
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let s = lk::SegmentsInfo {
                    playlist_name: filename.clone(),
                    playlist_location: filename,
                    live_playlist_name: live.clone(),
                    live_playlist_location: live,
                    started_at: started,
                    ..Default::default()
                };
                (
                    Vec::new(),
                    vec![s.clone()],
                    lk::egress_info::Result::Segments(s),
                )
            }
            _ => {
                let f = lk::FileInfo {
                    filename: filename.clone(),
                    started_at: started,
                    location: filename,
                    ..Default::default()
                };
                (
                    vec![f.clone()],
                    Vec::new(),
                    lk::egress_info::Result::File(f),
                )
            }
        };
        let info = lk::EgressInfo {
            egress_id: egress_id.clone(),
            room_id: self.sid.clone(),
            room_name: self.name.to_string(),
            source_type: lk::EgressSourceType::Sdk as i32,
            status: lk::EgressStatus::EgressActive as i32,
            started_at: started,
            updated_at: started,
            request: Some(req.request),
            file_results,
            segment_results,
            result: Some(result),
            ..Default::default()
        };
        let on_end = {
            let egresses = egresses.clone();
            let id = egress_id.clone();
            Box::new(move |o: crate::egress::session::Outcome| egresses.ended(&id, &o))
        };
        let rec = recorder::start(
            RecorderSpec {
                path,
                streams,
                container,
            },
            core,
            on_end,
        )
        .map_err(|e| RtcError::MediaPlane(format!("cannot start the recording: {e}")))?;
        egresses.begin(info.clone(), self.handle.clone());
        let transport_id = TransportId::fresh();
        self.command(Cmd::CreatePlainTransport(pb::CreatePlainTransport {
            room_id: self.id.0,
            transport_id: transport_id.0,
            remote: rec.addr.to_string(),
            comedia: false,
            srtp: None,
            relay: None,
        }));
        for (track_id, ssrc, pt, top) in downs {
            self.command(Cmd::AddDownTrack(pb::AddDownTrack {
                room_id: self.id.0,
                track_id: track_id.0,
                down_track_id: DownTrackId::fresh().0,
                transport_id: transport_id.0,
                ssrc,
                payload_type: u32::from(pt),
                preferred_spatial: top,
                ..Default::default()
            }));
        }
        tracing::info!(room = %self.name, egress = %egress_id, tracks = ?sids, "egress started");
        let subject = match &req.source {
            Source::Tracks(_) => Subject::Tracks(sids),
            Source::Participant { identity, .. } => Subject::Participant(identity.clone()),
        };
        self.egresses.insert(
            egress_id,
            RoomEgress {
                transport_id,
                recorder: rec,
                subject,
            },
        );
        Ok(info)
    }

    /// StopEgress: the recorder finishes its file; the transport goes when it has.
    pub fn stop_egress(&mut self, id: &str) -> Result<(), RtcError> {
        let e = self.egresses.get(id).ok_or(RtcError::FailedPrecondition(
            "the egress is not running in this room",
        ))?;
        e.recorder.stop();
        Ok(())
    }

    /// The recorder finished (stopped, or its disk failed): its transport goes.
    pub(crate) fn egress_ended(&mut self, id: &str) {
        if let Some(e) = self.egresses.remove(id) {
            e.recorder.stop();
            if !self.closed {
                self.command(Cmd::CloseTransport(pb::CloseTransport {
                    room_id: self.id.0,
                    transport_id: e.transport_id.0,
                }));
            }
        }
    }

    /// Ends egresses by themselves (what they record went away): each recorder finalizes
    /// its file, and the egress is listed as ending until it has.
    fn end_egresses(&mut self, ids: Vec<String>) {
        for id in ids {
            if let Some(e) = self.egresses.get(&id) {
                tracing::info!(room = %self.name, egress = %id, subject = ?e.subject, "what the egress records is gone; ending it");
                e.recorder.stop();
                if let Some(reg) = &self.egress_registry {
                    reg.ending(&id);
                }
            }
        }
    }

    /// A track is no longer published: track egresses with none of their tracks left end.
    pub(crate) fn egress_tracks_gone(&mut self, gone: &[TrackSid]) {
        let mut ended = Vec::new();
        for (id, e) in &mut self.egresses {
            if let Subject::Tracks(left) = &mut e.subject {
                let before = left.len();
                left.retain(|t| !gone.contains(t));
                if left.is_empty() && before > 0 {
                    ended.push(id.clone());
                }
            }
        }
        self.end_egresses(ended);
    }

    /// A participant left, with its tracks: its participant egresses end, and so do track
    /// egresses with none of their tracks left.
    pub(crate) fn egress_participant_left(
        &mut self,
        pid: &ParticipantSid,
        identity: &str,
        tracks: &[TrackSid],
    ) {
        self.auto_waiting.remove(pid);
        let ended: Vec<String> = self
            .egresses
            .iter()
            .filter(|(_, e)| e.subject == Subject::Participant(identity.to_owned()))
            .map(|(id, _)| id.clone())
            .collect();
        self.end_egresses(ended);
        self.egress_tracks_gone(tracks);
    }

    /// Tracks were published: auto-egress records each (`tracks`), and the publisher
    /// (`participant`) once it has a camera and a microphone, or after
    /// [`AUTO_PARTICIPANT_WAIT`].
    pub(crate) fn auto_egress_published(&mut self, pid: &ParticipantSid, published: &[TrackSid]) {
        let Some(auto) = self.auto_egress.clone() else {
            return;
        };
        if let Some(template) = &auto.tracks {
            let filepath = if template.is_empty() {
                "{room_name}/{publisher_identity}-{track_id}-{time}".to_owned()
            } else {
                template.clone()
            };
            for sid in published {
                let req = EgressRequest {
                    source: Source::Tracks(vec![sid.clone()]),
                    filepath: filepath.clone(),
                    want_ogg: false,
                    want_mp4: false,
                    segments: None,
                    request: lk::egress_info::Request::Track(lk::TrackEgressRequest {
                        room_name: self.name.to_string(),
                        track_id: sid.to_string(),
                        output: Some(lk::track_egress_request::Output::File(
                            lk::DirectFileOutput {
                                filepath: filepath.clone(),
                                ..Default::default()
                            },
                        )),
                    }),
                };
                self.start_auto(req);
            }
        }
        if auto.participant.is_some() && !published.is_empty() {
            let started = self.egresses.values().any(|e| {
                self.participant(pid)
                    .is_some_and(|p| e.subject == Subject::Participant(p.identity.to_string()))
            });
            if !started {
                let both = self.participant(pid).is_some_and(|p| {
                    p.tracks.iter().any(|t| t.kind == MediaKind::Video)
                        && p.tracks.iter().any(|t| t.kind == MediaKind::Audio)
                });
                if both {
                    self.auto_waiting.remove(pid);
                    self.start_auto_participant(pid);
                } else {
                    self.auto_waiting
                        .entry(pid.clone())
                        .or_insert_with(|| Instant::now() + AUTO_PARTICIPANT_WAIT);
                }
            }
        }
    }

    /// Auto participant egresses whose wait for a second track is over (the room's tick).
    pub(crate) fn auto_egress_tick(&mut self, now: Instant) {
        let due: Vec<ParticipantSid> = self
            .auto_waiting
            .iter()
            .filter(|(_, &at)| now >= at)
            .map(|(p, _)| p.clone())
            .collect();
        for pid in due {
            self.auto_waiting.remove(&pid);
            self.start_auto_participant(&pid);
        }
    }

    fn start_auto_participant(&mut self, pid: &ParticipantSid) {
        let Some(auto) = self
            .auto_egress
            .as_ref()
            .and_then(|a| a.participant.clone())
        else {
            return;
        };
        let Some(identity) = self.participant(pid).map(|p| p.identity.to_string()) else {
            return;
        };
        // One participant's recording among the room's: its own name by default.
        let default_path = |p: &str| {
            if p.is_empty() {
                "{room_name}/{publisher_identity}-{time}".to_owned()
            } else {
                p.to_owned()
            }
        };
        let out = auto.output;
        let req = EgressRequest {
            source: Source::Participant {
                identity: identity.clone(),
                screen_share: false,
            },
            filepath: default_path(&out.filepath),
            want_ogg: out.want_ogg,
            want_mp4: out.want_mp4,
            segments: out.segments.map(|s| SegmentsRequest {
                filename_prefix: default_path(&s.filename_prefix),
                ..s
            }),
            request: lk::egress_info::Request::Participant(lk::ParticipantEgressRequest {
                room_name: self.name.to_string(),
                identity,
                file_outputs: auto.file_outputs,
                segment_outputs: auto.segment_outputs,
                ..Default::default()
            }),
        };
        self.start_auto(req);
    }

    fn start_auto(&mut self, req: EgressRequest) {
        let Some(registry) = self.egress_registry.clone() else {
            return;
        };
        let what = format!("{:?}", req.source);
        match self.start_egress(req, &registry) {
            Ok(info) => {
                tracing::info!(room = %self.name, egress = %info.egress_id, source = %what, "auto egress started");
            }
            Err(e) => {
                tracing::warn!(room = %self.name, source = %what, error = %e, "auto egress not started");
            }
        }
    }

    /// The room closes: every recording finishes its file.
    pub(crate) fn stop_all_egress(&mut self) {
        for e in self.egresses.values() {
            e.recorder.stop();
        }
    }
}
