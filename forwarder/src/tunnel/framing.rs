//! RFC 4571 framing: each datagram on a TCP stream is preceded by its length, two bytes
//! big-endian. ICE over TCP (RFC 6544) carries STUN, DTLS, SRTP and SCTP this way.
//!
//! [`Deframer`] is sans-IO: the caller reads from the socket into [`Deframer::spare`],
//! reports how much with [`Deframer::filled`], then takes whole frames with
//! [`Deframer::next_frame`]. Its buffer is fixed, allocated once per connection; a frame
//! longer than [`MAX_FRAME`] is an error (the connection is closed), never a reason to grow.

use crate::egress::MAX_DATAGRAM;

/// Longest frame accepted: the largest datagram any core accepts.
pub const MAX_FRAME: usize = MAX_DATAGRAM;
/// Bytes of the length prefix.
pub const PREFIX: usize = 2;
/// Receive buffer per connection: room for several frames per read.
const BUF: usize = 8 * (PREFIX + MAX_FRAME);

/// A framing error: the stream cannot be read any further.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The prefix announces more than [`MAX_FRAME`] bytes.
    TooLarge(usize),
}

/// Splits a byte stream into frames.
#[derive(Debug)]
pub struct Deframer {
    buf: Box<[u8; BUF]>,
    start: usize,
    end: usize,
}

impl Default for Deframer {
    fn default() -> Self {
        Self::new()
    }
}

impl Deframer {
    pub fn new() -> Self {
        Self {
            buf: Box::new([0u8; BUF]),
            start: 0,
            end: 0,
        }
    }

    /// Where the next read goes. Never empty: whatever is left of a partial frame is moved
    /// to the front first, and a frame always fits.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 && (self.start == self.end || BUF - self.end < PREFIX + MAX_FRAME) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`Deframer::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(BUF);
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed. Zero-length frames are
    /// skipped.
    pub fn next_frame(&mut self) -> Result<Option<&mut [u8]>, FrameError> {
        loop {
            let avail = self.end - self.start;
            if avail < PREFIX {
                return Ok(None);
            }
            let len = usize::from(u16::from_be_bytes([
                self.buf[self.start],
                self.buf[self.start + 1],
            ]));
            if len > MAX_FRAME {
                return Err(FrameError::TooLarge(len));
            }
            if avail < PREFIX + len {
                return Ok(None);
            }
            let s = self.start + PREFIX;
            self.start = s + len;
            if len == 0 {
                continue;
            }
            return Ok(Some(&mut self.buf[s..s + len]));
        }
    }

    /// Bytes held that are not yet a whole frame.
    pub fn pending(&self) -> usize {
        self.end - self.start
    }
}

/// Appends `data` as one frame to `out`. False (nothing appended) if `data` is longer than
/// a prefix can say.
pub fn encode(data: &[u8], out: &mut Vec<u8>) -> bool {
    let Ok(len) = u16::try_from(data.len()) else {
        return false;
    };
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(d: &mut Deframer, mut bytes: &[u8], chunk: usize) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let spare = d.spare();
            let n = chunk.min(spare.len()).min(bytes.len());
            spare[..n].copy_from_slice(&bytes[..n]);
            d.filled(n);
            bytes = &bytes[n..];
            while let Some(f) = d.next_frame()? {
                frames.push(f.to_vec());
            }
        }
        Ok(frames)
    }

    #[test]
    fn frames_split_across_reads_come_out_whole() {
        let msgs: Vec<Vec<u8>> = (0..40u8)
            .map(|i| vec![i; (usize::from(i) * 53) % MAX_FRAME + 1])
            .collect();
        let mut stream = Vec::new();
        for m in &msgs {
            assert!(encode(m, &mut stream));
        }
        for chunk in [1, 2, 3, 7, 1500, 4096, BUF] {
            let mut d = Deframer::new();
            assert_eq!(feed(&mut d, &stream, chunk).unwrap(), msgs, "chunk {chunk}");
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn largest_frame_fits_and_one_more_byte_is_refused() {
        let mut d = Deframer::new();
        let mut s = Vec::new();
        encode(&[5u8; MAX_FRAME], &mut s);
        assert_eq!(feed(&mut d, &s, 1000).unwrap().len(), 1);
        let mut d = Deframer::new();
        let too_big = ((MAX_FRAME + 1) as u16).to_be_bytes();
        assert_eq!(
            feed(&mut d, &too_big, 2),
            Err(FrameError::TooLarge(MAX_FRAME + 1))
        );
        let mut d = Deframer::new();
        assert_eq!(
            feed(&mut d, &[0xff, 0xff, 1, 2, 3], 5),
            Err(FrameError::TooLarge(65535))
        );
    }

    #[test]
    fn empty_frames_are_skipped() {
        let mut d = Deframer::new();
        let frames = feed(&mut d, &[0, 0, 0, 1, 9, 0, 0], 7).unwrap();
        assert_eq!(frames, vec![vec![9u8]]);
    }

    #[test]
    fn encode_refuses_what_a_prefix_cannot_say() {
        let mut out = Vec::new();
        assert!(!encode(&vec![0u8; 65536], &mut out));
        assert!(out.is_empty());
    }
}
