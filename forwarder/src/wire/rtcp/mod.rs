//! RTCP (RFC 3550 §6, RFC 4585, draft-holmer-rmcat-transport-wide-cc-extensions-01).
//!
//! A received RTCP datagram is a *compound* packet: several RTCP packets back to back, each
//! with a 4-byte common header whose length field counts 32-bit words minus one.
//! [`packets`] walks one without allocating and yields a typed borrowed view per packet
//! ([`RtcpPacket`]); [`packets_mut`] does the same over a mutable buffer so that SSRCs can
//! be rewritten in place before a packet is relayed.
//!
//! Invariants:
//! - A framing error (bad version, a length running past the datagram, padding on a packet
//!   that is not the last) ends the walk: the iterator yields that error once and then
//!   `None`, because nothing after it can be located.
//! - A packet whose framing is sound but whose body is malformed yields an error for that
//!   packet only; the walk continues with the next one.
//! - Each view's `new_checked` validates everything its accessors and iterators will
//!   touch, so accessors and iterators never fail, never panic and never allocate.
//! - Unknown packet types and feedback formats are not errors: they come out as
//!   [`RtcpPacket::Other`].
//! - `*Repr::emit` and the `emit_*` functions write canonical bytes into a caller-owned
//!   slice without allocating, and return the number of bytes written.

