//! The AF_XDP driver: one core's media port served from an AF_XDP socket, past the
//! kernel's UDP stack.
//!
//! Why: on loopback and NICs alike, Prism's socket drivers spend most of their time in
//! the kernel's per-datagram work; an XDP program hands the media port's frames straight
//! to user space and takes frames back, so that work goes. What it costs us instead is
//! done in sans-IO code: Ethernet/IPv4/UDP parsing and building with checksums
//! ([`crate::wire::frame`]), the next-hop MAC table ([`crate::wire::neigh`]) and the
//! program itself ([`crate::bpf`]).
//!
//! Shape (one driver per core and NIC queue; only the XDP program is shared):
//! - [`xsk`]: the socket, its UMEM (half the frames for receiving, half for sending) and
//!   its four rings; [`bpf_sys`]: the maps, the program and its bpf_link.
//! - [`attach`]: one program per interface for every core on it (an interface takes one
//!   XDP program). Core *i* serves receive queue *first_queue + i* and owns one media
//!   port; it registers its socket at its queue and its port as that queue's, and the
//!   program redirects a port's frames only on its owner's queue. A media frame that RSS
//!   puts on another queue is passed to the kernel and reaches the port's normal UDP
//!   socket, which the owning core reads as its fallback (counted as `wrong_queue` on the
//!   queue it arrived on and `kernel_received` on the owner). The program leaves the
//!   interface with the last core's driver, or with the process.
//! - A normal UDP socket stays bound on the media port: the kernel never answers the
//!   port with ICMP or gives it to another process, datagrams the program passes to the
//!   kernel (IP options, fragments) still arrive through it, and sends to a peer whose
//!   MAC is not known yet go out through it (the kernel resolves the neighbour).
//! - A turn: reap send completions, take a batch from the RX ring, parse each frame,
//!   learn its source MAC, hand its UDP payload to the engine, copy the bodies of the
//!   sends it queued, give the frames back to the fill ring, then publish the TX ring and
//!   kick the kernel if it asked for it (need-wakeup). With nothing to do it sleeps in
//!   `poll` on the socket, the canary socket and the waker's eventfd.
//! - `send_split` copies: in copy mode every frame is copied by the kernel anyway, and the
//!   body is copied into the TX frame only after the engine's handler has returned, so no
//!   second reference into a received frame exists while the engine holds one.
//!
//! - Counting: frames the driver drops (by [`frame::Reject`], or for another address) and
//!   the kernel-path datagrams are counted in [`XdpCounters`]; frames the program passes
//!   to the kernel are counted by the program itself, per queue and
//!   [`crate::bpf::PassReason`], in a BPF array map the driver reads only when asked for
//!   stats ([`Driver::xdp_stats`]). Both reach `GetStats` (`CoreStats.xdp`, and `frame_*`
//!   drop reasons) and `/metrics`: a bad frame never goes uncounted, whichever side of
//!   the program it ends on.
//!
//! Nothing allocates per packet: batches, the pending-send list and the free-frame stack
//! are sized at construction.

pub mod attach;
pub mod bpf_sys;
pub mod xsk;

use std::ffi::CString;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use super::{Driver, IoStats, Waker};
use crate::egress::{Egress, HEAD_CAP, MAX_DATAGRAM};
use crate::wire::frame::{self, Endpoints, Mac, HEADERS_LEN};
use crate::wire::neigh::NeighbourTable;
use xsk::{Ring, Rings, Umem, Xsk, XskSizes};

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// In the NIC driver (veth, and NICs with XDP support).
    Native,
    /// In the generic network path (any interface, slower).
    Generic,
}

/// How the AF_XDP socket is bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpBind {
    /// Copy mode (`XDP_COPY`): works on every interface with XDP.
    #[default]
    Copy,
    /// Zero-copy (`XDP_ZEROCOPY`): the NIC DMAs into and out of the UMEM; refused (an
    /// error) where its driver has none.
    ZeroCopy,
    /// Zero-copy where the driver has it, else copy mode (one log line says so).
    Auto,
}

impl XdpBind {
    /// The names [`FromStr`](std::str::FromStr) takes.
    pub const NAMES: &'static str = "copy, zerocopy, auto";
}

