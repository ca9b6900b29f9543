//! Active speakers: the media plane meters speech on each audio track (audio level
//! extension) and reports changes; the room turns them into `speakers_changed` deltas
//! (LiveKit's form since protocol 3: only who changed, `active=false` when someone stops).

use prism_proto::control as pb;
use prism_proto::livekit as lk;

use lk::signal_response::Message as Resp;

use super::ids::MediaTrackId;
use super::participant::Participant;
use super::room::Room;

fn loudest(p: &Participant) -> Option<f32> {
    p.speaking.values().copied().reduce(f32::max)
}

impl Room {
    /// A published audio track started or stopped carrying speech.
    pub(crate) fn on_audio_level(&mut self, a: &pb::AudioLevel) {
        tracing::debug!(
            track = a.track_id,
            speaking = a.speaking,
            level = a.level,
            "audio level"
        );
        let track = MediaTrackId(a.track_id);
        let Some(p) = self
            .participants
            .iter_mut()
            .find(|p| p.tracks.iter().any(|t| t.track_id == track))
        else {
            return;
        };
        let before = loudest(p);
        if a.speaking {
            p.speaking.insert(track, a.level);
        } else {
            p.speaking.remove(&track);
        }
        let after = loudest(p);
        if before == after || p.permission.hidden {
            return;
        }
        let info = lk::SpeakerInfo {
            sid: p.sid.to_string(),
            level: after.unwrap_or(0.0),
            active: after.is_some(),
        };
        self.send_all(
            &Resp::SpeakersChanged(lk::SpeakersChanged {
                speakers: vec![info],
            }),
            None,
        );
    }

    /// Who is speaking now, for a newcomer.
    pub(crate) fn current_speakers(&self) -> Vec<lk::SpeakerInfo> {
        self.participants
            .iter()
            .filter(|q| !q.permission.hidden)
            .filter_map(|q| {
                Some(lk::SpeakerInfo {
                    sid: q.sid.to_string(),
                    level: loudest(q)?,
                    active: true,
                })
            })
            .collect()
    }
}
