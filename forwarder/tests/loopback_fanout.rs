//! End to end over real UDP on loopback, for each I/O driver: one publisher sends three
//! VP8 simulcast layers to the forwarder, fifty subscribers each ask for one layer. Every
//! packet is accounted for: each subscriber receives exactly the packets of its layer, in
//! order, renumbered without gaps; the forwarder's counters agree; garbage, truncated,
//! oversized and wrong-version datagrams from known and unknown sources are dropped with a
//! reason while nobody loses a packet; a NACK is answered with the subscriber's numbering.
//!
//! The AF_XDP run is the same over a veth pair between two network namespaces (the
//! forwarder on one side, every peer on the other), skipped with a printed reason where
//! that is not permitted. It also interleaves bad Ethernet frames, sent raw from the
//! peers' side (an AF_PACKET socket): some the XDP program passes to the kernel (too
//! short, IP options, a fragment, not UDP), some the driver rejects (truncated, wrong
//! checksums); GetStats must count each by its reason, while the good packets are all
//! accounted for as on the other drivers.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use pb::command::Body;
use prism_forwarder::engine::stats::proto_drop;
use prism_forwarder::engine::DropReason;
use prism_forwarder::io::packet::PacketSocket;
use prism_forwarder::io::{netns, DriverKind, XdpMode};
use prism_forwarder::runtime::{Forwarder, ForwarderConfig};
use prism_forwarder::testing::cmd::{self, request};
use prism_forwarder::testing::veth::{is_root, VethPair};
use prism_forwarder::testing::{SimulcastSource, Tag};
use prism_forwarder::wire::frame::{write_headers, Checksum, Endpoints, HEADERS_LEN};
use prism_forwarder::wire::rtp::RtpPacket;
use prism_proto::control as pb;

const SUBSCRIBERS: usize = 50;
const FRAMES: u64 = 150;
const ROOM: u64 = 7;

fn socket(ip: Ipv4Addr) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    socket2::SockRef::from(&s)
        .set_recv_buffer_size(4 << 20)
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s
}

fn stats(fwd: &Forwarder) -> pb::Stats {
    match request(fwd, Body::GetStats(pb::GetStats {})).body {
        Some(pb::event::Body::Stats(s)) => s,
        other => panic!("unexpected answer {other:?}"),
    }
}

/// Bad Ethernet frames to the media port, one of each kind, built from a good one.
struct BadFrames {
    /// IPv4, cut before the UDP header: the program passes it (`too_short`).
    too_short: Vec<u8>,
    /// IPv4 options (four NOPs), valid checksums, an RTP-looking payload of an unknown
    /// source: the program passes it (`ip_options`) and the kernel delivers it to the
    /// media port's socket, where the engine drops it (unknown source).
    options: Vec<u8>,
    /// A first fragment (More Fragments): the program passes it (`fragment`), the kernel
    /// waits for the rest in vain.
    fragment: Vec<u8>,
    /// IPv4 protocol 253: the program passes it (`not_udp`).
    not_udp: Vec<u8>,
    /// Shorter than its IPv4 total length: the driver drops it (`frame_truncated`).
    truncated: Vec<u8>,
    /// Wrong UDP checksum: the driver drops it (`frame_bad_udp_checksum`).
    bad_udp_checksum: Vec<u8>,
    /// Wrong IPv4 header checksum: the driver drops it (`frame_bad_ip_checksum`).
    bad_ip_checksum: Vec<u8>,
}

