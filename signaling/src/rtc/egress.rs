//! Recordings as hidden subscribers of the room.
//!
//! Why a subscriber and not a tap inside the forwarder: the forwarder already does all a
//! recorder needs from it (a keyframe to start on, retransmissions, sender reports moved
//! into the subscriber's timeline, simulcast switches that keep the stream continuous),
//! and its fast path stays as it is. An egress gets a plain RTP transport whose remote is
//! its recorder's socket on loopback, and a down track per recorded track, preferring
//! the highest simulcast layer. It is not a participant: SDKs never see it, and it does
//! not keep the room open.

use pb::command::Body as Cmd;
use prism_proto::control as pb;
use prism_proto::livekit as lk;

use super::error::RtcError;
use super::ids::{DownTrackId, TrackSid, TransportId};
use super::room::Room;
use crate::egress::recorder::{self, Recorder, RecorderSpec};
use crate::egress::session::{Container, MediaCodec, StreamSpec};
use crate::egress::{now_ns, Egresses};
use crate::media::random_u32;
use crate::sdp::MediaKind;

/// A running recording of the room.
#[derive(Debug)]
pub struct RoomEgress {
    pub transport_id: TransportId,
    pub recorder: Recorder,
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
    pub request: lk::egress_info::Request,
}

fn media_codec(name: &str) -> Option<MediaCodec> {
    if name.eq_ignore_ascii_case("vp8") {
        Some(MediaCodec::Vp8)
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
        let (core, _) = self
            .core
            .ok_or_else(|| RtcError::MediaPlane("the room has no core yet".into()))?;
        let (sids, identity) = self.egress_tracks(&req.source)?;
        let mut streams = Vec::new();
        let mut downs = Vec::new();
        for sid in &sids {
            let (_, t) = self.track(sid).ok_or(RtcError::TrackNotFound)?;
            let codec = media_codec(&t.codec.name).ok_or_else(|| {
                RtcError::Invalid(format!(
                    "track {sid} is {}, which Prism cannot record yet (VP8 and Opus only)",
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
        let has_video = streams.iter().any(|s| s.codec.is_video());
        let audio_only = !has_video;
        let container = if audio_only && (req.want_ogg || !req.filepath.ends_with(".webm")) {
            Container::Ogg
        } else {
            Container::WebM
        };
        if req.filepath.ends_with(".mp4") {
            return Err(RtcError::Invalid(
                "MP4 output is for H.264, which Prism does not record yet: use .webm".into(),
            ));
        }
        let ext = match container {
            Container::Ogg => "ogg",
            Container::WebM => "webm",
        };
        let track_var = sids
            .first()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default();
        let path = egresses.file_path(
            &req.filepath,
            &[
                ("room_name", self.name.as_str()),
                ("room_id", &self.sid),
                ("track_id", &track_var),
                ("publisher_identity", &identity),
            ],
            ext,
        );
        let egress_id = super::room::new_sid("EG_");
        let started = now_ns();
        let filename = path.to_string_lossy().into_owned();
        let file = lk::FileInfo {
            filename: filename.clone(),
            started_at: started,
            location: filename,
            ..Default::default()
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
            file_results: vec![file.clone()],
            result: Some(lk::egress_info::Result::File(file)),
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
        self.egresses.insert(
            egress_id,
            RoomEgress {
                transport_id,
                recorder: rec,
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

    /// The room closes: every recording finishes its file.
    pub(crate) fn stop_all_egress(&mut self) {
        for e in self.egresses.values() {
            e.recorder.stop();
        }
    }
}
