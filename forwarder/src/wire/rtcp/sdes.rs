//! Source description (RFC 3550 §6.5) and goodbye (§6.6) packets.
//!
//! SDES chunks are variable length, so `Sdes::new_checked` walks every chunk and item once;
//! afterwards [`SdesChunks`] and [`SdesItems`] iterate without checks or failure. Each chunk
//! ends with a null item type and is zero-padded to a 32-bit boundary. A BYE's optional
//! reason is a length-prefixed string after the SSRC list.

use super::{check, dest, rd32, wr32, write_header, HEADER_LEN, PT_BYE, PT_SDES};
use crate::ids::Ssrc;
use crate::wire::{Error, Result};

/// SDES item type of the canonical name, the only item WebRTC endpoints send.
pub const SDES_CNAME: u8 = 1;

const MAX_COUNT: usize = 31;

/// Walks one chunk starting at `at` (4-aligned); returns where its items start and end
/// (the null terminator) and where the next chunk starts.
fn walk_chunk(b: &[u8], at: usize, end: usize) -> Result<(usize, usize, usize)> {
    if at + 4 > end {
        return Err(Error::Truncated);
    }
    let items = at + 4;
    let mut p = items;
    loop {
        match b.get(p).copied() {
            _ if p >= end => return Err(Error::Truncated),
            Some(0) => break,
            Some(_) => {
                let len = usize::from(*b.get(p + 1).ok_or(Error::Truncated)?);
                p += 2 + len;
            }
            None => return Err(Error::Truncated),
        }
    }
    // The terminator is at `p`; the next chunk starts on the following word boundary.
    let next = (p + 1).next_multiple_of(4);
    if next > end {
        return Err(Error::Truncated);
    }
    Ok((items, p, next))
}

/// A source description packet (PT 202).
#[derive(Debug, Clone)]
pub struct Sdes<T> {
    buffer: T,
    end: usize,
}

impl<T: AsRef<[u8]>> Sdes<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        let (sc, end) = check(b, PT_SDES, None)?;
        let mut at = HEADER_LEN;
        for _ in 0..sc {
            at = walk_chunk(b, at, end)?.2;
        }
        Ok(Self { buffer, end })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn chunks(&self) -> SdesChunks<'_> {
        let b = self.buffer.as_ref();
        SdesChunks {
            buf: b.get(..self.end).unwrap_or(&[]),
            at: HEADER_LEN,
            left: b.first().map_or(0, |f| f & 0x1f),
        }
    }
}

/// Iterator over the chunks of an SDES packet.
#[derive(Debug, Clone)]
pub struct SdesChunks<'a> {
    buf: &'a [u8],
    at: usize,
    left: u8,
}

impl<'a> Iterator for SdesChunks<'a> {
    type Item = SdesChunk<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        // Validated in `Sdes::new_checked`; a failure here only ends the walk.
        let (items, term, next) = walk_chunk(self.buf, self.at, self.buf.len()).ok()?;
        let ssrc = Ssrc(rd32(self.buf, self.at));
        self.at = next;
        self.left -= 1;
        Some(SdesChunk {
            ssrc,
            items: self.buf.get(items..term).unwrap_or(&[]),
        })
    }
}

/// One SDES chunk: a source and its items.
#[derive(Debug, Clone, Copy)]
pub struct SdesChunk<'a> {
    ssrc: Ssrc,
    items: &'a [u8],
}

impl<'a> SdesChunk<'a> {
    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    pub fn items(&self) -> SdesItems<'a> {
        SdesItems { rest: self.items }
    }

    /// The value of the first CNAME item, if any.
    pub fn cname(&self) -> Option<&'a [u8]> {
        self.items().find(|i| i.kind == SDES_CNAME).map(|i| i.value)
    }
}

/// Iterator over the items of a chunk.
#[derive(Debug, Clone)]
pub struct SdesItems<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for SdesItems<'a> {
    type Item = SdesItem<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&[kind, len], rest) = self.rest.split_first_chunk::<2>()?;
        let len = usize::from(len);
        if len > rest.len() {
            self.rest = &[];
            return None;
        }
        let (value, rest) = rest.split_at(len);
        self.rest = rest;
        Some(SdesItem { kind, value })
    }
}

/// One SDES item: its type (e.g. [`SDES_CNAME`]) and raw value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesItem<'a> {
    pub kind: u8,
    pub value: &'a [u8],
}

/// An owned SDES item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdesItemRepr {
    /// Non-zero item type.
    pub kind: u8,
    /// At most 255 bytes.
    pub value: Vec<u8>,
}

/// An owned SDES chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdesChunkRepr {
    pub ssrc: Ssrc,
    pub items: Vec<SdesItemRepr>,
}

