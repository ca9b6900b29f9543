//! The io_uring driver: one ring per core, multishot `recvmsg` into a provided-buffer ring,
//! one SQE per send of a turn, one `io_uring_enter` to submit them.
//!
//! What it does to cut its cost per packet (each measured against mmsg with
//! `prism-bench veth`, see docs/performance.md):
//! - `SINGLE_ISSUER | DEFER_TASKRUN`: the multishot receive's completions are posted only
//!   when the turn asks for them (an enter with GETEVENTS), in one batch, never by
//!   interrupting the thread mid-turn; kernels without it get `COOP_TASKRUN`. The ring is
//!   bound to the thread of its first turn, so the driver must be dropped on that thread
//!   (elsewhere it cannot cancel what is in flight and leaks its memory, with a warning);
//! - the socket is a registered (fixed) file, so no SQE looks up and reference-counts it;
//! - a send is `IORING_OP_SEND` with a destination address from one contiguous buffer in
//!   its send slot, not `SENDMSG`: the kernel copies no msghdr and no iovec array per send,
//!   and `send_split`'s copy of the body lets the receive buffer go back to the kernel as
//!   soon as its datagram is handled. A body that does not fit one slot goes out as
//!   `SENDMSG` with two iovecs, the receive buffer held until the send completed.
//!
//! No standing queue: the kernel stamps each datagram as it arrives (`SO_TIMESTAMPNS`, a
//! control message in the receive buffer), and one that waited [`MAX_SOJOURN`] or more,
//! in the socket's queue and then in the driver's backlog, is dropped unhandled (counted as
//! `recv_shed`) once every datagram for the last 100 ms waited that long (a stall of the
//! thread sheds nothing; see [`super::sojourn`]). Without it, a core past its limit forwarded everything late: out
//! of its 1024 receive buffers, and behind them out of a socket queue of seconds. Where
//! the kernel gives no stamp, the datagram is stamped when its completion is reaped.
//!
//! Memory the kernel sees (receive buffers, the buffer ring, send slots with their msghdr,
//! iovecs and sockaddr, the receive msghdr, the eventfd read buffer) is allocated once at
//! construction, never moves and is freed only after every operation using it completed.
//!
//! Buffer lifetimes, the invariant that makes sharing payloads with the kernel sound:
//! - a receive buffer is in exactly one place: in the buffer ring (the kernel may write it),
//!   in the backlog (received, not yet handled), or *held*;
//! - `holds[bid]` counts who still reads buffer `bid`: the handler while it runs, plus one per
//!   queued or in-flight send whose body points into it. It goes back to the buffer ring only
//!   when that count drops to zero, i.e. after the last such send's completion was reaped;
//! - a send slot is either free or owned by exactly one send until its completion is reaped.
//!
//! Completions are reaped in order; a receive completion reaped while a send is waiting for
//! a free slot (mid-handler) goes to the backlog and is handled later in the same turn.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::mem::{self, ManuallyDrop};
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::socket::{read_sockaddr, write_sockaddr};
use super::sojourn::{self, Sojourn, CONTROL_LEN, MAX_SOJOURN};
use super::{Driver, IoStats, RawBuf, Waker};
use crate::egress::{Egress, HEAD_CAP, MAX_DATAGRAM};

/// Size of `struct io_uring_recvmsg_out` that heads every multishot receive buffer.
const RECV_OUT_LEN: usize = 16;
/// Room reserved for the peer address in each receive buffer (a `sockaddr_in6` is 28).
const NAME_LEN: usize = 32;
/// Where the payload starts in a receive buffer: after the header, the name and the
/// control messages (the kernel's receive timestamp).
const PAYLOAD_OFF: usize = RECV_OUT_LEN + NAME_LEN + CONTROL_LEN;
/// One provided receive buffer.
const RX_BUF_LEN: usize = PAYLOAD_OFF + MAX_DATAGRAM;
/// Buffer group id of our provided-buffer ring.
const BGID: u16 = 0;

const TAG_SHIFT: u32 = 32;
const TAG_RECV: u64 = 1 << TAG_SHIFT;
const TAG_WAKE: u64 = 2 << TAG_SHIFT;
const TAG_SEND: u64 = 3 << TAG_SHIFT;
const TAG_CANCEL: u64 = 4 << TAG_SHIFT;
/// `IORING_ENTER_GETEVENTS`.
const ENTER_GETEVENTS: u32 = 1;

