//! Tunnels: peers that reach a core through a user-space *front* instead of the core's UDP
//! socket. ICE over TCP (RFC 6544, [`ice_tcp`]) is the first front; an embedded TURN server
//! is meant to be the second, through the same seam.
//!
//! Why a seam and not a second kind of transport: the engine maps peers by `SocketAddr`
//! (`routes.by_addr`) and sends through an [`Egress`] to a `SocketAddr`. A tunnelled peer
//! gets a *virtual* address ([`virtual_addr`]: IPv6 in the RFC 6666 discard-only prefix
//! `100::/64`, with the front's kind and a never-reused connection id in the low 64 bits),
//! so ICE, DTLS, SRTP and SCTP run unchanged and the engine learns nothing new.
//!
//! Per core and per front there are two bounded queues of pooled, fixed-size datagrams
//! ([`queue`]): front → core (the worker drains it every turn and calls
//! `Engine::handle_datagram(now, virtual_addr, ..)`) and core → front (the worker's
//! [`TunnelEgress`] recognises a virtual destination and fills a pooled slot instead of
//! the UDP send queue). Slots circulate between a `full` and a `free` channel, so nothing
//! is allocated per datagram; a full queue drops the datagram and counts it. Each side
//! wakes the other once per batch (the core's driver [`Waker`], the front's own waker),
//! never once per datagram.
//!
//! A front decides which core a new connection belongs to. For ICE the first STUN check's
//! USERNAME names our local ufrag, and the router records which core owns each ufrag in
//! [`IceRoutes`] (written by the router on `CreateWebrtcTransport` / `RestartIce`, read by
//! fronts only when a connection is new).

pub mod framing;
pub mod ice_tcp;

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crossbeam_channel::{bounded, Receiver, Sender};
use prism_proto::control as pb;

use crate::egress::{Egress, MAX_DATAGRAM};
use crate::io::Waker;

/// Which front a virtual address belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum FrontKind {
    /// ICE over TCP, RFC 4571 framing ([`ice_tcp`]).
    IceTcp = 1,
    /// Reserved for an embedded TURN server.
    Turn = 2,
}

impl FrontKind {
    pub fn name(self) -> &'static str {
        match self {
            FrontKind::IceTcp => "ice_tcp",
            FrontKind::Turn => "turn",
        }
    }

    fn from_u16(v: u16) -> Option<Self> {
        match v {
            1 => Some(FrontKind::IceTcp),
            2 => Some(FrontKind::Turn),
            _ => None,
        }
    }
}

/// The largest connection id a virtual address holds (48 bits).
pub const MAX_CONN_ID: u64 = (1 << 48) - 1;
/// The port of every virtual address (discard); only the IP carries meaning.
const VIRTUAL_PORT: u16 = 9;

/// The virtual address of connection `conn` (taken modulo 2^48) of a front of `kind`:
/// `100::<kind>:<conn 48 bits>`, port 9. RFC 6666 reserves `100::/64` for discarding, so
/// the address can never be a real peer's.
pub fn virtual_addr(kind: FrontKind, conn: u64) -> SocketAddr {
    let c = conn & MAX_CONN_ID;
    let ip = Ipv6Addr::new(
        0x0100,
        0,
        0,
        0,
        kind as u16,
        (c >> 32) as u16,
        (c >> 16) as u16,
        c as u16,
    );
    SocketAddr::V6(SocketAddrV6::new(ip, VIRTUAL_PORT, 0, 0))
}

/// The largest allocation id an IPv4 virtual address holds (44 bits).
pub const MAX_V4_CONN_ID: u64 = (1 << 44) - 1;

/// The IPv4 virtual address of TURN allocation `conn` (modulo 2^44): `240.0.0.0/4`
/// (reserved, never assigned or routed, RFC 1112 §4) with the low 28 bits of the address
/// and the 16 bits of the port holding the id.
///
/// TURN needs IPv4 ones: the engine answers a client's ICE checks with the address it saw
/// them come from, and the client compares that with its relayed address. Giving the
/// client this very address as XOR-RELAYED-ADDRESS makes the two match (a `relay`
/// candidate, not a peer-reflexive one) for an IPv4 allocation.
pub fn virtual_addr_v4(conn: u64) -> SocketAddr {
    let c = conn & MAX_V4_CONN_ID;
    let ip = 0xF000_0000u32 | ((c >> 16) as u32 & 0x0FFF_FFFF);
    SocketAddr::V4(std::net::SocketAddrV4::new(ip.into(), c as u16))
}