impl SdesChunkRepr {
    fn len(&self) -> usize {
        let items: usize = self.items.iter().map(|i| 2 + i.value.len()).sum();
        (4 + items + 1).next_multiple_of(4)
    }
}

/// An owned SDES packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SdesRepr {
    pub chunks: Vec<SdesChunkRepr>,
}

impl SdesRepr {
    /// One chunk carrying only a CNAME, which is what a WebRTC endpoint sends.
    pub fn cname(ssrc: Ssrc, cname: &[u8]) -> Self {
        Self {
            chunks: vec![SdesChunkRepr {
                ssrc,
                items: vec![SdesItemRepr {
                    kind: SDES_CNAME,
                    value: cname.to_vec(),
                }],
            }],
        }
    }

    pub fn parse<T: AsRef<[u8]>>(sdes: &Sdes<T>) -> Self {
        let chunks = sdes
            .chunks()
            .map(|c| SdesChunkRepr {
                ssrc: c.ssrc(),
                items: c
                    .items()
                    .map(|i| SdesItemRepr {
                        kind: i.kind,
                        value: i.value.to_vec(),
                    })
                    .collect(),
            })
            .collect();
        Self { chunks }
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.chunks.iter().map(SdesChunkRepr::len).sum::<usize>()
    }

    /// Fails with `TooLarge` for more than 31 chunks or an item over 255 bytes, and with
    /// `BadField` for an item of type 0 (which would end the chunk early).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        if self.chunks.len() > MAX_COUNT {
            return Err(Error::TooLarge);
        }
        for item in self.chunks.iter().flat_map(|c| &c.items) {
            if item.value.len() > 255 {
                return Err(Error::TooLarge);
            }
            if item.kind == 0 {
                return Err(Error::BadField);
            }
        }
        let len = self.buffer_len();
        let b = dest(buf, len)?;
        write_header(b, false, self.chunks.len() as u8, PT_SDES, len);
        let mut at = HEADER_LEN;
        for chunk in &self.chunks {
            let next = at + chunk.len();
            let out = &mut b[at..next];
            out.fill(0);
            wr32(out, 0, chunk.ssrc.0);
            let mut p = 4;
            for item in &chunk.items {
                out[p] = item.kind;
                out[p + 1] = item.value.len() as u8;
                out[p + 2..p + 2 + item.value.len()].copy_from_slice(&item.value);
                p += 2 + item.value.len();
            }
            at = next;
        }
        Ok(len)
    }
}

/// A goodbye packet (PT 203).
#[derive(Debug, Clone)]
pub struct Bye<T> {
    buffer: T,
    end: usize,
}

impl<T: AsRef<[u8]>> Bye<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        let (sc, end) = check(b, PT_BYE, None)?;
        let reason_at = HEADER_LEN + 4 * usize::from(sc);
        if reason_at > end {
            return Err(Error::BadLength);
        }
        if reason_at < end {
            let len = usize::from(b[reason_at]);
            if reason_at + 1 + len > end {
                return Err(Error::BadLength);
            }
        }
        Ok(Self { buffer, end })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn ssrcs(&self) -> ByeSsrcs<'_> {
        let b = self.buffer.as_ref();
        let sc = usize::from(b.first().map_or(0, |f| f & 0x1f));
        ByeSsrcs {
            rest: b.get(HEADER_LEN..HEADER_LEN + 4 * sc).unwrap_or(&[]),
        }
    }

    /// The reason for leaving, if the packet carries one.
    pub fn reason(&self) -> Option<&[u8]> {
        let b = self.buffer.as_ref();
        let at = HEADER_LEN + 4 * usize::from(b.first().map_or(0, |f| f & 0x1f));
        if at >= self.end {
            return None;
        }
        let len = usize::from(*b.get(at)?);
        b.get(at + 1..at + 1 + len)
    }
}

/// Iterator over the SSRCs of a BYE.
#[derive(Debug, Clone)]
pub struct ByeSsrcs<'a> {
    rest: &'a [u8],
}

impl Iterator for ByeSsrcs<'_> {
    type Item = Ssrc;

    fn next(&mut self) -> Option<Ssrc> {
        let (word, rest) = self.rest.split_first_chunk::<4>()?;
        self.rest = rest;
        Some(Ssrc(u32::from_be_bytes(*word)))
    }
}

/// An owned BYE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ByeRepr {
    /// At most 31.
    pub ssrcs: Vec<Ssrc>,
    /// At most 255 bytes.
    pub reason: Option<Vec<u8>>,
}

impl ByeRepr {
    pub fn parse<T: AsRef<[u8]>>(bye: &Bye<T>) -> Self {
        Self {
            ssrcs: bye.ssrcs().collect(),
            reason: bye.reason().map(<[u8]>::to_vec),
        }
    }

