//! RTX (RFC 4588): retransmissions in a stream of their own, in both directions.
//!
//! Why it matters: a packet resent on its original SSRC and sequence number cannot be told
//! from the original, so it skews the receiver's loss and jitter statistics and its
//! bandwidth estimate, and a late copy looks like reordering. RTX sends it on a separate
//! SSRC with its own sequence numbers and payload type, the original sequence number (OSN)
//! in the first two payload bytes. Browsers negotiate it for video by default, and
//! libwebrtc also sends its bandwidth probes on the RTX stream.
//!
//! - **Toward subscribers** that negotiated RTX (`AddDownTrack.rtx_ssrc`), a NACK is
//!   answered with the cached packet rewritten exactly as it was first sent, then turned
//!   into its RTX form by [`wrap`]: the OSN is the subscriber's own number for it, and each
//!   down track keeps its own RTX sequence space ([`RtxSender`]), advanced only by packets
//!   actually queued, so the subscriber sees it continuous.
//! - **From publishers**, an RTX packet (its SSRC from `a=ssrc-group:FID`, or learnt from
//!   the repaired-rtp-stream-id extension for RID simulcast) is checked (payload type with
//!   the track's `apt=`, room for the OSN), turned back into the packet it repairs by
//!   [`unwrap`] in the receive buffer, and handed to the normal RTP path. There it fills
//!   the gap in the layer's cache, leaves the NACK list and reaches subscribers under the
//!   numbers they expect.
//!
//! Both are done in place with one short `copy_within` (the payload moves two bytes), so
//! the packet keeps starting where the datagram starts, which the egress relies on for
//! ranges of the receive buffer. Nothing here allocates.

use std::time::Instant;

use super::{Engine, Track};
use crate::egress::Egress;
use crate::engine::stats::DropReason;
use crate::ids::{Pt, Ssrc};
use crate::wire::rtp::{self, RtpPacket};

/// Length of the original sequence number at the start of an RTX payload.
pub const OSN_LEN: usize = 2;

/// A down track's RTX stream toward its subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtxSender {
    pub ssrc: Ssrc,
    pub pt: Pt,
    /// Sequence number of the next RTX packet.
    pub next_seq: u16,
}

impl RtxSender {
    /// An RTX stream starting at `first_seq` (RFC 3550 §5.1 wants a random start; the
    /// caller derives one from the SSRC, which control chose at random).
    pub fn new(ssrc: Ssrc, pt: Pt, first_seq: u16) -> Self {
        Self {
            ssrc,
            pt,
            next_seq: first_seq,
        }
    }
}

/// Turns the RTP packet in `buf[..len]`, whose header (`header_len` bytes) is already
/// rewritten for the subscriber, into its RTX form in place: the packet's sequence number
/// goes ahead of the payload as the OSN, then the header gets the RTX SSRC, payload type
/// and `seq`. Padding, if any, stays at the end. Returns the new length, or `None` if
/// `buf` has no room for the two bytes or the lengths are inconsistent.
pub fn wrap(
    buf: &mut [u8],
    header_len: usize,
    len: usize,
    rtx: &RtxSender,
    seq: u16,
) -> Option<usize> {
    if header_len < rtp::HEADER_LEN || header_len > len || len + OSN_LEN > buf.len() {
        return None;
    }
    let osn = [buf[2], buf[3]];
    buf.copy_within(header_len..len, header_len + OSN_LEN);
    buf[header_len..header_len + OSN_LEN].copy_from_slice(&osn);
    rtp::write_sequence_number(buf, seq).ok()?;
    rtp::write_ssrc(buf, rtx.ssrc).ok()?;
    rtp::write_payload_type(buf, rtx.pt).ok()?;
    Some(len + OSN_LEN)
}

