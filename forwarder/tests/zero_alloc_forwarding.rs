//! A counting global allocator proves the forwarding path allocates nothing in steady
//! state: after a warm-up, thousands of packets forwarded to many subscribers over real
//! UDP, on each I/O driver, leave the process-wide allocation count unchanged. AF_XDP runs
//! over a veth pair between two network namespaces (where root is available).
//!
//! The rounds include the packet path's side work: the publisher reorders a packet and
//! repairs it with RTX, repeats packets as RTX (unwrapped, then dropped as duplicates) and
//! sends sender reports; half the subscribers NACK and get RTX answers; the timer sends
//! receiver and sender reports.
//!
//! Header extensions are on: every media and RTX packet from the publisher carries a
//! transport-wide number, and the timer sends it transport-cc feedback; each subscriber's
//! copy carries its mid, abs-send-time and its transport's number; subscriber 0 answers
//! with transport-cc feedback each frame, which runs the bandwidth estimator and the layer
//! allocation.
//!
//! The test runs alone in this binary (one `#[test]`), so no other test thread allocates
//! while it counts; the test's own sockets use `send_to`/`recv`, which do not allocate.

use std::alloc::System;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use pb::command::Body;
use prism_forwarder::engine::EngineConfig;
use prism_forwarder::ids::Ssrc;
use prism_forwarder::io::{netns, DriverKind, XdpMode};
use prism_forwarder::runtime::{Forwarder, ForwarderConfig};
use prism_forwarder::testing::veth::{is_root, VethPair};
use prism_forwarder::testing::{cmd, with_extensions, SimulcastSource};
use prism_forwarder::wire::rtcp::{emit_twcc, FeedbackHeader};
use prism_forwarder::wire::rtp::RtpPacket;
use prism_proto::control as pb;
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations (including reallocations) made by every thread so far.
fn allocations() -> usize {
    let s = GLOBAL.stats();
    s.allocations + s.reallocations
}

const SUBSCRIBERS: usize = 20;
/// RTX payload type, both from the publisher and toward subscribers.
const RTX_PT: u8 = 97;

/// Transport-cc extension id on every transport (mid 1, abs-send-time 2).
const TCC: u8 = 3;

fn rtx_ssrc(layer: usize) -> u32 {
    0x7100 + layer as u32
}

/// One frame as the publisher sends it, and how many media packets each layer yields.
struct Frame {
    datagrams: Vec<Vec<u8>>,
    per_layer: [usize; 3],
    /// RTX subscribers NACK their last packet after this frame.
    nack: bool,
}

/// The RTX form (RFC 4588) of `p`, which has no header extensions or padding.
fn rtx_of(p: &[u8], layer: usize, seq: u16) -> Vec<u8> {
    let mut r = p[..12].to_vec();
    r[1] = (r[1] & 0x80) | RTX_PT;
    r[2..4].copy_from_slice(&seq.to_be_bytes());
    r[8..12].copy_from_slice(&rtx_ssrc(layer).to_be_bytes());
    r.extend_from_slice(&p[2..4]);
    r.extend_from_slice(&p[12..]);
    r
}

