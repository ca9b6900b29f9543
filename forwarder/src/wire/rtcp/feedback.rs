//! RFC 4585 feedback the forwarder acts on: generic NACK, PLI, FIR (RFC 5104) and REMB
//! (draft-alvestrand-rmcat-remb-03).
//!
//! Every feedback body starts with the sender and media SSRCs, which the forwarder
//! rewrites in place when it relays feedback from a subscriber to a publisher. NACK and PLI
//! are also *generated* on the forwarding path, so [`emit_nack`] and [`emit_pli`] write
//! straight into a caller buffer from borrowed inputs. NACK loss lists are encoded greedily
//! as PID + 16-bit BLP pairs: given sequence numbers in ascending (wrapping) order, that
//! yields the fewest pairs.

use super::{
    check, dest, rd32, wr16, wr32, write_header, FMT_AFB, FMT_FIR, FMT_NACK, FMT_PLI, HEADER_LEN,
    PT_PSFB, PT_RTPFB,
};
use crate::ids::Ssrc;
use crate::wire::{Error, Result};

/// Header plus sender and media SSRC.
const FB_LEN: usize = HEADER_LEN + 8;

/// A generic NACK (RTPFB, FMT 1).
#[derive(Debug, Clone)]
pub struct Nack<T> {
    buffer: T,
    end: usize,
}

feedback_ssrcs!(Nack);

impl<T: AsRef<[u8]>> Nack<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        let (_, end) = check(buffer.as_ref(), PT_RTPFB, Some(FMT_NACK))?;
        if end < FB_LEN || (end - FB_LEN) % 4 != 0 {
            return Err(Error::BadLength);
        }
        Ok(Self { buffer, end })
    }

    /// The raw (PID, BLP) pairs.
    pub fn pairs(&self) -> NackPairs<'_> {
        NackPairs {
            rest: self.buffer.as_ref().get(FB_LEN..self.end).unwrap_or(&[]),
        }
    }

    /// Every sequence number the packet reports lost, in packet order.
    pub fn lost(&self) -> NackLost<'_> {
        NackLost {
            pairs: self.pairs(),
            pid: 0,
            blp: 0,
            bit: 17,
        }
    }
}

/// Iterator over the (PID, BLP) pairs of a NACK.
#[derive(Debug, Clone)]
pub struct NackPairs<'a> {
    rest: &'a [u8],
}

impl Iterator for NackPairs<'_> {
    type Item = (u16, u16);

    fn next(&mut self) -> Option<(u16, u16)> {
        let (&[a, b, c, d], rest) = self.rest.split_first_chunk::<4>()?;
        self.rest = rest;
        Some((u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])))
    }
}

/// Iterator over the lost sequence numbers of a NACK.
#[derive(Debug, Clone)]
pub struct NackLost<'a> {
    pairs: NackPairs<'a>,
    pid: u16,
    blp: u16,
    /// 0 yields the PID, 1..=16 the BLP bits, 17 moves to the next pair.
    bit: u8,
}

impl Iterator for NackLost<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        loop {
            if self.bit > 16 {
                (self.pid, self.blp) = self.pairs.next()?;
                self.bit = 0;
            }
            let bit = self.bit;
            self.bit += 1;
            if bit == 0 {
                return Some(self.pid);
            }
            if self.blp & (1 << (bit - 1)) != 0 {
                return Some(self.pid.wrapping_add(u16::from(bit)));
            }
        }
    }
}

/// Runs the greedy PID/BLP encoding of `lost`, calling `out` once per finished pair.
fn nack_pairs(lost: &[u16], mut out: impl FnMut(u16, u16)) {
    let mut current: Option<(u16, u16)> = None;
    for &seq in lost {
        match &mut current {
            Some((pid, blp)) => match seq.wrapping_sub(*pid) {
                0 => {}
                d @ 1..=16 => *blp |= 1 << (d - 1),
                _ => {
                    out(*pid, *blp);
                    current = Some((seq, 0));
                }
            },
            None => current = Some((seq, 0)),
        }
    }
    if let Some((pid, blp)) = current {
        out(pid, blp);
    }
}

