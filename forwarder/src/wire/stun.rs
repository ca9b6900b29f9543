//! STUN (RFC 5389 / RFC 8489) as a borrowed view, plus a minimal writer, for ICE-lite.
//!
//! An ICE-lite SFU only answers Binding requests: it reads USERNAME, PRIORITY and
//! USE-CANDIDATE, checks MESSAGE-INTEGRITY and FINGERPRINT, and replies with
//! XOR-MAPPED-ADDRESS. So this module parses any well-formed message but understands only
//! those attributes.
//!
//! Invariants held after `StunMessage::new_checked`:
//! - the buffer is exactly the 20-byte header plus `length` bytes, `length % 4 == 0`;
//! - the attributes tile the body exactly, each padded to 4 bytes, so every accessor and
//!   the iterator read within bounds and the integrity offsets are meaningful.
//!
//! Security: attributes after MESSAGE-INTEGRITY are not covered by it (RFC 8489 §14.5), so
//! `attribute` and the helpers built on it ignore everything after MESSAGE-INTEGRITY except
//! FINGERPRINT. `attributes()` still walks the whole message, for diagnostics.
//!
//! HMAC-SHA1 is deliberately not here: the caller owns the key and the crypto crate, and
//! passes the MAC in as a function. CRC-32 for FINGERPRINT is small enough to implement
//! inline (a 16-entry nibble table built at compile time). Nothing here allocates.

use core::ops::Range;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Error, Result};

pub const HEADER_LEN: usize = 20;
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// XORed into the CRC-32 of the message to form FINGERPRINT (RFC 8489 §14.7).
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// Attribute types this crate reads or writes.
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
    pub const ICE_CONTROLLED: u16 = 0x8029;
    pub const ICE_CONTROLLING: u16 = 0x802A;
}

const MI_LEN: usize = 20;

/// HMAC-SHA1 keyed by the caller, over one contiguous message prefix (used when writing).
pub type HmacFn<'a> = dyn Fn(&[u8]) -> [u8; 20] + 'a;
/// HMAC-SHA1 keyed by the caller, over `head || rest` (used when verifying a borrowed
/// message whose length field must be adjusted without copying).
pub type HmacPartsFn<'a> = dyn Fn(&[u8; 4], &[u8]) -> [u8; 20] + 'a;

/// The two class bits of the message type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    Request,
    Indication,
    SuccessResponse,
    ErrorResponse,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0x0000,
            Class::Indication => 0x0010,
            Class::SuccessResponse => 0x0100,
            Class::ErrorResponse => 0x0110,
        }
    }
}

/// The 12-bit STUN method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Method(pub u16);

impl Method {
    pub const BINDING: Method = Method(0x001);
}

/// Interleaves class and method bits into the 14-bit message type (RFC 8489 §5).
pub fn message_type(class: Class, method: Method) -> u16 {
    let m = method.0 & 0x0FFF;
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | class.bits()
}

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

const fn crc_nibble_table() -> [u32; 16] {
    let mut t = [0u32; 16];
    let mut i = 0;
    while i < 16 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 4 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

const CRC_NIBBLES: [u32; 16] = crc_nibble_table();

/// CRC-32 (IEEE 802.3, reflected, as used by zlib and STUN FINGERPRINT).
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        c = (c >> 4) ^ CRC_NIBBLES[(c & 0xF) as usize];
        c = (c >> 4) ^ CRC_NIBBLES[(c & 0xF) as usize];
    }
    !c
}

/// The FINGERPRINT value for `data` (the message up to, not including, the attribute).
pub fn fingerprint_of(data: &[u8]) -> u32 {
    crc32(data) ^ FINGERPRINT_XOR
}

/// Walks the attribute TLVs of a body; yields `(type, value, offset of the TLV header)`.
#[derive(Clone, Debug)]
struct Walk<'a> {
    body: &'a [u8],
    pos: usize,
}

impl<'a> Walk<'a> {
    fn next_tlv(&mut self) -> Option<(u16, &'a [u8], usize)> {
        let at = self.pos;
        let ty = read_u16(self.body, at);
        let len = usize::from(read_u16(self.body, at + 2));
        self.body.get(at..at + 4)?;
        let value = self.body.get(at + 4..at + 4 + len)?;
        self.pos = at + 4 + len.div_ceil(4) * 4;
        Some((ty, value, at))
    }
}

