//! What the engine sends: subscribers' copies of media, retransmissions, RTCP, and
//! keyframe requests toward publishers.
//!
//! A subscriber's copy is written in two steps, decide then apply: the down track has
//! already decided the rewrite ([`Forward`]); here the header is written afresh for the
//! subscriber's transport (its own header extension block, `hdrext`), the rewrite applied
//! (`downtrack::apply`), and the result sent. Encrypted copies are written whole into an
//! egress slot and protected in place; plain ones send a rewritten header copy followed by
//! the received payload itself (`send_split`), so the payload is never copied. None of
//! this allocates: header scratch is a fixed [`HEAD_CAP`] array on the caller's stack.

use std::time::Instant;

use super::cc::micros;
use super::downtrack::{self, Forward};
use super::hdrext::{self, ExtIds, ExtValues, Ingress};
use super::routes::Objects;
use super::stats::Counters;
use super::{rtx, DownTrackEntry, DropReason, Engine, Outbox, Track, Transport};
use crate::codec::vp8::{self, Vp8Descriptor};
use crate::codec::Codec;
use crate::egress::{Egress, HEAD_CAP, MAX_DATAGRAM};
use crate::ids::Ssrc;
use crate::srtp::MAX_OVERHEAD;
use crate::wire::rtcp;
use crate::wire::rtp::RtpPacket;
use prism_proto::control as pb;

/// Where the parts of a received RTP packet are: fixed header and CSRCs end at
/// `csrc_end`, the extension block at `header_len`, the codec descriptor the down track
/// rewrites (VP8) at `head_len`, the packet at `total`. `received`: the packet is the
/// datagram being handled, so a plain copy can send its payload from the receive buffer
/// (`send_split`); a retransmission from the cache is copied whole instead.
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    pub csrc_end: usize,
    pub header_len: usize,
    pub head_len: usize,
    pub total: usize,
    pub received: bool,
}

/// The packet a subscriber's copy is made from: the datagram being handled or a cached
/// packet, where its parts are, its VP8 descriptor, and the publisher's audio level (for
/// audio, carried over to the copy's extensions).
#[derive(Clone, Copy, Debug)]
pub(super) struct Source<'a> {
    pub bytes: &'a [u8],
    pub layout: Layout,
    pub vp8: Option<&'a Vp8Descriptor>,
    pub audio_level: Option<u8>,
}

/// One subscriber's copy: the source, the rewrite the down track decided, and the RTX
/// stream to wrap it in (retransmissions to a subscriber that negotiated RTX).
#[derive(Clone, Copy, Debug)]
pub(super) struct OutCopy<'a> {
    pub src: Source<'a>,
    pub forward: &'a Forward,
    pub rtx: Option<&'a rtx::RtxSender>,
}

/// What `write_head` and `send_copy` write into a copy's header besides the source's:
/// the subscriber's extension ids (`None`: the received header unchanged) and values.
#[derive(Clone, Copy, Debug)]
struct Head<'a> {
    ext: Option<ExtIds>,
    values: ExtValues<'a>,
}

/// Sends `copy` to down track `entry`'s subscriber over `out`: this transport's (or the
/// subscriber's) header extensions with a fresh send time and transport-wide number, then
/// records the send for congestion control. The caller has checked that `out` can send
/// (a remote, SRTP when WebRTC). Returns the bytes on the wire (0: not sent).
pub(super) fn send_to_subscriber<E: Egress>(
    now: Instant,
    entry: &DownTrackEntry,
    out: &mut Transport,
    copy: &OutCopy<'_>,
    eg: &mut E,
    scratch: &mut [u8; HEAD_CAP],
) -> usize {
    let Some(remote) = out.remote else {
        return 0;
    };
    let ext = out.ext.map(|t| entry.ext.unwrap_or(t));
    let tcc = ext
        .filter(|ids| ids.transport_cc != 0)
        .and(out.twcc_out.as_ref())
        .map(|s| s.next_seq());
    let head = Head {
        ext,
        values: ExtValues {
            mid: entry.mid.as_ref().map(|m| m.0.as_bytes()),
            abs_send_time: Some(hdrext::abs_send_time(
                now.saturating_duration_since(out.epoch),
            )),
            transport_seq: tcc,
            audio_level: copy.src.audio_level,
        },
    };
    let srtp = out.srtp.as_deref_mut();
    let wire = send_copy(eg, remote, srtp, copy, &head, scratch);
    if wire > 0 {
        if let (Some(_), Some(s)) = (tcc, out.twcc_out.as_mut()) {
            s.record(micros(out.epoch, now), wire);
        }
    }
    wire
}

