//! Identifier newtypes shared by every layer of the forwarder.
//!
//! RTP numbers wrap: a 16-bit sequence number every ~22 minutes of 50 pps audio, a 32-bit
//! timestamp every ~13 hours at 90 kHz. Everything that compares or offsets them works on
//! an *extended* value (`SeqNo(u64)`, `ExtTimestamp(u64)`) produced by exactly one
//! wrap-aware unwrapper each, so the rewrite arithmetic never has to reason about wrap.
//! Identifiers are newtypes so that an SSRC can never be passed where a sequence number is
//! expected.

use std::fmt;

/// RTP synchronisation source identifier (RFC 3550 §5.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Ssrc(pub u32);

impl fmt::Debug for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ssrc({:#010x})", self.0)
    }
}

impl fmt::Display for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// RTP payload type, 7 bits (RFC 3550 §5.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, PartialOrd, Ord)]
pub struct Pt(pub u8);

/// An extended (unwrapped) RTP sequence number: the 16-bit wire value plus a roll-over
/// count in the upper bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, PartialOrd, Ord)]
pub struct SeqNo(pub u64);

impl SeqNo {
    /// The 16 bits that go on the wire.
    pub fn wire(self) -> u16 {
        self.0 as u16
    }
}

/// An extended (unwrapped) RTP timestamp.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, PartialOrd, Ord)]
pub struct ExtTimestamp(pub u64);

impl ExtTimestamp {
    /// The 32 bits that go on the wire.
    pub fn wire(self) -> u32 {
        self.0 as u32
    }
}

/// Turns 16-bit sequence numbers into [`SeqNo`]s, treating a jump of less than half the
/// number space as forward or backward movement (RFC 3550 Appendix A.1).
///
/// The first value is placed one cycle up (at `1 << 16 | seq`) so that a packet reordered
/// before the first one seen still has a non-negative extended number.
#[derive(Clone, Copy, Debug, Default)]
pub struct SeqUnwrapper {
    last: Option<u64>,
}

impl SeqUnwrapper {
    pub fn new() -> Self {
        Self { last: None }
    }

    /// Extends `seq`, remembering it if it is the newest number seen.
    pub fn unwrap(&mut self, seq: u16) -> SeqNo {
        let ext = self.peek(seq);
        if self.last.is_none_or(|l| ext.0 > l) {
            self.last = Some(ext.0);
        }
        ext
    }

    /// Extends `seq` without updating the state.
    pub fn peek(&self, seq: u16) -> SeqNo {
        match self.last {
            None => SeqNo((1 << 16) | u64::from(seq)),
            Some(last) => {
                let delta = seq.wrapping_sub(last as u16) as i16;
                SeqNo(last.saturating_add_signed(i64::from(delta)))
            }
        }
    }

    /// The newest extended number seen, if any.
    pub fn last(&self) -> Option<SeqNo> {
        self.last.map(SeqNo)
    }
}

/// Turns 32-bit RTP timestamps into [`ExtTimestamp`]s, like [`SeqUnwrapper`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TsUnwrapper {
    last: Option<u64>,
}

impl TsUnwrapper {
    pub fn new() -> Self {
        Self { last: None }
    }

    pub fn unwrap(&mut self, ts: u32) -> ExtTimestamp {
        let ext = self.peek(ts);
        if self.last.is_none_or(|l| ext.0 > l) {
            self.last = Some(ext.0);
        }
        ext
    }

    pub fn peek(&self, ts: u32) -> ExtTimestamp {
        match self.last {
            None => ExtTimestamp((1 << 32) | u64::from(ts)),
            Some(last) => {
                let delta = ts.wrapping_sub(last as u32) as i32;
                ExtTimestamp(last.saturating_add_signed(i64::from(delta)))
            }
        }
    }

    pub fn last(&self) -> Option<ExtTimestamp> {
        self.last.map(ExtTimestamp)
    }
}

/// A short ASCII identifier held inline (RID, MID): RFC 8851 limits a RID to 16
/// alphanumerics in practice; 16 bytes covers every client seen.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ShortId {
    len: u8,
    bytes: [u8; 16],
}

impl ShortId {
    /// `None` if `s` is empty, longer than 16 bytes, or not printable ASCII.
    pub fn new(s: &[u8]) -> Option<Self> {
        if s.is_empty() || s.len() > 16 || !s.iter().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let mut bytes = [0u8; 16];
        bytes[..s.len()].copy_from_slice(s);
        Some(Self {
            len: s.len() as u8,
            bytes,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub fn as_str(&self) -> &str {
        // Only printable ASCII is admitted by `new`.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl fmt::Debug for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// RTP stream id (RFC 8852), e.g. `"q"`, `"h"`, `"f"`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Rid(pub ShortId);

/// Media id of an SDP m-line (RFC 8843).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Mid(pub ShortId);

/// Control ids: chosen by signaling, unique per kind across the process, carried in
/// commands and events. Newtypes so a track id can never be looked up as a transport's.
macro_rules! control_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, PartialOrd, Ord)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

control_id!(
    /// A room's control id.
    RoomId
);
control_id!(
    /// A transport's control id.
    TransportId
);
control_id!(
    /// A published track's control id.
    TrackId
);
control_id!(
    /// A down track's (one subscriber's copy of a track) control id.
    DownTrackId
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seq_unwrap_crosses_wrap_forward_and_back() {
        let mut u = SeqUnwrapper::new();
        let a = u.unwrap(65534);
        let b = u.unwrap(65535);
        let c = u.unwrap(0);
        let d = u.unwrap(1);
        assert_eq!((b.0 - a.0, c.0 - b.0, d.0 - c.0), (1, 1, 1));
        // A late packet from before the wrap maps below, not a cycle ahead.
        let late = u.unwrap(65533);
        assert_eq!(a.0 - late.0, 1);
        assert_eq!(u.last(), Some(d));
    }

    #[test]
    fn ts_unwrap_crosses_wrap() {
        let mut u = TsUnwrapper::new();
        let a = u.unwrap(u32::MAX - 10);
        let b = u.unwrap(5);
        assert_eq!(b.0 - a.0, 16);
        assert_eq!(b.wire(), 5);
    }

    #[test]
    fn short_id_rejects_bad_input() {
        assert!(ShortId::new(b"").is_none());
        assert!(ShortId::new(&[b'a'; 17]).is_none());
        assert!(ShortId::new(b"a b").is_none());
        assert_eq!(ShortId::new(b"hq").unwrap().as_str(), "hq");
    }

    proptest! {
        /// Any walk with steps under half the number space unwraps to the same walk.
        #[test]
        fn seq_unwrap_tracks_any_walk(start in any::<u16>(),
                                      steps in proptest::collection::vec(-1000i32..3000, 1..400)) {
            let mut u = SeqUnwrapper::new();
            let mut truth: i64 = i64::from(start);
            let first = u.unwrap(start).0 as i64;
            for s in steps {
                truth += i64::from(s);
                let got = u.unwrap(truth.rem_euclid(65536) as u16).0 as i64;
                prop_assert_eq!(got - first, truth - i64::from(start));
            }
        }

        #[test]
        fn ts_unwrap_tracks_any_walk(start in any::<u32>(),
                                     steps in proptest::collection::vec(-100_000i64..3_000_000, 1..400)) {
            let mut u = TsUnwrapper::new();
            let mut truth: i64 = i64::from(start);
            let first = u.unwrap(start).0 as i64;
            for s in steps {
                truth += s;
                let got = u.unwrap(truth.rem_euclid(1 << 32) as u32).0 as i64;
                prop_assert_eq!(got - first, truth - i64::from(start));
            }
        }
    }
}