/// Bytes [`emit_nack`] will write for `lost`.
pub fn nack_buffer_len(lost: &[u16]) -> usize {
    let mut n = 0;
    nack_pairs(lost, |_, _| n += 1);
    FB_LEN + 4 * n
}

/// Writes a generic NACK for `lost` into `buf` without allocating. Any order is encoded
/// correctly; ascending wrapping order (e.g. 65534, 65535, 0) gives the fewest pairs.
/// Fails with `BadField` if `lost` is empty (RFC 4585 requires at least one pair).
pub fn emit_nack(buf: &mut [u8], sender: Ssrc, media: Ssrc, lost: &[u16]) -> Result<usize> {
    if lost.is_empty() {
        return Err(Error::BadField);
    }
    let len = nack_buffer_len(lost);
    if len > usize::from(u16::MAX) * 4 {
        return Err(Error::TooLarge);
    }
    let b = dest(buf, len)?;
    write_header(b, false, FMT_NACK, PT_RTPFB, len);
    wr32(b, 4, sender.0);
    wr32(b, 8, media.0);
    let mut at = FB_LEN;
    nack_pairs(lost, |pid, blp| {
        wr16(b, at, pid);
        wr16(b, at + 2, blp);
        at += 4;
    });
    Ok(len)
}

/// An owned generic NACK. `lost` is kept deduplicated and in ascending wrapping order,
/// starting after the widest gap, so that emitting it uses the fewest pairs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NackRepr {
    pub sender_ssrc: Ssrc,
    pub media_ssrc: Ssrc,
    lost: Vec<u16>,
}

impl NackRepr {
    pub fn new(sender_ssrc: Ssrc, media_ssrc: Ssrc, lost: impl IntoIterator<Item = u16>) -> Self {
        let mut lost: Vec<u16> = lost.into_iter().collect();
        lost.sort_unstable();
        lost.dedup();
        // Rotate so the list starts just after the widest gap on the 16-bit circle.
        if let (Some(&first), Some(&last)) = (lost.first(), lost.last()) {
            let mut best = (u32::from(first) + 65536 - u32::from(last), 0);
            for (i, w) in lost.windows(2).enumerate() {
                let gap = u32::from(w[1] - w[0]);
                if gap > best.0 {
                    best = (gap, i + 1);
                }
            }
            lost.rotate_left(best.1);
        }
        Self {
            sender_ssrc,
            media_ssrc,
            lost,
        }
    }

    pub fn parse<T: AsRef<[u8]>>(nack: &Nack<T>) -> Self {
        Self::new(nack.sender_ssrc(), nack.media_ssrc(), nack.lost())
    }

    /// The lost sequence numbers in emit order.
    pub fn lost(&self) -> &[u16] {
        &self.lost
    }

    pub fn buffer_len(&self) -> usize {
        nack_buffer_len(&self.lost)
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        emit_nack(buf, self.sender_ssrc, self.media_ssrc, &self.lost)
    }
}

/// A picture loss indication (PSFB, FMT 1). Its FCI is empty.
#[derive(Debug, Clone)]
pub struct Pli<T> {
    buffer: T,
}

feedback_ssrcs!(Pli);

impl<T: AsRef<[u8]>> Pli<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        let (_, end) = check(buffer.as_ref(), PT_PSFB, Some(FMT_PLI))?;
        if end < FB_LEN {
            return Err(Error::BadLength);
        }
        Ok(Self { buffer })
    }
}

/// Writes a PLI asking `media`'s sender for a keyframe. Does not allocate.
pub fn emit_pli(buf: &mut [u8], sender: Ssrc, media: Ssrc) -> Result<usize> {
    let b = dest(buf, FB_LEN)?;
    write_header(b, false, FMT_PLI, PT_PSFB, FB_LEN);
    wr32(b, 4, sender.0);
    wr32(b, 8, media.0);
    Ok(FB_LEN)
}

/// An owned PLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PliRepr {
    pub sender_ssrc: Ssrc,
    pub media_ssrc: Ssrc,
}

