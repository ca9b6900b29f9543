//! The seam between the sans-IO engine and the I/O drivers: where outgoing datagrams go.
//!
//! The engine decides what to send; a driver (`io::uring`, `io::mmsg`) or a test collector
//! (`testing::CollectEgress`) decides how. Both sides depend on this module and on nothing of
//! each other, so the engine never imports `io` (the one module allowed `unsafe`), and a
//! test can drive the engine with an egress that only records what it was given.
//!
//! The size limits live here too because both sides must agree on them: the engine sizes
//! its header scratch by [`HEAD_CAP`] and checks that a copy fits in [`MAX_DATAGRAM`]; the
//! drivers size their receive buffers and send slots by the same numbers.

use std::net::SocketAddr;
use std::ops::Range;

/// Largest datagram received or sent. Larger datagrams are truncated by the kernel and
/// dropped by the driver as `Oversized`.
pub const MAX_DATAGRAM: usize = 2048;

/// Largest `head` accepted by [`Egress::send_split`]: an RTP header with CSRCs and header
/// extensions plus a codec payload descriptor.
pub const HEAD_CAP: usize = 256;

/// Where the engine queues the datagrams to send in the current loop turn.
pub trait Egress {
    /// Queue a datagram made of `head` (copied) followed by `body`, a byte range of the
    /// datagram currently being handled (shared with the kernel, not copied, where the
    /// driver can). Returns false, sending nothing, if the turn's send queue is full and
    /// could not be flushed, `head` is longer than [`HEAD_CAP`], `body` is out of range or
    /// no datagram is being handled.
    fn send_split(&mut self, to: SocketAddr, head: &[u8], body: Range<usize>) -> bool;

    /// Queue a datagram written by `fill` into a slot of [`MAX_DATAGRAM`] bytes; `fill`
    /// returns the length written (0 cancels the send). Returns false if nothing was queued.
    fn send_with(&mut self, to: SocketAddr, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> bool;

    /// The address the peer at `from` is told it has (STUN XOR-MAPPED-ADDRESS): `from`
    /// itself, except for a peer behind a front (`crate::tunnel`), whose virtual address
    /// stands for a real one.
    fn mapped_address(&self, from: SocketAddr) -> SocketAddr {
        from
    }
}

/// Queues a copy of `data` to `to` (slow path: STUN replies, DTLS records).
pub fn send_bytes<E: Egress + ?Sized>(eg: &mut E, to: SocketAddr, data: &[u8]) -> bool {
    eg.send_with(
        to,
        &mut |slot: &mut [u8]| match slot.get_mut(..data.len()) {
            Some(s) => {
                s.copy_from_slice(data);
                data.len()
            }
            None => 0,
        },
    )
}
