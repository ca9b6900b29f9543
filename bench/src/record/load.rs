//! The load side of the recording bench, one thread: a WHIP publisher of N VP8 tracks
//! paced at a frame rate, and the WHEP viewers' sockets, all in one mio poll.
//!
//! The publisher's packets come from the bench's [`Source`] (the forwarder's synthetic VP8:
//! payload descriptors, temporal layers, keyframes with a start code and a 1280×720 size,
//! so the recorder assembles and writes real frames), protected with the SRTP keys its
//! DTLS handshake produced. Keyframe requests (PLIs in the SRTCP the server sends the
//! publisher) are honoured, as a browser would. Viewers only count: RTP datagrams and
//! bytes, and RTCP apart; the RTP header is in the clear, so nothing is decrypted.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use mio::net::UdpSocket as MioUdp;
use mio::{Events, Interest, Poll, Token};
use prism_forwarder::srtp::MAX_OVERHEAD;

use super::peer::Peer;
use crate::source::{Media, Source};

/// Consent checks this often on every transport.
const CONSENT_INTERVAL: Duration = Duration::from_secs(2);
/// A drain ends after this long without a datagram.
const QUIET: Duration = Duration::from_millis(150);
const PUBLISHER: Token = Token(usize::MAX - 1);

/// What the load side counted.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Counts {
    /// RTP packets (and their bytes, SRTP included) the publisher sent.
    pub sent: u64,
    pub sent_bytes: u64,
    /// Frame times the pacer skipped because it was late by more than a frame.
    pub late_frames: u64,
    /// RTP datagrams, bytes and RTCP datagrams all viewers received.
    pub received: u64,
    pub received_bytes: u64,
    pub received_rtcp: u64,
    /// PLIs the publisher honoured.
    pub plis: u64,
}

impl Counts {
    pub fn since(&self, before: &Counts) -> Counts {
        Counts {
            sent: self.sent - before.sent,
            sent_bytes: self.sent_bytes - before.sent_bytes,
            late_frames: self.late_frames - before.late_frames,
            received: self.received - before.received,
            received_bytes: self.received_bytes - before.received_bytes,
            received_rtcp: self.received_rtcp - before.received_rtcp,
            plis: self.plis - before.plis,
        }
    }
}

/// The publisher and the viewers.
pub struct Load {
    poll: Poll,
    publisher: Peer,
    pub_sock: MioUdp,
    sources: Vec<Source>,
    viewers: Vec<(Peer, MioUdp)>,
    fps: f64,
    pub counts: Counts,
    next_consent: Instant,
    buf: Vec<u8>,
    frame: Vec<(usize, Vec<u8>)>,
}

impl std::fmt::Debug for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Load")
            .field("publisher", &self.publisher)
            .field("viewers", &self.viewers.len())
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

/// RTP SSRC of track `i`.
pub fn ssrc_of(i: usize) -> u32 {
    0x5ec0_0000 + i as u32
}

impl Load {
    /// `publisher` sends `tracks` tracks (SSRCs [`ssrc_of`]) at `fps`.
    pub fn new(publisher: Peer, tracks: usize, fps: f64, viewers: Vec<Peer>) -> Result<Load> {
        let poll = Poll::new()?;
        let mio_of = |p: &Peer| -> Result<MioUdp> {
            let s = p.sock.try_clone()?;
            s.set_nonblocking(true)?;
            Ok(MioUdp::from_std(s))
        };
        let mut pub_sock = mio_of(&publisher)?;
        poll.registry()
            .register(&mut pub_sock, PUBLISHER, Interest::READABLE)?;
        let mut vs = Vec::new();
        for (i, v) in viewers.into_iter().enumerate() {
            let mut s = mio_of(&v)?;
            poll.registry()
                .register(&mut s, Token(i), Interest::READABLE)?;
            vs.push((v, s));
        }
        let sources = (0..tracks)
            .map(|i| Source::new(Media::Video, vec![i as u32], vec![ssrc_of(i)]))
            .collect();
        Ok(Load {
            poll,
            publisher,
            pub_sock,
            sources,
            viewers: vs,
            fps,
            counts: Counts::default(),
            next_consent: Instant::now(),
            buf: vec![0u8; 2048],
            frame: Vec::new(),
        })
    }