/// Turns the RTX packet in `buf` (a valid RTP packet: header `header_len` bytes, payload
/// up to `payload_end`, padding after) back into the packet it repairs, in place: the OSN
/// becomes the sequence number, `pt` and `ssrc` those of the original stream. Returns
/// the new length. A payload with no room for the OSN is [`DropReason::RtxTruncated`]; a
/// padding-only packet (libwebrtc probes this way) is [`DropReason::Padding`], as on the
/// original stream.
pub fn unwrap(
    buf: &mut [u8],
    header_len: usize,
    payload_end: usize,
    pt: Pt,
    ssrc: Ssrc,
) -> Result<usize, DropReason> {
    let len = buf.len();
    if header_len < rtp::HEADER_LEN || payload_end > len || header_len > payload_end {
        return Err(DropReason::Malformed);
    }
    match payload_end - header_len {
        0 => return Err(DropReason::Padding),
        1 => return Err(DropReason::RtxTruncated),
        _ => {}
    }
    let osn = u16::from_be_bytes([buf[header_len], buf[header_len + 1]]);
    buf.copy_within(header_len + OSN_LEN..len, header_len);
    let len = len - OSN_LEN;
    let out = &mut buf[..len];
    rtp::write_sequence_number(out, osn).map_err(|_| DropReason::Malformed)?;
    rtp::write_payload_type(out, pt).map_err(|_| DropReason::Malformed)?;
    rtp::write_ssrc(out, ssrc).map_err(|_| DropReason::Malformed)?;
    Ok(len)
}

impl Engine {
    /// The (track, layer) whose RTX stream `pkt` is on, if it is one: an RTX SSRC given by
    /// control, or one learnt now from the repaired-rtp-stream-id extension.
    pub(super) fn rtx_stream(
        &mut self,
        transport: usize,
        pkt: &RtpPacket<&[u8]>,
    ) -> Option<(usize, u8)> {
        if let Some(&f) = self.routes.by_rtx_ssrc.get(&(transport, pkt.ssrc())) {
            return Some(f);
        }
        let tr = self.objs.transports.get(transport)?;
        let tracks = &self.objs.tracks;
        let (ti, li) = tr.tracks.iter().find_map(|&ti| {
            let t = tracks.get(ti)?;
            if t.repaired_rid_ext == 0 || t.rtx_pt.is_none() {
                return None;
            }
            let rid = pkt.extension(t.repaired_rid_ext)?;
            let mid = if t.mid_ext != 0 {
                pkt.extension(t.mid_ext)
            } else {
                None
            };
            t.match_repaired_rid(mid, rid).map(|li| (ti, li))
        })?;
        let ssrc = pkt.ssrc();
        self.objs.tracks.get_mut(ti)?.layers.get_mut(li)?.rtx_ssrc = ssrc;
        self.routes
            .by_rtx_ssrc
            .insert((transport, ssrc), (ti, li as u8));
        tracing::debug!(transport, track = ti, layer = li, %ssrc, "RTX SSRC learnt from its RID");
        Some((ti, li as u8))
    }

    /// An RTX packet from a publisher for layer `li` of track `ti`: checked, unwrapped in
    /// place and handled as the packet it repairs.
    pub(super) fn on_rtx<E: Egress>(
        &mut self,
        now: Instant,
        transport: usize,
        (ti, li): (usize, u8),
        buf: &mut [u8],
        eg: &mut E,
    ) {
        let checked = self
            .objs
            .tracks
            .get(ti)
            .ok_or(DropReason::UnknownSsrc)
            .and_then(|track| rtx_target(track, usize::from(li), buf));
        let (recovered, n) = match checked {
            Ok((pt, ssrc, recovered, header_len, payload_end)) => {
                match unwrap(buf, header_len, payload_end, pt, ssrc) {
                    Ok(n) => (recovered, n),
                    Err(r) => return self.count_drop(Some(transport), r),
                }
            }
            Err(r) => return self.count_drop(Some(transport), r),
        };
        self.counters.rtx_received += 1;
        self.counters.rtx_recovered += u64::from(recovered);
        if let Some(t) = self.objs.transports.get_mut(transport) {
            t.counters.rtx_received += 1;
            t.counters.rtx_recovered += u64::from(recovered);
        }
        // The restored SSRC is the layer's, which `by_ssrc` maps: this recursion is one
        // level deep.
        self.on_rtp(now, transport, &mut buf[..n], eg);
    }
}

