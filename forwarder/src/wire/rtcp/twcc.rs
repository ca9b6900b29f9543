//! Transport-wide congestion control feedback (RTPFB, FMT 15;
//! draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1).
//!
//! The FCI reports `packet status count` consecutive transport sequence numbers starting at
//! `base seq`. Their statuses are packed in 16-bit chunks (run-length, or a vector of 14
//! one-bit or 7 two-bit symbols); the receive deltas of received packets follow all chunks,
//! 1 byte for a "small" delta (0..=63.75 ms) or 2 signed bytes for a "large" one, in
//! 250 µs ticks. `Twcc::new_checked` walks every chunk and sizes every delta once, so
//! [`TwccStatuses`] then decodes without checks.
//!
//! The encoder picks chunks the way libwebrtc does (a run when all symbols agree, else a
//! one-bit vector when it fills with small deltas, else a two-bit vector) and aligns with
//! the RTCP padding bit, so feedback captured from Chrome re-emits byte for byte.

use super::{
    check, dest, rd16, rd24s, wr16, wr24, wr32, write_header, FMT_TWCC, HEADER_LEN, PT_RTPFB,
};
use crate::ids::Ssrc;
use crate::wire::{Error, Result};

/// Header, sender and media SSRC, base seq, status count, reference time, fb count.
const FIXED_LEN: usize = HEADER_LEN + 16;
/// Receive deltas are in units of 250 µs.
const TICK_US: i32 = 250;

const NOT_RECEIVED: u8 = 0;
const SMALL: u8 = 1;
const LARGE: u8 = 2;

/// Number of symbols a chunk describes.
fn chunk_len(chunk: u16) -> u16 {
    match chunk >> 14 {
        0 | 1 => chunk & 0x1fff,
        2 => 14,
        _ => 7,
    }
}

/// The `i`-th symbol of a chunk (`i < chunk_len(chunk)`).
fn chunk_symbol(chunk: u16, i: u16) -> u8 {
    let v = match chunk >> 14 {
        0 | 1 => chunk >> 13,
        2 => chunk >> (13 - i.min(13)),
        _ => (chunk >> (12 - 2 * i.min(6))) & 3,
    };
    if chunk >> 14 == 2 {
        (v & 1) as u8
    } else {
        (v & 3) as u8
    }
}

fn delta_size(symbol: u8) -> usize {
    usize::from(symbol.min(LARGE))
}

/// Transport-wide CC feedback.
#[derive(Debug, Clone)]
pub struct Twcc<T> {
    buffer: T,
    end: usize,
}

feedback_ssrcs!(Twcc);

impl<T: AsRef<[u8]>> Twcc<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        let (_, end) = check(b, PT_RTPFB, Some(FMT_TWCC))?;
        if end < FIXED_LEN {
            return Err(Error::BadLength);
        }
        let mut remaining = rd16(b, 14);
        let mut at = FIXED_LEN;
        let mut deltas = 0usize;
        while remaining > 0 {
            if at + 2 > end {
                return Err(Error::Truncated);
            }
            let chunk = rd16(b, at);
            at += 2;
            let take = chunk_len(chunk).min(remaining);
            remaining -= take;
            if chunk >> 14 <= 1 {
                let symbol = chunk_symbol(chunk, 0);
                if symbol > LARGE && take > 0 {
                    return Err(Error::BadField);
                }
                deltas += delta_size(symbol) * usize::from(take);
            } else {
                for i in 0..take {
                    let symbol = chunk_symbol(chunk, i);
                    if symbol > LARGE {
                        return Err(Error::BadField);
                    }
                    deltas += delta_size(symbol);
                }
            }
        }
        if at + deltas > end {
            return Err(Error::Truncated);
        }
        Ok(Self { buffer, end })
    }

    /// Transport sequence number of the first status.
    pub fn base_seq(&self) -> u16 {
        rd16(self.buffer.as_ref(), 12)
    }

    pub fn status_count(&self) -> u16 {
        rd16(self.buffer.as_ref(), 14)
    }

    /// Reference time in 64 ms units (signed 24 bits, sender-chosen epoch).
    pub fn reference_time(&self) -> i32 {
        rd24s(self.buffer.as_ref(), 16)
    }

    /// Reference time in microseconds.
    pub fn reference_time_us(&self) -> i64 {
        i64::from(self.reference_time()) * 64_000
    }

    /// Feedback packet counter, to detect lost feedback.
    pub fn fb_pkt_count(&self) -> u8 {
        self.buffer.as_ref().get(19).copied().unwrap_or(0)
    }

    /// The status of every reported sequence number, in order.
    pub fn statuses(&self) -> TwccStatuses<'_> {
        let buf = self.buffer.as_ref().get(..self.end).unwrap_or(&[]);
        let count = self.status_count();
        // Deltas start after the chunks; find them as `new_checked` did.
        let mut remaining = count;
        let mut at = FIXED_LEN;
        while remaining > 0 && at + 2 <= buf.len() {
            remaining -= chunk_len(rd16(buf, at)).min(remaining);
            at += 2;
        }
        TwccStatuses {
            buf,
            chunk_at: FIXED_LEN,
            delta_at: at,
            remaining: count,
            seq: self.base_seq(),
            chunk: 0,
            idx: 0,
            len: 0,
        }
    }
}

