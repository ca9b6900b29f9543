//! Prism's control plane: join tokens, rooms and participants, the signaling protocols
//! (LiveKit's client protocol, WHIP/WHEP) and the server API (LiveKit's RoomService over
//! Twirp). It never touches a media
//! packet: it drives the media plane (`prism-forwarder`) with control commands.

pub mod agent;
pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod egress;
pub mod external_ip;
pub mod http;
pub mod ingress;
pub mod livekit;
pub mod media;
pub mod metrics;
pub mod rtc;
pub mod sdp;
pub mod server;
pub mod twirp;
pub mod web;
pub mod whip;
