//! AF_XDP on several cores: one XDP program per interface, shared by the cores, each on
//! its own receive queue. A veth pair with two queues a side; what the peers send from
//! CPU *i* is steered (XPS) to queue *i*, as RSS or ntuple rules do on a NIC. Each core
//! holds a room whose publisher sends from that core's CPU: both rooms deliver every
//! packet, each through its own core's AF_XDP socket. A stray sender puts datagrams for
//! core 0's port on queue 1: the program passes them (`wrong_queue`, counted on queue 1)
//! and core 0 reads them from its kernel socket (`kernel_received`). The program leaves
//! the interface with the last core.
//!
//! Also: a zero-copy bind is refused on veth with the cause, and `auto` falls back to copy
//! mode. Root only (namespaces, XDP); skipped with a printed reason otherwise.

use std::net::{IpAddr, SocketAddr, SocketAddrV4, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use pb::command::Body;
use prism_forwarder::engine::stats::proto_drop;
use prism_forwarder::engine::DropReason;
use prism_forwarder::io::afxdp::{AfXdpConfig, AfXdpDriver};
use prism_forwarder::io::{netns, Driver, DriverKind, XdpBind, XdpMode};
use prism_forwarder::runtime::{Forwarder, ForwarderConfig};
use prism_forwarder::testing::cmd::{self, request};
use prism_forwarder::testing::veth::{is_root, VethPair};
use prism_proto::control as pb;

const PACKETS: u16 = 400;
const SUBSCRIBERS: usize = 4;
const STRAY: u64 = 25;

fn stats(fwd: &Forwarder) -> pb::Stats {
    match request(fwd, Body::GetStats(pb::GetStats {})).body {
        Some(pb::event::Body::Stats(s)) => s,
        other => panic!("unexpected answer {other:?}"),
    }
}

fn pair(queues: u32) -> Option<VethPair> {
    if !is_root() {
        eprintln!("skipped: AF_XDP needs root (network namespaces, XDP)");
        return None;
    }
    let p = VethPair::with_queues(queues);
    if p.is_none() {
        eprintln!("skipped: could not create network namespaces and a veth pair");
    }
    p
}

/// Runs `f` on a thread inside namespace `ns` (sockets keep the namespace they are made
/// in).
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    thread::spawn(move || {
        netns::enter(&ns).expect("entering a namespace");
        f()
    })
    .join()
    .unwrap()
}

/// Sends from CPU `cpu`, so XPS puts the datagrams on `va`'s queue `cpu`.
fn send_from_cpu(cpu: usize, sock: UdpSocket, to: SocketAddr, packets: Vec<Vec<u8>>) {
    thread::spawn(move || {
        assert!(
            core_affinity::set_for_current(core_affinity::CoreId { id: cpu }),
            "pinning the sender to CPU {cpu}"
        );
        for p in packets {
            sock.send_to(&p, to).unwrap();
            // Keep each veth queue's backlog short.
            thread::sleep(Duration::from_micros(200));
        }
    })
    .join()
    .unwrap();
}

