//! How long a received datagram waited before its turn came, and the rule that sheds a
//! standing queue instead of forwarding it late. Shared by the socket drivers.
//!
//! Why kernel timestamps: a datagram waits first in the socket's receive queue (bounded only
//! in bytes: 8 MB holds seconds of video at a fan-out's knee) and then, on io_uring, in the
//! driver's backlog. Stamping it when the driver first sees it hides the first wait, which
//! is the long one when the loop falls behind. With `SO_TIMESTAMPNS` the kernel stamps each
//! datagram as it enters the host's stack and hands the stamp over as a control message;
//! the sojourn is the time from that stamp to the datagram's turn, whatever queue it sat
//! in. The stamp is `CLOCK_REALTIME` (the only clock the option offers): a stamp from the
//! future (the clock stepped back) counts as no wait, and a step forward makes the
//! datagrams queued across it look old, which the rule below absorbs unless a queue
//! stands anyway.
//!
//! The rule (CoDel's distinction between a queue that drains and one that stands): a
//! datagram that waited [`MAX_SOJOURN`] or longer is dropped unhandled (the driver counts it
//! as `recv_shed`) only when every datagram judged for the last [`SHED_AFTER`] waited that
//! long too. A stall (the thread preempted, a slow command) leaves a backlog that a core
//! with spare capacity works off within that time: none of it is lost. A core that stays
//! behind sheds, and keeps its queue near the bound instead of letting it grow.

use std::io;
use std::mem;
use std::os::fd::RawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default bound on how long a received datagram may wait to be handled.
pub const MAX_SOJOURN: Duration = Duration::from_millis(50);

/// How long every datagram must have waited over the bound before any is shed.
pub const SHED_AFTER: Duration = Duration::from_millis(100);

/// Bytes of control-message space for one `SCM_TIMESTAMPNS`: `CMSG_SPACE(16)` on 64-bit
/// Linux (a 16-byte header, a 16-byte `timespec`). 32-bit targets need less.
pub(crate) const CONTROL_LEN: usize = 32;

/// Datagrams judged between two readings of the clock.
const CLOCK_EVERY: u32 = 16;

/// Ask the kernel to stamp every datagram `fd` receives (`SO_TIMESTAMPNS`).
pub(crate) fn enable_rx_timestamps(fd: RawFd) -> io::Result<()> {
    super::socket::setsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_TIMESTAMPNS,
        &1 as &libc::c_int,
    )
}

/// The `SCM_TIMESTAMPNS` stamp among the control messages `control` holds, in
/// nanoseconds since the epoch. Reads the bytes as they lie (no alignment assumed, no
/// `unsafe`); anything malformed is no stamp.
pub(crate) fn rx_timestamp(control: &[u8]) -> Option<i64> {
    const WORD: usize = mem::size_of::<usize>();
    // cmsghdr: cmsg_len (size_t), cmsg_level (int), cmsg_type (int), data aligned to size_t.
    const HDR: usize = (WORD + 8).next_multiple_of(WORD);
    let mut at = 0;
    while control.len() >= at + HDR {
        let word = |i: usize, n: usize| control.get(at + i..at + i + n);
        let len = match WORD {
            8 => u64::from_ne_bytes(word(0, 8)?.try_into().ok()?) as usize,
            _ => u32::from_ne_bytes(word(0, 4)?.try_into().ok()?) as usize,
        };
        let level = i32::from_ne_bytes(word(WORD, 4)?.try_into().ok()?);
        let kind = i32::from_ne_bytes(word(WORD + 4, 4)?.try_into().ok()?);
        if len < HDR || at + len > control.len() {
            return None;
        }
        if level == libc::SOL_SOCKET && kind == libc::SCM_TIMESTAMPNS {
            let secs_len = mem::size_of::<libc::time_t>();
            let nsec_len = mem::size_of::<libc::c_long>();
            let secs = read_int(word(HDR, secs_len)?)?;
            let nsec = read_int(word(HDR + secs_len, nsec_len)?)?;
            return secs.checked_mul(1_000_000_000)?.checked_add(nsec);
        }
        at += len.next_multiple_of(WORD);
    }
    None
}

fn read_int(bytes: &[u8]) -> Option<i64> {
    match bytes.len() {
        8 => Some(i64::from_ne_bytes(bytes.try_into().ok()?)),
        4 => Some(i64::from(i32::from_ne_bytes(bytes.try_into().ok()?))),
        _ => None,
    }
}

