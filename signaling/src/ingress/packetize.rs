//! RTP packets from what an RTMP encoder sends: H.264 access units (RFC 6184) and Opus
//! frames (RFC 7587), written into a reused buffer and handed to a callback, one datagram
//! each.
//!
//! H.264 is passed through: each NAL unit that fits the payload budget goes as a single
//! NAL unit packet, a larger one as FU-A fragments; the last packet of an access unit has
//! the marker bit. An RTMP source cannot make a keyframe on demand (the forwarder's PLIs
//! reach nobody who could answer), so every IDR is sent with the stream's SPS and PPS in
//! front, and a subscriber that joins waits at most one GOP of the encoder's.

/// RTP payload bytes per packet, leaving room for the forwarder's header extensions and
/// SRTP under a 1280-byte path MTU.
pub const MAX_PAYLOAD: usize = 1100;

/// A stream's parameter sets: SPS and PPS.
pub type ParamSets<'a> = (&'a [Vec<u8>], &'a [Vec<u8>]);

/// The RTP header fields of one stream.
#[derive(Debug)]
pub struct RtpStream {
    pub ssrc: u32,
    pub payload_type: u8,
    /// Packets and payload bytes sent, for sender reports (wrapping, as RFC 3550 says).
    pub packets: u32,
    pub octets: u32,
    seq: u16,
    buf: Vec<u8>,
}

impl RtpStream {
    pub fn new(ssrc: u32, payload_type: u8, first_seq: u16) -> Self {
        Self {
            ssrc,
            payload_type,
            packets: 0,
            octets: 0,
            seq: first_seq,
            buf: Vec::with_capacity(12 + MAX_PAYLOAD + 2),
        }
    }

    /// Writes one packet with `parts` as its payload and hands it to `send`.
    fn packet(&mut self, ts: u32, marker: bool, parts: &[&[u8]], send: &mut impl FnMut(&[u8])) {
        self.buf.clear();
        self.buf.push(0x80);
        self.buf
            .push(self.payload_type & 0x7F | if marker { 0x80 } else { 0 });
        self.buf.extend_from_slice(&self.seq.to_be_bytes());
        self.buf.extend_from_slice(&ts.to_be_bytes());
        self.buf.extend_from_slice(&self.ssrc.to_be_bytes());
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.seq = self.seq.wrapping_add(1);
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add((self.buf.len() - 12) as u32);
        send(&self.buf);
    }

    /// One Opus frame.
    pub fn opus(&mut self, ts: u32, frame: &[u8], send: &mut impl FnMut(&[u8])) {
        self.packet(ts, false, &[frame], send);
    }

    /// One H.264 access unit. With `params` (SPS and PPS), they are sent first when the
    /// unit holds an IDR slice and does not carry them itself.
    pub fn h264(
        &mut self,
        ts: u32,
        nalus: &[&[u8]],
        params: Option<ParamSets<'_>>,
        send: &mut impl FnMut(&[u8]),
    ) {
        let nal_type = |n: &[u8]| n.first().map_or(0, |b| b & 0x1F);
        let has_idr = nalus.iter().any(|n| nal_type(n) == 5);
        let has_sps = nalus.iter().any(|n| nal_type(n) == 7);
        let mut all: Vec<&[u8]> = Vec::with_capacity(nalus.len() + 2);
        if let (true, false, Some((sps, pps))) = (has_idr, has_sps, params) {
            all.extend(sps.iter().map(Vec::as_slice));
            all.extend(pps.iter().map(Vec::as_slice));
        }
        // Access unit delimiters mean nothing over RTP.
        all.extend(nalus.iter().copied().filter(|n| nal_type(n) != 9));
        let count = all.len();
        for (i, nal) in all.into_iter().enumerate() {
            let last_nal = i + 1 == count;
            if nal.len() <= MAX_PAYLOAD {
                self.packet(ts, last_nal, &[nal], send);
                continue;
            }
            let indicator = nal[0] & 0xE0 | 28;
            let kind = nal[0] & 0x1F;
            let body = &nal[1..];
            let pieces = body.len().div_ceil(MAX_PAYLOAD - 2);
            for (j, piece) in body.chunks(MAX_PAYLOAD - 2).enumerate() {
                let start = if j == 0 { 0x80 } else { 0 };
                let end = if j + 1 == pieces { 0x40 } else { 0 };
                let header = [indicator, start | end | kind];
                self.packet(ts, last_nal && j + 1 == pieces, &[&header, piece], send);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(f: impl FnOnce(&mut dyn FnMut(&[u8]))) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        f(&mut |p: &[u8]| out.push(p.to_vec()));
        out
    }

    #[test]
    fn an_idr_gets_parameter_sets_and_large_units_are_fragmented() {
        let mut s = RtpStream::new(0xAABBCCDD, 102, 65535);
        let sps = vec![vec![0x67, 1]];
        let pps = vec![vec![0x68, 2]];
        let idr: Vec<u8> = std::iter::once(0x65)
            .chain((0..2500).map(|i| i as u8))
            .collect();
        let aud = [0x09u8, 0xF0];
        let pkts = collect(|send| {
            let mut f = |p: &[u8]| send(p);
            s.h264(9000, &[&aud, &idr], Some((&sps, &pps)), &mut f);
        });
        // SPS, PPS, then the IDR in three FU-A fragments.
        assert_eq!(pkts.len(), 5);
        let seqs: Vec<u16> = pkts
            .iter()
            .map(|p| u16::from_be_bytes([p[2], p[3]]))
            .collect();
        assert_eq!(seqs, [65535, 0, 1, 2, 3]);
        assert_eq!(&pkts[0][12..], &[0x67, 1]);
        assert_eq!(&pkts[1][12..], &[0x68, 2]);
        let markers: Vec<bool> = pkts.iter().map(|p| p[1] & 0x80 != 0).collect();
        assert_eq!(markers, [false, false, false, false, true]);
        assert_eq!(pkts[2][12], 0x60 | 28);
        assert_eq!(pkts[2][13], 0x80 | 5);
        assert_eq!(pkts[3][13], 5);
        assert_eq!(pkts[4][13], 0x40 | 5);
        let mut rebuilt = vec![0x65];
        for p in &pkts[2..] {
            rebuilt.extend_from_slice(&p[14..]);
            assert!(p.len() - 12 <= MAX_PAYLOAD);
            assert_eq!(&p[4..8], &9000u32.to_be_bytes());
            assert_eq!(&p[8..12], &0xAABBCCDDu32.to_be_bytes());
        }
        assert_eq!(rebuilt, idr);
        // A non-IDR unit gets no parameter sets.
        let pkts = collect(|send| {
            let mut f = |p: &[u8]| send(p);
            s.h264(12000, &[&[0x41, 7]], Some((&sps, &pps)), &mut f);
        });
        assert_eq!(pkts.len(), 1);
        assert_eq!(pkts[0][1], 0x80 | 102);
    }
}
