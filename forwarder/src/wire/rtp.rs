//! RTP (RFC 3550) as a borrowed, in-place-rewritable view, with RFC 8285 header extensions.
//!
//! The forwarder touches every media packet but changes only a few header fields (sequence
//! number, timestamp, SSRC, payload type, marker, an extension value), so the packet stays
//! in the receive buffer and `RtpPacket` rewrites it there. `new_checked` validates the
//! whole layout once (version, CSRC list, extension block, padding) and caches the offsets;
//! from then on every accessor is a read at a known-good offset. Reads still go through
//! `get` so that even a misbehaving `AsRef` impl that changes length cannot cause a panic.
//!
//! Invariants held after `new_checked`:
//! - `HEADER_LEN <= header_len <= payload_end <= buf.len()`;
//! - if the padding bit is set, `buf.len() - payload_end` equals the last byte, which is
//!   non-zero;
//! - the extension block, if any, lies entirely inside the header.
//!
//! Extension elements are *not* validated up front: a malformed element only ends
//! iteration early. An SFU forwards extensions it does not understand, so rejecting a
//! packet over an element it would never read would lose media for nothing.
//!
//! Nothing here allocates except `RtpRepr`, the owned form for the slow path and tests.

use core::ops::Range;

use super::{Error, Result};
use crate::ids::{Pt, Ssrc};

/// Length of the fixed RTP header.
pub const HEADER_LEN: usize = 12;

/// `defined by profile` value of the RFC 8285 one-byte extension form.
pub const ONE_BYTE_PROFILE: u16 = 0xBEDE;
/// RFC 8285 two-byte extension form: the top 12 bits; the low 4 are "appbits".
pub const TWO_BYTE_PROFILE: u16 = 0x1000;
const TWO_BYTE_PROFILE_MASK: u16 = 0xFFF0;

/// Extension id 15 in the one-byte form means "stop parsing here" (RFC 8285 §4.2).
const ONE_BYTE_STOP_ID: u8 = 15;

fn read_u16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[w, x, y, z]) => u32::from_be_bytes([w, x, y, z]),
        _ => 0,
    }
}

fn write_bytes(b: &mut [u8], at: usize, v: &[u8]) -> Result<()> {
    let dst = b.get_mut(at..at + v.len()).ok_or(Error::Truncated)?;
    dst.copy_from_slice(v);
    Ok(())
}

/// Which RFC 8285 element layout an extension block uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExtForm {
    OneByte,
    TwoByte,
    /// Some other profile: the block is opaque and yields no elements.
    Opaque,
}

impl ExtForm {
    fn of(profile: u16) -> Self {
        if profile == ONE_BYTE_PROFILE {
            ExtForm::OneByte
        } else if profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE {
            ExtForm::TwoByte
        } else {
            ExtForm::Opaque
        }
    }
}

/// A validated RTP packet over a borrowed (or owned) buffer.
#[derive(Clone)]
pub struct RtpPacket<T> {
    buf: T,
    /// Start of the extension elements (after the 4-byte block header); 0 if no extension.
    ext_start: usize,
    /// End of the fixed header + CSRCs + extension block.
    header_len: usize,
    /// End of the payload, i.e. start of the padding.
    payload_end: usize,
}

impl<T: AsRef<[u8]>> core::fmt::Debug for RtpPacket<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RtpPacket")
            .field("pt", &self.payload_type())
            .field("seq", &self.sequence_number())
            .field("ts", &self.timestamp())
            .field("ssrc", &self.ssrc())
            .field("marker", &self.marker())
            .field("header_len", &self.header_len)
            .field("payload_len", &self.payload_range().len())
            .field("padding_len", &self.padding_len())
            .finish()
    }
}