/// `n` frames of `src` with RTX, reordering and sender reports mixed in (see the module
/// doc), built before counting starts.
fn script(src: &mut SimulcastSource, n: usize, rtx_seq: &mut u16, tseq: &mut u16) -> Vec<Frame> {
    let ssrcs = src.ssrcs();
    // Every RTP packet (media or RTX) takes the publisher's next transport-wide number.
    let mut stamp = |p: Vec<u8>| {
        *tseq = tseq.wrapping_add(1);
        with_extensions(&p, &[(TCC, &tseq.to_be_bytes())])
    };
    (0..n)
        .map(|i| {
            let packets = src.next_frame();
            let mut per_layer = [0; 3];
            for (l, _) in &packets {
                per_layer[*l] += 1;
            }
            let mut datagrams = Vec::new();
            let mut held = None;
            for (l, p) in packets {
                if i % 10 == 5 && l == 2 && held.is_none() {
                    // Lost on the way, repaired by RTX after the rest of the frame.
                    held = Some(p);
                    continue;
                }
                if i % 10 == 7 && l == 1 {
                    *rtx_seq = rtx_seq.wrapping_add(1);
                    datagrams.push(stamp(p.clone()));
                    datagrams.push(stamp(rtx_of(&p, 1, *rtx_seq)));
                    continue;
                }
                datagrams.push(stamp(p));
            }
            if let Some(p) = held {
                *rtx_seq = rtx_seq.wrapping_add(1);
                datagrams.push(stamp(rtx_of(&p, 2, *rtx_seq)));
            }
            if i % 10 == 0 {
                for (l, s) in ssrcs.iter().enumerate() {
                    let mut sr = vec![0x80, 200, 0, 6];
                    sr.extend_from_slice(&s.0.to_be_bytes());
                    sr.extend_from_slice(&(0xe000_0000_0000_0000u64 + i as u64).to_be_bytes());
                    sr.extend_from_slice(&(1000 * i as u32 + l as u32).to_be_bytes());
                    sr.extend_from_slice(&[0; 8]);
                    datagrams.push(sr);
                }
            }
            Frame {
                datagrams,
                per_layer,
                nack: i % 10 == 3,
            }
        })
        .collect()
}

/// RTCP (sender reports) and RTX answers: not counted as forwarded media.
fn is_extra(d: &[u8]) -> bool {
    d.len() < 12 || (192..=223).contains(&d[1]) || d[1] & 0x7f == RTX_PT
}

fn request(fwd: &Forwarder, body: Body) {
    cmd::request(fwd, body);
}

