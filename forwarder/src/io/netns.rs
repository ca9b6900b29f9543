//! Moving the calling thread into a named network namespace (`ip netns add NAME`).
//!
//! Why here: tests and the benchmark's veth mode run a driver on one side of a veth
//! pair and its peers on the other, each side in its own namespace, inside one process.
//! `setns` affects only the calling thread, so each side gets a thread of its own; a
//! socket belongs to the namespace of the thread that created it, even after the thread
//! leaves it.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Moves the calling thread into `/var/run/netns/<name>`.
pub fn enter(name: &str) -> io::Result<()> {
    let f = File::open(format!("/var/run/netns/{name}"))
        .map_err(|e| io::Error::new(e.kind(), format!("network namespace {name:?}: {e}")))?;
    // SAFETY: setns on a namespace descriptor we hold open; it changes only this thread's
    // network namespace.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
