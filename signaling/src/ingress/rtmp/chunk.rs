//! RTMP's chunk stream: messages cut into chunks of at most the peer's chunk size, each with
//! a basic header (format 0–3 and a chunk stream id of 1–3 bytes), a message header that
//! repeats less of the previous one the higher the format, and a 32-bit extended timestamp
//! where the 24-bit field is 0xFFFFFF (also on format-3 chunks that continue such a
//! message, as Adobe's spec, FFmpeg and librtmp write them).
//!
//! [`ChunkReader`] is sans-IO: bytes are pushed in as they arrive, whole messages come out.
//! Sizes are bounded (message length, chunk stream count), so a hostile peer gets an error,
//! not an allocation of its choosing.

use std::collections::HashMap;

/// One reassembled RTMP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub type_id: u8,
    pub stream_id: u32,
    /// Milliseconds, the chunk stream's running timestamp.
    pub timestamp: u32,
    pub payload: Vec<u8>,
}

/// A chunk stream error: the connection cannot go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkError(pub String);

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Largest message accepted (a 4K keyframe fits many times over).
pub const MAX_MESSAGE: usize = 8 << 20;
/// Most chunk streams one connection may use (encoders use 2 to 8).
const MAX_STREAMS: usize = 64;
/// Largest chunk size a peer may set.
pub const MAX_CHUNK_SIZE: u32 = 1 << 24;

#[derive(Clone, Debug, Default)]
struct StreamState {
    timestamp: u32,
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    extended: bool,
    /// The message being assembled; empty between messages.
    partial: Vec<u8>,
    /// Whether `partial` holds a message in progress (even if zero bytes long so far).
    in_progress: bool,
    /// Whether any header has been seen on this chunk stream.
    seen: bool,
}

/// Reassembles messages from the chunk stream.
#[derive(Debug)]
pub struct ChunkReader {
    chunk_size: usize,
    streams: HashMap<u32, StreamState>,
}

impl Default for ChunkReader {
    fn default() -> Self {
        Self::new()
    }
}

fn be24(b: &[u8]) -> u32 {
    u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2])
}

impl ChunkReader {
    pub fn new() -> Self {
        Self {
            chunk_size: 128,
            streams: HashMap::new(),
        }
    }

    /// The peer's Set Chunk Size.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        let size = size & 0x7FFF_FFFF;
        if size == 0 || size > MAX_CHUNK_SIZE {
            return Err(ChunkError(format!("chunk size {size} out of range")));
        }
        self.chunk_size = size as usize;
        Ok(())
    }

    /// The peer's Abort Message: the partial message of `csid` is dropped.
    pub fn abort(&mut self, csid: u32) {
        if let Some(s) = self.streams.get_mut(&csid) {
            s.partial.clear();
            s.in_progress = false;
        }
    }

    /// Reads one chunk from the front of `buf`. `Ok(None)`: more bytes are needed (nothing
    /// consumed). `Ok(Some((used, message)))`: `used` bytes were consumed, and `message` is
    /// set when the chunk completed one.
    pub fn read_chunk(
        &mut self,
        buf: &[u8],
    ) -> Result<Option<(usize, Option<Message>)>, ChunkError> {
        let Some(&b0) = buf.first() else {
            return Ok(None);
        };
        let fmt = b0 >> 6;
        let (csid, mut at) = match b0 & 0x3F {
            0 => match buf.get(1) {
                Some(&b) => (64 + u32::from(b), 2),
                None => return Ok(None),
            },
            1 => match (buf.get(1), buf.get(2)) {
                (Some(&a), Some(&b)) => (64 + u32::from(a) + 256 * u32::from(b), 3),
                _ => return Ok(None),
            },
            c => (u32::from(c), 1),
        };
        let header_len = [11, 7, 3, 0][usize::from(fmt)];
        if buf.len() < at + header_len {
            return Ok(None);
        }
        if !self.streams.contains_key(&csid) && self.streams.len() >= MAX_STREAMS {
            return Err(ChunkError(format!("more than {MAX_STREAMS} chunk streams")));
        }
        let h = &buf[at..at + header_len];
        at += header_len;
        let prev = self.streams.get(&csid).cloned().unwrap_or_default();
        if fmt != 0 && !prev.seen {
            return Err(ChunkError(format!(
                "chunk stream {csid} starts with a format-{fmt} header"
            )));
        }
        let ts_field = if fmt < 3 { be24(h) } else { 0 };
        let extended = if fmt < 3 {
            ts_field == 0xFF_FFFF
        } else {
            prev.extended
        };
        let mut ts_value = ts_field;
        if extended {
            let Some(e) = buf.get(at..at + 4) else {
                return Ok(None);
            };
            ts_value = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            at += 4;
        }
        let mut st = prev;
        let starts = !st.in_progress;
        match fmt {
            0 => {
                st.timestamp = ts_value;
                st.delta = 0;
                st.length = be24(&h[3..6]);
                st.type_id = h[6];
                st.stream_id = u32::from_le_bytes([h[7], h[8], h[9], h[10]]);
            }
            1 => {
                st.delta = ts_value;
                st.length = be24(&h[3..6]);
                st.type_id = h[6];
            }
            2 => st.delta = ts_value,
            // Format 3 repeats everything (a continuation repeats the extended timestamp).
            _ => {}
        }
        if starts && fmt != 0 {
            st.timestamp = st.timestamp.wrapping_add(st.delta);
        }
        if !starts && fmt != 3 {
            return Err(ChunkError(format!(
                "format-{fmt} header on chunk stream {csid} in the middle of a message"
            )));
        }
        st.extended = extended;
        st.seen = true;
        let length = st.length as usize;
        if length > MAX_MESSAGE {
            return Err(ChunkError(format!(
                "message of {length} bytes (at most {MAX_MESSAGE})"
            )));
        }
        let have = st.partial.len();
        let take = (length - have).min(self.chunk_size);
        if buf.len() < at + take {
            return Ok(None);
        }
        st.partial.extend_from_slice(&buf[at..at + take]);
        at += take;
        let done = st.partial.len() == length;
        let message = if done {
            st.in_progress = false;
            Some(Message {
                type_id: st.type_id,
                stream_id: st.stream_id,
                timestamp: st.timestamp,
                payload: std::mem::take(&mut st.partial),
            })
        } else {
            st.in_progress = true;
            None
        };
        self.streams.insert(csid, st);
        Ok(Some((at, message)))
    }
}