impl std::str::FromStr for XdpBind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "copy" => Ok(XdpBind::Copy),
            "zerocopy" | "zero_copy" | "zero-copy" => Ok(XdpBind::ZeroCopy),
            "auto" => Ok(XdpBind::Auto),
            other => Err(format!(
                "unknown AF_XDP bind mode {other:?} (one of: {})",
                XdpBind::NAMES
            )),
        }
    }
}

/// Where a core's AF_XDP driver attaches: chosen by the operator (`--interface`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpTarget {
    pub interface: String,
    /// The receive queue this core serves.
    pub queue: u32,
    pub mode: XdpMode,
    pub bind: XdpBind,
}

/// What the AF_XDP driver serves.
#[derive(Clone, Debug)]
pub struct AfXdpConfig {
    /// The interface the media address is on.
    pub interface: String,
    /// Its receive queue this core serves.
    pub queue: u32,
    /// The media address (an address of `interface`, and the port).
    pub local: SocketAddrV4,
    pub mode: XdpMode,
    pub bind: XdpBind,
    pub sizes: XskSizes,
    /// Frames taken from the RX ring at once.
    pub batch: usize,
    /// Peers remembered by the MAC table.
    pub neighbours: usize,
}

impl AfXdpConfig {
    pub fn new(interface: impl Into<String>, local: SocketAddrV4) -> Self {
        Self {
            interface: interface.into(),
            queue: 0,
            local,
            mode: XdpMode::Native,
            bind: XdpBind::Copy,
            sizes: XskSizes::default(),
            batch: 64,
            neighbours: 4096,
        }
    }
}

/// Counters of the frame-level work, beyond [`IoStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpCounters {
    /// Received frames dropped, by [`frame::Reject`] (indexed as `Reject::ALL`).
    pub rejected: [u64; 10],
    /// Frames for an address other than this driver's.
    pub wrong_destination: u64,
    /// Datagrams that came through the kernel's socket instead (passed by the program).
    pub kernel_received: u64,
    /// Sends that went through the kernel's socket because the peer's MAC was unknown.
    pub kernel_sent: u64,
    /// Sends dropped because every send frame was in flight.
    pub no_frame: u64,
    /// Frames whose UDP checksum was partial (a sender with offload on this link).
    pub partial_checksums: u64,
}

impl XdpCounters {
    /// Frames dropped by the driver, by drop reason (`frame_*`), zeros left out.
    pub fn drops(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        frame::Reject::ALL
            .iter()
            .map(|r| (r.drop_name(), self.rejected[r.index()]))
            .chain([("frame_wrong_destination", self.wrong_destination)])
            .filter(|(_, n)| *n > 0)
    }
}

/// What a core's AF_XDP driver reports for stats ([`Driver::xdp_stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XdpStats {
    pub interface: String,
    pub queue: u32,
    /// Bound in zero-copy mode (else copy mode).
    pub zero_copy: bool,
    pub counters: XdpCounters,
    /// Frames the program passed to the kernel from this queue, by [`bpf::PassReason`]
    /// name (zeros left out).
    pub passed: Vec<(&'static str, u64)>,
    /// The kernel's socket counters (`XDP_STATISTICS`); zero if it could not be read.
    pub kernel: XskStatistics,
}

/// `struct xdp_statistics`, owned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskStatistics {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

#[derive(Debug)]
struct EventFdWaker(OwnedFd);

impl Waker for EventFdWaker {
    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local to our eventfd; a full counter
        // (EAGAIN) already means "woken".
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// A send whose body is still in the datagram being handled.
#[derive(Clone, Copy, Debug)]
struct Pending {
    to: SocketAddr,
    frame: u64,
    head: usize,
    body: (usize, usize),
}

/// The send side: TX ring, completion ring, free send frames, MAC table.
#[derive(Debug)]
pub struct AfXdpEgress {
    umem: Umem,
    tx: Ring<libc::xdp_desc>,
    completion: Ring<u64>,
    free: Vec<u64>,
    queued: Vec<libc::xdp_desc>,
    pending: Vec<Pending>,
    completed: Vec<u64>,
    /// The datagram being handled: its bytes, for `send_split` bodies.
    current: Option<(*const u8, usize)>,
    neighbours: NeighbourTable,
    mac: Mac,
    local: SocketAddrV4,
    kernel: UdpSocket,
    /// Free send frames below which a turn submits what it queued so far.
    low_water: usize,
    ip_id: u16,
    stats: IoStats,
    counters: XdpCounters,
}

// SAFETY: `current` points into memory this driver owns and is only set during a turn on
// the owning thread; everything else is owned data.
unsafe impl Send for AfXdpEgress {}

impl AfXdpEgress {
    /// A free send frame's address and its payload area (after the headers).
    fn take_frame(&mut self) -> Option<u64> {
        if self.free.is_empty() {
            self.reap();
        }
        let f = self.free.pop();
        if f.is_none() {
            self.counters.no_frame += 1;
            self.stats.queue_full += 1;
        }
        f
    }

