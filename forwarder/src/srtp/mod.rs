//! SRTP and SRTCP (RFC 3711, RFC 7714) for the forwarding path, keyed by DTLS-SRTP
//! (RFC 5764).
//!
//! One [`SrtpContext`] protects or unprotects one direction of one transport. Its
//! per-SSRC state (rollover counter, replay window, SRTCP index) lives in a fixed table
//! created with the context, and its cipher contexts are keyed once, so `protect_*` and
//! `unprotect_*` work in place on caller buffers and never allocate.
//!
//! Invariants:
//! - Replay and rollover state changes only after a packet has authenticated, so forged
//!   packets can neither advance the window nor take a table slot.
//! - Errors are the unit-like, `Copy` [`SrtpError`]; nothing panics on network input.
//! - Key derivation (RFC 3711 §4.3) runs once at context creation with a key derivation
//!   rate of 0, the only rate DTLS-SRTP uses.
//!
//! Packet layouts (overhead added by protect):
//! - SRTP AES-CM: `header | encrypted payload | tag (10 or 4)`.
//! - SRTP GCM: `header | encrypted payload | tag (16)`.
//! - SRTCP AES-CM: `header (8) | encrypted rest | E+index (4) | tag (10)`.
//! - SRTCP GCM: `header (8) | encrypted rest | tag (16) | E+index (4)`.

mod context;
mod crypto;
mod kdf;
mod replay;
mod table;

#[cfg(test)]
mod tests;

pub use context::{SrtpContext, MAX_SSRCS};
pub use kdf::SrtpKeys;

/// The two SRTP contexts of one transport: set by control (plain transports) or by the
/// DTLS handshake (WebRTC). Boxed by its owners: each context is about 10 KB and lives as
/// long as the transport.
#[derive(Debug)]
pub struct SrtpPair {
    /// Decrypts what the peer sends.
    pub inbound: SrtpContext,
    /// Encrypts what we send.
    pub outbound: SrtpContext,
}

/// The largest number of bytes `protect_rtp` or `protect_rtcp` adds to a packet, over all
/// profiles: the room a caller's buffer needs past the plain packet.
pub const MAX_OVERHEAD: usize = 20;

/// Why a packet could not be protected or unprotected. Unit-like and `Copy` so the error
/// path never allocates; the engine turns it into a counted drop reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SrtpError {
    /// Shorter than its header plus the SRTP trailer, or not an RTP/RTCP version 2 header.
    Truncated,
    /// The output buffer has no room for the packet plus its tag.
    BufferTooSmall,
    /// The authentication tag does not match.
    AuthFailed,
    /// This index was already received.
    Replayed,
    /// The index is older than the replay window reaches.
    TooOld,
    /// A DTLS-SRTP protection profile id this module does not implement.
    UnknownProfile,
    /// Key or salt material of the wrong length for the profile.
    BadKeyLength,
    /// The per-SSRC table is full; the packet's SSRC is not in it.
    TableFull,
    /// The SRTCP index space (2^31 packets) is used up; the transport needs new keys.
    IndexExhausted,
    /// The crypto library reported an internal failure.
    Crypto,
}

impl std::fmt::Display for SrtpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            SrtpError::Truncated => "truncated",
            SrtpError::BufferTooSmall => "buffer too small",
            SrtpError::AuthFailed => "authentication failed",
            SrtpError::Replayed => "replayed",
            SrtpError::TooOld => "too old for the replay window",
            SrtpError::UnknownProfile => "unknown protection profile",
            SrtpError::BadKeyLength => "bad key length",
            SrtpError::TableFull => "ssrc table full",
            SrtpError::IndexExhausted => "srtcp index exhausted",
            SrtpError::Crypto => "crypto library failure",
        };
        f.write_str(s)
    }
}

impl std::error::Error for SrtpError {}

/// The SRTP protection profiles Prism negotiates in DTLS-SRTP (RFC 5764 §4.1.2,
/// RFC 7714 §14.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SrtpProfile {
    /// `SRTP_AES128_CM_HMAC_SHA1_80` (0x0001).
    AesCm128HmacSha1_80,
    /// `SRTP_AES128_CM_HMAC_SHA1_32` (0x0002): 32-bit tag on SRTP, 80-bit on SRTCP.
    AesCm128HmacSha1_32,
    /// `SRTP_AEAD_AES_128_GCM` (0x0007).
    AeadAes128Gcm,
}

impl SrtpProfile {
    /// In order of preference, for the DTLS `use_srtp` extension.
    pub const ALL: [SrtpProfile; 3] = [
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AesCm128HmacSha1_80,
        SrtpProfile::AesCm128HmacSha1_32,
    ];

    /// Master (and session) encryption key length in bytes.
    pub const fn key_len(self) -> usize {
        16
    }

    /// Master (and session) salt length in bytes.
    pub const fn salt_len(self) -> usize {
        match self {
            SrtpProfile::AeadAes128Gcm => 12,
            _ => 14,
        }
    }

    /// Bytes `protect_rtp` appends.
    pub const fn rtp_tag_len(self) -> usize {
        match self {
            SrtpProfile::AesCm128HmacSha1_80 => 10,
            SrtpProfile::AesCm128HmacSha1_32 => 4,
            SrtpProfile::AeadAes128Gcm => 16,
        }
    }

    /// SRTCP authentication tag length in bytes (without the 4-byte E+index word).
    pub const fn rtcp_tag_len(self) -> usize {
        match self {
            SrtpProfile::AeadAes128Gcm => 16,
            _ => 10,
        }
    }

    /// Bytes `protect_rtcp` appends: tag plus the E+index word.
    pub const fn rtcp_overhead(self) -> usize {
        self.rtcp_tag_len() + 4
    }

    /// Whether the profile is an AEAD one (RFC 7714).
    pub const fn is_aead(self) -> bool {
        matches!(self, SrtpProfile::AeadAes128Gcm)
    }

    /// The DTLS-SRTP protection profile id.
    pub const fn dtls_id(self) -> u16 {
        match self {
            SrtpProfile::AesCm128HmacSha1_80 => 0x0001,
            SrtpProfile::AesCm128HmacSha1_32 => 0x0002,
            SrtpProfile::AeadAes128Gcm => 0x0007,
        }
    }

    pub fn from_dtls_id(id: u16) -> Result<Self, SrtpError> {
        match id {
            0x0001 => Ok(SrtpProfile::AesCm128HmacSha1_80),
            0x0002 => Ok(SrtpProfile::AesCm128HmacSha1_32),
            0x0007 => Ok(SrtpProfile::AeadAes128Gcm),
            _ => Err(SrtpError::UnknownProfile),
        }
    }

    /// The profile name OpenSSL's `SSL_CTX_set_tlsext_use_srtp` understands.
    pub const fn openssl_name(self) -> &'static str {
        match self {
            SrtpProfile::AesCm128HmacSha1_80 => "SRTP_AES128_CM_SHA1_80",
            SrtpProfile::AesCm128HmacSha1_32 => "SRTP_AES128_CM_SHA1_32",
            SrtpProfile::AeadAes128Gcm => "SRTP_AEAD_AES_128_GCM",
        }
    }

    /// Length of the DTLS exporter output RFC 5764 §4.2 splits into two key/salt pairs.
    pub const fn keying_material_len(self) -> usize {
        2 * (self.key_len() + self.salt_len())
    }
}
