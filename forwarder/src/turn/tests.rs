//! The sans-IO TURN server driven by a scripted client in virtual time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::creds::{self, NonceKey};
use super::server::{ClientKey, Proto, RelayId, TurnConfig, TurnIo, TurnServer};
use super::{attr, code, method, next_frame, Frame};
use crate::wire::stun::{self, Class, StunMessage, StunWriter};

const SECRET: &[u8] = b"turn-secret";
const REALM: &str = "prism";

fn media() -> SocketAddr {
    "192.0.2.10:7882".parse().unwrap()
}

#[derive(Default)]
struct Rec {
    to_client: Vec<(ClientKey, Vec<u8>)>,
    to_peer: Vec<(RelayId, SocketAddr, Vec<u8>)>,
    opened: u64,
    closed: Vec<RelayId>,
    refuse_relays: bool,
}

impl TurnIo for Rec {
    fn to_client(&mut self, client: ClientKey, bytes: &[u8]) {
        self.to_client.push((client, bytes.to_vec()));
    }
    fn to_peer(&mut self, relay: RelayId, peer: SocketAddr, bytes: &[u8]) {
        self.to_peer.push((relay, peer, bytes.to_vec()));
    }
    fn open_relay(&mut self, _client: ClientKey) -> Option<(RelayId, SocketAddr)> {
        if self.refuse_relays {
            return None;
        }
        self.opened += 1;
        Some((
            RelayId(self.opened),
            SocketAddr::new("198.51.100.1".parse().unwrap(), 50_000 + self.opened as u16),
        ))
    }
    fn close_relay(&mut self, relay: RelayId) {
        self.closed.push(relay);
    }
}

struct Setup {
    t0: Instant,
    server: TurnServer,
    io: Rec,
}

fn setup() -> Setup {
    let t0 = Instant::now();
    let mut cfg = TurnConfig::new(REALM, SECRET, vec![media()]);
    cfg.epoch = t0;
    cfg.epoch_unix = 1_800_000_000;
    cfg.max_allocations_per_user = 2;
    Setup {
        t0,
        server: TurnServer::with_nonce_key(cfg, NonceKey::new([1; 32])),
        io: Rec::default(),
    }
}

fn udp(port: u16) -> ClientKey {
    ClientKey {
        proto: Proto::Udp,
        addr: SocketAddr::new("203.0.113.5".parse().unwrap(), port),
    }
}

struct Creds {
    user: String,
    pass: String,
}

fn good_creds() -> Creds {
    let (user, pass) = creds::rest_credentials(SECRET, "PA_alice", 1_800_000_000 + 3600);
    Creds { user, pass }
}

/// Builds a request; `auth` adds USERNAME, REALM, NONCE and MESSAGE-INTEGRITY.
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

impl Setup {
    fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    fn send(&mut self, now: Instant, client: ClientKey, bytes: &[u8]) -> Option<Vec<u8>> {
        self.io.to_client.clear();
        self.server.handle_client(now, client, bytes, &mut self.io);
        self.io.to_client.pop().map(|(_, b)| b)
    }

    fn nonce(&mut self, client: ClientKey) -> Vec<u8> {
        let req = request(method::ALLOCATE, 1, None, |w| {
            w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap()
        });
        let resp = self.send(self.t0, client, &req).unwrap();
        assert_eq!(error_code(&resp), Some(code::UNAUTHORIZED));
        nonce_of(&resp)
    }

    fn allocate(&mut self, client: ClientKey, c: &Creds, tid: u8) -> Vec<u8> {
        let nonce = self.nonce(client);
        let req = request(method::ALLOCATE, tid, Some((c, &nonce)), |w| {
            w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap()
        });
        self.send(self.t0, client, &req).unwrap()
    }
}

#[test]
fn allocate_challenges_then_succeeds_with_integrity() {
    let mut s = setup();
    let c = good_creds();
    let resp = s.allocate(udp(4000), &c, 2);
    let m = StunMessage::new_checked(&resp[..]).unwrap();
    assert_eq!(m.class(), Class::SuccessResponse, "{:?}", error_code(&resp));
    assert_eq!(m.check_fingerprint(), Some(true));
    let key = creds::long_term_key(c.user.as_bytes(), REALM.as_bytes(), c.pass.as_bytes());
    assert!(m.verify_message_integrity(&|h: &[u8; 4], r: &[u8]| creds::hmac_sha1(&key, &[h, r])));
    let relayed = stun::decode_xor_address(
        m.attribute(attr::XOR_RELAYED_ADDRESS).unwrap(),
        &m.transaction_id(),
    )
    .unwrap();
    assert_eq!(relayed, "198.51.100.1:50001".parse().unwrap());
    assert_eq!(m.xor_mapped_address(), Some(udp(4000).addr));
    assert_eq!(s.server.stats().allocations, 1);
    assert_eq!(s.server.stats().unauthenticated, 1);
}

