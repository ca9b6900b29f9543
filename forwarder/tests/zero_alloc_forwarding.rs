//! A counting global allocator proves the forwarding path allocates nothing in steady
//! state: after a warm-up, thousands of packets forwarded to many subscribers over real
//! UDP, on each I/O driver, leave the process-wide allocation count unchanged.
//!
//! The test runs alone in this binary (one `#[test]`), so no other test thread allocates
//! while it counts; the test's own sockets use `send_to`/`recv`, which do not allocate.

use std::alloc::System;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use pb::command::Body;
use prism_forwarder::io::DriverKind;
use prism_forwarder::runtime::{Forwarder, ForwarderConfig};
use prism_forwarder::testing::{cmd, SimulcastSource};
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

fn request(fwd: &Forwarder, body: Body) {
    let ev = fwd.client().request(body, Duration::from_secs(5)).unwrap();
    if let Some(pb::event::Body::Error(e)) = ev.body {
        panic!("{}", e.message);
    }
}

/// Sends `frames` frames and waits until every subscriber has drained what it expects.
/// Returns the packets received in total.
fn pump(
    frames: &[Vec<(usize, Vec<u8>)>],
    publisher: &UdpSocket,
    core: std::net::SocketAddr,
    subs: &[UdpSocket],
) -> Result<usize, String> {
    let mut buf = [0u8; 2048];
    let mut got = 0;
    for frame in frames {
        for (_, p) in frame {
            publisher.send_to(p, core).unwrap();
        }
        // Each subscriber takes layer (i % 3): drain what the frame produced for it.
        for (i, s) in subs.iter().enumerate() {
            let want = frame.iter().filter(|(l, _)| *l == i % 3).count();
            for _ in 0..want {
                let t = Instant::now();
                if let Err(e) = s.recv(&mut buf) {
                    return Err(format!(
                        "subscriber {i} missed a packet after {got} received ({e:?} after {:?})",
                        t.elapsed()
                    ));
                }
                got += 1;
            }
        }
    }
    Ok(got)
}

/// Fails the test with the forwarder's counters, which say where a packet went.
fn explain(fwd: &Forwarder, what: String) -> ! {
    let stats = fwd
        .client()
        .request(Body::GetStats(pb::GetStats {}), Duration::from_secs(5));
    panic!("{} driver: {what}\nstats: {stats:#?}", fwd.driver_name());
}

fn run(kind: DriverKind) {
    let fwd = Forwarder::start(ForwarderConfig {
        cores: vec![0],
        pin: false,
        driver: kind,
        ..Default::default()
    })
    .unwrap();
    let core = fwd.core_addrs()[0];
    let publisher = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut src = SimulcastSource::three_layers(0x7000, 0);
    request(&fwd, cmd::room(1));
    request(&fwd, cmd::plain(1, 1, publisher.local_addr().unwrap()));
    request(&fwd, cmd::vp8_track(1, 1, 1, &src.ssrcs()));
    let subs: Vec<UdpSocket> = (0..SUBSCRIBERS)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s
        })
        .collect();
    for (i, s) in subs.iter().enumerate() {
        let t = 10 + i as u64;
        request(&fwd, cmd::plain(1, t, s.local_addr().unwrap()));
        let ssrc = 0x9000 + i as u32;
        request(
            &fwd,
            cmd::down_track(1, 1, 100 + i as u64, t, ssrc, 96, (i % 3) as u32),
        );
    }
    // Build every packet up front: the generator allocates, the forwarder must not.
    let warm: Vec<_> = (0..60).map(|_| src.next_frame()).collect();
    let steady: Vec<_> = (0..300).map(|_| src.next_frame()).collect();
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
        run(DriverKind::IoUring);
    } else {
        assert!(
            std::env::var_os("PRISM_ALLOW_NO_URING").is_some(),
            "io_uring is unavailable here; set PRISM_ALLOW_NO_URING=1 to skip it"
        );
    }
    run(DriverKind::Mmsg);
}