    /// Sends frames at the frame rate (when `send`) and counts what arrives until `until`;
    /// with `send` false, returns early once nothing has arrived for a while (a drain).
    pub fn run(&mut self, send: bool, until: Instant) -> Result<()> {
        let period = Duration::from_secs_f64(1.0 / self.fps);
        let start = Instant::now();
        let mut next_frame = start;
        let mut last_rx = start;
        let mut events = Events::with_capacity(256);
        loop {
            let now = Instant::now();
            if now >= until || (!send && now.duration_since(last_rx) >= QUIET) {
                return Ok(());
            }
            if send && now >= next_frame {
                self.send_frame()?;
                next_frame += period;
                while now >= next_frame + period {
                    next_frame += period;
                    self.counts.late_frames += 1;
                }
            }
            if now >= self.next_consent {
                self.publisher.consent()?;
                for (v, _) in &self.viewers {
                    v.consent()?;
                }
                self.next_consent = now + CONSENT_INTERVAL;
            }
            let mut wake = until.min(self.next_consent);
            if send {
                wake = wake.min(next_frame);
            } else {
                wake = wake.min(last_rx + QUIET);
            }
            let timeout = wake.saturating_duration_since(Instant::now());
            self.poll.poll(&mut events, Some(timeout))?;
            for ev in &events {
                if self.drain(ev.token())? {
                    last_rx = Instant::now();
                }
            }
        }
    }

    fn send_frame(&mut self) -> Result<()> {
        let now_ns = crate::clock::now_ns();
        for i in 0..self.sources.len() {
            self.frame.clear();
            self.sources[i].next_frame(now_ns, &mut self.frame);
            for (_, p) in self.frame.iter_mut() {
                let len = p.len();
                p.resize(len + MAX_OVERHEAD, 0);
                let n = self
                    .publisher
                    .outbound
                    .protect_rtp(p, len)
                    .map_err(|e| anyhow!("SRTP protect: {e:?}"))?;
                match self.pub_sock.send_to(&p[..n], self.publisher.server) {
                    Ok(_) => {
                        self.counts.sent += 1;
                        self.counts.sent_bytes += n as u64;
                    }
                    // A full send buffer: the packet is lost, as on a real link.
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Reads one socket until it would block; whether anything arrived.
    fn drain(&mut self, token: Token) -> Result<bool> {
        let mut any = false;
        loop {
            let sock = if token == PUBLISHER {
                &self.pub_sock
            } else {
                match self.viewers.get(token.0) {
                    Some((_, s)) => s,
                    None => return Ok(any),
                }
            };
            let n = match sock.recv(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(any),
                Err(e) => return Err(e.into()),
            };
            any = true;
            let d = &mut self.buf[..n];
            // RFC 7983: RTP and RTCP start at 128..=191; RTCP's packet type is 192..=223.
            if n < 12 || !(128..=191).contains(&d[0]) {
                continue;
            }
            let rtcp = (192..=223).contains(&d[1]);
            if token == PUBLISHER {
                if rtcp {
                    if let Ok(len) = self.publisher.inbound.unprotect_rtcp(d) {
                        for ssrc in plis(&d[..len]) {
                            if let Some(s) = self.sources.iter_mut().find(|s| s.ssrcs[0] == ssrc) {
                                s.request_keyframe(ssrc);
                                self.counts.plis += 1;
                            }
                        }
                    }
                }
            } else if rtcp {
                self.counts.received_rtcp += 1;
            } else {
                self.counts.received += 1;
                self.counts.received_bytes += n as u64;
            }
        }
    }
}

/// Media SSRCs of the PLIs (PSFB, FMT 1) in a compound RTCP packet.
pub fn plis(mut d: &[u8]) -> Vec<u32> {
    let mut out = Vec::new();
    while d.len() >= 4 {
        let len = (usize::from(u16::from_be_bytes([d[2], d[3]])) + 1) * 4;
        if len > d.len() {
            break;
        }
        if d[1] == 206 && d[0] & 0x1f == 1 && len >= 12 {
            out.push(u32::from_be_bytes([d[8], d[9], d[10], d[11]]));
        }
        d = &d[len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plis_are_found_in_a_compound_packet() {
        // A receiver report without blocks, then a PLI for 0x01020304, then a NACK.
        let mut c = vec![0x80, 201, 0, 1, 0, 0, 0, 9];
        c.extend_from_slice(&[0x81, 206, 0, 2, 0, 0, 0, 9, 1, 2, 3, 4]);
        c.extend_from_slice(&[0x81, 205, 0, 3, 0, 0, 0, 9, 5, 6, 7, 8, 0, 1, 0, 0]);
        assert_eq!(plis(&c), vec![0x0102_0304]);
        // Truncated: nothing is read past the end.
        assert!(plis(&c[..10]).is_empty());
    }
}