impl BadFrames {
    fn new(ends: &Endpoints, payload: &[u8], ip_id: u16) -> Self {
        let good = {
            let mut f = vec![0u8; HEADERS_LEN + payload.len()];
            f[HEADERS_LEN..].copy_from_slice(payload);
            write_headers(&mut f, ends, payload.len(), ip_id).unwrap();
            f
        };
        let fix_ip = |f: &mut Vec<u8>| {
            let ihl = usize::from(f[14] & 0x0f) * 4;
            f[24..26].copy_from_slice(&[0, 0]);
            let mut c = Checksum::new();
            c.add(&f[14..14 + ihl]);
            let sum = c.finish();
            f[24..26].copy_from_slice(&sum.to_be_bytes());
        };
        let mut options = good[..34].to_vec();
        options.extend_from_slice(&[1, 1, 1, 1]);
        options.extend_from_slice(&good[34..]);
        options[14] = 0x46;
        let total = u16::from_be_bytes([options[16], options[17]]) + 4;
        options[16..18].copy_from_slice(&total.to_be_bytes());
        fix_ip(&mut options);
        let mut fragment = good.clone();
        fragment[20..22].copy_from_slice(&0x2000u16.to_be_bytes());
        fix_ip(&mut fragment);
        let mut not_udp = good.clone();
        not_udp[23] = 253;
        fix_ip(&mut not_udp);
        let mut bad_udp_checksum = good.clone();
        bad_udp_checksum[40] ^= 0x5a;
        let mut bad_ip_checksum = good.clone();
        bad_ip_checksum[24] ^= 0x5a;
        BadFrames {
            too_short: good[..30].to_vec(),
            options,
            fragment,
            not_udp,
            truncated: good[..HEADERS_LEN + payload.len() / 2].to_vec(),
            bad_udp_checksum,
            bad_ip_checksum,
        }
    }

    fn all(&self) -> [&[u8]; 7] {
        [
            &self.too_short,
            &self.options,
            &self.fragment,
            &self.not_udp,
            &self.truncated,
            &self.bad_udp_checksum,
            &self.bad_ip_checksum,
        ]
    }
}

struct Received {
    packets: Vec<Vec<u8>>,
}

/// Where the forwarder and its peers run.
enum Net {
    Loopback,
    /// The forwarder in `b` on AF_XDP, the peers in `a`.
    Veth(VethPair),
}

