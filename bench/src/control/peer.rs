//! A data-channel-only WebRTC client, built from the forwarder's own sans-IO pieces: STUN
//! checks written with `wire::stun`, `dtls::DtlsEndpoint`, `sctp::DataChannels`. It is what
//! a LiveKit SDK's publisher connection is to the server, minus media: ICE as the
//! controlling agent against an ICE-lite server (a nominating check, then a consent check
//! every 2.5 s), DTLS in the role the answer's `a=setup` leaves us, SCTP, and DCEP to open
//! `_reliable`.
//!
//! The protocol state machines own no socket and no clock: [`DataPeer::turn`] reads the
//! clock, waits for one datagram or the next timer, hands it down, and writes what comes
//! out. Messages received are queued for the caller with their arrival time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hmac::{Hmac, KeyInit, Mac};
use prism_forwarder::dtls::{DtlsCert, DtlsEndpoint, DtlsEvent};
use prism_forwarder::sctp::{DataChannelEvent, DataChannels, Reliability};
use prism_forwarder::wire::stun::{attr, Class, Method, StunMessage, StunWriter};
use sha1::Sha1;
use tokio::net::UdpSocket;

use super::sdp::{AnswerParams, OfferParams};

/// The channel LiveKit's SDKs send reliable data on.
pub const RELIABLE_LABEL: &str = "_reliable";

/// Checks are resent this often until one is answered, then repeated as consent checks.
const CHECK_RETRY: Duration = Duration::from_millis(50);
const CONSENT_INTERVAL: Duration = Duration::from_millis(2500);

/// Our half of the offer: ICE credentials and a certificate, and the socket it will use.
#[derive(Debug)]
pub struct LocalPeer {
    pub offer: OfferParams,
    cert: DtlsCert,
}

impl LocalPeer {
    pub fn new() -> Result<Self> {
        let cert = DtlsCert::generate().map_err(|e| anyhow!("certificate: {e:?}"))?;
        Ok(LocalPeer {
            offer: OfferParams {
                ice_ufrag: random_token(8)?,
                ice_pwd: random_token(24)?,
                fingerprint: cert.fingerprint(),
            },
            cert,
        })
    }
}

/// Letters and digits (ICE's `ice-char` minus `+` and `/`).
fn random_token(n: usize) -> Result<String> {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut raw = vec![0u8; n];
    getrandom::fill(&mut raw).map_err(|e| anyhow!("getrandom: {e}"))?;
    Ok(raw
        .iter()
        .map(|b| CHARS[*b as usize % CHARS.len()] as char)
        .collect())
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut out = [0u8; 20];
    if let Ok(mut m) = <Hmac<Sha1> as KeyInit>::new_from_slice(key) {
        m.update(data);
        out.copy_from_slice(&m.finalize().into_bytes());
    }
    out
}

/// Counters a report may want; nothing here is on the measured path.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerStats {
    pub checks_sent: u64,
    pub dtls_errors: u64,
}

/// One publisher connection with a `_reliable` data channel.
#[derive(Debug)]
pub struct DataPeer {
    sock: UdpSocket,
    server: SocketAddr,
    username: Vec<u8>,
    server_pwd: Vec<u8>,
    cert: DtlsCert,
    answer: AnswerParams,
    nominated: bool,
    next_check: Instant,
    dtls: Option<DtlsEndpoint>,
    dc: Option<DataChannels>,
    channel: Option<u16>,
    open: bool,
    inbox: Vec<(Instant, Vec<u8>)>,
    pub stats: PeerStats,
}

