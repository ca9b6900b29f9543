//! Typed drop reasons and the counters kept per core and per transport.
//!
//! Every early return on the forwarding path names why it dropped the packet with a
//! [`DropReason`], and the reason is counted where the packet was seen: on its transport
//! when the source is known, on the core otherwise. Counters are plain integers owned by
//! the core's thread; control reads them through a `GetStats` command, never by sharing.

use std::time::Instant;

use prism_proto::control as pb;

/// Why a datagram, or one subscriber's copy of it, was not forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Shorter than its headers claim.
    Truncated,
    /// RTP/RTCP version other than 2.
    BadVersion,
    /// Any other malformed RTP, RTCP or STUN.
    Malformed,
    /// Larger than the largest datagram the forwarder accepts.
    Oversized,
    /// Not RTP, RTCP or STUN (RFC 7983 first byte), or a kind this transport does not speak.
    UnknownProtocol,
    /// From an address no transport owns.
    UnknownSource,
    /// An SSRC no track on this transport publishes.
    UnknownSsrc,
    /// The codec payload could not be read.
    BadPayload,
    /// The subscriber is on another simulcast layer.
    LayerNotSelected,
    /// A temporal layer above the subscriber's preference.
    TemporalFiltered,
    /// The subscriber waits for a keyframe before it can start or switch.
    WaitingForKeyframe,
    /// The down track is paused.
    Paused,
    /// Older than the last sequence-number rebase: it has no place in the output.
    TooLate,
    /// The send queue of the turn was full.
    QueueFull,
    /// A NACK asked for a packet no longer (or never) in the retransmission cache.
    NotInCache,
    /// A duplicate of a packet already forwarded.
    Duplicate,
    /// The subscriber's transport has not learnt its remote address yet (comedia).
    NoRemote,
    /// SRTP/SRTCP authentication failed (bad tag, wrong key, corrupted).
    SrtpAuthFailed,
    /// An SRTP/SRTCP packet already received (or older than the replay window).
    Replayed,
    /// Media on a WebRTC transport before its DTLS handshake completed.
    NotConnected,
    /// A STUN message that failed the ICE checks (integrity, user, fingerprint).
    IceRejected,
    /// A DTLS record the handshake refused.
    DtlsRejected,
    /// An RTX packet (RFC 4588) too short to hold the original sequence number.
    RtxTruncated,
    /// An RTX packet on a known RTX SSRC whose payload type is not the RTX payload type
    /// negotiated for the track (no `apt=` maps it to the codec).
    RtxUnknownApt,
    /// A video packet with nothing but padding: a sender's bandwidth probe (libwebrtc sends
    /// them by the hundred), not forwarded; each down track closes its sequence gap.
    Padding,
}

impl DropReason {
    pub const COUNT: usize = 25;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Truncated,
        DropReason::BadVersion,
        DropReason::Malformed,
        DropReason::Oversized,
        DropReason::UnknownProtocol,
        DropReason::UnknownSource,
        DropReason::UnknownSsrc,
        DropReason::BadPayload,
        DropReason::LayerNotSelected,
        DropReason::TemporalFiltered,
        DropReason::WaitingForKeyframe,
        DropReason::Paused,
        DropReason::TooLate,
        DropReason::QueueFull,
        DropReason::NotInCache,
        DropReason::Duplicate,
        DropReason::NoRemote,
        DropReason::SrtpAuthFailed,
        DropReason::Replayed,
        DropReason::NotConnected,
        DropReason::IceRejected,
        DropReason::DtlsRejected,
        DropReason::RtxTruncated,
        DropReason::RtxUnknownApt,
        DropReason::Padding,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// Stable snake_case name used in stats and metrics.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::BadVersion => "bad_version",
            DropReason::Malformed => "malformed",
            DropReason::Oversized => "oversized",
            DropReason::UnknownProtocol => "unknown_protocol",
            DropReason::UnknownSource => "unknown_source",
            DropReason::UnknownSsrc => "unknown_ssrc",
            DropReason::BadPayload => "bad_payload",
            DropReason::LayerNotSelected => "layer_not_selected",
            DropReason::TemporalFiltered => "temporal_filtered",
            DropReason::WaitingForKeyframe => "waiting_for_keyframe",
            DropReason::Paused => "paused",
            DropReason::TooLate => "too_late",
            DropReason::QueueFull => "queue_full",
            DropReason::NotInCache => "not_in_cache",
            DropReason::Duplicate => "duplicate",
            DropReason::NoRemote => "no_remote",
            DropReason::SrtpAuthFailed => "srtp_auth_failed",
            DropReason::Replayed => "replayed",
            DropReason::NotConnected => "not_connected",
            DropReason::IceRejected => "ice_rejected",
            DropReason::DtlsRejected => "dtls_rejected",
            DropReason::RtxTruncated => "rtx_truncated",
            DropReason::RtxUnknownApt => "rtx_unknown_apt",
            DropReason::Padding => "padding",
        }
    }

    /// Whether this reason marks bad input (as opposed to a forwarding decision).
    pub fn is_bad_input(self) -> bool {
        matches!(
            self,
            DropReason::Truncated
                | DropReason::BadVersion
                | DropReason::Malformed
                | DropReason::Oversized
                | DropReason::UnknownProtocol
                | DropReason::UnknownSource
                | DropReason::UnknownSsrc
                | DropReason::BadPayload
                | DropReason::SrtpAuthFailed
                | DropReason::Replayed
                | DropReason::IceRejected
                | DropReason::DtlsRejected
                | DropReason::RtxTruncated
                | DropReason::RtxUnknownApt
        )
    }
}

