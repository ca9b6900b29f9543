//! The fallback driver for kernels without a usable io_uring: a mio-polled socket read
//! with `recvmmsg` and written with `sendmmsg`, a batch at a time.
//!
//! Invariants:
//! - every buffer, iovec, msghdr and sockaddr is allocated at construction; a turn makes
//!   one `epoll_wait` (skipped while the socket is known readable), one `recvmmsg` per
//!   batch of up to `batch` datagrams and one `sendmmsg` per batch of sends;
//! - `send_split` bodies are not copied: their iovec points into the receive buffer, so
//!   every send queued while a receive batch is handled is written out before the next
//!   `recvmmsg` reuses those buffers (the queue is flushed after each batch, and mid-batch
//!   when it fills);
//! - the socket is edge-triggered under mio, so the driver remembers whether it drained it
//!   (a short batch or `EAGAIN`) and only then goes back to waiting;
//! - no standing queue: the kernel stamps each datagram as it arrives (`SO_TIMESTAMPNS`), and
//!   one that waited in the socket's queue [`MAX_SOJOURN`] or more is dropped unhandled
//!   (`recv_shed`) once every datagram for the last 100 ms waited that long (see
//!   [`super::sojourn`]).

use std::fmt;
use std::io;
use std::mem;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};

use super::socket::{read_sockaddr, write_sockaddr};
use super::sojourn::{self, Sojourn, CONTROL_LEN, MAX_SOJOURN};
use super::{Driver, IoStats, RawBuf, Waker};
use crate::egress::{Egress, HEAD_CAP, MAX_DATAGRAM};

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);
/// Consecutive `EAGAIN`s (each followed by a short wait for POLLOUT) before the rest of a
/// send batch is dropped.
const SEND_RETRIES: u32 = 8;
const SEND_WAIT_MS: i32 = 5;

/// Sizes of the mmsg driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmsgConfig {
    /// Datagrams per `recvmmsg`.
    pub batch: usize,
    /// Receive batches per turn at most, so a flood cannot starve timers.
    pub max_batches_per_turn: usize,
    /// Sends queued at once; a full queue is flushed with `sendmmsg` and reused.
    pub max_sends: usize,
    /// Datagrams that waited this long or longer since the kernel received them are dropped
    /// unhandled (counted in `recv_shed`) once every datagram for the last
    /// [`SHED_AFTER`](super::sojourn::SHED_AFTER) waited that long. None: never (and no
    /// receive timestamps are asked for).
    pub max_sojourn: Option<Duration>,
}

impl Default for MmsgConfig {
    fn default() -> Self {
        Self {
            batch: 64,
            max_batches_per_turn: 16,
            max_sends: 1024,
            max_sojourn: Some(MAX_SOJOURN),
        }
    }
}

#[derive(Debug)]
struct MioWaker(mio::Waker);

impl Waker for MioWaker {
    fn wake(&self) {
        // A failed wake can only mean the eventfd is gone with the driver.
        let _ = self.0.wake();
    }
}

/// The datagram being handled, for `send_split`.
#[derive(Clone, Copy)]
struct Current {
    payload: *mut u8,
    len: usize,
}

/// The send queue; handed to the handler as its [`Egress`].
pub struct MmsgEgress {
    fd: RawFd,
    v6: bool,
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[[libc::iovec; 2]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    bufs: RawBuf,
    queued: usize,
    current: Option<Current>,
    stats: IoStats,
}

impl fmt::Debug for MmsgEgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmsgEgress")
            .field("fd", &self.fd)
            .field("queued", &self.queued)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

// SAFETY: the raw pointers inside point only into memory this value owns (or, for
// `current`, into its driver's receive buffers, set and cleared within one turn).
unsafe impl Send for MmsgEgress {}

/// One core's socket on `recvmmsg`/`sendmmsg`.
pub struct MmsgDriver {
    egress: MmsgEgress,
    poll: Poll,
    events: Events,
    socket: mio::net::UdpSocket,
    waker: Arc<MioWaker>,
    local: SocketAddr,
    cfg: MmsgConfig,
    rx_hdrs: Box<[libc::mmsghdr]>,
    rx_iovs: Box<[libc::iovec]>,
    rx_addrs: Box<[libc::sockaddr_storage]>,
    /// Control-message space per receive header (the kernel's timestamp); u64 words keep
    /// it aligned as `cmsghdr` wants.
    rx_ctrl: Box<[[u64; CONTROL_LEN / 8]]>,
    /// The kernel stamps what it receives (`max_sojourn` set and the option took).
    stamped: bool,
    sojourn: Sojourn,
    /// Backs `rx_iovs`; only reached through them.
    _rx_bufs: RawBuf,
    /// The socket may hold more datagrams: do not wait before reading.
    readable: bool,
}

impl fmt::Debug for MmsgDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmsgDriver")
            .field("local", &self.local)
            .field("cfg", &self.cfg)
            .field("egress", &self.egress)
            .finish_non_exhaustive()
    }
}