/// One reported packet: its transport sequence number and, if it arrived, its receive
/// delta in microseconds (relative to the previous received packet, or to the reference
/// time for the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketStatus {
    pub seq: u16,
    pub delta_us: Option<i32>,
}

/// Iterator over the packet statuses of a TWCC feedback.
#[derive(Debug, Clone)]
pub struct TwccStatuses<'a> {
    buf: &'a [u8],
    chunk_at: usize,
    delta_at: usize,
    remaining: u16,
    seq: u16,
    chunk: u16,
    idx: u16,
    len: u16,
}

impl Iterator for TwccStatuses<'_> {
    type Item = PacketStatus;

    fn next(&mut self) -> Option<PacketStatus> {
        if self.remaining == 0 {
            return None;
        }
        while self.idx >= self.len {
            if self.chunk_at + 2 > self.buf.len() {
                self.remaining = 0;
                return None;
            }
            self.chunk = rd16(self.buf, self.chunk_at);
            self.chunk_at += 2;
            self.idx = 0;
            self.len = chunk_len(self.chunk);
        }
        let symbol = chunk_symbol(self.chunk, self.idx);
        self.idx += 1;
        self.remaining -= 1;
        let seq = self.seq;
        self.seq = seq.wrapping_add(1);
        let at = self.delta_at;
        let ticks = match symbol {
            SMALL => self.buf.get(at).map(|&v| i32::from(v)),
            LARGE => self
                .buf
                .get(at..at + 2)
                .map(|v| i32::from(i16::from_be_bytes([v[0], v[1]]))),
            _ => None,
        };
        self.delta_at += delta_size(symbol);
        Some(PacketStatus {
            seq,
            delta_us: ticks.map(|t| t * TICK_US),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(usize::from(self.remaining)))
    }
}

/// The symbol for a delta, or `BadField` if it does not fit in a large delta.
fn symbol_for(delta_us: Option<i32>) -> Result<(u8, i32)> {
    let Some(us) = delta_us else {
        return Ok((NOT_RECEIVED, 0));
    };
    let ticks = (i64::from(us) + i64::from(TICK_US / 2)).div_euclid(i64::from(TICK_US));
    if (0..=255).contains(&ticks) {
        Ok((SMALL, ticks as i32))
    } else if (i64::from(i16::MIN)..=i64::from(i16::MAX)).contains(&ticks) {
        Ok((LARGE, ticks as i32))
    } else {
        Err(Error::BadField)
    }
}

/// Packs symbols into chunks. Holds at most one chunk's worth of pending symbols.
#[derive(Debug)]
struct ChunkEncoder {
    /// The first 14 pending symbols; a longer run only needs the first.
    syms: [u8; 14],
    size: u16,
    all_same: bool,
    has_large: bool,
}

impl ChunkEncoder {
    fn new() -> Self {
        Self {
            syms: [0; 14],
            size: 0,
            all_same: true,
            has_large: false,
        }
    }

    fn can_add(&self, s: u8) -> bool {
        let n = self.size;
        n < 7
            || (n < 14 && !self.has_large && s != LARGE)
            || (n < 0x1fff && self.all_same && self.syms[0] == s)
    }

