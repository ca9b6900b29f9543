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
//! future (the clock stepped back) counts as no wait, and a step forward makes one turn's
//! datagrams look old, which the two-turn rule below absorbs unless a queue stands anyway.
//!
//! The rule: a datagram that waited [`MAX_SOJOURN`] or longer is dropped unhandled (the
//! driver counts it as `recv_shed`) only if the previous turn that handled anything found
//! such a datagram too. One late turn is a stall (the thread was preempted, the handler
//! took a lock-free command that was slow): its datagrams are forwarded. A second late turn
//! in a row means a queue stands: forwarding it would keep every later datagram late too.

use std::io;
use std::mem;
use std::os::fd::RawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default bound on how long a received datagram may wait to be handled.
pub const MAX_SOJOURN: Duration = Duration::from_millis(50);

/// Bytes of control-message space for one `SCM_TIMESTAMPNS`: `CMSG_SPACE(16)` on 64-bit
/// Linux (a 16-byte header, a 16-byte `timespec`). 32-bit targets need less.
pub(crate) const CONTROL_LEN: usize = 32;

/// Datagrams judged between two readings of the clock.
const CLOCK_EVERY: u32 = 16;

/// Ask the kernel to stamp every datagram `fd` receives (`SO_TIMESTAMPNS`).
pub(crate) fn enable_rx_timestamps(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: passes a pointer to a live c_int and its size; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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
    /// The last turn that judged anything found a late datagram.
    late_before: bool,
    /// This turn sheds late datagrams.
    shedding: bool,
    late: bool,
    judged: u32,
    now: i64,
}

impl Sojourn {
    pub(crate) fn new(max: Option<Duration>) -> Self {
        Self {
            max_ns: max.map(|d| d.as_nanos().min(i64::MAX as u128) as i64),
            late_before: false,
            shedding: false,
            late: false,
            judged: 0,
            now: 0,
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.max_ns.is_some()
    }

    /// Start judging a turn's datagrams.
    pub(crate) fn begin(&mut self) {
        self.shedding = self.late_before;
        self.late = false;
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
            return false;
        }
        self.late = true;
        self.shedding
    }

    /// End the turn; a turn that judged nothing leaves the previous verdict standing.
    pub(crate) fn end(&mut self) {
        if self.judged > 0 {
            self.late_before = self.late;
        }
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
    fn sheds_only_on_the_second_late_turn() {
        let mut s = Sojourn::new(Some(Duration::from_millis(50)));
        let old = now_ns() - 200_000_000;
        s.begin();
        assert!(!s.shed(old), "one late turn is a stall");
        assert!(!s.shed(now_ns()));
        s.end();
        s.begin();
        assert!(s.shed(old), "a second late turn sheds");
        assert!(
            !s.shed(now_ns() + 1_000_000_000),
            "a stamp from the future waited 0"
        );
        s.end();
        // A turn with nothing to judge keeps the verdict.
        s.begin();
        s.end();
        s.begin();
        assert!(s.shed(old));
        assert!(!s.shed(now_ns()));
        s.end();
        // A turn whose datagrams were all fresh ends the shedding.
        s.begin();
        assert!(s.shed(old));
        s.end();
        s.begin();
        assert!(!s.shed(now_ns()));
        s.end();
        s.begin();
        assert!(!s.shed(old), "a fresh turn resets the rule");
        s.end();
    }

    #[test]
    fn without_a_bound_nothing_is_shed() {
        let mut s = Sojourn::new(None);
        for _ in 0..3 {
            s.begin();
            assert!(!s.shed(0));
            s.end();
        }
    }
}