/// Writes the header of one subscriber's copy into `dst` from the source packet `src`:
/// with extension ids, the fixed header and CSRCs followed by this transport's own
/// extension block (`hdrext`), the X bit set to match; without, the received header
/// unchanged. Returns the new header length.
fn write_head(dst: &mut [u8], src: &[u8], l: &Layout, head: &Head<'_>) -> Option<usize> {
    let Some(ids) = head.ext.as_ref() else {
        dst.get_mut(..l.header_len)?
            .copy_from_slice(src.get(..l.header_len)?);
        return Some(l.header_len);
    };
    dst.get_mut(..l.csrc_end)?
        .copy_from_slice(src.get(..l.csrc_end)?);
    let block = hdrext::write_block(dst.get_mut(l.csrc_end..)?, ids, &head.values).ok()?;
    dst[0] = (dst[0] & !0x10) | if block > 0 { 0x10 } else { 0 };
    Some(l.csrc_end + block)
}

/// Queues one subscriber's copy of a packet: its own header (`write_head`), the
/// rewrite, then the payload, wrapped as RTX when the copy says so. Encrypted copies are
/// written whole into the egress slot and protected there; plain ones send a rewritten
/// header copy followed by the received payload itself. Returns the bytes on the wire
/// (0: not sent).
fn send_copy<E: Egress>(
    eg: &mut E,
    remote: std::net::SocketAddr,
    srtp: Option<&mut crate::srtp::SrtpPair>,
    copy: &OutCopy<'_>,
    head: &Head<'_>,
    scratch: &mut [u8; HEAD_CAP],
) -> usize {
    let OutCopy {
        src:
            Source {
                bytes: src,
                layout: l,
                vp8: vp8d,
                ..
            },
        forward: f,
        rtx,
    } = *copy;
    let mut wire = 0;
    let body = l.total - l.header_len;
    if let Some(srtp) = srtp {
        eg.send_with(remote, &mut |slot: &mut [u8]| {
            let Some(hl) = write_head(slot, src, &l, head) else {
                return 0;
            };
            let mut n = hl + body;
            if n + rtx::OSN_LEN + MAX_OVERHEAD > slot.len() {
                return 0;
            }
            slot[hl..n].copy_from_slice(&src[l.header_len..l.total]);
            if downtrack::apply(&mut slot[..n], hl, f, vp8d).is_err() {
                return 0;
            }
            if let Some(r) = rtx {
                match rtx::wrap(slot, hl, n, r, r.next_seq) {
                    Some(m) => n = m,
                    None => return 0,
                }
            }
            wire = srtp.outbound.protect_rtp(slot, n).unwrap_or(0);
            wire
        });
        return wire;
    }
    let desc = l.head_len - l.header_len;
    let new_head = match head.ext {
        Some(_) => l.csrc_end + hdrext::MAX_BLOCK + desc,
        None => l.head_len,
    };
    if l.received && rtx.is_none() && new_head <= HEAD_CAP {
        let Some(hl) = write_head(&mut scratch[..], src, &l, head) else {
            return 0;
        };
        let h = &mut scratch[..hl + desc];
        h[hl..].copy_from_slice(&src[l.header_len..l.head_len]);
        if downtrack::apply(h, hl, f, vp8d).is_err() {
            return 0;
        }
        if eg.send_split(remote, h, l.head_len..l.total) {
            return hl + body;
        }
        // An egress that cannot share the body (a tunnel's) takes a whole copy below.
    }
    eg.send_with(remote, &mut |slot: &mut [u8]| {
        let Some(hl) = write_head(slot, src, &l, head) else {
            return 0;
        };
        let mut n = hl + body;
        let Some(dst) = slot.get_mut(..n) else {
            return 0;
        };
        dst[hl..].copy_from_slice(&src[l.header_len..l.total]);
        if downtrack::apply(dst, hl, f, vp8d).is_err() {
            return 0;
        }
        if let Some(r) = rtx {
            match rtx::wrap(slot, hl, n, r, r.next_seq) {
                Some(m) => n = m,
                None => return 0,
            }
        }
        wire = n;
        n
    });
    wire
}

/// Sends an RTCP packet built by `build` to transport `t`'s remote, protected with SRTCP
/// on WebRTC transports. False if nothing could be sent (no remote, not connected).
pub(super) fn send_rtcp<E: Egress>(
    t: &mut Transport,
    eg: &mut E,
    build: &mut dyn FnMut(&mut [u8]) -> usize,
) -> bool {
    let Some(remote) = t.remote else {
        return false;
    };
    match t.srtp.as_mut() {
        None if t.webrtc.is_some() => false,
        None => eg.send_with(remote, build),
        Some(s) => eg.send_with(remote, &mut |slot: &mut [u8]| {
            let n = build(slot);
            if n == 0 || n + MAX_OVERHEAD > slot.len() {
                return 0;
            }
            s.outbound.protect_rtcp(slot, n).unwrap_or(0)
        }),
    }
}

