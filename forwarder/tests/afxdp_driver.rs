//! The AF_XDP driver on a real veth pair between two network namespaces this test
//! creates: the driver (native XDP, copy mode) on one side, and on the other a Python
//! peer that talks to it through the kernel's UDP stack and also writes raw frames with
//! an AF_PACKET socket.
//!
//! What passing proves:
//! - the XDP program loads through the verifier and attaches; datagrams to the media
//!   port reach the driver, and echoes built by the driver (Ethernet/IPv4/UDP headers,
//!   full checksums, the peer's MAC learnt from its frames) are accepted by the peer's
//!   kernel: every one of 400 datagrams of 1 to 1400 bytes comes back intact;
//! - the peer's kernel resolves our address by ARP through the program (ARP is passed),
//!   and frames with a wrong UDP checksum or a UDP length past the datagram are dropped
//!   and counted by reason, while an IPv4 datagram with options reaches the media port
//!   through the kernel's socket (passed by the program) and is answered too;
//! - the peer's frames carry partial checksums (veth's offload), which are accepted;
//! - dropping the driver detaches the program from the interface.
//!
//! Skips, saying why, when not run as root or without AF_XDP.

use std::net::{SocketAddr, SocketAddrV4};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prism_forwarder::egress::Egress;
use prism_forwarder::io::afxdp::{AfXdpConfig, AfXdpDriver, AfXdpEgress};
use prism_forwarder::io::{netns, Driver};
use prism_forwarder::testing::veth::{is_root, VethPair};
use prism_forwarder::wire::frame::Reject;

/// The peer: 400 echo round trips of varied sizes through its kernel, interleaved with
/// raw frames (wrong UDP checksum, UDP length too long, IPv4 options); prints a summary.
const PEER: &str = r#"
import socket, struct, sys, time
ip_a, ip_b = sys.argv[1], sys.argv[2]
dst = (ip_b, 7882)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((ip_a, 40000))
u.settimeout(5)
raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
raw.bind(("va", 0))
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
def frame(dst_mac, payload, udp_len=None, bad_sum=False, options=b""):
    src, dst_ip = socket.inet_aton(ip_a), socket.inet_aton(ip_b)
    ulen = 8 + len(payload)
    udp = struct.pack("!HHHH", 40000, 7882, udp_len or ulen, 0) + payload
    s = csum(src + dst_ip + struct.pack("!BBH", 0, 17, ulen) + udp)
    if bad_sum: s ^= 0x1234
    udp = udp[:6] + struct.pack("!H", s or 0xffff) + udp[8:]
    ihl = 5 + len(options) // 4
    iph = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(udp), 1, 0x4000, 64, 17, 0, src, dst_ip) + options
    iph = iph[:10] + struct.pack("!H", csum(iph)) + iph[12:]
    return dst_mac + raw_src_mac + b"\x08\x00" + iph + udp
ok = 0
dst_mac = None
for i in range(400):
    n = 1 + (i * 37) % 1400
    msg = bytes((i + k) % 256 for k in range(n))
    u.sendto(msg, dst)
    data, frm = u.recvfrom(2048)
    if data == b"E" + msg: ok += 1
    if i == 0:
        # Our kernel has resolved the driver's MAC by now (ARP through the program).
        out = open("/proc/net/arp").read().split("\n")
        dst_mac = bytes.fromhex([l.split()[3] for l in out if l.startswith(ip_b + " ")][0].replace(":", ""))
        raw_src_mac = raw.getsockname()[4]
    if i % 50 == 25:
        raw.send(frame(dst_mac, b"bad checksum", bad_sum=True))
        raw.send(frame(dst_mac, b"too long", udp_len=500))
opt = frame(dst_mac, b"with options", options=b"\x01\x01\x01\x00")
raw.send(opt)
data, frm = u.recvfrom(2048)
print("echoes", ok, "options_echo", int(data == b"Ewith options"))
"#;