    fn add(&mut self, s: u8, out: &mut impl FnMut(u16)) {
        if !self.can_add(s) {
            self.flush_full(out);
        }
        let n = usize::from(self.size);
        if n < 14 {
            self.syms[n] = s;
        }
        self.all_same = n == 0 || (self.all_same && s == self.syms[0]);
        self.has_large |= s == LARGE;
        self.size += 1;
    }

    fn run(&self) -> u16 {
        (u16::from(self.syms[0]) << 13) | self.size
    }

    fn one_bit(&self, n: usize) -> u16 {
        let bits = self.syms[..n]
            .iter()
            .enumerate()
            .fold(0, |acc, (i, &s)| acc | (u16::from(s & 1) << (13 - i)));
        0x8000 | bits
    }

    fn two_bit(&self, n: usize) -> u16 {
        let bits = self.syms[..n]
            .iter()
            .enumerate()
            .fold(0, |acc, (i, &s)| acc | (u16::from(s & 3) << (12 - 2 * i)));
        0xc000 | bits
    }

    fn reset(&mut self) {
        *self = Self::new();
    }

    /// Emits a chunk when the next symbol does not fit, keeping any symbols left over.
    fn flush_full(&mut self, out: &mut impl FnMut(u16)) {
        if self.all_same {
            out(self.run());
            self.reset();
        } else if self.size == 14 {
            out(self.one_bit(14));
            self.reset();
        } else {
            out(self.two_bit(7));
            let left = usize::from(self.size) - 7;
            self.syms.copy_within(7..7 + left, 0);
            self.size = left as u16;
            let pending = &self.syms[..left];
            self.all_same = pending.iter().all(|&s| s == pending[0]);
            self.has_large = pending.contains(&LARGE);
        }
    }

    fn finish(&mut self, out: &mut impl FnMut(u16)) {
        if self.size == 0 {
            return;
        }
        let n = usize::from(self.size);
        out(if self.all_same {
            self.run()
        } else if n <= 7 {
            self.two_bit(n)
        } else {
            self.one_bit(n)
        });
        self.reset();
    }
}

/// An owned TWCC feedback.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TwccRepr {
    pub sender_ssrc: Ssrc,
    pub media_ssrc: Ssrc,
    pub base_seq: u16,
    /// 64 ms units; must fit in signed 24 bits.
    pub reference_time: i32,
    pub fb_pkt_count: u8,
    /// One entry per sequence number from `base_seq`: the receive delta in µs (rounded to
    /// 250 µs on emit, within ±8.19 s), or `None` if not received.
    pub deltas_us: Vec<Option<i32>>,
}

impl TwccRepr {
    /// Builds feedback from `(seq, delta)` pairs in ascending wrapping order, spanning less
    /// than half the sequence space; gaps become "not received". `BadField` otherwise.
    pub fn from_packets(
        sender_ssrc: Ssrc,
        media_ssrc: Ssrc,
        reference_time: i32,
        fb_pkt_count: u8,
        packets: &[(u16, Option<i32>)],
    ) -> Result<Self> {
        let base_seq = packets.first().map_or(0, |p| p.0);
        let mut deltas_us = Vec::new();
        for &(seq, delta) in packets {
            let offset = usize::from(seq.wrapping_sub(base_seq));
            // A step back, or forward by half the number space or more, breaks the order.
            if offset < deltas_us.len() || offset >= 1 << 15 {
                return Err(Error::BadField);
            }
            deltas_us.resize(offset, None);
            deltas_us.push(delta);
        }
        Ok(Self {
            sender_ssrc,
            media_ssrc,
            base_seq,
            reference_time,
            fb_pkt_count,
            deltas_us,
        })
    }

    pub fn parse<T: AsRef<[u8]>>(twcc: &Twcc<T>) -> Self {
        Self {
            sender_ssrc: twcc.sender_ssrc(),
            media_ssrc: twcc.media_ssrc(),
            base_seq: twcc.base_seq(),
            reference_time: twcc.reference_time(),
            fb_pkt_count: twcc.fb_pkt_count(),
            deltas_us: twcc.statuses().map(|s| s.delta_us).collect(),
        }
    }

