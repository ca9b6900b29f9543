//! Both I/O drivers against real loopback sockets: echo, fan-out, sends outside a turn,
//! wake-ups, oversized datagrams and the stats they keep. Every scenario is a generic
//! function run once per driver; the io_uring runs are skipped (with a note) where the
//! kernel or a seccomp filter does not allow io_uring.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use prism_forwarder::egress::{Egress, MAX_DATAGRAM};
use prism_forwarder::io::{
    bind_udp, uring_available, Driver, IoStats, MmsgConfig, MmsgDriver, SocketConfig, UringConfig,
    UringDriver, Waker, SHED_AFTER,
};

type Make<D> = fn(usize) -> D;

fn loopback() -> SocketConfig {
    SocketConfig::bound_to("127.0.0.1:0".parse().unwrap())
}

fn make_uring(max_sends: usize) -> UringDriver {
    let cfg = UringConfig {
        max_sends: max_sends as u32,
        ..UringConfig::default()
    };
    UringDriver::new(bind_udp(&loopback()).unwrap(), &cfg).unwrap()
}

fn make_mmsg(max_sends: usize) -> MmsgDriver {
    let cfg = MmsgConfig {
        max_sends,
        ..MmsgConfig::default()
    };
    MmsgDriver::new(bind_udp(&loopback()).unwrap(), &cfg).unwrap()
}

/// A blocking client socket with large buffers and a receive timeout.
fn client() -> UdpSocket {
    let s = bind_udp(&loopback()).unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s
}

/// Datagram `seq`: 1..=1500 bytes, its first four bytes the sequence number when it fits.
fn datagram(seq: u32) -> Vec<u8> {
    let len = 1 + (seq as usize * 7919) % 1500;
    let mut d: Vec<u8> = (0..len)
        .map(|i| (seq as u8).wrapping_mul(31).wrapping_add(i as u8))
        .collect();
    let n = len.min(4);
    d[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
    d
}

/// Echo handler: the first (up to) four bytes as the copied head, the rest shared.
fn echo<E: Egress>(from: SocketAddr, data: &mut [u8], egress: &mut E) {
    let h = data.len().min(4);
    assert!(
        egress.send_split(from, &data[..h], h..data.len()),
        "echo not queued"
    );
}

/// A driver looping on its own thread until stopped; returns its final stats.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<dyn Waker>,
    thread: Option<JoinHandle<IoStats>>,
}

impl Server {
    fn spawn<D, F>(mut driver: D, mut handler: F) -> Self
    where
        D: Driver + Send + 'static,
        F: FnMut(SocketAddr, &mut [u8], &mut D::Egress) + Send + 'static,
    {
        let addr = driver.local_addr();
        let waker = driver.waker();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::Acquire) {
                driver
                    .turn(Some(Duration::from_millis(50)), &mut handler)
                    .unwrap();
            }
            driver.flush().unwrap();
            driver.stats()
        });
        Self {
            addr,
            stop,
            waker,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> IoStats {
        self.stop.store(true, Ordering::Release);
        self.waker.wake();
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Receive `n` datagrams on `sock` and check they are exactly `sent` (in any order).
fn expect_all(sock: &UdpSocket, sent: &[Vec<u8>], what: &str) {
    let mut buf = [0u8; 4096];
    let mut got: Vec<Vec<u8>> = Vec::with_capacity(sent.len());
    for _ in 0..sent.len() {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => panic!("{what}: got {} of {}: {e}", got.len(), sent.len()),
        };
        got.push(buf[..n].to_vec());
    }
    let mut want = sent.to_vec();
    want.sort();
    got.sort();
    assert!(want == got, "{what}: datagrams differ");
}

fn echo_every_datagram<D: Driver + Send + 'static>(make: Make<D>) {
    const N: u32 = 10_000;
    const BURST: u32 = 64;
    let driver = make(1024);
    let name = driver.name();
    let server = Server::spawn(driver, echo);
    let client = client();
    let (mut bytes, mut seq) = (0u64, 0u32);
    let started = Instant::now();
    while seq < N {
        let burst: Vec<Vec<u8>> = (seq..(seq + BURST).min(N)).map(datagram).collect();
        for d in &burst {
            client.send_to(d, server.addr).unwrap();
            bytes += d.len() as u64;
        }
        expect_all(&client, &burst, "echo");
        seq += burst.len() as u32;
    }
    let elapsed = started.elapsed();
    let stats = server.stop();
    eprintln!(
        "{name}: echoed {N} datagrams in {elapsed:?} ({:.0} datagrams/s round trip, paced \
         in bursts of {BURST}); {stats:?}",
        f64::from(N) / elapsed.as_secs_f64()
    );

    // Stats match what went through.
    assert_eq!(stats.datagrams_received, u64::from(N));
    assert_eq!(stats.bytes_received, bytes);
    assert_eq!(stats.datagrams_sent, u64::from(N));
    assert_eq!(stats.bytes_sent, bytes);
    assert_eq!(stats.send_errors, 0);
    assert_eq!(stats.oversized, 0);
    assert_eq!(stats.queue_full, 0);
    assert_eq!(stats.recv_errors, 0);
    assert!(stats.recv_batches >= u64::from(N / BURST) && stats.recv_batches <= u64::from(N));
    assert!((1..=u64::from(BURST)).contains(&stats.max_recv_batch));
    assert!(stats.send_batches >= stats.recv_batches);
    assert!((1..=u64::from(BURST)).contains(&stats.max_send_batch));
    assert!(stats.turns > 0);
}

