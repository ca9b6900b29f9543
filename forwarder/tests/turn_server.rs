//! The embedded TURN server in a running forwarder, driven by a raw client on loopback.
//!
//! The client speaks TURN from bytes built here (STUN writer, long-term credentials): a
//! request without credentials is challenged (401 with REALM and NONCE), a bad password
//! gets 401 again, a good one an allocation; a peer that is not one of the node's media
//! sockets is forbidden (403); data on a bound channel reaches the core the peer names.
//! Garbage on the UDP port, plain bytes on the TLS port and TURN over TLS are each
//! counted, and the session that was up keeps working.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pb::command::Body;
use prism_forwarder::io::DriverKind;
use prism_forwarder::runtime::{Forwarder, ForwarderConfig};
use prism_forwarder::turn::creds;
use prism_forwarder::turn::front::{FrontConfig, FrontStats, StreamMode};
use prism_forwarder::turn::server::TurnConfig;
use prism_forwarder::turn::{attr, code, method};
use prism_forwarder::wire::stun::{self, Class, StunMessage, StunWriter};
use prism_proto::control as pb;

const SECRET: &[u8] = b"a-turn-secret-derived-by-signaling";
const REALM: &str = "prism.test";
/// Bounds every blocking read, so a broken build fails instead of hanging.
const SAFETY: Duration = Duration::from_secs(20);

fn self_signed(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::{X509NameBuilder, X509};
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "localhost").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let cert = dir.join("turn.crt");
    let keyf = dir.join("turn.key");
    std::fs::write(&cert, b.build().to_pem().unwrap()).unwrap();
    std::fs::write(&keyf, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (cert, keyf)
}

fn start(dir: &std::path::Path) -> Forwarder {
    let (cert, key) = self_signed(dir);
    let lo = "127.0.0.1".parse().unwrap();
    Forwarder::start(ForwarderConfig {
        cores: vec![0],
        pin: false,
        driver: DriverKind::Auto,
        turn: Some(FrontConfig {
            udp: Some("127.0.0.1:0".parse().unwrap()),
            stream: Some((
                "127.0.0.1:0".parse().unwrap(),
                StreamMode::Tls { cert, key },
            )),
            relay_ip: lo,
            relay_advertise_ip: None,
            relay_ports: None,
            peers: Vec::new(),
            peer_ips: Vec::new(),
            server: TurnConfig::new(REALM, SECRET, Vec::new()),
        }),
        ..Default::default()
    })
    .unwrap()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Creds {
    user: String,
    pass: String,
}

fn request(
    meth: stun::Method,
    tid: u8,
    auth: Option<(&Creds, &[u8])>,
    body: impl FnOnce(&mut StunWriter<'_>),
) -> Vec<u8> {
    let mut buf = vec![0u8; 1500];
    let mut w = StunWriter::new(&mut buf, Class::Request, meth, &[tid; 12]).unwrap();
    body(&mut w);
    let n = match auth {
        Some((c, nonce)) => {
            w.attr(attr::USERNAME, c.user.as_bytes()).unwrap();
            w.attr(attr::REALM, REALM.as_bytes()).unwrap();
            w.attr(attr::NONCE, nonce).unwrap();
            let key = creds::long_term_key(c.user.as_bytes(), REALM.as_bytes(), c.pass.as_bytes());
            w.finish_with_integrity(&|d: &[u8]| creds::hmac_sha1(&key, &[d]))
                .unwrap()
        }
        None => w.finish().unwrap(),
    };
    buf.truncate(n);
    buf
}

fn error_code(bytes: &[u8]) -> Option<u16> {
    let m = StunMessage::new_checked(bytes).ok()?;
    let v = m.attribute(attr::ERROR_CODE)?;
    Some(u16::from(v[2] & 7) * 100 + u16::from(v[3]))
}

fn nonce_of(bytes: &[u8]) -> Vec<u8> {
    let m = StunMessage::new_checked(bytes).unwrap();
    m.attribute(attr::NONCE).unwrap().to_vec()
}

fn allocate_req(tid: u8, auth: Option<(&Creds, &[u8])>) -> Vec<u8> {
    request(method::ALLOCATE, tid, auth, |w| {
        w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap()
    })
}

struct UdpClient {
    sock: UdpSocket,
    server: SocketAddr,
}

impl UdpClient {
    fn new(server: SocketAddr) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(SAFETY)).unwrap();
        Self { sock, server }
    }

    fn ask(&self, bytes: &[u8]) -> Vec<u8> {
        self.sock.send_to(bytes, self.server).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = self.sock.recv_from(&mut buf).unwrap();
        buf[..n].to_vec()
    }
}

