//! Sender and receiver reports (RFC 3550 §6.4) and their report blocks.
//!
//! `new_checked` guarantees that the header's reception report count fits in the body, so
//! [`ReportBlocks`] can hand out 24-byte block views without further checks. Bytes after
//! the last block (profile-specific extensions) are tolerated and ignored; the owned reprs
//! do not carry them.

use super::{check, dest, rd24s, rd32, wr24, wr32, write_header, HEADER_LEN, PT_RR, PT_SR};
use crate::ids::Ssrc;
use crate::wire::{Error, Result};

const SENDER_INFO_LEN: usize = 24;
const BLOCK_LEN: usize = 24;
const MAX_BLOCKS: usize = 31;

/// A sender report (PT 200).
#[derive(Debug, Clone)]
pub struct SenderReport<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SenderReport<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        let (rc, end) = check(buffer.as_ref(), PT_SR, None)?;
        if HEADER_LEN + SENDER_INFO_LEN + BLOCK_LEN * usize::from(rc) > end {
            return Err(Error::BadLength);
        }
        Ok(Self { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn ssrc(&self) -> Ssrc {
        Ssrc(rd32(self.buffer.as_ref(), 4))
    }

    /// The 64-bit NTP timestamp (seconds in the upper 32 bits, fraction in the lower).
    pub fn ntp_timestamp(&self) -> u64 {
        let b = self.buffer.as_ref();
        (u64::from(rd32(b, 8)) << 32) | u64::from(rd32(b, 12))
    }

    pub fn rtp_timestamp(&self) -> u32 {
        rd32(self.buffer.as_ref(), 16)
    }

    pub fn packet_count(&self) -> u32 {
        rd32(self.buffer.as_ref(), 20)
    }

    pub fn octet_count(&self) -> u32 {
        rd32(self.buffer.as_ref(), 24)
    }

    /// The sender info as a `Copy` value.
    pub fn sender_info(&self) -> SenderInfo {
        SenderInfo {
            ssrc: self.ssrc(),
            ntp_timestamp: self.ntp_timestamp(),
            rtp_timestamp: self.rtp_timestamp(),
            packet_count: self.packet_count(),
            octet_count: self.octet_count(),
        }
    }

    pub fn report_blocks(&self) -> ReportBlocks<'_> {
        blocks(self.buffer.as_ref(), HEADER_LEN + SENDER_INFO_LEN)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> SenderReport<T> {
    pub fn set_ssrc(&mut self, ssrc: Ssrc) {
        wr32(self.buffer.as_mut(), 4, ssrc.0);
    }

    pub fn set_ntp_timestamp(&mut self, ntp: u64) {
        let b = self.buffer.as_mut();
        wr32(b, 8, (ntp >> 32) as u32);
        wr32(b, 12, ntp as u32);
    }

    pub fn set_rtp_timestamp(&mut self, ts: u32) {
        wr32(self.buffer.as_mut(), 16, ts);
    }
}

/// A receiver report (PT 201).
#[derive(Debug, Clone)]
pub struct ReceiverReport<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ReceiverReport<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        let (rc, end) = check(buffer.as_ref(), PT_RR, None)?;
        if HEADER_LEN + 4 + BLOCK_LEN * usize::from(rc) > end {
            return Err(Error::BadLength);
        }
        Ok(Self { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn ssrc(&self) -> Ssrc {
        Ssrc(rd32(self.buffer.as_ref(), 4))
    }

    pub fn report_blocks(&self) -> ReportBlocks<'_> {
        blocks(self.buffer.as_ref(), HEADER_LEN + 4)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ReceiverReport<T> {
    pub fn set_ssrc(&mut self, ssrc: Ssrc) {
        wr32(self.buffer.as_mut(), 4, ssrc.0);
    }
}

fn blocks(b: &[u8], start: usize) -> ReportBlocks<'_> {
    let count = usize::from(b.first().map_or(0, |f| f & 0x1f));
    let end = (start + BLOCK_LEN * count).min(b.len());
    ReportBlocks {
        rest: b.get(start..end).unwrap_or(&[]),
    }
}

/// Iterator over the report blocks of an SR or RR.
#[derive(Debug, Clone)]
pub struct ReportBlocks<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for ReportBlocks<'a> {
    type Item = ReportBlock<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        let (block, rest) = self.rest.split_first_chunk::<BLOCK_LEN>()?;
        self.rest = rest;
        Some(ReportBlock {
            buffer: block.as_slice(),
        })
    }
}

/// One 24-byte reception report block.
#[derive(Debug, Clone, Copy)]
pub struct ReportBlock<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ReportBlock<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < BLOCK_LEN {
            return Err(Error::Truncated);
        }
        Ok(Self { buffer })
    }

    /// The source this block reports on.
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(rd32(self.buffer.as_ref(), 0))
    }

    /// Fraction of packets lost since the last report, in 1/256 units.
    pub fn fraction_lost(&self) -> u8 {
        self.buffer.as_ref().get(4).copied().unwrap_or(0)
    }

    /// Cumulative packets lost; signed because duplicates can make it negative.
    pub fn cumulative_lost(&self) -> i32 {
        rd24s(self.buffer.as_ref(), 5)
    }

    pub fn ext_highest_seq(&self) -> u32 {
        rd32(self.buffer.as_ref(), 8)
    }

    /// Interarrival jitter in RTP timestamp units.
    pub fn jitter(&self) -> u32 {
        rd32(self.buffer.as_ref(), 12)
    }

    /// Middle 32 bits of the NTP timestamp of the last SR received from this source.
    pub fn lsr(&self) -> u32 {
        rd32(self.buffer.as_ref(), 16)
    }

    /// Delay since that SR, in 1/65536 s.
    pub fn dlsr(&self) -> u32 {
        rd32(self.buffer.as_ref(), 20)
    }

    pub fn to_repr(&self) -> ReportBlockRepr {
        ReportBlockRepr {
            ssrc: self.ssrc(),
            fraction_lost: self.fraction_lost(),
            cumulative_lost: self.cumulative_lost(),
            ext_highest_seq: self.ext_highest_seq(),
            jitter: self.jitter(),
            lsr: self.lsr(),
            dlsr: self.dlsr(),
        }
    }
}