fn fan_out_to_twenty<D: Driver + Send + 'static>(make: Make<D>, max_sends: usize, burst: u32) {
    const DATAGRAMS: u32 = 320;
    let sinks: Vec<UdpSocket> = (0..20).map(|_| client()).collect();
    let dests: Vec<SocketAddr> = sinks.iter().map(|s| s.local_addr().unwrap()).collect();
    let server = Server::spawn(
        make(max_sends),
        move |_from, data, egress: &mut D::Egress| {
            let h = data.len().min(4);
            for &to in &dests {
                assert!(
                    egress.send_split(to, &data[..h], h..data.len()),
                    "fan-out not queued"
                );
            }
        },
    );
    let source = client();
    let mut seq = 0;
    while seq < DATAGRAMS {
        let batch: Vec<Vec<u8>> = (seq..seq + burst).map(datagram).collect();
        for d in &batch {
            source.send_to(d, server.addr).unwrap();
        }
        for sink in &sinks {
            expect_all(sink, &batch, "fan-out");
        }
        seq += burst;
    }
    let stats = server.stop();
    assert_eq!(stats.datagrams_received, u64::from(DATAGRAMS));
    assert_eq!(stats.datagrams_sent, u64::from(DATAGRAMS) * 20);
    assert_eq!(stats.send_errors + stats.queue_full, 0);
}

fn fan_out_small_queue<D: Driver + Send + 'static>(make: Make<D>) {
    // 16 send slots for 20 sends per datagram: the queue fills inside the handler.
    fan_out_to_twenty(make, 16, 8);
}

fn fan_out_large_queue<D: Driver + Send + 'static>(make: Make<D>) {
    fan_out_to_twenty(make, 1024, 32);
}

fn send_with_outside_a_turn<D: Driver>(make: Make<D>) {
    let mut driver = make(64);
    let client = client();
    let to = client.local_addr().unwrap();
    let egress = driver.egress();
    assert!(
        !egress.send_split(to, b"x", 0..0),
        "no datagram is being handled"
    );
    assert!(!egress.send_with(to, &mut |_| 0), "zero length cancels");
    for i in 0..3u8 {
        assert!(egress.send_with(to, &mut |buf| {
            assert_eq!(buf.len(), MAX_DATAGRAM);
            buf[..5].copy_from_slice(b"timer");
            buf[5] = b'0' + i;
            6
        }));
    }
    driver.flush().unwrap();
    let sent: Vec<Vec<u8>> = (0..3u8)
        .map(|i| vec![b't', b'i', b'm', b'e', b'r', b'0' + i])
        .collect();
    expect_all(&client, &sent, "send_with");
    let stats = driver.stats();
    assert_eq!(stats.datagrams_sent, 3);
    assert_eq!(stats.bytes_sent, 18);
}

