//! LiveKit's client protocol: an application written for LiveKit (its JS, Python, Rust and
//! mobile SDKs, its tokens, its server SDKs) works against Prism unchanged.
//!
//! Shape, as LiveKit's own server does it in dual-PeerConnection mode:
//! - A client opens a WebSocket on `/rtc` with its join token. The token is checked, and the
//!   participant joins its room, *before* the upgrade, so that refusals reach the client as
//!   HTTP statuses (401, 400, 404). The first message on the socket is the `JoinResponse`.
//! - Each participant has two WebRTC transports: the *publisher*, which the client offers
//!   (with its `_reliable`/`_lossy` data channels) right after joining, and the
//!   *subscriber*, which Prism offers whenever there is something new to send.
//!   `subscriber_primary` is false, so clients wait only for their publisher connection,
//!   and data packets from Prism travel on the channels the client opened.
//! - `add_track` is answered with `track_published` at once; the track's media section in
//!   the next publisher offer is matched to it by the msid track id (the client's `cid`).
//! - Every transport, track and subscription becomes a command to the room's core (see
//!   `prism_proto::control`); events come back (connected, closed, data). Signaling never
//!   touches a media packet.
//!
//! Concurrency: each room is a task of its own (`crate::rtc`). A WebSocket session
//! ([`ws`]) sends its requests to its room's task and drains the queue the room fills;
//! answers from the media plane come back to the room as events, so no room ever waits
//! on the media plane or on another room.

pub mod ws;

/// The server version announced to clients. SDKs parse it as semver and enable features
/// (RPC needs ≥ 1.8.0) by it, so it is the LiveKit server version whose behaviour Prism
/// follows, not Prism's own.
pub const SERVER_VERSION: &str = "1.9.0";

/// The newest client protocol version Prism speaks (current SDKs send 16 or 17).
pub const PROTOCOL_VERSION: i32 = 17;

/// Seconds between client pings, and without any message before a client gives up. Both
/// must be non-zero: the Rust SDK builds a timer from each.
pub const PING_INTERVAL_S: i32 = 5;
pub const PING_TIMEOUT_S: i32 = 15;