/// Whether `addr` is a virtual address (any front).
#[inline]
pub fn is_virtual(addr: &SocketAddr) -> bool {
    match addr {
        SocketAddr::V6(a) => {
            let s = a.ip().segments();
            s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0
        }
        SocketAddr::V4(a) => a.ip().octets()[0] & 0xF0 == 0xF0,
    }
}

/// The front kind and connection id of a virtual address.
pub fn parse_virtual(addr: &SocketAddr) -> Option<(FrontKind, u64)> {
    if !is_virtual(addr) {
        return None;
    }
    let a = match addr {
        SocketAddr::V6(a) => a,
        SocketAddr::V4(a) => {
            let ip = u32::from(*a.ip()) & 0x0FFF_FFFF;
            return Some((FrontKind::Turn, (u64::from(ip) << 16) | u64::from(a.port())));
        }
    };
    let s = a.ip().segments();
    let kind = FrontKind::from_u16(s[4])?;
    let conn = (u64::from(s[5]) << 32) | (u64::from(s[6]) << 16) | u64::from(s[7]);
    Some((kind, conn))
}

/// One pooled datagram: a fixed buffer of [`MAX_DATAGRAM`] bytes, its length and the
/// virtual address of the peer it comes from or goes to.
#[derive(Debug)]
pub struct Datagram {
    pub peer: SocketAddr,
    /// Toward a core: the peer's real address as the front sees it (what ICE tells the
    /// peer its address is). Toward a front: the same as `peer`.
    pub origin: SocketAddr,
    len: usize,
    buf: Box<[u8; MAX_DATAGRAM]>,
}

impl Datagram {
    fn new() -> Self {
        Self {
            peer: virtual_addr(FrontKind::IceTcp, 0),
            origin: virtual_addr(FrontKind::IceTcp, 0),
            len: 0,
            buf: Box::new([0u8; MAX_DATAGRAM]),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }
}

/// The producing end of a queue of pooled datagrams.
#[derive(Debug)]
pub struct QueueTx {
    full: Sender<Datagram>,
    free: Receiver<Datagram>,
    recycle: Sender<Datagram>,
}

/// The consuming end of a queue of pooled datagrams.
#[derive(Debug)]
pub struct QueueRx {
    full: Receiver<Datagram>,
    free: Sender<Datagram>,
}

/// A queue of `capacity` pooled datagrams, all allocated here. Both channels hold every
/// slot at most once, so no send on them can fail for want of room.
pub fn queue(capacity: usize) -> (QueueTx, QueueRx) {
    let capacity = capacity.max(1);
    let (full_tx, full_rx) = bounded(capacity);
    let (free_tx, free_rx) = bounded(capacity);
    for _ in 0..capacity {
        let _ = free_tx.send(Datagram::new());
    }
    (
        QueueTx {
            full: full_tx,
            free: free_rx,
            recycle: free_tx.clone(),
        },
        QueueRx {
            full: full_rx,
            free: free_tx,
        },
    )
}

impl QueueTx {
    /// Copies `data` from `peer` (virtual; really at `origin`) into a free slot and queues
    /// it. False if no slot is free (the consumer is behind) or `data` is too long;
    /// nothing is queued then.
    pub fn push(&self, peer: SocketAddr, origin: SocketAddr, data: &[u8]) -> bool {
        self.push_inner(peer, origin, &mut |slot| {
            slot.get_mut(..data.len()).map_or(0, |s| {
                s.copy_from_slice(data);
                data.len()
            })
        })
    }

    /// Like [`QueueTx::push`], with the bytes written by `fill` (which returns the length;
    /// 0 cancels).
    pub fn push_with(&self, peer: SocketAddr, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        self.push_inner(peer, peer, fill)
    }

    fn push_inner(
        &self,
        peer: SocketAddr,
        origin: SocketAddr,
        fill: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> bool {
        let Ok(mut d) = self.free.try_recv() else {
            return false;
        };
        let n = fill(&mut d.buf[..]).min(MAX_DATAGRAM);
        if n == 0 {
            let _ = self.recycle.try_send(d);
            return false;
        }
        d.len = n;
        d.peer = peer;
        d.origin = origin;
        // Cannot fail: the channel has room for every slot there is.
        let _ = self.full.try_send(d);
        true
    }
}

impl QueueRx {
    pub fn pop(&self) -> Option<Datagram> {
        self.full.try_recv().ok()
    }

