//! One DTLS association: OpenSSL's state machine over a [`DatagramPipe`], driven in the
//! caller's time.
//!
//! Flights and retransmission. OpenSSL writes each handshake flight as one or more datagrams
//! of at most [`MTU`] bytes. Whatever it writes while handling one input is remembered as our
//! latest flight. While the handshake runs, a timer (1 s, doubling to 60 s, RFC 6347 §4.2.4)
//! resends that flight verbatim. A verbatim resend carries the same record sequence numbers,
//! so a peer that already has those records drops them as replays and keeps the ones it
//! missed; the peer's own timer covers the case where our flight arrived but its answer was
//! lost. The one flight no timer covers is the last one (the server's ChangeCipherSpec and
//! Finished): the side that sent it has nothing left to wait for. So, as RFC 6347 asks, that
//! side resends its last flight when the peer retransmits handshake records after we are
//! connected, at most once per [`FINAL_FLIGHT_RESEND_GAP`].
//!
//! Invariants: the endpoint moves Handshaking → Connected → Closed, or to Failed from either
//! of the first two, and never back; after Failed or Closed every input is refused with
//! [`DtlsError::Closed`]. Exactly one `Connected` or `Failed` event is emitted per endpoint.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslStream, SslVerifyMode,
    SslVersion,
};

use super::cert::{DtlsCert, Fingerprint};
use super::pipe::DatagramPipe;
use super::record;
use super::srtp::{self, SrtpKeyMaterial};
use super::{DtlsError, DtlsEvent, DtlsFailure, DtlsRole};

/// Largest datagram the endpoint writes. 1200 bytes leaves room for IPv6 + UDP + TURN
/// framing under a 1280-byte path MTU, as WebRTC stacks conventionally assume.
pub const MTU: u32 = 1200;

/// Largest plaintext one DTLS record carries.
const MAX_APP_DATA: usize = 16384;

const INITIAL_RTO: Duration = Duration::from_secs(1);
const MAX_RTO: Duration = Duration::from_secs(60);
/// Resends of one flight before the handshake is declared dead (about two minutes in all).
const MAX_RETRANSMITS: u32 = 7;
/// Least spacing between resends of our final flight, so that one retransmitted flight of
/// several datagrams from the peer triggers one resend, not one per datagram.
pub const FINAL_FLIGHT_RESEND_GAP: Duration = Duration::from_millis(500);

/// Cipher suites: ECDHE with AES-GCM only. Every WebRTC stack (Chromium, Firefox, Safari,
/// libwebrtc, pion, aiortc) offers ECDHE-ECDSA-AES128-GCM-SHA256; RSA variants stay so that
/// Prism as a DTLS client can talk to a peer with an RSA certificate. GCM only is what makes
/// the record check's minimum protected length ([`record::MIN_PROTECTED_LEN`]) exact.
const CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384";

// Outcome 0: the callback has not run yet.
const VERIFY_OK: u8 = 1;
const VERIFY_MISMATCH: u8 = 2;
const VERIFY_NO_FINGERPRINT: u8 = 3;

/// Shared between the endpoint and OpenSSL's verify callback (which must be `'static`).
#[derive(Debug, Default)]
struct VerifyState {
    expected: OnceLock<Fingerprint>,
    outcome: AtomicU8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Handshaking,
    Connected,
    Closed,
    Failed,
}

/// Counters for the engine's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DtlsStats {
    pub datagrams_in: u64,
    /// Refused by the record framing check.
    pub dropped_bad_record: u64,
    /// Refused because the endpoint had failed or closed, or its queue was full.
    pub dropped_state: u64,
    /// Flight resends driven by our timer or by the peer's retransmission.
    pub retransmits: u64,
    pub app_data_in: u64,
    pub app_data_out: u64,
}

/// A DTLS 1.2 endpoint (client or server) for one WebRTC transport.
pub struct DtlsEndpoint {
    role: DtlsRole,
    stream: SslStream<DatagramPipe>,
    state: State,
    verify: Arc<VerifyState>,
    remote_fingerprint: Option<Fingerprint>,
    events: VecDeque<DtlsEvent>,
    /// Our latest handshake flight, resent verbatim by the timer.
    last_flight: Vec<Vec<u8>>,
    /// Whether `last_flight` is the handshake's final flight (sent by us as we completed).
    sent_final_flight: bool,
    /// Whether a new flight was written but the timer has not been armed for it yet (no
    /// `now` was at hand, as in `new`).
    flight_unarmed: bool,
    retransmit_at: Option<Instant>,
    rto: Duration,
    retransmits: u32,
    last_final_resend: Option<Instant>,
    stats: DtlsStats,
}

