//! ICE over TCP (RFC 6544, RFC 4571 framing) through a running forwarder, on loopback.
//!
//! A peer on TCP and a peer on UDP, each built from independent parts of this crate (a
//! STUN check signed with the server's password, a DTLS client with its own certificate,
//! SRTP keys from the DTLS export), publish to each other: ICE, DTLS and SRTP run over the
//! TCP connection exactly as over UDP, and media crosses between the two.
//!
//! Bad input closes only the offending connection, with a counted reason in `GetStats`:
//! garbage, a length prefix of 64 KiB, silence (handshake timeout), and connections past
//! the maximum. A session that was already up keeps working throughout.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use pb::command::Body;
use prism_forwarder::dtls::{DtlsCert, DtlsEndpoint, DtlsEvent, DtlsRole, Fingerprint};
use prism_forwarder::io::DriverKind;
use prism_forwarder::runtime::{Forwarder, ForwarderConfig};
use prism_forwarder::srtp::{SrtpContext, SrtpKeys, SrtpProfile, MAX_OVERHEAD};
use prism_forwarder::testing::cmd;
use prism_forwarder::tunnel::framing::{self, Deframer};
use prism_forwarder::tunnel::ice_tcp::IceTcpConfig;
use prism_forwarder::wire::rtp::RtpPacket;
use prism_forwarder::wire::stun::{attr, Class, Method, StunMessage, StunWriter};
use prism_proto::control as pb;
use sha1::Sha1;

/// Bounds every blocking read, so a broken build fails instead of hanging; no assertion
/// depends on it.
const SAFETY: Duration = Duration::from_secs(20);

fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut m = <Hmac<Sha1> as KeyInit>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().into()
}

fn req(fwd: &Forwarder, body: Body) -> pb::event::Body {
    let ev = fwd.client().request(body, Duration::from_secs(5)).unwrap();
    match ev.body.unwrap() {
        pb::event::Body::Error(e) => panic!("{}", e.message),
        b => b,
    }
}

fn start(cfg: IceTcpConfig) -> Forwarder {
    Forwarder::start(ForwarderConfig {
        cores: vec![0, 1],
        pin: false,
        driver: DriverKind::Auto,
        tcp_port: Some(0),
        ice_tcp: cfg,
        ..Default::default()
    })
    .unwrap()
}

fn front_stats(fwd: &Forwarder) -> pb::FrontStats {
    let pb::event::Body::Stats(s) = req(fwd, Body::GetStats(pb::GetStats::default())) else {
        panic!()
    };
    s.fronts.into_iter().find(|f| f.kind == "ice_tcp").unwrap()
}

fn count(list: &[pb::DropCount], reason: &str) -> u64 {
    list.iter()
        .find(|d| d.reason == reason)
        .map_or(0, |d| d.count)
}

/// How a test peer reaches the forwarder.
enum Link {
    Tcp(TcpStream, Box<Deframer>),
    Udp(UdpSocket, SocketAddr),
}

impl Link {
    fn tcp(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(SAFETY)).unwrap();
        s.set_nodelay(true).unwrap();
        Link::Tcp(s, Box::new(Deframer::new()))
    }

    fn udp(server: SocketAddr) -> Self {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(SAFETY)).unwrap();
        Link::Udp(s, server)
    }

    fn send(&mut self, d: &[u8]) {
        match self {
            Link::Tcp(s, _) => {
                let mut f = Vec::new();
                assert!(framing::encode(d, &mut f));
                s.write_all(&f).unwrap();
            }
            Link::Udp(s, to) => {
                s.send_to(d, *to).unwrap();
            }
        }
    }

    /// The next datagram (blocking up to [`SAFETY`]).
    fn recv(&mut self) -> Vec<u8> {
        match self {
            Link::Tcp(s, de) => loop {
                if let Some(f) = de.next_frame().unwrap() {
                    return f.to_vec();
                }
                let n = s.read(de.spare()).unwrap();
                assert!(n > 0, "connection closed");
                de.filled(n);
            },
            Link::Udp(s, _) => {
                let mut b = vec![0u8; 2048];
                let n = s.recv(&mut b).unwrap();
                b.truncate(n);
                b
            }
        }
    }
}

