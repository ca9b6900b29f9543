//! The Data Channel Establishment Protocol (RFC 8832): DATA_CHANNEL_OPEN and
//! DATA_CHANNEL_ACK, carried on the channel's own SCTP stream with PPID 50.
//!
//! Parsing borrows nothing past the call and never panics: every length is checked against
//! the message before slicing. Labels and protocols must be UTF-8 (RFC 8832 §5.1); invalid
//! sequences are replaced rather than refusing the channel, since the label is informational.

use super::Reliability;

/// DCEP message types (RFC 8832 §8.2.1).
const MSG_ACK: u8 = 0x02;
const MSG_OPEN: u8 = 0x03;

/// Channel types (RFC 8832 §5.1): low bits say the reliability, 0x80 says unordered.
const CHANNEL_RELIABLE: u8 = 0x00;
const CHANNEL_REXMIT: u8 = 0x01;
const CHANNEL_TIMED: u8 = 0x02;
const UNORDERED_BIT: u8 = 0x80;

/// Fixed part of DATA_CHANNEL_OPEN.
const OPEN_HEADER_LEN: usize = 12;

/// The "normal" priority of RFC 8831 §6.4 (WebRTC's "low" is 128, "high" 512).
pub const PRIORITY_NORMAL: u16 = 256;

/// Why a DCEP message could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DcepError {
    Truncated,
    UnknownMessageType,
    UnknownChannelType,
}

/// A DATA_CHANNEL_OPEN message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DcepOpen {
    pub ordered: bool,
    pub reliability: Reliability,
    pub priority: u16,
    pub label: String,
    pub protocol: String,
}

/// Any DCEP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dcep {
    Open(DcepOpen),
    Ack,
}

impl Dcep {
    pub fn parse(buf: &[u8]) -> Result<Dcep, DcepError> {
        match buf.first() {
            None => Err(DcepError::Truncated),
            Some(&MSG_ACK) => Ok(Dcep::Ack),
            Some(&MSG_OPEN) => DcepOpen::parse(buf).map(Dcep::Open),
            Some(_) => Err(DcepError::UnknownMessageType),
        }
    }

    pub fn emit(&self) -> Vec<u8> {
        match self {
            Dcep::Ack => vec![MSG_ACK],
            Dcep::Open(o) => o.emit(),
        }
    }
}

impl DcepOpen {
    fn parse(buf: &[u8]) -> Result<DcepOpen, DcepError> {
        let Some(h) = buf.get(..OPEN_HEADER_LEN) else {
            return Err(DcepError::Truncated);
        };
        let channel_type = h[1];
        let priority = u16::from_be_bytes([h[2], h[3]]);
        let param = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let label_len = usize::from(u16::from_be_bytes([h[8], h[9]]));
        let protocol_len = usize::from(u16::from_be_bytes([h[10], h[11]]));
        let reliability = match channel_type & !UNORDERED_BIT {
            CHANNEL_RELIABLE => Reliability::Reliable,
            CHANNEL_REXMIT => Reliability::MaxRetransmits(param),
            CHANNEL_TIMED => Reliability::MaxPacketLifetime(param),
            _ => return Err(DcepError::UnknownChannelType),
        };
        let label_end = OPEN_HEADER_LEN + label_len;
        let label = buf
            .get(OPEN_HEADER_LEN..label_end)
            .ok_or(DcepError::Truncated)?;
        let protocol = buf
            .get(label_end..label_end + protocol_len)
            .ok_or(DcepError::Truncated)?;
        Ok(DcepOpen {
            ordered: channel_type & UNORDERED_BIT == 0,
            reliability,
            priority,
            label: String::from_utf8_lossy(label).into_owned(),
            protocol: String::from_utf8_lossy(protocol).into_owned(),
        })
    }