impl std::fmt::Debug for DtlsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsEndpoint")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("retransmit_at", &self.retransmit_at)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn context(cert: &DtlsCert) -> Result<SslContext, openssl::error::ErrorStack> {
    let mut b = SslContextBuilder::new(SslMethod::dtls())?;
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_max_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_certificate(&cert.x509)?;
    b.set_private_key(&cert.key)?;
    b.check_private_key()?;
    b.set_cipher_list(CIPHERS)?;
    b.set_tlsext_use_srtp(srtp::OFFERED_PROFILES)?;
    // No tickets: they would add a message to the final flight and resumption is unused.
    // The MTU is ours to set, not the (in-memory) BIO's to report.
    b.set_options(SslOptions::NO_TICKET | SslOptions::NO_QUERY_MTU);
    Ok(b.build())
}

impl DtlsEndpoint {
    /// Creates an endpoint. A client queues its ClientHello at once (drain `poll_transmit`)
    /// and arms its retransmission timer at the first `handle_timeout` or `handle_datagram`,
    /// so call `handle_timeout(now)` once right after creating a client.
    pub fn new(role: DtlsRole, cert: &DtlsCert) -> Result<Self, DtlsError> {
        let ctx = context(cert).map_err(|_| DtlsError::Crypto)?;
        let mut ssl = Ssl::new(&ctx).map_err(|_| DtlsError::Crypto)?;
        ssl.set_mtu(MTU).map_err(|_| DtlsError::Crypto)?;

        let verify = Arc::new(VerifyState::default());
        let cb_state = Arc::clone(&verify);
        ssl.set_verify_callback(
            SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
            move |_preverified, ctx| {
                // Self-signed certificates never pass chain verification; the fingerprint is
                // the whole of the check, made on the leaf only.
                if ctx.error_depth() != 0 {
                    return true;
                }
                let Some(expected) = cb_state.expected.get() else {
                    cb_state
                        .outcome
                        .store(VERIFY_NO_FINGERPRINT, Ordering::Relaxed);
                    return false;
                };
                let actual = ctx.current_cert().and_then(Fingerprint::of);
                let ok = actual.as_ref() == Some(expected);
                let outcome = if ok { VERIFY_OK } else { VERIFY_MISMATCH };
                cb_state.outcome.store(outcome, Ordering::Relaxed);
                ok
            },
        );
        match role {
            DtlsRole::Client => ssl.set_connect_state(),
            DtlsRole::Server => ssl.set_accept_state(),
        }
        let stream = SslStream::new(ssl, DatagramPipe::default()).map_err(|_| DtlsError::Crypto)?;

        let mut ep = DtlsEndpoint {
            role,
            stream,
            state: State::Handshaking,
            verify,
            remote_fingerprint: None,
            events: VecDeque::new(),
            last_flight: Vec::new(),
            sent_final_flight: false,
            flight_unarmed: false,
            retransmit_at: None,
            rto: INITIAL_RTO,
            retransmits: 0,
            last_final_resend: None,
            stats: DtlsStats::default(),
        };
        if role == DtlsRole::Client {
            ep.step_handshake();
            let _ = ep.capture_flight(None);
        }
        Ok(ep)
    }

    /// This endpoint's role.
    pub fn role(&self) -> DtlsRole {
        self.role
    }

    /// Sets the fingerprint from the peer's SDP. Must happen before the peer's Certificate
    /// arrives; the handshake fails if the peer's certificate does not hash to it.
    pub fn set_remote_fingerprint(&mut self, expected: Fingerprint) -> Result<(), DtlsError> {
        match self.verify.expected.set(expected) {
            Ok(()) => Ok(()),
            Err(_) if self.verify.expected.get() == Some(&expected) => Ok(()),
            Err(_) => Err(DtlsError::FingerprintAlreadySet),
        }
    }