impl PliRepr {
    pub fn parse<T: AsRef<[u8]>>(pli: &Pli<T>) -> Self {
        Self {
            sender_ssrc: pli.sender_ssrc(),
            media_ssrc: pli.media_ssrc(),
        }
    }

    pub fn buffer_len(&self) -> usize {
        FB_LEN
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        emit_pli(buf, self.sender_ssrc, self.media_ssrc)
    }
}

const FIR_ENTRY_LEN: usize = 8;

/// A full intra request (PSFB, FMT 4, RFC 5104 §4.3.1).
///
/// The header's media SSRC is unused (zero) in a FIR: the sources asked for a keyframe are
/// named in the entries, so a relay rewrites them with [`Fir::set_entry_ssrc`].
#[derive(Debug, Clone)]
pub struct Fir<T> {
    buffer: T,
    end: usize,
}

feedback_ssrcs!(Fir);

impl<T: AsRef<[u8]>> Fir<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        let (_, end) = check(buffer.as_ref(), PT_PSFB, Some(FMT_FIR))?;
        if end < FB_LEN || (end - FB_LEN) % FIR_ENTRY_LEN != 0 {
            return Err(Error::BadLength);
        }
        Ok(Self { buffer, end })
    }

    pub fn entries(&self) -> FirEntries<'_> {
        FirEntries {
            rest: self.buffer.as_ref().get(FB_LEN..self.end).unwrap_or(&[]),
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Fir<T> {
    /// Rewrites the SSRC of entry `index`; `BadField` if there is no such entry.
    pub fn set_entry_ssrc(&mut self, index: usize, ssrc: Ssrc) -> Result<()> {
        let at = FB_LEN + index.checked_mul(FIR_ENTRY_LEN).ok_or(Error::BadField)?;
        if at + FIR_ENTRY_LEN > self.end {
            return Err(Error::BadField);
        }
        wr32(self.buffer.as_mut(), at, ssrc.0);
        Ok(())
    }
}

/// One FIR entry: the source to refresh and the request's command sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FirEntry {
    pub ssrc: Ssrc,
    pub seq_nr: u8,
}

/// Iterator over FIR entries.
#[derive(Debug, Clone)]
pub struct FirEntries<'a> {
    rest: &'a [u8],
}

impl Iterator for FirEntries<'_> {
    type Item = FirEntry;

    fn next(&mut self) -> Option<FirEntry> {
        let (e, rest) = self.rest.split_first_chunk::<FIR_ENTRY_LEN>()?;
        self.rest = rest;
        Some(FirEntry {
            ssrc: Ssrc(rd32(e, 0)),
            seq_nr: e[4],
        })
    }
}

/// Writes a FIR with one entry asking `media` for a keyframe. Does not allocate.
pub fn emit_fir(buf: &mut [u8], sender: Ssrc, media: Ssrc, seq_nr: u8) -> Result<usize> {
    FirRepr::emit_entries(
        buf,
        sender,
        Ssrc(0),
        &[FirEntry {
            ssrc: media,
            seq_nr,
        }],
    )
}

/// An owned FIR.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FirRepr {
    pub sender_ssrc: Ssrc,
    /// Zero on the wire per RFC 5104; kept so that parse → emit is exact.
    pub media_ssrc: Ssrc,
    pub entries: Vec<FirEntry>,
}

impl FirRepr {
    pub fn parse<T: AsRef<[u8]>>(fir: &Fir<T>) -> Self {
        Self {
            sender_ssrc: fir.sender_ssrc(),
            media_ssrc: fir.media_ssrc(),
            entries: fir.entries().collect(),
        }
    }

    pub fn buffer_len(&self) -> usize {
        FB_LEN + FIR_ENTRY_LEN * self.entries.len()
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        Self::emit_entries(buf, self.sender_ssrc, self.media_ssrc, &self.entries)
    }