    pub fn buffer_len(&self) -> usize {
        unpadded_len(&self.deltas_us).next_multiple_of(4)
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        emit_feedback(
            buf,
            FeedbackHeader {
                sender_ssrc: self.sender_ssrc,
                media_ssrc: self.media_ssrc,
                base_seq: self.base_seq,
                reference_time: self.reference_time,
                fb_pkt_count: self.fb_pkt_count,
            },
            &self.deltas_us,
        )
    }
}

/// The fixed fields of a feedback packet, for [`emit_feedback`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FeedbackHeader {
    pub sender_ssrc: Ssrc,
    pub media_ssrc: Ssrc,
    pub base_seq: u16,
    /// 64 ms units; must fit in signed 24 bits.
    pub reference_time: i32,
    pub fb_pkt_count: u8,
}

fn symbols(deltas_us: &[Option<i32>]) -> impl Iterator<Item = u8> + '_ {
    deltas_us
        .iter()
        .map(|d| symbol_for(*d).map_or(LARGE, |s| s.0))
}

/// Length without alignment padding.
fn unpadded_len(deltas_us: &[Option<i32>]) -> usize {
    let mut chunks = 0;
    let mut count = |_| chunks += 1;
    let mut enc = ChunkEncoder::new();
    let mut deltas = 0;
    for s in symbols(deltas_us) {
        deltas += delta_size(s);
        enc.add(s, &mut count);
    }
    enc.finish(&mut count);
    FIXED_LEN + 2 * chunks + deltas
}