    /// Whether the connected peer's certificate hashes to `expected`. False before the
    /// handshake completes.
    pub fn remote_fingerprint_matches(&self, expected: &Fingerprint) -> bool {
        self.remote_fingerprint.as_ref() == Some(expected)
    }

    /// True once `Connected` was emitted and until close or failure.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// True if the endpoint failed or closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed | State::Failed)
    }

    pub fn stats(&self) -> DtlsStats {
        self.stats
    }

    /// Feeds one received datagram (its first byte in 20..=63, RFC 7983).
    pub fn handle_datagram(&mut self, now: Instant, data: &[u8]) -> Result<(), DtlsError> {
        self.stats.datagrams_in += 1;
        if self.is_closed() {
            self.stats.dropped_state += 1;
            return Err(DtlsError::Closed);
        }
        let summary = match record::check_datagram(data) {
            Ok(s) => s,
            Err(e) => {
                self.stats.dropped_bad_record += 1;
                return Err(DtlsError::BadRecord(e));
            }
        };
        if self.state == State::Connected && summary.has_handshake {
            self.maybe_resend_final_flight(now);
        }
        if !self.stream.get_mut().push_incoming(data) {
            self.stats.dropped_state += 1;
            return Err(DtlsError::QueueFull);
        }
        self.drive(now);
        // Anything OpenSSL left unread (it reads until WANT_READ) is stale.
        self.stream.get_mut().clear_incoming();
        if self.state == State::Failed {
            return Err(DtlsError::HandshakeFailed);
        }
        Ok(())
    }

    /// The next datagram to send to the peer.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.stream.get_mut().pop_outgoing()
    }

    /// When `handle_timeout` must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Handshaking => self.retransmit_at,
            _ => None,
        }
    }

    /// Advances timers: arms the retransmission timer for a fresh flight, resends the flight
    /// when it is due, and fails the handshake when the resends are used up.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state != State::Handshaking {
            return;
        }
        self.capture_flight(Some(now));
        let Some(at) = self.retransmit_at else {
            return;
        };
        if now < at {
            return;
        }
        if self.retransmits >= MAX_RETRANSMITS {
            self.fail(DtlsFailure::Timeout);
            return;
        }
        self.retransmits += 1;
        self.rto = (self.rto * 2).min(MAX_RTO);
        self.retransmit_at = Some(now + self.rto);
        self.resend_last_flight();
        // Let OpenSSL run its own (wall-clock) timer too; harmless if nothing is due.
        self.drive(now);
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<DtlsEvent> {
        self.events.pop_front()
    }

    /// Encrypts `data` as one DTLS record (one datagram) for the peer.
    pub fn send_application_data(&mut self, data: &[u8]) -> Result<(), DtlsError> {
        match self.state {
            State::Connected => {}
            State::Handshaking => return Err(DtlsError::NotConnected),
            State::Closed | State::Failed => return Err(DtlsError::Closed),
        }
        if data.len() > MAX_APP_DATA {
            return Err(DtlsError::TooLarge);
        }
        match self.stream.ssl_write(data) {
            Ok(_) => {
                self.stats.app_data_out += 1;
                self.stream.get_mut().clear_recent();
                Ok(())
            }
            Err(e) => {
                self.fail(DtlsFailure::Protocol(e.to_string()));
                Err(DtlsError::Closed)
            }
        }
    }

    /// Sends close_notify and closes the endpoint (emits `Closed`).
    pub fn close(&mut self) {
        if self.is_closed() {
            return;
        }
        // A close_notify that cannot be written changes nothing: we are closing anyway.
        let _ = self.stream.shutdown();
        self.state = State::Closed;
        self.retransmit_at = None;
        self.events.push_back(DtlsEvent::Closed);
    }

    fn drive(&mut self, now: Instant) {
        if self.state == State::Handshaking {
            let done = self.step_handshake();
            let fresh = self.capture_flight(Some(now));
            if done {
                // A flight written in the same step that completed is the final flight.
                self.sent_final_flight = fresh;
                self.on_connected();
            }
        }
        if self.state == State::Connected {
            self.read_application_data();
            self.stream.get_mut().clear_recent();
        }
    }

    /// Runs OpenSSL's handshake as far as the queued input allows. True when it completed.
    fn step_handshake(&mut self) -> bool {
        match self.stream.do_handshake() {
            Ok(()) => true,
            Err(e) if e.code() == ErrorCode::WANT_READ || e.code() == ErrorCode::WANT_WRITE => {
                false
            }
            Err(e) => {
                let failure = match self.verify.outcome.load(Ordering::Relaxed) {
                    VERIFY_MISMATCH => DtlsFailure::FingerprintMismatch,
                    VERIFY_NO_FINGERPRINT => DtlsFailure::NoRemoteFingerprint,
                    _ => DtlsFailure::Protocol(e.to_string()),
                };
                self.fail(failure);
                false
            }
        }
    }

    /// Takes what OpenSSL wrote since the last look; if anything, it is our new flight and
    /// the retransmission timer restarts for it.
    fn capture_flight(&mut self, now: Option<Instant>) -> bool {
        let fresh = self.stream.get_mut().take_recent();
        let is_fresh = !fresh.is_empty();
        if is_fresh {
            self.last_flight = fresh;
            self.rto = INITIAL_RTO;
            self.retransmits = 0;
            self.flight_unarmed = true;
        }
        if let (true, Some(now)) = (self.flight_unarmed, now) {
            self.flight_unarmed = false;
            self.retransmit_at = Some(now + self.rto);
        }
        is_fresh
    }

    fn resend_last_flight(&mut self) {
        self.stats.retransmits += 1;
        for d in &self.last_flight {
            self.stream.get_mut().push_outgoing(d.clone());
        }
    }

    fn maybe_resend_final_flight(&mut self, now: Instant) {
        if !self.sent_final_flight || self.last_flight.is_empty() {
            return;
        }
        if let Some(prev) = self.last_final_resend {
            if now.saturating_duration_since(prev) < FINAL_FLIGHT_RESEND_GAP {
                return;
            }
        }
        self.last_final_resend = Some(now);
        self.resend_last_flight();
    }

    fn on_connected(&mut self) {
        self.retransmit_at = None;
        let ssl = self.stream.ssl();
        let Some(remote) = ssl.peer_certificate().as_deref().and_then(Fingerprint::of) else {
            self.fail(DtlsFailure::NoRemoteFingerprint);
            return;
        };
        if self.verify.expected.get() != Some(&remote) {
            // Unreachable while the verify callback runs, but never trust one check alone.
            self.fail(DtlsFailure::FingerprintMismatch);
            return;
        }
        let srtp = ssl.selected_srtp_profile().and_then(|p| {
            let profile_id = u16::try_from(p.id().as_raw()).ok()?;
            let (k, s) = srtp::key_salt_len(profile_id)?;
            let mut material = vec![0u8; 2 * (k + s)];
            ssl.export_keying_material(&mut material, "EXTRACTOR-dtls_srtp", None)
                .ok()?;
            Some(SrtpKeyMaterial {
                profile_id,
                material,
            })
        });
        self.remote_fingerprint = Some(remote);
        self.state = State::Connected;
        self.events.push_back(DtlsEvent::Connected {
            srtp,
            remote_fingerprint: remote,
        });
    }

    fn read_application_data(&mut self) {
        let mut buf = vec![0u8; MAX_APP_DATA + 1];
        // Bounded: each read consumes a record, but never trust a loop to end by itself.
        for _ in 0..4 * super::pipe::MAX_QUEUED {
            match self.stream.ssl_read(&mut buf) {
                Ok(0) => continue,
                Ok(n) => {
                    self.stats.app_data_in += 1;
                    self.events
                        .push_back(DtlsEvent::ApplicationData(buf[..n].to_vec()));
                }
                Err(e) if e.code() == ErrorCode::WANT_READ => return,
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                    self.state = State::Closed;
                    self.events.push_back(DtlsEvent::Closed);
                    return;
                }
                Err(e) => {
                    self.fail(DtlsFailure::Protocol(e.to_string()));
                    return;
                }
            }
        }
    }

    fn fail(&mut self, failure: DtlsFailure) {
        if self.is_closed() {
            return;
        }
        self.state = State::Failed;
        self.retransmit_at = None;
        self.events.push_back(DtlsEvent::Failed(failure));
    }
}
