//! The `bpf` syscalls the AF_XDP driver needs: an XSKMAP, a ports map, a counters array,
//! the XDP program
//! ([`crate::bpf`]) loaded through the verifier, a map entry per queue, and a bpf_link
//! attaching the program to the interface.
//!
//! Why by hand: four commands with fixed attribute layouts (linux/bpf.h `union bpf_attr`)
//! do not justify libbpf (a C build) or a loader crate. The attachment is a bpf_link, so
//! it goes away with its file descriptor: when Prism exits, however it exits, the
//! interface is left as it was.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::bpf::{self, Insn};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`: BPF_XDP.
const BPF_XDP: u32 = 37;
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// `union bpf_attr`, as raw bytes written at the documented offsets.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Self([0; 128])
    }
    fn u32_at(&mut self, at: usize, v: u32) -> &mut Self {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64_at(&mut self, at: usize, v: u64) -> &mut Self {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

fn sys_bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<RawFd> {
    // SAFETY: `attr` is a live, 8-aligned 128-byte buffer laid out as `union bpf_attr`
    // for `cmd`; every pointer written into it refers to memory the caller keeps alive
    // for the duration of this call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as RawFd)
    }
}

fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by the kernel for us and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// An XSKMAP with one slot per receive queue.
pub fn create_xskmap(queues: u32) -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32_at(0, BPF_MAP_TYPE_XSKMAP)
        .u32_at(4, 4)
        .u32_at(8, 4)
        .u32_at(12, queues.max(1));
    sys_bpf(BPF_MAP_CREATE, &mut a).map(owned)
}

/// The program's counters: an array of `u64`, [`bpf::PASS_REASONS`] slots per queue for
/// [`bpf::COUNTED_QUEUES`] queues.
pub fn create_counters() -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32_at(0, BPF_MAP_TYPE_ARRAY)
        .u32_at(4, 4)
        .u32_at(8, 8)
        .u32_at(12, bpf::COUNTED_QUEUES * bpf::PASS_REASONS);
    sys_bpf(BPF_MAP_CREATE, &mut a).map(owned)
}

/// The ports map: an array of `u32` indexed by UDP port, the owning queue + 1 (0: not a
/// media port).
pub fn create_ports() -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32_at(0, BPF_MAP_TYPE_ARRAY)
        .u32_at(4, 4)
        .u32_at(8, 4)
        .u32_at(12, bpf::PORTS);
    sys_bpf(BPF_MAP_CREATE, &mut a).map(owned)
}

/// Sets `map[key] = value` for a map of `u32` keys and values.
pub fn set_u32(map: &OwnedFd, key: u32, value: u32) -> io::Result<()> {
    let mut a = Attr::new();
    a.u32_at(0, map.as_raw_fd() as u32)
        .u64_at(8, &key as *const u32 as u64)
        .u64_at(16, &value as *const u32 as u64)
        .u64_at(24, 0);
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(|_| ())
}

/// Removes `map[key]` (an XSKMAP slot).
pub fn delete(map: &OwnedFd, key: u32) -> io::Result<()> {
    let mut a = Attr::new();
    a.u32_at(0, map.as_raw_fd() as u32)
        .u64_at(8, &key as *const u32 as u64);
    sys_bpf(BPF_MAP_DELETE_ELEM, &mut a).map(|_| ())
}

/// One counter of the array `map` (a system call: for stats, not the fast path).
pub fn read_counter(map: &OwnedFd, key: u32) -> io::Result<u64> {
    let mut value = 0u64;
    let mut a = Attr::new();
    a.u32_at(0, map.as_raw_fd() as u32)
        .u64_at(8, &key as *const u32 as u64)
        .u64_at(16, &mut value as *mut u64 as u64);
    sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut a)?;
    Ok(value)
}

/// Registers the AF_XDP socket `xsk` for receive queue `queue`.
pub fn set_queue_socket(map: &OwnedFd, queue: u32, xsk: RawFd) -> io::Result<()> {
    set_u32(map, queue, xsk as u32)
}

/// Loads the redirect program for the XSKMAP `map`, the `ports` map and `counters`; a
/// refusal carries the verifier's log.
pub fn load_program(map: &OwnedFd, ports: &OwnedFd, counters: &OwnedFd) -> io::Result<OwnedFd> {
    let program: Vec<Insn> =
        bpf::redirect_program(map.as_raw_fd(), ports.as_raw_fd(), counters.as_raw_fd());
    let bytes = bpf::to_bytes(&program);
    let license = CString::new("GPL").expect("no NUL");
    let mut log = vec![0u8; 64 * 1024];
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"prism_media");
    let mut a = Attr::new();
    a.u32_at(0, BPF_PROG_TYPE_XDP)
        .u32_at(4, program.len() as u32)
        .u64_at(8, bytes.as_ptr() as u64)
        .u64_at(16, license.as_ptr() as u64)
        .u32_at(24, 1)
        .u32_at(28, log.len() as u32)
        .u64_at(32, log.as_mut_ptr() as u64)
        .u32_at(68, BPF_XDP);
    a.0[48..64].copy_from_slice(&name);
    match sys_bpf(BPF_PROG_LOAD, &mut a) {
        Ok(fd) => Ok(owned(fd)),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            Err(io::Error::new(
                e.kind(),
                format!("the kernel refused the XDP program ({e}): {text}"),
            ))
        }
    }
}

/// Attaches `prog` to interface `ifindex` (`flags`: driver or generic mode). Dropping
/// the returned link detaches it.
pub fn attach(prog: &OwnedFd, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32_at(0, prog.as_raw_fd() as u32)
        .u32_at(4, ifindex)
        .u32_at(8, BPF_XDP)
        .u32_at(12, flags);
    sys_bpf(BPF_LINK_CREATE, &mut a).map(owned)
}
