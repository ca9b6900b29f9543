//! One XDP attachment per interface, shared by the cores that serve it.
//!
//! Why: an interface takes one XDP program (a second `BPF_LINK_CREATE` on it fails with
//! `EBUSY`), so cores cannot each attach their own. The first core's driver to open an
//! interface loads the program ([`crate::bpf`]) with its three maps and attaches it
//! through a bpf_link; the others join that attachment. Each core then registers its
//! AF_XDP socket in the XSKMAP at its receive queue and its media port in the ports map
//! (port → queue + 1), so the program redirects a port's frames only on the queue of the
//! core that owns the port, and passes the rest to the kernel. A core's driver removes
//! its entries when dropped; the attachment (and with it the link: the program leaves the
//! interface) goes when the last driver holding it is dropped, or when the process dies.
//!
//! The registry is keyed by network namespace and interface index (tests run forwarders
//! in several namespaces in one process, where indices repeat). Its lock is taken when a
//! driver opens or closes, never per packet.

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, Weak};

use super::{bpf_sys, XdpMode};
use crate::bpf::{PassReason, COUNTED_QUEUES};

/// (network namespace inode, interface index).
type Key = (u64, u32);

static REGISTRY: Mutex<Vec<(Key, Weak<Attachment>)>> = Mutex::new(Vec::new());

/// The program on one interface, its maps and its link.
#[derive(Debug)]
pub struct Attachment {
    // Dropped first: the program leaves the interface before its maps go.
    _link: OwnedFd,
    _prog: OwnedFd,
    xskmap: OwnedFd,
    ports: OwnedFd,
    counts: OwnedFd,
    mode: XdpMode,
    /// Queues with a registered socket, and their ports.
    members: Mutex<Vec<(u32, u16)>>,
}

/// A failed step, for the driver's error message.
pub type Failed = (&'static str, io::Error);

fn netns_id() -> io::Result<u64> {
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino())
}

/// The attachment on `ifindex` in the calling thread's network namespace: joined if a
/// core already made it, else made (program loaded and attached in `mode`).
pub fn join(ifindex: u32, mode: XdpMode) -> Result<Arc<Attachment>, Failed> {
    let key = (
        netns_id().map_err(|e| ("finding the network namespace", e))?,
        ifindex,
    );
    let mut registry = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    registry.retain(|(_, w)| w.strong_count() > 0);
    if let Some(a) = registry
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, w)| w.upgrade())
    {
        if a.mode != mode {
            return Err((
                "joining the interface's XDP program",
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "it is attached in {:?} mode, this core asks {mode:?}",
                        a.mode
                    ),
                ),
            ));
        }
        return Ok(a);
    }
    let xskmap = bpf_sys::create_xskmap(COUNTED_QUEUES).map_err(|e| ("creating the XSKMAP", e))?;
    let ports = bpf_sys::create_ports().map_err(|e| ("creating the ports map", e))?;
    let counts = bpf_sys::create_counters().map_err(|e| ("creating the counters map", e))?;
    let prog = bpf_sys::load_program(&xskmap, &ports, &counts)
        .map_err(|e| ("loading the XDP program", e))?;
    let flags = match mode {
        XdpMode::Native => bpf_sys::XDP_FLAGS_DRV_MODE,
        XdpMode::Generic => bpf_sys::XDP_FLAGS_SKB_MODE,
    };
    let link =
        bpf_sys::attach(&prog, ifindex, flags).map_err(|e| ("attaching the XDP program", e))?;
    let a = Arc::new(Attachment {
        _link: link,
        _prog: prog,
        xskmap,
        ports,
        counts,
        mode,
        members: Mutex::new(Vec::new()),
    });
    registry.push((key, Arc::downgrade(&a)));
    Ok(a)
}

impl Attachment {
    /// Registers `xsk` for `queue` and `port` as that queue's media port.
    pub fn register(&self, queue: u32, port: u16, xsk: RawFd) -> Result<(), Failed> {
        let step = "registering the socket";
        if queue >= COUNTED_QUEUES {
            let e = io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("queues up to {} are supported", COUNTED_QUEUES - 1),
            );
            return Err((step, e));
        }
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((q, p)) = members.iter().find(|(q, p)| *q == queue || *p == port) {
            let e = io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("queue {q} (port {p}) is already served by another core"),
            );
            return Err((step, e));
        }
        bpf_sys::set_queue_socket(&self.xskmap, queue, xsk).map_err(|e| (step, e))?;
        if let Err(e) = bpf_sys::set_u32(&self.ports, u32::from(port), queue + 1) {
            let _ = bpf_sys::delete(&self.xskmap, queue);
            return Err(("registering the media port", e));
        }
        members.push((queue, port));
        Ok(())
    }

    /// Removes what [`Attachment::register`] added: the port first, so the program passes
    /// its frames to the kernel rather than to a socket about to close.
    pub fn unregister(&self, queue: u32, port: u16) {
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        members.retain(|m| *m != (queue, port));
        let _ = bpf_sys::set_u32(&self.ports, u32::from(port), 0);
        let _ = bpf_sys::delete(&self.xskmap, queue);
    }

    /// What the program passed to the kernel from `queue`, by reason (zeros left out).
    /// System calls: for stats, not per packet.
    pub fn passed(&self, queue: u32) -> Vec<(&'static str, u64)> {
        PassReason::ALL
            .iter()
            .filter_map(|r| {
                let n = bpf_sys::read_counter(&self.counts, r.key(queue)).unwrap_or(0);
                (n > 0).then_some((r.as_str(), n))
            })
            .collect()
    }
}