/// Writes `payload` as one message on chunk stream `csid` (2–63), format 0 then format 3
/// chunks of `chunk_size`.
pub fn write_message(
    out: &mut Vec<u8>,
    csid: u8,
    chunk_size: usize,
    type_id: u8,
    stream_id: u32,
    timestamp: u32,
    payload: &[u8],
) {
    let ext = timestamp >= 0xFF_FFFF;
    let ts24 = if ext { 0xFF_FFFF } else { timestamp };
    out.push(csid & 0x3F);
    out.extend_from_slice(&ts24.to_be_bytes()[1..]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(type_id);
    out.extend_from_slice(&stream_id.to_le_bytes());
    if ext {
        out.extend_from_slice(&timestamp.to_be_bytes());
    }
    for (i, piece) in payload.chunks(chunk_size.max(1)).enumerate() {
        if i > 0 {
            out.push(0xC0 | (csid & 0x3F));
            if ext {
                out.extend_from_slice(&timestamp.to_be_bytes());
            }
        }
        out.extend_from_slice(piece);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(r: &mut ChunkReader, mut buf: &[u8]) -> Result<Vec<Message>, ChunkError> {
        let mut out = Vec::new();
        while let Some((used, m)) = r.read_chunk(buf)? {
            buf = &buf[used..];
            out.extend(m);
        }
        assert!(buf.is_empty(), "{} bytes left", buf.len());
        Ok(out)
    }

    #[test]
    fn written_messages_read_back_across_chunk_sizes_and_extended_timestamps() {
        for (size, ts) in [(128, 40), (4096, 0x0100_0000), (7, 0xFF_FFFF)] {
            let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
            let mut out = Vec::new();
            write_message(&mut out, 6, size, 9, 1, ts, &payload);
            write_message(&mut out, 4, size, 8, 1, ts + 1, b"abc");
            let mut r = ChunkReader::new();
            r.set_chunk_size(size as u32).unwrap();
            let m = read_all(&mut r, &out).unwrap();
            assert_eq!(m.len(), 2);
            assert_eq!(m[0].payload, payload);
            assert_eq!((m[0].type_id, m[0].stream_id, m[0].timestamp), (9, 1, ts));
            assert_eq!(
                (m[1].payload.as_slice(), m[1].timestamp),
                (&b"abc"[..], ts + 1)
            );
        }
    }

    #[test]
    fn compressed_headers_carry_deltas() {
        // fmt 0 at t=1000, then fmt 2 with delta 33, then fmt 3 (repeats the delta).
        let mut b = vec![0x04, 0, 0x03, 0xE8, 0, 0, 2, 9, 1, 0, 0, 0, 0xAA, 0xBB];
        b.extend_from_slice(&[0x84, 0, 0, 33, 0xCC, 0xDD]);
        b.extend_from_slice(&[0xC4, 0xEE, 0xFF]);
        // fmt 1 on csid 300 (two-byte form) needs a fmt 0 first.
        let mut r = ChunkReader::new();
        let m = read_all(&mut r, &b).unwrap();
        let ts: Vec<u32> = m.iter().map(|m| m.timestamp).collect();
        assert_eq!(ts, [1000, 1033, 1066]);
        assert_eq!(m[2].payload, [0xEE, 0xFF]);
        let mut r = ChunkReader::new();
        assert!(r
            .read_chunk(&[0x40 | 1, 44, 1, 0, 0, 1, 0, 0, 1, 9])
            .is_err());
    }

    #[test]
    fn partial_input_waits_and_hostile_input_is_refused() {
        let mut out = Vec::new();
        write_message(&mut out, 3, 128, 20, 0, 0, &[5u8; 300]);
        let mut r = ChunkReader::new();
        for cut in 0..12 {
            assert_eq!(r.read_chunk(&out[..cut]).unwrap(), None, "cut at {cut}");
        }
        let huge = [0x03, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9, 0, 0, 0, 0];
        assert!(ChunkReader::new().read_chunk(&huge).is_err());
        let mut r = ChunkReader::new();
        assert!(r.set_chunk_size(0).is_err());
        assert!(r.set_chunk_size(0x7FFF_FFFF).is_err());
        // Zero-length messages on ever new chunk streams (two-byte ids): the 65th is refused.
        let mut r = ChunkReader::new();
        let refused = (0..70u8).position(|c| {
            let fmt0 = [0x00, c, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0];
            r.read_chunk(&fmt0).is_err()
        });
        assert_eq!(refused, Some(MAX_STREAMS));
    }
}
