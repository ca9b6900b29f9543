//! What can go wrong in the room model, as one enum. The edges map it: to an HTTP status
//! and plain text for `/rtc` and WHIP/WHEP ([`RtcError::http_status`]), and to a Twirp code
//! for RoomService (`crate::twirp`). Room code never builds an HTTP or Twirp error itself.

use std::fmt;

use crate::auth::AuthError;

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtcError {
    /// The token was refused.
    Auth(AuthError),
    RoomNotFound,
    ParticipantNotFound,
    TrackNotFound,
    /// A WHIP/WHEP resource that does not exist (or no longer does).
    SessionNotFound,
    /// `max_participants` reached.
    RoomFull,
    /// The server is shutting down.
    ShuttingDown,
    /// The room closed while the request was on its way; the caller may retry on a new one.
    RoomClosed,
    /// A session description that cannot be parsed or answered.
    BadDescription(String),
    /// A request that is not allowed by the participant's grants.
    NotAllowed(&'static str),
    /// A request field out of range.
    Invalid(String),
    /// A precondition the request needs does not hold (remote unmute disabled, …).
    FailedPrecondition(&'static str),
    /// A WHEP viewer asked for a room (or participant, or track) with nothing published.
    NothingPublished(String),
    /// The viewer's offer has no section that can receive what is published.
    NoReceivingSection,
    /// The media plane refused or failed a command.
    MediaPlane(String),
}

impl RtcError {
    /// The HTTP status this error is answered with on `/rtc` and WHIP/WHEP.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Auth(e) => e.status().0,
            Self::RoomNotFound
            | Self::ParticipantNotFound
            | Self::TrackNotFound
            | Self::SessionNotFound
            | Self::NothingPublished(_) => 404,
            Self::RoomFull | Self::NotAllowed(_) => 403,
            Self::ShuttingDown | Self::RoomClosed => 503,
            Self::BadDescription(_) | Self::Invalid(_) => 400,
            Self::FailedPrecondition(_) => 412,
            Self::NoReceivingSection => 409,
            Self::MediaPlane(_) => 500,
        }
    }
}

impl fmt::Display for RtcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auth(e) => f.write_str(&e.status().1),
            // LiveKit's wording, which its server SDKs show to users.
            Self::RoomNotFound => f.write_str("requested room does not exist"),
            Self::ParticipantNotFound => f.write_str("participant does not exist"),
            Self::TrackNotFound => f.write_str("track is not found"),
            Self::SessionNotFound => f.write_str("no such session"),
            Self::RoomFull => f.write_str("the room is full"),
            Self::ShuttingDown => f.write_str("the server is shutting down"),
            Self::RoomClosed => f.write_str("the room closed"),
            Self::BadDescription(e) => f.write_str(e),
            Self::NotAllowed(e) | Self::FailedPrecondition(e) => f.write_str(e),
            Self::Invalid(e) => f.write_str(e),
            Self::NothingPublished(what) => write!(f, "nothing is published in {what}"),
            Self::NoReceivingSection => {
                f.write_str("the offer has no receiving section for the published tracks")
            }
            Self::MediaPlane(e) => write!(f, "media plane: {e}"),
        }
    }
}

impl std::error::Error for RtcError {}

impl From<AuthError> for RtcError {
    fn from(e: AuthError) -> Self {
        Self::Auth(e)
    }
}

impl From<crate::sdp::SdpError> for RtcError {
    fn from(e: crate::sdp::SdpError) -> Self {
        Self::BadDescription(e.to_string())
    }
}