/// Slot not tied to a receive buffer (`send_with`).
const NO_BID: u16 = u16::MAX;
/// Completions copied out of the CQ per pass.
const REAP_CHUNK: usize = 256;
/// A full send queue waits for completions at most this many times this long.
const SLOT_WAITS: u32 = 20;
const SLOT_WAIT: Duration = Duration::from_millis(5);

/// `opcode::$op::new(socket, args…).setters(…).build()` on the driver's socket: the fixed
/// file when it is registered, else the descriptor.
macro_rules! on_socket {
    ($io:expr, $op:ident($($arg:expr),*) $(.$set:ident($v:expr))*) => {
        if $io.fixed {
            opcode::$op::new(types::Fixed(0), $($arg),*)$(.$set($v))*.build()
        } else {
            opcode::$op::new(types::Fd($io.fd), $($arg),*)$(.$set($v))*.build()
        }
    };
}

/// Sizes of one core's ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UringConfig {
    /// Submission queue entries (rounded up to a power of two by the kernel). Should exceed
    /// `max_sends` so that a whole turn of sends fits in one submit.
    pub ring_entries: u32,
    /// Provided receive buffers of `MAX_DATAGRAM` payload each (power of two, ≤ 32768).
    pub recv_buffers: u16,
    /// Send slots: sends queued or in flight at once. When they run out mid-turn the driver
    /// submits and waits for completions.
    pub max_sends: u32,
    /// `IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN`: completions of the multishot receive
    /// are posted only when this thread asks for them, in one batch per turn.
    pub defer_taskrun: bool,
    /// The socket registered as a fixed file: no file lookup and reference count per SQE.
    pub fixed_file: bool,
    /// Sends as `IORING_OP_SEND` with a destination address from one contiguous copy in the
    /// send slot (`send_split` copies the body): no msghdr or iovec array for the kernel
    /// to copy in, and the receive buffer goes back to the kernel as soon as it is handled.
    pub sendto: bool,
    /// Datagrams that waited this long or longer since the kernel received them are dropped
    /// unhandled (counted in `recv_shed`) once every datagram for the last
    /// [`SHED_AFTER`](super::sojourn::SHED_AFTER) waited that long: when the loop stays
    /// behind, the queue is shed instead of standing. None: never (and no receive
    /// timestamps are asked for).
    pub max_sojourn: Option<Duration>,
}

impl Default for UringConfig {
    fn default() -> Self {
        Self {
            ring_entries: 2048,
            recv_buffers: 1024,
            max_sends: 1024,
            defer_taskrun: true,
            fixed_file: true,
            sendto: true,
            max_sojourn: Some(MAX_SOJOURN),
        }
    }
}

/// Wakes the ring through an eventfd it keeps a read pending on.
#[derive(Debug)]
struct EventFd(OwnedFd);