/// Sender and media SSRC accessors shared by every RFC 4585 feedback view, whose body starts
/// with those two words.
macro_rules! feedback_ssrcs {
    ($view:ident) => {
        impl<T: AsRef<[u8]>> $view<T> {
            /// The SSRC of the endpoint sending this feedback.
            pub fn sender_ssrc(&self) -> Ssrc {
                Ssrc(super::rd32(self.buffer.as_ref(), 4))
            }

            /// The SSRC of the media source the feedback is about.
            pub fn media_ssrc(&self) -> Ssrc {
                Ssrc(super::rd32(self.buffer.as_ref(), 8))
            }

            pub fn into_inner(self) -> T {
                self.buffer
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $view<T> {
            pub fn set_sender_ssrc(&mut self, ssrc: Ssrc) {
                super::wr32(self.buffer.as_mut(), 4, ssrc.0);
            }

            pub fn set_media_ssrc(&mut self, ssrc: Ssrc) {
                super::wr32(self.buffer.as_mut(), 8, ssrc.0);
            }
        }
    };
}

mod feedback;
mod report;
mod sdes;
mod twcc;

#[cfg(test)]
mod tests;

pub use feedback::{
    emit_fir, emit_nack, emit_pli, nack_buffer_len, Fir, FirEntries, FirEntry, FirRepr, Nack,
    NackLost, NackPairs, NackRepr, Pli, PliRepr, Remb, RembRepr, RembSsrcs,
};
pub use report::{
    emit_rr, emit_sr, ReceiverReport, ReceiverReportRepr, ReportBlock, ReportBlockRepr,
    ReportBlocks, SenderInfo, SenderReport, SenderReportRepr,
};
pub use sdes::{
    Bye, ByeRepr, ByeSsrcs, Sdes, SdesChunk, SdesChunkRepr, SdesChunks, SdesItem, SdesItemRepr,
    SdesItems, SdesRepr, SDES_CNAME,
};
pub use twcc::{
    emit_feedback as emit_twcc, FeedbackHeader, PacketStatus, Twcc, TwccRepr, TwccStatuses,
};

use super::{Error, Result};

/// Sender report.
pub const PT_SR: u8 = 200;
/// Receiver report.
pub const PT_RR: u8 = 201;
/// Source description.
pub const PT_SDES: u8 = 202;
/// Goodbye.
pub const PT_BYE: u8 = 203;
/// Application-defined.
pub const PT_APP: u8 = 204;
/// Transport-layer feedback (RFC 4585): generic NACK, transport-wide CC.
pub const PT_RTPFB: u8 = 205;
/// Payload-specific feedback (RFC 4585): PLI, FIR, REMB.
pub const PT_PSFB: u8 = 206;

/// RTPFB format of a generic NACK (RFC 4585 §6.2.1).
pub const FMT_NACK: u8 = 1;
/// RTPFB format of transport-wide congestion control feedback.
pub const FMT_TWCC: u8 = 15;
/// PSFB format of a picture loss indication (RFC 4585 §6.3.1).
pub const FMT_PLI: u8 = 1;
/// PSFB format of a full intra request (RFC 5104 §4.3.1).
pub const FMT_FIR: u8 = 4;
/// PSFB format of an application-layer feedback message (REMB when tagged "REMB").
pub const FMT_AFB: u8 = 15;

/// Length of the common header.
pub(crate) const HEADER_LEN: usize = 4;

/// One packet of a compound datagram, as a typed view over `T` (`&[u8]` or `&mut [u8]`).
#[derive(Debug)]
#[non_exhaustive]
pub enum RtcpPacket<T> {
    SenderReport(SenderReport<T>),
    ReceiverReport(ReceiverReport<T>),
    Sdes(Sdes<T>),
    Bye(Bye<T>),
    Nack(Nack<T>),
    Twcc(Twcc<T>),
    Pli(Pli<T>),
    Fir(Fir<T>),
    Remb(Remb<T>),
    /// A packet type or feedback format this module does not interpret. `fmt` is the
    /// 5-bit count/format field; `packet` is the whole packet including its header.
    Other {
        pt: u8,
        fmt: u8,
        packet: T,
    },
}

impl<T: AsRef<[u8]>> RtcpPacket<T> {
    /// Types one RTCP packet. `buffer` must hold exactly one packet (its length field must
    /// match `buffer.len()`).
    pub fn parse(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        let (pt, fmt) = match b {
            [first, pt, ..] => (*pt, first & 0x1f),
            _ => return Err(Error::Truncated),
        };
        Ok(match (pt, fmt) {
            (PT_SR, _) => Self::SenderReport(SenderReport::new_checked(buffer)?),
            (PT_RR, _) => Self::ReceiverReport(ReceiverReport::new_checked(buffer)?),
            (PT_SDES, _) => Self::Sdes(Sdes::new_checked(buffer)?),
            (PT_BYE, _) => Self::Bye(Bye::new_checked(buffer)?),
            (PT_RTPFB, FMT_NACK) => Self::Nack(Nack::new_checked(buffer)?),
            (PT_RTPFB, FMT_TWCC) => Self::Twcc(Twcc::new_checked(buffer)?),
            (PT_PSFB, FMT_PLI) => Self::Pli(Pli::new_checked(buffer)?),
            (PT_PSFB, FMT_FIR) => Self::Fir(Fir::new_checked(buffer)?),
            (PT_PSFB, FMT_AFB) if b.get(12..16) == Some(b"REMB") => {
                Self::Remb(Remb::new_checked(buffer)?)
            }
            _ => {
                check(b, pt, None)?;
                Self::Other {
                    pt,
                    fmt,
                    packet: buffer,
                }
            }
        })
    }

    /// The packet type byte.
    pub fn pt(&self) -> u8 {
        match self {
            Self::SenderReport(_) => PT_SR,
            Self::ReceiverReport(_) => PT_RR,
            Self::Sdes(_) => PT_SDES,
            Self::Bye(_) => PT_BYE,
            Self::Nack(_) | Self::Twcc(_) => PT_RTPFB,
            Self::Pli(_) | Self::Fir(_) | Self::Remb(_) => PT_PSFB,
            Self::Other { pt, .. } => *pt,
        }
    }
}

/// Walks the packets of a compound datagram. See the module doc for how errors end it.
pub fn packets(buf: &[u8]) -> CompoundIter<'_> {
    CompoundIter { rest: buf }
}

/// Like [`packets`], but yields views whose SSRC setters rewrite `buf` in place.
pub fn packets_mut(buf: &mut [u8]) -> CompoundIterMut<'_> {
    CompoundIterMut { rest: buf }
}

/// Splits off the framing of the first packet of `rest`: returns its length in bytes.
fn frame(rest: &[u8]) -> Result<usize> {
    let h = Header::parse(rest)?;
    if h.padding && h.len < rest.len() {
        return Err(Error::BadPadding);
    }
    Ok(h.len)
}

/// Iterator returned by [`packets`].
#[derive(Debug, Clone)]
pub struct CompoundIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for CompoundIter<'a> {
    type Item = Result<RtcpPacket<&'a [u8]>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match frame(self.rest) {
            Ok(len) => {
                let (pkt, tail) = self.rest.split_at(len.min(self.rest.len()));
                self.rest = tail;
                Some(RtcpPacket::parse(pkt))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

impl std::iter::FusedIterator for CompoundIter<'_> {}

/// Iterator returned by [`packets_mut`].
#[derive(Debug)]
pub struct CompoundIterMut<'a> {
    rest: &'a mut [u8],
}

