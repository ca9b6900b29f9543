//! Binding a core's UDP socket, and converting socket addresses to and from the kernel's
//! `sockaddr` layout without allocating.
//!
//! Invariants: sockets returned by [`bind_udp`] are non-blocking (both drivers rely on it:
//! io_uring polls internally, mmsg stops at `EAGAIN`). An IPv6 socket bound to the
//! unspecified address is dual-stack, and addresses are canonical on the engine's side:
//! IPv4 peers seen through a dual-stack socket are reported as `V4`, and `V4` destinations
//! are mapped back to `::ffff:a.b.c.d` when the socket is IPv6.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// How to open a core's UDP socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketConfig {
    pub bind: SocketAddr,
    /// `SO_RCVBUF` asked for. The kernel caps it at `net.core.rmem_max` (see
    /// `tuning.md` for raising it); what it granted is logged at info.
    pub recv_buffer: usize,
    /// `SO_SNDBUF` asked for, capped at `net.core.wmem_max`.
    pub send_buffer: usize,
    /// `SO_BUSY_POLL` in microseconds (needs a driver with busy-poll support and usually
    /// `CAP_NET_ADMIN` for values above `net.core.busy_poll`).
    pub busy_poll_us: Option<u32>,
    /// `SO_REUSEPORT`, for several sockets on one port.
    pub reuse_port: bool,
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            recv_buffer: 8 << 20,
            send_buffer: 8 << 20,
            busy_poll_us: None,
            reuse_port: false,
        }
    }
}

impl SocketConfig {
    /// The defaults, bound to `bind`.
    pub fn bound_to(bind: SocketAddr) -> Self {
        Self {
            bind,
            ..Self::default()
        }
    }
}

/// Open, tune and bind a non-blocking UDP socket as `cfg` says.
pub fn bind_udp(cfg: &SocketConfig) -> io::Result<UdpSocket> {
    let domain = Domain::for_address(cfg.bind);
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if cfg.bind.is_ipv6() && cfg.bind.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    if cfg.reuse_port {
        socket.set_reuse_port(true)?;
    }
    // Buffer sizes are best effort: the kernel silently caps them, so failures here are
    // reported through the granted sizes below rather than as errors.
    let _ = socket.set_recv_buffer_size(cfg.recv_buffer);
    let _ = socket.set_send_buffer_size(cfg.send_buffer);
    if let Some(us) = cfg.busy_poll_us {
        socket.set_busy_poll(us)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&cfg.bind.into())?;

    // Linux reports twice the usable size (it counts bookkeeping overhead too).
    let granted_recv = socket.recv_buffer_size().unwrap_or(0);
    let granted_send = socket.send_buffer_size().unwrap_or(0);
    let local = socket.local_addr()?.as_socket();
    tracing::info!(
        ?local,
        asked_recv = cfg.recv_buffer,
        granted_recv,
        asked_send = cfg.send_buffer,
        granted_send,
        "udp socket bound (buffers capped by net.core.rmem_max/wmem_max, see tuning.md)"
    );
    Ok(socket.into())
}

/// `setsockopt(fd, level, opt, value)` with `value`'s exact size.
pub(crate) fn setsockopt<T>(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a live `T` and its exact size; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `getsockopt(fd, level, opt)` into a zeroed `T`.
///
/// # Safety
/// `T` must be a plain C type for which all-zero bytes (and any bytes the kernel writes)
/// are a valid value: integers and structs of them.
pub(crate) unsafe fn getsockopt<T>(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    opt: libc::c_int,
) -> io::Result<T> {
    // SAFETY: the caller promises all-zero is a valid `T`.
    let mut value: T = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `value`, a live `T`.
    let r = unsafe { libc::getsockopt(fd, level, opt, (&mut value as *mut T).cast(), &mut len) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(value)
    }
}

/// Write `addr` into `out` as a `sockaddr_in`/`sockaddr_in6` and return its length. On an
/// IPv6 socket (`v6_socket`), IPv4 addresses are written as IPv4-mapped IPv6.
pub(crate) fn write_sockaddr(
    addr: SocketAddr,
    v6_socket: bool,
    out: &mut libc::sockaddr_storage,
) -> libc::socklen_t {
    let addr = match addr {
        SocketAddr::V4(v4) if v6_socket => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        other => other,
    };
    match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sockaddr_storage` is larger than and aligned for every sockaddr
            // type, `sockaddr_in` among them.
            unsafe {
                (out as *mut libc::sockaddr_storage)
                    .cast::<libc::sockaddr_in>()
                    .write(sin)
            };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: as above, `sockaddr_storage` fits and aligns a `sockaddr_in6`.
            unsafe {
                (out as *mut libc::sockaddr_storage)
                    .cast::<libc::sockaddr_in6>()
                    .write(sin6)
            };
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Read a socket address the kernel wrote into `name` (a `sockaddr_*` of `name.len()`
/// bytes, any alignment). IPv4-mapped IPv6 addresses come back as `V4`. None for other
/// families or short names.
pub(crate) fn read_sockaddr(name: &[u8]) -> Option<SocketAddr> {
    if name.len() < mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    let family = libc::sa_family_t::from_ne_bytes([name[0], name[1]]);
    match i32::from(family) {
        libc::AF_INET if name.len() >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the length was checked; `read_unaligned` copes with any alignment
            // and every bit pattern is a valid `sockaddr_in`.
            let sin = unsafe { name.as_ptr().cast::<libc::sockaddr_in>().read_unaligned() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if name.len() >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for `sockaddr_in6`.
            let sin6 = unsafe { name.as_ptr().cast::<libc::sockaddr_in6>().read_unaligned() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    port,
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(addr: SocketAddr, v6_socket: bool) -> Option<SocketAddr> {
        // SAFETY: all-zero is a valid `sockaddr_storage`.
        let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let len = write_sockaddr(addr, v6_socket, &mut storage);
        // SAFETY: `storage` is `len` initialised bytes long (len <= its size).
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&storage as *const libc::sockaddr_storage).cast(),
                len as usize,
            )
        };
        read_sockaddr(bytes)
    }

    #[test]
    fn sockaddr_round_trips() {
        let v4: SocketAddr = "192.0.2.7:5004".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        assert_eq!(round_trip(v4, false), Some(v4));
        assert_eq!(round_trip(v4, true), Some(v4), "mapped and back");
        assert_eq!(round_trip(v6, true), Some(v6));
        assert_eq!(read_sockaddr(&[0u8; 1]), None);
    }

    #[test]
    fn binds_v4_and_v6_nonblocking() {
        let v4 = bind_udp(&SocketConfig::bound_to("127.0.0.1:0".parse().unwrap())).unwrap();
        let mut buf = [0u8; 4];
        let err = v4.recv_from(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        if let Ok(v6) = bind_udp(&SocketConfig::bound_to("[::1]:0".parse().unwrap())) {
            assert!(v6.local_addr().unwrap().is_ipv6());
        }
    }
}
