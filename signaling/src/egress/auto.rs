//! What a recording request may ask for, checked in one place for the Egress service and
//! for auto-egress (recordings a room starts by itself).
//!
//! Auto-egress is LiveKit's `RoomEgress`, given in `CreateRoomRequest.egress` or in a join
//! token's `roomConfig.egress` (the room's configuration when that join creates it):
//! - `participant` (`AutoParticipantEgress`): every participant that publishes is recorded
//!   into one file or one HLS playlist (its camera and microphone, as
//!   StartParticipantEgress does);
//! - `tracks` (`AutoTrackEgress`): every published track is recorded into a file of its
//!   own (as StartTrackEgress does), the file path a template;
//! - `room` (a room composite) is refused: it renders and encodes a layout, and Prism
//!   records tracks without transcoding.
//!
//! The room (`rtc::egress`) starts them; they end as the egresses they stand for do.

use prism_proto::livekit as lk;

use crate::auth::Claims;
use crate::rtc::egress::SegmentsRequest;

/// Why a recording request is refused: something Prism does not do (Twirp
/// `unimplemented`), or a request that cannot be right (`invalid_argument`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Unimplemented(String),
    Invalid(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unimplemented(m) | Self::Invalid(m) => f.write_str(m),
        }
    }
}

/// "`what` is not supported by Prism", as `unimplemented`.
pub fn unimplemented(what: &str) -> Refusal {
    Refusal::Unimplemented(format!("{what} is not supported by Prism"))
}

/// The one output of a request: a file, or HLS segments.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OneOutput {
    /// The file's path template (empty for HLS).
    pub filepath: String,
    /// Ogg asked for explicitly (`EncodedFileType::OGG`).
    pub want_ogg: bool,
    /// MP4 asked for explicitly (`EncodedFileType::MP4`).
    pub want_mp4: bool,
    pub segments: Option<SegmentsRequest>,
}

/// The one output of a request: Prism writes one file, or one HLS playlist, per egress.
pub fn one_output(
    deprecated: Option<&lk::EncodedFileOutput>,
    files: &[lk::EncodedFileOutput],
    deprecated_segments: Option<&lk::SegmentedFileOutput>,
    segments: &[lk::SegmentedFileOutput],
    streams: usize,
    images: usize,
) -> Result<OneOutput, Refusal> {
    if streams > 0 {
        return Err(unimplemented(
            "streaming (RTMP, SRT or WebSocket outputs); Prism records to files",
        ));
    }
    if images > 0 {
        return Err(unimplemented("image output (it needs a decoder)"));
    }
    let all: Vec<&lk::EncodedFileOutput> = deprecated.into_iter().chain(files).collect();
    let segs: Vec<&lk::SegmentedFileOutput> =
        deprecated_segments.into_iter().chain(segments).collect();
    match (all.as_slice(), segs.as_slice()) {
        ([f], []) => {
            if f.s3.is_some() {
                return Err(unimplemented(
                    "S3 upload, not yet (recordings go to local storage),",
                ));
            }
            match f.file_type() {
                lk::EncodedFileType::Mp3 => Err(unimplemented("MP3 output (it needs an encoder)")),
                t => Ok(OneOutput {
                    filepath: f.filepath.clone(),
                    want_ogg: t == lk::EncodedFileType::Ogg,
                    want_mp4: t == lk::EncodedFileType::Mp4,
                    segments: None,
                }),
            }
        }
        ([], [s]) => {
            if s.s3.is_some() {
                return Err(unimplemented(
                    "S3 upload, not yet (segments go to local storage),",
                ));
            }
            // SegmentedFileProtocol: 0 is the default (HLS), 1 is HLS_PROTOCOL.
            if s.protocol > 1 {
                return Err(Refusal::Invalid(format!(
                    "segmented file protocol {} is unknown: HLS only",
                    s.protocol
                )));
            }
            Ok(OneOutput {
                segments: Some(SegmentsRequest {
                    filename_prefix: s.filename_prefix.clone(),
                    playlist_name: s.playlist_name.clone(),
                    live_playlist_name: s.live_playlist_name.clone(),
                    segment_duration: s.segment_duration,
                }),
                ..OneOutput::default()
            })
        }
        _ => Err(Refusal::Invalid(
            "exactly one output is required: one file (file_outputs) or one segmented \
             output (segment_outputs)"
                .into(),
        )),
    }
}

/// Every participant that publishes, recorded into one file (or one HLS playlist) each.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoParticipant {
    /// The output; an empty file path or segment prefix templates as
    /// `{room_name}/{publisher_identity}-{time}`.
    pub output: OneOutput,
    /// As asked, for each egress's `EgressInfo.request`.
    pub file_outputs: Vec<lk::EncodedFileOutput>,
    pub segment_outputs: Vec<lk::SegmentedFileOutput>,
}

/// A room's auto-egress, checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AutoEgress {
    pub participant: Option<AutoParticipant>,
    /// Every published track, into this path template (empty:
    /// `{room_name}/{publisher_identity}-{track_id}-{time}`).
    pub tracks: Option<String>,
}