    fn payload_mut(&mut self, frame: u64) -> &mut [u8] {
        // SAFETY: `frame` came off the free stack, so it is ours and in no ring; the
        // slice is the only reference into it while it lives (callers use it and drop it
        // before the frame is queued).
        unsafe {
            self.umem
                .bytes_mut(frame + HEADERS_LEN as u64, MAX_DATAGRAM)
        }
    }

    /// Puts headers on a send frame holding `len` payload bytes and queues it, or sends
    /// it through the kernel when the next hop is unknown.
    fn finish(&mut self, to: SocketAddr, frame: u64, len: usize) {
        let mac = match to {
            SocketAddr::V4(v4) => self.neighbours.lookup(*v4.ip()).map(|m| (v4, m)),
            SocketAddr::V6(_) => None,
        };
        let Some((dst, dst_mac)) = mac else {
            // Slow path: no MAC for this peer yet (or IPv6); the kernel resolves it.
            // SAFETY: the frame is ours (off the free stack, not queued) and this is the
            // only reference into it.
            let payload = unsafe { self.umem.bytes_mut(frame + HEADERS_LEN as u64, len) };
            match self.kernel.send_to(payload, to) {
                Ok(_) => {
                    self.counters.kernel_sent += 1;
                    self.stats.datagrams_sent += 1;
                    self.stats.bytes_sent += len as u64;
                }
                Err(_) => self.stats.send_errors += 1,
            }
            self.free.push(frame);
            return;
        };
        let ends = Endpoints {
            src_mac: self.mac,
            dst_mac,
            src: self.local,
            dst,
        };
        self.ip_id = self.ip_id.wrapping_add(1);
        // SAFETY: the frame is ours (off the free stack, not yet queued) and no other
        // reference into it is alive.
        let bytes = unsafe { self.umem.bytes_mut(frame, self.umem.frame_size()) };
        match frame::write_headers(bytes, &ends, len, self.ip_id) {
            Ok(n) => {
                self.queued.push(libc::xdp_desc {
                    addr: frame,
                    len: n as u32,
                    options: 0,
                });
                self.stats.datagrams_sent += 1;
                self.stats.bytes_sent += len as u64;
            }
            Err(_) => {
                self.stats.oversized += 1;
                self.free.push(frame);
            }
        }
    }

    /// Copies the bodies of the sends queued while handling the current datagram.
    fn end_datagram(&mut self) {
        let Some((src, src_len)) = self.current.take() else {
            return;
        };
        for i in 0..self.pending.len() {
            let p = self.pending[i];
            let (start, end) = p.body;
            debug_assert!(end <= src_len);
            let dst = self.payload_mut(p.frame);
            // SAFETY: `start..end` was checked against the datagram's length in
            // `send_split`; the datagram's memory is alive (its frame goes back to the
            // fill ring only after this) and no reference into it exists now that the
            // handler returned; `dst` is a different frame.
            let body = unsafe { std::slice::from_raw_parts(src.add(start), end - start) };
            dst[p.head..p.head + body.len()].copy_from_slice(body);
            self.finish(p.to, p.frame, p.head + body.len());
        }
        self.pending.clear();
    }

    /// Moves completed send frames back to the free stack.
    fn reap(&mut self) {
        loop {
            let n = self.completion.consume(&mut self.completed);
            for &addr in &self.completed[..n] {
                self.free.push(self.umem.frame_start(addr));
            }
            if n < self.completed.len() {
                break;
            }
        }
    }

