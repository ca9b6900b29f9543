//! Prism's media plane: a thread-per-core packet forwarder.
//!
//! Layers, from the bytes up:
//! - [`wire`]: borrowed, in-place-rewritable views of RTP, RTCP and STUN.
//! - [`codec`]: keyframe/layer detection and payload-descriptor rewriting.
//! - [`engine`]: sans-IO forwarding state (tracks, down tracks, simulcast selection,
//!   retransmission cache), driven by `(now, bytes)`.
//! - [`egress`]: the seam between the two: the trait the engine sends through and the
//!   datagram size limits both sides agree on.
//! - [`io`]: the only place that talks to the kernel (io_uring, or recvmmsg/sendmmsg).
//! - [`control`]: commands and events between signaling and the cores.
//! - [`runtime`]: the pinned worker threads and the router that places rooms on cores.
//! - [`tunnel`]: peers that reach a core through a user-space front (ICE over TCP) under a
//!   virtual address.
//!
//! Unsafe code is denied everywhere except `io`.

pub mod bpf;
pub mod codec;
pub mod control;
pub mod dtls;
pub mod egress;
pub mod engine;
pub mod ice;
pub mod ids;
pub mod io;
pub mod runtime;
pub mod sctp;
pub mod srtp;
pub mod testing;
pub mod tunnel;
pub mod turn;
pub mod wire;