/// An owned report block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlockRepr {
    pub ssrc: Ssrc,
    pub fraction_lost: u8,
    /// Clamped to the signed 24-bit range on emit.
    pub cumulative_lost: i32,
    pub ext_highest_seq: u32,
    pub jitter: u32,
    pub lsr: u32,
    pub dlsr: u32,
}

impl ReportBlockRepr {
    fn emit(&self, b: &mut [u8]) {
        wr32(b, 0, self.ssrc.0);
        wr32(b, 4, 0);
        if let Some(x) = b.get_mut(4) {
            *x = self.fraction_lost;
        }
        wr24(b, 5, self.cumulative_lost.clamp(-(1 << 23), (1 << 23) - 1));
        wr32(b, 8, self.ext_highest_seq);
        wr32(b, 12, self.jitter);
        wr32(b, 16, self.lsr);
        wr32(b, 20, self.dlsr);
    }
}

/// The sender-info section of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    pub ssrc: Ssrc,
    pub ntp_timestamp: u64,
    pub rtp_timestamp: u32,
    pub packet_count: u32,
    pub octet_count: u32,
}

/// An owned sender report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SenderReportRepr {
    pub info: SenderInfo,
    pub reports: Vec<ReportBlockRepr>,
}

impl SenderReportRepr {
    pub fn parse<T: AsRef<[u8]>>(sr: &SenderReport<T>) -> Self {
        Self {
            info: sr.sender_info(),
            reports: sr.report_blocks().map(|b| b.to_repr()).collect(),
        }
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + SENDER_INFO_LEN + BLOCK_LEN * self.reports.len()
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        emit_sr(buf, &self.info, &self.reports)
    }
}