// SAFETY: as for `MmsgEgress`: the msghdrs point only into buffers owned by the driver.
unsafe impl Send for MmsgDriver {}

fn zeroed<T>() -> T {
    // SAFETY: only used for libc structs (msghdr, mmsghdr, iovec, sockaddr_storage) for
    // which all-zero is a valid value.
    unsafe { mem::zeroed() }
}

impl MmsgDriver {
    /// Take over `socket` (non-blocking, see [`super::bind_udp`]).
    pub fn new(socket: UdpSocket, cfg: &MmsgConfig) -> io::Result<Self> {
        let cfg = MmsgConfig {
            batch: cfg.batch.clamp(1, 1024),
            max_batches_per_turn: cfg.max_batches_per_turn.max(1),
            max_sends: cfg.max_sends.clamp(1, 1 << 16),
            max_sojourn: cfg.max_sojourn,
        };
        let stamped = cfg.max_sojourn.is_some()
            && match sojourn::enable_rx_timestamps(socket.as_raw_fd()) {
                Ok(()) => true,
                Err(err) => {
                    tracing::warn!(%err, "no receive timestamps: no sojourn bound");
                    false
                }
            };
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        let mut socket = mio::net::UdpSocket::from_std(socket);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE)?;
        let waker = Arc::new(MioWaker(mio::Waker::new(poll.registry(), WAKER)?));