impl From<crate::srtp::SrtpError> for DropReason {
    fn from(e: crate::srtp::SrtpError) -> Self {
        use crate::srtp::SrtpError as S;
        match e {
            S::Replayed | S::TooOld => DropReason::Replayed,
            S::Truncated => DropReason::Truncated,
            _ => DropReason::SrtpAuthFailed,
        }
    }
}

impl From<crate::wire::Error> for DropReason {
    fn from(e: crate::wire::Error) -> Self {
        match e {
            crate::wire::Error::Truncated => DropReason::Truncated,
            crate::wire::Error::BadVersion => DropReason::BadVersion,
            crate::wire::Error::TooLarge => DropReason::Oversized,
            _ => DropReason::Malformed,
        }
    }
}

/// Packet counters of one transport or one core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub drops: [u64; DropReason::COUNT],
    pub nacks_received: u64,
    pub retransmits_sent: u64,
    pub keyframe_requests: u64,
    /// NACK packets sent to publishers for packets lost on their way in.
    pub nacks_sent: u64,
    /// Retransmissions sent as RTX packets (also counted in `retransmits_sent`).
    pub rtx_sent: u64,
    /// RTX packets from publishers unwrapped, and those of them that repaired a loss.
    pub rtx_received: u64,
    pub rtx_recovered: u64,
    /// RTCP sender reports to subscribers, receiver reports to publishers.
    pub sender_reports_sent: u64,
    pub receiver_reports_sent: u64,
}

impl Counters {
    #[inline]
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r.index()] += 1;
    }

    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r.index()]
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    pub fn add(&mut self, o: &Counters) {
        self.packets_in += o.packets_in;
        self.bytes_in += o.bytes_in;
        self.packets_out += o.packets_out;
        self.bytes_out += o.bytes_out;
        for (a, b) in self.drops.iter_mut().zip(o.drops.iter()) {
            *a += b;
        }
        self.nacks_received += o.nacks_received;
        self.retransmits_sent += o.retransmits_sent;
        self.keyframe_requests += o.keyframe_requests;
        self.nacks_sent += o.nacks_sent;
        self.rtx_sent += o.rtx_sent;
        self.rtx_received += o.rtx_received;
        self.rtx_recovered += o.rtx_recovered;
        self.sender_reports_sent += o.sender_reports_sent;
        self.receiver_reports_sent += o.receiver_reports_sent;
    }

    pub fn to_proto(&self) -> pb::Counters {
        pb::Counters {
            packets_in: self.packets_in,
            bytes_in: self.bytes_in,
            packets_out: self.packets_out,
            bytes_out: self.bytes_out,
            drops: DropReason::ALL
                .iter()
                .filter(|r| self.dropped(**r) > 0)
                .map(|r| pb::DropCount {
                    reason: r.name().to_string(),
                    count: self.dropped(*r),
                })
                .collect(),
            nacks_received: self.nacks_received,
            retransmits_sent: self.retransmits_sent,
            keyframe_requests: self.keyframe_requests,
            nacks_sent: self.nacks_sent,
            rtx_sent: self.rtx_sent,
            rtx_received: self.rtx_received,
            rtx_recovered: self.rtx_recovered,
            sender_reports_sent: self.sender_reports_sent,
            receiver_reports_sent: self.receiver_reports_sent,
        }
    }
}

/// Reads a drop count back out of a protobuf `Counters` (for tests and tools).
pub fn proto_drop(c: &pb::Counters, r: DropReason) -> u64 {
    c.drops
        .iter()
        .find(|d| d.reason == r.name())
        .map_or(0, |d| d.count)
}

impl super::Engine {
    /// This core's counters and every transport's.
    pub fn stats(&self, now: Instant) -> pb::Stats {
        pb::Stats {
            cores: vec![pb::CoreStats {
                core: self.core,
                counters: Some(self.counters.to_proto()),
                rooms: self.objs.rooms.len() as u32,
                transports: self.objs.transports.len() as u32,
                tracks: self.objs.tracks.len() as u32,
                down_tracks: self.objs.down_tracks.len() as u32,
                ..Default::default()
            }],
            transports: self
                .objs
                .transports
                .iter()
                .map(|(_, t)| pb::TransportStats {
                    transport_id: t.id,
                    core: self.core,
                    remote: t.remote.map(|a| a.to_string()).unwrap_or_default(),
                    counters: Some(t.counters.to_proto()),
                    bandwidth: t.twcc_out.as_ref().and_then(|s| {
                        let e = &s.estimator;
                        (e.feedbacks > 0).then(|| pb::BandwidthEstimate {
                            estimate_bps: e.estimate_bps().unwrap_or(0),
                            acked_bps: e.acked_bps(super::cc::micros(t.epoch, now)),
                            loss: e.loss(),
                            delay_state: e.state().name().to_string(),
                            feedbacks: e.feedbacks,
                        })
                    }),
                    twcc_feedback_sent: t.twcc_in.as_ref().map_or(0, |r| r.sent),
                })
                .collect(),
            fronts: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_reason_in_index_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
    }

    #[test]
    fn proto_round_trip_keeps_drops() {
        let mut c = Counters::default();
        c.drop(DropReason::UnknownSsrc);
        c.drop(DropReason::UnknownSsrc);
        let p = c.to_proto();
        assert_eq!(proto_drop(&p, DropReason::UnknownSsrc), 2);
        assert_eq!(proto_drop(&p, DropReason::Paused), 0);
    }
}