/// What unwrapping an RTX packet for layer `li` of `track` restores: the codec payload
/// type, the layer's SSRC, whether the repaired packet is new to the cache, and the
/// packet's header and payload bounds.
fn rtx_target(
    track: &Track,
    li: usize,
    buf: &[u8],
) -> Result<(Pt, Ssrc, bool, usize, usize), DropReason> {
    let pkt = RtpPacket::new_checked(buf).map_err(DropReason::from)?;
    if track.rtx_pt != Some(pkt.payload_type()) {
        return Err(DropReason::RtxUnknownApt);
    }
    let layer = track.layers.get(li).ok_or(DropReason::UnknownSsrc)?;
    if layer.ssrc.0 == 0 {
        // A RID layer whose media SSRC is not known yet: nothing to restore.
        return Err(DropReason::UnknownSsrc);
    }
    let payload = pkt.payload();
    let recovered = match payload {
        [a, b, ..] => !layer
            .cache
            .contains(layer.seq.peek(u16::from_be_bytes([*a, *b]))),
        _ => false,
    };
    let range = pkt.payload_range();
    Ok((
        track.payload_type,
        layer.ssrc,
        recovered,
        range.start,
        range.end,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16, payload: &[u8], padding: u8) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&1234u32.to_be_bytes());
        p.extend_from_slice(&0xaaaa_aaaau32.to_be_bytes());
        p.extend_from_slice(payload);
        if padding > 0 {
            p[0] |= 0x20;
            p.extend(std::iter::repeat_n(0, usize::from(padding - 1)));
            p.push(padding);
        }
        p
    }

    #[test]
    fn wrap_then_unwrap_restores_the_packet() {
        for padding in [0u8, 4] {
            let original = packet(0xfffe, b"hello vp8", padding);
            let mut buf = original.clone();
            buf.resize(64, 0xee);
            let rtx = RtxSender::new(Ssrc(0xbbbb_bbbb), Pt(97), 7);
            let n = wrap(&mut buf, 12, original.len(), &rtx, 7).unwrap();
            assert_eq!(n, original.len() + 2);
            let p = RtpPacket::new_checked(&buf[..n]).unwrap();
            assert_eq!(p.sequence_number(), 7);
            assert_eq!(p.ssrc(), Ssrc(0xbbbb_bbbb));
            assert_eq!(p.payload_type(), Pt(97));
            assert_eq!(p.timestamp(), 1234, "timestamp of the original");
            assert_eq!(&p.payload()[..2], &[0xff, 0xfe], "OSN first");
            assert_eq!(&p.payload()[2..], b"hello vp8");
            assert_eq!(p.padding_len(), usize::from(padding));

            let range = p.payload_range();
            let mut back = buf[..n].to_vec();
            let m = unwrap(&mut back, range.start, range.end, Pt(96), Ssrc(0xaaaa_aaaa)).unwrap();
            assert_eq!(&back[..m], &original[..]);
        }
    }

    #[test]
    fn wrap_needs_room_and_a_sane_header() {
        let original = packet(1, b"xy", 0);
        let mut exact = original.clone();
        let rtx = RtxSender::new(Ssrc(2), Pt(97), 0);
        assert_eq!(wrap(&mut exact, 12, original.len(), &rtx, 0), None);
        let mut buf = original.clone();
        buf.resize(40, 0);
        assert_eq!(wrap(&mut buf, 11, original.len(), &rtx, 0), None);
        assert_eq!(wrap(&mut buf, 30, original.len(), &rtx, 0), None);
    }

    #[test]
    fn unwrap_refuses_short_payloads() {
        let mut one = packet(1, &[9], 0);
        assert_eq!(
            unwrap(&mut one, 12, 13, Pt(96), Ssrc(1)),
            Err(DropReason::RtxTruncated)
        );
        let mut probe = packet(1, &[], 8);
        assert_eq!(
            unwrap(&mut probe, 12, 12, Pt(96), Ssrc(1)),
            Err(DropReason::Padding)
        );
        let mut bad = packet(1, &[1, 2, 3], 0);
        assert_eq!(
            unwrap(&mut bad, 12, 99, Pt(96), Ssrc(1)),
            Err(DropReason::Malformed)
        );
    }
}