/// A WebRTC client reduced to what an SFU sees: ICE checks, DTLS, SRTP.
struct Peer {
    link: Link,
    ufrag: String,
    server_ufrag: String,
    server_pwd: String,
    dtls: DtlsEndpoint,
    cert: DtlsCert,
    srtp_out: Option<SrtpContext>,
    srtp_in: Option<SrtpContext>,
}

impl Peer {
    fn new(link: Link, name: &str) -> Self {
        let cert = DtlsCert::generate().unwrap();
        Self {
            link,
            ufrag: format!("{name}C"),
            server_ufrag: format!("{name}S"),
            server_pwd: format!("{name}-server-password-0123456789"),
            dtls: DtlsEndpoint::new(DtlsRole::Client, &cert).unwrap(),
            cert,
            srtp_out: None,
            srtp_in: None,
        }
    }

    fn create_transport(&mut self, fwd: &Forwarder, room: u64, id: u64) {
        let b = req(
            fwd,
            Body::CreateWebrtcTransport(pb::CreateWebRtcTransport {
                room_id: room,
                transport_id: id,
                local_ufrag: self.server_ufrag.clone(),
                local_pwd: self.server_pwd.clone(),
                remote_ufrag: self.ufrag.clone(),
                remote_pwd: "client-password-0123456789".into(),
                remote_fingerprint: self.cert.fingerprint().to_string(),
                dtls_client: false,
            }),
        );
        let pb::event::Body::TransportCreated(t) = b else {
            panic!("{b:?}")
        };
        self.dtls
            .set_remote_fingerprint(Fingerprint::parse(&t.fingerprint).unwrap())
            .unwrap();
    }

    fn binding_request(&self, key: &str) -> Vec<u8> {
        let mut buf = vec![0u8; 512];
        let mut w = StunWriter::new(&mut buf, Class::Request, Method::BINDING, &[7u8; 12]).unwrap();
        w.attr(
            attr::USERNAME,
            format!("{}:{}", self.server_ufrag, self.ufrag).as_bytes(),
        )
        .unwrap();
        w.attr(attr::PRIORITY, &1_845_501_695u32.to_be_bytes())
            .unwrap();
        w.attr(attr::ICE_CONTROLLING, &42u64.to_be_bytes()).unwrap();
        w.attr(attr::USE_CANDIDATE, &[]).unwrap();
        let key = key.as_bytes().to_vec();
        let n = w
            .finish_with_integrity(&move |d: &[u8]| hmac_sha1(&key, d))
            .unwrap();
        buf.truncate(n);
        buf
    }

    /// A nominating check, answered with a binding success.
    fn ice(&mut self) {
        let check = self.binding_request(&self.server_pwd.clone());
        self.link.send(&check);
        let reply = self.link.recv();
        let m = StunMessage::new_checked(&reply[..]).unwrap();
        assert_eq!(m.class(), Class::SuccessResponse);
        // A peer is told its real address, never the virtual one the core knows it by.
        if let Link::Tcp(s, _) = &self.link {
            assert_eq!(m.xor_mapped_address(), Some(s.local_addr().unwrap()));
        }
    }

    /// DTLS until connected; then SRTP keys from the export.
    fn connect(&mut self) {
        let start = Instant::now();
        self.dtls.handle_timeout(start);
        while self.srtp_out.is_none() {
            while let Some(d) = self.dtls.poll_transmit() {
                self.link.send(&d);
            }
            let d = self.link.recv();
            let now = Instant::now();
            if (20..=63).contains(&d[0]) {
                self.dtls.handle_datagram(now, &d).unwrap();
            }
            self.dtls.handle_timeout(now);
            while let Some(ev) = self.dtls.poll_event() {
                if let DtlsEvent::Connected { srtp, .. } = ev {
                    let km = srtp.expect("SRTP negotiated");
                    let profile = SrtpProfile::from_dtls_id(km.profile_id).unwrap();
                    let (local, remote) =
                        SrtpKeys::from_dtls_export(profile, &km.material, true).unwrap();
                    self.srtp_out = Some(SrtpContext::new(profile, &local).unwrap());
                    self.srtp_in = Some(SrtpContext::new(profile, &remote).unwrap());
                }
            }
        }
        while let Some(d) = self.dtls.poll_transmit() {
            self.link.send(&d);
        }
    }