impl<'a> Iterator for CompoundIterMut<'a> {
    type Item = Result<RtcpPacket<&'a mut [u8]>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.rest);
        match frame(rest) {
            Ok(len) => {
                let at = len.min(rest.len());
                let (pkt, tail) = rest.split_at_mut(at);
                self.rest = tail;
                Some(RtcpPacket::parse(pkt))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

impl std::iter::FusedIterator for CompoundIterMut<'_> {}

/// A compound datagram whose framing has been checked once in [`Compound::new_checked`].
///
/// Checking framing up front lets a caller reject a datagram before acting on any of
/// its packets; individual packet bodies are still validated as they are iterated.
#[derive(Debug, Clone)]
pub struct Compound<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Compound<T> {
    /// Checks that `buffer` is a non-empty sequence of well-framed RTCP packets.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let mut rest = buffer.as_ref();
        if rest.is_empty() {
            return Err(Error::Truncated);
        }
        while !rest.is_empty() {
            let len = frame(rest)?;
            rest = rest.get(len..).unwrap_or(&[]);
        }
        Ok(Self { buffer })
    }

    pub fn iter(&self) -> CompoundIter<'_> {
        packets(self.buffer.as_ref())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Compound<T> {
    pub fn iter_mut(&mut self) -> CompoundIterMut<'_> {
        packets_mut(self.buffer.as_mut())
    }
}

/// The common header of one RTCP packet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    pub padding: bool,
    pub count: u8,
    pub pt: u8,
    /// Total length of the packet in bytes, header and padding included.
    pub len: usize,
}

impl Header {
    /// Reads the header at the start of `b` and checks that the packet fits in `b`.
    pub fn parse(b: &[u8]) -> Result<Self> {
        let [first, pt, hi, lo, ..] = *b else {
            return Err(Error::Truncated);
        };
        if first >> 6 != 2 {
            return Err(Error::BadVersion);
        }
        let len = (usize::from(u16::from_be_bytes([hi, lo])) + 1) * 4;
        if len > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Self {
            padding: first & 0x20 != 0,
            count: first & 0x1f,
            pt,
            len,
        })
    }
}

/// Validates the header of a packet that must fill `b` exactly, has type `pt` and (if
/// given) format `fmt`. Returns the count/format field and the end of the body (where
/// padding starts).
pub(crate) fn check(b: &[u8], pt: u8, fmt: Option<u8>) -> Result<(u8, usize)> {
    let h = Header::parse(b)?;
    if h.len != b.len() {
        return Err(Error::BadLength);
    }
    if h.pt != pt || fmt.is_some_and(|f| f != h.count) {
        return Err(Error::BadField);
    }
    let mut end = h.len;
    if h.padding {
        let pad = usize::from(b[h.len - 1]);
        if pad == 0 || pad > h.len - HEADER_LEN {
            return Err(Error::BadPadding);
        }
        end -= pad;
    }
    Ok((h.count, end))
}

/// Writes a common header for a packet of `len` bytes (a multiple of 4, at least 4).
pub(crate) fn write_header(buf: &mut [u8], padding: bool, count: u8, pt: u8, len: usize) {
    let words = (len / 4).saturating_sub(1) as u16;
    if let Some(h) = buf.get_mut(..4) {
        h[0] = 0x80 | if padding { 0x20 } else { 0 } | (count & 0x1f);
        h[1] = pt;
        h[2..4].copy_from_slice(&words.to_be_bytes());
    }
}

/// Reads a big-endian `u16` at `at`, or 0 if out of range (callers validate first).
pub(crate) fn rd16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

/// Reads a big-endian `u32` at `at`, or 0 if out of range (callers validate first).
pub(crate) fn rd32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[w, x, y, z]) => u32::from_be_bytes([w, x, y, z]),
        _ => 0,
    }
}

/// Reads a big-endian signed 24-bit integer at `at`, sign-extended.
pub(crate) fn rd24s(b: &[u8], at: usize) -> i32 {
    match b.get(at..at + 3) {
        Some(&[x, y, z]) => i32::from_be_bytes([x, y, z, 0]) >> 8,
        _ => 0,
    }
}

/// Writes `v` big-endian at `at`; a no-op if out of range (callers validate first).
pub(crate) fn wr16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// Writes `v` big-endian at `at`; a no-op if out of range (callers validate first).
pub(crate) fn wr32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// Writes the low 24 bits of `v` big-endian at `at`.
pub(crate) fn wr24(b: &mut [u8], at: usize, v: i32) {
    if let Some(s) = b.get_mut(at..at + 3) {
        s.copy_from_slice(&v.to_be_bytes()[1..]);
    }
}

/// Fails with `BufferTooSmall` unless `buf` holds `len` bytes; returns the prefix.
pub(crate) fn dest(buf: &mut [u8], len: usize) -> Result<&mut [u8]> {
    buf.get_mut(..len).ok_or(Error::BufferTooSmall)
}