/// The engine's reporting side, borrowed apart from its objects: the core's counters and
/// the event outbox.
#[derive(Debug)]
pub(super) struct Report<'a> {
    pub counters: &'a mut Counters,
    pub outbox: &'a mut Outbox,
}

/// Sends a PLI (from `sender`) for layer `li` to the track's publisher if one is wanted
/// and the throttle allows, and reports it as an event.
pub(super) fn request_keyframe<E: Egress>(
    track: &mut Track,
    li: usize,
    now: Instant,
    sender: Ssrc,
    transports: &mut super::Slab<Transport>,
    report: &mut Report<'_>,
    eg: &mut E,
) {
    let Some(l) = track.layers.get_mut(li) else {
        return;
    };
    if !l.take_keyframe_request(now) {
        return;
    }
    let media = l.ssrc;
    report.counters.keyframe_requests += 1;
    if let Some(t) = transports.get_mut(track.transport) {
        t.counters.keyframe_requests += 1;
        let sender = t.rtcp_ssrc.unwrap_or(sender);
        send_rtcp(t, eg, &mut |slot: &mut [u8]| {
            rtcp::emit_pli(slot, sender, media).unwrap_or(0)
        });
    }
    report
        .outbox
        .emit_body(pb::event::Body::KeyframeNeeded(pb::KeyframeNeeded {
            track_id: track.id,
            spatial: li as u32,
            ssrc: media.0,
        }));
}

impl Engine {
    /// Answers a NACK for output number `seq` of down track `di` from the cache, rewritten
    /// exactly as it was the first time, and sent as RTX where the subscriber negotiated
    /// it (`rtx`). Header extensions are written afresh: the retransmission is a new
    /// packet on the wire (new send time, new transport-wide number).
    pub(super) fn retransmit<E: Egress>(&mut self, now: Instant, di: usize, seq: u16, eg: &mut E) {
        let Objects {
            transports,
            tracks,
            down_tracks,
            ..
        } = &mut self.objs;
        let counters = &mut self.counters;
        let Some(entry) = down_tracks.get(di) else {
            return;
        };
        let rtx = entry.rtx;
        let found = entry.dt.lookup_sent(seq).and_then(|(layer, src, f)| {
            let track = tracks.get(entry.track)?;
            let bytes = track.layers.get(usize::from(layer))?.cache.get(src)?;
            Some((bytes, f, track.codec, track.video, track.transport))
        });
        let pub_ext = found
            .and_then(|(.., publisher)| transports.get(publisher))
            .and_then(|t| t.ext);
        let Some(tr) = transports.get_mut(entry.transport) else {
            return;
        };
        let (Some((bytes, f, codec, video, _)), Some(_)) = (found, tr.remote) else {
            counters.drop(DropReason::NotInCache);
            tr.counters.drop(DropReason::NotInCache);
            return;
        };
        if tr.webrtc.is_some() && tr.srtp.is_none() {
            return;
        }
        let Ok(p) = RtpPacket::new_checked(bytes) else {
            return;
        };
        let header_len = p.header_len();
        let vp8d = if codec == Codec::Vp8 {
            vp8::parse_descriptor(p.payload()).ok()
        } else {
            None
        };
        let copy = OutCopy {
            src: Source {
                bytes,
                layout: Layout {
                    csrc_end: 12 + 4 * usize::from(p.csrc_count()),
                    header_len,
                    head_len: header_len + vp8d.map_or(0, |d| d.header_len),
                    total: bytes.len(),
                    received: false,
                },
                vp8: vp8d.as_ref(),
                audio_level: match pub_ext {
                    Some(ids) if !video => Ingress::read(&ids, p.extensions()).audio_level,
                    _ => None,
                },
            },
            forward: &f,
            rtx: rtx.as_ref(),
        };
        let mut scratch = [0u8; HEAD_CAP];
        let room = bytes.len() + hdrext::MAX_BLOCK + rtx::OSN_LEN + MAX_OVERHEAD;
        let wire = if room <= MAX_DATAGRAM {
            send_to_subscriber(now, entry, tr, &copy, eg, &mut scratch)
        } else {
            0
        };
        let as_rtx = u64::from(rtx.is_some());
        let len = bytes.len() as u64 + as_rtx * rtx::OSN_LEN as u64;
        if wire > 0 {
            counters.retransmits_sent += 1;
            counters.rtx_sent += as_rtx;
            counters.packets_out += 1;
            counters.bytes_out += len;
            tr.counters.retransmits_sent += 1;
            tr.counters.rtx_sent += as_rtx;
            tr.counters.packets_out += 1;
            tr.counters.bytes_out += len;
            if let Some(r) = down_tracks.get_mut(di).and_then(|e| e.rtx.as_mut()) {
                r.next_seq = r.next_seq.wrapping_add(1);
            }
        } else {
            counters.drop(DropReason::QueueFull);
            tr.counters.drop(DropReason::QueueFull);
        }
    }
}