#[test]
fn echoes_through_af_xdp_on_a_veth_pair() {
    if !is_root() {
        eprintln!("skipped: AF_XDP tests need root (network namespaces, XDP)");
        return;
    }
    let Some(pair) = VethPair::new() else {
        eprintln!("skipped: could not create network namespaces and a veth pair");
        return;
    };

    let local = SocketAddrV4::new(pair.ip_b, 7882);
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let ns_b = pair.b.clone();
    let stop2 = stop.clone();
    let server = std::thread::spawn(move || {
        netns::enter(&ns_b).expect("entering the driver's namespace");
        let mut driver = match AfXdpDriver::new(&AfXdpConfig::new("vb", local)) {
            Ok(d) => d,
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
                return None;
            }
        };
        let _ = ready_tx.send(Ok(()));
        let mut echo = |from: SocketAddr, data: &mut [u8], eg: &mut AfXdpEgress| {
            assert!(eg.send_split(from, b"E", 0..data.len()));
        };
        while !stop2.load(Ordering::Relaxed) {
            driver
                .turn(Some(Duration::from_millis(20)), &mut echo)
                .expect("turn");
        }
        Some((driver.counters(), driver.stats()))
    });
    match ready_rx.recv().expect("driver thread") {
        Ok(()) => {}
        Err(e) if e.contains("Address family not supported") => {
            eprintln!("skipped: {e}");
            stop.store(true, Ordering::Relaxed);
            return;
        }
        Err(e) => panic!("AF_XDP driver did not start: {e}"),
    }
    assert!(pair.xdp_attached(), "the program is attached to vb");

    let out = Command::new("ip")
        .args(["netns", "exec", &pair.a, "python3", "-c", PEER])
        .args([pair.ip_a.to_string(), pair.ip_b.to_string()])
        .output()
        .expect("running the peer");
    stop.store(true, Ordering::Relaxed);
    let (counters, stats) = server.join().expect("driver thread").expect("driver ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "peer failed: {stdout}\n{}\ncounters {counters:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("echoes 400 options_echo 1"),
        "peer: {stdout}; counters {counters:?}, stats {stats:?}"
    );
    assert_eq!(counters.rejected[Reject::BadUdpChecksum.index()], 8);
    assert_eq!(counters.rejected[Reject::BadUdpLength.index()], 8);
    assert_eq!(counters.kernel_received, 1, "the IP-options datagram");
    assert!(counters.partial_checksums > 0, "veth's offloaded checksums");
    assert_eq!(
        counters.kernel_sent, 0,
        "every echo went out on AF_XDP (the MAC was learnt)"
    );
    assert!(stats.datagrams_sent >= 401);
    assert!(
        !pair.xdp_attached(),
        "the program is detached with the driver"
    );
}

/// Each wrong AF_XDP setup is refused at start with one line naming the cause and the
/// fix, and the process exits with an error.
#[test]
fn af_xdp_misconfigurations_are_refused_with_the_cause() {
    let cases: &[(&[&str], &str)] = &[
        (&["--cores", "0"], "needs an interface (--interface"),
        (
            &["--cores", "0", "--interface", "nope0"],
            "no interface \"nope0\"",
        ),
        (
            &[
                "--cores",
                "0,1",
                "--interface",
                "lo",
                "--xdp-first-queue",
                "70",
            ],
            "queue 70 may not exist on lo",
        ),
        (
            &["--cores", "0", "--interface", "lo", "--xdp-bind", "fast"],
            "invalid value 'fast' for '--xdp-bind <MODE>'",
        ),
        (
            &[
                "--cores",
                "0",
                "--interface",
                "lo",
                "--bind",
                "0.0.0.0",
                "--node-ip",
                "192.0.2.1",
            ],
            "bind it to the interface's IPv4 address",
        ),
    ];
    for (args, expect) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_prism-forwarder"))
            .args(["--driver", "af_xdp"])
            .args(*args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("running prism-forwarder");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(
            err.contains(expect),
            "{args:?}: expected {expect:?} in {err}"
        );
    }
}
