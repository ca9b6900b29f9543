//! Length-prefixed protobuf framing for the control socket.
//!
//! A frame is a 4-byte big-endian length followed by exactly that many bytes: one encoded
//! protobuf message (or, for the first frame of an authenticated connection, the raw secret).
//!
//! Invariants:
//! - A length above [`MAX_FRAME`] is rejected as soon as the 4-byte prefix is read, before
//!   anything is allocated for the body, so a peer cannot make us reserve memory it never
//!   sends.
//! - Nothing here panics on input; every malformed byte sequence becomes a [`FrameError`].
//! - [`write_frame`] emits the prefix and the body with one `write_all`, so frames written by
//!   one writer are never interleaved at the byte level.
//! - EOF exactly at a frame boundary is a clean end of stream (`Ok(None)`); EOF anywhere
//!   else is [`FrameError::Truncated`].

use std::fmt;
use std::io::{self, Read, Write};

/// The largest frame body accepted or produced: 1 MiB. Control messages are small; a stats
/// answer for thousands of transports stays far below this.
pub const MAX_FRAME: usize = 1 << 20;

/// Size of the length prefix.
pub const PREFIX_LEN: usize = 4;

/// Why a frame could not be read or written.
#[derive(Debug)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix announces more than [`MAX_FRAME`] bytes (or a message to write
    /// encodes to more than that).
    Oversized {
        /// The announced (or encoded) length.
        len: usize,
    },
    /// The stream ended inside a frame.
    Truncated,
    /// The body is not a valid encoding of the expected message.
    Decode(prost::DecodeError),
    /// The underlying reader or writer failed.
    Io(io::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Oversized { len } => {
                write!(f, "frame of {len} bytes exceeds the {MAX_FRAME}-byte limit")
            }
            Self::Truncated => f.write_str("stream ended inside a frame"),
            Self::Decode(e) => write!(f, "undecodable frame: {e}"),
            Self::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Decode(e) => Some(e),
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<prost::DecodeError> for FrameError {
    fn from(e: prost::DecodeError) -> Self {
        Self::Decode(e)
    }
}

/// Encodes `msg` as one frame (prefix included) into a fresh buffer.
pub fn encode_frame<M: prost::Message>(msg: &M) -> Result<Vec<u8>, FrameError> {
    let len = msg.encoded_len();
    let prefix = prefix_for(len)?;
    let mut buf = Vec::with_capacity(PREFIX_LEN + len);
    buf.extend_from_slice(&prefix);
    // Encoding into a Vec cannot run out of space: it grows as needed.
    msg.encode(&mut buf)
        .map_err(|e| FrameError::Io(io::Error::other(e)))?;
    Ok(buf)
}

/// Writes `msg` as one frame. Blocking; one `write_all` for prefix and body.
pub fn write_frame<W: Write, M: prost::Message>(w: &mut W, msg: &M) -> Result<(), FrameError> {
    let buf = encode_frame(msg)?;
    w.write_all(&buf)?;
    Ok(())
}

/// Writes `bytes` as one raw frame (used for the authentication frame).
pub fn write_raw_frame<W: Write>(w: &mut W, bytes: &[u8]) -> Result<(), FrameError> {
    let prefix = prefix_for(bytes.len())?;
    let mut buf = Vec::with_capacity(PREFIX_LEN + bytes.len());
    buf.extend_from_slice(&prefix);
    buf.extend_from_slice(bytes);
    w.write_all(&buf)?;
    Ok(())
}

/// Reads one frame and decodes it as `M`. Blocking.
///
/// Returns `Ok(None)` on a clean EOF before the first byte of a frame.
pub fn read_frame<R: Read, M: prost::Message + Default>(
    r: &mut R,
) -> Result<Option<M>, FrameError> {
    match read_raw_frame(r, MAX_FRAME)? {
        None => Ok(None),
        Some(body) => Ok(Some(M::decode(body.as_slice())?)),
    }
}

/// Reads one frame body of at most `max` bytes (capped at [`MAX_FRAME`]) without decoding it.
pub fn read_raw_frame<R: Read>(r: &mut R, max: usize) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0u8; PREFIX_LEN];
    let mut got = 0;
    while got < PREFIX_LEN {
        match r.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max.min(MAX_FRAME) {
        return Err(FrameError::Oversized { len });
    }
    // `len` is bounded above, so this reservation is bounded too.
    let mut body = Vec::with_capacity(len);
    r.take(len as u64).read_to_end(&mut body)?;
    if body.len() < len {
        return Err(FrameError::Truncated);
    }
    Ok(Some(body))
}

fn prefix_for(len: usize) -> Result<[u8; PREFIX_LEN], FrameError> {
    if len > MAX_FRAME {
        return Err(FrameError::Oversized { len });
    }
    // MAX_FRAME < u32::MAX, so the cast is exact.
    Ok((len as u32).to_be_bytes())
}

