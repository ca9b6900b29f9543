//! `livekit.Egress`: recording tracks to files (see `crate::egress`). Every method needs
//! the `roomRecord` grant, as in LiveKit.
//!
//! Served: StartTrackEgress (one track to WebM, Matroska, MP4 or Ogg),
//! StartParticipantEgress and StartTrackCompositeEgress (one participant's audio and
//! video muxed into one file, without compositing, or into HLS segments), ListEgress and
//! StopEgress. Refused with `unimplemented` and a message saying why: room composite and
//! web egress (they need a browser and an encoder), streaming outputs (RTMP, SRT,
//! WebSocket), image outputs, cloud uploads, UpdateLayout and UpdateStream.

use prism_proto::livekit as lk;
use prost::Message;
use prost_reflect::MethodDescriptor;

use super::codec::{self, Codec};
use super::{Code, TwirpError};
use crate::auth::Claims;
use crate::egress::auto::{self, one_output, Refusal};
use crate::egress::Egresses;
use crate::rtc::egress::{EgressRequest, Source};
use crate::rtc::{RoomManager, RoomName, TrackSid};

/// The service's full name, as in the path.
pub const SERVICE: &str = "livekit.Egress";

/// One Egress request, authenticated but not yet decoded.
#[derive(Debug)]
pub struct Call<'a> {
    pub rooms: &'a RoomManager,
    pub egresses: &'a Egresses,
    pub claims: &'a Claims,
    pub codec: Codec,
    pub method: &'a MethodDescriptor,
    pub body: &'a [u8],
}

fn unimplemented(what: &str) -> TwirpError {
    auto::unimplemented(what).into()
}

fn required(what: &str, value: &str) -> Result<(), TwirpError> {
    if value.is_empty() {
        Err(TwirpError::invalid(format!("{what} is required")))
    } else {
        Ok(())
    }
}

impl From<Refusal> for TwirpError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Unimplemented(m) => TwirpError::new(Code::Unimplemented, m),
            Refusal::Invalid(m) => TwirpError::invalid(m),
        }
    }
}