fn run(kind: DriverKind, net: Net) {
    let (bind_ip, peer_ip) = match &net {
        Net::Loopback => (Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST),
        Net::Veth(p) => (p.ip_b, p.ip_a),
    };
    let cfg = ForwarderConfig {
        cores: vec![0],
        pin: false,
        driver: kind,
        bind_ip: IpAddr::V4(bind_ip),
        xdp: matches!(net, Net::Veth(_)).then(|| ("vb".to_string(), XdpMode::Native)),
        ..Default::default()
    };
    // Threads inherit the namespace of the thread that starts them, and sockets keep the
    // one they were made in: start the forwarder from inside side B, make the peers'
    // sockets inside side A.
    let in_ns = |ns: Option<String>, f: Box<dyn FnOnce() -> Vec<UdpSocket> + Send>| {
        thread::spawn(move || {
            if let Some(ns) = ns {
                netns::enter(&ns).expect("entering a namespace");
            }
            f()
        })
        .join()
        .unwrap()
    };
    let fwd = match &net {
        Net::Loopback => Forwarder::start(cfg),
        Net::Veth(p) => {
            let b = p.b.clone();
            thread::spawn(move || {
                netns::enter(&b).expect("entering the forwarder's namespace");
                Forwarder::start(cfg)
            })
            .join()
            .unwrap()
        }
    }
    .expect("forwarder starts");
    let peer_ns = match &net {
        Net::Loopback => None,
        Net::Veth(p) => Some(p.a.clone()),
    };
    let mut peers = in_ns(
        peer_ns,
        Box::new(move || (0..SUBSCRIBERS + 2).map(|_| socket(peer_ip)).collect()),
    );
    let core = fwd.core_addrs()[0];
    // Over veth: a raw sender on the peers' side and the bad frames it sends each round.
    let raw = match &net {
        Net::Loopback => None,
        Net::Veth(p) => {
            let a = p.a.clone();
            let sock = thread::spawn(move || {
                netns::enter(&a).expect("entering the peers' namespace");
                PacketSocket::open("va").expect("an AF_PACKET socket on va")
            })
            .join()
            .unwrap();
            let std::net::SocketAddr::V4(dst) = core else {
                panic!("IPv4 media address")
            };
            let ends = Endpoints {
                src_mac: p.mac(false).expect("va's MAC"),
                dst_mac: p.mac(true).expect("vb's MAC"),
                src: std::net::SocketAddrV4::new(p.ip_a, 9),
                dst,
            };
            let mut rtp = vec![0x80u8, 96, 0, 9, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
            rtp.extend_from_slice(&[0u8; 20]);
            Some((sock, BadFrames::new(&ends, &rtp, 0x4242)))
        }
    };
    let publisher = peers.pop().unwrap();
    let stranger = peers.pop().unwrap();
    let mut src = SimulcastSource::three_layers(0xa000, 0);

    request(&fwd, cmd::room(ROOM));
    request(&fwd, cmd::plain(ROOM, 1, publisher.local_addr().unwrap()));
    request(&fwd, cmd::vp8_track(ROOM, 1, 1, &src.ssrcs()));
    let subs: Vec<UdpSocket> = peers;
    for (i, s) in subs.iter().enumerate() {
        let t = 100 + i as u64;
        request(&fwd, cmd::plain(ROOM, t, s.local_addr().unwrap()));
        let ssrc = 0x5000 + i as u32;
        request(
            &fwd,
            cmd::down_track(ROOM, 1, 1000 + i as u64, t, ssrc, 96, (i % 3) as u32),
        );
    }

    // Receivers: one thread per subscriber, until told to stop.
    let done = Arc::new(AtomicBool::new(false));
    let receivers: Vec<_> = subs
        .into_iter()
        .map(|s| {
            let done = done.clone();
            thread::spawn(move || {
                let mut r = Received {
                    packets: Vec::new(),
                };
                let mut buf = [0u8; 2048];
                let mut idle_since = None::<Instant>;
                loop {
                    match s.recv(&mut buf) {
                        Ok(n) => {
                            r.packets.push(buf[..n].to_vec());
                            idle_since = None;
                        }
                        Err(_) => {
                            if done.load(Ordering::Relaxed) {
                                let t = *idle_since.get_or_insert_with(Instant::now);
                                if t.elapsed() > Duration::from_millis(300) {
                                    break;
                                }
                            }
                        }
                    }
                }
                (s, r)
            })
        })
        .collect();

    let mut sent_per_layer = [0usize; 3];
    let mut bad_sent = 0u64;
    for frame in 0..FRAMES {
        for (layer, pkt) in src.next_frame() {
            publisher.send_to(&pkt, core).unwrap();
            sent_per_layer[layer] += 1;
        }
        if frame % 10 == 5 {
            // Bad input from the publisher's own address and from a stranger.
            let truncated = [0x80u8, 96, 0, 1, 0, 0];
            let version3 = [0xc0u8; 40];
            let garbage = [0x17u8, 0xfe, 0xfd, 1, 2, 3]; // looks like DTLS
            let unknown_ssrc = {
                let mut p = vec![0x80u8, 96, 0, 9, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
                p.extend_from_slice(&[0u8; 20]);
                p
            };
            let oversized = vec![0x80u8; 3000];
            for s in [&publisher, &stranger] {
                for d in [
                    &truncated[..],
                    &version3[..],
                    &garbage[..],
                    &unknown_ssrc[..],
                    &oversized[..],
                ] {
                    s.send_to(d, core).unwrap();
                    bad_sent += 1;
                }
            }
            if let Some((sock, frames)) = &raw {
                for f in frames.all() {
                    sock.send(f).unwrap();
                }
            }
        }
        thread::sleep(Duration::from_millis(2));
    }
    // Wait for the forwarder to have handled everything, then stop the receivers.
    let rounds = FRAMES / 10;
    // Of the raw frames, the driver sees the three it rejects and the one with options
    // (through the kernel's socket).
    let raw_in = if raw.is_some() { 4 * rounds } else { 0 };
    let expected_in: u64 = sent_per_layer.iter().sum::<usize>() as u64 + bad_sent + raw_in;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = stats(&fwd);
    while s.cores[0].datagrams_received < expected_in && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        s = stats(&fwd);
    }
    done.store(true, Ordering::Relaxed);
    let results: Vec<(UdpSocket, Received)> =
        receivers.into_iter().map(|h| h.join().unwrap()).collect();

    let s = stats(&fwd);
    let core_stats = &s.cores[0];
    assert_eq!(core_stats.driver, fwd.driver_name());
    let c = core_stats.counters.clone().unwrap();
    let mut total_received = 0u64;
    for (i, (_, r)) in results.iter().enumerate() {
        let layer = i % 3;
        assert_eq!(
            r.packets.len(),
            sent_per_layer[layer],
            "subscriber {i} (layer {layer}) got every packet of its layer"
        );
        let mut last_seq: Option<u16> = None;
        let mut last_tag: Option<Tag> = None;
        for p in &r.packets {
            let rtp = RtpPacket::new_checked(&p[..]).unwrap();
            assert_eq!(rtp.ssrc().0, 0x5000 + i as u32);
            if let Some(l) = last_seq {
                assert_eq!(
                    rtp.sequence_number(),
                    l.wrapping_add(1),
                    "subscriber {i}: no gap"
                );
            }
            last_seq = Some(rtp.sequence_number());
            let tag = Tag::read(p).unwrap();
            assert_eq!(tag.layer as usize, layer);
            if let Some(t) = last_tag {
                assert!((tag.frame, tag.index) > (t.frame, t.index), "in order");
            }
            last_tag = Some(tag);
        }
        total_received += r.packets.len() as u64;
    }
    assert_eq!(
        c.packets_out, total_received,
        "the forwarder's count matches"
    );
    let not_selected: u64 = (0..SUBSCRIBERS)
        .map(|i| sent_per_layer.iter().sum::<usize>() as u64 - sent_per_layer[i % 3] as u64)
        .sum();
    assert_eq!(proto_drop(&c, DropReason::LayerNotSelected), not_selected);
    assert_eq!(
        proto_drop(&c, DropReason::Truncated),
        rounds,
        "truncated from the publisher"
    );
    // A datagram that is not RTP/RTCP by its first byte gets that reason whoever sent it.
    assert_eq!(
        proto_drop(&c, DropReason::BadVersion),
        2 * rounds,
        "version 3"
    );
    assert_eq!(
        proto_drop(&c, DropReason::UnknownProtocol),
        2 * rounds,
        "DTLS-looking"
    );
    assert_eq!(proto_drop(&c, DropReason::UnknownSsrc), rounds);
    assert_eq!(proto_drop(&c, DropReason::Oversized), 2 * rounds);
    // The raw frame with IP options reaches the engine through the kernel's socket, from
    // a source nobody registered.
    let raw_unknown = if raw.is_some() { rounds } else { 0 };
    assert_eq!(
        proto_drop(&c, DropReason::UnknownSource),
        2 * rounds + raw_unknown,
        "the stranger's RTP-looking datagrams (truncated, unknown SSRC)"
    );
    if raw.is_some() {
        check_bad_frames(core_stats, &c, rounds);
    }
    let pub_stats = s.transports.iter().find(|t| t.transport_id == 1).unwrap();
    let pc = pub_stats.counters.clone().unwrap();
    assert_eq!(
        proto_drop(&pc, DropReason::Truncated),
        rounds,
        "counted on the transport"
    );

    // NACK from subscriber 4 (layer 1) for a packet it received in the middle.
    let (sock, r) = &results[4];
    let original = &r.packets[r.packets.len() / 2];
    let seq = RtpPacket::new_checked(&original[..])
        .unwrap()
        .sequence_number();
    let mut nack = vec![0x81, 205, 0, 3];
    nack.extend_from_slice(&0x1234u32.to_be_bytes());
    nack.extend_from_slice(&(0x5000u32 + 4).to_be_bytes());
    nack.extend_from_slice(&seq.to_be_bytes());
    nack.extend_from_slice(&[0, 0]);
    sock.send_to(&nack, core).unwrap();
    let mut buf = [0u8; 2048];
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let n = sock.recv(&mut buf).expect("retransmission arrives");
    assert_eq!(
        &buf[..n],
        &original[..],
        "same bytes, subscriber's numbering"
    );
    let s = stats(&fwd);
    let c = s.cores[0].counters.clone().unwrap();
    assert_eq!((c.nacks_received, c.retransmits_sent), (1, 1));
    let cs = &s.cores[0];
    assert!(cs.loop_turns > 0 && cs.batches_sent > 0 && cs.max_send_batch >= 1);
    assert_eq!((cs.send_errors, cs.queue_full), (0, 0));
    fwd.shutdown();
}

/// Every bad Ethernet frame counted by its reason, on the AF_XDP run.
fn check_bad_frames(cs: &pb::CoreStats, c: &pb::Counters, rounds: u64) {
    let drop = |reason: &str| {
        c.drops
            .iter()
            .find(|d| d.reason == reason)
            .map_or(0, |d| d.count)
    };
    let frame_drops: Vec<(&str, u64)> = c
        .drops
        .iter()
        .filter(|d| d.reason.starts_with("frame_"))
        .map(|d| (d.reason.as_str(), d.count))
        .collect();
    eprintln!("driver drops: {frame_drops:?}");
    assert_eq!(drop("frame_truncated"), rounds);
    assert_eq!(drop("frame_bad_udp_checksum"), rounds);
    assert_eq!(drop("frame_bad_ip_checksum"), rounds);
    assert_eq!(
        frame_drops.len(),
        3,
        "no other frame drops: {frame_drops:?}"
    );
    let x = cs.xdp.as_ref().expect("xdp stats on af_xdp");
    eprintln!("xdp stats: {x:?}");
    assert_eq!((x.interface.as_str(), x.queue), ("vb", 0));
    assert_eq!(x.bind_mode, "copy", "veth has no zero-copy");
    let passed = |reason: &str| {
        x.passed
            .iter()
            .find(|d| d.reason == reason)
            .map_or(0, |d| d.count)
    };
    assert_eq!(passed("too_short"), rounds);
    assert_eq!(passed("ip_options"), rounds);
    assert_eq!(passed("not_udp"), rounds);
    // The raw fragment, and the fragments of the two oversized (3000-byte) datagrams the
    // peers' kernel split to fit the 1500-byte MTU (1480 bytes of IPv4 payload each).
    let oversized_fragments = 2 * (3000u64 + 8).div_ceil(1480);
    assert_eq!(passed("fragment"), rounds * (1 + oversized_fragments));
    // Through the kernel's socket: the frame with options and the reassembled oversized
    // datagrams.
    assert_eq!(x.kernel_received, rounds * (1 + 2));
}

#[test]
fn fanout_50_subscribers_io_uring() {
    if !prism_forwarder::io::uring_available() {
        assert!(
            std::env::var_os("PRISM_ALLOW_NO_URING").is_some(),
            "io_uring is unavailable here; set PRISM_ALLOW_NO_URING=1 to skip"
        );
        return;
    }
    run(DriverKind::IoUring, Net::Loopback);
}

#[test]
fn fanout_50_subscribers_mmsg() {
    run(DriverKind::Mmsg, Net::Loopback);
}

#[test]
fn fanout_50_subscribers_af_xdp_over_veth() {
    if !is_root() {
        eprintln!("skipped: AF_XDP needs root (network namespaces, XDP)");
        return;
    }
    let Some(pair) = VethPair::new() else {
        eprintln!("skipped: could not create network namespaces and a veth pair");
        return;
    };
    run(DriverKind::AfXdp, Net::Veth(pair));
}