/// Incremental frame decoder for non-blocking readers: feed whatever bytes arrived, then pop
/// complete messages.
///
/// After an error the decoder is poisoned: the stream has lost framing and the connection
/// must be closed.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`; compacted lazily to avoid a shift per frame.
    start: usize,
    poisoned: bool,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > MAX_FRAME {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes fed but not yet consumed as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Pops the next complete message, `Ok(None)` if more bytes are needed.
    ///
    /// An oversized prefix is reported as soon as the prefix is complete, before its body
    /// is buffered.
    pub fn pop<M: prost::Message + Default>(&mut self) -> Result<Option<M>, FrameError> {
        if self.poisoned {
            return Err(FrameError::Truncated);
        }
        let pending = &self.buf[self.start..];
        let Some(prefix) = pending.first_chunk::<PREFIX_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > MAX_FRAME {
            self.poisoned = true;
            return Err(FrameError::Oversized { len });
        }
        let Some(body) = pending.get(PREFIX_LEN..PREFIX_LEN + len) else {
            return Ok(None);
        };
        let decoded = M::decode(body);
        self.start += PREFIX_LEN + len;
        match decoded {
            Ok(m) => Ok(Some(m)),
            Err(e) => {
                self.poisoned = true;
                Err(FrameError::Decode(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_proto::control::{command, Command, CreateRoom, Event};

    fn create_room(request_id: u64, room_id: u64) -> Command {
        Command {
            request_id,
            body: Some(command::Body::CreateRoom(CreateRoom {
                room_id,
                pin_core: false,
                core: 0,
            })),
        }
    }

    #[test]
    fn round_trip_several_frames() {
        let mut buf = Vec::new();
        for i in 1..=3 {
            write_frame(&mut buf, &create_room(i, i * 10)).unwrap();
        }
        let mut r = buf.as_slice();
        for i in 1..=3 {
            let cmd: Command = read_frame(&mut r).unwrap().unwrap();
            assert_eq!(cmd, create_room(i, i * 10));
        }
        assert!(read_frame::<_, Command>(&mut r).unwrap().is_none());
    }

    #[test]
    fn empty_message_is_a_zero_length_frame() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &Event::default()).unwrap();
        assert_eq!(buf, [0, 0, 0, 0]);
        let ev: Event = read_frame(&mut buf.as_slice()).unwrap().unwrap();
        assert_eq!(ev, Event::default());
    }

    /// A reader that fails the test if anyone tries to read more than the prefix: proves the
    /// oversized length is rejected before the body is touched (or allocated).
    struct PrefixOnly<'a>(&'a [u8]);

    impl Read for PrefixOnly<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            assert!(!self.0.is_empty(), "read past the prefix");
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn oversized_length_rejected_before_reading_body() {
        let prefix = u32::MAX.to_be_bytes();
        let err = read_frame::<_, Command>(&mut PrefixOnly(&prefix)).unwrap_err();
        assert!(matches!(err, FrameError::Oversized { len } if len == u32::MAX as usize));

        let prefix = ((MAX_FRAME + 1) as u32).to_be_bytes();
        let err = read_frame::<_, Command>(&mut PrefixOnly(&prefix)).unwrap_err();
        assert!(matches!(err, FrameError::Oversized { .. }));
    }

    #[test]
    fn max_frame_length_is_accepted() {
        let body = vec![0u8; MAX_FRAME];
        let mut buf = Vec::new();
        write_raw_frame(&mut buf, &body).unwrap();
        let got = read_raw_frame(&mut buf.as_slice(), MAX_FRAME)
            .unwrap()
            .unwrap();
        assert_eq!(got.len(), MAX_FRAME);
        assert!(matches!(
            write_raw_frame(&mut Vec::new(), &vec![0u8; MAX_FRAME + 1]),
            Err(FrameError::Oversized { .. })
        ));
    }

    #[test]
    fn raw_frame_limit_is_respected() {
        let mut buf = Vec::new();
        write_raw_frame(&mut buf, b"0123456789").unwrap();
        let err = read_raw_frame(&mut buf.as_slice(), 4).unwrap_err();
        assert!(matches!(err, FrameError::Oversized { len: 10 }));
    }

    #[test]
    fn truncated_prefix_and_body() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &create_room(7, 70)).unwrap();
        for cut in 1..buf.len() {
            let err = read_frame::<_, Command>(&mut &buf[..cut]).unwrap_err();
            assert!(matches!(err, FrameError::Truncated), "cut at {cut}: {err}");
        }
    }

    #[test]
    fn garbage_body_is_a_decode_error() {
        // Field 10 (create_room) announced as a length-delimited field longer than the body.
        let mut buf = Vec::new();
        write_raw_frame(&mut buf, &[0x52, 0x7f, 0x01]).unwrap();
        let err = read_frame::<_, Command>(&mut buf.as_slice()).unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err}");

        let mut buf = Vec::new();
        write_raw_frame(&mut buf, &[0xff; 16]).unwrap();
        let err = read_frame::<_, Command>(&mut buf.as_slice()).unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err}");
    }

    #[test]
    fn decoder_pops_frames_fed_byte_by_byte() {
        let mut buf = Vec::new();
        for i in 1..=5 {
            write_frame(&mut buf, &create_room(i, i)).unwrap();
        }
        let mut dec = FrameDecoder::new();
        let mut out = Vec::new();
        for b in &buf {
            dec.feed(std::slice::from_ref(b));
            while let Some(cmd) = dec.pop::<Command>().unwrap() {
                out.push(cmd);
            }
        }
        assert_eq!(out, (1..=5).map(|i| create_room(i, i)).collect::<Vec<_>>());
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn decoder_rejects_oversized_prefix_without_body() {
        let mut dec = FrameDecoder::new();
        dec.feed(&u32::MAX.to_be_bytes());
        assert!(matches!(
            dec.pop::<Command>(),
            Err(FrameError::Oversized { .. })
        ));
        // Poisoned: framing is lost for good.
        dec.feed(&[0, 0, 0, 0]);
        assert!(dec.pop::<Command>().is_err());
    }

    #[test]
    fn decoder_reports_garbage() {
        let mut buf = Vec::new();
        write_raw_frame(&mut buf, &[0xff; 8]).unwrap();
        let mut dec = FrameDecoder::new();
        dec.feed(&buf);
        assert!(matches!(dec.pop::<Command>(), Err(FrameError::Decode(_))));
    }
}