impl Call<'_> {
    fn request<T: Message + Default>(&self) -> Result<T, TwirpError> {
        codec::decode(self.codec, &self.method.input(), self.body)
    }

    fn reply<T: Message>(&self, msg: &T) -> Result<Vec<u8>, TwirpError> {
        codec::encode(self.codec, &self.method.output(), msg)
    }

    async fn start(&self, room: String, req: EgressRequest) -> Result<Vec<u8>, TwirpError> {
        required("room_name", &room)?;
        let egresses = self.egresses.clone();
        let info = self
            .rooms
            .with_room(&RoomName::new(room), move |r| {
                r.start_egress(req, &egresses)
            })
            .await?;
        self.reply(&info)
    }

    /// Runs the method; returns the encoded response.
    pub async fn run(self) -> Result<Vec<u8>, TwirpError> {
        use lk::egress_info::Request as R;
        let name = self.method.name();
        // Decode first (a bad body is `malformed` whatever the grant), then the grant.
        match name {
            "StartTrackEgress" => {
                let req: lk::TrackEgressRequest = self.request()?;
                self.claims.ensure_record()?;
                required("track_id", &req.track_id)?;
                let filepath = match &req.output {
                    Some(lk::track_egress_request::Output::File(f)) => {
                        if f.s3.is_some() {
                            return Err(unimplemented(
                                "S3 upload, not yet (recordings go to local storage),",
                            ));
                        }
                        f.filepath.clone()
                    }
                    Some(lk::track_egress_request::Output::WebsocketUrl(_)) => {
                        return Err(unimplemented("track egress to a WebSocket"))
                    }
                    None => return Err(TwirpError::invalid("a file output is required")),
                };
                let e = EgressRequest {
                    source: Source::Tracks(vec![TrackSid::new(req.track_id.clone())]),
                    want_ogg: filepath.ends_with(".ogg"),
                    want_mp4: false,
                    segments: None,
                    filepath,
                    request: R::Track(req.clone()),
                };
                self.start(req.room_name, e).await
            }
            "StartParticipantEgress" => {
                let req: lk::ParticipantEgressRequest = self.request()?;
                self.claims.ensure_record()?;
                required("identity", &req.identity)?;
                let out = one_output(
                    None,
                    &req.file_outputs,
                    None,
                    &req.segment_outputs,
                    req.stream_outputs.len(),
                    req.image_outputs.len(),
                )?;
                let e = EgressRequest {
                    source: Source::Participant {
                        identity: req.identity.clone(),
                        screen_share: req.screen_share,
                    },
                    filepath: out.filepath,
                    want_ogg: out.want_ogg,
                    want_mp4: out.want_mp4,
                    segments: out.segments,
                    request: R::Participant(req.clone()),
                };
                self.start(req.room_name, e).await
            }
            "StartTrackCompositeEgress" => {
                let req: lk::TrackCompositeEgressRequest = self.request()?;
                self.claims.ensure_record()?;
                let streams = req.stream_outputs.len() + usize::from(req.stream.is_some());
                let out = one_output(
                    req.file.as_ref(),
                    &req.file_outputs,
                    req.segments.as_ref(),
                    &req.segment_outputs,
                    streams,
                    req.image_outputs.len(),
                )?;
                let tracks: Vec<TrackSid> = [&req.video_track_id, &req.audio_track_id]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .map(|s| TrackSid::new(s.clone()))
                    .collect();
                if tracks.is_empty() {
                    return Err(TwirpError::invalid(
                        "audio_track_id or video_track_id is required",
                    ));
                }
                let e = EgressRequest {
                    source: Source::Tracks(tracks),
                    filepath: out.filepath,
                    want_ogg: out.want_ogg,
                    want_mp4: out.want_mp4,
                    segments: out.segments,
                    request: R::TrackComposite(req.clone()),
                };
                self.start(req.room_name, e).await
            }
            "StartRoomCompositeEgress" => {
                let _: lk::RoomCompositeEgressRequest = self.request()?;
                self.claims.ensure_record()?;
                Err(unimplemented(
                    "room composite egress (a layout rendered and encoded); Prism records \
                     tracks without compositing: use StartParticipantEgress or StartTrackEgress",
                ))
            }
            "StartWebEgress" => {
                let _: lk::WebEgressRequest = self.request()?;
                self.claims.ensure_record()?;
                Err(unimplemented(
                    "web egress (it needs a headless browser and an encoder)",
                ))
            }
            "UpdateLayout" => {
                let _: lk::UpdateLayoutRequest = self.request()?;
                self.claims.ensure_record()?;
                Err(unimplemented(
                    "UpdateLayout (Prism does not composite, so there is no layout)",
                ))
            }
            "UpdateStream" => {
                let _: lk::UpdateStreamRequest = self.request()?;
                self.claims.ensure_record()?;
                Err(unimplemented(
                    "UpdateStream (Prism records to files and does not stream)",
                ))
            }
            "ListEgress" => {
                let req: lk::ListEgressRequest = self.request()?;
                self.claims.ensure_record()?;
                let items = self
                    .egresses
                    .list(&req.room_name, &req.egress_id, req.active);
                self.reply(&lk::ListEgressResponse { items })
            }
            "StopEgress" => {
                let req: lk::StopEgressRequest = self.request()?;
                self.claims.ensure_record()?;
                required("egress_id", &req.egress_id)?;
                let (room, done) = match self.egresses.stop(&req.egress_id) {
                    Ok(x) => x,
                    Err(info) if info.egress_id.is_empty() => {
                        return Err(TwirpError::new(Code::NotFound, "egress not found"))
                    }
                    Err(info) => {
                        return Err(TwirpError::new(
                            Code::FailedPrecondition,
                            format!(
                                "egress with status {} cannot be stopped",
                                info.status().as_str_name()
                            ),
                        ))
                    }
                };
                let id = req.egress_id.clone();
                // The room tells the recorder; if the room closed meanwhile, its close
                // already did.
                room.run(move |r| {
                    let _ = r.stop_egress(&id);
                });
                let info = tokio::time::timeout(std::time::Duration::from_secs(30), done)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .or_else(|| self.egresses.get(&req.egress_id))
                    .ok_or_else(|| TwirpError::internal("the egress vanished"))?;
                self.reply(&info)
            }
            other => Err(TwirpError::new(
                Code::Unimplemented,
                format!("{SERVICE}/{other} is not implemented"),
            )),
        }
    }
}
