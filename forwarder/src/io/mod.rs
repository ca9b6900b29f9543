//! The only module that talks to the kernel, and the only one allowed `unsafe`.
//!
//! A [`Driver`] owns one core's UDP socket and runs one loop turn of I/O at a time: wait
//! (bounded by a timeout, cut short by a [`Waker`]) for datagrams, hand each to the caller's
//! handler together with an [`Egress`] to queue replies and forwards on, then submit every
//! queued send of the turn together. Three drivers implement it:
//! - [`uring`]: io_uring with multishot `recvmsg` into a provided-buffer ring and one
//!   `io_uring_enter` for all sends of a turn;
//! - [`mmsg`]: `recvmmsg`/`sendmmsg` on a mio-polled socket, for kernels without io_uring;
//! - [`afxdp`]: an AF_XDP socket on a NIC queue, past the kernel's UDP stack (chosen
//!   explicitly, with an interface; never by `Auto`).
//!
//! Buffers handed to the kernel are owned by the driver, never borrowed from a caller's
//! stack frame: `send_split` records a *range* of the datagram being handled, and the driver
//! keeps that receive buffer alive until the send that reads it has completed.

#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::io;
use std::net::SocketAddr;
use std::ptr::NonNull;
use std::sync::OnceLock;
use std::time::Duration;

pub mod afxdp;
pub mod mmsg;
pub mod netns;
pub mod packet;
pub mod socket;
pub mod sojourn;
pub mod uring;

pub use afxdp::{XdpBind, XdpMode, XdpTarget};
pub use mmsg::{MmsgConfig, MmsgDriver};
pub use socket::{bind_udp, SocketConfig};
pub use sojourn::{MAX_SOJOURN, SHED_AFTER};
pub use uring::{UringConfig, UringDriver};

// The engine's side of the seam lives in `crate::egress`; re-exported here because driver
// users (the bench's reflector) name it next to the drivers.
pub use crate::egress::Egress;

/// Wakes a driver sleeping in [`Driver::turn`] from another thread (an eventfd write).
pub trait Waker: Send + Sync + 'static {
    fn wake(&self);
}

/// Counters a driver keeps about its own work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    pub turns: u64,
    pub recv_batches: u64,
    pub datagrams_received: u64,
    pub bytes_received: u64,
    pub send_batches: u64,
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    /// Sends the kernel refused (e.g. ENOBUFS, unreachable) — counted, not retried.
    pub send_errors: u64,
    /// Datagrams larger than [`MAX_DATAGRAM`](crate::egress::MAX_DATAGRAM), dropped.
    pub oversized: u64,
    /// Sends not queued because the queue was full.
    pub queue_full: u64,
    /// Largest receive batch seen.
    pub max_recv_batch: u64,
    /// Largest send batch submitted.
    pub max_send_batch: u64,
    /// Times the kernel had no free receive buffer (io_uring: ENOBUFS ended the multishot
    /// receive, which was re-armed once buffers came back).
    pub recv_no_buffers: u64,
    /// Receive errors reported by the kernel (counted, the loop carries on).
    pub recv_errors: u64,
    /// Datagrams dropped unhandled because they had waited longer than the driver's bound
    /// on queueing since the kernel received them (the socket drivers, see [`sojourn`]): a
    /// standing queue is shed rather than forwarded late.
    pub recv_shed: u64,
}

/// One core's socket and its I/O loop.
pub trait Driver {
    type Egress: Egress;

    /// Name for stats and logs ("io_uring", "mmsg").
    fn name(&self) -> &'static str;

    /// The socket's local address.
    fn local_addr(&self) -> SocketAddr;

    /// A handle that interrupts a wait in [`Driver::turn`].
    fn waker(&self) -> std::sync::Arc<dyn Waker>;

    /// One loop turn of I/O: wait up to `timeout` (None: until a datagram or a wake-up;
    /// zero: do not wait) for datagrams, call `handler(from, datagram, egress)` for each
    /// datagram received, then submit everything queued. The handler may modify the
    /// datagram in place. Returns the number of datagrams handled.
    fn turn<H>(&mut self, timeout: Option<Duration>, handler: &mut H) -> io::Result<usize>
    where
        H: FnMut(SocketAddr, &mut [u8], &mut Self::Egress);

    /// Egress for sends outside datagram handling (timers, commands). `send_split` returns
    /// false here. What is queued goes out with the next [`Driver::flush`] or `turn`.
    fn egress(&mut self) -> &mut Self::Egress;

    /// Submit everything queued now and wait until the kernel has taken it.
    fn flush(&mut self) -> io::Result<()>;

    fn stats(&self) -> IoStats;

    /// The frame-level counters of a driver below UDP (AF_XDP); None for the socket
    /// drivers. Called for stats requests, not per packet (it may make system calls).
    fn xdp_stats(&self) -> Option<afxdp::XdpStats> {
        None
    }
}