/// Sends `frames` frames and waits until every subscriber has drained what it expects.
/// Returns the media packets received in total.
fn pump(
    frames: &[Frame],
    publisher: &UdpSocket,
    core: std::net::SocketAddr,
    subs: &[UdpSocket],
) -> Result<usize, String> {
    let mut buf = [0u8; 2048];
    let mut got = 0;
    let mut last_seq = [0u16; SUBSCRIBERS];
    let mut fb = [0u8; 512];
    let mut deltas = [None::<i32>; 64];
    let mut ref_time = 0;
    for frame in frames {
        for p in &frame.datagrams {
            publisher.send_to(p, core).unwrap();
        }
        // Each subscriber takes layer (i % 3): drain what the frame produced for it.
        for (i, s) in subs.iter().enumerate() {
            let want = frame.per_layer[i % 3];
            let mut n = 0;
            let mut base = None;
            while n < want {
                let t = Instant::now();
                let len = match s.recv(&mut buf) {
                    Ok(len) => len,
                    Err(e) => {
                        return Err(format!(
                            "subscriber {i} missed a packet after {got} received ({e:?} after \
                             {:?})",
                            t.elapsed()
                        ))
                    }
                };
                if is_extra(&buf[..len]) {
                    continue;
                }
                last_seq[i] = u16::from_be_bytes([buf[2], buf[3]]);
                let p = RtpPacket::new_checked(&buf[..len]).map_err(|e| format!("{e:?}"))?;
                let (Some(mid), Some(tseq)) = (p.extension(1), p.extension(TCC)) else {
                    return Err(format!("subscriber {i}: extensions missing"));
                };
                if mid != [&b"m0"[..], b"m1", b"m2"][i % 3] {
                    return Err(format!("subscriber {i}: wrong mid"));
                }
                base.get_or_insert(u16::from_be_bytes([tseq[0], tseq[1]]));
                if n < deltas.len() {
                    deltas[n] = Some(1000);
                }
                n += 1;
                got += 1;
            }
            // Subscriber 0 reports what it got, as a browser would (RTX answers and
            // reports it skipped above leave gaps, reported lost).
            if let (0, Some(base)) = (i, base) {
                ref_time += 1;
                let h = FeedbackHeader {
                    sender_ssrc: Ssrc(1),
                    media_ssrc: Ssrc(out_ssrc(0)),
                    base_seq: base,
                    reference_time: ref_time,
                    fb_pkt_count: ref_time as u8,
                };
                let k = n.min(deltas.len());
                let len = emit_twcc(&mut fb, h, &deltas[..k]).map_err(|e| format!("{e:?}"))?;
                s.send_to(&fb[..len], core).unwrap();
            }
            if frame.nack && i % 2 == 0 {
                // Generic NACK (RFC 4585) for the last packet received, built on the stack.
                let mut nack = [0x81, 205, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
                nack[8..12].copy_from_slice(&out_ssrc(i).to_be_bytes());
                nack[12..14].copy_from_slice(&last_seq[i].to_be_bytes());
                s.send_to(&nack, core).unwrap();
            }
        }
    }
    Ok(got)
}

fn out_ssrc(i: usize) -> u32 {
    0x9000 + i as u32
}

/// Fails the test with the forwarder's counters, which say where a packet went.
fn explain(fwd: &Forwarder, what: String) -> ! {
    let stats = fwd
        .client()
        .request(Body::GetStats(pb::GetStats {}), Duration::from_secs(5));
    panic!("{} driver: {what}\nstats: {stats:#?}", fwd.driver_name());
}

/// Makes `n` peer sockets on `ip`, inside namespace `ns` if given.
fn peer_sockets(ns: Option<&str>, ip: Ipv4Addr, n: usize) -> Vec<UdpSocket> {
    let ns = ns.map(str::to_string);
    std::thread::spawn(move || {
        if let Some(ns) = ns {
            netns::enter(&ns).expect("entering the peers' namespace");
        }
        (0..n)
            .map(|_| UdpSocket::bind((ip, 0)).unwrap())
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap()
}

/// Runs on loopback, or with the forwarder on AF_XDP in `veth`'s side B and every peer
/// in side A.
fn run(kind: DriverKind, veth: Option<&VethPair>) {
    let (bind_ip, peer_ip) = veth.map_or((Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST), |p| {
        (p.ip_b, p.ip_a)
    });
    let cfg = ForwarderConfig {
        cores: vec![0],
        pin: false,
        driver: kind,
        bind_ip: IpAddr::V4(bind_ip),
        xdp: veth.map(|_| ("vb".to_string(), XdpMode::Native)),
        // Reports every 20 ms, so that several go out during each counted round.
        engine: EngineConfig {
            report_interval: Duration::from_millis(20),
            ..Default::default()
        },
        ..Default::default()
    };
    let fwd = match veth {
        None => Forwarder::start(cfg),
        Some(p) => {
            let b = p.b.clone();
            std::thread::spawn(move || {
                netns::enter(&b).expect("entering the forwarder's namespace");
                Forwarder::start(cfg)
            })
            .join()
            .unwrap()
        }
    }
    .unwrap();
    let core = fwd.core_addrs()[0];
    let mut peers = peer_sockets(veth.map(|p| p.a.as_str()), peer_ip, SUBSCRIBERS + 1);
    let publisher = peers.pop().unwrap();
    let mut src = SimulcastSource::three_layers(0x7000, 0);
    request(&fwd, cmd::room(1));
    request(&fwd, cmd::plain(1, 1, publisher.local_addr().unwrap()));
    let ids = pb::RtpHeaderExtensions {
        mid: 1,
        abs_send_time: 2,
        transport_cc: u32::from(TCC),
        ..Default::default()
    };
    request(&fwd, cmd::header_extensions(1, 1, ids, true));
    let track = match cmd::vp8_track(1, 1, 1, &src.ssrcs()) {
        Body::AddTrack(mut t) => {
            for (l, layer) in t.layers.iter_mut().enumerate() {
                layer.rtx_ssrc = rtx_ssrc(l);
            }
            t.rtx_payload_type = RTX_PT.into();
            Body::AddTrack(t)
        }
        _ => unreachable!(),
    };
    request(&fwd, track);
    let subs: Vec<UdpSocket> = peers;
    for s in &subs {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    }
    for (i, s) in subs.iter().enumerate() {
        let t = 10 + i as u64;
        request(&fwd, cmd::plain(1, t, s.local_addr().unwrap()));
        request(&fwd, cmd::header_extensions(1, t, ids, false));
        let (layer, mid) = ((i % 3) as u32, format!("m{}", i % 3));
        let mut dt =
            cmd::down_track_with_mid(1, 1, 100 + i as u64, t, out_ssrc(i), 96, layer, &mid);
        if let Body::AddDownTrack(d) = &mut dt {
            if i % 2 == 0 {
                d.rtx_ssrc = 0xa000 + i as u32;
                d.rtx_payload_type = RTX_PT.into();
            }
        }
        request(&fwd, dt);
    }
    // Build every packet up front: the generator allocates, the forwarder must not.
    let (mut rtx_seq, mut tseq) = (0, 0);
    let warm = script(&mut src, 60, &mut rtx_seq, &mut tseq);
    let steady = script(&mut src, 300, &mut rtx_seq, &mut tseq);
    if let Err(e) = pump(&warm, &publisher, core, &subs) {
        explain(&fwd, e);
    }
    // Let timers and the first stats settle, then count.
    std::thread::sleep(Duration::from_millis(250));
    // The counter is process-wide: another thread (the test harness, the router) may
    // allocate once during a round. An allocation per forwarded packet would show in every
    // round (thousands of them), so the cleanest of three rounds must be zero.
    let mut cleanest = usize::MAX;
    let mut forwarded = 0;
    for round in steady.chunks(steady.len() / 3) {
        let before = allocations();
        let t = Instant::now();
        let n = match pump(round, &publisher, core, &subs) {
            Ok(n) => n,
            Err(e) => explain(&fwd, e),
        };
        let allocated = allocations() - before;
        eprintln!(
            "{}: {n} packets forwarded in {:?}, {allocated} allocations",
            fwd.driver_name(),
            t.elapsed(),
        );
        cleanest = cleanest.min(allocated);
        forwarded += n;
    }
    assert!(forwarded > 3000, "forwarded {forwarded}");
    // The side work really ran.
    let stats = fwd
        .client()
        .request(Body::GetStats(pb::GetStats {}), Duration::from_secs(5))
        .unwrap();
    let Some(pb::event::Body::Stats(stats)) = stats.body else {
        panic!("no stats");
    };
    let c = stats.cores[0].counters.clone().unwrap_or_default();
    eprintln!(
        "rtx sent {}, received {}, recovered {}, SR {}, RR {}",
        c.rtx_sent, c.rtx_received, c.rtx_recovered, c.sender_reports_sent, c.receiver_reports_sent
    );
    assert!(c.rtx_sent > 0 && c.rtx_recovered > 0 && c.rtx_received > c.rtx_recovered);
    assert!(c.sender_reports_sent > 0 && c.receiver_reports_sent > 0);
    // Transport-cc feedback went to the publisher, and subscriber 0's reached its
    // estimator.
    let by_id = |id: u64| {
        stats
            .transports
            .iter()
            .find(|t| t.transport_id == id)
            .unwrap()
    };
    assert!(
        by_id(1).twcc_feedback_sent > 0,
        "feedback toward the publisher"
    );
    let bwe = by_id(10)
        .bandwidth
        .as_ref()
        .expect("an estimate for subscriber 0");
    assert!(bwe.feedbacks > 100, "{bwe:?}");
    assert_eq!(
        cleanest,
        0,
        "allocations while forwarding ({})",
        fwd.driver_name()
    );
    fwd.shutdown();
}

#[test]
fn forwarding_allocates_nothing_in_steady_state() {
    if prism_forwarder::io::uring_available() {
        run(DriverKind::IoUring, None);
    } else {
        assert!(
            std::env::var_os("PRISM_ALLOW_NO_URING").is_some(),
            "io_uring is unavailable here; set PRISM_ALLOW_NO_URING=1 to skip it"
        );
    }
    run(DriverKind::Mmsg, None);
    if !is_root() {
        eprintln!("af_xdp skipped: it needs root (network namespaces, XDP)");
        return;
    }
    match VethPair::new() {
        Some(pair) => run(DriverKind::AfXdp, Some(&pair)),
        None => eprintln!("af_xdp skipped: could not create a veth pair"),
    }
}