    fn send_opus(&mut self, seq: u16, ssrc: u32, payload: &[u8]) {
        let mut p = vec![0x80, 111];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        let n = p.len();
        p.resize(n + MAX_OVERHEAD, 0);
        let n = self
            .srtp_out
            .as_mut()
            .unwrap()
            .protect_rtp(&mut p, n)
            .unwrap();
        p.truncate(n);
        self.link.send(&p);
    }

    /// The next RTP packet received, decrypted: (ssrc, payload).
    fn recv_rtp(&mut self) -> (u32, Vec<u8>) {
        loop {
            let mut d = self.link.recv();
            if !(128..=191).contains(&d[0]) || (192..=223).contains(&d[1]) {
                continue; // STUN, DTLS, RTCP
            }
            let n = self
                .srtp_in
                .as_mut()
                .unwrap()
                .unprotect_rtp(&mut d)
                .unwrap();
            let p = RtpPacket::new_checked(&d[..n]).unwrap();
            return (p.ssrc().0, p.payload().to_vec());
        }
    }
}

/// Waits until `stream` is closed by the server: EOF or a reset.
fn wait_closed(mut s: TcpStream) {
    s.set_read_timeout(Some(SAFETY)).unwrap();
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("not closed: {e}"),
        }
    }
}

/// Sets up a TCP peer and a UDP peer in one room, each subscribed to the other's audio,
/// and checks that media crosses both ways.
fn tcp_and_udp_session(fwd: &Forwarder, room: u64) -> (Peer, Peer) {
    let tcp_addr = fwd.tcp_addr().unwrap();
    let pb::event::Body::RoomCreated(rc) = req(fwd, cmd::room(room)) else {
        panic!()
    };
    assert_eq!(
        rc.tcp_local,
        SocketAddr::new("127.0.0.1".parse().unwrap(), tcp_addr.port()).to_string(),
        "rooms are told of the TCP candidate"
    );
    let udp_addr = fwd.core_addrs()[rc.core as usize];
    let mut a = Peer::new(Link::tcp(tcp_addr), &format!("tcp{room}"));
    let mut b = Peer::new(Link::udp(udp_addr), &format!("udp{room}"));
    let (ta, tb) = (room * 100 + 1, room * 100 + 2);
    a.create_transport(fwd, room, ta);
    b.create_transport(fwd, room, tb);
    req(fwd, cmd::opus_track(room, ta, room * 10 + 1, 0x1111));
    req(fwd, cmd::opus_track(room, tb, room * 10 + 2, 0x2222));
    req(
        fwd,
        cmd::down_track(room, room * 10 + 1, room * 10 + 3, tb, 0xaaaa, 109, 0),
    );
    req(
        fwd,
        cmd::down_track(room, room * 10 + 2, room * 10 + 4, ta, 0xbbbb, 109, 0),
    );
    for p in [&mut a, &mut b] {
        p.ice();
        p.connect();
    }
    exchange(&mut a, &mut b, 1);
    (a, b)
}

/// One packet each way; both arrive under the subscriber's SSRC.
fn exchange(a: &mut Peer, b: &mut Peer, seq: u16) {
    a.send_opus(seq, 0x1111, format!("from tcp {seq}").as_bytes());
    let (ssrc, payload) = b.recv_rtp();
    assert_eq!(
        (ssrc, payload),
        (0xaaaa, format!("from tcp {seq}").into_bytes())
    );
    b.send_opus(seq, 0x2222, format!("from udp {seq}").as_bytes());
    let (ssrc, payload) = a.recv_rtp();
    assert_eq!(
        (ssrc, payload),
        (0xbbbb, format!("from udp {seq}").into_bytes())
    );
}

