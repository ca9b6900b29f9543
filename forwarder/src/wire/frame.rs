//! Ethernet II, IPv4 and UDP framing, for drivers that receive and send whole frames.
//!
//! A socket driver hands the engine UDP payloads and the kernel owns every header. A
//! kernel-bypass driver (AF_XDP) gets raw Ethernet frames from its receive ring and must
//! put raw frames on its transmit ring, so it parses, checks and builds the three headers
//! itself. This module does that without I/O or allocation; the driver only moves frames
//! between rings and memory.
//!
//! **Receive** ([`parse`]): exactly Ethernet II, IPv4 without options and not fragmented,
//! and UDP. The IPv4 header checksum must hold. The UDP checksum must hold, be absent
//! (zero, which IPv4 allows), or be *partial*: a sender with checksum offload (veth,
//! virtio, containers) leaves only the pseudo-header sum in the field and expects the NIC
//! to finish it, and a frame taken off the wire before any NIC did is seen that way (the
//! "checksum trap" of AF_XDP on virtual links). Everything else is a [`Reject`], a typed
//! reason the driver counts; the XDP program in front already passes ARP, IPv6, IP
//! options, fragments and other ports to the kernel, so a reject here means a frame that
//! should not have come this way, or a corrupt one.
//!
//! **Transmit** ([`write_headers`]): the payload is written at [`HEADERS_LEN`] into the
//! frame first (the engine's head and body copied in), then the headers go in front with
//! a full IPv4 header checksum and a full UDP checksum, because no offload can be counted
//! on (veth and virtio offer no transmit checksum metadata).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;

/// An Ethernet (MAC) address.
pub type Mac = [u8; 6];

/// Ethernet II header: destination, source, EtherType.
pub const ETH_LEN: usize = 14;
/// IPv4 header without options.
pub const IPV4_LEN: usize = 20;
/// UDP header.
pub const UDP_LEN: usize = 8;
/// Everything in front of the UDP payload in the frames this module reads and writes.
pub const HEADERS_LEN: usize = ETH_LEN + IPV4_LEN + UDP_LEN;

const ETHERTYPE_IPV4: u16 = 0x0800;
const PROTO_UDP: u8 = 17;
/// Time to live of the datagrams Prism sends (Linux's default).
const TTL: u8 = 64;
/// IPv4 flags and fragment offset: Don't Fragment, offset zero.
const FLAGS_DF: u16 = 0x4000;

/// Why a received frame is not a UDP datagram for the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Shorter than its headers, or than the IPv4 total length says.
    Truncated,
    /// EtherType other than IPv4 (ARP, IPv6, a VLAN tag).
    NotIpv4,
    /// The IPv4 version field is not 4.
    BadVersion,
    /// IPv4 header with options (IHL above 5), or an IHL below 5.
    IpOptions,
    /// A fragment (More Fragments set or a non-zero offset).
    Fragment,
    /// IPv4 protocol other than UDP.
    NotUdp,
    /// The IPv4 total length is below its header's.
    BadIpLength,
    /// The IPv4 header checksum does not hold.
    BadIpChecksum,
    /// The UDP length is below 8 or runs past the IPv4 payload.
    BadUdpLength,
    /// The UDP checksum is neither valid, absent, nor a partial (offload) sum.
    BadUdpChecksum,
}

impl Reject {
    /// Every reason, in the order counters list them.
    pub const ALL: [Reject; 10] = [
        Reject::Truncated,
        Reject::NotIpv4,
        Reject::BadVersion,
        Reject::IpOptions,
        Reject::Fragment,
        Reject::NotUdp,
        Reject::BadIpLength,
        Reject::BadIpChecksum,
        Reject::BadUdpLength,
        Reject::BadUdpChecksum,
    ];