#[test]
fn two_cores_share_one_xdp_program_each_on_its_own_queue() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipped: needs two CPUs to steer two queues");
        return;
    }
    let Some(p) = pair(2) else { return };
    assert!(p.steer_by_cpu(2), "XPS on va");
    assert!(p.static_neighbours(), "permanent neighbour entries");
    let cfg = ForwarderConfig {
        cores: vec![0, 1],
        pin: false,
        driver: DriverKind::AfXdp,
        bind_ip: IpAddr::V4(p.ip_b),
        xdp: Some(("vb".to_string(), XdpMode::Native)),
        // veth has no zero-copy: auto binds in copy mode.
        xdp_bind: XdpBind::Auto,
        ..Default::default()
    };
    let b = p.b.clone();
    let fwd = in_ns(&b, move || Forwarder::start(cfg)).expect("two af_xdp cores start");
    assert!(p.xdp_attached(), "one program on vb");
    let addrs = fwd.core_addrs();

    // A room per core: a publisher and its subscribers.
    let peer_ip = p.ip_a;
    let mut rooms = Vec::new();
    for room in 1..=2u64 {
        let pb::event::Body::RoomCreated(r) = request(&fwd, cmd::room(room)).body.unwrap() else {
            panic!("room created")
        };
        let socks = in_ns(&p.a, move || {
            (0..=SUBSCRIBERS)
                .map(|_| {
                    let s = UdpSocket::bind((peer_ip, 0)).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    s
                })
                .collect::<Vec<_>>()
        });
        let t = room * 100;
        request(&fwd, cmd::plain(room, t, socks[0].local_addr().unwrap()));
        request(&fwd, cmd::opus_track(room, t, 1, 0x77 + room as u32));
        for (i, s) in socks[1..].iter().enumerate() {
            let st = t + 1 + i as u64;
            request(&fwd, cmd::plain(room, st, s.local_addr().unwrap()));
            request(
                &fwd,
                cmd::down_track(room, 1, st, st, 0x500 + st as u32, 0, 0),
            );
        }
        rooms.push((r.core as usize, socks));
    }
    let mut cores: Vec<usize> = rooms.iter().map(|(c, _)| *c).collect();
    cores.sort();
    assert_eq!(cores, [0, 1], "a room per core");

    // Receivers, until they have every packet (or time out).
    let receivers: Vec<_> = rooms
        .iter()
        .flat_map(|(core, socks)| {
            let core = *core;
            socks[1..].iter().map(move |s| {
                let s = s.try_clone().unwrap();
                thread::spawn(move || {
                    let mut buf = [0u8; 256];
                    let mut got = 0u16;
                    while got < PACKETS && s.recv(&mut buf).is_ok() {
                        got += 1;
                    }
                    (core, got)
                })
            })
        })
        .collect();
    // Each publisher sends from its core's CPU; both at once.
    let senders: Vec<_> = rooms
        .iter()
        .map(|(core, socks)| {
            let (core, sock) = (*core, socks[0].try_clone().unwrap());
            let ssrc = 0x77 + 1 + rooms.iter().position(|(c, _)| *c == core).unwrap() as u32;
            let packets = (0..PACKETS)
                .map(|seq| {
                    let mut pkt = vec![0x80, 111];
                    pkt.extend_from_slice(&seq.to_be_bytes());
                    pkt.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
                    pkt.extend_from_slice(&ssrc.to_be_bytes());
                    pkt.extend_from_slice(&[0xab; 60]);
                    pkt
                })
                .collect();
            let to = addrs[core];
            thread::spawn(move || send_from_cpu(core, sock, to, packets))
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    // Stray datagrams for core 0's port, sent from CPU 1: they arrive on queue 1.
    let stray = in_ns(&p.a, move || UdpSocket::bind((peer_ip, 0)).unwrap());
    let junk = vec![vec![0x80u8, 111, 0, 1, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]; STRAY as usize];
    send_from_cpu(1, stray, addrs[0], junk);

    let mut delivered = [0u64; 2];
    for r in receivers {
        let (core, got) = r.join().unwrap();
        assert_eq!(got, PACKETS, "a subscriber on core {core} got every packet");
        delivered[core] += u64::from(got);
    }
    // The stray datagrams reach core 0 through its kernel socket (wait for them).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut s = stats(&fwd);
    while s.cores[0].xdp.as_ref().map_or(0, |x| x.kernel_received) < STRAY
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(20));
        s = stats(&fwd);
    }
    for c in &s.cores {
        let x = c.xdp.as_ref().expect("xdp stats");
        let counters = c.counters.clone().unwrap();
        eprintln!(
            "core {}: queue {}, {} received, {} out, kernel_received {}, passed {:?}, bind {}",
            c.core,
            x.queue,
            c.datagrams_received,
            counters.packets_out,
            x.kernel_received,
            x.passed,
            x.bind_mode
        );
        let core = c.core as usize;
        assert_eq!(x.queue, c.core, "core i serves queue i");
        assert_eq!(x.bind_mode, "copy");
        assert_eq!(counters.packets_out, delivered[core]);
    }
    let (x0, x1) = (
        s.cores[0].xdp.clone().unwrap(),
        s.cores[1].xdp.clone().unwrap(),
    );
    let wrong_queue = |x: &pb::XdpStats| {
        x.passed
            .iter()
            .find(|d| d.reason == "wrong_queue")
            .map_or(0, |d| d.count)
    };
    // Each publisher's packets came through its own core's AF_XDP socket; only the
    // strays took the kernel path, passed on queue 1 and read by core 0.
    assert_eq!((x0.kernel_received, x1.kernel_received), (STRAY, 0));
    assert_eq!((wrong_queue(&x0), wrong_queue(&x1)), (0, STRAY));
    let c0 = s.cores[0].counters.clone().unwrap();
    assert_eq!(proto_drop(&c0, DropReason::UnknownSource), STRAY);

    fwd.shutdown();
    assert!(!p.xdp_attached(), "the program left with the last core");
}

#[test]
fn zero_copy_is_refused_on_veth_and_auto_falls_back_to_copy() {
    let Some(p) = pair(1) else { return };
    let ip = p.ip_b;
    let (zc, auto) = in_ns(&p.b, move || {
        let mut cfg = AfXdpConfig::new("vb", SocketAddrV4::new(ip, 7990));
        cfg.bind = XdpBind::ZeroCopy;
        let zc = AfXdpDriver::new(&cfg)
            .map(|_| ())
            .map_err(|e| e.to_string());
        // Another port: the refused attempt's socket may outlive its drop for a moment
        // (a child forked by a test running alongside holds it until it execs).
        cfg.local.set_port(7991);
        cfg.bind = XdpBind::Auto;
        let auto = AfXdpDriver::new(&cfg).map(|d| d.xdp_stats().unwrap().zero_copy);
        (zc, auto.map_err(|e| e.to_string()))
    });
    let e = zc.expect_err("veth has no zero-copy");
    eprintln!("{e}");
    assert!(e.contains("zero-copy") && e.contains("copy mode"), "{e}");
    assert_eq!(auto, Ok(false), "auto binds in copy mode");
    assert!(!p.xdp_attached(), "nothing left on vb");
}