#[test]
fn ice_dtls_and_srtp_run_over_tcp_and_media_crosses_to_udp() {
    let fwd = start(IceTcpConfig::default());
    // Two rooms, so that (with two cores) a connection is routed to each core.
    let (mut a1, mut b1) = tcp_and_udp_session(&fwd, 1);
    let (mut a2, mut b2) = tcp_and_udp_session(&fwd, 2);
    for seq in 2..20 {
        exchange(&mut a1, &mut b1, seq);
        exchange(&mut a2, &mut b2, seq);
    }
    let f = front_stats(&fwd);
    assert_eq!((f.accepted, f.open), (2, 2), "{f:?}");
    assert!(
        f.datagrams_in >= 2 * 19 && f.datagrams_out >= 2 * 19,
        "{f:?}"
    );
    assert!(f.drops.is_empty() && f.closed.is_empty(), "{f:?}");
}

#[test]
fn bad_tcp_peers_are_closed_with_a_counted_reason_and_others_carry_on() {
    let fwd = start(IceTcpConfig {
        max_connections: 6,
        handshake_timeout: Duration::from_millis(300),
        ..Default::default()
    });
    let tcp = fwd.tcp_addr().unwrap();
    let (mut a, mut b) = tcp_and_udp_session(&fwd, 1);

    // A first frame that is not a STUN binding request.
    let mut s = TcpStream::connect(tcp).unwrap();
    s.write_all(&[0, 4, b'a', b'b', b'c', b'd']).unwrap();
    wait_closed(s);
    // An HTTP request: its first two bytes announce 18,245 bytes.
    let mut s = TcpStream::connect(tcp).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    wait_closed(s);
    // A frame announcing 64 KiB - 1, larger than any datagram.
    let mut s = TcpStream::connect(tcp).unwrap();
    s.write_all(&[0xff, 0xff, 1, 2, 3, 4]).unwrap();
    wait_closed(s);
    // A STUN check for a ufrag no core owns: dropped, and the silent connection times out.
    let mut s = TcpStream::connect(tcp).unwrap();
    let mut stranger = Peer::new(Link::udp(tcp), "nobody");
    stranger.server_ufrag = "unknown-ufrag".into();
    let mut f = Vec::new();
    framing::encode(&stranger.binding_request("whatever-password-0123"), &mut f);
    s.write_all(&f).unwrap();
    wait_closed(s);
    // Nothing at all.
    wait_closed(TcpStream::connect(tcp).unwrap());
    exchange(&mut a, &mut b, 2);

    let f = front_stats(&fwd);
    assert_eq!(count(&f.closed, "garbage"), 1, "{f:?}");
    assert_eq!(count(&f.closed, "frame_too_large"), 2, "{f:?}");
    assert_eq!(count(&f.closed, "handshake_timeout"), 2, "{f:?}");
    assert_eq!(count(&f.drops, "unrouted"), 1, "{f:?}");
    assert_eq!(f.open, 1, "only the session's connection is left: {f:?}");
    exchange(&mut a, &mut b, 3);
}

#[test]
fn connections_past_the_maximum_are_refused_and_the_session_carries_on() {
    let fwd = start(IceTcpConfig {
        max_connections: 6,
        ..Default::default()
    });
    let tcp = fwd.tcp_addr().unwrap();
    let (mut a, mut b) = tcp_and_udp_session(&fwd, 1);
    // Six with the session's: the seventh is closed at accept.
    let held: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(tcp).unwrap()).collect();
    wait_closed(TcpStream::connect(tcp).unwrap());
    exchange(&mut a, &mut b, 2);
    let f = front_stats(&fwd);
    assert_eq!(count(&f.closed, "too_many_connections"), 1, "{f:?}");
    assert_eq!((f.accepted, f.open), (7, 6), "{f:?}");
    drop(held);
}
