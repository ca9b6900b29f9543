//! Prism's protocol messages, generated from `protos/*.proto` at build time.
//!
//! - [`control`]: commands and events between signaling and the media plane.

/// The media-plane control protocol (`protos/control.proto`).
#[allow(missing_debug_implementations, clippy::all)]
pub mod control {
    include!(concat!(env!("OUT_DIR"), "/prism.control.rs"));
}