        let rx_bufs = RawBuf::zeroed(cfg.batch * MAX_DATAGRAM, 64)?;
        let mut rx_iovs: Box<[libc::iovec]> = (0..cfg.batch)
            .map(|i| libc::iovec {
                iov_base: rx_bufs.as_ptr().wrapping_add(i * MAX_DATAGRAM).cast(),
                iov_len: MAX_DATAGRAM,
            })
            .collect();
        let mut rx_addrs: Box<[libc::sockaddr_storage]> =
            (0..cfg.batch).map(|_| zeroed()).collect();
        let sojourn = Sojourn::new(cfg.max_sojourn);
        let mut rx_ctrl: Box<[[u64; CONTROL_LEN / 8]]> =
            (0..cfg.batch).map(|_| [0; CONTROL_LEN / 8]).collect();
        let mut rx_hdrs: Box<[libc::mmsghdr]> = (0..cfg.batch).map(|_| zeroed()).collect();
        for (i, h) in rx_hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_name = ptr::addr_of_mut!(rx_addrs[i]).cast();
            h.msg_hdr.msg_iov = ptr::addr_of_mut!(rx_iovs[i]);
            h.msg_hdr.msg_iovlen = 1;
            if stamped {
                h.msg_hdr.msg_control = rx_ctrl[i].as_mut_ptr().cast();
            }
        }

        let n = cfg.max_sends;
        let bufs = RawBuf::zeroed(n * MAX_DATAGRAM, 64)?;
        let mut iovs: Box<[[libc::iovec; 2]]> = (0..n).map(|_| zeroed()).collect();
        let mut addrs: Box<[libc::sockaddr_storage]> = (0..n).map(|_| zeroed()).collect();
        let mut hdrs: Box<[libc::mmsghdr]> = (0..n).map(|_| zeroed()).collect();
        for (i, h) in hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_name = ptr::addr_of_mut!(addrs[i]).cast();
            h.msg_hdr.msg_iov = iovs[i].as_mut_ptr();
        }

        let egress = MmsgEgress {
            fd: socket.as_raw_fd(),
            v6: local.is_ipv6(),
            hdrs,
            iovs,
            addrs,
            bufs,
            queued: 0,
            current: None,
            stats: IoStats::default(),
        };
        tracing::info!(%local, batch = cfg.batch, max_sends = n, "mmsg driver ready");
        Ok(Self {
            egress,
            poll,
            events: Events::with_capacity(8),
            socket,
            waker,
            local,
            cfg,
            rx_hdrs,
            rx_iovs,
            rx_addrs,
            rx_ctrl,
            stamped,
            sojourn,
            _rx_bufs: rx_bufs,
            readable: true,
        })
    }

    /// The socket this driver owns.
    pub fn socket(&self) -> &mio::net::UdpSocket {
        &self.socket
    }

    /// Read and handle batches until the socket is drained or the per-turn cap is hit.
    fn drain<H>(&mut self, handler: &mut H) -> usize
    where
        H: FnMut(SocketAddr, &mut [u8], &mut MmsgEgress),
    {
        let mut handled = 0;
        self.sojourn.begin();
        for _ in 0..self.cfg.max_batches_per_turn {
            let n = match self.recv_batch() {
                Ok(n) => n,
                Err(err) => {
                    // A pending socket error (e.g. from ICMP) is reported once; carry on.
                    self.egress.stats.recv_errors += 1;
                    tracing::trace!(%err, "recvmmsg error");
                    break;
                }
            };
            if n < self.rx_hdrs.len() {
                // Short batch: the queue was empty when recvmmsg stopped, so anything
                // newer raises a fresh edge.
                self.readable = false;
            }
            if n == 0 {
                break;
            }
            let stats = &mut self.egress.stats;
            stats.recv_batches += 1;
            stats.max_recv_batch = stats.max_recv_batch.max(n as u64);
            for i in 0..n {
                let h = &self.rx_hdrs[i];
                if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    self.egress.stats.oversized += 1;
                    continue;
                }
                let len = (h.msg_len as usize).min(MAX_DATAGRAM);
                let namelen =
                    (h.msg_hdr.msg_namelen as usize).min(mem::size_of::<libc::sockaddr_storage>());
                // SAFETY: `rx_addrs[i]` is a live sockaddr_storage of which the kernel
                // filled `namelen` bytes.
                let name = unsafe {
                    std::slice::from_raw_parts(ptr::addr_of!(self.rx_addrs[i]).cast(), namelen)
                };
                let Some(from) = read_sockaddr(name) else {
                    self.egress.stats.recv_errors += 1;
                    continue;
                };
                if self.stamped {
                    // size_t on glibc, socklen_t on musl.
                    #[allow(clippy::unnecessary_cast)]
                    let clen = (h.msg_hdr.msg_controllen as usize).min(CONTROL_LEN);
                    // SAFETY: `rx_ctrl[i]` is CONTROL_LEN live bytes of which the kernel
                    // filled `clen`.
                    let control = unsafe {
                        std::slice::from_raw_parts(self.rx_ctrl[i].as_ptr().cast::<u8>(), clen)
                    };
                    if let Some(stamp) = sojourn::rx_timestamp(control) {
                        if self.sojourn.shed(stamp) {
                            // Behind by more than the bound for a while.
                            self.egress.stats.recv_shed += 1;
                            continue;
                        }
                    }
                }
                let payload = self.rx_iovs[i].iov_base.cast::<u8>();
                self.egress.current = Some(Current { payload, len });
                // SAFETY: the kernel wrote `len` ≤ MAX_DATAGRAM bytes into this buffer,
                // which is not touched again (by us or the kernel) until the handler
                // returned and the sends pointing into it were flushed.
                let data = unsafe { std::slice::from_raw_parts_mut(payload, len) };
                handler(from, data, &mut self.egress);
                self.egress.current = None;
                self.egress.stats.datagrams_received += 1;
                self.egress.stats.bytes_received += len as u64;
                handled += 1;
            }
            // The next recvmmsg reuses these buffers: send everything pointing into them.
            self.egress.flush_queue();
            if !self.readable {
                break;
            }
        }
        handled
    }

    /// One `recvmmsg`; Ok(0) when nothing is waiting.
    fn recv_batch(&mut self) -> io::Result<usize> {
        let controllen = if self.stamped { CONTROL_LEN } else { 0 };
        for h in self.rx_hdrs.iter_mut() {
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_controllen = controllen as _;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        loop {
            // SAFETY: `rx_hdrs` holds `batch` headers whose name, iovec and buffer pointers
            // lead into allocations owned by `self` and sized as the headers say.
            let n = unsafe {
                libc::recvmmsg(
                    self.socket.as_raw_fd(),
                    self.rx_hdrs.as_mut_ptr(),
                    self.rx_hdrs.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    ptr::null_mut(),
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(err),
            }
        }
    }
}

impl Driver for MmsgDriver {
    type Egress = MmsgEgress;

    fn name(&self) -> &'static str {
        "mmsg"
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn waker(&self) -> Arc<dyn Waker> {
        self.waker.clone()
    }

    fn turn<H>(&mut self, timeout: Option<Duration>, handler: &mut H) -> io::Result<usize>
    where
        H: FnMut(SocketAddr, &mut [u8], &mut Self::Egress),
    {
        self.egress.stats.turns += 1;
        // Sends queued outside a turn go first, so a long wait does not delay them.
        self.egress.flush_queue();
        let mut handled = if self.readable {
            self.drain(handler)
        } else {
            0
        };
        if handled == 0 && !self.readable {
            match self.poll.poll(&mut self.events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            self.readable = self.events.iter().any(|e| e.token() == SOCKET);
            if self.readable {
                handled = self.drain(handler);
            }
        }
        Ok(handled)
    }

    fn egress(&mut self) -> &mut Self::Egress {
        &mut self.egress
    }

    fn flush(&mut self) -> io::Result<()> {
        self.egress.flush_queue();
        Ok(())
    }

    fn stats(&self) -> IoStats {
        self.egress.stats
    }
}

impl MmsgEgress {
    fn tx_ptr(&self, slot: usize) -> *mut u8 {
        self.bufs.as_ptr().wrapping_add(slot * MAX_DATAGRAM)
    }

    /// A free slot, flushing the queue first if it is full.
    fn take_slot(&mut self) -> Option<usize> {
        if self.queued == self.hdrs.len() {
            self.flush_queue();
        }
        if self.queued < self.hdrs.len() {
            Some(self.queued)
        } else {
            self.stats.queue_full += 1;
            None
        }
    }

    fn commit(&mut self, slot: usize, to: SocketAddr, iovlen: usize) -> bool {
        let namelen = write_sockaddr(to, self.v6, &mut self.addrs[slot]);
        let h = &mut self.hdrs[slot].msg_hdr;
        h.msg_namelen = namelen;
        h.msg_iovlen = iovlen as _;
        self.queued += 1;
        true
    }

    /// `sendmmsg` everything queued. Sends the kernel refuses are counted and skipped;
    /// on a full socket buffer it waits briefly for room a few times, then drops the rest.
    fn flush_queue(&mut self) {
        let total = self.queued;
        if total == 0 {
            return;
        }
        self.stats.send_batches += 1;
        self.stats.max_send_batch = self.stats.max_send_batch.max(total as u64);
        let mut start = 0;
        let mut retries = 0;
        while start < total {
            // SAFETY: headers `start..total` are initialised and point at iovecs, buffers
            // and addresses owned by this queue or, for split bodies, at receive buffers
            // the driver keeps untouched until this flush returned.
            let n = unsafe {
                libc::sendmmsg(
                    self.fd,
                    self.hdrs.as_mut_ptr().add(start),
                    (total - start) as libc::c_uint,
                    0,
                )
            };
            if n > 0 {
                for h in &self.hdrs[start..start + n as usize] {
                    self.stats.datagrams_sent += 1;
                    self.stats.bytes_sent += u64::from(h.msg_len);
                }
                start += n as usize;
                retries = 0;
                continue;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock if retries < SEND_RETRIES => {
                    retries += 1;
                    self.wait_writable();
                }
                io::ErrorKind::WouldBlock => {
                    self.stats.send_errors += (total - start) as u64;
                    tracing::trace!(dropped = total - start, "socket send buffer stays full");
                    break;
                }
                _ => {
                    // The first message of the rest was refused: count it, go on.
                    self.stats.send_errors += 1;
                    tracing::trace!(%err, "sendmmsg error");
                    start += 1;
                }
            }
        }
        self.queued = 0;
    }

    fn wait_writable(&self) {
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd on the stack; the result only decides whether to retry.
        let _ = unsafe { libc::poll(&mut pfd, 1, SEND_WAIT_MS) };
    }
}

impl Egress for MmsgEgress {
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
        // SAFETY: queued slots are below `queued`; this one is not, so its buffer is free,
        // and `head` fits in it (≤ HEAD_CAP < MAX_DATAGRAM).
        unsafe { ptr::copy_nonoverlapping(head.as_ptr(), tx, head.len()) };
        self.iovs[slot] = [
            libc::iovec {
                iov_base: tx.cast(),
                iov_len: head.len(),
            },
            libc::iovec {
                iov_base: cur.payload.wrapping_add(body.start).cast(),
                iov_len: body.len(),
            },
        ];
        self.commit(slot, to, 2)
    }

    fn send_with(&mut self, to: SocketAddr, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        let Some(slot) = self.take_slot() else {
            return false;
        };
        let tx = self.tx_ptr(slot);
        // SAFETY: the slot is not queued, so nothing else uses its MAX_DATAGRAM bytes; the
        // slice does not outlive `fill`.
        let len = fill(unsafe { std::slice::from_raw_parts_mut(tx, MAX_DATAGRAM) });
        if len == 0 {
            return false;
        }
        self.iovs[slot][0] = libc::iovec {
            iov_base: tx.cast(),
            iov_len: len.min(MAX_DATAGRAM),
        };
        self.commit(slot, to, 1)
    }
}