impl EventFd {
    fn new() -> io::Result<Self> {
        // SAFETY: plain syscall with no pointer arguments.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}

impl Waker for EventFd {
    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local to an eventfd we own. A full counter
        // (EAGAIN) already means "woken", so the result is ignored.
        let _ = unsafe {
            libc::write(
                self.0.as_raw_fd(),
                (&one as *const u64).cast(),
                mem::size_of::<u64>(),
            )
        };
    }
}

/// One pending send: header, iovecs and destination, all pointing into driver memory.
struct TxSlot {
    hdr: libc::msghdr,
    iov: [libc::iovec; 2],
    addr: libc::sockaddr_storage,
    rx_bid: u16,
}

/// A received datagram waiting to be handled.
#[derive(Clone, Copy)]
struct Pending {
    bid: u16,
    len: u32,
    from: SocketAddr,
    /// When the kernel received it (or, without a stamp, when its completion was reaped),
    /// nanoseconds since the epoch.
    at: i64,
}

/// The datagram being handled: the one `send_split` bodies refer to.
#[derive(Clone, Copy)]
struct Current {
    bid: u16,
    payload: *mut u8,
    len: usize,
}

/// Everything the kernel may read or write. Leaked rather than freed if the ring could
/// not be drained on drop.
struct Shared {
    rx_bufs: RawBuf,
    buf_ring: RawBuf,
    tx_bufs: RawBuf,
    slots: Box<[TxSlot]>,
    recv_hdr: Box<libc::msghdr>,
    wake_buf: Box<u64>,
}

/// The ring with its buffers and send queue; handed to the handler as its [`Egress`].
pub struct UringEgress {
    ring: IoUring,
    mem: ManuallyDrop<Shared>,
    fd: RawFd,
    /// The socket is fixed file 0.
    fixed: bool,
    /// Single-buffer sends go out as `IORING_OP_SEND` with a destination.
    sendto: bool,
    sojourn: Sojourn,
    /// False until the first enter of a ring set up disabled (`defer_taskrun`).
    enabled: bool,
    /// Deferred task work: receive completions need an enter with GETEVENTS.
    defer: bool,
    wake_fd: Arc<EventFd>,
    v6: bool,
    nbufs: u16,
    ring_tail: u16,
    /// Buffers not in the buffer ring (backlogged or held).
    rx_out: usize,
    holds: Box<[u32]>,
    backlog: VecDeque<Pending>,
    free: Vec<u32>,
    inflight: usize,
    unsubmitted: u64,
    current: Option<Current>,
    recv_armed: bool,
    wake_armed: bool,
    cqes: Box<[(u64, i32, u32)]>,
    stats: IoStats,
}

impl fmt::Debug for UringEgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringEgress")
            .field("fd", &self.fd)
            .field("inflight", &self.inflight)
            .field("backlog", &self.backlog.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

// SAFETY: the raw pointers inside (msghdr, iovecs, `Current`) point only into memory this
// value owns; nothing is shared with another thread, so moving the whole driver is fine.
unsafe impl Send for UringEgress {}

/// One core's socket on io_uring.
#[derive(Debug)]
pub struct UringDriver {
    // Declared first so it is dropped (and drained) before the socket closes.
    io: UringEgress,
    socket: UdpSocket,
    local: SocketAddr,
}

impl UringDriver {
    /// Take over `socket` (non-blocking, see [`super::bind_udp`]) and set up its ring.
    pub fn new(socket: UdpSocket, cfg: &UringConfig) -> io::Result<Self> {
        let invalid = |msg| io::Error::new(io::ErrorKind::InvalidInput, msg);
        let nbufs = cfg.recv_buffers;
        if !nbufs.is_power_of_two() || nbufs > 1 << 15 || nbufs == NO_BID {
            return Err(invalid("recv_buffers must be a power of two ≤ 32768"));
        }
        let max_sends = cfg.max_sends.max(1);
        let local = socket.local_addr()?;
        let fd = socket.as_raw_fd();

        let cq = (cfg.ring_entries as usize * 2)
            .max(max_sends as usize + nbufs as usize + 64)
            .next_power_of_two();
        let build = |defer: bool| {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(cq as u32).setup_clamp();
            if defer {
                // Task work (the multishot receive's completions) runs only when the thread
                // that submits asks for completions. That thread is the one that runs the
                // turns, not necessarily the one building the driver: the ring starts
                // disabled and is enabled (binding it to its issuer) by the first turn.
                builder
                    .setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_taskrun_flag()
                    .setup_r_disabled();
            } else {
                // Completions are posted when this thread next enters the kernel (it does
                // every turn) instead of by interrupting it: no IPIs, no EINTR in blocking
                // calls.
                builder.setup_coop_taskrun();
            }
            builder.build(cfg.ring_entries.max(8))
        };
        let (ring, defer) = match build(cfg.defer_taskrun) {
            // Kernels before 6.1 know no DEFER_TASKRUN.
            Err(e) if cfg.defer_taskrun && e.raw_os_error() == Some(libc::EINVAL) => {
                (build(false)?, false)
            }
            res => (res?, cfg.defer_taskrun),
        };
        if cfg.fixed_file {
            ring.submitter().register_files(&[fd])?;
        }

        let page = page_size();
        let mut mem = Shared {
            rx_bufs: RawBuf::zeroed(nbufs as usize * RX_BUF_LEN, page)?,
            buf_ring: RawBuf::zeroed(nbufs as usize * mem::size_of::<types::BufRingEntry>(), page)?,
            tx_bufs: RawBuf::zeroed(max_sends as usize * MAX_DATAGRAM, page)?,
            slots: (0..max_sends)
                .map(|_| TxSlot {
                    // SAFETY: all-zero is a valid msghdr, iovec and sockaddr_storage.
                    hdr: unsafe { mem::zeroed() },
                    // SAFETY: as above.
                    iov: unsafe { mem::zeroed() },
                    // SAFETY: as above.
                    addr: unsafe { mem::zeroed() },
                    rx_bid: NO_BID,
                })
                .collect(),
            // SAFETY: all-zero is a valid msghdr.
            recv_hdr: Box::new(unsafe { mem::zeroed() }),
            wake_buf: Box::new(0),
        };
        // The slots are boxed and never move, so their self-references stay valid.
        for slot in mem.slots.iter_mut() {
            slot.hdr.msg_name = ptr::addr_of_mut!(slot.addr).cast();
            slot.hdr.msg_iov = slot.iov.as_mut_ptr();
        }
        // Multishot recvmsg only reads the name and control lengths; they fix where the
        // payload lies in every buffer (`PAYLOAD_OFF`), stamps or not.
        mem.recv_hdr.msg_namelen = NAME_LEN as libc::socklen_t;
        mem.recv_hdr.msg_controllen = CONTROL_LEN as _;
        if cfg.max_sojourn.is_some() {
            if let Err(err) = sojourn::enable_rx_timestamps(fd) {
                tracing::warn!(
                    %err,
                    "no receive timestamps: the sojourn bound counts from the driver's reap"
                );
            }
        }

        // SAFETY: the buffer ring memory is page aligned, `nbufs` entries long, and lives in
        // `mem`, which outlives the registration (unregistered or leaked on drop).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                mem.buf_ring.as_ptr() as u64,
                nbufs,
                BGID,
                0,
            )?;
        }

        let mut io = UringEgress {
            ring,
            mem: ManuallyDrop::new(mem),
            fd,
            fixed: cfg.fixed_file,
            sendto: cfg.sendto,
            sojourn: Sojourn::new(cfg.max_sojourn),
            enabled: !defer,
            defer,
            wake_fd: Arc::new(EventFd::new()?),
            v6: local.is_ipv6(),
            nbufs,
            ring_tail: 0,
            rx_out: nbufs as usize,
            holds: vec![0; nbufs as usize].into_boxed_slice(),
            backlog: VecDeque::with_capacity(nbufs as usize),
            free: (0..max_sends).rev().collect(),
            inflight: 0,
            unsubmitted: 0,
            current: None,
            recv_armed: false,
            wake_armed: false,
            cqes: vec![(0, 0, 0); REAP_CHUNK].into_boxed_slice(),
            stats: IoStats::default(),
        };
        for bid in 0..nbufs {
            io.recycle(bid);
        }
        io.arm()?;
        if io.enabled {
            io.enter(0, None)?;
        }
        tracing::info!(
            %local,
            recv_buffers = nbufs,
            max_sends,
            cq_entries = cq,
            "io_uring driver ready"
        );
        Ok(Self { io, socket, local })
    }

