//! Identifiers of the room model, as newtypes so that a participant sid cannot be passed
//! where a track sid or an identity is expected, and the media plane's numeric ids cannot
//! be mixed up with each other.

use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<&String> for $name {
            fn from(s: &String) -> Self {
                Self(s.clone())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl From<$name> for String {
            fn from(s: $name) -> Self {
                s.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
    };
}

pub(crate) use string_id;

string_id!(
    /// A room's name, unique on this node (what tokens and the API name).
    RoomName
);
string_id!(
    /// A participant's session id (`PA_…`), unique per session.
    ParticipantSid
);
string_id!(
    /// A participant's identity, from its token; unique within a room.
    Identity
);
string_id!(
    /// A published track's sid (`TR_…`).
    TrackSid
);

macro_rules! media_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u64);

        impl $name {
            /// A fresh id, unique across every kind of media-plane object of this process.
            pub fn fresh() -> Self {
                Self(crate::media::next_id())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

media_id!(
    /// The media plane's id of a room.
    MediaRoomId
);
media_id!(
    /// The media plane's id of a transport (one WebRTC peer connection).
    TransportId
);
media_id!(
    /// The media plane's id of a published track.
    MediaTrackId
);
media_id!(
    /// The media plane's id of one subscriber's copy of a track.
    DownTrackId
);
