//! The publishers' side: one UDP socket per publisher, each sending its frames on a
//! schedule scaled by a load factor.
//!
//! The schedule is absolute (frame `k` is due at `start + k × interval`), so a late loop
//! turn sends the frames it owes at once rather than drifting; a publisher more than
//! [`MAX_LAG`] behind drops the frames it owes and counts them, which marks the trial as
//! limited by the generator rather than by the system under test.
//!
//! With SRTP ([`Generator::enable_srtp`]) each publisher protects its packets under its own
//! keys before sending, and unprotects the forwarder's SRTCP before reading PLIs from it.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use prism_forwarder::srtp::{SrtpError, SrtpProfile, MAX_OVERHEAD};

use crate::clock;
use crate::scenario::{self, Topology};
use crate::source::Source;
use crate::srtp::{Endpoint, EndpointSrtp};

/// How far behind its schedule a publisher may fall before it skips frames.
pub const MAX_LAG: Duration = Duration::from_millis(20);

struct Publisher {
    socket: UdpSocket,
    target: SocketAddr,
    source: Source,
    interval: Duration,
    next_due: Instant,
    srtp: Option<Box<EndpointSrtp>>,
}

/// What the generator did in a trial.
#[derive(Clone, Debug, Default)]
pub struct Sent {
    /// Datagrams sent per publisher layer: `[publisher][layer]`.
    pub per_layer: Vec<Vec<u64>>,
    pub datagrams: u64,
    /// Frames skipped because the generator fell behind.
    pub skipped_frames: u64,
    /// Sends the kernel refused, or packets SRTP could not protect.
    pub send_errors: u64,
    /// SRTCP from the forwarder that did not authenticate (SRTP runs only).
    pub srtcp_failures: u64,
}

/// Every publisher of a topology.
pub struct Generator {
    pubs: Vec<Publisher>,
    scratch: Vec<(usize, Vec<u8>)>,
    /// Where a packet is protected before it is sent (SRTP runs).
    sealed: Vec<u8>,
    pub sent: Sent,
    rtcp_buf: Vec<u8>,
    /// Keyframe requests (RTCP PLI) honoured.
    pub plis: u64,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("publishers", &self.pubs.len())
            .finish()
    }
}