/// Writes a feedback packet reporting `deltas_us` (one entry per sequence number from
/// `h.base_seq`, as in [`TwccRepr::deltas_us`]) without allocating: the timer path sends
/// feedback to publishers with it.
pub fn emit_feedback(
    buf: &mut [u8],
    h: FeedbackHeader,
    deltas_us: &[Option<i32>],
) -> Result<usize> {
    if deltas_us.len() > usize::from(u16::MAX) {
        return Err(Error::TooLarge);
    }
    if !(-(1 << 23)..1 << 23).contains(&h.reference_time) {
        return Err(Error::BadField);
    }
    for d in deltas_us {
        symbol_for(*d)?;
    }
    let unpadded = unpadded_len(deltas_us);
    let len = unpadded.next_multiple_of(4);
    if len > usize::from(u16::MAX) * 4 {
        return Err(Error::TooLarge);
    }
    let b = dest(buf, len)?;
    b.fill(0);
    let pad = len - unpadded;
    write_header(b, pad > 0, FMT_TWCC, PT_RTPFB, len);
    wr32(b, 4, h.sender_ssrc.0);
    wr32(b, 8, h.media_ssrc.0);
    wr16(b, 12, h.base_seq);
    wr16(b, 14, deltas_us.len() as u16);
    wr24(b, 16, h.reference_time);
    b[19] = h.fb_pkt_count;
    let mut at = FIXED_LEN;
    let mut enc = ChunkEncoder::new();
    let mut put = |chunk| {
        wr16(b, at, chunk);
        at += 2;
    };
    for s in symbols(deltas_us) {
        enc.add(s, &mut put);
    }
    enc.finish(&mut put);
    for d in deltas_us {
        match symbol_for(*d)? {
            (SMALL, t) => {
                b[at] = t as u8;
                at += 1;
            }
            (LARGE, t) => {
                wr16(b, at, t as i16 as u16);
                at += 2;
            }
            _ => {}
        }
    }
    if pad > 0 {
        b[len - 1] = pad as u8;
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chrome TWCC feedback captured with Wireshark (olivermichel/webrtc-analysis
    /// test/include/data.h): one run-length chunk of 9 small deltas, aligned by padding.
    const CHROME: [u8; 32] = [
        0xaf, 0xcd, 0x00, 0x07, 0x00, 0x00, 0x00, 0x01, 0xdd, 0x58, 0x6e, 0xb6, 0x00, 0x01, 0x00,
        0x09, 0x5e, 0x91, 0x10, 0x00, 0x20, 0x09, 0x1c, 0x0c, 0x2c, 0x38, 0x00, 0x04, 0x00, 0x08,
        0x18, 0x01,
    ];

    #[test]
    fn chrome_capture_parses_and_round_trips() {
        let twcc = Twcc::new_checked(&CHROME[..]).unwrap();
        assert_eq!(twcc.sender_ssrc(), Ssrc(1));
        assert_eq!(twcc.media_ssrc(), Ssrc(0xdd58_6eb6));
        assert_eq!((twcc.base_seq(), twcc.status_count()), (1, 9));
        assert_eq!(twcc.reference_time(), 6_197_520);
        assert_eq!(twcc.fb_pkt_count(), 0);
        let ms: Vec<_> = twcc
            .statuses()
            .map(|s| (s.seq, s.delta_us.unwrap() / 250))
            .collect();
        assert_eq!(
            ms,
            vec![
                (1, 28),
                (2, 12),
                (3, 44),
                (4, 56),
                (5, 0),
                (6, 4),
                (7, 0),
                (8, 8),
                (9, 24)
            ]
        );
        let repr = TwccRepr::parse(&twcc);
        assert_eq!(repr.buffer_len(), 32);
        let mut out = [0xeeu8; 32];
        assert_eq!(repr.emit(&mut out), Ok(32));
        assert_eq!(out, CHROME);
    }

    #[test]
    fn mixed_chunks_and_large_deltas() {
        // 3 received, 2 lost, a large negative delta, 20 lost, then 14 small/lost.
        let mut packets = vec![(100u16, Some(1000)), (101, Some(250)), (102, Some(0))];
        packets.push((105, Some(-250_000)));
        for i in 0..14u16 {
            packets.push((126 + i, (i % 3 != 0).then_some(i32::from(i) * 250)));
        }
        let repr = TwccRepr::from_packets(Ssrc(5), Ssrc(6), -3, 200, &packets).unwrap();
        assert_eq!(repr.deltas_us.len(), 40);
        let mut out = vec![0u8; repr.buffer_len()];
        let n = repr.emit(&mut out).unwrap();
        let twcc = Twcc::new_checked(&out[..n]).unwrap();
        assert_eq!(twcc.reference_time(), -3);
        let back = TwccRepr::parse(&twcc);
        assert_eq!(back, repr);
        let got: Vec<_> = twcc.statuses().filter(|s| s.delta_us.is_some()).collect();
        assert_eq!(got.len(), 3 + 1 + 9);
        assert_eq!(
            got[3],
            PacketStatus {
                seq: 105,
                delta_us: Some(-250_000)
            }
        );
        // First chunk is a two-bit vector (large delta among the first seven).
        assert_eq!(rd16(&out, 20) >> 14, 3);
    }

    #[test]
    fn encoder_matches_draft_examples() {
        // §3.1.3: a run of 221 "not received" is 0x00dd.
        let mut chunks = vec![];
        let mut enc = ChunkEncoder::new();
        for _ in 0..221 {
            enc.add(NOT_RECEIVED, &mut |c| chunks.push(c));
        }
        enc.finish(&mut |c| chunks.push(c));
        assert_eq!(chunks, vec![0x00dd]);
        // Fourteen mixed small/lost symbols fill one one-bit vector.
        let syms = [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let mut chunks = vec![];
        let mut enc = ChunkEncoder::new();
        for s in syms {
            enc.add(s, &mut |c| chunks.push(c));
        }
        enc.finish(&mut |c| chunks.push(c));
        assert_eq!(chunks, vec![0b1001_0000_0000_0001]);
    }

    #[test]
    fn reserved_symbol_and_short_deltas_are_rejected() {
        let mut bad = CHROME;
        bad[20] = 0x60; // run of symbol 3
        assert_eq!(Twcc::new_checked(&bad[..]).err(), Some(Error::BadField));
        let mut short = CHROME;
        short[15] = 10; // ten statuses in the run, but only nine delta bytes
        short[21] = 0x0a;
        assert_eq!(Twcc::new_checked(&short[..]).err(), Some(Error::Truncated));
    }

    #[test]
    fn out_of_order_or_out_of_range_input_is_rejected() {
        let r = TwccRepr::from_packets(Ssrc(1), Ssrc(2), 0, 0, &[(5, None), (4, None)]);
        assert_eq!(r.err(), Some(Error::BadField));
        let r = TwccRepr::from_packets(Ssrc(1), Ssrc(2), 0, 0, &[(5, Some(9_000_000))]).unwrap();
        assert_eq!(r.emit(&mut [0u8; 64]), Err(Error::BadField));
    }
}
