#![no_main]
//! The TURN server on arbitrary bytes, from a client (over UDP or a stream, after a real
//! allocation with a channel, so the authenticated paths are reached) and from a peer, and
//! the stream framer. Nothing may panic; nothing may reach a peer that is not allowed.
use std::net::SocketAddr;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use prism_forwarder::turn::server::{ClientKey, Proto, RelayId, TurnConfig, TurnIo, TurnServer};
use prism_forwarder::turn::{attr, creds, method, next_frame};
use prism_forwarder::wire::stun::{Class, StunMessage, StunWriter};

const PEER: &str = "192.0.2.10:7882";

struct Io {
    nonce: Vec<u8>,
}

impl TurnIo for Io {
    fn to_client(&mut self, _: ClientKey, bytes: &[u8]) {
        if let Ok(m) = StunMessage::new_checked(bytes) {
            if let Some(n) = m.attribute(attr::NONCE) {
                self.nonce = n.to_vec();
            }
        }
    }
    fn to_peer(&mut self, _: RelayId, peer: SocketAddr, _: &[u8]) {
        assert_eq!(
            peer,
            PEER.parse().unwrap(),
            "relayed to a peer that is not allowed"
        );
    }
    fn open_relay(&mut self, _: ClientKey) -> Option<(RelayId, SocketAddr)> {
        Some((RelayId(1), "198.51.100.1:50000".parse().unwrap()))
    }
    fn close_relay(&mut self, _: RelayId) {}
}

fn req(
    meth: prism_forwarder::wire::stun::Method,
    tid: u8,
    nonce: &[u8],
    body: &dyn Fn(&mut StunWriter<'_>),
) -> Vec<u8> {
    let (user, pass) = creds::rest_credentials(b"s", "PA_fuzz", u64::MAX / 2);
    let mut buf = vec![0u8; 512];
    let mut w = StunWriter::new(&mut buf, Class::Request, meth, &[tid; 12]).unwrap();
    body(&mut w);
    w.attr(attr::USERNAME, user.as_bytes()).unwrap();
    w.attr(attr::REALM, b"r").unwrap();
    w.attr(attr::NONCE, nonce).unwrap();
    let key = creds::long_term_key(user.as_bytes(), b"r", pass.as_bytes());
    let n = w
        .finish_with_integrity(&|d: &[u8]| creds::hmac_sha1(&key, &[d]))
        .unwrap();
    buf.truncate(n);
    buf
}

fuzz_target!(|data: &[u8]| {
    let _ = next_frame(data);
    let peer: SocketAddr = PEER.parse().unwrap();
    let now = Instant::now();
    let mut server = TurnServer::new(TurnConfig::new("r", b"s", vec![peer]));
    let proto = if data.first().is_some_and(|b| b & 1 == 1) {
        Proto::Stream
    } else {
        Proto::Udp
    };
    let client = ClientKey {
        proto,
        addr: "203.0.113.5:4000".parse().unwrap(),
    };
    let mut io = Io { nonce: Vec::new() };
    server.handle_client(
        now,
        client,
        &req(method::ALLOCATE, 1, b"", &|_| {}),
        &mut io,
    );
    let nonce = io.nonce.clone();
    let alloc = req(method::ALLOCATE, 2, &nonce, &|w| {
        w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap()
    });
    server.handle_client(now, client, &alloc, &mut io);
    let bind = req(method::CHANNEL_BIND, 3, &nonce, &|w| {
        w.attr(attr::CHANNEL_NUMBER, &[0x40, 0, 0, 0]).unwrap();
        w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
    });
    server.handle_client(now, client, &bind, &mut io);
    server.handle_client(now, client, data, &mut io);
    server.handle_peer(now, RelayId(1), peer, data, &mut io);
    server.handle_timeout(now, &mut io);
});
