//! Packet index estimation (RFC 3711 §3.3.1, Appendix A) and the replay window (§3.3.2).
//!
//! Both work on a 64-bit extended index (`ROC << 16 | SEQ` for SRTP, the 31-bit SRTCP
//! index for SRTCP). The window is a 128-bit bitmap anchored at the highest index that has
//! authenticated: bit `d` set means index `max - d` was received. `check` only reads;
//! `accept` is called after authentication so forged packets leave no trace.

use super::SrtpError;

/// Packets older than this many indices below the newest are rejected as `TooOld`.
pub(crate) const WINDOW: u64 = 128;

/// The index of `seq` nearest to `max` (the highest index seen), i.e. the RFC 3711
/// Appendix A guess of the rollover counter `v` in {ROC-1, ROC, ROC+1}. `None` before any
/// packet: the first packet of a stream has ROC 0. A guess below zero (a packet from
/// before the first one, across a wrap) is `TooOld`.
pub(crate) fn estimate_index(max: Option<u64>, seq: u16) -> Result<u64, SrtpError> {
    let Some(max) = max else {
        return Ok(u64::from(seq));
    };
    let delta = i64::from(seq.wrapping_sub(max as u16) as i16);
    max.checked_add_signed(delta).ok_or(SrtpError::TooOld)
}

/// A 128-packet sliding replay window.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReplayWindow {
    /// Highest accepted index; `None` until the first packet.
    max: Option<u64>,
    bits: u128,
}

impl ReplayWindow {
    pub(crate) fn max(&self) -> Option<u64> {
        self.max
    }

    /// Whether `index` may be accepted, without changing anything.
    pub(crate) fn check(&self, index: u64) -> Result<(), SrtpError> {
        let Some(max) = self.max else {
            return Ok(());
        };
        if index > max {
            return Ok(());
        }
        let d = max - index;
        if d >= WINDOW {
            return Err(SrtpError::TooOld);
        }
        if self.bits & (1u128 << d) != 0 {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }

    /// Records `index` as received. Call only after `check` passed and the packet
    /// authenticated.
    pub(crate) fn accept(&mut self, index: u64) {
        match self.max {
            Some(max) if index <= max => {
                let d = max - index;
                if d < WINDOW {
                    self.bits |= 1u128 << d;
                }
            }
            Some(max) => {
                let shift = index - max;
                self.bits = if shift >= WINDOW {
                    0
                } else {
                    self.bits << shift
                };
                self.bits |= 1;
                self.max = Some(index);
            }
            None => {
                self.bits = 1;
                self.max = Some(index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_follows_the_nearest_rollover() {
        assert_eq!(estimate_index(None, 65535), Ok(65535));
        assert_eq!(estimate_index(Some(65535), 0), Ok(65536));
        assert_eq!(estimate_index(Some(65536), 65535), Ok(65535));
        assert_eq!(
            estimate_index(Some(3 << 16 | 10), 40000),
            Ok(2 << 16 | 40000)
        );
        assert_eq!(estimate_index(Some(5), 65530), Err(SrtpError::TooOld));
    }

    #[test]
    fn window_rejects_duplicates_and_stale() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.check(1000), Ok(()));
        w.accept(1000);
        assert_eq!(w.check(1000), Err(SrtpError::Replayed));
        assert_eq!(w.check(999), Ok(()));
        w.accept(999);
        assert_eq!(w.check(999), Err(SrtpError::Replayed));
        assert_eq!(w.check(1000 - 127), Ok(()));
        assert_eq!(w.check(1000 - 128), Err(SrtpError::TooOld));
        w.accept(1200);
        assert_eq!(w.check(1000), Err(SrtpError::TooOld));
        assert_eq!(w.check(1199), Ok(()));
        assert_eq!(w.check(1200), Err(SrtpError::Replayed));
        w.accept(100_000);
        assert_eq!(w.check(1200), Err(SrtpError::TooOld));
        assert_eq!(w.check(99_999), Ok(()));
    }
}