impl DataPeer {
    /// A peer for `answer`, on a fresh UDP socket on the candidate's side of the host.
    pub async fn new(local: LocalPeer, answer: AnswerParams) -> Result<Self> {
        let bind: SocketAddr = if answer.candidate.ip().is_loopback() {
            "127.0.0.1:0".parse()?
        } else {
            "0.0.0.0:0".parse()?
        };
        let sock = UdpSocket::bind(bind).await.context("UDP bind")?;
        Ok(DataPeer {
            sock,
            server: answer.candidate,
            username: format!("{}:{}", answer.ice_ufrag, local.offer.ice_ufrag).into_bytes(),
            server_pwd: answer.ice_pwd.clone().into_bytes(),
            cert: local.cert,
            answer,
            nominated: false,
            next_check: Instant::now(),
            dtls: None,
            dc: None,
            channel: None,
            open: false,
            inbox: Vec::new(),
            stats: PeerStats::default(),
        })
    }

    /// Whether `_reliable` is open both ways.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Runs ICE, DTLS, SCTP and DCEP until `_reliable` is open, or fails at `deadline`.
    pub async fn connect(&mut self, deadline: Instant) -> Result<()> {
        while !self.open {
            if Instant::now() >= deadline {
                let stage = match (self.nominated, &self.dc) {
                    (false, _) => "ICE",
                    (true, None) => "DTLS",
                    (true, Some(dc)) if !dc.is_connected() => "SCTP",
                    _ => "DCEP",
                };
                bail!("data channel not open in time (stuck in {stage})");
            }
            self.turn(deadline).await?;
        }
        Ok(())
    }

    /// Queues one binary message on `_reliable`; it leaves at the next turn.
    pub fn send(&mut self, data: &[u8]) -> Result<()> {
        let (Some(dc), Some(id)) = (self.dc.as_mut(), self.channel) else {
            bail!("no data channel yet");
        };
        dc.send(id, true, data)
            .map_err(|e| anyhow!("data channel send: {e:?}"))
    }

    /// Messages received since the last call, with their arrival times.
    pub fn take_messages(&mut self) -> Vec<(Instant, Vec<u8>)> {
        std::mem::take(&mut self.inbox)
    }