/// Iterator over `(type, value)` of every attribute, padding excluded.
#[derive(Clone, Debug)]
pub struct AttrIter<'a> {
    walk: Walk<'a>,
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        self.walk.next_tlv().map(|(t, v, _)| (t, v))
    }
}

/// A validated STUN message over a borrowed (or owned) buffer.
#[derive(Clone)]
pub struct StunMessage<T> {
    buf: T,
    /// Offset of the MESSAGE-INTEGRITY TLV header, if present.
    mi_at: Option<usize>,
    /// Offset of the FINGERPRINT TLV header, if present as the last attribute.
    fp_at: Option<usize>,
}

impl<T: AsRef<[u8]>> core::fmt::Debug for StunMessage<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StunMessage")
            .field("class", &self.class())
            .field("method", &self.method())
            .field("len", &self.bytes().len())
            .finish()
    }
}

impl<T: AsRef<[u8]>> StunMessage<T> {
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        let head = b.get(..HEADER_LEN).ok_or(Error::Truncated)?;
        if head.first().is_some_and(|x| x & 0xC0 != 0) {
            return Err(Error::BadField);
        }
        if read_u32(head, 4) != MAGIC_COOKIE {
            return Err(Error::BadField);
        }
        let len = usize::from(read_u16(head, 2));
        if len % 4 != 0 {
            return Err(Error::BadLength);
        }
        if HEADER_LEN + len > b.len() {
            return Err(Error::Truncated);
        }
        if HEADER_LEN + len != b.len() {
            return Err(Error::BadLength);
        }
        let body = b.get(HEADER_LEN..).unwrap_or(&[]);
        let mut walk = Walk { body, pos: 0 };
        let (mut mi_at, mut fp_at) = (None, None);
        while walk.pos < body.len() {
            let (ty, value, at) = walk.next_tlv().ok_or(Error::BadLength)?;
            if walk.pos > body.len() {
                // The last value's padding runs past the end.
                return Err(Error::BadLength);
            }
            match ty {
                attr::MESSAGE_INTEGRITY if mi_at.is_none() => {
                    if value.len() != MI_LEN {
                        return Err(Error::BadField);
                    }
                    mi_at = Some(HEADER_LEN + at);
                }
                attr::FINGERPRINT => {
                    if value.len() != 4 {
                        return Err(Error::BadField);
                    }
                    fp_at = Some(HEADER_LEN + at);
                }
                _ => {}
            }
        }
        // FINGERPRINT counts only as the last attribute (RFC 8489 §14.7).
        let fp_at = fp_at.filter(|&at| at + 8 == b.len());
        Ok(Self { buf, mi_at, fp_at })
    }

    fn bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    fn message_type(&self) -> u16 {
        read_u16(self.bytes(), 0)
    }

    pub fn class(&self) -> Class {
        match self.message_type() & 0x0110 {
            0x0000 => Class::Request,
            0x0010 => Class::Indication,
            0x0100 => Class::SuccessResponse,
            _ => Class::ErrorResponse,
        }
    }

    pub fn method(&self) -> Method {
        let t = self.message_type();
        Method((t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2))
    }

    pub fn is_binding_request(&self) -> bool {
        self.class() == Class::Request && self.method() == Method::BINDING
    }

    pub fn transaction_id(&self) -> [u8; 12] {
        let mut id = [0u8; 12];
        if let Some(src) = self.bytes().get(8..HEADER_LEN) {
            id.copy_from_slice(src);
        }
        id
    }

    /// Every attribute in order, including any after MESSAGE-INTEGRITY.
    pub fn attributes(&self) -> AttrIter<'_> {
        AttrIter {
            walk: Walk {
                body: self.bytes().get(HEADER_LEN..).unwrap_or(&[]),
                pos: 0,
            },
        }
    }

    /// The first attribute of type `ty` that MESSAGE-INTEGRITY covers (or MESSAGE-INTEGRITY
    /// and FINGERPRINT themselves). Without MESSAGE-INTEGRITY, the first anywhere.
    pub fn attribute(&self, ty: u16) -> Option<&[u8]> {
        if ty == attr::FINGERPRINT {
            let at = self.fp_at?;
            return self.bytes().get(at + 4..at + 8);
        }
        let limit = self.mi_at.map_or(usize::MAX, |at| at - HEADER_LEN);
        let mut walk = Walk {
            body: self.bytes().get(HEADER_LEN..).unwrap_or(&[]),
            pos: 0,
        };
        while let Some((t, v, at)) = walk.next_tlv() {
            if at > limit {
                break;
            }
            if t == ty {
                return Some(v);
            }
        }
        None
    }

    pub fn username(&self) -> Option<&[u8]> {
        self.attribute(attr::USERNAME)
    }

    pub fn has_use_candidate(&self) -> bool {
        self.attribute(attr::USE_CANDIDATE).is_some()
    }

    pub fn priority(&self) -> Option<u32> {
        match self.attribute(attr::PRIORITY)? {
            &[a, b, c, d] => Some(u32::from_be_bytes([a, b, c, d])),
            _ => None,
        }
    }

    /// ICE-CONTROLLING tie-breaker, if present.
    pub fn ice_controlling(&self) -> Option<u64> {
        read_u64(self.attribute(attr::ICE_CONTROLLING)?)
    }

    /// ICE-CONTROLLED tie-breaker, if present.
    pub fn ice_controlled(&self) -> Option<u64> {
        read_u64(self.attribute(attr::ICE_CONTROLLED)?)
    }

    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        decode_xor_address(
            self.attribute(attr::XOR_MAPPED_ADDRESS)?,
            &self.transaction_id(),
        )
    }

    /// The 20-byte MESSAGE-INTEGRITY value, if present.
    pub fn message_integrity(&self) -> Option<&[u8]> {
        let at = self.mi_at?;
        self.bytes().get(at + 4..at + 4 + MI_LEN)
    }

    /// The bytes MESSAGE-INTEGRITY covers: from the start of the message to the attribute.
    ///
    /// The HMAC input is these bytes **with the header length field (bytes 2..4) replaced**
    /// by [`message_integrity_length`](Self::message_integrity_length), since a FINGERPRINT
    /// may follow. [`message_integrity_input`](Self::message_integrity_input) does that
    /// without copying.
    pub fn message_integrity_range(&self) -> Option<Range<usize>> {
        Some(0..self.mi_at?)
    }

    /// The length field value the HMAC was computed with: the body up to and including
    /// MESSAGE-INTEGRITY.
    pub fn message_integrity_length(&self) -> Option<u16> {
        u16::try_from(self.mi_at? + 4 + MI_LEN - HEADER_LEN).ok()
    }

    /// The HMAC input in two pieces: the first 4 header bytes with the adjusted length, then
    /// the rest of the covered bytes. Feed both, in order, to an incremental HMAC.
    pub fn message_integrity_input(&self) -> Option<([u8; 4], &[u8])> {
        let r = self.message_integrity_range()?;
        let len = self.message_integrity_length()?.to_be_bytes();
        let ty = self.message_type().to_be_bytes();
        let rest = self.bytes().get(4..r.end)?;
        Some(([ty[0], ty[1], len[0], len[1]], rest))
    }

    /// Checks MESSAGE-INTEGRITY with `hmac(head, rest)` (see `message_integrity_input`),
    /// comparing in constant time. False if the attribute is absent.
    pub fn verify_message_integrity(&self, hmac: &HmacPartsFn<'_>) -> bool {
        let (Some((head, rest)), Some(got)) =
            (self.message_integrity_input(), self.message_integrity())
        else {
            return false;
        };
        let want = hmac(&head, rest);
        let diff = want.iter().zip(got).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0 && got.len() == MI_LEN
    }

    /// The FINGERPRINT value, if it is present as the last attribute.
    pub fn fingerprint(&self) -> Option<u32> {
        let at = self.fp_at?;
        Some(read_u32(self.bytes(), at + 4))
    }

    /// `None` without a FINGERPRINT; otherwise whether it matches the message.
    pub fn check_fingerprint(&self) -> Option<bool> {
        let at = self.fp_at?;
        let covered = self.bytes().get(..at)?;
        Some(fingerprint_of(covered) == read_u32(self.bytes(), at + 4))
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.bytes()
    }

    pub fn into_inner(self) -> T {
        self.buf
    }
}