    pub fn buffer_len(&self) -> usize {
        let reason = self
            .reason
            .as_ref()
            .map_or(0, |r| (1 + r.len()).next_multiple_of(4));
        HEADER_LEN + 4 * self.ssrcs.len() + reason
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        if self.ssrcs.len() > MAX_COUNT || self.reason.as_ref().is_some_and(|r| r.len() > 255) {
            return Err(Error::TooLarge);
        }
        let len = self.buffer_len();
        let b = dest(buf, len)?;
        b.fill(0);
        write_header(b, false, self.ssrcs.len() as u8, PT_BYE, len);
        let mut at = HEADER_LEN;
        for ssrc in &self.ssrcs {
            wr32(b, at, ssrc.0);
            at += 4;
        }
        if let Some(r) = &self.reason {
            b[at] = r.len() as u8;
            b[at + 1..at + 1 + r.len()].copy_from_slice(r);
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SDES with one chunk: CNAME "prism-cname" (11 bytes) for 0x11223344.
    const SDES: [u8; 24] = [
        0x81, 202, 0x00, 0x05, 0x11, 0x22, 0x33, 0x44, 0x01, 0x0b, b'p', b'r', b'i', b's', b'm',
        b'-', b'c', b'n', b'a', b'm', b'e', 0x00, 0x00, 0x00,
    ];

    #[test]
    fn sdes_fixture_parses_and_round_trips() {
        let sdes = Sdes::new_checked(&SDES[..]).unwrap();
        let chunks: Vec<_> = sdes.chunks().collect();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].ssrc(), Ssrc(0x1122_3344));
        assert_eq!(chunks[0].cname(), Some(&b"prism-cname"[..]));
        let repr = SdesRepr::parse(&sdes);
        assert_eq!(repr, SdesRepr::cname(Ssrc(0x1122_3344), b"prism-cname"));
        let mut out = [0xffu8; 24];
        assert_eq!(repr.emit(&mut out), Ok(24));
        assert_eq!(out, SDES);
    }

    #[test]
    fn sdes_with_two_chunks_and_exact_word_item() {
        // Items filling the chunk to a word boundary force a whole word of terminator.
        let repr = SdesRepr {
            chunks: vec![
                SdesChunkRepr {
                    ssrc: Ssrc(1),
                    items: vec![SdesItemRepr {
                        kind: SDES_CNAME,
                        value: b"ab".to_vec(),
                    }],
                },
                SdesChunkRepr {
                    ssrc: Ssrc(2),
                    items: vec![
                        SdesItemRepr {
                            kind: 2,
                            value: b"name".to_vec(),
                        },
                        SdesItemRepr {
                            kind: 6,
                            value: vec![],
                        },
                    ],
                },
            ],
        };
        let mut out = vec![0u8; repr.buffer_len()];
        assert_eq!(repr.emit(&mut out), Ok(4 + 12 + 16));
        let sdes = Sdes::new_checked(&out[..]).unwrap();
        assert_eq!(SdesRepr::parse(&sdes), repr);
    }

    #[test]
    fn sdes_missing_terminator_is_rejected() {
        let mut bad = SDES;
        bad[9] = 14; // the item now runs over the terminator and padding
        assert!(Sdes::new_checked(&bad[..]).is_err());
    }

    #[test]
    fn bye_fixture_with_reason_round_trips() {
        let bye: [u8; 20] = [
            0x82, 203, 0x00, 0x04, 0, 0, 0, 1, 0, 0, 0, 2, 0x05, b'c', b'l', b'o', b's', b'e', 0, 0,
        ];
        let view = Bye::new_checked(&bye[..]).unwrap();
        assert_eq!(view.ssrcs().collect::<Vec<_>>(), vec![Ssrc(1), Ssrc(2)]);
        assert_eq!(view.reason(), Some(&b"close"[..]));
        let repr = ByeRepr::parse(&view);
        let mut out = [0xffu8; 20];
        assert_eq!(repr.emit(&mut out), Ok(20));
        assert_eq!(out, bye);
    }

    #[test]
    fn bye_without_reason() {
        let bye = [0x81, 203, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef];
        let view = Bye::new_checked(&bye[..]).unwrap();
        assert_eq!(view.reason(), None);
        let repr = ByeRepr::parse(&view);
        assert_eq!(repr.ssrcs, vec![Ssrc(0xdead_beef)]);
        let mut out = [0u8; 8];
        assert_eq!(repr.emit(&mut out), Ok(8));
        assert_eq!(out, bye);
    }

    #[test]
    fn bye_reason_past_end_is_rejected() {
        let bye = [0x81, 203, 0x00, 0x02, 0, 0, 0, 1, 0x09, b'x', 0, 0];
        assert_eq!(Bye::new_checked(&bye[..]).err(), Some(Error::BadLength));
    }
}