#[test]
fn wrong_password_gets_401_with_a_fresh_nonce_and_is_counted() {
    let mut s = setup();
    let bad = Creds {
        user: good_creds().user,
        pass: "not-the-password".into(),
    };
    let resp = s.allocate(udp(4000), &bad, 2);
    assert_eq!(error_code(&resp), Some(code::UNAUTHORIZED));
    assert_eq!(nonce_of(&resp).len(), creds::NONCE_LEN);
    assert_eq!(s.server.stats().wrong_credentials, 1);
    assert_eq!(s.io.opened, 0);
}

#[test]
fn expired_credentials_are_refused() {
    let mut s = setup();
    let (user, pass) = creds::rest_credentials(SECRET, "PA_alice", 1_800_000_000 - 1);
    let resp = s.allocate(udp(4000), &Creds { user, pass }, 2);
    assert_eq!(error_code(&resp), Some(code::UNAUTHORIZED));
    assert_eq!(s.server.stats().expired_credentials, 1);
}

#[test]
fn stale_nonce_gets_438() {
    let mut s = setup();
    let client = udp(4000);
    let nonce = s.nonce(client);
    let req = request(method::ALLOCATE, 2, Some((&good_creds(), &nonce)), |w| {
        w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap()
    });
    let later = s.at(creds::NONCE_TTL_SECS + 1);
    let resp = s.send(later, client, &req).unwrap();
    assert_eq!(error_code(&resp), Some(code::STALE_NONCE));
    assert_ne!(nonce_of(&resp), nonce);
    assert_eq!(s.server.stats().stale_nonce, 1);
}

#[test]
fn another_username_on_an_allocation_gets_441() {
    let mut s = setup();
    let client = udp(4000);
    s.allocate(client, &good_creds(), 2);
    let (user, pass) = creds::rest_credentials(SECRET, "PA_mallory", 1_800_000_000 + 3600);
    let nonce = s.nonce(udp(4001));
    let nonce_ok = s.nonce(client);
    let _ = nonce;
    let req = request(
        method::REFRESH,
        3,
        Some((&Creds { user, pass }, &nonce_ok)),
        |_| {},
    );
    let resp = s.send(s.t0, client, &req).unwrap();
    assert_eq!(error_code(&resp), Some(code::WRONG_CREDENTIALS));
}

#[test]
fn quota_per_user_gets_486_and_capacity_508() {
    let mut s = setup();
    let c = good_creds();
    for (i, port) in [4000u16, 4001].into_iter().enumerate() {
        let r = s.allocate(udp(port), &c, 2 + i as u8);
        assert!(error_code(&r).is_none());
    }
    let r = s.allocate(udp(4002), &c, 9);
    assert_eq!(error_code(&r), Some(code::ALLOCATION_QUOTA_REACHED));
    assert_eq!(s.server.stats().quota, 1);
    s.io.refuse_relays = true;
    let (user, pass) = creds::rest_credentials(SECRET, "PA_bob", 1_800_000_000 + 3600);
    let r = s.allocate(udp(4003), &Creds { user, pass }, 10);
    assert_eq!(error_code(&r), Some(code::INSUFFICIENT_CAPACITY));
}

#[test]
fn retransmitted_allocate_gets_the_same_answer_and_another_gets_437() {
    let mut s = setup();
    let c = good_creds();
    let client = udp(4000);
    let nonce = s.nonce(client);
    let req = request(method::ALLOCATE, 2, Some((&c, &nonce)), |w| {
        w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap()
    });
    let a = s.send(s.t0, client, &req).unwrap();
    let b = s.send(s.t0, client, &req).unwrap();
    assert!(error_code(&a).is_none() && error_code(&b).is_none());
    assert_eq!(s.io.opened, 1);
    let req = request(method::ALLOCATE, 3, Some((&c, &nonce)), |w| {
        w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap()
    });
    let r = s.send(s.t0, client, &req).unwrap();
    assert_eq!(error_code(&r), Some(code::ALLOCATION_MISMATCH));
}

