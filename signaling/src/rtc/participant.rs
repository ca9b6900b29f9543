//! A participant of a room and its transports, whatever way it came in: a LiveKit SDK
//! session (signaling on a WebSocket, a publisher and a subscriber transport), a WHIP
//! publisher (kind `INGRESS`, one receiving transport) or a WHEP viewer (one sending
//! transport, set up once from its offer). One type for all three, so that RoomService,
//! the status page and the other participants see them alike.

use std::collections::HashMap;

use prism_proto::livekit as lk;
use tokio::sync::mpsc;

use lk::signal_response::Message as Resp;

use super::ids::{DownTrackId, Identity, MediaTrackId, ParticipantSid, TrackSid, TransportId};
use crate::sdp::{CodecParams, MediaKind};

/// What a room sends a LiveKit session.
#[derive(Debug)]
pub enum Out {
    Signal(Box<lk::SignalResponse>),
    /// A `SignalResponse` encoded once for many sessions (a room's batched participant
    /// update): each session writes the same bytes.
    Encoded(bytes::Bytes),
    /// Close the WebSocket with this reason (after any queued message).
    Close(String),
}

/// How the participant is reached.
#[derive(Debug)]
pub enum Link {
    /// A LiveKit SDK session: the queue its WebSocket drains.
    Signal(mpsc::Sender<Out>),
    /// A WHIP publisher or WHEP viewer: nothing to signal after the HTTP exchange. The
    /// resource id is the last segment of its `Location`.
    Http { resource: String },
}

/// A track a participant announced with `add_track`, not yet seen in an offer.
#[derive(Debug, Clone)]
pub struct PendingTrack {
    pub req: lk::AddTrackRequest,
    pub sid: TrackSid,
}

/// A published track.
#[derive(Debug, Clone)]
pub struct PubTrack {
    pub info: lk::TrackInfo,
    pub track_id: MediaTrackId,
    pub kind: MediaKind,
    pub codec: CodecParams,
    /// Whether the publisher has been told of a first subscriber (`TrackSubscribed`).
    pub told_subscribed: bool,
    /// The command that published it, the template of its copies on other sites.
    pub add: Option<Box<prism_proto::control::AddTrack>>,
}

impl PubTrack {
    pub fn sid(&self) -> TrackSid {
        TrackSid::new(self.info.sid.clone())
    }
}

/// The publisher transport (the client offers).
#[derive(Debug)]
pub struct PubPc {
    pub transport_id: TransportId,
    pub ufrag: String,
    pub pwd: String,
    /// The client's ICE ufrag: a re-offer with another one is an ICE restart.
    pub remote_ufrag: String,
    pub session_id: u64,
    pub version: u64,
    /// mid → track sid, for sections already published.
    pub mids: HashMap<String, TrackSid>,
}

/// One m-section of a subscriber transport.
#[derive(Debug, Clone)]
pub struct SubSection {
    pub mid: String,
    pub kind: MediaKind,
    /// The track sent here; `None` once unsubscribed (the section stays, inactive).
    pub track: Option<SubTrack>,
    /// Whether an inactive section's removal has been answered, so it may carry a new
    /// track.
    pub reusable: bool,
}

#[derive(Debug, Clone)]
pub struct SubTrack {
    pub track_sid: TrackSid,
    pub publisher_sid: ParticipantSid,
    pub track_id: MediaTrackId,
    pub ssrc: u32,
    /// The RTX stream offered with video (RFC 4588): lost packets are resent on it when the
    /// subscriber accepts it, else on the media stream itself.
    pub rtx_ssrc: Option<u32>,
    pub codec: CodecParams,
    pub down_track_id: Option<DownTrackId>,
    /// Spatial layer the subscriber asked for (UpdateTrackSettings), highest by default.
    pub spatial: u32,
    pub paused: bool,
}

/// The subscriber transport (Prism offers; a WHEP viewer's is answered once instead).
#[derive(Debug)]
pub struct SubPc {
    pub transport_id: Option<TransportId>,
    pub ufrag: String,
    pub pwd: String,
    pub session_id: u64,
    pub version: u64,
    pub sections: Vec<SubSection>,
    pub next_mid: u32,
    pub last_offer_id: u32,
    pub in_flight: bool,
    pub dirty: bool,
}

impl SubPc {
    pub fn new() -> Self {
        Self {
            transport_id: None,
            ufrag: crate::media::random_ice_string(8),
            pwd: crate::media::random_ice_string(24),
            session_id: u64::from(crate::media::random_u32()),
            version: 0,
            sections: Vec::new(),
            next_mid: 0,
            last_offer_id: 0,
            in_flight: false,
            dirty: false,
        }
    }

    /// The section carrying `track`, if subscribed.
    pub fn section_of(&self, track: &TrackSid) -> Option<&SubSection> {
        self.sections
            .iter()
            .find(|s| s.track.as_ref().is_some_and(|t| &t.track_sid == track))
    }
}