/// Waits until the front's counters (published every loop turn) satisfy `f`.
fn wait_stats(fwd: &Forwarder, f: impl Fn(&FrontStats) -> bool) -> FrontStats {
    let deadline = Instant::now() + SAFETY;
    loop {
        let s = fwd.turn().unwrap().stats();
        if f(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "counters never got there: {s:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn core_drops(fwd: &Forwarder) -> u64 {
    let ev = fwd
        .client()
        .request(
            Body::GetStats(pb::GetStats::default()),
            Duration::from_secs(5),
        )
        .unwrap();
    let Some(pb::event::Body::Stats(s)) = ev.body else {
        panic!("no stats")
    };
    s.cores
        .iter()
        .flat_map(|c| c.counters.iter().flat_map(|k| k.drops.iter()))
        .map(|d| d.count)
        .sum()
}

#[test]
fn turn_over_udp_and_tls_refuses_bad_input_and_relays_to_the_core() {
    let dir = std::env::temp_dir().join(format!("prism-turn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fwd = start(&dir);
    let turn = fwd.turn().unwrap();
    let udp_addr = turn.udp_addr().unwrap();
    let tls_addr = turn.stream_addr().unwrap();
    let core = fwd.core_addrs()[0];
    let client = UdpClient::new(udp_addr);

    // 1. No credentials: 401 with a nonce.
    let r = client.ask(&allocate_req(1, None));
    assert_eq!(error_code(&r), Some(code::UNAUTHORIZED));
    let nonce = nonce_of(&r);

    // 2. A bad password: 401 again, with a fresh nonce, counted.
    let (user, _) = creds::rest_credentials(SECRET, "PA_alice", unix_now() + 600);
    let bad = Creds {
        user: user.clone(),
        pass: "guessed".into(),
    };
    let r = client.ask(&allocate_req(2, Some((&bad, &nonce))));
    assert_eq!(error_code(&r), Some(code::UNAUTHORIZED));
    assert!(!nonce_of(&r).is_empty());
    wait_stats(&fwd, |s| s.server.wrong_credentials == 1);

    // 3. Credentials signed with another secret: refused the same way.
    let (u2, p2) = creds::rest_credentials(b"another secret", "PA_alice", unix_now() + 600);
    let r = client.ask(&allocate_req(
        3,
        Some((&Creds { user: u2, pass: p2 }, &nonce)),
    ));
    assert_eq!(error_code(&r), Some(code::UNAUTHORIZED));

    // 4. The right ones: an allocation.
    let good = Creds {
        pass: creds::rest_password(SECRET, &user),
        user,
    };
    let r = client.ask(&allocate_req(4, Some((&good, &nonce))));
    let m = StunMessage::new_checked(&r[..]).unwrap();
    assert_eq!(m.class(), Class::SuccessResponse, "{:?}", error_code(&r));
    assert!(m.attribute(attr::XOR_RELAYED_ADDRESS).is_some());

    // 5. No open relay: anything but the node's media sockets is forbidden.
    for peer in [
        "10.0.0.1:7882",
        "127.0.0.1:22",
        "169.254.169.254:80",
        "8.8.8.8:53",
    ] {
        let peer: SocketAddr = peer.parse().unwrap();
        let r = client.ask(&request(
            method::CHANNEL_BIND,
            5,
            Some((&good, &nonce)),
            |w| {
                w.attr(attr::CHANNEL_NUMBER, &[0x40, 0, 0, 0]).unwrap();
                w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
            },
        ));
        assert_eq!(error_code(&r), Some(code::FORBIDDEN), "{peer}");
    }
    let r = client.ask(&request(
        method::CREATE_PERMISSION,
        6,
        Some((&good, &nonce)),
        |w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, "10.1.2.3:7882".parse().unwrap())
                .unwrap();
        },
    ));
    assert_eq!(error_code(&r), Some(code::FORBIDDEN));

    // 6. The core's own socket: a channel, and data on it reaches the core (an RTP packet
    //    from nobody it knows, which it counts as a drop).
    let r = client.ask(&request(
        method::CHANNEL_BIND,
        7,
        Some((&good, &nonce)),
        |w| {
            w.attr(attr::CHANNEL_NUMBER, &[0x40, 0x01, 0, 0]).unwrap();
            w.xor_address(attr::XOR_PEER_ADDRESS, core).unwrap();
        },
    ));
    assert!(error_code(&r).is_none(), "{:?}", error_code(&r));
    let drops_before = core_drops(&fwd);
    let mut frame = vec![0x40, 0x01, 0, 12];
    frame.extend_from_slice(&[0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7]);
    client.sock.send_to(&frame, udp_addr).unwrap();
    let deadline = Instant::now() + SAFETY;
    while core_drops(&fwd) == drops_before {
        assert!(
            Instant::now() < deadline,
            "the core never saw the relayed packet"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    // 7. Garbage on the UDP port is counted, not answered.
    let before = turn.stats().server.malformed;
    client.sock.send_to(b"\xffgarbage", udp_addr).unwrap();
    client
        .sock
        .send_to(&[0x40, 0x01, 0xff, 0xff], udp_addr)
        .unwrap();
    wait_stats(&fwd, |s| s.server.malformed >= before + 2);

    // 8. Plain bytes on the TLS port: the connection is closed and counted.
    let mut plain = TcpStream::connect(tls_addr).unwrap();
    plain.set_read_timeout(Some(SAFETY)).unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut sink = Vec::new();
    let _ = plain.read_to_end(&mut sink);
    wait_stats(&fwd, |s| s.tls_handshake_failed == 1);

    // 9. TURN over TLS: a challenge, then an allocation of its own.
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).unwrap();
    b.set_verify(openssl::ssl::SslVerifyMode::NONE);
    let tcp = TcpStream::connect(tls_addr).unwrap();
    tcp.set_read_timeout(Some(SAFETY)).unwrap();
    let mut tls = b.build().connect("localhost", tcp).unwrap();
    let read_msg = |tls: &mut openssl::ssl::SslStream<TcpStream>| {
        let mut head = [0u8; 20];
        tls.read_exact(&mut head).unwrap();
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let mut msg = head.to_vec();
        msg.resize(20 + len, 0);
        tls.read_exact(&mut msg[20..]).unwrap();
        msg
    };
    tls.write_all(&allocate_req(8, None)).unwrap();
    let r = read_msg(&mut tls);
    assert_eq!(error_code(&r), Some(code::UNAUTHORIZED));
    let tls_nonce = nonce_of(&r);
    tls.write_all(&allocate_req(9, Some((&good, &tls_nonce))))
        .unwrap();
    let r = read_msg(&mut tls);
    assert!(error_code(&r).is_none(), "{:?}", error_code(&r));

    // 10. The UDP session was never disturbed.
    let r = client.ask(&request(method::REFRESH, 10, Some((&good, &nonce)), |w| {
        w.attr(attr::LIFETIME, &600u32.to_be_bytes()).unwrap();
    }));
    assert!(error_code(&r).is_none(), "{:?}", error_code(&r));
    let s = wait_stats(&fwd, |s| s.server.allocations_active == 2);
    assert!(s.server.forbidden_peer >= 5);
    drop(tls);
    drop(fwd);
    let _ = std::fs::remove_dir_all(&dir);
}
