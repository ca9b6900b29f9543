//! Prism's control plane: signaling, rooms, and session descriptions.
//!
//! This crate never touches a media packet. So far it holds [`sdp`]: parsing the offers
//! that browsers, aiortc and the LiveKit SDKs send, and building the ICE-lite answers and
//! server-side offers that go back to them.

pub mod sdp;