impl Default for SubPc {
    fn default() -> Self {
        Self::new()
    }
}

/// A participant of a room.
#[derive(Debug)]
pub struct Participant {
    pub sid: ParticipantSid,
    pub identity: Identity,
    pub name: String,
    pub metadata: String,
    pub attributes: HashMap<String, String>,
    pub kind: lk::participant_info::Kind,
    pub joined_at_ms: i64,
    pub version: u32,
    pub state: lk::participant_info::State,
    pub permission: lk::ParticipantPermission,
    pub client_protocol: i32,
    pub auto_subscribe: bool,
    pub tracks: Vec<PubTrack>,
    /// Who may subscribe to this participant's tracks (`None`: everyone).
    pub allowed: Option<lk::SubscriptionPermission>,
    /// Tracks this participant asked for (or would take automatically) but may not
    /// receive yet: subscribed as soon as their publisher allows it.
    pub wanted: Vec<TrackSid>,
    /// Audio tracks carrying speech now, with their levels.
    pub speaking: HashMap<MediaTrackId, f32>,
    pub pending: Vec<PendingTrack>,
    pub publisher: Option<PubPc>,
    pub subscriber: SubPc,
    pub link: Link,
    /// The room site its transports live on (0: this node's forwarder; see `sites`).
    pub site: usize,
}

impl Participant {
    pub fn info(&self) -> lk::ParticipantInfo {
        lk::ParticipantInfo {
            sid: self.sid.to_string(),
            identity: self.identity.to_string(),
            state: self.state as i32,
            tracks: self.tracks.iter().map(|t| t.info.clone()).collect(),
            metadata: self.metadata.clone(),
            joined_at: self.joined_at_ms / 1000,
            joined_at_ms: self.joined_at_ms,
            name: self.name.clone(),
            version: self.version,
            permission: Some(self.permission.clone()),
            is_publisher: !self.tracks.is_empty(),
            kind: self.kind as i32,
            attributes: self.attributes.clone(),
            client_protocol: self.client_protocol,
            ..Default::default()
        }
    }

    /// Queues a signaling message. False when the session is too far behind (its queue is
    /// full). A session that already ended takes nothing and reports true: its departure
    /// is on its way to the room. Participants without signaling take nothing too.
    pub fn send(&self, msg: Resp) -> bool {
        self.queue(Out::Signal(Box::new(lk::SignalResponse {
            message: Some(msg),
        })))
    }

    /// Queues a message already encoded (shared by several sessions); as [`Self::send`].
    pub fn send_encoded(&self, msg: &bytes::Bytes) -> bool {
        self.queue(Out::Encoded(msg.clone()))
    }

    fn queue(&self, out: Out) -> bool {
        match &self.link {
            Link::Signal(tx) => {
                !matches!(tx.try_send(out), Err(mpsc::error::TrySendError::Full(_)))
            }
            Link::Http { .. } => true,
        }
    }

    /// Asks the session to close its WebSocket with `text`.
    pub fn close_signal(&self, text: String) {
        if let Link::Signal(out) = &self.link {
            let _ = out.try_send(Out::Close(text));
        }
    }

    /// Whether this is a LiveKit SDK session (signaling, data channels, renegotiation).
    pub fn has_signal(&self) -> bool {
        matches!(self.link, Link::Signal(_))
    }

    /// The WHIP/WHEP resource id, for an HTTP participant.
    pub fn resource(&self) -> Option<&str> {
        match &self.link {
            Link::Http { resource } => Some(resource),
            Link::Signal(_) => None,
        }
    }

    /// Transports of this participant, for cleanup and the status page.
    pub fn transport_ids(&self) -> Vec<TransportId> {
        self.publisher
            .as_ref()
            .map(|p| p.transport_id)
            .into_iter()
            .chain(self.subscriber.transport_id)
            .collect()
    }

    /// Sids of the tracks this participant receives, for the status page.
    pub fn subscribed_track_sids(&self) -> Vec<String> {
        self.subscriber
            .sections
            .iter()
            .filter_map(|s| s.track.as_ref().map(|t| t.track_sid.to_string()))
            .collect()
    }

    /// The published track with this sid.
    pub fn track(&self, sid: &TrackSid) -> Option<&PubTrack> {
        self.tracks.iter().find(|t| t.info.sid == sid.as_str())
    }

    /// Whether `sub` may subscribe to `track` of this participant.
    pub fn allows(&self, sub: &Participant, track: &TrackSid) -> bool {
        let Some(perm) = &self.allowed else {
            return true;
        };
        if perm.all_participants {
            return true;
        }
        perm.track_permissions.iter().any(|tp| {
            let who = (!tp.participant_sid.is_empty() && sub.sid == *tp.participant_sid.as_str())
                || (!tp.participant_identity.is_empty()
                    && sub.identity == *tp.participant_identity.as_str());
            who && (tp.all_tracks || tp.track_sids.iter().any(|t| t == track.as_str()))
        })
    }
}