    /// The socket this driver owns.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }
}

impl Driver for UringDriver {
    type Egress = UringEgress;

    fn name(&self) -> &'static str {
        "io_uring"
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn waker(&self) -> Arc<dyn Waker> {
        self.io.wake_fd.clone()
    }

    fn turn<H>(&mut self, timeout: Option<Duration>, handler: &mut H) -> io::Result<usize>
    where
        H: FnMut(SocketAddr, &mut [u8], &mut Self::Egress),
    {
        let io = &mut self.io;
        io.stats.turns += 1;
        io.arm()?;
        let ready = !io.backlog.is_empty()
            || !io.ring.completion().is_empty()
            || (io.defer && io.ring.submission().taskrun());
        match timeout {
            _ if ready => io.enter_events()?,
            Some(d) if d.is_zero() => io.enter_events()?,
            wait => io.enter(1, wait)?,
        }
        io.reap();

        // Bounded so that a flood arriving through mid-turn flushes cannot starve the
        // caller's timers; leftovers make the next turn skip its wait.
        let limit = io.nbufs as usize;
        let mut handled = 0;
        let mut seen = 0;
        io.sojourn.begin();
        while seen < limit {
            let Some(p) = io.backlog.pop_front() else {
                break;
            };
            seen += 1;
            if io.sojourn.shed(p.at) {
                // Behind by more than the bound for a while: forwarding it would only add
                // to a standing queue. Its buffer goes straight back to the kernel.
                io.stats.recv_shed += 1;
                io.recycle(p.bid);
                continue;
            }
            let payload = io.payload_ptr(p.bid);
            let len = p.len as usize;
            io.holds[usize::from(p.bid)] += 1;
            io.current = Some(Current {
                bid: p.bid,
                payload,
                len,
            });
            // SAFETY: the kernel finished writing this buffer (its completion was reaped)
            // and cannot get it back while the handler's hold is counted; `len` is within
            // the buffer; no other reference to it exists until the handler returns.
            let data = unsafe { std::slice::from_raw_parts_mut(payload, len) };
            handler(p.from, data, io);
            io.current = None;
            io.release_hold(p.bid);
            handled += 1;
            io.stats.datagrams_received += 1;
            io.stats.bytes_received += len as u64;
        }
        if handled > 0 {
            io.stats.recv_batches += 1;
            io.stats.max_recv_batch = io.stats.max_recv_batch.max(handled as u64);
        }
        io.enter(0, None)?;
        // UDP sends complete inline, within the enter that submitted them: take their
        // completions now. Left in the queue they would make the next turn look ready, and
        // the loop would spend a turn (an enter and the caller's timers) reaping them
        // before it went back to waiting: half the turns at low rates.
        io.reap();
        Ok(handled)
    }