impl<T: AsRef<[u8]>> RtpPacket<T> {
    /// Validates the layout of `buf` and caches its offsets.
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        let len = b.len();
        let first = *b.first().ok_or(Error::Truncated)?;
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if first >> 6 != 2 {
            return Err(Error::BadVersion);
        }
        let csrc_end = HEADER_LEN + 4 * usize::from(first & 0x0f);
        if len < csrc_end {
            return Err(Error::Truncated);
        }
        let (ext_start, header_len) = if first & 0x10 != 0 {
            if len < csrc_end + 4 {
                return Err(Error::Truncated);
            }
            let words = usize::from(read_u16(b, csrc_end + 2));
            let end = csrc_end + 4 + 4 * words;
            if end > len {
                return Err(Error::BadExtension);
            }
            (csrc_end + 4, end)
        } else {
            (0, csrc_end)
        };
        let payload_end = if first & 0x20 != 0 {
            let count = usize::from(*b.last().ok_or(Error::Truncated)?);
            if count == 0 || count > len - header_len {
                return Err(Error::BadPadding);
            }
            len - count
        } else {
            len
        };
        Ok(Self {
            buf,
            ext_start,
            header_len,
            payload_end,
        })
    }

    fn bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    fn byte(&self, at: usize) -> u8 {
        self.bytes().get(at).copied().unwrap_or(0)
    }

    pub fn version(&self) -> u8 {
        self.byte(0) >> 6
    }

    pub fn padding(&self) -> bool {
        self.byte(0) & 0x20 != 0
    }

    pub fn has_extension(&self) -> bool {
        self.byte(0) & 0x10 != 0
    }

    pub fn csrc_count(&self) -> u8 {
        self.byte(0) & 0x0f
    }

    pub fn marker(&self) -> bool {
        self.byte(1) & 0x80 != 0
    }

    pub fn payload_type(&self) -> Pt {
        Pt(self.byte(1) & 0x7f)
    }

    pub fn sequence_number(&self) -> u16 {
        read_u16(self.bytes(), 2)
    }

    pub fn timestamp(&self) -> u32 {
        read_u32(self.bytes(), 4)
    }

    pub fn ssrc(&self) -> Ssrc {
        Ssrc(read_u32(self.bytes(), 8))
    }

    /// The `i`th contributing source, if there are more than `i`.
    pub fn csrc(&self, i: usize) -> Option<Ssrc> {
        if i >= usize::from(self.csrc_count()) {
            return None;
        }
        let at = HEADER_LEN + 4 * i;
        self.bytes().get(at..at + 4)?;
        Some(Ssrc(read_u32(self.bytes(), at)))
    }

    /// Fixed header + CSRC list + extension block: the offset of the payload.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Where the payload lies in the buffer, padding excluded.
    pub fn payload_range(&self) -> Range<usize> {
        self.header_len..self.payload_end
    }

    pub fn payload(&self) -> &[u8] {
        self.bytes().get(self.payload_range()).unwrap_or(&[])
    }

    /// Trailing padding bytes, including the count byte; 0 without the padding bit.
    pub fn padding_len(&self) -> usize {
        self.bytes().len().saturating_sub(self.payload_end)
    }

    /// The 16-bit "defined by profile" field of the extension block, if there is one.
    pub fn extension_profile(&self) -> Option<u16> {
        if self.ext_start == 0 {
            return None;
        }
        Some(read_u16(self.bytes(), self.ext_start - 4))
    }

    /// The RFC 8285 elements, in order. Padding bytes are skipped; iteration ends at the
    /// first malformed element. A non-RFC 8285 profile yields nothing.
    pub fn extensions(&self) -> ExtIter<'_> {
        let form = match self.extension_profile() {
            Some(p) => ExtForm::of(p),
            None => ExtForm::Opaque,
        };
        let data = if form == ExtForm::Opaque {
            &[]
        } else {
            self.bytes()
                .get(self.ext_start..self.header_len)
                .unwrap_or(&[])
        };
        ExtIter { data, pos: 0, form }
    }

    /// Absolute range of the first element with `id`.
    fn extension_range(&self, id: u8) -> Option<Range<usize>> {
        if id == 0 {
            return None;
        }
        let mut it = self.extensions();
        while let Some((eid, r)) = it.next_range() {
            if eid == id {
                return Some(self.ext_start + r.start..self.ext_start + r.end);
            }
        }
        None
    }

    /// The data of the first element with `id` (0 is padding and never matches).
    pub fn extension(&self, id: u8) -> Option<&[u8]> {
        let r = self.extension_range(id)?;
        self.bytes().get(r)
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.bytes()
    }

    pub fn into_inner(self) -> T {
        self.buf
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RtpPacket<T> {
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }

    pub fn set_marker(&mut self, m: bool) {
        if let Some(b) = self.bytes_mut().get_mut(1) {
            *b = (*b & 0x7f) | (u8::from(m) << 7);
        }
    }

    /// Sets the 7-bit payload type; the top bit of `pt` is ignored and the marker kept.
    pub fn set_payload_type(&mut self, pt: Pt) {
        // The view always holds a full fixed header, so this cannot fail.
        let _ = write_payload_type(self.bytes_mut(), pt);
    }

    pub fn set_sequence_number(&mut self, s: u16) {
        let _ = write_sequence_number(self.bytes_mut(), s);
    }

    pub fn set_timestamp(&mut self, ts: u32) {
        let _ = write_timestamp(self.bytes_mut(), ts);
    }

    pub fn set_ssrc(&mut self, s: Ssrc) {
        let _ = write_ssrc(self.bytes_mut(), s);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let r = self.payload_range();
        self.bytes_mut().get_mut(r).unwrap_or(&mut [])
    }

    /// The data of the first element with `id`, for rewriting a value of the same length
    /// (e.g. a transport-wide sequence number).
    pub fn extension_mut(&mut self, id: u8) -> Option<&mut [u8]> {
        let r = self.extension_range(id)?;
        self.bytes_mut().get_mut(r)
    }
}