    /// Serialises the message. Labels and protocols longer than 65535 bytes are cut at a
    /// character boundary (the length fields are 16 bits).
    fn emit(&self) -> Vec<u8> {
        let label = clip(&self.label);
        let protocol = clip(&self.protocol);
        let (kind, param) = match self.reliability {
            Reliability::Reliable => (CHANNEL_RELIABLE, 0),
            Reliability::MaxRetransmits(n) => (CHANNEL_REXMIT, n),
            Reliability::MaxPacketLifetime(ms) => (CHANNEL_TIMED, ms),
        };
        let channel_type = if self.ordered {
            kind
        } else {
            kind | UNORDERED_BIT
        };
        let mut v = Vec::with_capacity(OPEN_HEADER_LEN + label.len() + protocol.len());
        v.push(MSG_OPEN);
        v.push(channel_type);
        v.extend_from_slice(&self.priority.to_be_bytes());
        v.extend_from_slice(&param.to_be_bytes());
        v.extend_from_slice(&len16(label).to_be_bytes());
        v.extend_from_slice(&len16(protocol).to_be_bytes());
        v.extend_from_slice(label.as_bytes());
        v.extend_from_slice(protocol.as_bytes());
        v
    }
}

fn clip(s: &str) -> &str {
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn len16(s: &str) -> u16 {
    u16::try_from(s.len()).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_round_trips() {
        for (ordered, reliability) in [
            (true, Reliability::Reliable),
            (false, Reliability::Reliable),
            (false, Reliability::MaxRetransmits(0)),
            (true, Reliability::MaxRetransmits(5)),
            (false, Reliability::MaxPacketLifetime(3000)),
        ] {
            let o = Dcep::Open(DcepOpen {
                ordered,
                reliability,
                priority: PRIORITY_NORMAL,
                label: "_lossy".into(),
                protocol: "proto/1".into(),
            });
            assert_eq!(Dcep::parse(&o.emit()), Ok(o));
        }
        assert_eq!(Dcep::parse(&Dcep::Ack.emit()), Ok(Dcep::Ack));
    }

    #[test]
    fn parses_known_bytes() {
        // Unordered, max retransmits 0, priority 256, label "_lossy", no protocol.
        let mut b = vec![0x03, 0x81, 0x01, 0x00, 0, 0, 0, 0, 0, 6, 0, 0];
        b.extend_from_slice(b"_lossy");
        let Ok(Dcep::Open(o)) = Dcep::parse(&b) else {
            panic!("parse")
        };
        assert!(!o.ordered);
        assert_eq!(o.reliability, Reliability::MaxRetransmits(0));
        assert_eq!(o.priority, 256);
        assert_eq!(o.label, "_lossy");
        assert_eq!(o.protocol, "");
        assert_eq!(Dcep::Open(o).emit(), b);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(Dcep::parse(&[]), Err(DcepError::Truncated));
        assert_eq!(Dcep::parse(&[0x04]), Err(DcepError::UnknownMessageType));
        assert_eq!(Dcep::parse(&[0x03, 0, 1]), Err(DcepError::Truncated));
        let b = [0x03, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(Dcep::parse(&b), Err(DcepError::UnknownChannelType));
        let b = [0x03, 0x00, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, b'a'];
        assert_eq!(Dcep::parse(&b), Err(DcepError::Truncated));
        let b = [0x03, 0x00, 0, 0, 0, 0, 0, 0, 0, 1, 0xFF, 0xFF, b'a'];
        assert_eq!(Dcep::parse(&b), Err(DcepError::Truncated));
        // Every prefix of a valid message parses or errors, never panics.
        let full = Dcep::Open(DcepOpen {
            ordered: true,
            reliability: Reliability::Reliable,
            priority: 1,
            label: "é".repeat(10),
            protocol: "x".into(),
        })
        .emit();
        for n in 0..full.len() {
            let _ = Dcep::parse(&full[..n]);
        }
    }

    #[test]
    fn clips_long_labels_on_char_boundary() {
        let o = DcepOpen {
            ordered: true,
            reliability: Reliability::Reliable,
            priority: 1,
            label: "é".repeat(40_000),
            protocol: String::new(),
        };
        let Ok(Dcep::Open(back)) = Dcep::parse(&o.emit()) else {
            panic!("parse")
        };
        assert_eq!(back.label.len(), 65534);
    }
}