    fn egress(&mut self) -> &mut Self::Egress {
        &mut self.io
    }

    fn flush(&mut self) -> io::Result<()> {
        self.io.flush_all()
    }

    fn stats(&self) -> IoStats {
        self.io.stats
    }
}

impl UringEgress {
    fn payload_ptr(&self, bid: u16) -> *mut u8 {
        self.buf_ptr(bid).wrapping_add(PAYLOAD_OFF)
    }

    fn buf_ptr(&self, bid: u16) -> *mut u8 {
        self.mem
            .rx_bufs
            .as_ptr()
            .wrapping_add(usize::from(bid) * RX_BUF_LEN)
    }

    fn tx_ptr(&self, slot: u32) -> *mut u8 {
        self.mem
            .tx_bufs
            .as_ptr()
            .wrapping_add(slot as usize * MAX_DATAGRAM)
    }

    /// Give buffer `bid` back to the kernel.
    fn recycle(&mut self, bid: u16) {
        let base = self.mem.buf_ring.as_ptr().cast::<types::BufRingEntry>();
        let idx = usize::from(self.ring_tail & (self.nbufs - 1));
        let addr = self.buf_ptr(bid) as u64;
        // SAFETY: `idx < nbufs`, inside the ring memory we own. The kernel only reads
        // entries between its head and our published tail, and this one is at the tail,
        // so it is not being read; the setters leave the shared tail field alone.
        let entry = unsafe { &mut *base.add(idx) };
        entry.set_addr(addr);
        entry.set_len(RX_BUF_LEN as u32);
        entry.set_bid(bid);
        self.ring_tail = self.ring_tail.wrapping_add(1);
        // SAFETY: `base` is the first entry of our registered buffer ring, so `tail` points
        // at its 2-byte aligned tail field, which the kernel reads concurrently: it is only
        // accessed atomically, and the release store publishes the entry written above.
        let tail = unsafe { &*types::BufRingEntry::tail(base).cast::<AtomicU16>() };
        tail.store(self.ring_tail, Ordering::Release);
        self.rx_out -= 1;
    }

    fn release_hold(&mut self, bid: u16) {
        let hold = &mut self.holds[usize::from(bid)];
        *hold -= 1;
        if *hold == 0 {
            self.recycle(bid);
        }
    }

    /// Queue the multishot receive and the eventfd read if they are not pending.
    fn arm(&mut self) -> io::Result<()> {
        if !self.recv_armed && self.rx_out < usize::from(self.nbufs) {
            let hdr: *const libc::msghdr = &*self.mem.recv_hdr;
            let entry = on_socket!(self, RecvMsgMulti(hdr, BGID)).user_data(TAG_RECV);
            self.push(&entry)?;
            self.recv_armed = true;
        }
        if !self.wake_armed {
            let buf: *mut u64 = &mut *self.mem.wake_buf;
            let entry = opcode::Read::new(
                types::Fd(self.wake_fd.0.as_raw_fd()),
                buf.cast(),
                mem::size_of::<u64>() as u32,
            )
            .build()
            .user_data(TAG_WAKE);
            self.push(&entry)?;
            self.wake_armed = true;
        }
        Ok(())
    }