impl AutoEgress {
    /// Checks a `RoomEgress`; `None` if it asks for nothing.
    pub fn from_request(e: &lk::RoomEgress) -> Result<Option<Self>, Refusal> {
        if e.room.is_some() {
            return Err(Refusal::Unimplemented(
                "auto room composite egress (egress.room) is not supported by Prism: a room \
                 composite renders and encodes a layout, and Prism records tracks without \
                 transcoding; use egress.participant (one file per participant) or \
                 egress.tracks (one file per track)"
                    .into(),
            ));
        }
        let participant = match &e.participant {
            Some(p) => Some(AutoParticipant {
                output: one_output(None, &p.file_outputs, None, &p.segment_outputs, 0, 0)?,
                file_outputs: p.file_outputs.clone(),
                segment_outputs: p.segment_outputs.clone(),
            }),
            None => None,
        };
        let tracks = match &e.tracks {
            Some(t) => {
                if t.output.is_some() {
                    return Err(unimplemented(
                        "cloud upload (S3, GCP, Azure, AliOSS) of auto track egress, not yet \
                         (recordings go to local storage),",
                    ));
                }
                Some(t.filepath.clone())
            }
            None => None,
        };
        if participant.is_none() && tracks.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            participant,
            tracks,
        }))
    }

    /// A join token's `roomConfig.egress` (protobuf JSON), for the room that join creates:
    /// `Ok(None)` if it asks for nothing, a refusal if it cannot be read or asks for what
    /// Prism does not do (the caller counts it, warns, and lets the join go on).
    pub fn from_token(claims: &Claims) -> Result<Option<Self>, Refusal> {
        let Some(value) = claims.room_config_egress() else {
            return Ok(None);
        };
        let unreadable = |e: String| Refusal::Invalid(format!("roomConfig.egress: {e}"));
        let desc = crate::twirp::codec::pool()
            .map_err(|e| unreadable(e.to_string()))?
            .get_message_by_name("livekit.RoomEgress")
            .ok_or_else(|| unreadable("no RoomEgress descriptor".into()))?;
        let bytes = serde_json::to_vec(value).map_err(|e| unreadable(e.to_string()))?;
        let e = crate::twirp::codec::json_to_dynamic(&desc, &bytes)
            .map_err(|e| unreadable(e.to_string()))?
            .transcode_to::<lk::RoomEgress>()
            .map_err(|e| unreadable(e.to_string()))?;
        Self::from_request(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> lk::EncodedFileOutput {
        lk::EncodedFileOutput {
            filepath: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_token_room_config_is_read_and_a_bad_one_refused() {
        let mut c = Claims::default();
        assert_eq!(AutoEgress::from_token(&c), Ok(None));
        c.other.insert(
            "roomConfig".into(),
            serde_json::json!({"egress": {"tracks": {"filepath": "{room_name}/{track_id}"}}}),
        );
        let a = AutoEgress::from_token(&c).unwrap().unwrap();
        assert_eq!(a.tracks.as_deref(), Some("{room_name}/{track_id}"));
        assert!(a.participant.is_none());
        c.other.insert(
            "roomConfig".into(),
            serde_json::json!({"egress": {"tracks": {"filepath": 3}}}),
        );
        assert!(matches!(
            AutoEgress::from_token(&c),
            Err(Refusal::Invalid(_))
        ));
        c.other.insert(
            "roomConfig".into(),
            serde_json::json!({"egress": {"room": {"roomName": "x"}}}),
        );
        assert!(matches!(
            AutoEgress::from_token(&c),
            Err(Refusal::Unimplemented(_))
        ));
    }

    #[test]
    fn participant_and_tracks_are_taken_and_a_room_composite_is_refused() {
        let e = lk::RoomEgress {
            participant: Some(lk::AutoParticipantEgress {
                file_outputs: vec![file("{room_name}/{publisher_identity}.webm")],
                ..Default::default()
            }),
            tracks: Some(lk::AutoTrackEgress {
                filepath: "{room_name}/{track_id}".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let a = AutoEgress::from_request(&e).unwrap().unwrap();
        assert_eq!(
            a.participant.unwrap().output.filepath,
            "{room_name}/{publisher_identity}.webm"
        );
        assert_eq!(a.tracks.as_deref(), Some("{room_name}/{track_id}"));
        assert_eq!(
            AutoEgress::from_request(&lk::RoomEgress::default()),
            Ok(None)
        );

        let room = lk::RoomEgress {
            room: Some(lk::RoomCompositeEgressRequest::default()),
            ..e.clone()
        };
        let Err(Refusal::Unimplemented(m)) = AutoEgress::from_request(&room) else {
            panic!("a room composite must be refused");
        };
        assert!(
            m.contains("egress.room") && m.contains("without transcoding"),
            "{m}"
        );

        let upload = lk::RoomEgress {
            tracks: Some(lk::AutoTrackEgress {
                output: Some(lk::auto_track_egress::Output::Gcp(lk::GcpUpload {})),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(
            AutoEgress::from_request(&upload),
            Err(Refusal::Unimplemented(_))
        ));
        let two_files = lk::RoomEgress {
            participant: Some(lk::AutoParticipantEgress {
                file_outputs: vec![file("a"), file("b")],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(
            AutoEgress::from_request(&two_files),
            Err(Refusal::Invalid(_))
        ));
        // HLS, as StartParticipantEgress takes it; but not a file and segments together.
        let segments = lk::SegmentedFileOutput {
            filename_prefix: "{room_name}/{publisher_identity}".into(),
            segment_duration: 2,
            ..Default::default()
        };
        let hls = lk::RoomEgress {
            participant: Some(lk::AutoParticipantEgress {
                segment_outputs: vec![segments.clone()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = AutoEgress::from_request(&hls).unwrap().unwrap().participant;
        let s = p.unwrap().output.segments.expect("segments");
        assert_eq!(s.filename_prefix, "{room_name}/{publisher_identity}");
        assert_eq!(s.segment_duration, 2);
        let both = lk::RoomEgress {
            participant: Some(lk::AutoParticipantEgress {
                file_outputs: vec![file("a")],
                segment_outputs: vec![segments],
            }),
            ..Default::default()
        };
        assert!(matches!(
            AutoEgress::from_request(&both),
            Err(Refusal::Invalid(_))
        ));
    }
}