    /// A stable name for counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Truncated => "truncated",
            Reject::NotIpv4 => "not_ipv4",
            Reject::BadVersion => "bad_ip_version",
            Reject::IpOptions => "ip_options",
            Reject::Fragment => "fragment",
            Reject::NotUdp => "not_udp",
            Reject::BadIpLength => "bad_ip_length",
            Reject::BadIpChecksum => "bad_ip_checksum",
            Reject::BadUdpLength => "bad_udp_length",
            Reject::BadUdpChecksum => "bad_udp_checksum",
        }
    }

    /// The drop reason in stats and metrics: the name, prefixed `frame_`.
    pub fn drop_name(self) -> &'static str {
        match self {
            Reject::Truncated => "frame_truncated",
            Reject::NotIpv4 => "frame_not_ipv4",
            Reject::BadVersion => "frame_bad_ip_version",
            Reject::IpOptions => "frame_ip_options",
            Reject::Fragment => "frame_fragment",
            Reject::NotUdp => "frame_not_udp",
            Reject::BadIpLength => "frame_bad_ip_length",
            Reject::BadIpChecksum => "frame_bad_ip_checksum",
            Reject::BadUdpLength => "frame_bad_udp_length",
            Reject::BadUdpChecksum => "frame_bad_udp_checksum",
        }
    }

    /// Index into a counter array laid out as [`Reject::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the UDP checksum of an accepted frame stood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpChecksum {
    /// Present and correct.
    Valid,
    /// Zero: the sender computed none (allowed over IPv4).
    Absent,
    /// Only the pseudo-header sum, left for an offload engine that never ran.
    Partial,
}

/// A received UDP datagram's addresses and where its payload sits in the frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpFrame {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// The UDP payload's byte range within the frame.
    pub payload: Range<usize>,
    pub checksum: UdpChecksum,
}

/// The Internet checksum (RFC 1071) over bytes given in pieces of any length.
#[derive(Clone, Copy, Debug, Default)]
pub struct Checksum {
    sum: u64,
    /// Whether an odd number of bytes has been added, so the next byte is a low byte.
    odd: bool,
}

impl Checksum {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `data`, continuing the 16-bit word sequence of what came before.
    pub fn add(&mut self, mut data: &[u8]) {
        if self.odd {
            let Some((&low, rest)) = data.split_first() else {
                return;
            };
            self.sum += u64::from(low);
            data = rest;
            self.odd = false;
        }
        let mut words = data.chunks_exact(4);
        for w in &mut words {
            // Sums of 32-bit words fold to the same 16-bit one's-complement sum, since
            // 2^16 is 1 modulo 0xffff. A u64 cannot overflow within any frame.
            self.sum += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
        }
        let rest = words.remainder();
        let mut pairs = rest.chunks_exact(2);
        for p in &mut pairs {
            self.sum += u64::from(u16::from_be_bytes([p[0], p[1]]));
        }
        if let [high] = pairs.remainder() {
            self.sum += u64::from(*high) << 8;
            self.odd = true;
        }
    }

    /// Adds one 16-bit word (aligned; only between whole words).
    pub fn add_u16(&mut self, word: u16) {
        self.sum += u64::from(word);
    }

    /// The sum folded to 16 bits, not complemented.
    pub fn folded(&self) -> u16 {
        let mut s = self.sum;
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    /// The checksum to put in a header: the complement of the folded sum.
    pub fn finish(&self) -> u16 {
        !self.folded()
    }
}

/// The UDP-over-IPv4 pseudo-header's contribution (RFC 768).
fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, udp_len: u16) -> Checksum {
    let mut c = Checksum::new();
    c.add(&src.octets());
    c.add(&dst.octets());
    c.add_u16(u16::from(PROTO_UDP));
    c.add_u16(udp_len);
    c
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn mac_at(b: &[u8], at: usize) -> Mac {
    let mut m = [0; 6];
    m.copy_from_slice(&b[at..at + 6]);
    m
}

fn ipv4_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// Parses and checks a received frame. Never panics, whatever the bytes.
pub fn parse(frame: &[u8]) -> Result<UdpFrame, Reject> {
    if frame.len() < ETH_LEN {
        return Err(Reject::Truncated);
    }
    if be16(frame, 12) != ETHERTYPE_IPV4 {
        return Err(Reject::NotIpv4);
    }
    let ip = &frame[ETH_LEN..];
    if ip.len() < IPV4_LEN {
        return Err(Reject::Truncated);
    }
    if ip[0] >> 4 != 4 {
        return Err(Reject::BadVersion);
    }
    if ip[0] & 0x0f != 5 {
        return Err(Reject::IpOptions);
    }
    let total = usize::from(be16(ip, 2));
    if total < IPV4_LEN {
        return Err(Reject::BadIpLength);
    }
    if total > ip.len() {
        return Err(Reject::Truncated);
    }
    // More Fragments, or a fragment offset; the reserved bit and DF do not matter.
    if be16(ip, 6) & 0x3fff != 0 {
        return Err(Reject::Fragment);
    }
    if ip[9] != PROTO_UDP {
        return Err(Reject::NotUdp);
    }
    let mut header = Checksum::new();
    header.add(&ip[..IPV4_LEN]);
    if header.folded() != 0xffff {
        return Err(Reject::BadIpChecksum);
    }
    let src_ip = ipv4_at(ip, 12);
    let dst_ip = ipv4_at(ip, 16);

    let udp = &ip[IPV4_LEN..total];
    if udp.len() < UDP_LEN {
        return Err(Reject::Truncated);
    }
    let udp_len = be16(udp, 4);
    if usize::from(udp_len) < UDP_LEN || usize::from(udp_len) > udp.len() {
        return Err(Reject::BadUdpLength);
    }
    let udp = &udp[..usize::from(udp_len)];
    let field = be16(udp, 6);
    let checksum = if field == 0 {
        UdpChecksum::Absent
    } else {
        let pseudo = pseudo_header(src_ip, dst_ip, udp_len);
        let mut full = pseudo;
        full.add(udp);
        if full.folded() == 0xffff {
            UdpChecksum::Valid
        } else if field == pseudo.folded() {
            UdpChecksum::Partial
        } else {
            return Err(Reject::BadUdpChecksum);
        }
    };
    let start = HEADERS_LEN;
    Ok(UdpFrame {
        dst_mac: mac_at(frame, 0),
        src_mac: mac_at(frame, 6),
        src: SocketAddrV4::new(src_ip, be16(udp, 0)),
        dst: SocketAddrV4::new(dst_ip, be16(udp, 2)),
        payload: start..start + usize::from(udp_len) - UDP_LEN,
        checksum,
    })
}

/// The two ends of a datagram to send, down to the link layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
}