    /// Put `entry` in the submission queue, submitting first if it is full.
    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        for _ in 0..4 {
            // SAFETY: every entry built by this driver points only at driver-owned memory
            // (msghdr, iovecs, sockaddr, buffers, eventfd word) that stays valid and
            // untouched until the entry's completion is reaped.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.enter(0, None)?;
            self.reap();
        }
        Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "io_uring submission queue stays full",
        ))
    }

    /// Submit what is queued and, with deferred task work, post what is pending (the
    /// receive's completions) without waiting.
    fn enter_events(&mut self) -> io::Result<()> {
        if !self.defer {
            return self.enter(0, None);
        }
        self.enable()?;
        let len = self.ring.submission().len();
        // SAFETY: no argument pointer; the SQEs being submitted point only at memory this
        // driver owns (see `push`).
        let res = unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(len as u32, 0, ENTER_GETEVENTS, None)
        };
        self.after_enter(res)
    }

    /// Enable a ring set up disabled: binds it to the calling thread, its only issuer.
    fn enable(&mut self) -> io::Result<()> {
        if !self.enabled {
            self.ring.submitter().register_enable_rings()?;
            self.enabled = true;
        }
        Ok(())
    }

    /// `io_uring_enter`: submit what is queued and wait for `want` completions, at most
    /// `timeout` (None: no bound). Timeouts and interruptions are not errors.
    fn enter(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<()> {
        if want == 0 {
            let sq = self.ring.submission();
            if sq.is_empty() && !sq.cq_overflow() {
                // Nothing to submit or flush: spare the system call.
                return Ok(());
            }
        }
        self.enable()?;
        let res = match timeout {
            Some(d) if want > 0 => {
                let ts = types::Timespec::from(d);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(want, &args)
            }
            _ => self.ring.submit_and_wait(want),
        };
        self.after_enter(res)
    }

    /// Errors of an enter that are not errors, and the send batch it submitted.
    fn after_enter(&mut self, res: io::Result<usize>) -> io::Result<()> {
        let sends = self.unsubmitted;
        match res {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) => {}
            Err(e) => return Err(e),
        }
        if sends > 0 && self.ring.submission().is_empty() {
            self.stats.send_batches += 1;
            self.stats.max_send_batch = self.stats.max_send_batch.max(sends);
            self.unsubmitted = 0;
        }
        Ok(())
    }

    /// Take every completion out of the CQ: sends finish here, datagrams go to the backlog.
    fn reap(&mut self) {
        let now = if self.sojourn.enabled() {
            sojourn::now_ns()
        } else {
            0
        };
        loop {
            let mut n = 0;
            {
                let mut cq = self.ring.completion();
                while n < REAP_CHUNK {
                    let Some(cqe) = cq.next() else { break };
                    self.cqes[n] = (cqe.user_data(), cqe.result(), cqe.flags());
                    n += 1;
                }
            }
            for i in 0..n {
                let (user_data, res, flags) = self.cqes[i];
                match user_data & !((1 << TAG_SHIFT) - 1) {
                    TAG_RECV => self.on_recv(res, flags, now),
                    TAG_SEND => self.on_send(user_data as u32, res),
                    TAG_WAKE => self.wake_armed = false,
                    _ => {} // TAG_CANCEL
                }
            }
            if n < REAP_CHUNK {
                return;
            }
        }
    }

    fn on_recv(&mut self, res: i32, flags: u32, now: i64) {
        if !cqueue::more(flags) {
            self.recv_armed = false;
        }
        if res < 0 {
            match -res {
                libc::ENOBUFS => self.stats.recv_no_buffers += 1,
                libc::ECANCELED => {}
                errno => {
                    self.stats.recv_errors += 1;
                    tracing::trace!(errno, "io_uring recvmsg error");
                }
            }
            return;
        }
        let Some(bid) = cqueue::buffer_select(flags) else {
            self.stats.recv_errors += 1;
            return;
        };
        self.rx_out += 1;
        let len = (res as usize).min(RX_BUF_LEN);
        // SAFETY: the kernel wrote `res` bytes into buffer `bid` and handed it to us with
        // this completion; it is ours until recycled.
        let bytes = unsafe { std::slice::from_raw_parts(self.buf_ptr(bid), len) };
        let parsed = types::RecvMsgOut::parse(bytes, &self.mem.recv_hdr)
            .ok()
            .map(|out| {
                (
                    out.is_payload_truncated(),
                    read_sockaddr(out.name_data()),
                    out.payload_data().len(),
                    sojourn::rx_timestamp(out.control_data()),
                )
            });
        match parsed {
            Some((false, Some(from), plen, stamp)) => self.backlog.push_back(Pending {
                bid,
                len: plen as u32,
                from,
                at: stamp.unwrap_or(now),
            }),
            Some((true, _, _, _)) => {
                self.stats.oversized += 1;
                self.recycle(bid);
            }
            _ => {
                self.stats.recv_errors += 1;
                self.recycle(bid);
            }
        }
    }

    fn on_send(&mut self, slot: u32, res: i32) {
        if res < 0 {
            self.stats.send_errors += 1;
            tracing::trace!(errno = -res, "io_uring sendmsg error");
        } else {
            self.stats.datagrams_sent += 1;
            self.stats.bytes_sent += res as u64;
        }
        let bid = mem::replace(&mut self.mem.slots[slot as usize].rx_bid, NO_BID);
        self.free.push(slot);
        self.inflight -= 1;
        if bid != NO_BID {
            self.release_hold(bid);
        }
    }

    /// A free send slot, waiting (bounded) for completions if all are in flight.
    fn take_slot(&mut self) -> Option<u32> {
        if let Some(slot) = self.free.pop() {
            return Some(slot);
        }
        for _ in 0..SLOT_WAITS {
            if self.enter(1, Some(SLOT_WAIT)).is_err() {
                break;
            }
            self.reap();
            if let Some(slot) = self.free.pop() {
                return Some(slot);
            }
        }
        self.stats.queue_full += 1;
        None
    }

    /// Fill in `slot`'s destination and queue its SQE.
    fn queue(&mut self, slot: u32, to: SocketAddr, iovlen: usize) -> bool {
        let v6 = self.v6;
        let s = &mut self.mem.slots[slot as usize];
        let namelen = write_sockaddr(to, v6, &mut s.addr);
        s.hdr.msg_namelen = namelen;
        s.hdr.msg_iovlen = iovlen as _;
        let entry = if self.sendto && iovlen == 1 {
            let buf = s.iov[0].iov_base.cast_const().cast::<u8>();
            let len = s.iov[0].iov_len as u32;
            let addr = ptr::addr_of!(s.addr).cast::<libc::sockaddr>();
            on_socket!(self, Send(buf, len).dest_addr(addr).dest_addr_len(namelen))
        } else {
            let hdr: *const libc::msghdr = &s.hdr;
            on_socket!(self, SendMsg(hdr))
        }
        .user_data(TAG_SEND | u64::from(slot));
        self.inflight += 1;
        if self.push(&entry).is_err() {
            self.stats.send_errors += 1;
            self.on_send_abandoned(slot);
            return false;
        }
        self.unsubmitted += 1;
        true
    }

    fn on_send_abandoned(&mut self, slot: u32) {
        let bid = mem::replace(&mut self.mem.slots[slot as usize].rx_bid, NO_BID);
        self.free.push(slot);
        self.inflight -= 1;
        if bid != NO_BID {
            self.release_hold(bid);
        }
    }

    fn flush_all(&mut self) -> io::Result<()> {
        self.enter(0, None)?;
        self.reap();
        let mut rounds = 0;
        while self.inflight > 0 {
            if rounds == 200 {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "io_uring sends did not complete",
                ));
            }
            self.enter(1, Some(SLOT_WAIT))?;
            self.reap();
            rounds += 1;
        }
        Ok(())
    }

    /// Cancel everything pending and wait for it; true once the kernel holds no pointer
    /// into our memory.
    fn drain(&mut self) -> bool {
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(TAG_CANCEL);
        if self.push(&cancel).is_err() {
            return false;
        }
        for _ in 0..200 {
            if !self.recv_armed && !self.wake_armed && self.inflight == 0 {
                return true;
            }
            if self.enter(1, Some(SLOT_WAIT)).is_err() {
                return false;
            }
            self.reap();
        }
        !self.recv_armed && !self.wake_armed && self.inflight == 0
    }
}