    /// One turn: write what is due, wait for a datagram or the next timer (at most until
    /// `deadline`), handle whatever arrived, write again.
    pub async fn turn(&mut self, deadline: Instant) -> Result<()> {
        let now = Instant::now();
        self.flush(now).await?;
        let wake = [
            self.dtls.as_ref().and_then(DtlsEndpoint::poll_timeout),
            self.dc.as_ref().and_then(DataChannels::poll_timeout),
            Some(self.next_check),
            Some(deadline),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(deadline);
        let mut buf = [0u8; 2048];
        let wake = tokio::time::Instant::from_std(wake.max(now));
        if let Ok(r) = tokio::time::timeout_at(wake, self.sock.recv_from(&mut buf)).await {
            let (n, _) = r.context("UDP receive")?;
            let now = Instant::now();
            self.on_datagram(now, &buf[..n])?;
            // Whatever else is already queued, without waiting.
            while let Ok((n, _)) = self.sock.try_recv_from(&mut buf) {
                self.on_datagram(now, &buf[..n])?;
            }
        }
        let now = Instant::now();
        if let Some(d) = self.dtls.as_mut() {
            d.handle_timeout(now);
        }
        if let Some(dc) = self.dc.as_mut() {
            dc.handle_timeout(now);
        }
        self.on_events(now)?;
        self.flush(now).await
    }

    fn on_datagram(&mut self, now: Instant, d: &[u8]) -> Result<()> {
        match d.first() {
            Some(0..=3) => {
                let Ok(m) = StunMessage::new_checked(d) else {
                    return Ok(());
                };
                if m.class() == Class::SuccessResponse && m.method() == Method::BINDING {
                    if !self.nominated {
                        self.nominated = true;
                        let mut dtls = DtlsEndpoint::new(self.answer.our_role, &self.cert)
                            .map_err(|e| anyhow!("DTLS: {e:?}"))?;
                        dtls.set_remote_fingerprint(self.answer.fingerprint)
                            .map_err(|e| anyhow!("DTLS fingerprint: {e:?}"))?;
                        dtls.handle_timeout(now);
                        self.dtls = Some(dtls);
                    }
                    self.next_check = now + CONSENT_INTERVAL;
                }
            }
            Some(20..=63) => {
                if let Some(dtls) = self.dtls.as_mut() {
                    if dtls.handle_datagram(now, d).is_err() {
                        self.stats.dtls_errors += 1;
                    }
                }
                self.on_events(now)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn on_events(&mut self, now: Instant) -> Result<()> {
        let Some(dtls) = self.dtls.as_mut() else {
            return Ok(());
        };
        while let Some(e) = dtls.poll_event() {
            match e {
                DtlsEvent::Connected { .. } => {
                    let mut dc = DataChannels::new(dtls.role());
                    dc.handle_timeout(now);
                    let id = dc
                        .open_channel(RELIABLE_LABEL, true, Reliability::Reliable)
                        .map_err(|e| anyhow!("open {RELIABLE_LABEL}: {e:?}"))?;
                    self.channel = Some(id);
                    self.dc = Some(dc);
                }
                DtlsEvent::ApplicationData(a) => {
                    if let Some(dc) = self.dc.as_mut() {
                        dc.handle_dtls_data(now, &a);
                    }
                }
                DtlsEvent::Closed => bail!("DTLS closed by the server"),
                DtlsEvent::Failed(f) => bail!("DTLS failed: {f}"),
                _ => {}
            }
        }
        if let Some(dc) = self.dc.as_mut() {
            while let Some(e) = dc.poll_event() {
                match e {
                    DataChannelEvent::Open { id, .. } if Some(id) == self.channel => {
                        self.open = true
                    }
                    DataChannelEvent::Message { data, .. } => self.inbox.push((now, data)),
                    DataChannelEvent::AssociationLost => bail!("SCTP association lost"),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Writes a check if one is due, then whatever DTLS and SCTP have queued.
    async fn flush(&mut self, now: Instant) -> Result<()> {
        if now >= self.next_check {
            let check = self.binding_request()?;
            self.sock.send_to(&check, self.server).await?;
            self.stats.checks_sent += 1;
            self.next_check = now
                + if self.nominated {
                    CONSENT_INTERVAL
                } else {
                    CHECK_RETRY
                };
        }
        let Some(dtls) = self.dtls.as_mut() else {
            return Ok(());
        };
        if let Some(dc) = self.dc.as_mut() {
            while let Some(p) = dc.poll_dtls_transmit() {
                dtls.send_application_data(&p)
                    .map_err(|e| anyhow!("DTLS send: {e:?}"))?;
            }
        }
        while let Some(d) = dtls.poll_transmit() {
            self.sock.send_to(&d, self.server).await?;
        }
        Ok(())
    }

    /// A Binding request as the controlling agent, nominating (USE-CANDIDATE), signed with
    /// the server's password.
    fn binding_request(&self) -> Result<Vec<u8>> {
        let mut tid = [0u8; 12];
        getrandom::fill(&mut tid).map_err(|e| anyhow!("getrandom: {e}"))?;
        let mut buf = vec![0u8; 512];
        let stun = |e| anyhow!("STUN: {e:?}");
        let mut w =
            StunWriter::new(&mut buf, Class::Request, Method::BINDING, &tid).map_err(stun)?;
        w.attr(attr::USERNAME, &self.username).map_err(stun)?;
        w.attr(attr::PRIORITY, &1_845_501_695u32.to_be_bytes())
            .map_err(stun)?;
        w.attr(
            attr::ICE_CONTROLLING,
            &u64::from_be_bytes([7; 8]).to_be_bytes(),
        )
        .map_err(stun)?;
        w.attr(attr::USE_CANDIDATE, &[]).map_err(stun)?;
        let key = self.server_pwd.clone();
        let n = w
            .finish_with_integrity(&move |d: &[u8]| hmac_sha1(&key, d))
            .map_err(stun)?;
        buf.truncate(n);
        Ok(buf)
    }
}