fn read_u64(v: &[u8]) -> Option<u64> {
    let a: [u8; 8] = v.try_into().ok()?;
    Some(u64::from_be_bytes(a))
}

pub fn decode_xor_address(v: &[u8], tid: &[u8; 12]) -> Option<SocketAddr> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = read_u16(v, 2) ^ (MAGIC_COOKIE >> 16) as u16;
    match (v.get(1)?, v.len()) {
        (1, 8) => {
            let mut a = [0u8; 4];
            for (i, o) in a.iter_mut().enumerate() {
                *o = v.get(4 + i)? ^ cookie.get(i)?;
            }
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        (2, 20) => {
            let mut a = [0u8; 16];
            let key = cookie.iter().chain(tid.iter());
            for ((o, x), k) in a.iter_mut().zip(v.get(4..20)?).zip(key) {
                *o = x ^ k;
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        _ => None,
    }
}

/// Writes the XOR-MAPPED-ADDRESS value for `addr` into `out`; returns its length.
pub fn encode_xor_address(addr: SocketAddr, tid: &[u8; 12], out: &mut [u8; 20]) -> usize {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    out[..4].copy_from_slice(&[0, 0, (port >> 8) as u8, port as u8]);
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = 1;
            for ((o, x), k) in out[4..8].iter_mut().zip(ip.octets()).zip(cookie) {
                *o = x ^ k;
            }
            8
        }
        IpAddr::V6(ip) => {
            out[1] = 2;
            let key = cookie.iter().chain(tid.iter());
            for ((o, x), k) in out[4..20].iter_mut().zip(ip.octets()).zip(key) {
                *o = x ^ k;
            }
            20
        }
    }
}