    fn emit_entries(buf: &mut [u8], sender: Ssrc, media: Ssrc, e: &[FirEntry]) -> Result<usize> {
        let len = FB_LEN + FIR_ENTRY_LEN * e.len();
        if len > usize::from(u16::MAX) * 4 {
            return Err(Error::TooLarge);
        }
        let b = dest(buf, len)?;
        write_header(b, false, FMT_FIR, PT_PSFB, len);
        wr32(b, 4, sender.0);
        wr32(b, 8, media.0);
        for (out, entry) in b[FB_LEN..].chunks_exact_mut(FIR_ENTRY_LEN).zip(e) {
            wr32(out, 0, entry.ssrc.0);
            wr32(out, 4, u32::from(entry.seq_nr) << 24);
        }
        Ok(len)
    }
}

const REMB_LEN: usize = FB_LEN + 8;
const MANTISSA_BITS: u32 = 18;

/// Receiver-estimated maximum bitrate (PSFB, FMT 15, FCI tagged "REMB").
#[derive(Debug, Clone)]
pub struct Remb<T> {
    buffer: T,
}

feedback_ssrcs!(Remb);

impl<T: AsRef<[u8]>> Remb<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        let (_, end) = check(b, PT_PSFB, Some(FMT_AFB))?;
        if end < REMB_LEN {
            return Err(Error::BadLength);
        }
        if b.get(FB_LEN..FB_LEN + 4) != Some(b"REMB") {
            return Err(Error::BadField);
        }
        if REMB_LEN + 4 * usize::from(b[FB_LEN + 4]) > end {
            return Err(Error::BadLength);
        }
        Ok(Self { buffer })
    }

    /// The estimate in bits per second (mantissa × 2^exponent), saturating at `u64::MAX`.
    pub fn bitrate_bps(&self) -> u64 {
        let word = rd32(self.buffer.as_ref(), FB_LEN + 4);
        let exp = (word >> MANTISSA_BITS) & 0x3f;
        let mantissa = u64::from(word & ((1 << MANTISSA_BITS) - 1));
        if mantissa != 0 && mantissa.leading_zeros() < exp {
            u64::MAX
        } else {
            mantissa << exp
        }
    }

    /// The media sources the estimate applies to.
    pub fn ssrcs(&self) -> RembSsrcs<'_> {
        let b = self.buffer.as_ref();
        let n = usize::from(b.get(FB_LEN + 4).copied().unwrap_or(0));
        RembSsrcs {
            rest: b.get(REMB_LEN..REMB_LEN + 4 * n).unwrap_or(&[]),
        }
    }
}

/// Iterator over the SSRCs of a REMB.
#[derive(Debug, Clone)]
pub struct RembSsrcs<'a> {
    rest: &'a [u8],
}

impl Iterator for RembSsrcs<'_> {
    type Item = Ssrc;

    fn next(&mut self) -> Option<Ssrc> {
        let (word, rest) = self.rest.split_first_chunk::<4>()?;
        self.rest = rest;
        Some(Ssrc(u32::from_be_bytes(*word)))
    }
}

/// An owned REMB. The bitrate is rounded down to what an 18-bit mantissa can carry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RembRepr {
    pub sender_ssrc: Ssrc,
    pub bitrate_bps: u64,
    /// At most 255.
    pub ssrcs: Vec<Ssrc>,
}

impl RembRepr {
    pub fn parse<T: AsRef<[u8]>>(remb: &Remb<T>) -> Self {
        Self {
            sender_ssrc: remb.sender_ssrc(),
            bitrate_bps: remb.bitrate_bps(),
            ssrcs: remb.ssrcs().collect(),
        }
    }