    /// Publishes queued frames on the TX ring and wakes the kernel if it asked.
    fn flush_tx(&mut self) -> io::Result<()> {
        if !self.queued.is_empty() {
            // The TX ring has as many slots as there are send frames, so it always takes
            // every frame we own.
            let n = (self.tx.free() as usize).min(self.queued.len());
            self.tx.produce(&self.queued[..n]);
            for d in &self.queued[n..] {
                self.free.push(d.addr);
                self.stats.send_errors += 1;
            }
            self.stats.send_batches += 1;
            self.stats.max_send_batch = self.stats.max_send_batch.max(n as u64);
            self.queued.clear();
        }
        Ok(())
    }
}

impl Egress for AfXdpEgress {
    fn send_split(&mut self, to: SocketAddr, head: &[u8], body: Range<usize>) -> bool {
        let Some((_, len)) = self.current else {
            return false;
        };
        if head.len() > HEAD_CAP
            || body.start > body.end
            || body.end > len
            || head.len() + body.len() > MAX_DATAGRAM
            || self.pending.len() == self.pending.capacity()
        {
            return false;
        }
        let Some(frame) = self.take_frame() else {
            return false;
        };
        self.payload_mut(frame)[..head.len()].copy_from_slice(head);
        self.pending.push(Pending {
            to,
            frame,
            head: head.len(),
            body: (body.start, body.end),
        });
        true
    }

    fn send_with(&mut self, to: SocketAddr, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        let Some(frame) = self.take_frame() else {
            return false;
        };
        let n = fill(self.payload_mut(frame));
        if n == 0 || n > MAX_DATAGRAM {
            self.free.push(frame);
            return false;
        }
        self.finish(to, frame, n);
        true
    }
}

/// One core's media port on AF_XDP.
#[derive(Debug)]
pub struct AfXdpDriver {
    /// The interface's program, shared with the other cores on it; this driver's socket
    /// and port are registered in its maps until the driver is dropped.
    attachment: Arc<attach::Attachment>,
    interface: String,
    queue: u32,
    zero_copy: bool,
    xsk: Xsk,
    fill: Ring<u64>,
    rx: Ring<libc::xdp_desc>,
    rx_batch: Vec<libc::xdp_desc>,
    refill: Vec<u64>,
    scratch: Vec<u8>,
    egress: AfXdpEgress,
    waker: Arc<EventFdWaker>,
    local: SocketAddrV4,
    batch: usize,
    tick: u64,
}

const ZERO_COPY_STEP: &str = "binding the AF_XDP socket in zero-copy mode";

/// An error with the step that failed and what usually fixes it.
fn refused(step: &str, interface: &str, queue: u32, e: io::Error) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => {
            "AF_XDP needs CAP_NET_ADMIN, CAP_BPF and CAP_NET_RAW: run as root or grant them"
                .to_string()
        }
        Some(libc::EAFNOSUPPORT) => {
            "this kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS): use --driver io_uring or mmsg"
                .to_string()
        }
        Some(libc::ENODEV) => format!("no interface {interface:?} (see `ip link`)"),
        Some(libc::EINVAL) if step.starts_with("binding the AF_XDP socket") => format!(
            "queue {queue} may not exist on {interface}: `ethtool -l {interface}` lists them, \
             `ethtool -L {interface} combined N` sets them"
        ),
        Some(libc::EOPNOTSUPP) if step == ZERO_COPY_STEP => format!(
            "{interface}'s driver has no AF_XDP zero-copy: bind in copy mode \
             (--xdp-bind copy or auto; rtc.xdp_bind)"
        ),
        Some(libc::EOPNOTSUPP) => {
            format!(
                "{interface} does not support XDP in its driver: try the generic mode \
             (prism-forwarder --xdp-generic)"
            )
        }
        Some(libc::EBUSY) => format!(
            "another XDP program is attached to {interface}: `ip link set dev {interface} xdp off`"
        ),
        _ => String::new(),
    };
    let msg = if hint.is_empty() {
        format!("AF_XDP on {interface} queue {queue}: {step}: {e}")
    } else {
        format!("AF_XDP on {interface} queue {queue}: {step}: {e}; {hint}")
    };
    io::Error::new(e.kind(), msg)
}

/// The interface's index and MAC address, asked through `sock` (so in its namespace).
fn interface(sock: &UdpSocket, name: &str) -> io::Result<(u32, Mac)> {
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    }
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    }
    // SAFETY: all-zero is a valid `ifreq`.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills the live `ifreq` we pass.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFHWADDR the union holds `ifru_hwaddr`.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = *d as u8;
    }
    Ok((index, mac))
}