/// Iterator over RFC 8285 header extension elements: `(id, data)`.
#[derive(Clone, Debug)]
pub struct ExtIter<'a> {
    data: &'a [u8],
    pos: usize,
    form: ExtForm,
}

impl ExtIter<'_> {
    /// Next element as `(id, range within the element area)`.
    fn next_range(&mut self) -> Option<(u8, Range<usize>)> {
        loop {
            let &h = self.data.get(self.pos)?;
            if h == 0 {
                // Padding byte, allowed between elements in both forms.
                self.pos += 1;
                continue;
            }
            let (id, start, len) = match self.form {
                ExtForm::OneByte => {
                    let id = h >> 4;
                    if id == ONE_BYTE_STOP_ID {
                        self.pos = self.data.len();
                        return None;
                    }
                    if id == 0 {
                        // Id 0 with a non-zero length nibble: treat like padding.
                        self.pos += 1;
                        continue;
                    }
                    (id, self.pos + 1, usize::from(h & 0x0f) + 1)
                }
                ExtForm::TwoByte => {
                    let Some(&len) = self.data.get(self.pos + 1) else {
                        self.pos = self.data.len();
                        return None;
                    };
                    (h, self.pos + 2, usize::from(len))
                }
                ExtForm::Opaque => return None,
            };
            let end = start + len;
            if end > self.data.len() {
                self.pos = self.data.len();
                return None;
            }
            self.pos = end;
            return Some((id, start..end));
        }
    }
}

impl<'a> Iterator for ExtIter<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (id, r) = self.next_range()?;
        Some((id, self.data.get(r)?))
    }
}

fn check_fixed(buf: &[u8]) -> Result<()> {
    if buf.len() < HEADER_LEN {
        Err(Error::Truncated)
    } else {
        Ok(())
    }
}

/// Writes the sequence number into a buffer that starts with a fixed RTP header.
pub fn write_sequence_number(buf: &mut [u8], s: u16) -> Result<()> {
    check_fixed(buf)?;
    write_bytes(buf, 2, &s.to_be_bytes())
}

/// Writes the timestamp into a buffer that starts with a fixed RTP header.
pub fn write_timestamp(buf: &mut [u8], ts: u32) -> Result<()> {
    check_fixed(buf)?;
    write_bytes(buf, 4, &ts.to_be_bytes())
}

/// Writes the SSRC into a buffer that starts with a fixed RTP header.
pub fn write_ssrc(buf: &mut [u8], s: Ssrc) -> Result<()> {
    check_fixed(buf)?;
    write_bytes(buf, 8, &s.0.to_be_bytes())
}

/// Writes the 7-bit payload type, keeping the marker bit.
pub fn write_payload_type(buf: &mut [u8], pt: Pt) -> Result<()> {
    check_fixed(buf)?;
    let b = buf.get_mut(1).ok_or(Error::Truncated)?;
    *b = (*b & 0x80) | (pt.0 & 0x7f);
    Ok(())
}

/// Sets or clears the padding bit (used when the engine appends or strips padding).
pub fn write_padding_bit(buf: &mut [u8], p: bool) -> Result<()> {
    check_fixed(buf)?;
    let b = buf.get_mut(0).ok_or(Error::Truncated)?;
    *b = (*b & !0x20) | (u8::from(p) << 5);
    Ok(())
}

/// Owned RTP packet for the slow path and tests (allocates).
///
/// `emit` writes the canonical form: an extension block only if `extensions` is non-empty,
/// elements packed in order with zero padding only at the end of the block, and padding
/// bytes zero except the count. Parsing a packet in another form (padding between
/// elements, an empty or non-RFC 8285 extension block) and emitting it again therefore
/// yields equal *fields* but not necessarily equal bytes. A non-RFC 8285 extension block is
/// dropped by `parse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RtpRepr {
    pub marker: bool,
    pub payload_type: Pt,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub ssrc: Ssrc,
    pub csrcs: Vec<Ssrc>,
    /// `(id, data)`: one-byte form needs id 1..=14 and 1..=16 bytes; two-byte form needs
    /// id 1..=255 and 0..=255 bytes.
    pub extensions: Vec<(u8, Vec<u8>)>,
    pub two_byte_extensions: bool,
    pub payload: Vec<u8>,
    /// Total padding length including the count byte; 0 for none.
    pub padding: u8,
}