    pub fn buffer_len(&self) -> usize {
        REMB_LEN + 4 * self.ssrcs.len()
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        if self.ssrcs.len() > 255 {
            return Err(Error::TooLarge);
        }
        let len = self.buffer_len();
        let b = dest(buf, len)?;
        write_header(b, false, FMT_AFB, PT_PSFB, len);
        wr32(b, 4, self.sender_ssrc.0);
        wr32(b, 8, 0);
        b[FB_LEN..FB_LEN + 4].copy_from_slice(b"REMB");
        // The smallest exponent that fits the mantissa loses the fewest low bits.
        let exp = (64 - self.bitrate_bps.leading_zeros()).saturating_sub(MANTISSA_BITS);
        let mantissa = (self.bitrate_bps >> exp) as u32;
        let word = ((self.ssrcs.len() as u32) << 24) | (exp << MANTISSA_BITS) | mantissa;
        wr32(b, FB_LEN + 4, word);
        for (i, ssrc) in self.ssrcs.iter().enumerate() {
            wr32(b, REMB_LEN + 4 * i, ssrc.0);
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::super::rd16;
    use super::*;

    fn pair_at(b: &[u8], at: usize) -> (u16, u16) {
        (rd16(b, at), rd16(b, at + 2))
    }

    /// NACK from 1 about 0x00abcdef: PID 100 with BLP 0x8005 (lost 100, 101, 103, 116),
    /// then PID 65530 with BLP 0x0040 (lost 65530, 1).
    const NACK: [u8; 20] = [
        0x81, 205, 0x00, 0x04, 0, 0, 0, 1, 0x00, 0xab, 0xcd, 0xef, 0x00, 100, 0x80, 0x05, 0xff,
        0xfa, 0x00, 0x40,
    ];

    #[test]
    fn nack_fixture_parses() {
        let nack = Nack::new_checked(&NACK[..]).unwrap();
        assert_eq!(nack.sender_ssrc(), Ssrc(1));
        assert_eq!(nack.media_ssrc(), Ssrc(0x00ab_cdef));
        assert_eq!(
            nack.pairs().collect::<Vec<_>>(),
            vec![(100, 0x8005), (65530, 0x40)]
        );
        assert_eq!(
            nack.lost().collect::<Vec<_>>(),
            vec![100, 101, 103, 116, 65530, 1]
        );
    }

    #[test]
    fn nack_round_trips_in_canonical_order() {
        // Canonical order starts after the widest gap, so the wrap pair comes first.
        let bytes: [u8; 20] = [
            0x81, 205, 0x00, 0x04, 0, 0, 0, 1, 0x00, 0xab, 0xcd, 0xef, 0xff, 0xfa, 0x00, 0x40,
            0x00, 100, 0x80, 0x05,
        ];
        let repr = NackRepr::parse(&Nack::new_checked(&NACK[..]).unwrap());
        assert_eq!(repr.lost(), &[65530, 1, 100, 101, 103, 116]);
        let mut out = [0u8; 20];
        assert_eq!(repr.buffer_len(), 20);
        assert_eq!(repr.emit(&mut out), Ok(20));
        assert_eq!(out, bytes);
        let again = NackRepr::parse(&Nack::new_checked(&out[..]).unwrap());
        assert_eq!(again, repr);
    }

    #[test]
    fn nack_emit_is_minimal_for_ascending_input() {
        let mut out = [0u8; 64];
        let lost: Vec<u16> = (65530..=65535).chain(0..11).collect();
        let n = emit_nack(&mut out, Ssrc(1), Ssrc(2), &lost).unwrap();
        assert_eq!(n, 16);
        assert_eq!(pair_at(&out, 12), (65530, 0xffff));
        assert_eq!(
            emit_nack(&mut out, Ssrc(1), Ssrc(2), &[]),
            Err(Error::BadField)
        );
        assert_eq!(
            emit_nack(&mut out[..15], Ssrc(1), Ssrc(2), &[1]),
            Err(Error::BufferTooSmall)
        );
    }

    #[test]
    fn nack_setters_rewrite_ssrcs() {
        let mut buf = NACK;
        let mut nack = Nack::new_checked(&mut buf[..]).unwrap();
        nack.set_sender_ssrc(Ssrc(9));
        nack.set_media_ssrc(Ssrc(10));
        assert_eq!((nack.sender_ssrc(), nack.media_ssrc()), (Ssrc(9), Ssrc(10)));
        assert_eq!(&buf[12..], &NACK[12..]);
    }

    #[test]
    fn nack_with_ragged_fci_is_rejected() {
        let mut bad = [0u8; 16];
        bad[..12].copy_from_slice(&NACK[..12]);
        bad[3] = 3;
        bad[0] |= 0x20; // padding of 2 leaves a 2-byte FCI
        bad[15] = 2;
        assert_eq!(Nack::new_checked(&bad[..]).err(), Some(Error::BadLength));
    }

    const PLI: [u8; 12] = [0x81, 206, 0x00, 0x02, 0, 0, 0, 1, 0x12, 0x34, 0x56, 0x78];

    #[test]
    fn pli_fixture_round_trips_and_rewrites() {
        let pli = Pli::new_checked(&PLI[..]).unwrap();
        assert_eq!(pli.media_ssrc(), Ssrc(0x1234_5678));
        let repr = PliRepr::parse(&pli);
        let mut out = [0u8; 12];
        assert_eq!(repr.emit(&mut out), Ok(12));
        assert_eq!(out, PLI);
        let mut pli = Pli::new_checked(&mut out[..]).unwrap();
        pli.set_media_ssrc(Ssrc(5));
        pli.set_sender_ssrc(Ssrc(6));
        assert_eq!(&out[4..], &[0, 0, 0, 6, 0, 0, 0, 5]);
    }

    const FIR: [u8; 28] = [
        0x84, 206, 0x00, 0x06, 0, 0, 0, 1, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78, 7, 0, 0, 0, 0, 0, 0,
        9, 255, 0, 0, 0,
    ];

    #[test]
    fn fir_fixture_round_trips_and_rewrites() {
        let fir = Fir::new_checked(&FIR[..]).unwrap();
        assert_eq!(
            fir.entries().collect::<Vec<_>>(),
            vec![
                FirEntry {
                    ssrc: Ssrc(0x1234_5678),
                    seq_nr: 7
                },
                FirEntry {
                    ssrc: Ssrc(9),
                    seq_nr: 255
                }
            ]
        );
        let repr = FirRepr::parse(&fir);
        let mut out = [0u8; 28];
        assert_eq!(repr.emit(&mut out), Ok(28));
        assert_eq!(out, FIR);
        let mut fir = Fir::new_checked(&mut out[..]).unwrap();
        fir.set_entry_ssrc(1, Ssrc(3)).unwrap();
        assert_eq!(fir.set_entry_ssrc(2, Ssrc(3)), Err(Error::BadField));
        assert_eq!(fir.entries().nth(1).unwrap().ssrc, Ssrc(3));
        let mut one = [0u8; 20];
        assert_eq!(emit_fir(&mut one, Ssrc(1), Ssrc(0x1234_5678), 7), Ok(20));
        assert_eq!(&one[4..20], &FIR[4..20]);
    }

    /// REMB from Chrome's layout: 1 SSRC, exponent 3, mantissa 0x3d090 (250000 → 2 Mbps).
    const REMB: [u8; 24] = [
        0x8f, 206, 0x00, 0x05, 0, 0, 0, 1, 0, 0, 0, 0, b'R', b'E', b'M', b'B', 0x01, 0x0f, 0xd0,
        0x90, 0x11, 0x22, 0x33, 0x44,
    ];

    #[test]
    fn remb_fixture_round_trips() {
        let remb = Remb::new_checked(&REMB[..]).unwrap();
        assert_eq!(remb.bitrate_bps(), 250_000 << 3);
        assert_eq!(remb.ssrcs().collect::<Vec<_>>(), vec![Ssrc(0x1122_3344)]);
        let repr = RembRepr::parse(&remb);
        let mut out = [0u8; 24];
        assert_eq!(repr.emit(&mut out), Ok(24));
        assert_eq!(out, REMB);
    }

    #[test]
    fn remb_bitrate_extremes() {
        for bps in [0, 1, (1 << 18) - 1, 1 << 18, u64::MAX] {
            let repr = RembRepr {
                bitrate_bps: bps,
                ..Default::default()
            };
            let mut out = [0u8; 20];
            repr.emit(&mut out).unwrap();
            let got = Remb::new_checked(&out[..]).unwrap().bitrate_bps();
            assert!(got <= bps && bps - got <= bps >> 17, "{bps} → {got}");
        }
        // Exponent 63 with a large mantissa saturates instead of overflowing.
        let mut big = REMB;
        big[17] = 0xff;
        assert_eq!(Remb::new_checked(&big[..]).unwrap().bitrate_bps(), u64::MAX);
    }
}