impl AfXdpDriver {
    /// Binds the kernel-path socket on `cfg.local`, opens the AF_XDP socket on the
    /// interface queue and attaches the program for `cfg.local`'s port.
    pub fn new(cfg: &AfXdpConfig) -> io::Result<Self> {
        let kernel = UdpSocket::bind(cfg.local).map_err(|e| {
            refused(
                "binding the media port's UDP socket",
                &cfg.interface,
                cfg.queue,
                e,
            )
        })?;
        Self::with_socket(kernel, cfg)
    }

    /// The driver for `target` on an already bound media socket (the engine's start-up
    /// path: the socket is bound before the driver is chosen). Its address must be a
    /// specific IPv4 address of the interface.
    pub fn on_socket(sock: UdpSocket, target: &XdpTarget) -> io::Result<Self> {
        let local = match sock.local_addr()? {
            SocketAddr::V4(v4) if !v4.ip().is_unspecified() => v4,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "AF_XDP on {}: the media socket is bound to {other}; bind it to the \
                         interface's IPv4 address (prism: --media-ip or rtc.ip; \
                         prism-forwarder: --bind)",
                        target.interface
                    ),
                ))
            }
        };
        let mut cfg = AfXdpConfig::new(target.interface.clone(), local);
        cfg.queue = target.queue;
        cfg.mode = target.mode;
        cfg.bind = target.bind;
        Self::with_socket(sock, &cfg)
    }

    /// The driver on `kernel`, the media port's bound socket.
    pub fn with_socket(kernel: UdpSocket, cfg: &AfXdpConfig) -> io::Result<Self> {
        let (ifname, queue) = (cfg.interface.as_str(), cfg.queue);
        kernel.set_nonblocking(true)?;
        let (ifindex, mac) = interface(&kernel, ifname)
            .map_err(|e| refused("finding the interface", ifname, queue, e))?;
        let copy = || {
            Xsk::open(ifindex, queue, cfg.sizes, false)
                .map_err(|e| refused("binding the AF_XDP socket", ifname, queue, e))
        };
        let zero_copy = || {
            Xsk::open(ifindex, queue, cfg.sizes, true)
                .map_err(|e| refused(ZERO_COPY_STEP, ifname, queue, e))
        };
        let (xsk, rings) = match cfg.bind {
            XdpBind::Copy => copy()?,
            XdpBind::ZeroCopy => zero_copy()?,
            XdpBind::Auto => match zero_copy() {
                Ok(x) => x,
                Err(e) => {
                    tracing::info!(
                        interface = ifname,
                        queue,
                        "AF_XDP zero-copy refused, binding in copy mode: {e}"
                    );
                    copy()?
                }
            },
        };
        // What the kernel runs, whatever was asked.
        let zero_copy = xsk.is_zero_copy().unwrap_or(false);
        let attachment =
            attach::join(ifindex, cfg.mode).map_err(|(step, e)| refused(step, ifname, queue, e))?;
        attachment
            .register(queue, cfg.local.port(), xsk.raw_fd())
            .map_err(|(step, e)| refused(step, ifname, queue, e))?;
        tracing::info!(
            interface = ifname,
            queue,
            port = cfg.local.port(),
            mode = ?cfg.mode,
            bind = if zero_copy { "zerocopy" } else { "copy" },
            "AF_XDP socket bound"
        );

        // SAFETY: plain eventfd(2).
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor owned by nobody else.
        let waker = Arc::new(EventFdWaker(unsafe { OwnedFd::from_raw_fd(efd) }));

        let Rings {
            mut fill,
            completion,
            rx,
            tx,
        } = rings;
        let umem = xsk.umem();
        let frames = umem.frames() as u64;
        let size = umem.frame_size() as u64;
        let half = frames / 2;
        let ring = u64::from(cfg.sizes.ring);
        // Receive frames: as many as the fill ring holds; send frames: as many as the TX
        // ring holds, so publishing never finds the ring full.
        let rx_frames = half.min(ring);
        let tx_frames = (frames - half).min(ring);
        let initial: Vec<u64> = (0..rx_frames).map(|i| i * size).collect();
        fill.produce(&initial);
        let free: Vec<u64> = (0..tx_frames).map(|i| (half + i) * size).collect();
        let egress = AfXdpEgress {
            umem,
            tx,
            completion,
            queued: Vec::with_capacity(free.len()),
            pending: Vec::with_capacity(free.len()),
            completed: vec![0; cfg.batch.max(1)],
            free,
            current: None,
            neighbours: NeighbourTable::new(cfg.neighbours),
            mac,
            local: cfg.local,
            kernel,
            low_water: tx_frames as usize / 2,
            ip_id: 0,
            stats: IoStats::default(),
            counters: XdpCounters::default(),
        };
        Ok(Self {
            attachment,
            interface: cfg.interface.clone(),
            queue,
            zero_copy,
            xsk,
            fill,
            rx,
            rx_batch: vec![
                libc::xdp_desc {
                    addr: 0,
                    len: 0,
                    options: 0
                };
                cfg.batch.max(1)
            ],
            refill: Vec::with_capacity(cfg.batch.max(1)),
            // One byte more than accepted, so an oversized datagram shows as one.
            scratch: vec![0; MAX_DATAGRAM + 1],
            egress,
            waker,
            local: cfg.local,
            batch: cfg.batch.max(1),
            tick: 0,
        })
    }

    /// The frame-level counters.
    pub fn counters(&self) -> XdpCounters {
        self.egress.counters
    }

    /// The kernel's counters for the socket (drops for a full RX ring, empty fill ring).
    pub fn kernel_statistics(&self) -> io::Result<libc::xdp_statistics> {
        self.xsk.statistics()
    }

    fn drain_rx<H>(&mut self, handler: &mut H) -> usize
    where
        H: FnMut(SocketAddr, &mut [u8], &mut AfXdpEgress),
    {
        let n = self.rx.consume(&mut self.rx_batch[..self.batch]);
        if n == 0 {
            return 0;
        }
        self.tick += 1;
        let umem = self.egress.umem;
        let eg = &mut self.egress;
        eg.stats.recv_batches += 1;
        eg.stats.max_recv_batch = eg.stats.max_recv_batch.max(n as u64);
        let mut handled = 0;
        for d in &self.rx_batch[..n] {
            // SAFETY: the kernel handed this frame to us through the RX ring; it goes
            // back to the fill ring only after this iteration, and this slice is the only
            // reference into it until then.
            let bytes = unsafe { umem.bytes_mut(d.addr, d.len as usize) };
            eg.stats.datagrams_received += 1;
            eg.stats.bytes_received += u64::from(d.len);
            match frame::parse(bytes) {
                Err(r) => eg.counters.rejected[r.index()] += 1,
                Ok(p) if p.dst != self.local => eg.counters.wrong_destination += 1,
                Ok(p) if p.payload.len() > MAX_DATAGRAM => eg.stats.oversized += 1,
                Ok(p) => {
                    if p.checksum == frame::UdpChecksum::Partial {
                        eg.counters.partial_checksums += 1;
                    }
                    eg.neighbours.learn(*p.src.ip(), p.src_mac, self.tick);
                    let payload = &mut bytes[p.payload.clone()];
                    eg.current = Some((payload.as_ptr(), payload.len()));
                    handler(SocketAddr::V4(p.src), payload, eg);
                    eg.end_datagram();
                    handled += 1;
                }
            }
            // A fan-out takes a send frame per subscriber: once half of them are queued,
            // send what is queued now and take back what completed, rather than run out
            // of frames (and drop) before the turn ends. An error here shows again at the
            // turn's own flush.
            if eg.free.len() < eg.low_water {
                let _ = submit(eg, &self.xsk);
            }
            self.refill.push(umem.frame_start(d.addr));
        }
        self.fill.produce(&self.refill);
        self.refill.clear();
        handled
    }

    /// Datagrams that reached the kernel's socket instead (a bounded batch).
    fn drain_kernel<H>(&mut self, handler: &mut H) -> usize
    where
        H: FnMut(SocketAddr, &mut [u8], &mut AfXdpEgress),
    {
        let mut handled = 0;
        for _ in 0..self.batch {
            let (n, from) = match self.egress.kernel.recv_from(&mut self.scratch) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.egress.stats.recv_errors += 1;
                    break;
                }
            };
            let eg = &mut self.egress;
            eg.counters.kernel_received += 1;
            eg.stats.datagrams_received += 1;
            eg.stats.bytes_received += n as u64;
            if n > MAX_DATAGRAM {
                eg.stats.oversized += 1;
                continue;
            }
            let payload = &mut self.scratch[..n];
            eg.current = Some((payload.as_ptr(), n));
            handler(from, payload, eg);
            eg.end_datagram();
            handled += 1;
        }
        handled
    }

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        // ppoll, not poll: the engine's waits are often under a millisecond (until its
        // next tick), and poll's milliseconds would round them to zero and spin.
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        let mut fds = [
            libc::pollfd {
                fd: self.xsk.raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.egress.kernel.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.waker.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: polls three live descriptors through a live array of its length; the
        // timeout is null or points to a live local; no signal mask is changed.
        let r = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                ts_ptr,
                std::ptr::null(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        if fds[2].revents & libc::POLLIN != 0 {
            let mut word = 0u64;
            // SAFETY: reads 8 bytes into a live local from our eventfd.
            unsafe { libc::read(self.waker.0.as_raw_fd(), (&mut word as *mut u64).cast(), 8) };
        }
        Ok(())
    }
}

impl Drop for AfXdpDriver {
    fn drop(&mut self) {
        // Before the socket closes: the program passes this port's frames to the kernel
        // from now on. The attachment itself goes with its last driver.
        self.attachment.unregister(self.queue, self.local.port());
    }
}

/// Publishes what `eg` queued on the TX ring, wakes the kernel if it asked, and takes back
/// the frames it completed.
fn submit(eg: &mut AfXdpEgress, xsk: &Xsk) -> io::Result<()> {
    eg.flush_tx()?;
    if eg.tx.needs_wakeup() {
        // Copy mode sends one batch per kick: kick until the ring is empty, or until a kick
        // moves nothing (the device is busy; the next turn tries again). A few system calls
        // per turn, bounded by the ring's size over the kernel's batch.
        let mut left = eg.tx.in_flight();
        while xsk.kick_tx()? {
            let now = eg.tx.in_flight();
            if now == 0 || now >= left {
                break;
            }
            left = now;
        }
    }
    eg.reap();
    Ok(())
}

impl Driver for AfXdpDriver {
    type Egress = AfXdpEgress;

    fn name(&self) -> &'static str {
        "af_xdp"
    }

    fn local_addr(&self) -> SocketAddr {
        SocketAddr::V4(self.local)
    }

    fn waker(&self) -> Arc<dyn Waker> {
        self.waker.clone()
    }

    fn turn<H>(&mut self, timeout: Option<Duration>, handler: &mut H) -> io::Result<usize>
    where
        H: FnMut(SocketAddr, &mut [u8], &mut Self::Egress),
    {
        self.egress.stats.turns += 1;
        self.egress.reap();
        let mut handled = self.drain_rx(handler) + self.drain_kernel(handler);
        if handled == 0 && timeout != Some(Duration::ZERO) {
            self.flush()?;
            self.wait(timeout)?;
            handled = self.drain_rx(handler) + self.drain_kernel(handler);
        }
        self.flush()?;
        Ok(handled)
    }

    fn egress(&mut self) -> &mut Self::Egress {
        &mut self.egress
    }

    fn flush(&mut self) -> io::Result<()> {
        submit(&mut self.egress, &self.xsk)
    }

    fn stats(&self) -> IoStats {
        self.egress.stats
    }

    fn xdp_stats(&self) -> Option<XdpStats> {
        let passed = self.attachment.passed(self.queue);
        let kernel = self
            .xsk
            .statistics()
            .map(|k| XskStatistics {
                rx_dropped: k.rx_dropped,
                rx_invalid_descs: k.rx_invalid_descs,
                tx_invalid_descs: k.tx_invalid_descs,
                rx_ring_full: k.rx_ring_full,
                rx_fill_ring_empty_descs: k.rx_fill_ring_empty_descs,
                tx_ring_empty_descs: k.tx_ring_empty_descs,
            })
            .unwrap_or_default();
        Some(XdpStats {
            interface: self.interface.clone(),
            queue: self.queue,
            zero_copy: self.zero_copy,
            counters: self.egress.counters,
            passed,
            kernel,
        })
    }
}
