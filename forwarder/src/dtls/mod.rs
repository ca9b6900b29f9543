//! DTLS 1.2 for WebRTC transports (RFC 6347, DTLS-SRTP RFC 5764), sans-IO.
//!
//! [`DtlsEndpoint`] runs OpenSSL's DTLS state machine over an in-memory datagram pipe: the
//! engine feeds it received datagrams with `(now, bytes)`, drains `poll_transmit` and
//! `poll_event`, and calls `handle_timeout` at `poll_timeout`. It owns no socket and reads no
//! clock. The handshake is the slow path, so allocating here is fine.
//!
//! Invariants:
//! - Only DTLS 1.2 is negotiated, with an ECDSA P-256 self-signed certificate on our side.
//! - The peer is authenticated only by the SHA-256 fingerprint from SDP
//!   ([`DtlsEndpoint::set_remote_fingerprint`]); a handshake with no expected fingerprint, or
//!   a different one, fails. CA chains are ignored.
//! - Handshake retransmission is driven by our own timer in the caller's time (RFC 6347
//!   §4.2.4: 1 s initial, doubling, capped at 60 s), because OpenSSL's own DTLS timer reads
//!   the wall clock and cannot be driven from virtual time through the safe API.
//! - Nothing received from the network can panic this module; malformed records are refused
//!   before OpenSSL sees them and counted in [`DtlsStats`].

mod cert;
mod endpoint;
mod pipe;
pub mod record;
pub mod srtp;

pub use cert::{DtlsCert, Fingerprint, FingerprintError};
pub use endpoint::{DtlsEndpoint, DtlsStats, MTU};
pub use record::RecordError;
pub use srtp::{SrtpKeyMaterial, SrtpMasterKey};

/// Which side of the DTLS handshake this endpoint plays (SDP `a=setup`: `active` is the
/// client, `passive` the server).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DtlsRole {
    Client,
    Server,
}

/// What a [`DtlsEndpoint`] reports to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DtlsEvent {
    /// The handshake finished and the peer's fingerprint matched. `srtp` is `None` only if
    /// the peer negotiated no SRTP profile (a data-channel-only peer).
    Connected {
        srtp: Option<SrtpKeyMaterial>,
        remote_fingerprint: Fingerprint,
    },
    /// Decrypted application data (one DTLS record: for WebRTC, one SCTP packet).
    ApplicationData(Vec<u8>),
    /// The peer sent close_notify, or we closed.
    Closed,
    /// The handshake or the connection failed for good.
    Failed(DtlsFailure),
}

/// Why a DTLS endpoint gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DtlsFailure {
    /// The peer's certificate does not hash to the SDP fingerprint.
    FingerprintMismatch,
    /// No remote fingerprint was set before the peer's certificate arrived.
    NoRemoteFingerprint,
    /// The handshake did not complete within the retransmission budget.
    Timeout,
    /// OpenSSL reported a protocol error (or the peer sent a fatal alert).
    Protocol(String),
}

impl std::fmt::Display for DtlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DtlsFailure::FingerprintMismatch => f.write_str("certificate fingerprint mismatch"),
            DtlsFailure::NoRemoteFingerprint => f.write_str("no remote fingerprint set"),
            DtlsFailure::Timeout => f.write_str("handshake timed out"),
            DtlsFailure::Protocol(s) => write!(f, "protocol error: {s}"),
        }
    }
}

/// Why a DTLS call did not do what was asked. Unit-like and `Copy`; the detail of a fatal
/// failure travels in [`DtlsEvent::Failed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DtlsError {
    /// OpenSSL could not set up a context, key or certificate.
    Crypto,
    /// The datagram's record framing is invalid; it was dropped and counted.
    BadRecord(RecordError),
    /// The inbound queue is full; the datagram was dropped and counted.
    QueueFull,
    /// Application data cannot be sent before the handshake completes.
    NotConnected,
    /// Application data larger than one DTLS record (16 KiB).
    TooLarge,
    /// The endpoint has failed or closed; nothing more goes through it.
    Closed,
    /// This call made the handshake fail; see the `Failed` event.
    HandshakeFailed,
    /// The remote fingerprint was already set to a different value.
    FingerprintAlreadySet,
}

impl std::fmt::Display for DtlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DtlsError::Crypto => f.write_str("crypto setup failed"),
            DtlsError::BadRecord(e) => write!(f, "bad DTLS record: {e:?}"),
            DtlsError::QueueFull => f.write_str("inbound queue full"),
            DtlsError::NotConnected => f.write_str("not connected"),
            DtlsError::TooLarge => f.write_str("application data too large"),
            DtlsError::Closed => f.write_str("endpoint closed"),
            DtlsError::HandshakeFailed => f.write_str("handshake failed"),
            DtlsError::FingerprintAlreadySet => f.write_str("remote fingerprint already set"),
        }
    }
}

impl std::error::Error for DtlsError {}
