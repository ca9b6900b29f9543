//! `prism-bench control`: the control-plane benchmark. It measures a running
//! `prism serve --dev` through LiveKit's client protocol only (WebSocket + protobuf
//! signaling, JWT join tokens, and for data a real WebRTC publisher connection), and
//! compares two server builds in one run, alternating between them.
//!
//! - [`token`]: join tokens; [`session`]: one signaling session without media;
//! - [`sdp`], [`peer`]: a data-channel publisher built from the forwarder's sans-IO parts;
//! - [`joins`], [`relay`], [`offers`]: the scenarios; [`measure`]: their sizes and results;
//! - [`server`]: the servers under test; [`runner`]: the alternation; [`report`]: output;
//! - [`stats`]: histograms, rates and ratios.

pub mod cli;
pub mod joins;
pub mod measure;
pub mod offers;
pub mod peer;
pub mod relay;
pub mod report;
pub mod runner;
pub mod sdp;
pub mod server;
pub mod session;
pub mod stats;
pub mod token;
