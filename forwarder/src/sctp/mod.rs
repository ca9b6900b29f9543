//! WebRTC data channels (RFC 8831) over SCTP over DTLS (RFC 8261), sans-IO.
//!
//! SCTP itself is `sctp-proto`, the sans-IO association that webrtc-rs wrote and that str0m
//! now maintains and uses; Prism adds only what WebRTC puts on top: one association per
//! transport on port 5000, DCEP (RFC 8832, [`dcep`]) to open channels in-band, stream ids
//! chosen by DTLS role (client even, server odd), and the PPIDs that mark string, binary and
//! empty messages. [`DataChannels`] takes decrypted DTLS application data in, and gives SCTP
//! packets out for `DtlsEndpoint::send_application_data`; it owns no socket and no clock.
//!
//! Invariants: every channel id appears in at most one `Open` and one `Closed` event, and
//! `Open` precedes any `Message` on it; no input from the peer panics; message size is
//! bounded by [`MAX_MESSAGE_SIZE`] both ways.

mod channels;
pub mod dcep;

pub use channels::{DataChannels, SctpStats, MAX_MESSAGE_SIZE, SCTP_MAX_PACKET};

/// How a channel retransmits (RFC 8831 §6.1, the `maxRetransmits` / `maxPacketLifeTime`
/// options of `RTCDataChannelInit`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Reliability {
    /// Retransmit until delivered.
    #[default]
    Reliable,
    /// Give up on a message after this many retransmissions (0: send once).
    MaxRetransmits(u32),
    /// Give up on a message this many milliseconds after first sending it.
    MaxPacketLifetime(u32),
}

/// What [`DataChannels`] reports to the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataChannelEvent {
    /// The SCTP association is established; channels can carry data.
    Connected,
    /// A channel is open: the peer opened it (we acknowledged), or it acknowledged ours.
    Open {
        id: u16,
        label: String,
        protocol: String,
        ordered: bool,
        reliability: Reliability,
    },
    /// A whole message arrived.
    Message {
        id: u16,
        binary: bool,
        data: Vec<u8>,
    },
    /// The channel was closed (its stream reset), by either side.
    Closed { id: u16 },
    /// The association is gone (peer abort, timeout or protocol failure); every open
    /// channel got its `Closed` first.
    AssociationLost,
}

/// Why a data channel call was refused. Unit-like and `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SctpError {
    /// No such channel, or it is closed.
    UnknownChannel,
    /// The channel is still waiting for the association; retry after `Open`.
    NotOpen,
    /// Larger than [`MAX_MESSAGE_SIZE`].
    TooLarge,
    /// Every stream id of our parity is in use.
    NoFreeStreamId,
    /// The association is lost; nothing more goes through it.
    AssociationLost,
    /// sctp-proto refused the operation (for example a full send buffer).
    Rejected,
}

impl std::fmt::Display for SctpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SctpError::UnknownChannel => "unknown or closed channel",
            SctpError::NotOpen => "channel not open yet",
            SctpError::TooLarge => "message too large",
            SctpError::NoFreeStreamId => "no free stream id",
            SctpError::AssociationLost => "association lost",
            SctpError::Rejected => "rejected by SCTP",
        })
    }
}

impl std::error::Error for SctpError {}
