//! A raw Ethernet sender (an `AF_PACKET` socket bound to one interface), for tests and
//! tools that put hand-made frames on a link: bad frames for the AF_XDP driver's
//! counters, from the peers' side of a veth pair. Not used by the forwarder itself.
//!
//! It lives here because opening it takes `unsafe` (raw `socket`/`bind`/`send` calls),
//! which Prism keeps under `io/`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// An `AF_PACKET`/`SOCK_RAW` socket bound to an interface (of the calling thread's network
/// namespace); each [`PacketSocket::send`] puts one whole frame on the link as given.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens the socket on `interface` (needs CAP_NET_RAW).
    pub fn open(interface: &str) -> io::Result<Self> {
        let name = CString::new(interface)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))?;
        // SAFETY: a NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(io::Error::last_os_error());
        }
        // Protocol 0: this socket only sends, it receives nothing.
        // SAFETY: plain socket(2).
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: all-zero is a valid `sockaddr_ll`.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        // SAFETY: binds with a live `sockaddr_ll` and its exact size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd })
    }

    /// Sends `frame` (from its destination MAC on) as it is.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: reads `frame.len()` bytes from a live slice.
        let r = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