/// Builds a STUN message in a caller-owned buffer, attribute by attribute.
///
/// `finish` appends FINGERPRINT; `finish_with_integrity` first appends MESSAGE-INTEGRITY
/// computed by the caller's HMAC-SHA1 over the message so far (with the length field
/// already covering MESSAGE-INTEGRITY, as RFC 8489 §14.5 requires).
#[derive(Debug)]
pub struct StunWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> StunWriter<'a> {
    pub fn new(buf: &'a mut [u8], class: Class, method: Method, tid: &[u8; 12]) -> Result<Self> {
        let head = buf.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall)?;
        head[..2].copy_from_slice(&message_type(class, method).to_be_bytes());
        head[2..4].copy_from_slice(&[0, 0]);
        head[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        head[8..].copy_from_slice(tid);
        Ok(Self {
            buf,
            len: HEADER_LEN,
        })
    }

    fn set_length(&mut self, body: usize) -> Result<()> {
        let l = u16::try_from(body).map_err(|_| Error::TooLarge)?;
        let dst = self.buf.get_mut(2..4).ok_or(Error::BufferTooSmall)?;
        dst.copy_from_slice(&l.to_be_bytes());
        Ok(())
    }

    /// Appends one attribute, zero-padding its value to 4 bytes.
    pub fn attr(&mut self, ty: u16, value: &[u8]) -> Result<()> {
        let vlen = u16::try_from(value.len()).map_err(|_| Error::TooLarge)?;
        let padded = value.len().div_ceil(4) * 4;
        let end = self.len + 4 + padded;
        let out = self
            .buf
            .get_mut(self.len..end)
            .ok_or(Error::BufferTooSmall)?;
        out[..2].copy_from_slice(&ty.to_be_bytes());
        out[2..4].copy_from_slice(&vlen.to_be_bytes());
        out[4..4 + value.len()].copy_from_slice(value);
        out[4 + value.len()..].fill(0);
        self.set_length(end - HEADER_LEN)?;
        self.len = end;
        Ok(())
    }

    pub fn xor_mapped_address(&mut self, addr: SocketAddr) -> Result<()> {
        let mut v = [0u8; 20];
        let tid = self.transaction_id();
        let n = encode_xor_address(addr, &tid, &mut v);
        self.attr(attr::XOR_MAPPED_ADDRESS, v.get(..n).unwrap_or(&[]))
    }

    /// Appends an XOR-encoded address attribute of type `ty` (XOR-PEER-ADDRESS,
    /// XOR-RELAYED-ADDRESS, ...).
    pub fn xor_address(&mut self, ty: u16, addr: SocketAddr) -> Result<()> {
        let mut v = [0u8; 20];
        let tid = self.transaction_id();
        let n = encode_xor_address(addr, &tid, &mut v);
        self.attr(ty, v.get(..n).unwrap_or(&[]))
    }

    /// Returns the message length without appending FINGERPRINT (TURN Data indications,
    /// where a CRC over every relayed packet buys nothing).
    pub fn finish_plain(self) -> Result<usize> {
        Ok(self.len)
    }

    fn transaction_id(&self) -> [u8; 12] {
        let mut t = [0u8; 12];
        if let Some(s) = self.buf.get(8..HEADER_LEN) {
            t.copy_from_slice(s);
        }
        t
    }

    /// Appends MESSAGE-INTEGRITY computed by `hmac` (HMAC-SHA1 with the ICE password).
    pub fn message_integrity(&mut self, hmac: &HmacFn<'_>) -> Result<()> {
        let at = self.len;
        // Reserve the attribute first so the length field covers it while hashing.
        self.attr(attr::MESSAGE_INTEGRITY, &[0; MI_LEN])?;
        let mac = hmac(self.buf.get(..at).ok_or(Error::BufferTooSmall)?);
        let dst = self
            .buf
            .get_mut(at + 4..at + 4 + MI_LEN)
            .ok_or(Error::BufferTooSmall)?;
        dst.copy_from_slice(&mac);
        Ok(())
    }

    /// Appends FINGERPRINT and returns the message length.
    pub fn finish(mut self) -> Result<usize> {
        let at = self.len;
        self.attr(attr::FINGERPRINT, &[0; 4])?;
        let fp = fingerprint_of(self.buf.get(..at).ok_or(Error::BufferTooSmall)?);
        let dst = self
            .buf
            .get_mut(at + 4..at + 8)
            .ok_or(Error::BufferTooSmall)?;
        dst.copy_from_slice(&fp.to_be_bytes());
        Ok(self.len)
    }

    /// Appends MESSAGE-INTEGRITY then FINGERPRINT and returns the message length.
    pub fn finish_with_integrity(mut self, hmac: &HmacFn<'_>) -> Result<usize> {
        self.message_integrity(hmac)?;
        self.finish()
    }
}

