//! RTP header extensions on a transport: the ids negotiated for it, reading the values
//! the forwarder uses from a publisher's packet, and writing a subscriber's own block.
//!
//! Under BUNDLE one transport carries every m-section, and an extension id means the same
//! extension in all of them, so the id map ([`ExtIds`]) belongs to the transport. A
//! publisher's block cannot be forwarded as it is: the subscriber may have negotiated other
//! ids, or none; its `mid` differs; `abs-send-time` must be the time *we* send; and
//! transport-wide sequence numbers count the packets of the subscriber's transport, not of
//! the publisher's. So each subscriber's copy gets a block built from scratch
//! ([`write_block`]) with only what that transport negotiated: its MID, a fresh
//! abs-send-time, its next transport-wide sequence number, and the publisher's audio level.
//! Everything else (RID, repaired RID, unknown extensions) is left out.
//!
//! The block is written straight into the egress slot (or header copy) after the fixed
//! header and CSRCs, before the codec payload: no allocation, no second copy. The one-byte
//! form (RFC 8285 §4.2) is used when every id is 1..=14 and every value 1..=16 bytes, the
//! two-byte form (§4.3) otherwise.

use std::time::Duration;

use crate::wire::rtp::{ONE_BYTE_PROFILE, TWO_BYTE_PROFILE};
use crate::wire::{Error, Result};

/// Largest block [`write_block`] writes: 4-byte header, MID (up to 16 bytes),
/// abs-send-time (3), transport-wide sequence number (2) and audio level (1), each with a
/// two-byte element header, padded to 32-bit words.
pub const MAX_BLOCK: usize = 4 + (2 + 16) + (2 + 3) + (2 + 2) + (2 + 1) + 3;

/// The negotiated ids of one transport; 0 means not negotiated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtIds {
    pub mid: u8,
    pub rid: u8,
    pub repaired_rid: u8,
    pub abs_send_time: u8,
    pub transport_cc: u8,
    pub audio_level: u8,
}

impl ExtIds {
    /// Whether every extension set here has the same id in `of` (a section's extensions
    /// within its transport's, under BUNDLE).
    pub fn within(&self, of: &ExtIds) -> bool {
        let pairs = [
            (self.mid, of.mid),
            (self.rid, of.rid),
            (self.repaired_rid, of.repaired_rid),
            (self.abs_send_time, of.abs_send_time),
            (self.transport_cc, of.transport_cc),
            (self.audio_level, of.audio_level),
        ];
        pairs.iter().all(|&(a, b)| a == 0 || a == b)
    }
}

/// What one subscriber's copy of a packet carries. `None` leaves the element out.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExtValues<'a> {
    pub mid: Option<&'a [u8]>,
    /// 24-bit 6.18 fixed-point seconds.
    pub abs_send_time: Option<u32>,
    pub transport_seq: Option<u16>,
    /// The RFC 6464 byte as the publisher sent it (voice activity bit and -dBov level).
    pub audio_level: Option<u8>,
}

/// abs-send-time of an instant `since` after an arbitrary epoch: seconds in 6.18 fixed
/// point, wrapping every 64 s (only differences matter to the receiver).
pub fn abs_send_time(since: Duration) -> u32 {
    let us = since.as_micros() as u64;
    (((us << 18) / 1_000_000) & 0x00ff_ffff) as u32
}

/// The values the forwarder reads from a publisher's packet, found with the publisher
/// transport's ids in one pass over its block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ingress {
    pub transport_seq: Option<u16>,
    pub audio_level: Option<u8>,
}

impl Ingress {
    /// Reads the transport-wide sequence number and audio level. A value of the wrong
    /// length is ignored (the packet is still forwarded: an extension is advisory).
    pub fn read<'a>(ids: &ExtIds, elements: impl Iterator<Item = (u8, &'a [u8])>) -> Self {
        let mut out = Ingress::default();
        if ids.transport_cc == 0 && ids.audio_level == 0 {
            return out;
        }
        for (id, data) in elements {
            if id == ids.transport_cc {
                if let &[a, b] = data {
                    out.transport_seq = Some(u16::from_be_bytes([a, b]));
                }
            } else if id == ids.audio_level {
                if let &[v] = data {
                    out.audio_level = Some(v);
                }
            }
        }
        out
    }
}