fn waker_interrupts_wait<D: Driver + Send + 'static>(make: Make<D>) {
    let mut driver = make(64);
    let (tx, rx) = mpsc::channel();
    let thread = thread::spawn(move || {
        tx.send(driver.waker()).unwrap();
        let mut handled = 0;
        // A wake-up arriving before the wait started ends it as well; one of the two
        // turns must be the one the wake cut short.
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            handled += driver
                .turn(Some(Duration::ZERO), &mut |_, _, _| {})
                .unwrap();
        }
        handled += driver.turn(None, &mut |_, _, _| {}).unwrap();
        (handled, Instant::now())
    });
    let waker = rx.recv().unwrap();
    thread::sleep(Duration::from_millis(200));
    let woke = Instant::now();
    waker.wake();
    let (handled, returned) = thread.join().unwrap();
    assert_eq!(handled, 0);
    let lag = returned.saturating_duration_since(woke);
    assert!(
        lag < Duration::from_millis(500),
        "turn returned {lag:?} after wake"
    );
}

fn oversized_is_counted_and_skipped<D: Driver + Send + 'static>(make: Make<D>) {
    let server = Server::spawn(make(64), echo);
    let client = client();
    client.send_to(&[7u8; 4000], server.addr).unwrap();
    let after: Vec<Vec<u8>> = (1..=10).map(datagram).collect();
    for d in &after {
        client.send_to(d, server.addr).unwrap();
    }
    expect_all(&client, &after, "after oversized");
    // A datagram of exactly MAX_DATAGRAM still fits.
    let full = vec![9u8; MAX_DATAGRAM];
    client.send_to(&full, server.addr).unwrap();
    expect_all(&client, &[full], "full size");
    let stats = server.stop();
    assert_eq!(stats.oversized, 1);
    assert_eq!(stats.datagrams_received, 11);
    assert_eq!(stats.datagrams_sent, 11);
}

/// io_uring only: with 4 receive buffers a burst of 64 exhausts them, the kernel ends the
/// multishot receive with ENOBUFS, and the driver re-arms it once buffers came back. The
/// datagrams wait in the socket meanwhile, so none is lost.
#[test]
fn io_uring_rearms_after_running_out_of_buffers() {
    if !uring_available() {
        eprintln!("io_uring unavailable here: skipping");
        return;
    }
    let cfg = UringConfig {
        recv_buffers: 4,
        ..UringConfig::default()
    };
    let driver = UringDriver::new(bind_udp(&loopback()).unwrap(), &cfg).unwrap();
    let server = Server::spawn(driver, echo);
    let client = client();
    for burst in 0..16u32 {
        let sent: Vec<Vec<u8>> = (burst * 64..burst * 64 + 64).map(datagram).collect();
        for d in &sent {
            client.send_to(d, server.addr).unwrap();
        }
        expect_all(&client, &sent, "echo with 4 buffers");
    }
    let stats = server.stop();
    assert_eq!(stats.datagrams_received, 1024);
    assert_eq!(stats.datagrams_sent, 1024);
    assert!(stats.recv_no_buffers > 0, "{stats:?}");
}