impl Drop for UringEgress {
    fn drop(&mut self) {
        if self.drain() {
            let _ = self.ring.submitter().unregister_buf_ring(BGID);
            // SAFETY: nothing in flight refers to this memory any more and it is not used
            // after this point.
            unsafe { ManuallyDrop::drop(&mut self.mem) };
        } else {
            tracing::warn!("io_uring did not drain on drop; leaking its buffers");
        }
    }
}

impl Egress for UringEgress {
    fn send_split(&mut self, to: SocketAddr, head: &[u8], body: Range<usize>) -> bool {
        let Some(cur) = self.current else {
            return false;
        };
        if head.len() > HEAD_CAP || body.start > body.end || body.end > cur.len {
            return false;
        }
        let Some(slot) = self.take_slot() else {
            return false;
        };
        let tx = self.tx_ptr(slot);
        // SAFETY: the slot is free, so its tx buffer is ours; `head` fits (≤ HEAD_CAP).
        unsafe { ptr::copy_nonoverlapping(head.as_ptr(), tx, head.len()) };
        let total = head.len() + body.len();
        if self.sendto && total <= MAX_DATAGRAM {
            // SAFETY: the body lies within the datagram being handled (checked above),
            // which the kernel does not write while its handler runs; the copy lands in
            // this free slot's buffer after the head, `total` ≤ MAX_DATAGRAM bytes in all.
            unsafe {
                ptr::copy_nonoverlapping(
                    cur.payload.wrapping_add(body.start),
                    tx.wrapping_add(head.len()),
                    body.len(),
                )
            };
            let s = &mut self.mem.slots[slot as usize];
            s.iov[0] = libc::iovec {
                iov_base: tx.cast(),
                iov_len: total,
            };
            s.rx_bid = NO_BID;
            return self.queue(slot, to, 1);
        }
        let s = &mut self.mem.slots[slot as usize];
        s.iov[0] = libc::iovec {
            iov_base: tx.cast(),
            iov_len: head.len(),
        };
        s.iov[1] = libc::iovec {
            iov_base: cur.payload.wrapping_add(body.start).cast(),
            iov_len: body.len(),
        };
        s.rx_bid = cur.bid;
        self.holds[usize::from(cur.bid)] += 1;
        self.queue(slot, to, 2)
    }