impl Generator {
    /// Binds one socket per publisher of `topo`; targets are set by [`Self::set_targets`].
    pub fn bind(topo: &Topology) -> io::Result<Self> {
        Self::bind_on(topo, std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// As [`Self::bind`], on `ip` (veth mode: the near end of the pair).
    pub fn bind_on(topo: &Topology, ip: std::net::IpAddr) -> io::Result<Self> {
        let mut pubs = Vec::with_capacity(topo.publishers.len());
        for (p, spec) in topo.publishers.iter().enumerate() {
            let socket = UdpSocket::bind((ip, 0))?;
            socket.set_nonblocking(true)?;
            let _ = socket2::SockRef::from(&socket).set_send_buffer_size(4 << 20);
            let layers = spec.media.layers();
            let source = Source::new(
                spec.media,
                (0..layers).map(|l| scenario::stream_id(p, l)).collect(),
                (0..layers).map(|l| scenario::source_ssrc(p, l)).collect(),
            );
            pubs.push(Publisher {
                target: socket.local_addr()?,
                socket,
                source,
                interval: Duration::from_secs(1),
                next_due: Instant::now(),
                srtp: None,
            });
        }
        let sent = Sent {
            per_layer: pubs
                .iter()
                .map(|p| vec![0; p.source.streams.len()])
                .collect(),
            ..Sent::default()
        };
        Ok(Self {
            pubs,
            scratch: Vec::new(),
            sealed: vec![0; 2048],
            sent,
            rtcp_buf: vec![0; 2048],
            plis: 0,
        })
    }

    pub fn addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.pubs.iter().map(|p| p.socket.local_addr()).collect()
    }

    /// Makes every publisher protect its RTP (and unprotect the forwarder's RTCP) with
    /// its own keys, the mirror of what [`crate::srtp::params`] gives the forwarder.
    pub fn enable_srtp(&mut self, profile: SrtpProfile) -> Result<(), SrtpError> {
        for (i, p) in self.pubs.iter_mut().enumerate() {
            p.srtp = Some(Box::new(EndpointSrtp::new(
                profile,
                Endpoint::Publisher(i),
            )?));
        }
        Ok(())
    }

    /// Where each publisher sends.
    pub fn set_targets(&mut self, targets: &[SocketAddr]) {
        for (p, t) in self.pubs.iter_mut().zip(targets) {
            p.target = *t;
        }
    }

    /// Restarts the schedule at `factor` times each publisher's natural frame rate, with
    /// publishers spread evenly over one interval, and clears the counters.
    pub fn start(&mut self, factor: f64, now: Instant) -> Sent {
        let n = self.pubs.len().max(1) as u32;
        for (i, p) in self.pubs.iter_mut().enumerate() {
            p.interval = Duration::from_secs_f64(1.0 / (p.source.media.base_fps() * factor));
            p.next_due = now + p.interval * i as u32 / n;
        }
        let fresh = Sent {
            per_layer: self
                .pubs
                .iter()
                .map(|p| vec![0; p.source.streams.len()])
                .collect(),
            ..Sent::default()
        };
        std::mem::replace(&mut self.sent, fresh)
    }

    /// Sends every frame due by `now`; returns when the next one is due.
    pub fn send_due(&mut self, now: Instant) -> Instant {
        let mut next = now + Duration::from_secs(1);
        for (pi, p) in self.pubs.iter_mut().enumerate() {
            if now.saturating_duration_since(p.next_due) > MAX_LAG {
                let behind = now.duration_since(p.next_due);
                let skip = (behind.as_secs_f64() / p.interval.as_secs_f64()) as u64;
                self.sent.skipped_frames += skip;
                p.next_due = now;
            }
            let mut sent_any = false;
            while p.next_due <= now {
                sent_any = true;
                self.scratch.clear();
                p.source
                    .next_frame(clock::nanos_at(Instant::now()), &mut self.scratch);
                for (layer, d) in &self.scratch {
                    let wire = match p.srtp.as_mut() {
                        None => &d[..],
                        Some(srtp) => {
                            let need = d.len() + MAX_OVERHEAD;
                            if self.sealed.len() < need {
                                self.sealed.resize(need, 0);
                            }
                            match srtp.protect.protect_rtp_into(d, &mut self.sealed) {
                                Ok(n) => &self.sealed[..n],
                                Err(_) => {
                                    self.sent.send_errors += 1;
                                    continue;
                                }
                            }
                        }
                    };
                    match p.socket.send_to(wire, p.target) {
                        Ok(_) => {
                            self.sent.per_layer[pi][*layer] += 1;
                            self.sent.datagrams += 1;
                        }
                        Err(_) => self.sent.send_errors += 1,
                    }
                }
                p.next_due += p.interval;
            }
            next = next.min(p.next_due);
            // Feedback from the forwarder (PLI, receiver reports) is read and dropped so
            // it never fills the socket.
            if sent_any {
                while let Ok(n) = p.socket.recv(&mut self.rtcp_buf) {
                    let n = match p.srtp.as_mut() {
                        None => n,
                        Some(srtp) => {
                            match srtp.unprotect.unprotect_rtcp(&mut self.rtcp_buf[..n]) {
                                Ok(n) => n,
                                Err(_) => {
                                    self.sent.srtcp_failures += 1;
                                    continue;
                                }
                            }
                        }
                    };
                    for ssrc in pli_targets(&self.rtcp_buf[..n]) {
                        self.plis += 1;
                        p.source.request_keyframe(ssrc);
                    }
                }
            }
        }
        next
    }
}

/// Media SSRCs of the PLIs (payload-specific feedback, FMT 1) in a compound RTCP packet.
pub fn pli_targets(mut d: &[u8]) -> Vec<u32> {
    let mut out = Vec::new();
    while d.len() >= 4 {
        let len = (usize::from(u16::from_be_bytes([d[2], d[3]])) + 1) * 4;
        let Some(pkt) = d.get(..len) else { break };
        if pkt[0] >> 6 == 2 && pkt[0] & 0x1f == 1 && pkt[1] == 206 && pkt.len() >= 12 {
            out.push(u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]));
        }
        d = &d[len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_plis_in_compound_rtcp() {
        // A receiver report (no blocks), then a PLI for SSRC 0x10000002.
        let rr = [0x80u8, 201, 0, 1, 0, 0, 0, 1];
        let pli = [0x81u8, 206, 0, 2, 0, 0, 0, 1, 0x10, 0, 0, 2];
        let mut d = rr.to_vec();
        d.extend_from_slice(&pli);
        assert_eq!(pli_targets(&d), vec![0x1000_0002]);
        assert!(pli_targets(&rr).is_empty());
        assert!(pli_targets(&[0x81, 206, 0, 9]).is_empty());
    }
}
