//! An embedded TURN server (RFC 8656, over the STUN of RFC 8489), for clients that can only
//! reach Prism through a relay: UDP blocked, or only TLS on 443 allowed.
//!
//! Why embedded rather than a coturn beside Prism: the credentials are derived from the
//! same secret signaling uses (`creds`), so a join token is still the only secret a client
//! holds, and the server only ever relays to this node's own media sockets. That last
//! rule makes it useless as an open relay (403 for any other peer) and is all an SFU needs:
//! the only peer a Prism client talks to is Prism.
//!
//! `server` is sans-IO: it takes bytes from clients and from peers with the time, and
//! writes what to send through the [`server::TurnIo`] trait; `front` owns the sockets (UDP
//! on `turn.udp_port`, TLS on `turn.tls_port`) on one thread. This module holds the
//! protocol constants and the stream framing both need.

pub mod creds;
pub mod front;
pub mod server;

#[cfg(test)]
mod tests;

use crate::wire::stun::Method;

/// TURN methods (RFC 8656 §18).
pub mod method {
    use super::Method;
    pub const BINDING: Method = Method(0x001);
    pub const ALLOCATE: Method = Method(0x003);
    pub const REFRESH: Method = Method(0x004);
    pub const SEND: Method = Method(0x006);
    pub const DATA: Method = Method(0x007);
    pub const CREATE_PERMISSION: Method = Method(0x008);
    pub const CHANNEL_BIND: Method = Method(0x009);
}

/// TURN and STUN attribute types (RFC 8656 §18, RFC 8489 §18.3).
pub mod attr {
    pub use crate::wire::stun::attr::*;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const EVEN_PORT: u16 = 0x0018;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const DONT_FRAGMENT: u16 = 0x001A;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    pub const USERHASH: u16 = 0x001E;
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
    pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
    pub const ALTERNATE_DOMAIN: u16 = 0x8003;
    pub const ICMP: u16 = 0x8004;
}

/// Error codes the server answers with.
pub mod code {
    pub const BAD_REQUEST: u16 = 400;
    pub const UNAUTHORIZED: u16 = 401;
    pub const FORBIDDEN: u16 = 403;
    pub const UNKNOWN_ATTRIBUTE: u16 = 420;
    pub const ALLOCATION_MISMATCH: u16 = 437;
    pub const STALE_NONCE: u16 = 438;
    pub const ADDRESS_FAMILY_NOT_SUPPORTED: u16 = 440;
    pub const WRONG_CREDENTIALS: u16 = 441;
    pub const UNSUPPORTED_TRANSPORT: u16 = 442;
    pub const ALLOCATION_QUOTA_REACHED: u16 = 486;
    pub const INSUFFICIENT_CAPACITY: u16 = 508;
}

/// First and last channel numbers a client may bind (RFC 8656 §12).
pub const CHANNEL_MIN: u16 = 0x4000;
pub const CHANNEL_MAX: u16 = 0x4FFF;

/// What a stream (TCP/TLS) carries next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete frame of this many bytes is at the start of the buffer (for ChannelData,
    /// padding to 4 bytes included, RFC 8656 §12.5).
    Complete(usize),
    /// More bytes are needed.
    Partial,
    /// The stream carries neither STUN nor ChannelData: close it.
    Invalid,
}

/// Splits a TCP/TLS byte stream into STUN messages and ChannelData frames.
pub fn next_frame(buf: &[u8]) -> Frame {
    let (Some(&b0), Some(&b2), Some(&b3)) = (buf.first(), buf.get(2), buf.get(3)) else {
        return if buf
            .first()
            .is_some_and(|&b| b & 0xC0 == 0x80 || b & 0xC0 == 0xC0)
        {
            Frame::Invalid
        } else {
            Frame::Partial
        };
    };
    let len = usize::from(u16::from_be_bytes([b2, b3]));
    let total = match b0 >> 6 {
        0 => {
            let cookie = buf.get(4..8).map(|c| [c[0], c[1], c[2], c[3]]);
            if len % 4 != 0
                || cookie.is_some_and(|c| u32::from_be_bytes(c) != crate::wire::stun::MAGIC_COOKIE)
            {
                return Frame::Invalid;
            }
            crate::wire::stun::HEADER_LEN + len
        }
        1 => 4 + len.div_ceil(4) * 4,
        _ => return Frame::Invalid,
    };
    if buf.len() >= total {
        Frame::Complete(total)
    } else {
        Frame::Partial
    }
}