    /// Gives a slot back to the producer's pool.
    pub fn recycle(&self, d: Datagram) {
        let _ = self.free.try_send(d);
    }

    pub fn is_empty(&self) -> bool {
        self.full.is_empty()
    }
}

/// Datagrams in each direction between one front and one core.
pub const QUEUE_CAPACITY: usize = 2048;

/// One front's link to one core, as the front holds it.
pub struct FrontEnd {
    /// Front → core.
    pub inbound: QueueTx,
    /// Core → front.
    pub outbound: QueueRx,
    /// Wakes the core (its driver's waker); set once the core is up.
    pub wake_core: Option<Arc<dyn Waker>>,
}

impl std::fmt::Debug for FrontEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontEnd").finish_non_exhaustive()
    }
}

/// One front's link to one core, as the core holds it.
pub struct CoreEnd {
    pub kind: FrontKind,
    pub inbound: QueueRx,
    pub outbound: QueueTx,
    pub wake_front: Arc<dyn Waker>,
    pub counters: Arc<FrontCounters>,
}

impl std::fmt::Debug for CoreEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreEnd")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// A front's link to one core: both ends.
pub fn link(
    kind: FrontKind,
    capacity: usize,
    wake_front: Arc<dyn Waker>,
    counters: Arc<FrontCounters>,
) -> (FrontEnd, CoreEnd) {
    let (in_tx, in_rx) = queue(capacity);
    let (out_tx, out_rx) = queue(capacity);
    (
        FrontEnd {
            inbound: in_tx,
            outbound: out_rx,
            wake_core: None,
        },
        CoreEnd {
            kind,
            inbound: in_rx,
            outbound: out_tx,
            wake_front,
            counters,
        },
    )
}

/// Why a front closed a connection. Counted per front and exposed through `GetStats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed it (or reset it).
    PeerClosed,
    /// The first frame was not a STUN binding request: not an ICE peer.
    Garbage,
    /// A frame longer than the largest datagram accepted.
    FrameTooLarge,
    /// No core answered (no valid ICE check) within the handshake timeout.
    HandshakeTimeout,
    /// Nothing received for the idle timeout after the connection was established.
    IdleTimeout,
    /// Refused at accept: the front already holds its maximum of connections.
    TooManyConnections,
    /// A socket error other than a reset.
    IoError,
}

impl CloseReason {
    pub const ALL: [CloseReason; 7] = [
        CloseReason::PeerClosed,
        CloseReason::Garbage,
        CloseReason::FrameTooLarge,
        CloseReason::HandshakeTimeout,
        CloseReason::IdleTimeout,
        CloseReason::TooManyConnections,
        CloseReason::IoError,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::Garbage => "garbage",
            CloseReason::FrameTooLarge => "frame_too_large",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::TooManyConnections => "too_many_connections",
            CloseReason::IoError => "io_error",
        }
    }
}

/// Why a front dropped one datagram (the connection stays open).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelDrop {
    /// A STUN check whose USERNAME names no ufrag any core owns (yet), or anything else
    /// before the connection was routed to a core.
    Unrouted,
    /// The queue toward the core was full.
    CoreQueueFull,
    /// The queue from a core toward the front was full (counted by the core).
    FrontQueueFull,
    /// The connection's write backlog was at its bound: a slow reader.
    WriteBacklog,
    /// A datagram from a core for a connection that is gone.
    NoConnection,
}

impl TunnelDrop {
    pub const ALL: [TunnelDrop; 5] = [
        TunnelDrop::Unrouted,
        TunnelDrop::CoreQueueFull,
        TunnelDrop::FrontQueueFull,
        TunnelDrop::WriteBacklog,
        TunnelDrop::NoConnection,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TunnelDrop::Unrouted => "unrouted",
            TunnelDrop::CoreQueueFull => "core_queue_full",
            TunnelDrop::FrontQueueFull => "front_queue_full",
            TunnelDrop::WriteBacklog => "write_backlog",
            TunnelDrop::NoConnection => "no_connection",
        }
    }
}

/// A front's counters. Written by the front's thread (and, for a full queue, by a core),
/// read by `GetStats`: relaxed atomics, never on the cores' per-packet path.
#[derive(Debug, Default)]
pub struct FrontCounters {
    pub accepted: AtomicU64,
    pub open: AtomicU64,
    pub datagrams_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub datagrams_out: AtomicU64,
    pub bytes_out: AtomicU64,
    closed: [AtomicU64; CloseReason::ALL.len()],
    drops: [AtomicU64; TunnelDrop::ALL.len()],
}