/// An owned receiver report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiverReportRepr {
    pub ssrc: Ssrc,
    pub reports: Vec<ReportBlockRepr>,
}

impl ReceiverReportRepr {
    pub fn parse<T: AsRef<[u8]>>(rr: &ReceiverReport<T>) -> Self {
        Self {
            ssrc: rr.ssrc(),
            reports: rr.report_blocks().map(|b| b.to_repr()).collect(),
        }
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + 4 + BLOCK_LEN * self.reports.len()
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        emit_rr(buf, self.ssrc, &self.reports)
    }
}

fn emit_blocks(b: &mut [u8], blocks: &[ReportBlockRepr]) {
    for (chunk, block) in b.chunks_exact_mut(BLOCK_LEN).zip(blocks) {
        block.emit(chunk);
    }
}

/// Writes a sender report with up to 31 report blocks. Does not allocate.
pub fn emit_sr(buf: &mut [u8], info: &SenderInfo, blocks: &[ReportBlockRepr]) -> Result<usize> {
    if blocks.len() > MAX_BLOCKS {
        return Err(Error::TooLarge);
    }
    let len = HEADER_LEN + SENDER_INFO_LEN + BLOCK_LEN * blocks.len();
    let b = dest(buf, len)?;
    write_header(b, false, blocks.len() as u8, PT_SR, len);
    wr32(b, 4, info.ssrc.0);
    wr32(b, 8, (info.ntp_timestamp >> 32) as u32);
    wr32(b, 12, info.ntp_timestamp as u32);
    wr32(b, 16, info.rtp_timestamp);
    wr32(b, 20, info.packet_count);
    wr32(b, 24, info.octet_count);
    emit_blocks(&mut b[HEADER_LEN + SENDER_INFO_LEN..], blocks);
    Ok(len)
}

