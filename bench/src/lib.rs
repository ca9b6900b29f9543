//! `prism-bench`: the end-to-end load benchmark of Prism's media plane.
//!
//! One process (pinned to its own CPU) is both the load generator and every subscriber's
//! sink; the system under test runs as another process pinned to another CPU, so its CPU
//! time and memory can be read from `/proc` and nothing it does is billed to the load.
//!
//! - [`payload`]: the trailer every generated packet carries (stream, sequence, send time),
//!   so loss and latency are measured independently of what the forwarder rewrites;
//! - [`accounting`]: per-stream continuity (loss, duplicates, reordering) and latency;
//! - [`source`], [`generator`], [`sink`]: publishers and subscribers on real UDP sockets;
//! - [`srtp`]: per-endpoint SRTP keys and contexts, when the system under test runs SRTP;
//! - [`scenario`]: the traffic shapes of the suite; [`sut`]: the systems measured;
//! - [`runner`]: trials, the search over offered load; [`report`], [`plot`]: the output;
//! - [`control`]: the control-plane benchmark (`prism-bench control`), a separate suite
//!   that drives `prism serve` through LiveKit's client protocol.
//! - [`icetcp`]: `prism-bench ice-tcp`, the forwarder's cost per packet through ICE over
//!   TCP against UDP.
//! - [`record`]: `prism-bench record`, what recording (Egress) costs the forwarder, and
//!   the recorder's CPU per recorded packet.
//! - [`veth`]: `prism-bench veth`, the three I/O drivers (AF_XDP included) over a veth
//!   pair between two network namespaces.

pub mod accounting;
pub mod clock;
pub mod control;
pub mod generator;
pub mod icetcp;
pub mod load;
pub mod machine;
pub mod payload;
pub mod plot;
pub mod record;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod sink;
pub mod source;
pub mod srtp;
pub mod sut;
pub mod turn;
pub mod veth;