#[test]
fn tcp_transport_gets_442() {
    let mut s = setup();
    let client = udp(4000);
    let nonce = s.nonce(client);
    let req = request(method::ALLOCATE, 2, Some((&good_creds(), &nonce)), |w| {
        w.attr(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]).unwrap()
    });
    let r = s.send(s.t0, client, &req).unwrap();
    assert_eq!(error_code(&r), Some(code::UNSUPPORTED_TRANSPORT));
}

fn allocated() -> (Setup, ClientKey, Vec<u8>) {
    let mut s = setup();
    let client = udp(4000);
    let r = s.allocate(client, &good_creds(), 2);
    assert!(error_code(&r).is_none());
    let nonce = s.nonce(client);
    (s, client, nonce)
}

#[test]
fn permissions_only_for_the_media_sockets() {
    let (mut s, client, nonce) = allocated();
    let c = good_creds();
    for forbidden in [
        "127.0.0.1:7882",
        "10.0.0.1:7882",
        "169.254.1.1:7882",
        "8.8.8.8:53",
    ] {
        let peer: SocketAddr = forbidden.parse().unwrap();
        let req = request(method::CREATE_PERMISSION, 4, Some((&c, &nonce)), |w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap()
        });
        let r = s.send(s.t0, client, &req).unwrap();
        assert_eq!(error_code(&r), Some(code::FORBIDDEN), "{forbidden}");
        let req = request(method::CHANNEL_BIND, 5, Some((&c, &nonce)), |w| {
            w.attr(attr::CHANNEL_NUMBER, &[0x40, 0, 0, 0]).unwrap();
            w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap()
        });
        let r = s.send(s.t0, client, &req).unwrap();
        assert_eq!(error_code(&r), Some(code::FORBIDDEN), "{forbidden}");
    }
    assert_eq!(s.server.stats().forbidden_peer, 8);
    // A Send indication toward a forbidden peer goes nowhere.
    let mut buf = vec![0u8; 200];
    let mut w = StunWriter::new(&mut buf, Class::Indication, method::SEND, &[9; 12]).unwrap();
    w.xor_address(attr::XOR_PEER_ADDRESS, "10.0.0.1:7882".parse().unwrap())
        .unwrap();
    w.attr(attr::DATA, b"hi").unwrap();
    let n = w.finish().unwrap();
    s.send(s.t0, client, &buf[..n]);
    assert!(s.io.to_peer.is_empty());
}

#[test]
fn send_indication_and_data_indication_both_ways() {
    let (mut s, client, nonce) = allocated();
    let c = good_creds();
    let req = request(method::CREATE_PERMISSION, 4, Some((&c, &nonce)), |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, media()).unwrap()
    });
    let r = s.send(s.t0, client, &req).unwrap();
    assert!(error_code(&r).is_none());
    let mut buf = vec![0u8; 200];
    let mut w = StunWriter::new(&mut buf, Class::Indication, method::SEND, &[9; 12]).unwrap();
    w.xor_address(attr::XOR_PEER_ADDRESS, media()).unwrap();
    w.attr(attr::DATA, b"hello").unwrap();
    let n = w.finish().unwrap();
    s.send(s.t0, client, &buf[..n]);
    assert_eq!(s.io.to_peer, vec![(RelayId(1), media(), b"hello".to_vec())]);
    s.server
        .handle_peer(s.t0, RelayId(1), media(), b"back", &mut s.io);
    let (to, bytes) = s.io.to_client.pop().unwrap();
    assert_eq!(to, client);
    let m = StunMessage::new_checked(&bytes[..]).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Indication, method::DATA));
    assert_eq!(m.attribute(attr::DATA), Some(&b"back"[..]));
    // After the permission lapses, nothing passes.
    s.server.handle_timeout(s.at(301), &mut s.io);
    s.server
        .handle_peer(s.at(301), RelayId(1), media(), b"late", &mut s.io);
    assert!(s.io.to_client.is_empty());
    assert_eq!(s.server.stats().no_permission, 1);
}

