//! The subscribers' side: one UDP socket per subscriber, all polled together by one mio
//! poll, each drained with batched receives (`recvmmsg` through quinn-udp) into a
//! [`Tally`].
//!
//! Sockets are registered edge-triggered, so a readable socket is always read until it
//! reports `WouldBlock`; that keeps the poll cheap with a thousand sockets and most of
//! them idle at any instant.
//!
//! With SRTP ([`Sinks::enable_srtp`]) every sink unprotects what it receives with its own
//! keys before accounting it: a packet whose tag does not verify is never accounted (so it
//! shows as loss) and is counted in [`SrtpTally`]; SRTCP is authenticated and counted as
//! foreign, like plain RTCP.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::time::Duration;

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState, BATCH_SIZE};

use prism_forwarder::srtp::{SrtpError, SrtpProfile};

use crate::accounting::Tally;
use crate::clock;
use crate::srtp::{self, Endpoint, EndpointSrtp, Opened};

/// Receive buffer per slot: room for a GRO-coalesced batch should the kernel build one.
const SLOT: usize = 64 * 1024;
/// Socket receive buffer asked for per sink (capped by `net.core.rmem_max`).
pub const SINK_RCVBUF: usize = 4 << 20;

struct Sink {
    socket: UdpSocket,
    state: UdpSocketState,
    srtp: Option<Box<EndpointSrtp>>,
}

/// What the sinks' SRTP contexts refused, over the sinks' lifetime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SrtpTally {
    /// Tags that did not verify: the forwarder encrypted under the wrong key, or corrupted.
    pub auth_failed: u64,
    /// Authentic packets already seen (or older than the replay window).
    pub replayed: u64,
}

/// Every subscriber's socket, and what they received.
pub struct Sinks {
    sinks: Vec<Sink>,
    poll: Poll,
    events: Events,
    bufs: Vec<Vec<u8>>,
    metas: Vec<RecvMeta>,
    pub tally: Tally,
    /// Receive errors other than `WouldBlock`.
    pub errors: u64,
    pub srtp: SrtpTally,
}