/// io_uring: once every datagram for `SHED_AFTER` waited as long as `max_sojourn`, such
/// datagrams are dropped unhandled and counted. With a zero bound every datagram is late:
/// the first batch is handled (lateness that has not lasted is a stall, not a standing
/// queue), the second, sent `SHED_AFTER` later, is shed.
#[test]
fn io_uring_sheds_what_waited_too_long() {
    if !uring_available() {
        eprintln!("io_uring unavailable here: skipping");
        return;
    }
    let cfg = UringConfig {
        max_sojourn: Some(Duration::ZERO),
        ..UringConfig::default()
    };
    let mut driver = UringDriver::new(bind_udp(&loopback()).unwrap(), &cfg).unwrap();
    let client = client();
    let mut handled = 0;
    for batch in 0..2u32 {
        if batch == 1 {
            thread::sleep(SHED_AFTER + Duration::from_millis(20));
        }
        for seq in 0..8 {
            client
                .send_to(&datagram(batch * 8 + seq), driver.local_addr())
                .unwrap();
        }
        for _ in 0..200 {
            let s = driver.stats();
            if handled + s.recv_shed as usize == 8 * (batch as usize + 1) {
                break;
            }
            handled += driver
                .turn(Some(Duration::from_millis(50)), &mut |_, _, _: &mut _| {})
                .unwrap();
        }
    }
    let stats = driver.stats();
    assert_eq!(handled, 8, "{stats:?}");
    assert_eq!(stats.recv_shed, 8, "{stats:?}");
}

/// Both drivers: a datagram's wait counts from its arrival in the host (the kernel's
/// stamp), so what waited in the socket's queue before any turn counts as waiting. 64
/// datagrams age 80 ms in the socket; with a 30 ms bound and turns that take at most 8
/// (mmsg) or 16 (io_uring's 16 buffers), the first turn forwards what it takes (lateness
/// that has not lasted is a stall). `SHED_AFTER` later the rest, still queued and later
/// still, is shed. Stamped when the driver first saw them, they would all have looked
/// fresh.
fn sheds_what_waited_in_the_socket<D: Driver>(mut driver: D) {
    let client = client();
    for seq in 0..64u32 {
        client
            .send_to(&seq.to_le_bytes(), driver.local_addr())
            .unwrap();
    }
    thread::sleep(Duration::from_millis(80));
    let wait = Some(Duration::from_millis(50));
    let first = driver.turn(wait, &mut |_, _, _: &mut _| {}).unwrap();
    thread::sleep(SHED_AFTER + Duration::from_millis(20));
    let mut handled = first;
    for _ in 0..200 {
        if handled + driver.stats().recv_shed as usize == 64 {
            break;
        }
        handled += driver.turn(wait, &mut |_, _, _: &mut _| {}).unwrap();
    }
    let stats = driver.stats();
    assert!(
        first > 0 && first < 64,
        "first turn took {first}: {stats:?}"
    );
    assert_eq!(handled, first, "only the first turn forwards: {stats:?}");
    assert_eq!(stats.recv_shed as usize, 64 - first, "{stats:?}");
}

#[test]
fn io_uring_sheds_what_waited_in_the_socket() {
    if !uring_available() {
        eprintln!("io_uring unavailable here: skipping");
        return;
    }
    let cfg = UringConfig {
        recv_buffers: 16,
        max_sojourn: Some(Duration::from_millis(30)),
        ..UringConfig::default()
    };
    sheds_what_waited_in_the_socket(
        UringDriver::new(bind_udp(&loopback()).unwrap(), &cfg).unwrap(),
    );
}

#[test]
fn mmsg_sheds_what_waited_in_the_socket() {
    let cfg = MmsgConfig {
        batch: 8,
        max_batches_per_turn: 1,
        max_sojourn: Some(Duration::from_millis(30)),
        ..MmsgConfig::default()
    };
    sheds_what_waited_in_the_socket(MmsgDriver::new(bind_udp(&loopback()).unwrap(), &cfg).unwrap());
}

macro_rules! for_both_drivers {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[test]
            fn io_uring() {
                if !super::uring_available() {
                    eprintln!("io_uring unavailable here: skipping");
                    return;
                }
                super::$scenario(super::make_uring);
            }

            #[test]
            fn mmsg() {
                super::$scenario(super::make_mmsg);
            }
        }
    )*};
}

for_both_drivers!(
    echo_every_datagram,
    fan_out_small_queue,
    fan_out_large_queue,
    send_with_outside_a_turn,
    waker_interrupts_wait,
    oversized_is_counted_and_skipped,
);