impl RtpRepr {
    pub fn parse<T: AsRef<[u8]>>(p: &RtpPacket<T>) -> Self {
        let extensions: Vec<_> = p.extensions().map(|(id, d)| (id, d.to_vec())).collect();
        // Canonical form has no empty block, so the flag only means something with elements.
        let two_byte = !extensions.is_empty()
            && p.extension_profile()
                .is_some_and(|pr| ExtForm::of(pr) == ExtForm::TwoByte);
        Self {
            marker: p.marker(),
            payload_type: p.payload_type(),
            sequence_number: p.sequence_number(),
            timestamp: p.timestamp(),
            ssrc: p.ssrc(),
            csrcs: (0..usize::from(p.csrc_count()))
                .filter_map(|i| p.csrc(i))
                .collect(),
            extensions,
            two_byte_extensions: two_byte,
            payload: p.payload().to_vec(),
            padding: u8::try_from(p.padding_len()).unwrap_or(0),
        }
    }

    /// Bytes of extension elements, before rounding up to a word.
    fn ext_elements_len(&self) -> usize {
        let per = if self.two_byte_extensions { 2 } else { 1 };
        self.extensions.iter().map(|(_, d)| per + d.len()).sum()
    }

    fn ext_block_len(&self) -> usize {
        if self.extensions.is_empty() {
            0
        } else {
            4 + self.ext_elements_len().div_ceil(4) * 4
        }
    }