impl FrontCounters {
    pub fn closed(&self, r: CloseReason) {
        self.closed[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self, r: TunnelDrop) {
        self.drops[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn closed_count(&self, r: CloseReason) -> u64 {
        self.closed[r as usize].load(Ordering::Relaxed)
    }

    pub fn drop_count(&self, r: TunnelDrop) -> u64 {
        self.drops[r as usize].load(Ordering::Relaxed)
    }

    /// A snapshot for `GetStats`.
    pub fn to_proto(&self, kind: FrontKind, listen: String) -> pb::FrontStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        pb::FrontStats {
            kind: kind.name().to_string(),
            listen,
            accepted: load(&self.accepted),
            open: load(&self.open),
            datagrams_in: load(&self.datagrams_in),
            bytes_in: load(&self.bytes_in),
            datagrams_out: load(&self.datagrams_out),
            bytes_out: load(&self.bytes_out),
            closed: CloseReason::ALL
                .iter()
                .filter(|r| self.closed_count(**r) > 0)
                .map(|r| pb::DropCount {
                    reason: r.name().to_string(),
                    count: self.closed_count(*r),
                })
                .collect(),
            drops: TunnelDrop::ALL
                .iter()
                .filter(|r| self.drop_count(**r) > 0)
                .map(|r| pb::DropCount {
                    reason: r.name().to_string(),
                    count: self.drop_count(*r),
                })
                .collect(),
        }
    }
}

/// Which core owns each local ICE ufrag, for fronts routing a new connection by its first
/// check. Written by the router, read by fronts once per new connection.
#[derive(Clone, Debug, Default)]
pub struct IceRoutes {
    map: Arc<RwLock<HashMap<Vec<u8>, usize>>>,
}

impl IceRoutes {
    pub fn insert(&self, ufrag: &[u8], core: usize) {
        if let Ok(mut m) = self.map.write() {
            m.insert(ufrag.to_vec(), core);
        }
    }

    pub fn remove(&self, ufrag: &[u8]) {
        if let Ok(mut m) = self.map.write() {
            m.remove(ufrag);
        }
    }

    pub fn core_of(&self, ufrag: &[u8]) -> Option<usize> {
        self.map.read().ok()?.get(ufrag).copied()
    }

    pub fn len(&self) -> usize {
        self.map.read().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A core's side of every front: drained each turn, sent to through [`TunnelEgress`].
#[derive(Debug, Default)]
pub struct CoreTunnels {
    inbound: Vec<(FrontKind, QueueRx)>,
    pub(crate) out: Outbound,
}

/// The outbound queues of one core, one per front, and which of them got datagrams this
/// turn (their fronts are woken once at the end of the turn).
#[derive(Debug, Default)]
pub struct Outbound {
    links: Vec<OutLink>,
}

struct OutLink {
    kind: FrontKind,
    tx: QueueTx,
    wake: Arc<dyn Waker>,
    counters: Arc<FrontCounters>,
    pushed: bool,
}

impl std::fmt::Debug for OutLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutLink")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Datagrams taken from the inbound queues per turn at most, so a flood through a front
/// cannot starve the UDP socket.
pub const INBOUND_PER_TURN: usize = 1024;

impl CoreTunnels {
    pub fn new(ends: Vec<CoreEnd>) -> Self {
        let mut t = CoreTunnels::default();
        for e in ends {
            t.inbound.push((e.kind, e.inbound));
            t.out.links.push(OutLink {
                kind: e.kind,
                tx: e.outbound,
                wake: e.wake_front,
                counters: e.counters,
                pushed: false,
            });
        }
        t
    }

    pub fn is_empty(&self) -> bool {
        self.inbound.is_empty()
    }

    /// Whether datagrams wait in an inbound queue (the worker must not sleep then).
    pub fn has_inbound(&self) -> bool {
        self.inbound.iter().any(|(_, q)| !q.is_empty())
    }

    /// Hands up to [`INBOUND_PER_TURN`] queued datagrams to `handle(from, bytes, egress)`
    /// with an egress that reaches fronts and, for real addresses, `inner`.
    pub fn drain<E: Egress, H>(&mut self, inner: &mut E, handle: &mut H) -> usize
    where
        H: FnMut(SocketAddr, &mut [u8], &mut TunnelEgress<'_, E>),
    {
        let mut n = 0;
        let CoreTunnels { inbound, out } = self;
        for (_, q) in inbound.iter() {
            while n < INBOUND_PER_TURN {
                let Some(mut d) = q.pop() else { break };
                n += 1;
                let from = d.peer;
                let mut eg = TunnelEgress {
                    inner: &mut *inner,
                    out: &mut *out,
                    origin: Some((from, d.origin)),
                };
                handle(from, d.bytes_mut(), &mut eg);
                q.recycle(d);
            }
        }
        n
    }

    /// An egress for this turn over `inner`.
    pub fn egress<'a, E: Egress>(&'a mut self, inner: &'a mut E) -> TunnelEgress<'a, E> {
        TunnelEgress {
            inner,
            out: &mut self.out,
            origin: None,
        }
    }

    /// Wakes every front that got datagrams since the last call (once per turn).
    pub fn wake_fronts(&mut self) {
        for l in &mut self.out.links {
            if l.pushed {
                l.pushed = false;
                l.wake.wake();
            }
        }
    }
}

impl Outbound {
    fn send_with(&mut self, to: SocketAddr, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        let Some((kind, _)) = parse_virtual(&to) else {
            return false;
        };
        let Some(l) = self.links.iter_mut().find(|l| l.kind == kind) else {
            return false;
        };
        if l.tx.push_with(to, fill) {
            l.pushed = true;
            true
        } else {
            // Rare (the front is behind): one relaxed add, on the slow branch only.
            l.counters.dropped(TunnelDrop::FrontQueueFull);
            false
        }
    }
}

/// The worker's egress: datagrams to virtual addresses go to their front's queue, all
/// others to the driver's egress.
#[derive(Debug)]
pub struct TunnelEgress<'a, E> {
    inner: &'a mut E,
    out: &'a mut Outbound,
    /// While a tunnelled datagram is handled: its virtual and its real source address.
    origin: Option<(SocketAddr, SocketAddr)>,
}

impl<E: Egress> Egress for TunnelEgress<'_, E> {
    fn send_split(&mut self, to: SocketAddr, head: &[u8], body: Range<usize>) -> bool {
        if is_virtual(&to) {
            // A front gets whole datagrams; the engine falls back to `send_with`.
            return false;
        }
        self.inner.send_split(to, head, body)
    }

    fn send_with(&mut self, to: SocketAddr, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        if is_virtual(&to) {
            return self.out.send_with(to, fill);
        }
        self.inner.send_with(to, fill)
    }

    fn mapped_address(&self, from: SocketAddr) -> SocketAddr {
        match self.origin {
            Some((virt, real)) if virt == from => real,
            _ => self.inner.mapped_address(from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_addresses_round_trip_and_never_match_real_ones() {
        for conn in [0, 1, 0xffff, 0x1_0000, MAX_CONN_ID] {
            let a = virtual_addr(FrontKind::IceTcp, conn);
            assert!(is_virtual(&a));
            assert_eq!(parse_virtual(&a), Some((FrontKind::IceTcp, conn)));
        }
        let t = virtual_addr(FrontKind::Turn, 7);
        assert_eq!(parse_virtual(&t), Some((FrontKind::Turn, 7)));
        for conn in [0, 1, 0xffff, 0x1_0000, MAX_V4_CONN_ID] {
            let a = virtual_addr_v4(conn);
            assert!(is_virtual(&a) && a.is_ipv4());
            assert_eq!(parse_virtual(&a), Some((FrontKind::Turn, conn)));
        }
        for real in [
            "223.255.255.255:9",
            "127.0.0.1:9",
            "[::1]:9",
            "[2001:db8::1]:5000",
            "[100:0:0:1::]:9",
        ] {
            let a: SocketAddr = real.parse().unwrap();
            assert!(!is_virtual(&a), "{a}");
            assert_eq!(parse_virtual(&a), None);
        }
    }

    #[test]
    fn queue_recycles_slots_and_refuses_when_full() {
        let (tx, rx) = queue(2);
        let peer = virtual_addr(FrontKind::IceTcp, 3);
        let real: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        assert!(tx.push(peer, real, b"one"));
        assert!(tx.push(peer, real, b"two"));
        assert!(!tx.push(peer, real, b"three"), "no free slot");
        let d = rx.pop().unwrap();
        assert_eq!(d.bytes(), b"one");
        assert_eq!((d.peer, d.origin), (peer, real));
        rx.recycle(d);
        assert!(tx.push(peer, real, b"three"));
        assert_eq!(rx.pop().unwrap().bytes(), b"two");
        assert!(!tx.push(peer, real, &[0u8; MAX_DATAGRAM + 1]), "too long");
    }
}