/// The Binding success response an ICE-lite agent sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindingResponseRepr {
    pub transaction_id: [u8; 12],
    pub xor_mapped: SocketAddr,
}

impl BindingResponseRepr {
    /// Reads a Binding success response; `None` if `m` is not one or lacks the address.
    pub fn parse<T: AsRef<[u8]>>(m: &StunMessage<T>) -> Option<Self> {
        if m.class() != Class::SuccessResponse || m.method() != Method::BINDING {
            return None;
        }
        Some(Self {
            transaction_id: m.transaction_id(),
            xor_mapped: m.xor_mapped_address()?,
        })
    }

    /// Bytes `emit` writes; `with_integrity` adds the 24-byte MESSAGE-INTEGRITY.
    pub fn buffer_len(&self, with_integrity: bool) -> usize {
        let addr = if self.xor_mapped.is_ipv4() { 8 } else { 20 };
        HEADER_LEN + 4 + addr + if with_integrity { 4 + MI_LEN } else { 0 } + 8
    }

    /// Writes XOR-MAPPED-ADDRESS and FINGERPRINT, without MESSAGE-INTEGRITY.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        self.emit_inner(buf, None)
    }

    /// Like `emit` with MESSAGE-INTEGRITY before FINGERPRINT; `hmac` is HMAC-SHA1 keyed
    /// with the local ICE password, applied to the message prefix it is given.
    pub fn emit_with_integrity(&self, buf: &mut [u8], hmac: &HmacFn<'_>) -> Result<usize> {
        self.emit_inner(buf, Some(hmac))
    }

    fn emit_inner(&self, buf: &mut [u8], hmac: Option<&HmacFn<'_>>) -> Result<usize> {
        if buf.len() < self.buffer_len(hmac.is_some()) {
            return Err(Error::BufferTooSmall);
        }
        let mut w = StunWriter::new(
            buf,
            Class::SuccessResponse,
            Method::BINDING,
            &self.transaction_id,
        )?;
        w.xor_mapped_address(self.xor_mapped)?;
        match hmac {
            Some(h) => w.finish_with_integrity(h),
            None => w.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s
            .bytes()
            .filter(u8::is_ascii_hexdigit)
            .map(|c| (c as char).to_digit(16).unwrap() as u8)
            .collect();
        digits.chunks(2).map(|p| (p[0] << 4) | p[1]).collect()
    }

    const TID: [u8; 12] = [
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ];

    /// RFC 5769 §2.1 sample request.
    fn rfc5769_request() -> Vec<u8> {
        hex("00010058 2112a442 b7e7a701 bc34d686 fa87dfae
             80220010 5354554e 20746573 7420636c 69656e74
             00240004 6e0001ff
             80290008 932ff9b1 51263b36
             00060009 6576746a 3a683676 59202020
             00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2
             80280004 e57a3bcf")
    }

    /// RFC 5769 §2.2 sample IPv4 response.
    fn rfc5769_response_v4() -> Vec<u8> {
        hex("0101003c 2112a442 b7e7a701 bc34d686 fa87dfae
             8022000b 74657374 20766563 746f7220
             00200008 0001a147 e112a643
             00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
             80280004 c07d4c96")
    }

    /// RFC 5769 §2.3 sample IPv6 response.
    fn rfc5769_response_v6() -> Vec<u8> {
        hex("01010048 2112a442 b7e7a701 bc34d686 fa87dfae
             8022000b 74657374 20766563 746f7220
             00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9
             00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41
             80280004 c8fb0b4c")
    }

    #[test]
    fn crc32_known_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn message_type_encoding() {
        assert_eq!(message_type(Class::Request, Method::BINDING), 0x0001);
        assert_eq!(
            message_type(Class::SuccessResponse, Method::BINDING),
            0x0101
        );
        assert_eq!(message_type(Class::ErrorResponse, Method::BINDING), 0x0111);
        assert_eq!(message_type(Class::Indication, Method::BINDING), 0x0011);
        for m in [0u16, 1, 0x0F, 0x10, 0x7F, 0x80, 0xFFF] {
            let mut b = [0u8; 20];
            StunWriter::new(&mut b, Class::ErrorResponse, Method(m), &TID).unwrap();
            let msg = StunMessage::new_checked(&b[..]).unwrap();
            assert_eq!(
                (msg.class(), msg.method()),
                (Class::ErrorResponse, Method(m))
            );
        }
    }

    #[test]
    fn rfc5769_sample_request() {
        let b = rfc5769_request();
        let m = StunMessage::new_checked(&b[..]).unwrap();
        assert!(m.is_binding_request());
        assert_eq!(m.class(), Class::Request);
        assert_eq!(m.transaction_id(), TID);
        assert_eq!(m.username(), Some(&b"evtj:h6vY"[..]));
        assert_eq!(m.attribute(attr::SOFTWARE), Some(&b"STUN test client"[..]));
        assert_eq!(m.priority(), Some(0x6e00_01ff));
        assert_eq!(m.ice_controlled(), Some(0x932f_f9b1_5126_3b36));
        assert_eq!(m.ice_controlling(), None);
        assert!(!m.has_use_candidate());
        assert_eq!(m.check_fingerprint(), Some(true));
        assert_eq!(m.fingerprint(), Some(0xe57a_3bcf));
        assert_eq!(m.message_integrity().unwrap()[..2], [0x9a, 0xea]);
        assert_eq!(m.message_integrity_range(), Some(0..76));
        assert_eq!(m.message_integrity_length(), Some(0x50));
        let (head, rest) = m.message_integrity_input().unwrap();
        assert_eq!(head, [0x00, 0x01, 0x00, 0x50]);
        assert_eq!(rest, &b[4..76]);
        let types: Vec<u16> = m.attributes().map(|(t, _)| t).collect();
        assert_eq!(types, [0x8022, 0x0024, 0x8029, 0x0006, 0x0008, 0x8028]);
        // Only the FINGERPRINT check is ours; a wrong MAC must not verify.
        assert!(!m.verify_message_integrity(&|_, _| [0; 20]));
        let expect: [u8; 20] = m.message_integrity().unwrap().try_into().unwrap();
        assert!(m.verify_message_integrity(&|h, r| {
            assert_eq!((h, r.len()), (&[0, 1, 0, 0x50], 72));
            expect
        }));
    }

    #[test]
    fn rfc5769_sample_responses() {
        let b = rfc5769_response_v4();
        let m = StunMessage::new_checked(&b[..]).unwrap();
        assert_eq!(
            (m.class(), m.method()),
            (Class::SuccessResponse, Method::BINDING)
        );
        assert_eq!(m.check_fingerprint(), Some(true));
        assert_eq!(
            m.xor_mapped_address(),
            Some("192.0.2.1:32853".parse().unwrap())
        );
        assert_eq!(m.attribute(attr::SOFTWARE), Some(&b"test vector"[..]));

        let b = rfc5769_response_v6();
        let m = StunMessage::new_checked(&b[..]).unwrap();
        assert_eq!(m.check_fingerprint(), Some(true));
        let want: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap();
        assert_eq!(m.xor_mapped_address(), Some(want));
        assert_eq!(
            BindingResponseRepr::parse(&m),
            Some(BindingResponseRepr {
                transaction_id: TID,
                xor_mapped: want
            })
        );
    }

    #[test]
    fn corrupted_fingerprint_fails() {
        let mut b = rfc5769_request();
        b[30] ^= 1; // inside SOFTWARE
        let m = StunMessage::new_checked(&b[..]).unwrap();
        assert_eq!(m.check_fingerprint(), Some(false));
    }

    #[test]
    fn attributes_after_integrity_are_ignored_by_helpers() {
        // A USE-CANDIDATE appended after MESSAGE-INTEGRITY is not authenticated.
        let mut b = [0u8; 128];
        let mut w = StunWriter::new(&mut b, Class::Request, Method::BINDING, &TID).unwrap();
        w.attr(attr::USERNAME, b"a:b").unwrap();
        w.message_integrity(&|_| [7; 20]).unwrap();
        w.attr(attr::USE_CANDIDATE, &[]).unwrap();
        let n = w.finish().unwrap();
        let m = StunMessage::new_checked(&b[..n]).unwrap();
        assert_eq!(m.username(), Some(&b"a:b"[..]));
        assert!(!m.has_use_candidate());
        assert!(m.attributes().any(|(t, _)| t == attr::USE_CANDIDATE));
        assert_eq!(m.check_fingerprint(), Some(true));
        assert_eq!(m.message_integrity(), Some(&[7u8; 20][..]));
    }

    #[test]
    fn binding_response_round_trips_v4_and_v6() {
        for addr in ["192.0.2.1:32853", "[2001:db8::1]:9", "10.0.0.1:0"] {
            let r = BindingResponseRepr {
                transaction_id: TID,
                xor_mapped: addr.parse().unwrap(),
            };
            for with_mi in [false, true] {
                let mut buf = [0u8; 128];
                let mac = |d: &[u8]| {
                    let mut o = [0u8; 20];
                    o[0] = d.len() as u8;
                    o[1] = d[3]; // the length field seen while hashing
                    o
                };
                let n = if with_mi {
                    r.emit_with_integrity(&mut buf, &mac).unwrap()
                } else {
                    r.emit(&mut buf).unwrap()
                };
                assert_eq!(n, r.buffer_len(with_mi));
                let m = StunMessage::new_checked(&buf[..n]).unwrap();
                assert_eq!(BindingResponseRepr::parse(&m), Some(r));
                assert_eq!(m.check_fingerprint(), Some(true));
                assert_eq!(m.message_integrity().is_some(), with_mi);
                if with_mi {
                    let (head, rest) = m.message_integrity_input().unwrap();
                    let mut whole = head.to_vec();
                    whole.extend_from_slice(rest);
                    let expect = mac(&whole);
                    assert!(m.verify_message_integrity(&|h, r| {
                        let mut v = h.to_vec();
                        v.extend_from_slice(r);
                        mac(&v)
                    }));
                    assert_eq!(m.message_integrity(), Some(&expect[..]));
                }
                let short = &mut buf[..n - 1];
                let err = if with_mi {
                    r.emit_with_integrity(short, &mac)
                } else {
                    r.emit(short)
                };
                assert_eq!(err, Err(Error::BufferTooSmall));
            }
        }
    }

    #[test]
    fn emit_matches_rfc5769_address_encoding() {
        let b = rfc5769_response_v6();
        let m = StunMessage::new_checked(&b[..]).unwrap();
        let r = BindingResponseRepr::parse(&m).unwrap();
        let mut out = [0u8; 64];
        let n = r.emit(&mut out).unwrap();
        let ours = StunMessage::new_checked(&out[..n]).unwrap();
        assert_eq!(
            ours.attribute(attr::XOR_MAPPED_ADDRESS),
            m.attribute(attr::XOR_MAPPED_ADDRESS)
        );
    }

    #[test]
    fn rejections() {
        let good = rfc5769_request();
        assert_eq!(
            StunMessage::new_checked(&good[..19]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            StunMessage::new_checked(&good[..100]).unwrap_err(),
            Error::Truncated
        );
        let mut b = good.clone();
        b[0] |= 0x40;
        assert_eq!(StunMessage::new_checked(b).unwrap_err(), Error::BadField);
        let mut b = good.clone();
        b[5] = 0;
        assert_eq!(StunMessage::new_checked(b).unwrap_err(), Error::BadField);
        let mut b = good.clone();
        b[3] = 0x57;
        assert_eq!(StunMessage::new_checked(b).unwrap_err(), Error::BadLength);
        let mut b = good.clone();
        b.extend_from_slice(&[0; 4]);
        assert_eq!(StunMessage::new_checked(b).unwrap_err(), Error::BadLength);
        // An attribute length that runs past the body.
        let mut b = good.clone();
        b[23] = 0x60;
        assert_eq!(StunMessage::new_checked(b).unwrap_err(), Error::BadLength);
        // MESSAGE-INTEGRITY of the wrong size.
        let mut b = [0u8; 64];
        let mut w = StunWriter::new(&mut b, Class::Request, Method::BINDING, &TID).unwrap();
        w.attr(attr::MESSAGE_INTEGRITY, &[0; 16]).unwrap();
        let n = w.len;
        assert_eq!(
            StunMessage::new_checked(&b[..n]).unwrap_err(),
            Error::BadField
        );
    }

    #[test]
    fn writer_pads_and_reports_small_buffers() {
        let mut b = [0xFFu8; 40];
        let mut w = StunWriter::new(&mut b, Class::Indication, Method::BINDING, &TID).unwrap();
        w.attr(attr::SOFTWARE, b"abcde").unwrap();
        assert_eq!(w.attr(attr::SOFTWARE, b"wxyzw"), Err(Error::BufferTooSmall));
        let n = w.len;
        assert_eq!(n, 32);
        assert_eq!(&b[24..32], b"abcde\0\0\0");
        let m = StunMessage::new_checked(&b[..n]).unwrap();
        assert_eq!(m.attribute(attr::SOFTWARE), Some(&b"abcde"[..]));
        assert_eq!(m.check_fingerprint(), None);
        assert!(StunWriter::new(&mut [0; 19], Class::Request, Method::BINDING, &TID).is_err());
    }

    fn exercise<T: AsRef<[u8]>>(m: &StunMessage<T>) {
        let _ = (
            m.class(),
            m.method(),
            m.transaction_id(),
            m.is_binding_request(),
        );
        for (t, v) in m.attributes() {
            let _ = (t, v, m.attribute(t));
        }
        let _ = (
            m.username(),
            m.has_use_candidate(),
            m.priority(),
            m.xor_mapped_address(),
        );
        let _ = (
            m.ice_controlled(),
            m.ice_controlling(),
            m.message_integrity(),
        );
        let _ = (m.message_integrity_range(), m.message_integrity_length());
        let _ = (
            m.message_integrity_input(),
            m.fingerprint(),
            m.check_fingerprint(),
        );
        let _ = m.verify_message_integrity(&|_, _| [0; 20]);
        let _ = BindingResponseRepr::parse(m);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..160)) {
            if let Ok(m) = StunMessage::new_checked(&data[..]) {
                exercise(&m);
            }
        }

        /// A valid header in front of random attributes gets past the cheap checks.
        #[test]
        fn random_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..40),
                                     ty in any::<u16>()) {
            let words = body.len() / 4;
            let mut b = vec![(ty >> 8) as u8 & 0x3F, ty as u8, 0, (words * 4) as u8];
            b.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
            b.extend_from_slice(&TID);
            b.extend_from_slice(&body[..words * 4]);
            if let Ok(m) = StunMessage::new_checked(&b[..]) {
                exercise(&m);
            }
        }

        #[test]
        fn binding_response_round_trip(tid in any::<[u8; 12]>(), v6 in any::<bool>(),
                                       a4 in any::<[u8; 4]>(), a6 in any::<[u8; 16]>(),
                                       port in any::<u16>()) {
            let ip = if v6 { IpAddr::from(a6) } else { IpAddr::from(a4) };
            let r = BindingResponseRepr { transaction_id: tid, xor_mapped: (ip, port).into() };
            let mut buf = [0u8; 96];
            let n = r.emit(&mut buf).unwrap();
            let m = StunMessage::new_checked(&buf[..n]).unwrap();
            prop_assert_eq!(BindingResponseRepr::parse(&m), Some(r));
            prop_assert_eq!(m.check_fingerprint(), Some(true));
        }
    }
}
