//! Session descriptions for WebRTC (JSEP, RFC 8829/9429): parse what clients offer, answer
//! as an ICE-lite SFU, and make server-side offers to subscribers.
//!
//! Layers:
//! - the wire format is read and written by Mozilla's `webrtc-sdp` crate (see below);
//! - [`model`] turns its typed attributes into Prism's own view of a description
//!   ([`SessionOffer`], [`MediaSection`]), resolving session-level defaults (ICE
//!   credentials, fingerprint, setup, extmaps) into each section;
//! - [`codecs`] is the table of what Prism forwards (codecs, RTX, RTCP feedback, header
//!   extensions) and the matching rules;
//! - [`answer`] builds the answer to a client's offer, [`offer`] a server-initiated offer.
//!
//! Invariants: parsing never panics on any input (a proptest feeds random lines); an answer
//! keeps the offer's m-line order and mids, accepts only what [`codecs`] supports, and
//! rejects (port 0) what it cannot accept instead of dropping the m-line.
//!
//! ## Why `webrtc-sdp`
//!
//! Three crates were weighed:
//! - `webrtc-sdp` (Mozilla; Firefox parses every remote description with it): a typed
//!   enum per attribute, covering everything Prism reads or writes — `group:BUNDLE`,
//!   `rtcp-mux`, `ice-lite`, `ice-ufrag`/`ice-pwd`, `fingerprint` (bytes + hash), `setup`,
//!   `mid`, `msid`, `ssrc`/`ssrc-group` (FID, SIM), `rid` and `simulcast` (RFC 8851/8853),
//!   `extmap` (with direction), `rtpmap`/`fmtp` (typed H.264/VP9/AV1/Opus/RTX params) /
//!   `rtcp-fb`, `sctp-port`, `max-message-size`, `candidate`. Unknown attributes become
//!   warnings, not errors, so Chrome's newest extensions do not break parsing, and
//!   `Display` writes the description back. It is fuzzed upstream.
//! - `sdp` (webrtc-rs): attributes are untyped `key`/`value` strings, so ssrc, rid,
//!   simulcast, fmtp and fingerprint would all be parsed by hand on top — the work the
//!   crate is meant to save.
//! - `sdp-types`: also untyped attributes, and no WebRTC-specific knowledge.
//!
//! `webrtc-sdp` quirks handled here: it normalises `fmtp` text (parameter order and
//! unknown parameters joined by `,`), so [`CodecParams::fmtp_param`] accepts either
//! separator; it needs `c=` lines, which every browser sends.

pub mod answer;
pub mod codecs;
mod emit;
pub mod model;
pub mod offer;
pub mod params;

pub use answer::{AnswerBuilder, AnswerTrack, SectionChoice};
pub use codecs::Codec;
pub use model::{
    CodecParams, Direction, Fingerprint, MediaKind, MediaSection, RidDirection, SessionOffer,
    SetupRole, Simulcast, SsrcGroup, SsrcInfo,
};
pub use offer::{OfferBuilder, OfferSection, SendTrack};
pub use params::ServerParams;

use std::fmt;

/// Why a description could not be parsed or answered.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SdpError {
    /// The text is not valid SDP; `line` is 0-based when known.
    Syntax {
        line: Option<usize>,
        message: String,
    },
    /// An m-section that is not rejected has no `a=mid` (JSEP requires one).
    MissingMid { index: usize },
    /// Two m-sections share a mid.
    DuplicateMid(String),
    /// No `a=ice-ufrag`/`a=ice-pwd` at session or media level.
    MissingIceCredentials { mid: String },
    /// No `a=fingerprint` at session or media level.
    MissingFingerprint { mid: String },
    /// The server parameters cannot produce a valid description (e.g. no candidate).
    BadServerParams(&'static str),
    /// A track attached to the answer does not fit its section (unknown mid, wrong kind).
    BadTrack { mid: String, why: &'static str },
}

impl fmt::Display for SdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SdpError::Syntax {
                line: Some(l),
                message,
            } => write!(f, "invalid SDP at line {}: {message}", l + 1),
            SdpError::Syntax {
                line: None,
                message,
            } => write!(f, "invalid SDP: {message}"),
            SdpError::MissingMid { index } => write!(f, "m-section {index} has no a=mid"),
            SdpError::DuplicateMid(m) => write!(f, "mid {m:?} is used twice"),
            SdpError::MissingIceCredentials { mid } => {
                write!(f, "m-section {mid:?} has no ice-ufrag/ice-pwd")
            }
            SdpError::MissingFingerprint { mid } => {
                write!(f, "m-section {mid:?} has no DTLS fingerprint")
            }
            SdpError::BadServerParams(why) => write!(f, "bad server parameters: {why}"),
            SdpError::BadTrack { mid, why } => {
                write!(f, "cannot send on m-section {mid:?}: {why}")
            }
        }
    }
}

impl std::error::Error for SdpError {}