/// The elements to write, in order, as (id, value bytes, length).
fn elements<'a>(
    ids: &ExtIds,
    v: &'a ExtValues<'_>,
    scratch: &'a mut [u8; 6],
) -> [(u8, &'a [u8]); 4] {
    let (ast, rest) = scratch.split_at_mut(3);
    let (seq, level) = rest.split_at_mut(2);
    let mut out: [(u8, &[u8]); 4] = [(0, &[]); 4];
    if let (id @ 1.., Some(m)) = (ids.mid, v.mid) {
        out[0] = (id, m);
    }
    if let (id @ 1.., Some(t)) = (ids.abs_send_time, v.abs_send_time) {
        ast.copy_from_slice(&t.to_be_bytes()[1..]);
        out[1] = (id, ast);
    }
    if let (id @ 1.., Some(s)) = (ids.transport_cc, v.transport_seq) {
        seq.copy_from_slice(&s.to_be_bytes());
        out[2] = (id, seq);
    }
    if let (id @ 1.., Some(l)) = (ids.audio_level, v.audio_level) {
        level[0] = l;
        out[3] = (id, level);
    }
    out
}

/// Writes the extension block for `v` under `ids` at the start of `out` and returns its
/// length (0 when nothing applies: the packet then goes without the X bit).
pub fn write_block(out: &mut [u8], ids: &ExtIds, v: &ExtValues<'_>) -> Result<usize> {
    let mut scratch = [0u8; 6];
    let els = elements(ids, v, &mut scratch);
    let present = || els.iter().filter(|(id, _)| *id != 0);
    if present().next().is_none() {
        return Ok(0);
    }
    let one_byte = present().all(|(id, d)| *id <= 14 && (1..=16).contains(&d.len()));
    let head = if one_byte { 1 } else { 2 };
    let body: usize = present().map(|(_, d)| head + d.len()).sum();
    let len = 4 + body.next_multiple_of(4);
    let b = out.get_mut(..len).ok_or(Error::Truncated)?;
    b.fill(0);
    let profile = if one_byte {
        ONE_BYTE_PROFILE
    } else {
        TWO_BYTE_PROFILE
    };
    b[..2].copy_from_slice(&profile.to_be_bytes());
    b[2..4].copy_from_slice(&(((len - 4) / 4) as u16).to_be_bytes());
    let mut at = 4;
    for (id, d) in present() {
        if one_byte {
            b[at] = (id << 4) | (d.len() as u8 - 1);
        } else {
            b[at] = *id;
            b[at + 1] = d.len() as u8;
        }
        at += head;
        b[at..at + d.len()].copy_from_slice(d);
        at += d.len();
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rtp::RtpPacket;

    fn packet_with(block: &[u8]) -> Vec<u8> {
        let mut p = vec![0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        p.extend_from_slice(block);
        p.extend_from_slice(b"payload");
        p
    }

    #[test]
    fn one_byte_block_parses_back() {
        let ids = ExtIds {
            mid: 4,
            abs_send_time: 2,
            transport_cc: 3,
            audio_level: 1,
            ..ExtIds::default()
        };
        let v = ExtValues {
            mid: Some(b"0"),
            abs_send_time: Some(0x12_3456),
            transport_seq: Some(0xbeef),
            audio_level: Some(0x85),
        };
        let mut out = [0xaau8; MAX_BLOCK];
        let n = write_block(&mut out, &ids, &v).unwrap();
        assert_eq!(n % 4, 0);
        let p = packet_with(&out[..n]);
        let p = RtpPacket::new_checked(&p[..]).unwrap();
        assert_eq!(p.extension_profile(), Some(ONE_BYTE_PROFILE));
        assert_eq!(p.extension(4), Some(&b"0"[..]));
        assert_eq!(p.extension(2), Some(&[0x12, 0x34, 0x56][..]));
        assert_eq!(p.extension(3), Some(&[0xbe, 0xef][..]));
        assert_eq!(p.extension(1), Some(&[0x85][..]));
        assert_eq!(p.payload(), b"payload");
        let back = Ingress::read(&ids, p.extensions());
        assert_eq!(back.transport_seq, Some(0xbeef));
        assert_eq!(back.audio_level, Some(0x85));
    }

    #[test]
    fn large_ids_use_the_two_byte_form_and_nothing_negotiated_writes_nothing() {
        let ids = ExtIds {
            transport_cc: 200,
            ..ExtIds::default()
        };
        let v = ExtValues {
            mid: Some(b"video"),
            transport_seq: Some(7),
            ..ExtValues::default()
        };
        let mut out = [0u8; MAX_BLOCK];
        let n = write_block(&mut out, &ids, &v).unwrap();
        let p = packet_with(&out[..n]);
        let p = RtpPacket::new_checked(&p[..]).unwrap();
        assert_eq!(p.extension_profile(), Some(TWO_BYTE_PROFILE));
        assert_eq!(p.extension(200), Some(&[0, 7][..]));
        assert_eq!(p.extensions().count(), 1, "mid is not negotiated");
        assert_eq!(write_block(&mut out, &ExtIds::default(), &v), Ok(0));
    }

    #[test]
    fn abs_send_time_is_6_18_fixed_point() {
        assert_eq!(abs_send_time(Duration::from_millis(500)), 1 << 17);
        assert_eq!(abs_send_time(Duration::from_secs(1)), 1 << 18);
        assert_eq!(
            abs_send_time(Duration::from_secs(64)),
            0,
            "wraps every 64 s"
        );
    }
}