/// Writes a receiver report with up to 31 report blocks. Does not allocate.
pub fn emit_rr(buf: &mut [u8], ssrc: Ssrc, blocks: &[ReportBlockRepr]) -> Result<usize> {
    if blocks.len() > MAX_BLOCKS {
        return Err(Error::TooLarge);
    }
    let len = HEADER_LEN + 4 + BLOCK_LEN * blocks.len();
    let b = dest(buf, len)?;
    write_header(b, false, blocks.len() as u8, PT_RR, len);
    wr32(b, 4, ssrc.0);
    emit_blocks(&mut b[HEADER_LEN + 4..], blocks);
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SR from SSRC 0x11223344 with one report block on 0xaabbccdd.
    const SR: [u8; 52] = [
        0x81, 200, 0x00, 0x0c, // V=2 RC=1 PT=200 len=12
        0x11, 0x22, 0x33, 0x44, // ssrc
        0xe8, 0x4c, 0x2a, 0x10, 0x80, 0x00, 0x00, 0x00, // ntp
        0x00, 0x01, 0xe2, 0x40, // rtp ts 123456
        0x00, 0x00, 0x00, 0x64, // packets 100
        0x00, 0x00, 0x27, 0x10, // octets 10000
        0xaa, 0xbb, 0xcc, 0xdd, // block ssrc
        0x40, 0xff, 0xff, 0xfe, // fraction 64, cumulative -2
        0x00, 0x01, 0x03, 0xe8, // ext highest seq
        0x00, 0x00, 0x00, 0x20, // jitter 32
        0x4c, 0x2a, 0x10, 0x80, // lsr
        0x00, 0x01, 0x80, 0x00, // dlsr 1.5 s
    ];

    #[test]
    fn sr_fixture_parses_and_round_trips() {
        let sr = SenderReport::new_checked(&SR[..]).unwrap();
        assert_eq!(sr.ssrc(), Ssrc(0x1122_3344));
        assert_eq!(sr.ntp_timestamp(), 0xe84c_2a10_8000_0000);
        assert_eq!(sr.rtp_timestamp(), 123_456);
        assert_eq!((sr.packet_count(), sr.octet_count()), (100, 10_000));
        let blocks: Vec<_> = sr.report_blocks().collect();
        assert_eq!(blocks.len(), 1);
        let b = blocks[0];
        assert_eq!(b.ssrc(), Ssrc(0xaabb_ccdd));
        assert_eq!(b.fraction_lost(), 64);
        assert_eq!(b.cumulative_lost(), -2);
        assert_eq!(b.ext_highest_seq(), 0x1_03e8);
        assert_eq!(b.jitter(), 32);
        assert_eq!(b.lsr(), 0x4c2a_1080);
        assert_eq!(b.dlsr(), 0x1_8000);
        let repr = SenderReportRepr::parse(&sr);
        assert_eq!(repr.buffer_len(), SR.len());
        let mut out = [0u8; 64];
        assert_eq!(repr.emit(&mut out), Ok(SR.len()));
        assert_eq!(&out[..SR.len()], &SR[..]);
    }

    #[test]
    fn sr_setters_rewrite_in_place() {
        let mut buf = SR;
        let mut sr = SenderReport::new_checked(&mut buf[..]).unwrap();
        sr.set_ssrc(Ssrc(7));
        sr.set_rtp_timestamp(0xdead_beef);
        sr.set_ntp_timestamp(0x0102_0304_0506_0708);
        assert_eq!(sr.ssrc(), Ssrc(7));
        assert_eq!(sr.rtp_timestamp(), 0xdead_beef);
        assert_eq!(sr.ntp_timestamp(), 0x0102_0304_0506_0708);
        assert_eq!(&buf[28..], &SR[28..]);
    }

    #[test]
    fn rr_fixture_parses_and_round_trips() {
        // RR from 0x01020304 reporting on two sources.
        let mut rr = vec![0x82, 201, 0x00, 0x0d, 0x01, 0x02, 0x03, 0x04];
        rr.extend_from_slice(&SR[28..]);
        rr.extend_from_slice(&[
            0x00, 0x00, 0x00, 0x09, 0x00, 0x7f, 0xff, 0xff, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0,
            0, 0, 0,
        ]);
        let view = ReceiverReport::new_checked(&rr[..]).unwrap();
        assert_eq!(view.ssrc(), Ssrc(0x0102_0304));
        let blocks: Vec<_> = view.report_blocks().map(|b| b.to_repr()).collect();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[1].ssrc, Ssrc(9));
        assert_eq!(blocks[1].cumulative_lost, (1 << 23) - 1);
        let repr = ReceiverReportRepr::parse(&view);
        let mut out = vec![0u8; repr.buffer_len()];
        assert_eq!(repr.emit(&mut out), Ok(rr.len()));
        assert_eq!(out, rr);
    }

    #[test]
    fn report_count_past_body_is_rejected() {
        let mut bad = SR;
        bad[0] = 0x82; // claims two blocks, holds one
        assert_eq!(
            SenderReport::new_checked(&bad[..]).err(),
            Some(Error::BadLength)
        );
    }

    #[test]
    fn emit_checks_buffer_and_count() {
        let mut small = [0u8; 27];
        assert_eq!(
            emit_sr(&mut small, &SenderInfo::default(), &[]),
            Err(Error::BufferTooSmall)
        );
        let many = [ReportBlockRepr::default(); 32];
        let mut big = [0u8; 1024];
        assert_eq!(emit_rr(&mut big, Ssrc(1), &many), Err(Error::TooLarge));
        assert_eq!(emit_rr(&mut big, Ssrc(1), &many[..31]), Ok(8 + 31 * 24));
    }

    #[test]
    fn cumulative_lost_is_clamped_to_24_bits() {
        let block = ReportBlockRepr {
            cumulative_lost: -10_000_000,
            ..Default::default()
        };
        let mut out = [0u8; 32];
        emit_rr(&mut out, Ssrc(1), &[block]).unwrap();
        let rr = ReceiverReport::new_checked(&out[..]).unwrap();
        assert_eq!(
            rr.report_blocks().next().unwrap().cumulative_lost(),
            -(1 << 23)
        );
    }
}