    /// Exactly how many bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + 4 * self.csrcs.len()
            + self.ext_block_len()
            + self.payload.len()
            + usize::from(self.padding)
    }

    /// Writes the packet to the start of `buf`, returning its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        if self.csrcs.len() > 15 || self.payload_type.0 > 0x7f {
            return Err(Error::BadField);
        }
        for (id, d) in &self.extensions {
            let ok = if self.two_byte_extensions {
                *id != 0 && d.len() <= 255
            } else {
                (1..=14).contains(id) && (1..=16).contains(&d.len())
            };
            if !ok {
                return Err(Error::BadExtension);
            }
        }
        let ext_words = self.ext_elements_len().div_ceil(4);
        if ext_words > usize::from(u16::MAX) {
            return Err(Error::BadExtension);
        }
        let total = self.buffer_len();
        let out = buf.get_mut(..total).ok_or(Error::BufferTooSmall)?;
        out.fill(0);

        let mut b0 = (2 << 6) | self.csrcs.len() as u8;
        if self.padding > 0 {
            b0 |= 0x20;
        }
        if !self.extensions.is_empty() {
            b0 |= 0x10;
        }
        write_bytes(
            out,
            0,
            &[b0, (u8::from(self.marker) << 7) | self.payload_type.0],
        )?;
        write_sequence_number(out, self.sequence_number)?;
        write_timestamp(out, self.timestamp)?;
        write_ssrc(out, self.ssrc)?;
        let mut at = HEADER_LEN;
        for c in &self.csrcs {
            write_bytes(out, at, &c.0.to_be_bytes())?;
            at += 4;
        }
        if !self.extensions.is_empty() {
            let profile = if self.two_byte_extensions {
                TWO_BYTE_PROFILE
            } else {
                ONE_BYTE_PROFILE
            };
            write_bytes(out, at, &profile.to_be_bytes())?;
            write_bytes(out, at + 2, &(ext_words as u16).to_be_bytes())?;
            let block_end = at + 4 + 4 * ext_words;
            at += 4;
            for (id, d) in &self.extensions {
                if self.two_byte_extensions {
                    write_bytes(out, at, &[*id, d.len() as u8])?;
                    at += 2;
                } else {
                    write_bytes(out, at, &[(id << 4) | (d.len() - 1) as u8])?;
                    at += 1;
                }
                write_bytes(out, at, d)?;
                at += d.len();
            }
            at = block_end;
        }
        write_bytes(out, at, &self.payload)?;
        at += self.payload.len();
        if self.padding > 0 {
            at += usize::from(self.padding);
            write_bytes(out, at - 1, &[self.padding])?;
        }
        debug_assert_eq!(at, total);
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// V=2, no P/X/CC; M=1 PT=96; seq 0x1234; ts 0xdeadbeef; ssrc 0x11223344; payload 4 bytes.
    const SIMPLE: &[u8] = &[
        0x80, 0xE0, 0x12, 0x34, 0xDE, 0xAD, 0xBE, 0xEF, 0x11, 0x22, 0x33, 0x44, //
        0xAA, 0xBB, 0xCC, 0xDD,
    ];

    /// CC=2, P=1 with 3 padding bytes, PT=111, no marker.
    const CSRC_PADDED: &[u8] = &[
        0xA2, 0x6F, 0x00, 0x01, 0x00, 0x00, 0x03, 0xC0, 0xCA, 0xFE, 0xBA, 0xBE, //
        0x00, 0x00, 0x00, 0x01, // csrc 1
        0x00, 0x00, 0x00, 0x02, // csrc 2
        0x01, 0x02, 0x03, // payload
        0x00, 0x00, 0x03, // padding, count 3
    ];

    /// One-byte extensions: id 1 (1 byte), id 3 (2 bytes), padded to a word.
    const ONE_BYTE: &[u8] = &[
        0x90, 0x60, 0x00, 0x07, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x05, //
        0xBE, 0xDE, 0x00, 0x02, // profile, 2 words
        0x10, 0x7F, // id 1, len 1
        0x31, 0xAB, 0xCD, // id 3, len 2
        0x00, 0x00, 0x00, // padding
        0x99, // payload
    ];

    /// One-byte extensions with padding bytes between elements (non-canonical).
    const ONE_BYTE_GAPS: &[u8] = &[
        0x90, 0x60, 0x00, 0x07, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x05, //
        0xBE, 0xDE, 0x00, 0x02, //
        0x10, 0x7F, // id 1, len 1
        0x00, 0x00, // padding between elements
        0x31, 0xAB, 0xCD, // id 3, len 2
        0x00, // padding
        0x99,
    ];

    /// Two-byte extensions (appbits 0x5): id 1 empty, padding, id 200 with 3 bytes.
    const TWO_BYTE_GAPS: &[u8] = &[
        0x90, 0x60, 0x00, 0x07, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x05, //
        0x10, 0x05, 0x00, 0x02, //
        0x01, 0x00, // id 1, len 0
        0x00, // padding
        0xC8, 0x03, 0x01, 0x02, 0x03, // id 200, len 3
        0x99, 0x98,
    ];

    /// Two-byte extensions in canonical form.
    const TWO_BYTE: &[u8] = &[
        0x90, 0x60, 0x00, 0x07, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x05, //
        0x10, 0x00, 0x00, 0x02, //
        0x01, 0x00, // id 1, len 0
        0xC8, 0x03, 0x01, 0x02, 0x03, // id 200, len 3
        0x00, // padding
        0x99, 0x98,
    ];

    fn roundtrip_bytes(fixture: &[u8]) {
        let p = RtpPacket::new_checked(fixture).unwrap();
        let r = RtpRepr::parse(&p);
        assert_eq!(r.buffer_len(), fixture.len());
        let mut out = vec![0xEE; r.buffer_len() + 3];
        let n = r.emit(&mut out).unwrap();
        assert_eq!(&out[..n], fixture);
    }

    #[test]
    fn simple_fields() {
        let p = RtpPacket::new_checked(SIMPLE).unwrap();
        assert_eq!(p.version(), 2);
        assert!(!p.padding() && !p.has_extension());
        assert_eq!(p.csrc_count(), 0);
        assert!(p.marker());
        assert_eq!(p.payload_type(), Pt(96));
        assert_eq!(p.sequence_number(), 0x1234);
        assert_eq!(p.timestamp(), 0xDEAD_BEEF);
        assert_eq!(p.ssrc(), Ssrc(0x1122_3344));
        assert_eq!(p.csrc(0), None);
        assert_eq!(p.header_len(), 12);
        assert_eq!(p.payload_range(), 12..16);
        assert_eq!(p.payload(), &[0xAA, 0xBB, 0xCC, 0xDD]);
        assert_eq!(p.padding_len(), 0);
        assert_eq!(p.extension_profile(), None);
        assert_eq!(p.extensions().count(), 0);
        assert_eq!(p.extension(1), None);
        assert_eq!(p.as_bytes(), SIMPLE);
        assert_eq!(p.into_inner(), SIMPLE);
    }

    #[test]
    fn csrcs_and_padding() {
        let p = RtpPacket::new_checked(CSRC_PADDED).unwrap();
        assert!(p.padding());
        assert!(!p.marker());
        assert_eq!(p.payload_type(), Pt(111));
        assert_eq!(p.csrc_count(), 2);
        assert_eq!(p.csrc(0), Some(Ssrc(1)));
        assert_eq!(p.csrc(1), Some(Ssrc(2)));
        assert_eq!(p.csrc(2), None);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.payload(), &[1, 2, 3]);
        assert_eq!(p.padding_len(), 3);
    }

    #[test]
    fn one_byte_extensions() {
        let p = RtpPacket::new_checked(ONE_BYTE).unwrap();
        assert_eq!(p.extension_profile(), Some(ONE_BYTE_PROFILE));
        assert_eq!(p.header_len(), 24);
        let v: Vec<_> = p.extensions().collect();
        assert_eq!(v, vec![(1, &[0x7F][..]), (3, &[0xAB, 0xCD][..])]);
        assert_eq!(p.extension(3), Some(&[0xAB, 0xCD][..]));
        assert_eq!(p.extension(0), None);
        assert_eq!(p.extension(2), None);
        assert_eq!(p.payload(), &[0x99]);
    }

    #[test]
    fn extensions_skip_padding_between_elements() {
        let a = RtpPacket::new_checked(ONE_BYTE_GAPS).unwrap();
        let b = RtpPacket::new_checked(ONE_BYTE).unwrap();
        assert!(a.extensions().eq(b.extensions()));
        assert_eq!(RtpRepr::parse(&a), RtpRepr::parse(&b));

        let t = RtpPacket::new_checked(TWO_BYTE_GAPS).unwrap();
        assert_eq!(t.extension_profile(), Some(0x1005));
        let v: Vec<_> = t.extensions().collect();
        assert_eq!(v, vec![(1, &[][..]), (200, &[1, 2, 3][..])]);
        assert_eq!(t.extension(1), Some(&[][..]));
        assert_eq!(t.payload(), &[0x99, 0x98]);
        let canon = RtpPacket::new_checked(TWO_BYTE).unwrap();
        assert_eq!(RtpRepr::parse(&t), RtpRepr::parse(&canon));
        assert!(RtpRepr::parse(&t).two_byte_extensions);
    }

    #[test]
    fn one_byte_id_15_stops_iteration() {
        let mut pkt = ONE_BYTE.to_vec();
        pkt[16] = 0xF0; // id 15 replaces the first element
        let p = RtpPacket::new_checked(&pkt[..]).unwrap();
        assert_eq!(p.extensions().count(), 0);
    }

    #[test]
    fn malformed_element_ends_iteration() {
        let mut pkt = ONE_BYTE.to_vec();
        pkt[18] = 0x3F; // id 3 claims 16 bytes, past the block
        let p = RtpPacket::new_checked(&pkt[..]).unwrap();
        let v: Vec<_> = p.extensions().collect();
        assert_eq!(v, vec![(1, &[0x7F][..])]);
    }

    #[test]
    fn opaque_profile_yields_nothing() {
        let mut pkt = ONE_BYTE.to_vec();
        pkt[12] = 0x12;
        let p = RtpPacket::new_checked(&pkt[..]).unwrap();
        assert_eq!(p.extension_profile(), Some(0x12DE));
        assert_eq!(p.extensions().count(), 0);
        assert_eq!(p.header_len(), 24);
    }

    #[test]
    fn canonical_fixtures_round_trip_bytes() {
        for f in [SIMPLE, CSRC_PADDED, ONE_BYTE, TWO_BYTE] {
            roundtrip_bytes(f);
        }
    }

    #[test]
    fn setters_change_only_their_field() {
        type Setter = fn(&mut RtpPacket<Vec<u8>>);
        let cases: [(Setter, &[usize]); 5] = [
            (|p| p.set_marker(true), &[1]),
            (|p| p.set_payload_type(Pt(0x7f)), &[1]),
            (|p| p.set_sequence_number(0xFFFF), &[2, 3]),
            (|p| p.set_timestamp(0x0102_0304), &[4, 5, 6, 7]),
            (|p| p.set_ssrc(Ssrc(0x5566_7788)), &[8, 9, 10, 11]),
        ];
        for (set, touched) in cases {
            let mut p = RtpPacket::new_checked(ONE_BYTE.to_vec()).unwrap();
            set(&mut p);
            let after = p.as_bytes();
            for (i, (a, b)) in ONE_BYTE.iter().zip(after).enumerate() {
                if !touched.contains(&i) {
                    assert_eq!(a, b, "byte {i} changed");
                }
            }
            assert_ne!(after, ONE_BYTE);
        }
        let mut p = RtpPacket::new_checked(ONE_BYTE.to_vec()).unwrap();
        p.set_payload_type(Pt(0x7f));
        assert!(!p.marker());
        assert_eq!(p.payload_type(), Pt(0x7f));
        p.set_marker(true);
        assert!(p.marker());
        assert_eq!(p.payload_type(), Pt(0x7f));
        p.set_payload_type(Pt(0xFF));
        assert_eq!(p.payload_type(), Pt(0x7f));
        assert!(p.marker());
    }

    #[test]
    fn mutable_payload_and_extension() {
        let mut p = RtpPacket::new_checked(ONE_BYTE.to_vec()).unwrap();
        p.extension_mut(3).unwrap().copy_from_slice(&[1, 2]);
        p.payload_mut()[0] = 0x42;
        assert!(p.extension_mut(9).is_none());
        assert_eq!(p.extension(3), Some(&[1, 2][..]));
        assert_eq!(p.extension(1), Some(&[0x7F][..]));
        assert_eq!(p.payload(), &[0x42]);
    }

    #[test]
    fn free_writers_work_on_header_only_slots() {
        let mut slot = [0u8; 12];
        slot.copy_from_slice(&SIMPLE[..12]);
        write_sequence_number(&mut slot, 7).unwrap();
        write_timestamp(&mut slot, 8).unwrap();
        write_ssrc(&mut slot, Ssrc(9)).unwrap();
        write_payload_type(&mut slot, Pt(100)).unwrap();
        write_padding_bit(&mut slot, true).unwrap();
        assert_eq!(
            slot,
            [0xA0, 0x80 | 100, 0, 7, 0, 0, 0, 8, 0, 0, 0, 9],
            "marker kept, fields written"
        );
        write_padding_bit(&mut slot, false).unwrap();
        assert_eq!(slot[0], 0x80);
        let mut short = [0x80u8; 11];
        assert_eq!(write_sequence_number(&mut short, 1), Err(Error::Truncated));
        assert_eq!(write_timestamp(&mut short, 1), Err(Error::Truncated));
        assert_eq!(write_ssrc(&mut short, Ssrc(1)), Err(Error::Truncated));
        assert_eq!(write_payload_type(&mut short, Pt(1)), Err(Error::Truncated));
        assert_eq!(write_padding_bit(&mut short, true), Err(Error::Truncated));
        assert_eq!(short, [0x80; 11]);
    }

    #[test]
    fn rejects_short_and_bad_version() {
        assert_eq!(
            RtpPacket::new_checked(&[][..]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            RtpPacket::new_checked(&SIMPLE[..11]).unwrap_err(),
            Error::Truncated
        );
        for v in [0u8, 1, 3] {
            let mut pkt = SIMPLE.to_vec();
            pkt[0] = (pkt[0] & 0x3F) | (v << 6);
            assert_eq!(RtpPacket::new_checked(pkt).unwrap_err(), Error::BadVersion);
        }
    }

    #[test]
    fn rejects_truncated_csrc_list() {
        assert_eq!(
            RtpPacket::new_checked(&CSRC_PADDED[..19]).unwrap_err(),
            Error::Truncated
        );
        let mut pkt = SIMPLE.to_vec();
        pkt[0] |= 0x02; // 2 CSRCs = 8 bytes, only 4 present
        assert_eq!(RtpPacket::new_checked(pkt).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn rejects_extension_past_end() {
        let mut pkt = ONE_BYTE.to_vec();
        pkt[15] = 3; // 3 words = 12 bytes, only 9 follow the block header
        assert_eq!(
            RtpPacket::new_checked(pkt).unwrap_err(),
            Error::BadExtension
        );
        // Extension bit set but no room for the block header.
        let mut pkt = SIMPLE[..14].to_vec();
        pkt[0] |= 0x10;
        assert_eq!(RtpPacket::new_checked(pkt).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn rejects_bad_padding() {
        let mut zero = CSRC_PADDED.to_vec();
        *zero.last_mut().unwrap() = 0;
        assert_eq!(RtpPacket::new_checked(zero).unwrap_err(), Error::BadPadding);
        let mut big = CSRC_PADDED.to_vec();
        *big.last_mut().unwrap() = 7; // payload (3) + padding (3) = 6 bytes after header
        assert_eq!(RtpPacket::new_checked(big).unwrap_err(), Error::BadPadding);
        let mut exact = CSRC_PADDED.to_vec();
        *exact.last_mut().unwrap() = 6; // all of it is padding: allowed, empty payload
        let p = RtpPacket::new_checked(exact).unwrap();
        assert_eq!(p.payload(), &[] as &[u8]);
        assert_eq!(p.padding_len(), 6);
        // Padding bit with nothing after the header.
        let mut bare = SIMPLE[..12].to_vec();
        bare[0] |= 0x20;
        assert_eq!(RtpPacket::new_checked(bare).unwrap_err(), Error::BadPadding);
    }

    #[test]
    fn emit_rejects_unrepresentable() {
        let mut r = RtpRepr {
            extensions: vec![(15, vec![1])],
            ..RtpRepr::default()
        };
        assert_eq!(r.emit(&mut [0; 64]), Err(Error::BadExtension));
        r.extensions = vec![(1, vec![])];
        assert_eq!(r.emit(&mut [0; 64]), Err(Error::BadExtension));
        r.two_byte_extensions = true;
        assert_eq!(r.emit(&mut [0; 64]), Ok(20));
        r.extensions = vec![(0, vec![])];
        assert_eq!(r.emit(&mut [0; 64]), Err(Error::BadExtension));
        r.extensions.clear();
        r.payload_type = Pt(128);
        assert_eq!(r.emit(&mut [0; 64]), Err(Error::BadField));
        r.payload_type = Pt(0);
        r.csrcs = vec![Ssrc(0); 16];
        assert_eq!(r.emit(&mut [0; 128]), Err(Error::BadField));
        r.csrcs.clear();
        assert_eq!(r.emit(&mut [0; 11]), Err(Error::BufferTooSmall));
    }

    fn exercise<T: AsRef<[u8]>>(p: &RtpPacket<T>) {
        let _ = (p.version(), p.padding(), p.has_extension(), p.marker());
        let _ = (
            p.payload_type(),
            p.sequence_number(),
            p.timestamp(),
            p.ssrc(),
        );
        for i in 0..17 {
            let _ = p.csrc(i);
        }
        let _ = (
            p.header_len(),
            p.payload_range(),
            p.payload(),
            p.padding_len(),
        );
        let _ = p.extension_profile();
        for (id, d) in p.extensions() {
            assert!(p.extension(id).is_some());
            let _ = d;
        }
        for id in 0..=255u8 {
            let _ = p.extension(id);
        }
        assert!(p.header_len() <= p.payload_range().end);
        assert!(p.payload_range().end + p.padding_len() == p.as_bytes().len());
    }

    fn repr_strategy() -> impl Strategy<Value = RtpRepr> {
        let one = proptest::collection::vec(
            (1u8..=14, proptest::collection::vec(any::<u8>(), 1..=16)),
            0..6,
        );
        let two = proptest::collection::vec(
            (1u8..=255, proptest::collection::vec(any::<u8>(), 0..40)),
            0..6,
        );
        let exts = prop_oneof![
            one.prop_map(|e| (e, false)),
            two.prop_map(|e| {
                let two = !e.is_empty();
                (e, two)
            }),
        ];
        (
            (
                any::<bool>(),
                0u8..128,
                any::<u16>(),
                any::<u32>(),
                any::<u32>(),
            ),
            proptest::collection::vec(any::<u32>(), 0..=15),
            exts,
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<u8>(),
        )
            .prop_map(
                |((m, pt, seq, ts, ssrc), csrcs, (extensions, two), payload, pad)| RtpRepr {
                    marker: m,
                    payload_type: Pt(pt),
                    sequence_number: seq,
                    timestamp: ts,
                    ssrc: Ssrc(ssrc),
                    csrcs: csrcs.into_iter().map(Ssrc).collect(),
                    extensions,
                    two_byte_extensions: two,
                    payload,
                    padding: pad,
                },
            )
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = RtpPacket::new_checked(&data[..]) {
                exercise(&p);
            }
        }

        /// Random bytes behind a valid-looking first byte reach deeper into the parser.
        #[test]
        fn random_rtp_like_bytes_never_panic(
            first in 0x80u8..0xC0,
            profile in prop_oneof![Just(0xBEDEu16), Just(0x1000u16), any::<u16>()],
            words in 0u16..8,
            mut data in proptest::collection::vec(any::<u8>(), 12..120),
        ) {
            data[0] = first;
            let at = HEADER_LEN + 4 * usize::from(first & 0x0f);
            if let Some(s) = data.get_mut(at..at + 4) {
                s.copy_from_slice(&[(profile >> 8) as u8, profile as u8, 0, words as u8]);
            }
            if let Ok(mut p) = RtpPacket::new_checked(data.clone()) {
                exercise(&p);
                for id in 0..=255u8 {
                    let _ = p.extension_mut(id);
                }
                let _ = p.payload_mut();
                let r = RtpRepr::parse(&p);
                // Anything parsed is representable, so emit must succeed and round-trip.
                let mut out = vec![0; r.buffer_len()];
                r.emit(&mut out).unwrap();
                let q = RtpPacket::new_checked(&out[..]).unwrap();
                prop_assert_eq!(RtpRepr::parse(&q), r);
            }
        }

        #[test]
        fn any_repr_round_trips(r in repr_strategy()) {
            let mut buf = vec![0u8; r.buffer_len()];
            let n = r.emit(&mut buf).unwrap();
            prop_assert_eq!(n, buf.len());
            let p = RtpPacket::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(RtpRepr::parse(&p), r.clone());
            // And canonical bytes re-emit identically.
            let mut again = vec![0u8; n];
            RtpRepr::parse(&p).emit(&mut again).unwrap();
            prop_assert_eq!(again, buf);
        }
    }
}
