//! One AF_XDP socket with its own UMEM: the memory frames live in, and the four rings
//! shared with the kernel (fill and RX for receiving, TX and completion for sending).
//!
//! Why this shape: one UMEM and one socket per core and NIC queue, nothing shared, so no
//! ring is ever touched by two threads and no atomics beyond the rings' own
//! producer/consumer words are needed. Rings are single-producer single-consumer: the
//! side that produces writes descriptors, then publishes its index with a release store;
//! the side that consumes reads the other's index with an acquire load.
//!
//! All `unsafe` here is mmap/munmap, socket options and raw ring access; the frame
//! contents are handled by safe code in `wire::frame` through slices this module hands
//! out.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::io::socket::{getsockopt, setsockopt};

/// An anonymous mapping, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn anonymous(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        Self::from_mmap(p, len)
    }

    fn ring(fd: RawFd, len: usize, offset: u64) -> io::Result<Self> {
        // SAFETY: maps the socket's ring at the offset the kernel documents for it; the
        // mapping is shared with the kernel and lives until this value is dropped.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                offset as libc::off_t,
            )
        };
        Self::from_mmap(p, len)
    }

    fn from_mmap(p: *mut libc::c_void, len: usize) -> io::Result<Self> {
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region `mmap` returned, once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

// SAFETY: the mapping is plain memory (or a ring shared with the kernel); the driver
// that owns it decides which thread touches it.
unsafe impl Send for Mapping {}

/// One ring of `T` descriptors (u64 frame addresses for fill/completion, `xdp_desc` for
/// RX/TX).
#[derive(Debug)]
pub struct Ring<T> {
    _map: Mapping,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut T,
    mask: u32,
    size: u32,
}

// SAFETY: as for `Mapping`: one owner thread at a time.
unsafe impl<T> Send for Ring<T> {}

impl<T: Copy> Ring<T> {
    fn map(fd: RawFd, off: &libc::xdp_ring_offset, size: u32, pgoff: u64) -> io::Result<Self> {
        let len = off.desc as usize + size as usize * mem::size_of::<T>();
        let map = Mapping::ring(fd, len, pgoff)?;
        let base = map.ptr.as_ptr();
        // SAFETY: the kernel's offsets lie within the mapping it gave us (`len` covers the
        // descriptor array, which comes after the index words).
        let (producer, consumer, flags, descs) = unsafe {
            (
                base.add(off.producer as usize) as *const AtomicU32,
                base.add(off.consumer as usize) as *const AtomicU32,
                base.add(off.flags as usize) as *const AtomicU32,
                base.add(off.desc as usize) as *mut T,
            )
        };
        Ok(Self {
            _map: map,
            producer,
            consumer,
            flags,
            descs,
            mask: size - 1,
            size,
        })
    }

    fn load(p: *const AtomicU32, order: Ordering) -> u32 {
        // SAFETY: `p` points at an aligned u32 index word inside our live mapping.
        unsafe { (*p).load(order) }
    }

    fn store(p: *const AtomicU32, v: u32) {
        // SAFETY: as in `load`; we are the only writer of our side's index.
        unsafe { (*p).store(v, Ordering::Release) }
    }

    /// Whether the kernel asked to be woken (`XDP_RING_NEED_WAKEUP`).
    pub fn needs_wakeup(&self) -> bool {
        Self::load(self.flags, Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    // --- as producer (fill, TX) ---

    /// Entries produced that the kernel has not consumed yet.
    pub fn in_flight(&self) -> u32 {
        self.size - self.free()
    }

    /// Free slots for us to produce into.
    pub fn free(&self) -> u32 {
        let prod = Self::load(self.producer, Ordering::Relaxed);
        let cons = Self::load(self.consumer, Ordering::Acquire);
        self.size - prod.wrapping_sub(cons)
    }

    /// Writes `items` after the current producer index and publishes them. The caller
    /// checked [`Ring::free`].
    pub fn produce(&mut self, items: &[T]) {
        let mut prod = Self::load(self.producer, Ordering::Relaxed);
        for item in items {
            // SAFETY: the index is masked into the descriptor array, and the slot is
            // free (the caller checked `free`), so the kernel is not reading it.
            unsafe { self.descs.add((prod & self.mask) as usize).write(*item) };
            prod = prod.wrapping_add(1);
        }
        Self::store(self.producer, prod);
    }

    // --- as consumer (RX, completion) ---

    /// Takes up to `out.len()` descriptors the kernel produced; returns how many.
    pub fn consume(&mut self, out: &mut [T]) -> usize {
        let cons = Self::load(self.consumer, Ordering::Relaxed);
        let prod = Self::load(self.producer, Ordering::Acquire);
        let n = (prod.wrapping_sub(cons) as usize).min(out.len());
        for (i, slot) in out[..n].iter_mut().enumerate() {
            let at = cons.wrapping_add(i as u32) & self.mask;
            // SAFETY: slots between our consumer and the kernel's producer index hold
            // descriptors the kernel published (acquire above), masked into the array.
            *slot = unsafe { self.descs.add(at as usize).read() };
        }
        Self::store(self.consumer, cons.wrapping_add(n as u32));
        n
    }
}

/// Sizes of a socket and its UMEM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XskSizes {
    /// Frames in the UMEM (half for receiving, half for sending).
    pub frames: u32,
    /// Bytes per frame (2048 or 4096).
    pub frame_size: u32,
    /// Descriptors per ring (a power of two).
    pub ring: u32,
}

impl Default for XskSizes {
    fn default() -> Self {
        Self {
            frames: 4096,
            frame_size: 4096,
            ring: 2048,
        }
    }
}

/// An AF_XDP socket bound to one interface queue, with its UMEM and rings. The rings
/// are public so the driver can hand the receive side and the send side to different
/// owners; the socket and the UMEM mapping must outlive every [`Umem`] handle.
#[derive(Debug)]
pub struct Xsk {
    fd: OwnedFd,
    umem: Mapping,
    pub sizes: XskSizes,
}

/// The four rings of an [`Xsk`].
#[derive(Debug)]
pub struct Rings {
    pub fill: Ring<u64>,
    pub completion: Ring<u64>,
    pub rx: Ring<libc::xdp_desc>,
    pub tx: Ring<libc::xdp_desc>,
}

/// Where frames live: a copyable view of the UMEM mapping owned by an [`Xsk`].
#[derive(Clone, Copy, Debug)]
pub struct Umem {
    base: NonNull<u8>,
    len: usize,
    frame_size: usize,
}

// SAFETY: a view of memory owned by the `Xsk` that its driver keeps alive; the driver
// is the only user.
unsafe impl Send for Umem {}

impl Umem {
    pub fn frame_size(&self) -> usize {
        self.frame_size
    }

    /// Frames in the UMEM.
    pub fn frames(&self) -> usize {
        self.len / self.frame_size
    }

    /// The start of the frame holding `addr`.
    pub fn frame_start(&self, addr: u64) -> u64 {
        addr - addr % self.frame_size as u64
    }

    /// The bytes `addr..addr + len` of the UMEM, clamped to it.
    ///
    /// # Safety
    /// The caller owns those bytes' frame (it is in none of the kernel's rings), the
    /// `Xsk` is alive, and no other reference into that frame exists while the slice
    /// lives.
    pub unsafe fn bytes_mut<'a>(&self, addr: u64, len: usize) -> &'a mut [u8] {
        let end = (addr as usize).saturating_add(len).min(self.len);
        let start = (addr as usize).min(end);
        // SAFETY: the range is inside the mapping; exclusivity is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(start), end - start) }
    }
}

impl Xsk {
    /// Opens a socket, registers a UMEM, maps the rings and binds to `ifindex`/`queue`
    /// with need-wakeup, in zero-copy mode if `zero_copy` (refused with `EOPNOTSUPP` where
    /// the NIC's driver has none), else in copy mode.
    pub fn open(
        ifindex: u32,
        queue: u32,
        sizes: XskSizes,
        zero_copy: bool,
    ) -> io::Result<(Self, Rings)> {
        if !sizes.ring.is_power_of_two() || !sizes.frame_size.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "AF_XDP ring and frame sizes must be powers of two",
            ));
        }
        // SAFETY: plain socket(2).
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem_len = sizes.frames as usize * sizes.frame_size as usize;
        let umem = Mapping::anonymous(umem_len)?;
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr.as_ptr() as u64,
            len: umem_len as u64,
            chunk_size: sizes.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(raw, libc::SOL_XDP, libc::XDP_UMEM_REG, &reg)?;
        setsockopt(raw, libc::SOL_XDP, libc::XDP_UMEM_FILL_RING, &sizes.ring)?;
        setsockopt(
            raw,
            libc::SOL_XDP,
            libc::XDP_UMEM_COMPLETION_RING,
            &sizes.ring,
        )?;
        setsockopt(raw, libc::SOL_XDP, libc::XDP_RX_RING, &sizes.ring)?;
        setsockopt(raw, libc::SOL_XDP, libc::XDP_TX_RING, &sizes.ring)?;

        // SAFETY: `xdp_mmap_offsets` is plain integers.
        let off: libc::xdp_mmap_offsets =
            unsafe { getsockopt(raw, libc::SOL_XDP, libc::XDP_MMAP_OFFSETS)? };
        let fill = Ring::map(raw, &off.fr, sizes.ring, libc::XDP_UMEM_PGOFF_FILL_RING)?;
        let completion = Ring::map(
            raw,
            &off.cr,
            sizes.ring,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
        )?;
        let rx = Ring::map(raw, &off.rx, sizes.ring, libc::XDP_PGOFF_RX_RING as u64)?;
        let tx = Ring::map(raw, &off.tx, sizes.ring, libc::XDP_PGOFF_TX_RING as u64)?;

        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: if zero_copy {
                libc::XDP_ZEROCOPY
            } else {
                libc::XDP_COPY
            } | libc::XDP_USE_NEED_WAKEUP,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: binds with a live `sockaddr_xdp` and its exact size.
        let r = unsafe {
            libc::bind(
                raw,
                (&sa as *const libc::sockaddr_xdp).cast(),
                mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((
            Self { fd, umem, sizes },
            Rings {
                fill,
                completion,
                rx,
                tx,
            },
        ))
    }

    /// Whether the kernel runs the socket in zero-copy mode (`XDP_OPTIONS`).
    pub fn is_zero_copy(&self) -> io::Result<bool> {
        // SAFETY: `xdp_options` is plain integers.
        let o: libc::xdp_options =
            unsafe { getsockopt(self.raw_fd(), libc::SOL_XDP, libc::XDP_OPTIONS)? };
        Ok(o.flags & libc::XDP_OPTIONS_ZEROCOPY != 0)
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// A handle on the UMEM for the code that reads and writes frames.
    pub fn umem(&self) -> Umem {
        Umem {
            base: self.umem.ptr,
            len: self.umem.len,
            frame_size: self.sizes.frame_size as usize,
        }
    }

    /// Tells the kernel to transmit what the TX ring holds (copy mode needs a kick).
    /// Returns true when the kernel stopped with frames left on the ring: in copy mode one
    /// kick sends at most one batch (32 frames in Linux's `xsk_generic_xmit`) and answers
    /// `EAGAIN` if there were more, so the caller kicks again.
    pub fn kick_tx(&self) -> io::Result<bool> {
        // SAFETY: a zero-length sendto on our own socket, no buffers involved.
        let r = unsafe {
            libc::sendto(
                self.raw_fd(),
                ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                ptr::null(),
                0,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(true),
                // Busy or no buffers: the kernel will get to it on the next kick.
                Some(libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN) => return Ok(false),
                _ => return Err(e),
            }
        }
        Ok(false)
    }

    /// The kernel's drop counters for this socket.
    pub fn statistics(&self) -> io::Result<libc::xdp_statistics> {
        // SAFETY: `xdp_statistics` is plain integers.
        unsafe { getsockopt(self.raw_fd(), libc::SOL_XDP, libc::XDP_STATISTICS) }
    }
}