/// Now on the clock the kernel stamps with, in nanoseconds since the epoch.
pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// One driver's shedding state: judges each datagram of a turn by its stamp.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sojourn {
    /// The bound in nanoseconds; `None`: never shed.
    max_ns: Option<i64>,
    /// [`SHED_AFTER`] in nanoseconds.
    after_ns: i64,
    /// When (on `now`'s clock) the run of late datagrams began; None while the last one
    /// judged was on time.
    late_since: Option<i64>,
    judged: u32,
    now: i64,
}

fn nanos(d: Duration) -> i64 {
    d.as_nanos().min(i64::MAX as u128) as i64
}

impl Sojourn {
    pub(crate) fn new(max: Option<Duration>) -> Self {
        Self::with_persistence(max, SHED_AFTER)
    }

    /// As [`Sojourn::new`], shedding once datagrams were late for `after` on end.
    pub(crate) fn with_persistence(max: Option<Duration>, after: Duration) -> Self {
        Self {
            max_ns: max.map(nanos),
            after_ns: nanos(after),
            late_since: None,
            judged: 0,
            now: 0,
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.max_ns.is_some()
    }

    /// Start judging a turn's datagrams.
    pub(crate) fn begin(&mut self) {
        self.judged = 0;
        if self.enabled() {
            self.now = now_ns();
        }
    }

    /// Whether the datagram stamped `stamp_ns` must be dropped unhandled.
    pub(crate) fn shed(&mut self, stamp_ns: i64) -> bool {
        let Some(max) = self.max_ns else {
            return false;
        };
        self.judged += 1;
        if self.judged % CLOCK_EVERY == 0 {
            self.now = now_ns();
        }
        if self.now.saturating_sub(stamp_ns) < max {
            self.late_since = None;
            return false;
        }
        let since = *self.late_since.get_or_insert(self.now);
        self.now - since >= self.after_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((16 + data.len()) as u64).to_ne_bytes());
        v.extend_from_slice(&level.to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(data);
        while v.len() % 8 != 0 {
            v.push(0);
        }
        v
    }

    fn timespec(secs: i64, nsec: i64) -> Vec<u8> {
        [secs.to_ne_bytes(), nsec.to_ne_bytes()].concat()
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn finds_the_stamp_among_other_messages() {
        let mut control = cmsg(libc::IPPROTO_IP, libc::IP_TOS, &[0x2e, 0, 0, 0]);
        control.extend(cmsg(
            libc::SOL_SOCKET,
            libc::SCM_TIMESTAMPNS,
            &timespec(1_700_000_000, 123),
        ));
        assert_eq!(rx_timestamp(&control), Some(1_700_000_000_000_000_123));
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn malformed_control_is_no_stamp() {
        let good = cmsg(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &timespec(1, 2));
        assert_eq!(rx_timestamp(&[]), None);
        assert_eq!(rx_timestamp(&good[..20]), None, "truncated");
        let mut long = good.clone();
        long[0] = 200; // longer than the buffer
        assert_eq!(rx_timestamp(&long), None);
        let mut short = good.clone();
        short[0] = 4; // shorter than its own header
        assert_eq!(rx_timestamp(&short), None);
        let other = cmsg(libc::SOL_SOCKET, libc::SCM_RIGHTS, &[0; 4]);
        assert_eq!(rx_timestamp(&other), None);
    }

    #[test]
    fn sheds_only_once_lateness_persists() {
        let mut s = Sojourn::with_persistence(Some(Duration::from_millis(50)), Duration::ZERO);
        let old = now_ns() - 200_000_000;
        s.begin();
        assert!(s.shed(old), "late, and no persistence asked for");
        assert!(
            !s.shed(now_ns() + 1_000_000_000),
            "a stamp from the future waited 0"
        );

        let mut s = Sojourn::new(Some(Duration::from_millis(50)));
        s.begin();
        for _ in 0..100 {
            assert!(!s.shed(old), "late for less than SHED_AFTER: a stall");
        }
        // Pretend the run of late datagrams began long ago: now it sheds...
        s.late_since = Some(s.now - nanos(SHED_AFTER));
        assert!(s.shed(old));
        // ...until one on time ends the run, and the next late one starts a new one.
        assert!(!s.shed(now_ns()));
        assert!(!s.shed(old));
    }

    #[test]
    fn without_a_bound_nothing_is_shed() {
        let mut s = Sojourn::with_persistence(None, Duration::ZERO);
        for _ in 0..3 {
            s.begin();
            assert!(!s.shed(0));
        }
    }
}
