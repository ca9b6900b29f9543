//! The entry of every datagram: demultiplexing and the WebRTC slow path.
//!
//! A datagram is classified by its first byte (RFC 7983: STUN, DTLS, RTP, RTCP), then
//! mapped to a transport by its source address. An unknown address is learnt in two ways
//! only: an ICE check whose USERNAME names a local ufrag (WebRTC), or an RTP/RTCP packet
//! carrying an SSRC a comedia transport waits for (plain). Everything else from an unknown
//! address is dropped and counted, so a stray sender cannot create state.
//!
//! RTP and RTCP are unprotected here (SRTP) and handed to `ingress_rtp` / `ingress_rtcp`;
//! STUN goes to the transport's ICE agent, DTLS to its DTLS endpoint. After either, the
//! transport's WebRTC layers are pumped until quiet ([`Engine::pump_webrtc`]).

use std::net::SocketAddr;
use std::time::Instant;

use super::routes::Objects;
use super::{webrtc, DropReason, Engine};
use crate::egress::{send_bytes, Egress};
use crate::ice::{self, IceOutcome};
use crate::ids::Ssrc;
use crate::wire::demux::{self, PacketKind};
use crate::wire::rtcp::{self, RtcpPacket};
use crate::wire::rtp::RtpPacket;

impl Engine {
    /// Handles one received datagram. `buf` may be modified in place.
    pub fn handle_datagram<E: Egress>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
        egress: &mut E,
    ) {
        self.counters.packets_in += 1;
        self.counters.bytes_in += buf.len() as u64;
        if self.timers.next_tick.is_none() {
            self.timers.next_tick = Some(now);
        }
        let kind = demux::classify(buf);
        let transport = match self.routes.by_addr.get(&from) {
            Some(&t) => t,
            None if kind == PacketKind::Stun => return self.on_stun(now, None, from, buf, egress),
            None => match self
                .relay_route(kind, buf)
                .or_else(|| self.learn_comedia(from, kind, buf))
            {
                Some(t) => t,
                None => {
                    let r = if kind == PacketKind::Rtp || kind == PacketKind::Rtcp {
                        DropReason::UnknownSource
                    } else {
                        unknown_kind_reason(buf)
                    };
                    return self.count_drop(None, r);
                }
            },
        };
        let Some(t) = self.objs.transports.get_mut(transport) else {
            return;
        };
        t.counters.packets_in += 1;
        t.counters.bytes_in += buf.len() as u64;
        let webrtc = t.webrtc.is_some();
        match kind {
            PacketKind::Rtp | PacketKind::Rtcp => {
                let n = match t.srtp.as_mut() {
                    None if webrtc => {
                        return self.count_drop(Some(transport), DropReason::NotConnected)
                    }
                    None => buf.len(),
                    Some(s) => {
                        let r = if kind == PacketKind::Rtp {
                            s.inbound.unprotect_rtp(buf)
                        } else {
                            s.inbound.unprotect_rtcp(buf)
                        };
                        match r {
                            Ok(n) => n,
                            Err(e) => return self.count_drop(Some(transport), e.into()),
                        }
                    }
                };
                let plain = &mut buf[..n];
                if kind == PacketKind::Rtp {
                    self.on_rtp(now, transport, plain, egress)
                } else {
                    self.on_rtcp(now, transport, plain, egress)
                }
            }
            PacketKind::Stun if webrtc => self.on_stun(now, Some(transport), from, buf, egress),
            PacketKind::Dtls if webrtc => {
                let rejected = t
                    .webrtc
                    .as_mut()
                    .is_some_and(|w| w.dtls.handle_datagram(now, buf).is_err());
                if rejected {
                    self.count_drop(Some(transport), DropReason::DtlsRejected);
                }
                self.pump_webrtc(now, transport, egress);
            }
            _ => self.count_drop(Some(transport), unknown_kind_reason(buf)),
        }
    }

    /// The relay transport an RTP or RTCP datagram from an unclaimed address belongs to,
    /// found by the SSRC that is in the clear even under SRTP: the media SSRC of RTP, the
    /// sender SSRC of RTCP. SRTP authentication then decides whether it really is the peer.
    fn relay_route(&self, kind: PacketKind, buf: &[u8]) -> Option<usize> {
        if self.routes.relay.is_empty() {
            return None;
        }
        let at = match kind {
            PacketKind::Rtp => 8,
            PacketKind::Rtcp => 4,
            _ => return None,
        };
        let b = buf.get(at..at + 4)?;
        let ssrc = Ssrc(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        self.routes.relay.get(&ssrc).copied()
    }

    /// A STUN message: an ICE check for a WebRTC transport, found by address or, from a new
    /// address, by the local ufrag in its USERNAME.
    fn on_stun<E: Egress>(
        &mut self,
        now: Instant,
        known: Option<usize>,
        from: SocketAddr,
        buf: &[u8],
        eg: &mut E,
    ) {
        let t = match known {
            Some(t) => t,
            None => {
                let found =
                    ice::username_of(buf).and_then(|(local, _)| self.routes.by_ufrag.get(local));
                match found {
                    Some(&t) => t,
                    None => return self.count_drop(None, DropReason::UnknownSource),
                }
            }
        };
        let Some(tr) = self.objs.transports.get_mut(t) else {
            return;
        };
        if known.is_none() {
            tr.counters.packets_in += 1;
            tr.counters.bytes_in += buf.len() as u64;
        }
        let Some(w) = tr.webrtc.as_mut() else {
            return self.count_drop(Some(t), DropReason::UnknownProtocol);
        };
        let mut reply = [0u8; 512];
        let mapped = eg.mapped_address(from);
        match w.ice.handle_stun_mapped(now, from, mapped, buf, &mut reply) {
            IceOutcome::Reply { len, .. } => {
                send_bytes(eg, from, &reply[..len.min(reply.len())]);
            }
            IceOutcome::Dropped(d) => {
                tracing::trace!(reason = ?d, %from, "ICE check refused");
                return self.count_drop(Some(t), DropReason::IceRejected);
            }
        }
        let selected = w.ice.selected();
        if selected != tr.remote {
            if let Some(old) = tr.remote {
                self.routes.by_addr.remove(&old);
            }
            tr.remote = selected;
            if let Some(a) = selected {
                tracing::debug!(transport = tr.id, remote = %a, "ICE selected a remote");
                self.routes.by_addr.insert(a, t);
            }
        }
        self.pump_webrtc(now, t, eg);
    }

    /// A datagram from an unknown address: bind it to a comedia transport if it carries one
    /// of that transport's SSRCs.
    fn learn_comedia(&mut self, from: SocketAddr, kind: PacketKind, buf: &[u8]) -> Option<usize> {
        if self.routes.comedia.is_empty() {
            return None;
        }
        let ssrc = match kind {
            PacketKind::Rtp => RtpPacket::new_checked(buf).ok()?.ssrc(),
            PacketKind::Rtcp => rtcp_reference_ssrc(buf)?,
            _ => return None,
        };
        let t = *self.routes.comedia.get(&ssrc)?;
        self.routes.comedia.retain(|_, v| *v != t);
        let tr = self.objs.transports.get_mut(t)?;
        tr.remote = Some(from);
        self.routes.by_addr.insert(from, t);
        tracing::debug!(transport = tr.id, %from, "comedia: remote learnt");
        Some(t)
    }

    /// Runs a WebRTC transport's layers until quiet; closes the transport if it died.
    pub(super) fn pump_webrtc<E: Egress>(&mut self, now: Instant, t: usize, eg: &mut E) {
        let Objects { transports, .. } = &mut self.objs;
        let Some(tr) = transports.get_mut(t) else {
            return;
        };
        let (id, remote) = (tr.id, tr.remote);
        let Some(w) = tr.webrtc.as_mut() else {
            return;
        };
        let health = w.pump(now, id, remote, eg, &mut self.outbox);
        if let Some(keys) = w.take_srtp() {
            tr.srtp = Some(Box::new(keys));
        }
        if let webrtc::Health::Dead(why) = health {
            tracing::info!(transport = id, why, "closing WebRTC transport");
            self.close_transport(t, why);
        }
    }
}

/// Why a datagram that is neither RTP nor RTCP is dropped: a first byte of 0xC0 or more
/// is RTP/RTCP with version 3, anything else another protocol (RFC 7983).
fn unknown_kind_reason(buf: &[u8]) -> DropReason {
    match buf.first() {
        Some(b) if *b >= 0xc0 => DropReason::BadVersion,
        _ => DropReason::UnknownProtocol,
    }
}

/// The SSRC an RTCP datagram from a not-yet-known comedia peer refers to: the media SSRC of
/// its first feedback message or report block, or its sender SSRC.
fn rtcp_reference_ssrc(buf: &[u8]) -> Option<Ssrc> {
    let mut sender = None;
    for p in rtcp::packets(buf) {
        match p.ok()? {
            RtcpPacket::Nack(n) => return Some(n.media_ssrc()),
            RtcpPacket::Pli(p) => return Some(p.media_ssrc()),
            RtcpPacket::ReceiverReport(rr) => {
                if let Some(b) = rr.report_blocks().next() {
                    return Some(b.ssrc());
                }
                sender = sender.or(Some(rr.ssrc()));
            }
            RtcpPacket::SenderReport(sr) => sender = sender.or(Some(sr.ssrc())),
            _ => {}
        }
    }
    sender
}
