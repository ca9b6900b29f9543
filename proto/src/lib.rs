//! Prism's protocol messages, generated from `protos/*.proto` at build time.
//!
//! - [`control`]: commands and events between signaling and the media plane.
//! - [`livekit`]: the subset of LiveKit's client protocol (`/rtc` signaling) and server API
//!   (RoomService) that Prism speaks, with LiveKit's field numbers.

/// The media-plane control protocol (`protos/control.proto`).
#[allow(missing_debug_implementations, clippy::all)]
pub mod control {
    include!(concat!(env!("OUT_DIR"), "/prism.control.rs"));
}

/// LiveKit's signaling and RoomService messages (`protos/livekit_*.proto`).
#[allow(missing_debug_implementations, clippy::all)]
pub mod livekit {
    include!(concat!(env!("OUT_DIR"), "/livekit.rs"));
}

/// The encoded `FileDescriptorSet` of every .proto file here, for protobuf's JSON mapping
/// (Twirp JSON bodies) through reflection.
pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