    fn send_with(&mut self, to: SocketAddr, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        let Some(slot) = self.take_slot() else {
            return false;
        };
        let tx = self.tx_ptr(slot);
        // SAFETY: the slot is free, so nothing (kernel included) uses its MAX_DATAGRAM
        // bytes; the slice does not outlive `fill`.
        let len = fill(unsafe { std::slice::from_raw_parts_mut(tx, MAX_DATAGRAM) });
        if len == 0 {
            self.free.push(slot);
            return false;
        }
        let s = &mut self.mem.slots[slot as usize];
        s.iov[0] = libc::iovec {
            iov_base: tx.cast(),
            iov_len: len.min(MAX_DATAGRAM),
        };
        s.rx_bid = NO_BID;
        self.queue(slot, to, 1)
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory side effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 {
        page as usize
    } else {
        4096
    }
}

/// Whether io_uring works here with what [`UringDriver`] needs: builds a small driver on a
/// loopback socket and checks that a datagram goes in through multishot `recvmsg` and back
/// out through `sendmsg`. Any error (old kernel, seccomp, `io_uring_disabled`) means false.
pub fn probe() -> bool {
    match probe_inner() {
        Ok(ok) => ok,
        Err(err) => {
            tracing::info!(%err, "io_uring unavailable");
            false
        }
    }
}

fn probe_inner() -> io::Result<bool> {
    let cfg = super::SocketConfig {
        recv_buffer: 1 << 16,
        send_buffer: 1 << 16,
        ..super::SocketConfig::bound_to((std::net::Ipv4Addr::LOCALHOST, 0).into())
    };
    let server = super::bind_udp(&cfg)?;
    let mut driver = UringDriver::new(
        server,
        &UringConfig {
            ring_entries: 8,
            recv_buffers: 4,
            max_sends: 4,
            ..UringConfig::default()
        },
    )?;
    let client = UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    client.set_read_timeout(Some(Duration::from_millis(500)))?;
    client.send_to(b"prism-probe", driver.local_addr())?;
    let mut got = 0;
    for _ in 0..10 {
        got += driver.turn(
            Some(Duration::from_millis(50)),
            &mut |from, data, egress| {
                let _ = egress.send_split(from, &[], 0..data.len());
            },
        )?;
        if got > 0 {
            break;
        }
    }
    driver.flush()?;
    let mut buf = [0u8; 32];
    let echoed = got == 1 && client.recv(&mut buf).ok() == Some(11) && &buf[..11] == b"prism-probe";
    Ok(echoed)
}