#[test]
fn channel_data_both_ways_with_stream_padding() {
    let mut s = setup();
    let client = ClientKey {
        proto: Proto::Stream,
        addr: "203.0.113.5:4000".parse().unwrap(),
    };
    let c = good_creds();
    let r = s.allocate(client, &c, 2);
    assert!(error_code(&r).is_none());
    let nonce = s.nonce(client);
    let req = request(method::CHANNEL_BIND, 5, Some((&c, &nonce)), |w| {
        w.attr(attr::CHANNEL_NUMBER, &[0x40, 0x01, 0, 0]).unwrap();
        w.xor_address(attr::XOR_PEER_ADDRESS, media()).unwrap()
    });
    let r = s.send(s.t0, client, &req).unwrap();
    assert!(error_code(&r).is_none(), "{:?}", error_code(&r));
    // Client → peer: 5 bytes of data, padded to 8 on the stream.
    let frame = [0x40, 0x01, 0, 5, b'a', b'b', b'c', b'd', b'e', 0, 0, 0];
    assert_eq!(next_frame(&frame), Frame::Complete(12));
    s.send(s.t0, client, &frame);
    assert_eq!(s.io.to_peer.pop().unwrap().2, b"abcde");
    // Peer → client: ChannelData, padded.
    s.server
        .handle_peer(s.t0, RelayId(1), media(), b"xyz", &mut s.io);
    let (_, bytes) = s.io.to_client.pop().unwrap();
    assert_eq!(bytes, vec![0x40, 0x01, 0, 3, b'x', b'y', b'z', 0]);
    // An unbound channel is dropped and counted.
    s.send(s.t0, client, &[0x40, 0x02, 0, 1, b'q', 0, 0, 0]);
    assert_eq!(s.server.stats().unknown_channel, 1);
    // Closing the stream frees the allocation.
    s.server.client_closed(client, &mut s.io);
    assert_eq!(s.io.closed, vec![RelayId(1)]);
    assert_eq!(s.server.stats().allocations_active, 0);
}

#[test]
fn refresh_zero_deletes_and_lifetimes_expire() {
    let (mut s, client, nonce) = allocated();
    let c = good_creds();
    let req = request(method::REFRESH, 6, Some((&c, &nonce)), |w| {
        w.attr(attr::LIFETIME, &0u32.to_be_bytes()).unwrap()
    });
    let r = s.send(s.t0, client, &req).unwrap();
    assert!(error_code(&r).is_none());
    assert_eq!(s.io.closed, vec![RelayId(1)]);
    // A second allocation expires after its default lifetime without a refresh.
    let client2 = udp(4001);
    s.allocate(client2, &c, 7);
    s.server.handle_timeout(s.at(599), &mut s.io);
    assert_eq!(s.server.stats().allocations_active, 1);
    s.server.handle_timeout(s.at(600), &mut s.io);
    assert_eq!(s.server.stats().allocations_active, 0);
    assert_eq!(s.server.stats().expired, 1);
}

#[test]
fn unknown_comprehension_required_attribute_gets_420() {
    let mut s = setup();
    let req = request(method::ALLOCATE, 1, None, |w| {
        w.attr(attr::EVEN_PORT, &[0x80]).unwrap()
    });
    let r = s.send(s.t0, udp(4000), &req).unwrap();
    assert_eq!(error_code(&r), Some(code::UNKNOWN_ATTRIBUTE));
}

#[test]
fn garbage_is_counted_not_answered() {
    let mut s = setup();
    for g in [
        &b""[..],
        b"\xff\xff",
        b"\x00\x01\x00\x04\x21\x12\xa4\x42",
        b"\x40\x00\xff\xff",
    ] {
        assert!(s.send(s.t0, udp(4000), g).is_none());
    }
    assert_eq!(s.server.stats().malformed, 4);
    assert_eq!(
        next_frame(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc"),
        Frame::Invalid
    );
    assert_eq!(next_frame(b"\x00\x01\x00\x03"), Frame::Invalid);
    assert_eq!(next_frame(b"\x00\x01"), Frame::Partial);
}

proptest! {
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600), stream in any::<bool>()) {
        let (mut s, client, _) = allocated();
        let client = if stream { ClientKey { proto: Proto::Stream, ..client } } else { client };
        s.server.handle_client(s.t0, client, &data, &mut s.io);
        s.server.handle_peer(s.t0, RelayId(1), media(), &data, &mut s.io);
        let _ = next_frame(&data);
    }

    #[test]
    fn mutated_requests_never_panic(flip in 0usize..200, bit in 0u8..8, truncate in 0usize..200) {
        let (mut s, client, nonce) = allocated();
        let mut req = request(method::CHANNEL_BIND, 5, Some((&good_creds(), &nonce)), |w| {
            w.attr(attr::CHANNEL_NUMBER, &[0x40, 0x01, 0, 0]).unwrap();
            w.xor_address(attr::XOR_PEER_ADDRESS, media()).unwrap()
        });
        let at = flip % req.len();
        req[at] ^= 1 << bit;
        req.truncate(req.len().saturating_sub(truncate % 8));
        s.server.handle_client(s.t0, client, &req, &mut s.io);
    }
}