/// Which driver a core uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverKind {
    /// io_uring where the kernel supports what we need, else mmsg.
    Auto,
    IoUring,
    Mmsg,
    /// AF_XDP on a named interface (never chosen by `Auto`: it needs an interface).
    AfXdp,
}

impl DriverKind {
    /// The concrete driver this kind stands for here: `Auto` becomes `IoUring` when
    /// [`uring_available`] says the kernel supports what we need, else `Mmsg`.
    pub fn resolve(self) -> DriverKind {
        match self {
            DriverKind::Auto if uring_available() => DriverKind::IoUring,
            DriverKind::Auto => DriverKind::Mmsg,
            kind => kind,
        }
    }

    /// Builds the driver this kind stands for on `sock` (with its default settings) and
    /// hands it to `user`: the one place that maps a kind to a driver type, so the engine
    /// and the bench never name one. `Driver::turn` is generic, so the driver cannot be a
    /// trait object; `user` is called with the concrete type instead.
    ///
    /// On failure `user` comes back with the error, so it can report it through whatever
    /// it carries (a start-up channel, say).
    pub fn open<U: DriverUser>(
        self,
        sock: std::net::UdpSocket,
        user: U,
    ) -> Result<U::Output, (io::Error, U)> {
        self.open_on(sock, None, user)
    }

    /// As [`DriverKind::open`], with the interface queue an AF_XDP driver serves (the
    /// other kinds ignore it; AF_XDP without it is refused). `sock` stays bound as the
    /// AF_XDP driver's kernel-path socket.
    pub fn open_on<U: DriverUser>(
        self,
        sock: std::net::UdpSocket,
        xdp: Option<&XdpTarget>,
        user: U,
    ) -> Result<U::Output, (io::Error, U)> {
        match self.resolve() {
            DriverKind::Mmsg => match MmsgDriver::new(sock, &MmsgConfig::default()) {
                Ok(d) => Ok(user.run(d)),
                Err(e) => Err((e, user)),
            },
            DriverKind::AfXdp => {
                let Some(t) = xdp else {
                    let e = io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "the af_xdp driver needs an interface (--interface or rtc.interface)",
                    );
                    return Err((e, user));
                };
                match afxdp::AfXdpDriver::on_socket(sock, t) {
                    Ok(d) => Ok(user.run(d)),
                    Err(e) => Err((e, user)),
                }
            }
            _ => match UringDriver::new(sock, &UringConfig::default()) {
                Ok(d) => Ok(user.run(d)),
                Err(e) => Err((e, user)),
            },
        }
    }

    /// The names [`FromStr`](std::str::FromStr) takes.
    pub const NAMES: &'static str = "auto, io_uring (or uring), mmsg, af_xdp";
}

impl std::str::FromStr for DriverKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(DriverKind::Auto),
            "io_uring" | "uring" => Ok(DriverKind::IoUring),
            "mmsg" => Ok(DriverKind::Mmsg),
            "af_xdp" | "afxdp" | "xdp" => Ok(DriverKind::AfXdp),
            other => Err(format!(
                "unknown I/O driver {other:?} (one of: {})",
                DriverKind::NAMES
            )),
        }
    }
}

/// What runs on a driver once [`DriverKind::open`] has built it.
pub trait DriverUser {
    type Output;
    fn run<D: Driver>(self, driver: D) -> Self::Output;
}

/// Whether io_uring with multishot `recvmsg`, provided-buffer rings and sends works in
/// this process (kernel version, seccomp, `io_uring_disabled`). Probed once, then cached.
pub fn uring_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    // The probe builds a ring; run it on a thread of its own so that no task work of that
    // ring is ever queued to the caller's thread (it would interrupt the caller's blocking
    // calls with EINTR).
    *AVAILABLE.get_or_init(|| std::thread::spawn(uring::probe).join().unwrap_or(false))
}

/// A zeroed, fixed heap region shared with the kernel.
///
/// Kept as a raw pointer rather than a `Box` or `Vec` so that handing `&mut` views of one
/// part to the engine never asserts exclusive access to the parts the kernel is reading
/// or writing at the same time. It never moves or grows; it is freed on drop, so owners
/// must make sure the kernel is done with it first (or leak it).
#[derive(Debug)]
pub(crate) struct RawBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl RawBuf {
    /// Allocate `len` zeroed bytes aligned to `align` (a power of two).
    pub(crate) fn zeroed(len: usize, align: usize) -> io::Result<Self> {
        let layout = Layout::from_size_align(len.max(1), align)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad buffer layout"))?;
        // SAFETY: the layout has a non-zero size (`max(1)`).
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(Self { ptr, layout })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for RawBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed` with this very layout and is freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

// SAFETY: `RawBuf` is plain owned memory with no thread affinity; the drivers that hold it
// decide who may touch it.
unsafe impl Send for RawBuf {}
