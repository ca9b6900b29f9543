//! An Ogg Opus muxer (RFC 3533 pages, RFC 7845 mapping), sans-IO.
//!
//! Why pages of about a second: a page is the unit a reader can resume from, so a file cut
//! short keeps everything up to its last full page, and one page per packet would cost
//! 27+ bytes per 20 ms. Granule positions count 48 kHz samples at the end of each page's
//! last packet; gaps in the stream (lost or discontinued audio) are filled with empty
//! Opus packets (a TOC byte and no frame, which decoders conceal), so the granule keeps
//! wall time.

use super::webm::opus_head;

/// CRC-32 of Ogg: polynomial 0x04C11DB7, no reflection, initial value 0.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0u32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Samples (at 48 kHz) in an Opus packet, from its TOC byte and frame count (RFC 6716
/// §3.1); `None` if the packet is malformed.
pub fn opus_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config & 3)],
        12..=15 => [480, 960][usize::from(config & 1)],
        _ => [120, 240, 480, 960][usize::from(config & 3)],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3F),
    };
    Some(frame * frames)
}

/// Packets per page (about a second of 20 ms packets).
const PACKETS_PER_PAGE: usize = 50;

/// The muxer: [`OggMuxer::header`] first, then packets, then [`OggMuxer::finish`].
#[derive(Debug)]
pub struct OggMuxer {
    serial: u32,
    seq: u32,
    granule: u64,
    packets: Vec<Vec<u8>>,
}

impl OggMuxer {
    pub fn new(serial: u32) -> Self {
        Self {
            serial,
            seq: 0,
            granule: 0,
            packets: Vec::new(),
        }
    }

    fn page(&mut self, packets: &[Vec<u8>], granule: u64, flags: u8) -> Vec<u8> {
        let mut lacing = Vec::new();
        for p in packets {
            let mut n = p.len();
            while n >= 255 {
                lacing.push(255u8);
                n -= 255;
            }
            lacing.push(n as u8);
        }
        let mut out = Vec::with_capacity(27 + lacing.len());
        out.extend_from_slice(b"OggS");
        out.push(0);
        out.push(flags);
        out.extend_from_slice(&granule.to_le_bytes());
        out.extend_from_slice(&self.serial.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.push(lacing.len() as u8);
        out.extend_from_slice(&lacing);
        for p in packets {
            out.extend_from_slice(p);
        }
        let crc = crc32(&out);
        out[22..26].copy_from_slice(&crc.to_le_bytes());
        self.seq += 1;
        out
    }

    /// The two header pages: OpusHead (beginning of stream) and OpusTags.
    pub fn header(&mut self, channels: u8) -> Vec<u8> {
        let mut out = self.page(&[opus_head(channels)], 0, 0x02);
        let mut tags = b"OpusTags".to_vec();
        tags.extend_from_slice(&5u32.to_le_bytes());
        tags.extend_from_slice(b"prism");
        tags.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.page(&[tags], 0, 0));
        out
    }

    /// Adds an Opus packet; `gap_samples` of silence before it (a discontinuity) are
    /// filled with empty packets of 20 ms. Returns a page's bytes when one fills.
    pub fn packet(&mut self, data: &[u8], gap_samples: u64) -> Vec<u8> {
        let Some(samples) = opus_samples(data) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        // An empty 20 ms CELT packet (config 31, one frame, no bytes) per 960 samples.
        for _ in 0..(gap_samples / 960).min(50 * 60) {
            self.granule += 960;
            self.packets.push(vec![31 << 3]);
            if self.packets.len() >= PACKETS_PER_PAGE {
                out.extend_from_slice(&self.flush(0));
            }
        }
        self.granule += u64::from(samples);
        self.packets.push(data.to_vec());
        if self.packets.len() >= PACKETS_PER_PAGE
            || self.packets.iter().map(Vec::len).sum::<usize>() > 60_000
        {
            out.extend_from_slice(&self.flush(0));
        }
        out
    }

    fn flush(&mut self, flags: u8) -> Vec<u8> {
        let packets = std::mem::take(&mut self.packets);
        self.page(&packets, self.granule, flags)
    }

    /// The last page (end of stream).
    pub fn finish(&mut self) -> Vec<u8> {
        self.flush(0x04)
    }

    /// Samples written so far.
    pub fn granule(&self) -> u64 {
        self.granule
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_ogg_polynomial() {
        assert_eq!(crc32(b""), 0);
        // One byte 0x01 leaves the polynomial itself (no reflection, no final xor).
        assert_eq!(crc32(&[0x01]), 0x04C1_1DB7);
        // A page's CRC computed over the page with the CRC field zeroed verifies.
        let mut m = OggMuxer::new(7);
        let h = m.header(2);
        let first_len = 27 + 1 + 19;
        let mut page = h[..first_len].to_vec();
        let crc = u32::from_le_bytes(page[22..26].try_into().unwrap());
        page[22..26].copy_from_slice(&[0; 4]);
        assert_eq!(crc32(&page), crc);
    }

    #[test]
    fn opus_toc_gives_the_packet_duration() {
        // Config 31 (CELT FB 20 ms), one frame.
        assert_eq!(opus_samples(&[31 << 3]), Some(960));
        // Config 1 (SILK NB 20 ms), two frames.
        assert_eq!(opus_samples(&[(1 << 3) | 1]), Some(1920));
        // Code 3 with 3 frames of 10 ms (config 0).
        assert_eq!(opus_samples(&[3, 3]), Some(1440));
        assert_eq!(opus_samples(&[]), None);
        assert_eq!(opus_samples(&[3]), None);
    }

    #[test]
    fn granules_count_samples_and_gaps() {
        let mut m = OggMuxer::new(1);
        m.header(2);
        let pkt = [31 << 3, 1, 2, 3];
        for _ in 0..10 {
            assert!(m.packet(&pkt, 0).is_empty());
        }
        assert_eq!(m.granule(), 9600);
        // A 100 ms gap becomes five empty packets.
        m.packet(&pkt, 4800);
        assert_eq!(m.granule(), 9600 + 4800 + 960);
        let last = m.finish();
        assert_eq!(&last[..4], b"OggS");
        assert_eq!(last[5], 0x04);
        assert_eq!(u64::from_le_bytes(last[6..14].try_into().unwrap()), 15_360);
        // 16 packets of which 5 are one byte.
        assert_eq!(last[26], 16);
    }
}
