//! First-byte demultiplexing of the one UDP port that carries STUN, DTLS, SRTP and SRTCP.
//!
//! WebRTC bundles every protocol onto a single 5-tuple, so the receive path must pick a
//! parser before it knows anything else about a datagram. RFC 7983 §7 (updated by RFC 9443)
//! reserves disjoint ranges of the first byte for exactly this purpose; RTP and RTCP share
//! the 128..=191 range and are told apart by the second byte (RFC 5761 §4: RTCP packet
//! types 192..=223 collide only with RTP payload types 64..=95 with the marker set, which
//! RFC 5761 forbids for RTP).
//!
//! `classify` looks at no more than two bytes and never fails: anything it cannot place is
//! `Unknown`, which the engine counts and drops. It says nothing about validity; the chosen
//! parser still checks the whole datagram.

/// Which protocol a datagram on the bundled port belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// First byte 0..=3.
    Stun,
    /// First byte 20..=63 (DTLS content types, with room for future ones).
    Dtls,
    /// First byte 128..=191, second byte outside 192..=223.
    Rtp,
    /// First byte 128..=191, second byte 192..=223.
    Rtcp,
    /// First byte 64..=79: TURN ChannelData.
    Turn,
    /// Empty, ZRTP (16..=19), reserved ranges, or an RTP-range byte with no second byte.
    Unknown,
}

/// Sorts a datagram by its first byte (and, for RTP/RTCP, its second byte).
pub fn classify(buf: &[u8]) -> PacketKind {
    let Some(&first) = buf.first() else {
        return PacketKind::Unknown;
    };
    match first {
        0..=3 => PacketKind::Stun,
        20..=63 => PacketKind::Dtls,
        64..=79 => PacketKind::Turn,
        128..=191 => match buf.get(1) {
            Some(192..=223) => PacketKind::Rtcp,
            Some(_) => PacketKind::Rtp,
            None => PacketKind::Unknown,
        },
        _ => PacketKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(first: u8) -> PacketKind {
        classify(&[first, 96])
    }

    #[test]
    fn empty_is_unknown() {
        assert_eq!(classify(&[]), PacketKind::Unknown);
    }

    #[test]
    fn stun_range_boundaries() {
        assert_eq!(kind(0), PacketKind::Stun);
        assert_eq!(kind(3), PacketKind::Stun);
        assert_eq!(kind(4), PacketKind::Unknown);
        assert_eq!(classify(&[1]), PacketKind::Stun);
    }

    #[test]
    fn zrtp_and_gaps_are_unknown() {
        for b in [4, 15, 16, 19, 80, 127, 192, 255] {
            assert_eq!(kind(b), PacketKind::Unknown, "first byte {b}");
        }
    }

    #[test]
    fn dtls_range_boundaries() {
        assert_eq!(kind(19), PacketKind::Unknown);
        assert_eq!(kind(20), PacketKind::Dtls);
        assert_eq!(kind(22), PacketKind::Dtls);
        assert_eq!(kind(63), PacketKind::Dtls);
    }

    #[test]
    fn turn_range_boundaries() {
        assert_eq!(kind(63), PacketKind::Dtls);
        assert_eq!(kind(64), PacketKind::Turn);
        assert_eq!(kind(79), PacketKind::Turn);
        assert_eq!(kind(80), PacketKind::Unknown);
    }

    #[test]
    fn rtp_range_boundaries() {
        assert_eq!(kind(127), PacketKind::Unknown);
        assert_eq!(kind(128), PacketKind::Rtp);
        assert_eq!(kind(191), PacketKind::Rtp);
        assert_eq!(kind(192), PacketKind::Unknown);
    }

    #[test]
    fn rtcp_split_on_second_byte() {
        assert_eq!(classify(&[0x80, 191]), PacketKind::Rtp);
        assert_eq!(classify(&[0x80, 192]), PacketKind::Rtcp);
        assert_eq!(classify(&[0x81, 200]), PacketKind::Rtcp);
        assert_eq!(classify(&[0x80, 223]), PacketKind::Rtcp);
        assert_eq!(classify(&[0x80, 224]), PacketKind::Rtp);
        // Marker set on payload type 96 (0x80 | 96 = 224) is still RTP.
        assert_eq!(classify(&[0x90, 0x80 | 96]), PacketKind::Rtp);
        assert_eq!(classify(&[0x80, 0]), PacketKind::Rtp);
    }

    #[test]
    fn rtp_range_without_second_byte_is_unknown() {
        assert_eq!(classify(&[0x80]), PacketKind::Unknown);
    }
}