impl std::fmt::Debug for Sinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sinks")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl Sinks {
    /// Binds `n` sockets on 127.0.0.1.
    pub fn bind(n: usize) -> io::Result<Self> {
        Self::bind_on(n, std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// Binds `n` sockets on `ip` (veth mode: the near end of the pair).
    pub fn bind_on(n: usize, ip: std::net::IpAddr) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut sinks = Vec::with_capacity(n);
        for i in 0..n {
            let std = std::net::UdpSocket::bind((ip, 0))?;
            std.set_nonblocking(true)?;
            let state = UdpSocketState::new(UdpSockRef::from(&std))?;
            // Best effort: the kernel caps it and tells nobody.
            let _ = state.set_recv_buffer_size(UdpSockRef::from(&std), SINK_RCVBUF);
            let mut socket = UdpSocket::from_std(std);
            poll.registry()
                .register(&mut socket, Token(i), Interest::READABLE)?;
            sinks.push(Sink {
                socket,
                state,
                srtp: None,
            });
        }
        Ok(Self {
            sinks,
            poll,
            events: Events::with_capacity(1024),
            bufs: vec![vec![0u8; SLOT]; BATCH_SIZE],
            metas: vec![RecvMeta::default(); BATCH_SIZE],
            tally: Tally::new(),
            errors: 0,
            srtp: SrtpTally::default(),
        })
    }

    /// Makes every sink unprotect what it receives with its own keys, the mirror of what
    /// [`crate::srtp::params`] gives the forwarder for the sink's transport.
    pub fn enable_srtp(&mut self, profile: SrtpProfile) -> Result<(), SrtpError> {
        for (i, s) in self.sinks.iter_mut().enumerate() {
            s.srtp = Some(Box::new(EndpointSrtp::new(profile, Endpoint::Sink(i))?));
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    pub fn addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.sinks.iter().map(|s| s.socket.local_addr()).collect()
    }

    /// Starts a fresh tally that ignores packets sent before `since_ns`; returns the old one.
    pub fn reset(&mut self, since_ns: u64) -> Tally {
        std::mem::replace(&mut self.tally, Tally::since(since_ns))
    }

    /// Waits up to `timeout` for datagrams and accounts all that are ready. Returns the
    /// number of datagrams read.
    pub fn poll(&mut self, timeout: Duration) -> io::Result<u64> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(0),
            Err(e) => return Err(e),
        }
        let ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
        let mut n = 0;
        for i in ready {
            n += self.drain(i);
        }
        Ok(n)
    }

    /// Reads every socket until empty, whatever the poll says (after a trial).
    pub fn drain_all(&mut self) -> u64 {
        (0..self.sinks.len()).map(|i| self.drain(i)).sum()
    }

    fn drain(&mut self, i: usize) -> u64 {
        let Sinks {
            sinks,
            bufs,
            metas,
            tally,
            errors,
            srtp: refused,
            ..
        } = self;
        let Some(sink) = sinks.get_mut(i) else {
            return 0;
        };
        let mut total = 0;
        loop {
            let mut slices: Vec<IoSliceMut<'_>> =
                bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let got = match sink
                .state
                .recv(UdpSockRef::from(&sink.socket), &mut slices, metas)
            {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    *errors += 1;
                    break;
                }
            };
            drop(slices);
            let now = clock::now_ns();
            for (meta, buf) in metas.iter().zip(bufs.iter_mut()).take(got) {
                let stride = meta.stride.max(1);
                for d in buf[..meta.len].chunks_mut(stride) {
                    total += 1;
                    let Some(ctx) = sink.srtp.as_mut() else {
                        tally.record(i as u32, d, now);
                        continue;
                    };
                    match srtp::open(&mut ctx.unprotect, d) {
                        Opened::Rtp(n) => tally.record(i as u32, &d[..n], now),
                        // Counted as a datagram without a trailer, as plain RTCP is.
                        Opened::Rtcp => tally.record(i as u32, &[], now),
                        Opened::AuthFailed => refused.auth_failed += 1,
                        Opened::Replayed => refused.replayed += 1,
                    }
                }
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Trailer;
    use crate::srtp::params;
    use prism_forwarder::srtp::{SrtpContext, SrtpKeys, MAX_OVERHEAD};

    /// What the forwarder would send to `sink`: a 200-byte RTP packet with a trailer,
    /// protected with the send keys control gave that sink's transport.
    fn protected_for(sink: usize, seq: u16) -> Vec<u8> {
        let profile = SrtpProfile::AeadAes128Gcm;
        let p = params(profile, Endpoint::Sink(sink));
        let keys = SrtpKeys::new(profile, &p.send_key, &p.send_salt).unwrap();
        let mut ctx = SrtpContext::new(profile, &keys).unwrap();
        let mut plain = vec![0u8; 200];
        plain[..2].copy_from_slice(&[0x80, 96]);
        plain[2..4].copy_from_slice(&seq.to_be_bytes());
        plain[8..12].copy_from_slice(&0x2000_0000u32.to_be_bytes());
        Trailer {
            stream: 0,
            seq: u64::from(seq),
            sent_ns: clock::now_ns(),
        }
        .write(&mut plain);
        let mut out = vec![0u8; plain.len() + MAX_OVERHEAD];
        let n = ctx.protect_rtp_into(&plain, &mut out).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn srtp_sinks_account_verified_packets_and_count_the_rest() {
        let mut sinks = Sinks::bind(2).unwrap();
        sinks.enable_srtp(SrtpProfile::AeadAes128Gcm).unwrap();
        sinks.reset(0);
        let addrs = sinks.addrs().unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let good = protected_for(0, 1);
        tx.send_to(&good, addrs[0]).unwrap();
        tx.send_to(&good, addrs[0]).unwrap(); // replayed
        tx.send_to(&protected_for(0, 2), addrs[1]).unwrap(); // sink 0's key at sink 1
        let mut forged = protected_for(0, 3);
        *forged.last_mut().unwrap() ^= 1;
        tx.send_to(&forged, addrs[0]).unwrap();
        let mut got = 0;
        for _ in 0..100 {
            got += sinks.poll(Duration::from_millis(10)).unwrap();
            if got == 4 {
                break;
            }
        }
        assert_eq!(got, 4, "every datagram arrived");
        assert_eq!(
            sinks.srtp,
            SrtpTally {
                auth_failed: 2,
                replayed: 1
            }
        );
        let t = sinks.reset(0);
        assert_eq!(
            t.totals().unique,
            1,
            "only the verified packet is accounted"
        );
        assert_eq!(t.streams.get(&(0, 0)).map(|s| s.unique), Some(1));
    }
}