/// Why headers could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The frame buffer cannot hold the headers and the payload.
    FrameTooSmall,
    /// The payload does not fit one unfragmented IPv4 datagram.
    PayloadTooLarge,
}

/// The largest UDP payload one IPv4 datagram carries.
pub const MAX_PAYLOAD: usize = 65_535 - IPV4_LEN - UDP_LEN;

/// Writes Ethernet, IPv4 and UDP headers in front of the `payload_len` bytes already at
/// `frame[HEADERS_LEN..]`, with both checksums computed in full. Returns the frame's
/// length. `ip_id` is the IPv4 identification (any value: the datagram is never
/// fragmented, RFC 6864).
pub fn write_headers(
    frame: &mut [u8],
    ends: &Endpoints,
    payload_len: usize,
    ip_id: u16,
) -> Result<usize, BuildError> {
    if payload_len > MAX_PAYLOAD {
        return Err(BuildError::PayloadTooLarge);
    }
    let len = HEADERS_LEN + payload_len;
    if frame.len() < len {
        return Err(BuildError::FrameTooSmall);
    }
    let frame = &mut frame[..len];
    frame[0..6].copy_from_slice(&ends.dst_mac);
    frame[6..12].copy_from_slice(&ends.src_mac);
    frame[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());

    let udp_len = (UDP_LEN + payload_len) as u16;
    let ip_total = IPV4_LEN as u16 + udp_len;
    let (src, dst) = (*ends.src.ip(), *ends.dst.ip());
    {
        let ip = &mut frame[ETH_LEN..ETH_LEN + IPV4_LEN];
        ip[0] = 0x45;
        ip[1] = 0;
        ip[2..4].copy_from_slice(&ip_total.to_be_bytes());
        ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
        ip[6..8].copy_from_slice(&FLAGS_DF.to_be_bytes());
        ip[8] = TTL;
        ip[9] = PROTO_UDP;
        ip[10..12].copy_from_slice(&[0, 0]);
        ip[12..16].copy_from_slice(&src.octets());
        ip[16..20].copy_from_slice(&dst.octets());
        let mut c = Checksum::new();
        c.add(ip);
        ip[10..12].copy_from_slice(&c.finish().to_be_bytes());
    }
    let udp_at = ETH_LEN + IPV4_LEN;
    {
        let udp = &mut frame[udp_at..];
        udp[0..2].copy_from_slice(&ends.src.port().to_be_bytes());
        udp[2..4].copy_from_slice(&ends.dst.port().to_be_bytes());
        udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
        udp[6..8].copy_from_slice(&[0, 0]);
        let mut c = pseudo_header(src, dst, udp_len);
        c.add(udp);
        // A computed zero is sent as all ones: zero means "no checksum" (RFC 768).
        let sum = match c.finish() {
            0 => 0xffff,
            s => s,
        };
        udp[6..8].copy_from_slice(&sum.to_be_bytes());
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = [0x02, 0, 0, 0, 0, 0x0a];
    const B: Mac = [0x02, 0, 0, 0, 0, 0x0b];

    fn ends() -> Endpoints {
        Endpoints {
            src_mac: A,
            dst_mac: B,
            src: "10.77.0.2:7882".parse().unwrap(),
            dst: "10.77.0.1:40000".parse().unwrap(),
        }
    }

    fn build(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0; HEADERS_LEN + payload.len()];
        f[HEADERS_LEN..].copy_from_slice(payload);
        let n = write_headers(&mut f, &ends(), payload.len(), 7).unwrap();
        assert_eq!(n, f.len());
        f
    }

    /// Frames the Linux kernel sent on a veth (captured with an AF_PACKET socket on the
    /// peer): 10.77.0.1:40000 → 10.77.0.2:7882, payload "prism". With transmit checksum
    /// offload off, the UDP checksum is whole:
    const KERNEL_FRAME: &str = "02000000000b02000000000a080045000021d9d9400040114c56\
                                0a4d00010a4d00029c401eca000de946707269736d";
    /// With offload on (veth's default), the field holds only the pseudo-header sum.
    const OFFLOADED_FRAME: &str = "02000000000b02000000000a0800450000214c4a40004011d9e5\
                                   0a4d00010a4d00029c401eca000d14bb707269736d";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn a_kernel_frame_parses_with_a_valid_checksum() {
        let f = hex(KERNEL_FRAME);
        let p = parse(&f).unwrap();
        assert_eq!(p.src, "10.77.0.1:40000".parse().unwrap());
        assert_eq!(p.dst, "10.77.0.2:7882".parse().unwrap());
        assert_eq!(p.src_mac, A);
        assert_eq!(p.dst_mac, B);
        assert_eq!(&f[p.payload.clone()], b"prism");
        assert_eq!(p.checksum, UdpChecksum::Valid);
    }

    #[test]
    fn built_headers_match_what_the_kernel_writes() {
        // The kernel's frame, rebuilt: same addresses, payload and IP id; only the ends
        // are swapped back to the kernel's direction.
        let f = hex(KERNEL_FRAME);
        let mut out = vec![0; f.len()];
        out[HEADERS_LEN..].copy_from_slice(b"prism");
        let ends = Endpoints {
            src_mac: A,
            dst_mac: B,
            src: "10.77.0.1:40000".parse().unwrap(),
            dst: "10.77.0.2:7882".parse().unwrap(),
        };
        write_headers(&mut out, &ends, 5, 0xd9d9).unwrap();
        assert_eq!(out, f);
    }

    #[test]
    fn round_trip_of_every_payload_length_up_to_a_few_hundred() {
        for len in 0..300 {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let f = build(&payload);
            let p = parse(&f).unwrap();
            assert_eq!(&f[p.payload.clone()], &payload[..], "len {len}");
            assert_eq!(p.checksum, UdpChecksum::Valid, "len {len}");
            assert_eq!(p.src, ends().src);
            assert_eq!(p.dst, ends().dst);
        }
    }

    #[test]
    fn checksum_in_pieces_equals_checksum_in_one() {
        let data: Vec<u8> = (0..1201u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut whole = Checksum::new();
        whole.add(&data);
        for cut in [0, 1, 2, 3, 5, 600, 601, 1199, 1200, 1201] {
            let mut parts = Checksum::new();
            parts.add(&data[..cut]);
            parts.add(&data[cut..]);
            assert_eq!(parts.finish(), whole.finish(), "cut at {cut}");
        }
        let mut three = Checksum::new();
        three.add(&data[..1]);
        three.add(&data[1..2]);
        three.add(&data[2..]);
        assert_eq!(three.finish(), whole.finish());
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2 (before the complement).
        let mut c = Checksum::new();
        c.add(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
        assert_eq!(c.folded(), 0xddf2);
    }

    #[test]
    fn an_offloaded_kernel_frame_parses_with_a_partial_checksum() {
        let f = hex(OFFLOADED_FRAME);
        let p = parse(&f).unwrap();
        assert_eq!(&f[p.payload.clone()], b"prism");
        assert_eq!(p.checksum, UdpChecksum::Partial);
    }

    #[test]
    fn a_partial_checksum_from_an_offloading_sender_is_accepted() {
        let mut f = build(b"offloaded");
        let p = parse(&f).unwrap();
        let udp_len = (UDP_LEN + 9) as u16;
        let partial = pseudo_header(*p.src.ip(), *p.dst.ip(), udp_len).folded();
        f[ETH_LEN + IPV4_LEN + 6..ETH_LEN + IPV4_LEN + 8].copy_from_slice(&partial.to_be_bytes());
        assert_eq!(parse(&f).unwrap().checksum, UdpChecksum::Partial);
    }

    #[test]
    fn a_zero_checksum_means_none() {
        let mut f = build(b"nochecksum");
        f[ETH_LEN + IPV4_LEN + 6..ETH_LEN + IPV4_LEN + 8].copy_from_slice(&[0, 0]);
        assert_eq!(parse(&f).unwrap().checksum, UdpChecksum::Absent);
    }

    #[test]
    fn corrupt_frames_are_rejected_with_their_reason() {
        let good = build(b"payload!");
        let udp = ETH_LEN + IPV4_LEN;
        type Damage = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(Damage, Reject)> = vec![
            (Box::new(|f| f.truncate(10)), Reject::Truncated),
            (Box::new(|f| f.truncate(ETH_LEN + 10)), Reject::Truncated),
            (Box::new(|f| f.truncate(f.len() - 1)), Reject::Truncated),
            (
                Box::new(|f| f[12..14].copy_from_slice(&[0x08, 0x06])),
                Reject::NotIpv4,
            ),
            (
                Box::new(|f| f[12..14].copy_from_slice(&[0x81, 0x00])),
                Reject::NotIpv4,
            ),
            (
                Box::new(|f| f[12..14].copy_from_slice(&[0x86, 0xdd])),
                Reject::NotIpv4,
            ),
            (Box::new(|f| f[ETH_LEN] = 0x65), Reject::BadVersion),
            (Box::new(|f| f[ETH_LEN] = 0x46), Reject::IpOptions),
            (Box::new(|f| f[ETH_LEN] = 0x44), Reject::IpOptions),
            (Box::new(|f| f[ETH_LEN + 6] = 0x20), Reject::Fragment),
            (Box::new(|f| f[ETH_LEN + 7] = 0x01), Reject::Fragment),
            (Box::new(|f| f[ETH_LEN + 9] = 6), Reject::NotUdp),
            (
                Box::new(|f| f[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&[0, 8])),
                Reject::BadIpLength,
            ),
            (Box::new(|f| f[ETH_LEN + 8] = 1), Reject::BadIpChecksum),
            (
                Box::new(move |f| f[udp + 4..udp + 6].copy_from_slice(&[0, 4])),
                Reject::BadUdpLength,
            ),
            (
                Box::new(move |f| f[udp + 4..udp + 6].copy_from_slice(&[0, 200])),
                Reject::BadUdpLength,
            ),
            (
                Box::new(|f| *f.last_mut().unwrap() ^= 0x40),
                Reject::BadUdpChecksum,
            ),
        ];
        for (i, (damage, reason)) in cases.iter().enumerate() {
            let mut f = good.clone();
            damage(&mut f);
            assert_eq!(parse(&f), Err(*reason), "case {i}");
        }
    }

    #[test]
    fn ethernet_padding_after_a_short_datagram_is_ignored() {
        let mut f = build(b"hi");
        f.resize(60, 0);
        let p = parse(&f).unwrap();
        assert_eq!(&f[p.payload], b"hi");
    }

    #[test]
    fn a_frame_too_small_or_a_payload_too_large_is_refused() {
        let mut f = vec![0; HEADERS_LEN + 3];
        assert_eq!(
            write_headers(&mut f, &ends(), 4, 0),
            Err(BuildError::FrameTooSmall)
        );
        assert_eq!(
            write_headers(&mut f, &ends(), MAX_PAYLOAD + 1, 0),
            Err(BuildError::PayloadTooLarge)
        );
    }

    #[test]
    fn reject_names_and_indices_are_consistent() {
        for (i, r) in Reject::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(!r.as_str().is_empty());
            assert_eq!(r.drop_name(), format!("frame_{}", r.as_str()));
        }
    }
}
